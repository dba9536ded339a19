"""The Messages API door (`POST /v1/messages`), driven by the official `anthropic` SDK against a
real gateway with a channel of each kind behind it: OpenAI-kind, Anthropic and Gemini fakes,
each validating what it receives with its provider's own SDK types."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2 as httpx
import pytest

from tests.conftest import ADMIN_KEY, Gateway, started_gateway
from tests.every_kind import ANTHROPIC, ECHO, GEMINI, OPENAI, EveryKind, every_kind
from tests.fakes import anthropic_upstream, gemini_upstream, openai_upstream
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI

KINDS = (OPENAI, ANTHROPIC, GEMINI)
REPLIES = {OPENAI: openai_upstream.REPLY, ANTHROPIC: anthropic_upstream.REPLY,
           GEMINI: gemini_upstream.REPLY}
WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EveryKind]:
    with every_kind(tmp_path_factory.mktemp("messages")) as running:
        yield running


@pytest.fixture
def client(kinds: EveryKind) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=kinds.gateway.base_url, api_key=ADMIN_KEY, max_retries=0)


def received(kinds: EveryKind, model: str) -> dict[str, Any]:
    fake = {OPENAI: kinds.openai, ANTHROPIC: kinds.anthropic, GEMINI: kinds.gemini}[model]
    return fake.received[-1].body


def post(gateway: Gateway, body: Any, path: str = "/v1/messages",
         **headers: str) -> httpx.Response:
    return httpx.post(gateway.base_url + path, json=body, timeout=30,
                      headers={"x-api-key": ADMIN_KEY, "anthropic-version": "2026-10-21",
                               **headers})


@pytest.mark.parametrize("model", KINDS)
def test_a_plain_message_with_a_system_prompt(client, kinds, model):
    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=200, system="Answer briefly.",
        messages=[{"role": "user", "content": "Say hello"}],
        metadata={"user_id": "end-user-7"}, stream=False)  # the SDK sends "stream": false
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.model == model
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == REPLIES[model]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0
    sent = received(kinds, model)
    if model == OPENAI:
        assert sent["messages"][0] == {"role": "system", "content": "Answer briefly."}
        assert sent["max_tokens"] == 200 and sent["user"] == "end-user-7"
    elif model == ANTHROPIC:  # natively: the body as the client sent it
        assert sent["system"] == "Answer briefly." and sent["max_tokens"] == 200
        assert sent["metadata"] == {"user_id": "end-user-7"}
        assert sent["model"] == "claude-sonnet-4-5"
    else:
        assert sent["systemInstruction"] == {"parts": [{"text": "Answer briefly."}]}
        assert sent["generationConfig"]["maxOutputTokens"] == 200
    row = kinds.gateway.wait_row(raw.request_id)
    assert row["door"] == "messages" and row["status"] == 200
    assert row["end_user"] == "end-user-7" and row["requested_model"] == model
    assert row["prompt_tokens"] == message.usage.input_tokens
    assert row["completion_tokens"] == message.usage.output_tokens
    assert row["stream"] == 0


@pytest.mark.parametrize("model", KINDS)
def test_a_stream_and_its_final_message(client, kinds, model):
    with client.messages.stream(model=model, max_tokens=200,
                                messages=[{"role": "user", "content": "Say hello"}]) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
        request_id = stream.response.headers["request-id"]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_start" in events and "content_block_stop" in events
    assert events.count("message_delta") == 1
    assert final.content[0].type == "text" and final.content[0].text == REPLIES[model]
    assert final.stop_reason == "end_turn" and final.model == model
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    row = kinds.gateway.wait_row(request_id)
    assert row["door"] == "messages" and row["stream"] == 1 and row["status"] == 200
    assert row["completion_tokens"] == final.usage.output_tokens


@pytest.mark.parametrize("model", KINDS)
def test_system_blocks(client, kinds, model):
    message = client.messages.create(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "Hi"}],
        system=[{"type": "text", "text": "You are terse."},
                {"type": "text", "text": "Cite nothing.", "cache_control": {"type": "ephemeral"}}])
    assert message.content[0].text == REPLIES[model]
    sent = received(kinds, model)
    if model == OPENAI:
        assert sent["messages"][0] == {"role": "system", "content": [
            {"type": "text", "text": "You are terse."}, {"type": "text", "text": "Cite nothing."}]}
    elif model == ANTHROPIC:  # the caching marker survives
        assert sent["system"][1] == {"type": "text", "text": "Cite nothing.",
                                     "cache_control": {"type": "ephemeral"}}
    else:
        assert sent["systemInstruction"]["parts"] == [{"text": "You are terse."},
                                                      {"text": "Cite nothing."}]


@pytest.mark.parametrize("model", KINDS)
@pytest.mark.parametrize("is_error", [False, True])
def test_a_tool_use_round_trip(client, kinds, model, is_error):
    ask = {"role": "user", "content": '@call get_weather {"city": "Paris"}'}
    first = client.messages.create(model=model, max_tokens=200, tools=[WEATHER],
                                   messages=[ask])
    assert first.stop_reason == "tool_use"
    uses = [block for block in first.content if block.type == "tool_use"]
    assert len(uses) == 1
    assert uses[0].name == "get_weather" and uses[0].input == {"city": "Paris"}
    assert uses[0].id
    result = {"type": "tool_result", "tool_use_id": uses[0].id,
              "content": [{"type": "text", "text": "18 degrees, sunny"}]}
    if is_error:
        result["is_error"] = True
    second = client.messages.create(
        model=model, max_tokens=200, tools=[WEATHER],
        messages=[ask, {"role": "assistant", "content": first.content},
                  {"role": "user", "content": [result]}])
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == "It is sunny in Paris"
    sent = received(kinds, model)
    if model == OPENAI:
        assert sent["messages"][-2]["tool_calls"][0]["function"] == {
            "name": "get_weather", "arguments": '{"city":"Paris"}'}
        expected = "Error: 18 degrees, sunny" if is_error else "18 degrees, sunny"
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": uses[0].id,
                                        "content": expected}
        assert sent["tools"][0]["function"]["name"] == "get_weather"
    elif model == ANTHROPIC:
        assert sent["messages"][-1]["content"][0] == result
    else:
        response = sent["contents"][-1]["parts"][0]["functionResponse"]
        assert response["name"] == "get_weather"


@pytest.mark.parametrize("model", KINDS)
def test_a_streamed_tool_use(client, model):
    with client.messages.stream(
            model=model, max_tokens=200, tools=[WEATHER],
            messages=[{"role": "user", "content": '@call get_weather {"city": "Rome"}'}]
    ) as stream:
        final = stream.get_final_message()
    uses = [block for block in final.content if block.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Rome"})]
    assert final.stop_reason == "tool_use"


def test_a_streamed_tool_call_whose_fragments_carry_no_index(client):
    # A fragment without `index` belongs to the first call (index 0): such servers make one.
    with client.messages.stream(
            model=OPENAI, max_tokens=200, tools=[WEATHER],
            messages=[{"role": "user", "content": '@callbare get_weather {"city": "Rome"}'}]
    ) as stream:
        final = stream.get_final_message()
    assert [(block.type, block.name, block.input) for block in final.content] == [
        ("tool_use", "get_weather", {"city": "Rome"})]


@pytest.mark.parametrize("choice, openai_choice, claude_choice", [
    ({"type": "auto"}, "auto", {"type": "auto"}),
    ({"type": "any"}, "required", {"type": "any"}),
    ({"type": "tool", "name": "get_weather"},
     {"type": "function", "function": {"name": "get_weather"}},
     {"type": "tool", "name": "get_weather"}),
    ({"type": "none"}, "none", {"type": "none"}),
    ({"type": "auto", "disable_parallel_tool_use": True}, "auto",
     {"type": "auto", "disable_parallel_tool_use": True}),
])
def test_tool_choice(client, kinds, choice, openai_choice, claude_choice):
    for model in (OPENAI, ANTHROPIC):
        client.messages.create(model=model, max_tokens=50, tools=[WEATHER], tool_choice=choice,
                               messages=[{"role": "user", "content": "Weather?"}])
    assert received(kinds, OPENAI)["tool_choice"] == openai_choice
    assert received(kinds, OPENAI).get("parallel_tool_calls") is (
        False if choice.get("disable_parallel_tool_use") else None)
    assert received(kinds, ANTHROPIC)["tool_choice"] == claude_choice


@pytest.mark.parametrize("model", KINDS)
def test_images_by_base64_and_url(client, kinds, model):
    message = client.messages.create(model=model, max_tokens=50, messages=[{
        "role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
            {"type": "text", "text": "What are these?"}]}])
    assert message.content[0].text == REPLIES[model]
    sent = received(kinds, model)
    if model == OPENAI:
        parts = sent["messages"][0]["content"]
        assert parts[0] == {"type": "image_url", "image_url": {
            "url": f"data:image/png;base64,{PNG}"}}
        assert parts[1] == {"type": "image_url", "image_url": {
            "url": "https://example.com/cat.png"}}
    elif model == ANTHROPIC:
        blocks = sent["messages"][0]["content"]
        assert blocks[0]["source"] == {"type": "base64", "media_type": "image/png", "data": PNG}
        assert blocks[1]["source"] == {"type": "url", "url": "https://example.com/cat.png"}
    else:
        parts = sent["contents"][0]["parts"]
        assert parts[0]["inlineData"] == {"mimeType": "image/png", "data": PNG}
        assert parts[1]["fileData"]["fileUri"] == "https://example.com/cat.png"


def test_stop_sequences_and_stop_reasons(client, kinds):
    client.messages.create(model=OPENAI, max_tokens=50, stop_sequences=["END", "###"],
                           messages=[{"role": "user", "content": "Count"}])
    assert received(kinds, OPENAI)["stop"] == ["END", "###"]
    client.messages.create(model=GEMINI, max_tokens=50, stop_sequences=["END"],
                           messages=[{"role": "user", "content": "Count"}])
    assert received(kinds, GEMINI)["generationConfig"]["stopSequences"] == ["END"]
    client.messages.create(model=ANTHROPIC, max_tokens=50, stop_sequences=["END"],
                           messages=[{"role": "user", "content": "Count"}])
    assert received(kinds, ANTHROPIC)["stop_sequences"] == ["END"]
    for model in (ANTHROPIC, GEMINI):
        cut = client.messages.create(model=model, max_tokens=50,
                                     messages=[{"role": "user", "content": "@maxtokens"}])
        assert cut.stop_reason == "max_tokens"
    refused = client.messages.create(model=ANTHROPIC, max_tokens=50,
                                     messages=[{"role": "user", "content": "@refusal"}])
    assert refused.stop_reason == "refusal"
    with client.messages.stream(model=GEMINI, max_tokens=50,
                                messages=[{"role": "user", "content": "@safety"}]) as stream:
        assert stream.get_final_message().stop_reason == "refusal"


def test_cache_usage_from_each_kind(client, kinds):
    claude = client.messages.with_raw_response.create(
        model=ANTHROPIC, max_tokens=50, messages=[{"role": "user", "content": "@cached"}])
    usage = claude.parse().usage
    assert (usage.input_tokens, usage.cache_read_input_tokens,
            usage.cache_creation_input_tokens) == (12, 100, 20)
    row = kinds.gateway.wait_row(claude.request_id)
    assert (row["prompt_tokens"], row["cached_tokens"]) == (132, 100)
    with client.messages.stream(model=ANTHROPIC, max_tokens=50,
                                messages=[{"role": "user", "content": "@cached"}]) as stream:
        streamed = stream.get_final_message().usage
    assert (streamed.cache_read_input_tokens, streamed.cache_creation_input_tokens) == (100, 20)
    openai_usage = client.messages.create(
        model=OPENAI, max_tokens=50,
        messages=[{"role": "user", "content": "@usage 500 30 400"}]).usage
    assert (openai_usage.input_tokens, openai_usage.output_tokens,
            openai_usage.cache_read_input_tokens) == (100, 30, 400)
    with client.messages.stream(
            model=OPENAI, max_tokens=50,
            messages=[{"role": "user", "content": "@usage 500 30 400"}]) as stream:
        streamed = stream.get_final_message().usage
    assert (streamed.input_tokens, streamed.output_tokens,
            streamed.cache_read_input_tokens) == (100, 30, 400)
    # A prompt read wholly from the cache has no other input; nor has a count that says more
    # was cached than read (never negative).
    for prompt in ("400", "100"):
        odd = client.messages.create(
            model=OPENAI, max_tokens=50,
            messages=[{"role": "user", "content": f"@usage {prompt} 30 400"}]).usage
        assert (odd.input_tokens, odd.cache_read_input_tokens) == (0, 400)


@pytest.mark.parametrize("auth", ["api_key", "auth_token"])
def test_a_key_by_x_api_key_or_bearer(kinds, auth):
    good = anthropic.Anthropic(base_url=kinds.gateway.base_url, max_retries=0,
                               **{auth: ADMIN_KEY})  # type: ignore[arg-type]
    assert good.messages.create(model=OPENAI, max_tokens=20, messages=[
        {"role": "user", "content": "Hi"}]).content[0].text == openai_upstream.REPLY
    bad = anthropic.Anthropic(base_url=kinds.gateway.base_url, max_retries=0,
                              **{auth: "tm-not-a-key"})  # type: ignore[arg-type]
    with pytest.raises(anthropic.AuthenticationError) as caught:
        bad.messages.create(model=OPENAI, max_tokens=20,
                            messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.body["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("model", KINDS)
def test_headers_of_the_api_are_accepted(kinds, model):
    answer = post(kinds.gateway, {"model": model, "max_tokens": 20, "messages": [
        {"role": "user", "content": "Hi"}]}, **{"anthropic-beta": "files-api-2025-04-14"})
    assert answer.status_code == 200 and answer.json()["type"] == "message"
    assert answer.headers["request-id"] == answer.headers["X-Request-Id"]
    if model == ANTHROPIC:  # the betas go on to Anthropic channels, with the channel's version
        sent = kinds.anthropic.received[-1].headers
        assert sent["anthropic-beta"] == "files-api-2025-04-14"
        assert sent["anthropic-version"] == "2026-10-21"
        assert sent["x-api-key"] == kinds.anthropic.api_key


def test_sampling_fields_follow_the_clients_api_version(kinds):
    body = {"model": OPENAI, "max_tokens": 20, "temperature": 0.3,
            "messages": [{"role": "user", "content": "Hi"}]}
    refused = post(kinds.gateway, body)
    assert refused.status_code == 400
    assert refused.json() == {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "temperature: Extra inputs are not permitted"},
        "request_id": refused.headers["request-id"]}
    taken = post(kinds.gateway, body, **{"anthropic-version": "2023-06-01"})
    assert taken.status_code == 200
    assert kinds.openai.received[-1].body["temperature"] == 0.3


@pytest.mark.parametrize("body, message", [
    ({"model": OPENAI, "messages": [{"role": "user", "content": "Hi"}]},
     "max_tokens: Field required"),
    ({"model": OPENAI, "max_tokens": 10, "messages": []},
     "messages: Input should be a non-empty list of messages"),
    ({"model": OPENAI, "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]},
     "messages.0.role: Input should be 'user' or 'assistant'"),
    ({"model": OPENAI, "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/tiff",
                                     "data": "AAAA"}}]}]},
     "messages.0.content.0.source.media_type: Input should be 'image/jpeg', 'image/png', "
     "'image/gif' or 'image/webp'"),
    ({"model": OPENAI, "max_tokens": 10, "top_k": 3,
      "messages": [{"role": "user", "content": "Hi"}]},
     "top_k: Extra inputs are not permitted"),
    ({"model": OPENAI, "max_tokens": 10, "stream": "yes",
      "messages": [{"role": "user", "content": "Hi"}]},
     "stream: Input should be a valid boolean"),
])
def test_bad_requests_are_refused_in_the_apis_shape(kinds, body, message):
    answer = post(kinds.gateway, body)
    assert answer.status_code == 400
    assert answer.json()["error"] == {"type": "invalid_request_error", "message": message}


def test_an_upload_waiting_for_100_continue_is_refused_in_the_apis_shape(kinds):
    body = b'{"model": "gpt-fake", "max_tokens": 10, "messages": []}'
    with socket.create_connection(("127.0.0.1", kinds.gateway.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: gateway\r\n"
                     b"x-api-key: tm-not-a-key\r\nContent-Type: application/json\r\n"
                     b"Expect: 100-continue\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            piece = sock.recv(65536)
            if not piece:
                break
            answer += piece
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401")  # no 100 Continue: the body is never sent
    assert json.loads(payload)["error"]["type"] == "authentication_error"


def test_an_unknown_model_is_a_not_found_error(client):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-model", max_tokens=10,
                               messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "not_found_error"


def test_a_body_over_the_limit_is_request_too_large(client):
    with pytest.raises(anthropic.RequestTooLargeError) as caught:
        client.messages.create(model=OPENAI, max_tokens=10, messages=[
            {"role": "user", "content": "x" * (33 * 1024 * 1024)}])
    assert caught.value.body["error"]["type"] == "request_too_large"


@pytest.mark.parametrize("model, command, error, status, kind", [
    (OPENAI, "@fail 429 3", anthropic.RateLimitError, 429, "rate_limit_error"),
    (ANTHROPIC, "@fail 429 rate_limit_error", anthropic.RateLimitError, 429, "rate_limit_error"),
    (GEMINI, "@fail 429", anthropic.RateLimitError, 429, "rate_limit_error"),
    (OPENAI, "@fail 503", anthropic.OverloadedError, 529, "overloaded_error"),
    (ANTHROPIC, "@fail 529 overloaded_error", anthropic.OverloadedError, 529, "overloaded_error"),
    (GEMINI, "@fail 503", anthropic.OverloadedError, 529, "overloaded_error"),
    (OPENAI, "@fail 500", anthropic.InternalServerError, 502, "api_error"),
    (ANTHROPIC, "@fail 500", anthropic.InternalServerError, 502, "api_error"),
    (GEMINI, "@fail 500", anthropic.InternalServerError, 502, "api_error"),
])
def test_upstream_failures_are_the_sdks_exceptions(client, kinds, model, command, error, status,
                                                   kind):
    with pytest.raises(error) as caught:
        client.messages.create(model=model, max_tokens=10,
                               messages=[{"role": "user", "content": command}])
    assert caught.value.status_code == status
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == kind
    if status == 429:
        assert int(caught.value.response.headers["retry-after"]) >= 1
    for secret in (ADMIN_KEY, kinds.anthropic.api_key, kinds.gemini.api_key):
        assert secret not in caught.value.response.text
    row = kinds.gateway.wait_row(caught.value.response.headers["request-id"])
    # The row keeps the gateway's own status: an upstream's overload is its 502.
    assert row["door"] == "messages" and row["status"] == (502 if status == 529 else status)


def test_the_keys_own_rate_limit(kinds):
    created = kinds.gateway.cli("keys", "create", "--name", "messages-rpm", "--rpm", "1")
    key = created.stdout.strip().splitlines()[-1]
    limited = anthropic.Anthropic(base_url=kinds.gateway.base_url, api_key=key, max_retries=0)
    ask = {"model": OPENAI, "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
    assert limited.messages.create(**ask).content[0].text == openai_upstream.REPLY
    with pytest.raises(anthropic.RateLimitError) as caught:
        limited.messages.create(**ask)
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert int(caught.value.response.headers["retry-after"]) >= 1
    row = kinds.gateway.wait_row(caught.value.response.headers["request-id"])
    assert (row["door"], row["status"], row["error_code"]) == (
        "messages", 429, "rate_limit_exceeded")


@pytest.mark.parametrize("model, command", [
    (OPENAI, "@drop 2"), (ANTHROPIC, "@midstream"), (GEMINI, "@midstream")])
def test_a_failure_after_the_first_event_is_an_error_event(client, kinds, model, command):
    seen: list[str] = []
    with (pytest.raises(anthropic.APIStatusError) as caught,
          client.messages.stream(model=model, max_tokens=50,
                                 messages=[{"role": "user", "content": command}]) as stream):
        for event in stream:
            seen.append(event.type)
    assert seen[0] == "message_start"
    assert "content_block_delta" in seen
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] in ("api_error", "overloaded_error")


def test_a_deadline_is_a_408_in_the_apis_shape(kinds):
    answer = post(kinds.gateway, {"model": OPENAI, "max_tokens": 10, "messages": [
        {"role": "user", "content": "@stall 8"}]}, **{"X-Timeout": "5000"})
    assert answer.status_code == 408
    assert answer.json()["error"]["type"] == "timeout_error"
    assert answer.headers["x-should-retry"] == "false"


def test_thinking_goes_to_anthropic_channels(client, kinds):
    client.messages.create(model=ANTHROPIC, max_tokens=2048,
                           thinking={"type": "enabled", "budget_tokens": 1024},
                           messages=[{"role": "user", "content": "Think"}])
    assert received(kinds, ANTHROPIC)["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    client.messages.create(model=OPENAI, max_tokens=2048,
                           thinking={"type": "enabled", "budget_tokens": 1024},
                           messages=[{"role": "user", "content": "Think"}])
    assert "thinking" not in received(kinds, OPENAI)
    assert "reasoning_effort" not in received(kinds, OPENAI)  # the catalog says it does not reason


@pytest.fixture(scope="module")
def thinkers(tmp_path_factory: pytest.TempPathFactory, module_upstream: FakeOpenAI,
             gemini: FakeGemini) -> Iterator[Gateway]:
    """Models the catalog says reason, on an OpenAI-kind and a Gemini channel."""
    running = started_gateway(tmp_path_factory.mktemp("thinkers"), f"""\
        providers:
          openai: {{kind: openai, base_url: "{module_upstream.base_url}", api_key: sk-fake}}
          google: {{kind: gemini, base_url: "{gemini.base_url}", api_key: {gemini.api_key}}}
        models:
          - {{name: thinker, capabilities: [reasoning],
              channels: [{{provider: openai, model: gpt-5-mini}}]}}
          - {{name: gemini-thinker, capabilities: [reasoning],
              channels: [{{provider: google, model: gemini-2.5-pro}}]}}
        """)
    yield running
    running.stop()


@pytest.mark.parametrize("asked, effort", [
    ({"thinking": {"type": "enabled", "budget_tokens": 1}}, "low"),
    ({"thinking": {"type": "enabled", "budget_tokens": 4095}}, "low"),
    ({"thinking": {"type": "enabled", "budget_tokens": 4096}}, "medium"),
    ({"thinking": {"type": "enabled", "budget_tokens": 16383}}, "medium"),
    ({"thinking": {"type": "enabled", "budget_tokens": 16384}}, "high"),
    ({"output_config": {"effort": "low"}}, "low"),
    ({"thinking": {"type": "disabled"}}, None),
])
def test_thinking_is_a_reasoning_effort_where_the_model_reasons(thinkers, module_upstream,
                                                                gemini, asked, effort):
    client = anthropic.Anthropic(base_url=thinkers.base_url, api_key=ADMIN_KEY, max_retries=0)
    message = client.messages.create(model="thinker", max_tokens=16000, messages=[
        {"role": "user", "content": "Think"}], **asked)
    assert message.content[0].text == openai_upstream.REPLY
    assert module_upstream.received[-1].body.get("reasoning_effort") == effort
    # Gemini's channel takes no OpenAI effort: the request is served without one.
    client.messages.create(model="gemini-thinker", max_tokens=16000, messages=[
        {"role": "user", "content": "Think"}], **asked)
    assert "thinkingConfig" not in gemini.received[-1].body.get("generationConfig", {})


@pytest.mark.parametrize("budget", [0, -5, True, "2048", 1.5, None])
def test_a_thinking_budget_that_is_not_a_positive_integer_is_refused(thinkers, budget):
    answer = post(thinkers, {"model": "thinker", "max_tokens": 100,
                             "thinking": {"type": "enabled", "budget_tokens": budget},
                             "messages": [{"role": "user", "content": "Think"}]})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == {
        "type": "invalid_request_error",
        "message": "thinking.budget_tokens: Input should be a positive integer"}


def test_what_only_anthropic_carries_goes_natively_or_is_refused(client, kinds):
    document = {"type": "document", "source": {
        "type": "text", "media_type": "text/plain", "data": "The sky is blue."},
        "citations": {"enabled": True}, "cache_control": {"type": "ephemeral"}}
    messages = [{"role": "user", "content": [document, {"type": "text", "text": "Color?"}]}]
    client.messages.create(model=ANTHROPIC, max_tokens=50, messages=messages)
    assert received(kinds, ANTHROPIC)["messages"][0]["content"][0] == document
    for model in (OPENAI, GEMINI, ECHO):
        before = kinds.upstream_requests()
        with pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.create(model=model, max_tokens=50, messages=messages)
        assert "messages.0.content.0" in caught.value.body["error"]["message"]
        assert kinds.upstream_requests() == before


def test_a_compressed_request_is_translated_for_anthropic(client, kinds):
    """Compression rewrites the conversation, so the client's own body no longer says what to
    send: the Anthropic channel gets the translation of the compressed one."""
    words = " ".join(f"word{i}" for i in range(200))
    turns: list[dict[str, Any]] = []
    for i in range(4):
        turns += [{"role": "user", "content": f"Turn {i}: {words}"},
                  {"role": "assistant", "content": f"Answer {i}: {words}"}]
    turns.append({"role": "user", "content": "And now?"})
    raw = client.messages.with_raw_response.create(
        model=ANTHROPIC, max_tokens=50, messages=turns,
        extra_headers={"X-Context-Compression": "truncate", "X-Compression-Threshold": "300",
                       "X-Compression-Keep-Turns": "1"})
    assert raw.parse().content[0].text == anthropic_upstream.REPLY
    sent = received(kinds, ANTHROPIC)["messages"]
    assert len(sent) < len(turns) and sent[-1]["content"] == [
        {"type": "text", "text": "And now?"}]
    row = kinds.gateway.wait_row(raw.request_id)
    assert row["tokens_after"] < row["tokens_before"]


def test_a_request_compression_leaves_as_it_was_goes_natively(client, kinds):
    """Compression asked for and not needed (every turn is a recent one it keeps) leaves the
    conversation as it came: the Anthropic channel gets the client's own body."""
    words = " ".join(f"word{i}" for i in range(200))
    turns: list[dict[str, Any]] = []
    for i in range(2):
        turns += [{"role": "user", "content": f"Turn {i}: {words}"},
                  {"role": "assistant", "content": f"Answer {i}: {words}"}]
    turns.append({"role": "user", "content": [
        {"type": "text", "text": "And now?", "cache_control": {"type": "ephemeral"}}]})
    raw = client.messages.with_raw_response.create(
        model=ANTHROPIC, max_tokens=50, messages=turns,
        extra_headers={"X-Context-Compression": "truncate", "X-Compression-Threshold": "300",
                       "X-Compression-Keep-Turns": "5"})
    assert raw.parse().content[0].text == anthropic_upstream.REPLY
    assert received(kinds, ANTHROPIC)["messages"] == turns
    row = kinds.gateway.wait_row(raw.request_id)
    assert row["tokens_after"] == row["tokens_before"] > 300


