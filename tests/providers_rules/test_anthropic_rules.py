"""The Anthropic channel's documented rules that the main Anthropic tests leave out: the 402 and
422 mappings, `user` as `metadata.user_id`, OpenAI's bookkeeping fields left behind, unknown
fields refused, and GIF and WebP images. The fake validates each request with the SDK's types."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from tests.conftest import Gateway, started_gateway
from tests.fakes.anthropic_upstream import REPLY, FakeAnthropic

GIF = base64.b64encode(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").decode()
WEBP = base64.b64encode(b"RIFF\x1a\x00\x00\x00WEBPVP8 " + b"\0" * 14).decode()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, claude: FakeAnthropic) -> Iterator[Gateway]:
    running = started_gateway(tmp_path_factory.mktemp("anthropic-rules"), f"""\
        routing: {{backoff_initial_ms: 10, breaker: {{failures: 1000000}}}}
        providers:
          claude: {{kind: anthropic, base_url: "{claude.base_url}", api_key: {claude.api_key}}}
          claude-next: {{kind: anthropic, base_url: "{claude.base_url}", api_key: {claude.api_key},
                         headers: {{anthropic-version: "2023-06-01", anthropic-beta: rules-1}}}}
        models:
          - name: claude
            channels: [{{provider: claude, model: claude-sonnet-4-5}}]
          - name: claude-next
            channels: [{{provider: claude-next, model: claude-sonnet-4-5}}]
        """)
    yield running
    running.stop()


def hello(model: str = "claude", **fields: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "Hi"}], **fields}


@pytest.mark.parametrize(("status", "kind", "seen", "code", "no_retry"), [
    (402, "billing_error", 502, "bad_gateway", "false"),
    (422, "invalid_request_error", 422, "invalid_request_error", None),
])
def test_a_402_is_a_final_502_and_a_422_passes_through(gateway, claude, status, kind, seen, code,
                                                       no_retry):
    before = len(claude.received)
    response = gateway.post({"model": "claude", "messages": [
        {"role": "user", "content": f"@fail {status} {kind}"}]})
    assert response.status_code == seen
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    assert len(claude.received) - before == 1  # neither is asked again
    assert response.headers.get("x-should-retry") == no_retry


def test_user_becomes_metadata_user_id_and_stays_in_the_ledger(gateway, claude):
    response = gateway.post(hello(user="analyst-7"))
    assert response.status_code == 200
    assert claude.last().body["metadata"] == {"user_id": "analyst-7"}
    assert gateway.wait_row(response.headers["x-request-id"])["end_user"] == "analyst-7"
    gateway.post(hello())
    assert "metadata" not in claude.last().body


def test_openais_bookkeeping_fields_are_left_behind(gateway, claude):
    response = gateway.post(hello(metadata={"team": "a"}, store=True, service_tier="auto",
                                  prompt_cache_key="cache-1"))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == REPLY
    sent = claude.last().body
    assert not {"metadata", "store", "service_tier", "prompt_cache_key"} & set(sent)


# `top_k` is a sampling hint: the parameter policy drops it rather than refuse it.
@pytest.mark.parametrize("field", ["vendor_knob", "prompt_template"])
def test_an_unknown_field_is_a_400_naming_it(gateway, claude, field):
    before = len(claude.received)
    response = gateway.post(hello(**{field: 3}))
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["type"], error["code"]) == (field, "invalid_request_error",
                                                              None)
    assert len(claude.received) == before  # refused before anything went out


def test_gif_and_webp_data_urls_go_as_base64_images(gateway, claude):
    response = gateway.post({"model": "claude", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": f"data:image/gif;base64,{GIF}"}},
        {"type": "image_url", "image_url": {"url": f"data:image/webp;base64,{WEBP}"}}]}]})
    assert response.status_code == 200
    blocks = claude.last().body["messages"][0]["content"]
    assert blocks[1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": GIF}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/webp",
                                     "data": WEBP}}]


@pytest.mark.parametrize("url", [f"data:image/png,{GIF}", "data:image/png;base64,",
                                 f"data:image/bmp;base64,{GIF}"])
def test_a_data_url_that_is_not_base64_of_an_image_type_it_takes_is_a_400(gateway, claude,
                                                                          url):
    before = len(claude.received)
    response = gateway.post({"model": "claude", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {"url": url}}]}]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "messages[0].content[1].image_url.url"
    assert error["message"].startswith("An image data URL must be base64 of type image/gif, ")
    assert len(claude.received) == before


def test_the_providers_headers_override_the_api_version(gateway, claude):
    assert gateway.post(hello()).status_code == 200
    assert claude.last().headers["anthropic-version"] == "2026-10-21"
    assert gateway.post(hello(model="claude-next")).status_code == 200
    sent = claude.last().headers
    assert sent.getall("anthropic-version") == ["2023-06-01"]  # replaced, not sent twice
    assert sent["anthropic-beta"] == "rules-1"
