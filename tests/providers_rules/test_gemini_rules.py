"""The Gemini channel's documented rules that the main Gemini tests leave out: `user` kept in the
ledger only, a provider's `ignore_params`, and a 401 or a refused key as a final 502. The fake
validates each request with the `google-genai` SDK's types and refuses unknown fields."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Gateway, started_gateway
from tests.fakes.gemini_upstream import REPLY, FakeGemini


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, gemini: FakeGemini) -> Iterator[Gateway]:
    running = started_gateway(tmp_path_factory.mktemp("gemini-rules"), f"""\
        routing: {{backoff_initial_ms: 10, breaker: {{failures: 1000000}}}}
        providers:
          google: {{kind: gemini, base_url: "{gemini.base_url}", api_key: {gemini.api_key}}}
          lenient: {{kind: gemini, base_url: "{gemini.base_url}", api_key: {gemini.api_key},
                     ignore_params: [logprobs, reasoning_effort, parallel_tool_calls]}}
          wrong-key: {{kind: gemini, base_url: "{gemini.base_url}", api_key: AIza-not-the-key}}
        models:
          - name: gemini
            channels: [{{provider: google, model: gemini-2.5-flash}}]
          - name: lenient-gemini
            channels: [{{provider: lenient, model: gemini-2.5-flash}}]
          - name: misconfigured-gemini
            channels: [{{provider: wrong-key, model: gemini-2.5-flash}}]
        """)
    yield running
    running.stop()


def hello(model: str = "gemini", text: str = "Hi", **fields: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **fields}


def test_user_is_kept_in_the_ledger_only(gateway, gemini):
    response = gateway.post(hello(user="analyst-9"))
    assert response.status_code == 200
    assert "analyst-9" not in str(gemini.last().body)  # Gemini has no such field
    assert gateway.wait_row(response.headers["x-request-id"])["end_user"] == "analyst-9"


def test_ignore_params_drops_what_would_otherwise_be_refused(gateway, gemini):
    asked = {"logprobs": True, "reasoning_effort": "high", "parallel_tool_calls": False}
    before = len(gemini.received)
    refused = gateway.post(hello(**asked))
    assert refused.status_code == 400 and refused.json()["error"]["param"] in asked
    assert len(gemini.received) == before
    response = gateway.post(hello("lenient-gemini", **asked))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == REPLY
    sent = gemini.last().body
    assert "logprobs" not in str(sent) and "responseLogprobs" not in str(sent)


# The fake checks the key before it records a request: a refused key leaves no record.
@pytest.mark.parametrize(("model", "text", "recorded"), [("gemini", "@fail 401", 1),
                                                         ("misconfigured-gemini", "Hi", 0)])
def test_a_401_or_a_refused_key_is_a_final_502(gateway, gemini, model, text, recorded):
    before = len(gemini.received)
    response = gateway.post(hello(model, text))
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "bad_gateway" and "credentials" in error["message"]
    assert response.headers["x-should-retry"] == "false"
    assert "AIza" not in response.text  # no key, right or wrong, comes back
    assert len(gemini.received) - before == recorded  # asked once, never again