def test_count_tokens(client, kinds):
    before = kinds.upstream_requests()
    short = client.messages.count_tokens(model=OPENAI, messages=[
        {"role": "user", "content": "Hello"}])
    longer = client.messages.count_tokens(
        model=ANTHROPIC, system="You are a weather assistant.", tools=[WEATHER],
        messages=[{"role": "user", "content": "What is the weather in Paris today, please?"}])
    assert 0 < short.input_tokens < longer.input_tokens
    assert kinds.upstream_requests() == before
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model",
                                     messages=[{"role": "user", "content": "Hi"}])
    bad = anthropic.Anthropic(base_url=kinds.gateway.base_url, api_key="tm-nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.count_tokens(model=OPENAI, messages=[{"role": "user", "content": "Hi"}])


@pytest.mark.parametrize("stream", [False, True])
def test_an_idempotency_key_replays_in_the_apis_shape(client, kinds, stream):
    key = f"messages-replay-{stream}"
    body = {"model": ANTHROPIC, "max_tokens": 50,
            "messages": [{"role": "user", "content": "Once only"}]}
    before = len(kinds.anthropic.received)

    def once() -> tuple[Any, dict[str, str]]:
        options = {"extra_headers": {"Idempotency-Key": key}}
        if not stream:
            raw = client.messages.with_raw_response.create(**body, **options)
            return raw.parse().to_dict(), dict(raw.headers)
        with client.messages.stream(**body, **options) as events:
            return events.get_final_message().to_dict(), dict(events.response.headers)

    first, _ = once()
    again, headers = once()
    assert again == first and first["content"][0]["text"] == anthropic_upstream.REPLY
    assert headers["idempotent-replayed"] == "true"
    assert len(kinds.anthropic.received) == before + 1


def test_a_key_names_a_request_of_one_door(client, kinds):
    """The same idempotency key on both doors is two requests: each answered in its format."""
    key = "one-key-two-doors"
    chat = kinds.gateway.client().chat.completions.create(
        model=OPENAI, messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"Idempotency-Key": key})
    assert chat.object == "chat.completion"
    message = client.messages.create(model=OPENAI, max_tokens=20,
                                     messages=[{"role": "user", "content": "Hi"}],
                                     extra_headers={"Idempotency-Key": key})
    assert message.type == "message" and message.content[0].text == openai_upstream.REPLY


def test_the_door_is_in_the_ledger_beside_chat(kinds):
    chat = kinds.gateway.client().chat.completions.with_raw_response.create(
        model=OPENAI, messages=[{"role": "user", "content": "Hi"}])
    row = kinds.gateway.wait_row(chat.headers["x-request-id"])
    assert row["door"] == "chat"



def test_max_tokens_runs_from_one(client, kinds):
    client.messages.create(model=ANTHROPIC, max_tokens=1,
                           messages=[{"role": "user", "content": "Hi"}])
    assert received(kinds, ANTHROPIC)["max_tokens"] == 1
    before = kinds.upstream_requests()
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=ANTHROPIC, max_tokens=0,
                               messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.body["error"]["message"].startswith("max_tokens:")
    assert kinds.upstream_requests() == before
