"""An Anthropic-kind channel behind the OpenAI format, driven by the official `openai` SDK
against a fake Messages API that validates every request with the `anthropic` SDK's types."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator

import openai
import pytest

from tests.conftest import ADMIN_KEY, Gateway, started_gateway, wait_until
from tests.fakes.anthropic_upstream import FINAL_ANSWER, REPLY, FakeAnthropic
from tokenmux.providers.anthropic import finish_reason, read_usage

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "format": {"type": "string"}}}}}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, claude: FakeAnthropic) -> Iterator[Gateway]:
    running = started_gateway(tmp_path_factory.mktemp("anthropic"), f"""\
        routing: {{backoff_initial_ms: 10, breaker: {{failures: 1000000}}}}
        providers:
          claude: {{kind: anthropic, base_url: "{claude.base_url}", api_key: {claude.api_key},
                    price_provider: anthropic}}
          claude-lenient: {{kind: anthropic, base_url: "{claude.base_url}",
                            api_key: {claude.api_key}, ignore_params: [temperature, seed]}}
        models:
          - name: claude-sonnet-4-5
            channels: [{{provider: claude, model: claude-sonnet-4-5}}]
          - name: lenient-claude
            channels: [{{provider: claude-lenient, model: claude-haiku-4-5}}]
        """)
    yield running
    running.stop()


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return gateway.client()


def user(text: str) -> list[dict[str, object]]:
    return [{"role": "user", "content": text}]


def test_a_plain_completion(client, claude):
    raw = client.chat.completions.with_raw_response.create(
        model="claude-sonnet-4-5", messages=user("Say hello"))
    completion = raw.parse()
    assert completion.model == "claude-sonnet-4-5"
    assert completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert (choice.message.content, choice.finish_reason) == (REPLY, "stop")
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 8)
    sent = claude.last()
    assert sent.body == {"model": "claude-sonnet-4-5", "max_tokens": 4096,
                         "messages": [{"role": "user", "content": [
                             {"type": "text", "text": "Say hello"}]}]}
    assert sent.headers["anthropic-version"] == "2026-10-21"
    assert ADMIN_KEY not in str(sent.headers)  # the client's key never goes upstream


def test_a_streamed_completion(client, gateway):
    chunks = list(client.chat.completions.create(
        model="claude-sonnet-4-5", messages=user("Say hello"), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    # The usage rides on the finish chunk: no chunk without choices by default.
    assert all(c.choices for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (12, 8)


def test_system_and_developer_messages_go_to_system_and_turns_merge(client, claude):
    client.chat.completions.create(model="claude-sonnet-4-5", messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
        {"role": "user", "content": "One"},
        {"role": "user", "content": [{"type": "text", "text": "Two"}, {"type": "text",
                                                                        "text": ""}]},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Three"},
    ])
    body = claude.last().body
    assert body["system"] == [{"type": "text", "text": "Be brief."},
                              {"type": "text", "text": "Use French."}]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "One"},
                                     {"type": "text", "text": "Two"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Noted."}]},
        {"role": "user", "content": [{"type": "text", "text": "Three"}]},
    ]


def test_images_by_url_and_by_data_url(client, claude):
    client.chat.completions.create(model="claude-sonnet-4-5", messages=[{"role": "user",
        "content": [{"type": "text", "text": "Compare"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg",
                                                        "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}],
    }])
    blocks = claude.last().body["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "url",
                                                     "url": "https://example.com/a.jpg"}}
    assert blocks[2] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                     "data": PNG}}


def test_a_tool_calling_round_trip(client, claude):
    messages = user('@call get_weather {"city": "Paris"}')
    first = client.chat.completions.create(model="claude-sonnet-4-5", messages=messages,
                                           tools=[WEATHER_TOOL], tool_choice="auto")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name) == ("toolu_fake01", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert claude.last().body["tools"] == [{
        "name": "get_weather", "description": "Weather in a city",
        "input_schema": WEATHER_TOOL["function"]["parameters"]}]
    assert claude.last().body["tool_choice"] == {"type": "auto"}

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"}]
    final = client.chat.completions.create(model="claude-sonnet-4-5", messages=messages,
                                           tools=[WEATHER_TOOL])
    assert final.choices[0].message.content == FINAL_ANSWER
    turns = claude.last().body["messages"]
    assert turns[1]["content"] == [{"type": "tool_use", "id": "toolu_fake01",
                                    "name": "get_weather", "input": {"city": "Paris"}}]
    assert turns[2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_fake01",
                                    "content": "sunny, 24 C"}]


def test_a_streamed_tool_calling_round_trip_with_the_sdk_helper(client):
    messages = user('@call get_weather {"city": "Paris", "unit": "celsius"}')
    with client.chat.completions.stream(model="claude-sonnet-4-5", messages=messages,
                                        tools=[WEATHER_TOOL]) as stream:
        first = stream.get_final_completion()
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert (call.id, call.type, call.function.name) == ("toolu_fake01", "function",
                                                        "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}
    messages += [{"role": "assistant", "tool_calls": [call.model_dump(exclude_none=True)]},
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    with client.chat.completions.stream(model="claude-sonnet-4-5", messages=messages,
                                        tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == FINAL_ANSWER


def test_parallel_tool_calls_stream_with_dense_indexes(client, claude):
    tools = [WEATHER_TOOL, TIME_TOOL]
    chunks = list(client.chat.completions.create(
        model="claude-sonnet-4-5", messages=user("@calls2"), tools=tools, stream=True,
        parallel_tool_calls=True))
    starts = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()
              if d.id]
    assert [(d.index, d.id, d.function.name) for d in starts] == [
        (0, "toolu_fakeA", "get_weather"), (1, "toolu_fakeB", "get_time")]
    with client.chat.completions.stream(model="claude-sonnet-4-5", messages=user("@calls2"),
                                        tools=tools, parallel_tool_calls=False) as stream:
        one = stream.get_final_completion().choices[0].message
    assert [c.function.name for c in one.tool_calls] == ["get_weather"]  # told so, Claude obeys
    assert claude.last().body["tool_choice"] == {"type": "auto",
                                                 "disable_parallel_tool_use": True}
    with client.chat.completions.stream(model="claude-sonnet-4-5", messages=user("@calls2"),
                                        tools=tools) as stream:
        message = stream.get_final_completion().choices[0].message
    assert message.content == "Let me look both up."
    assert [json.loads(c.function.arguments) for c in message.tool_calls] == [
        {"city": "Paris"}, {"city": "Paris", "format": "24h"}]
    # Both results answered in one user turn, as the API requires.
    calls = [c.model_dump(exclude_none=True) for c in message.tool_calls]
    final = client.chat.completions.create(model="claude-sonnet-4-5", tools=tools, messages=[
        *user("@calls2"), {"role": "assistant", "content": message.content, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "toolu_fakeA", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_fakeB", "content": "14:00"}])
    assert final.choices[0].message.content == FINAL_ANSWER
    assert [b["tool_use_id"] for b in claude.last().body["messages"][2]["content"]] == [
        "toolu_fakeA", "toolu_fakeB"]


@pytest.mark.parametrize(("choice", "sent"), [
    ("none", {"type": "none"}), ("required", {"type": "any"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"type": "tool", "name": "get_weather"}),
])
def test_tool_choice(client, claude, choice, sent):
    client.chat.completions.create(model="claude-sonnet-4-5", messages=user("Hi"),
                                   tools=[WEATHER_TOOL], tool_choice=choice)
    assert claude.last().body["tool_choice"] == sent


def test_json_mode_and_json_schema_use_structured_output(client, claude):
    answer = client.chat.completions.create(model="claude-sonnet-4-5", messages=user("JSON"),
                                            response_format={"type": "json_object"})
    assert json.loads(answer.choices[0].message.content) == {"answer": 42}
    assert claude.last().body["output_config"] == {
        "format": {"type": "json_schema", "schema": {"type": "object"}}}
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}}
    client.chat.completions.create(model="claude-sonnet-4-5", messages=user("JSON"),
                                   response_format={"type": "json_schema", "json_schema": {
                                       "name": "answer", "schema": schema}})
    assert claude.last().body["output_config"]["format"]["schema"] == schema


def test_stop_and_max_tokens(client, claude):
    client.chat.completions.create(model="claude-sonnet-4-5", messages=user("Hi"),
                                   stop=["END", "\n\nHuman"], max_completion_tokens=100)
    assert claude.last().body["stop_sequences"] == ["END", "\n\nHuman"]
    assert claude.last().body["max_tokens"] == 100
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="claude-sonnet-4-5", messages=user("Hi"), stop=" ")
    assert caught.value.param == "stop"


# Sampling hints are dropped, not refused (tests/test_param_policy.py).
@pytest.mark.parametrize(("field", "value"), [
    ("logprobs", True), ("logit_bias", {"50256": -100}), ("reasoning_effort", "high"),
])
def test_a_parameter_the_api_cannot_honour_is_a_400(gateway, claude, field, value):
    before = len(claude.received)
    response = gateway.post({"model": "claude-sonnet-4-5", "messages": user("Hi"),
                             field: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["type"]) == (field, "invalid_request_error")
    assert "claude-sonnet-4-5" in error["message"]
    assert len(claude.received) == before  # refused before anything went out


def test_defaults_pass_and_an_operator_may_choose_to_drop(client, claude):
    client.chat.completions.create(model="claude-sonnet-4-5", messages=user("Hi"),
                                   temperature=1, presence_penalty=0, logprobs=False)
    client.chat.completions.create(model="lenient-claude", messages=user("Hi"),
                                   temperature=0.3, seed=4)
    assert "temperature" not in claude.last().body and "seed" not in claude.last().body


def test_n_fans_out_and_bills_every_answer(gateway, claude):
    client = gateway.client()
    before = len(claude.received)
    raw = client.chat.completions.with_raw_response.create(
        model="claude-sonnet-4-5", messages=user("Say hello"), n=2)
    completion = raw.parse()
    assert [(c.index, c.message.content) for c in completion.choices] == [(0, REPLY),
                                                                          (1, REPLY)]
    assert len(claude.received) == before + 2
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (24, 16)
    row = gateway.wait_row(raw.headers["x-request-id"])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (24, 16)

    chunks = list(client.chat.completions.create(
        model="claude-sonnet-4-5", messages=user("Say hello"), n=2, stream=True))
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == {0: REPLY, 1: REPLY}
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (24, 16)
    assert len({c.id for c in chunks}) == 1
    response = gateway.post({"model": "claude-sonnet-4-5", "messages": user("Hi"), "n": 9})
    assert (response.status_code, response.json()["error"]["param"]) == (400, "n")


@pytest.mark.parametrize(("stop_reason", "expected"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"),
    ("max_tokens", "length"), ("model_context_window_exceeded", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"), ("something_new", "stop"),
    (None, None),
])
def test_finish_reason_mapping(stop_reason, expected):
    assert finish_reason(stop_reason) == expected


@pytest.mark.parametrize(("command", "expected"), [
    ("@maxtokens", "length"), ("@refusal", "content_filter"),
])
def test_finish_reasons_end_to_end(client, command, expected):
    answer = client.chat.completions.create(model="claude-sonnet-4-5", messages=user(command))
    assert answer.choices[0].finish_reason == expected
    chunks = list(client.chat.completions.create(model="claude-sonnet-4-5",
                                                 messages=user(command), stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == expected


@pytest.mark.parametrize(("usage", "expected"), [
    ({"input_tokens": 10, "output_tokens": 5}, (10, 5, 0)),
    ({"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
      "cache_creation_input_tokens": 20}, (130, 5, 100)),
    ({"input_tokens": 3, "output_tokens": 0, "cache_read_input_tokens": None}, (3, 0, 0)),
])
def test_usage_mapping(usage, expected):
    mapped = read_usage(usage)
    assert (mapped.prompt_tokens, mapped.completion_tokens, mapped.cached_tokens) == expected


def test_cached_tokens_reach_the_client_and_the_ledger(gateway):
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="claude-sonnet-4-5", messages=user("@cached"))
    usage = raw.parse().usage
    assert (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens) == (132, 100)
    row = gateway.wait_row(raw.headers["x-request-id"])
    assert (row["prompt_tokens"], row["cached_tokens"]) == (132, 100)
    assert float(row["cost_usd"]) > 0  # priced from genai-prices' Anthropic table


@pytest.mark.parametrize(("status", "kind", "seen", "code", "attempts", "no_retry"), [
    (400, "invalid_request_error", 400, "invalid_request_error", 1, None),
    (413, "invalid_request_error", 413, "invalid_request_error", 1, None),
    (401, "authentication_error", 502, "bad_gateway", 1, "false"),
    (403, "permission_error", 502, "bad_gateway", 1, "false"),
    (404, "not_found_error", 502, "bad_gateway", 1, "false"),
    (429, "rate_limit_error", 429, "upstream_rate_limited", 3, "false"),
    (500, "api_error", 502, "bad_gateway", 3, "false"),
    (529, "overloaded_error", 502, "bad_gateway", 3, "false"),
    (504, "timeout_error", 504, "upstream_timeout", 3, "false"),
])
def test_error_mapping(gateway, claude, status, kind, seen, code, attempts, no_retry):
    before = len(claude.received)
    response = gateway.post({"model": "claude-sonnet-4-5",
                             "messages": user(f"@fail {status} {kind}")})
    assert response.status_code == seen
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    # Overloaded and server errors are retried; the request's own faults are not, nor is a
    # channel that refused the gateway's credentials (it would refuse them again).
    assert len(claude.received) - before == attempts
    assert response.headers.get("x-should-retry") == no_retry
    if status == 429:
        assert response.headers["retry-after"] == "1"


def test_a_failure_mid_stream_is_an_error_event(client, gateway):
    stream = client.chat.completions.create(model="claude-sonnet-4-5",
                                            messages=user("@midstream"), stream=True)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk)
    assert "Overloaded" in str(caught.value)
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == (
        "Hello from the")
    assert wait_until(lambda: any(r["status"] == 502 and r["stream"]
                                  for r in gateway.rows(model="claude-sonnet-4-5")))


def test_the_provider_key_never_reaches_the_client(gateway, claude):
    response = gateway.post({"model": "claude-sonnet-4-5", "messages": user("@leak")})
    assert response.status_code == 400
    assert claude.api_key not in response.text
    assert "***" in response.json()["error"]["message"]
    listing = gateway.client().models.list()
    assert claude.api_key not in str([m.model_dump() for m in listing.data])
    assert not claude.rejected, claude.rejected  # no request the API would refuse went out


def test_without_a_config_the_anthropic_key_alone_serves_the_shipped_claude(tmp_path, claude):
    running = Gateway(tmp_path, None)
    running.env.update(ANTHROPIC_API_KEY=claude.api_key, ANTHROPIC_BASE_URL=claude.base_url,
                       TOKENMUX_ADMIN_KEY=ADMIN_KEY)
    running.start()
    try:
        models = {m.id: m for m in running.client().models.list()}
        assert "claude-sonnet-4-5" in models and "gpt-4.1" not in models
        assert "json" in models["claude-sonnet-4-5"].model_extra["capabilities"]
        raw = running.client().chat.completions.with_raw_response.create(
            model="claude-sonnet-4-5@20250929", messages=user("Say hello"))
        assert raw.parse().choices[0].message.content == REPLY
        assert claude.last().body["model"] == "claude-sonnet-4-5-20250929"
    finally:
        running.stop()
    with sqlite3.connect(tmp_path / "tokenmux.db") as db:  # the default database, in the cwd
        [(cost,)] = db.execute("SELECT cost_usd FROM usage WHERE request_id = ?",
                               (raw.headers["x-request-id"],)).fetchall()
    assert float(cost) > 0  # the shipped catalog names Anthropic's price table
