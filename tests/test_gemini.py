"""A Gemini-kind channel behind the OpenAI format, driven by the official `openai` SDK against a
fake Gemini API that validates every request with the `google-genai` SDK's types."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import openai
import pytest

from tests.conftest import ADMIN_KEY, Gateway, started_gateway, wait_until
from tests.fakes.gemini_upstream import FINAL_ANSWER, REPLY, SIGNATURE, FakeGemini
from tokenmux.providers.gemini import finish_reason, read_usage

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "format": {"type": "string"}}}}}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
MODEL = "gemini-2.5-flash"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, gemini: FakeGemini) -> Iterator[Gateway]:
    running = started_gateway(tmp_path_factory.mktemp("gemini"), f"""\
        routing: {{backoff_initial_ms: 10, breaker: {{failures: 1000000}}}}
        providers:
          google: {{kind: gemini, base_url: "{gemini.base_url}", api_key: {gemini.api_key},
                    price_provider: google}}
        models:
          - name: {MODEL}
            channels: [{{provider: google, model: {MODEL}}}]
        """)
    yield running
    running.stop()


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return gateway.client()


def user(text: str) -> list[dict[str, object]]:
    return [{"role": "user", "content": text}]


def test_a_plain_completion(client, gemini):
    completion = client.chat.completions.create(model=MODEL, messages=user("Say hello"))
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert (choice.message.content, choice.finish_reason) == (REPLY, "stop")
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (11, 8)
    sent = gemini.last()
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"
    assert sent.body == {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]}
    assert sent.headers["x-goog-api-key"] == gemini.api_key and not sent.query
    assert ADMIN_KEY not in str(sent.headers)


def test_a_streamed_completion(client, gemini):
    chunks = list(client.chat.completions.create(model=MODEL, messages=user("Say hello"),
                                                 stream=True))
    assert gemini.last().query == {"alt": "sse"}
    assert gemini.last().path.endswith(":streamGenerateContent")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    # The usage rides on the finish chunk: no chunk without choices by default.
    assert all(c.choices for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (11, 8)


def test_system_and_developer_go_to_the_system_instruction_and_turns_merge(client, gemini):
    client.chat.completions.create(model=MODEL, messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
        {"role": "user", "content": "One"},
        {"role": "user", "content": [{"type": "text", "text": "Two"}, {"type": "text",
                                                                        "text": ""}]},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Three"},
    ])
    body = gemini.last().body
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."},
                                                   {"text": "Use French."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "One"}, {"text": "Two"}]},
        {"role": "model", "parts": [{"text": "Noted."}]},
        {"role": "user", "parts": [{"text": "Three"}]},
    ]


def test_images_by_url_and_by_data_url(client, gemini):
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg?v=2"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}])
    parts = gemini.last().body["contents"][0]["parts"]
    assert parts[1] == {"fileData": {"mimeType": "image/jpeg",
                                     "fileUri": "https://example.com/a.jpg?v=2"}}
    assert parts[2] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    response = client.chat.completions.with_raw_response
    with pytest.raises(openai.BadRequestError) as caught:
        response.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/image"}}]}])
    assert caught.value.param == "messages[0].content[0].image_url.url"


def test_a_tool_calling_round_trip(client, gemini):
    messages = user('@call get_weather {"city": "Paris"}')
    first = client.chat.completions.create(model=MODEL, messages=messages,
                                           tools=[WEATHER_TOOL], tool_choice="auto")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    # The tool's JSON schema goes through whole, keywords Gemini's own schema lacks included.
    assert gemini.last().body["tools"] == [{"functionDeclarations": [{
        "name": "get_weather", "description": "Weather in a city",
        "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"]}]}]
    assert gemini.last().body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"}]
    final = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert final.choices[0].message.content == FINAL_ANSWER
    contents = gemini.last().body["contents"]
    assert contents[1] == {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]}
    assert contents[2] == {"role": "user", "parts": [{"functionResponse": {
        "name": "get_weather", "response": {"result": "sunny, 24 C"}}}]}


def test_a_streamed_round_trip_with_parallel_calls_and_a_thought_signature(client, gemini):
    tools = [WEATHER_TOOL, TIME_TOOL]
    with client.chat.completions.stream(model=MODEL, messages=user("@calls2"),
                                        tools=tools) as stream:
        first = stream.get_final_completion()
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look both up."
    calls = choice.message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {"city": "Paris", "format": "24h"})]
    assert len({c.id for c in calls}) == 2
    messages = [*user("@calls2"), choice.message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": calls[0].id, "content": '{"sky": "clear"}'},
                {"role": "tool", "tool_call_id": calls[1].id, "content": "14:00"}]
    with client.chat.completions.stream(model=MODEL, messages=messages, tools=tools) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == FINAL_ANSWER
    model_turn, results = gemini.last().body["contents"][1:3]
    # The thinking model's signature comes back with its call, as Gemini requires.
    assert model_turn["parts"][1]["thoughtSignature"] == SIGNATURE
    assert results["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}},
        {"functionResponse": {"name": "get_time", "response": {"result": "14:00"}}}]


@pytest.mark.parametrize(("choice", "sent"), [
    ("none", {"mode": "NONE"}), ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
])
def test_tool_choice(client, gemini, choice, sent):
    client.chat.completions.create(model=MODEL, messages=user("Hi"), tools=[WEATHER_TOOL],
                                   tool_choice=choice)
    assert gemini.last().body["toolConfig"] == {"functionCallingConfig": sent}


def test_json_mode_json_schema_and_sampling(client, gemini):
    answer = client.chat.completions.create(model=MODEL, messages=user("JSON"),
                                            response_format={"type": "json_object"})
    assert json.loads(answer.choices[0].message.content) == {"answer": 42}
    assert gemini.last().body["generationConfig"] == {"responseMimeType": "application/json"}
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}}
    client.chat.completions.create(
        model=MODEL, messages=user("JSON"), temperature=0.2, top_p=0.9, seed=7,
        presence_penalty=0.5, frequency_penalty=0.1, stop=["END"], max_completion_tokens=50,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    assert gemini.last().body["generationConfig"] == {
        "maxOutputTokens": 50, "temperature": 0.2, "topP": 0.9, "presencePenalty": 0.5,
        "frequencyPenalty": 0.1, "seed": 7, "stopSequences": ["END"],
        "responseMimeType": "application/json", "responseJsonSchema": schema}


@pytest.mark.parametrize(("field", "value"), [
    # parallel_tool_calls: false is honoured (tests/test_param_policy.py).
    ("logprobs", True), ("logit_bias", {"50256": -100}),
    ("reasoning_effort", "high"), ("modalities", ["text", "audio"]),
])
def test_a_parameter_gemini_cannot_honour_is_a_400(gateway, gemini, field, value):
    before = len(gemini.received)
    response = gateway.post({"model": MODEL, "messages": user("Hi"), field: value})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == field
    assert len(gemini.received) == before


def test_n_is_the_candidate_count(gateway, gemini):
    client = gateway.client()
    raw = client.chat.completions.with_raw_response.create(model=MODEL,
                                                           messages=user("Say hello"), n=2)
    completion = raw.parse()
    assert gemini.last().body["generationConfig"] == {"candidateCount": 2}
    assert [(c.index, c.message.content) for c in completion.choices] == [(0, REPLY),
                                                                          (1, REPLY)]
    assert gateway.wait_row(raw.headers["x-request-id"])["completion_tokens"] == 16
    texts = {0: "", 1: ""}
    chunks = list(client.chat.completions.create(model=MODEL, messages=user("Say hello"), n=2,
                                                 stream=True))
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == {0: REPLY, 1: REPLY}
    assert chunks[-1].usage.completion_tokens == 16


def test_fewer_candidates_than_asked_is_still_a_whole_stream(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=user("@fewer"), n=2,
                                                 stream=True))
    assert {c.index for chunk in chunks for c in chunk.choices} == {0}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None  # ended as a finished stream, not a cut one


@pytest.mark.parametrize(("reason", "called", "expected"), [
    ("STOP", False, "stop"), ("STOP", True, "tool_calls"), ("MAX_TOKENS", False, "length"),
    ("SAFETY", False, "content_filter"), ("RECITATION", False, "content_filter"),
    ("PROHIBITED_CONTENT", False, "content_filter"), ("SPII", False, "content_filter"),
    ("BLOCKLIST", False, "content_filter"), ("OTHER", False, "stop"),
    ("SOMETHING_NEW", False, "stop"), (None, False, None),
])
def test_finish_reason_mapping(reason, called, expected):
    assert finish_reason(reason, called) == expected


@pytest.mark.parametrize(("command", "expected"), [
    ("@maxtokens", "length"), ("@safety", "content_filter"), ("@blocked", "content_filter"),
])
def test_finish_reasons_end_to_end(client, command, expected):
    answer = client.chat.completions.create(model=MODEL, messages=user(command))
    assert answer.choices[0].finish_reason == expected
    chunks = list(client.chat.completions.create(model=MODEL, messages=user(command),
                                                 stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == expected


@pytest.mark.parametrize(("usage", "expected"), [
    ({"promptTokenCount": 10, "candidatesTokenCount": 5}, (10, 5, 0, 0)),
    ({"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 30,
      "cachedContentTokenCount": 4}, (10, 35, 4, 30)),
    ({"promptTokenCount": 7}, (7, 0, 0, 0)),
])
def test_usage_mapping(usage, expected):
    mapped = read_usage(usage)
    assert (mapped.prompt_tokens, mapped.completion_tokens, mapped.cached_tokens,
            mapped.reasoning_tokens) == expected


def test_thinking_stays_out_of_the_answer_and_is_billed(gateway):
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=MODEL, messages=user("@thinking"))
    completion = raw.parse()
    assert completion.choices[0].message.content == REPLY
    usage = completion.usage
    assert (usage.completion_tokens, usage.completion_tokens_details.reasoning_tokens,
            usage.prompt_tokens_details.cached_tokens) == (38, 30, 4)
    row = gateway.wait_row(raw.headers["x-request-id"])
    assert (row["completion_tokens"], row["reasoning_tokens"], row["cached_tokens"]) == (
        38, 30, 4)
    assert float(row["cost_usd"]) > 0  # priced from genai-prices' Google table


@pytest.mark.parametrize(("command", "seen", "code", "attempts", "no_retry"), [
    ("@fail 400", 400, "INVALID_ARGUMENT", 1, None),
    ("@fail 400 key", 502, "bad_gateway", 1, "false"),
    ("@fail 403", 502, "bad_gateway", 1, "false"),
    ("@fail 404", 502, "bad_gateway", 1, "false"),
    ("@fail 429", 429, "upstream_rate_limited", 3, "false"),
    ("@fail 500", 502, "bad_gateway", 3, "false"),
    ("@fail 503", 502, "bad_gateway", 3, "false"),
    ("@fail 504", 504, "upstream_timeout", 3, "false"),
])
def test_error_mapping(gateway, gemini, command, seen, code, attempts, no_retry):
    before = len(gemini.received)
    response = gateway.post({"model": MODEL, "messages": user(command)})
    assert response.status_code == seen
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    assert len(gemini.received) - before == attempts
    assert response.headers.get("x-should-retry") == no_retry
    if seen == 429:
        assert response.headers["retry-after"] == "1"


def test_a_failure_mid_stream_is_an_error_event(client, gateway):
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(model=MODEL, messages=user("@midstream"),
                                                    stream=True):
            received.append(chunk)
    assert "overloaded" in str(caught.value)
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == (
        "Hello from the fake ")
    assert wait_until(lambda: any(r["status"] == 502 and r["stream"]
                                  for r in gateway.rows(model=MODEL)))


def test_the_provider_key_never_reaches_the_client(gateway, gemini):
    response = gateway.post({"model": MODEL, "messages": user("@leak")})
    assert response.status_code == 400
    assert gemini.api_key not in response.text and "***" in response.text
    assert not gemini.rejected, gemini.rejected  # no request the API would refuse went out
