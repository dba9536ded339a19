"""The Responses door (`POST /v1/responses`) through the official openai SDK, with each channel
kind behind it: plain answers, streams, function calling, continued conversations, structured
output, images, the token limit and usage; every answer and event checked against the SDK's own
types."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx2 as httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from tests.conftest import ADMIN_KEY
from tests.every_kind import ANTHROPIC, GEMINI, OPENAI, EveryKind, every_kind

KINDS = (OPENAI, ANTHROPIC, GEMINI)
REPLIES = {OPENAI: "Hello from the fake upstream, here to help",
           ANTHROPIC: "Hello from the fake Claude, glad to help",
           GEMINI: "Hello from the fake Gemini, happy to help"}
FINAL_ANSWER = "It is sunny in Paris"
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False},
           "strict": True}
CALL = '@call get_weather {"city": "Paris"}'
EVENTS: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)
# A 1x1 transparent PNG.
PIXEL = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode()


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EveryKind]:
    with every_kind(tmp_path_factory.mktemp("responses")) as running:
        yield running


def post(kinds: EveryKind, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(kinds.gateway.base_url + "/v1/responses", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}", **headers})


def last_sent(kinds: EveryKind, model: str) -> dict:
    fake = {OPENAI: kinds.openai, ANTHROPIC: kinds.anthropic, GEMINI: kinds.gemini}[model]
    return fake.received[-1].body


def events_of(response: httpx.Response) -> list[dict]:
    """The stream's events, each checked against the SDK's types and its `event:` line."""
    found = []
    for block in response.text.strip().split("\n\n"):
        name, data = block.split("\n", 1)
        event = TypeAdapter(dict).validate_json(data.removeprefix("data: "))
        assert name == "event: " + event["type"]
        if event["type"] != "error":
            EVENTS.validate_python(event)
        found.append(event)
    assert [e["sequence_number"] for e in found] == list(range(len(found)))
    return found


@pytest.mark.parametrize("model", KINDS)
def test_a_plain_answer_is_a_response_object(kinds, model):
    raw = kinds.gateway.client().responses.with_raw_response.create(
        model=model, input="Say hello", instructions="Answer briefly.", temperature=0.5)
    response = raw.parse()
    assert response.output_text == REPLIES[model]
    assert response.status == "completed" and response.incomplete_details is None
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.instructions == "Answer briefly."
    [item] = response.output
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    assert item.content[0].type == "output_text"
    usage = response.usage
    assert usage.output_tokens == len(REPLIES[model].split())
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens > usage.output_tokens
    Response.model_validate(raw.http_response.json())  # every field of the SDK's own type

    sent = last_sent(kinds, model)
    if model == OPENAI:
        assert sent["messages"] == [{"role": "system", "content": "Answer briefly."},
                                    {"role": "user", "content": "Say hello"}]
        assert sent["temperature"] == 0.5
    elif model == ANTHROPIC:
        assert sent["system"] in ("Answer briefly.", [{"type": "text",
                                                       "text": "Answer briefly."}])
    else:
        assert sent["systemInstruction"]["parts"] == [{"text": "Answer briefly."}]

    row = kinds.gateway.wait_row(raw.headers["x-request-id"])
    assert row["door"] == "responses" and row["status"] == 200 and not row["stream"]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage.input_tokens,
                                                                usage.output_tokens)


@pytest.mark.parametrize("model", KINDS)
def test_a_stream_has_the_events_the_sdk_expects(kinds, model):
    client = kinds.gateway.client()
    with client.responses.stream(model=model, input="Say hello") as stream:
        seen = [event.type for event in stream]
        final = stream.get_final_response()
    assert seen[:4] == ["response.created", "response.in_progress",
                        "response.output_item.added", "response.content_part.added"]
    assert seen[-4:] == ["response.output_text.done", "response.content_part.done",
                         "response.output_item.done", "response.completed"]
    assert "response.output_text.delta" in seen
    assert final.output_text == REPLIES[model] and final.status == "completed"
    assert final.usage.output_tokens == len(REPLIES[model].split())

    with httpx.stream("POST", kinds.gateway.base_url + "/v1/responses", timeout=30,
                      json={"model": model, "input": "Say hello", "stream": True},
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as raw:
        raw.read()
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = events_of(raw)
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == REPLIES[model]
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert len(ids) == 1
    row = kinds.gateway.wait_row(raw.headers["x-request-id"])
    assert row["door"] == "responses" and row["stream"] and row["status"] == 200
    assert row["completion_tokens"] == len(REPLIES[model].split())


@pytest.mark.parametrize("model", KINDS)
def test_a_function_call_round_trip(kinds, model):
    client = kinds.gateway.client()
    question = [{"role": "user", "content": [{"type": "input_text", "text": CALL}]}]
    first = client.responses.create(model=model, input=question, tools=[WEATHER],
                                    tool_choice="auto")
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id and call.status == "completed"
    assert TypeAdapter(dict).validate_json(call.arguments) == {"city": "Paris"}
    sent = last_sent(kinds, model)
    if model == OPENAI:
        assert sent["tools"] == [{"type": "function", "function": {
            k: WEATHER[k] for k in ("name", "description", "parameters", "strict")}}]

    # The SDK's pattern: the output appended to the input, then the call's output.
    follow = [*question, *first.output,
              {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    second = client.responses.create(model=model, input=follow, tools=[WEATHER])
    assert second.output_text == FINAL_ANSWER
    sent = last_sent(kinds, model)
    if model == OPENAI:
        assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.call_id,
                                       "content": "sunny"}


@pytest.mark.parametrize("model", KINDS)
def test_a_streamed_function_call(kinds, model):
    client = kinds.gateway.client()
    with client.responses.stream(model=model, input=CALL, tools=[WEATHER]) as stream:
        seen = [event for event in stream]
        final = stream.get_final_response()
    kinds_seen = [e.type for e in seen]
    assert "response.function_call_arguments.delta" in kinds_seen
    assert "response.function_call_arguments.done" in kinds_seen
    [call] = final.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert TypeAdapter(dict).validate_json(call.arguments) == {"city": "Paris"}
    done = next(e for e in seen if e.type == "response.function_call_arguments.done")
    assert done.arguments == call.arguments


@pytest.mark.parametrize("model", KINDS)
def test_previous_response_id_continues_the_conversation(kinds, model):
    client = kinds.gateway.client()
    first = client.responses.create(model=model, input="Say hello", instructions="Be brief.")
    second = client.responses.create(model=model, input="Once more",
                                     previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.id != first.id
    assert second.output_text == REPLIES[model]
    sent = last_sent(kinds, model)
    if model == OPENAI:
        # The instructions are not carried over, as OpenAI does.
        assert sent["messages"] == [{"role": "user", "content": "Say hello"},
                                    {"role": "assistant", "content": REPLIES[model]},
                                    {"role": "user", "content": "Once more"}]
    elif model == ANTHROPIC:
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
        assert "system" not in sent
    else:
        assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]

    # A function call continued by id: only its output is sent.
    called = client.responses.create(model=model, input=CALL, tools=[WEATHER])
    [call] = called.output
    with client.responses.stream(model=model, tools=[WEATHER], previous_response_id=called.id,
                                 input=[{"type": "function_call_output",
                                         "call_id": call.call_id, "output": "sunny"}]) as s:
        answered = s.get_final_response()
    assert answered.output_text == FINAL_ANSWER
    # A streamed response is kept too.
    third = client.responses.create(model=model, input="Thanks",
                                    previous_response_id=answered.id)
    assert third.status == "completed"
    if model == OPENAI:
        assert [m["role"] for m in last_sent(kinds, model)["messages"]] == [
            "user", "assistant", "tool", "assistant", "user"]


class Answer(BaseModel):
    answer: int


@pytest.mark.parametrize("model", KINDS)
def test_structured_output_with_parse(kinds, model):
    client = kinds.gateway.client()
    parsed = client.responses.parse(model=model, input="What is the answer?",
                                    text_format=Answer)
    assert parsed.output_parsed == Answer(answer=42)
    assert parsed.text.format.type == "json_schema"
    sent = last_sent(kinds, model)
    if model == OPENAI:
        fmt = sent["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Answer"
        assert fmt["json_schema"]["strict"] is True
    elif model == ANTHROPIC:
        assert sent["output_config"]["format"]["type"] == "json_schema"
    else:
        assert sent["generationConfig"]["responseMimeType"] == "application/json"
    with client.responses.stream(model=model, input="The answer?", text_format=Answer) as s:
        streamed = s.get_final_response()
    assert streamed.output_parsed == Answer(answer=42)


@pytest.mark.parametrize("model", KINDS)
def test_the_token_limit_makes_an_incomplete_response(kinds, model):
    client = kinds.gateway.client()
    cut = client.responses.create(model=model, input="@maxtokens", max_output_tokens=16)
    assert cut.status == "incomplete"
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output[0].status == "incomplete" and cut.output_text == "Cut off"
    sent = last_sent(kinds, model)
    limit = {OPENAI: lambda b: b["max_completion_tokens"],
             ANTHROPIC: lambda b: b["max_tokens"],
             GEMINI: lambda b: b["generationConfig"]["maxOutputTokens"]}[model]
    assert limit(sent) == 16
    raw = post(kinds, {"model": model, "input": "@maxtokens", "stream": True})
    events = events_of(raw)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.mark.parametrize("model", KINDS)
def test_an_image_reaches_each_kind(kinds, model):
    url = f"data:image/png;base64,{PIXEL}"
    response = kinds.gateway.client().responses.create(model=model, input=[{
        "role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                    {"type": "input_image", "image_url": url,
                                     "detail": "low"}]}])
    assert response.output_text == REPLIES[model]
    sent = last_sent(kinds, model)
    if model == OPENAI:
        assert sent["messages"][0]["content"][1] == {"type": "image_url", "image_url": {
            "url": url, "detail": "low"}}
    elif model == ANTHROPIC:
        assert sent["messages"][0]["content"][1]["source"] == {
            "type": "base64", "media_type": "image/png", "data": PIXEL}
    else:
        assert sent["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png",
                                                                  "data": PIXEL}}


def test_cached_and_reasoning_tokens_are_in_the_usage(kinds):
    client = kinds.gateway.client()
    cached = client.responses.create(model=OPENAI, input="@usage 100 7 40")
    assert (cached.usage.input_tokens, cached.usage.output_tokens) == (100, 7)
    assert cached.usage.input_tokens_details.cached_tokens == 40
    silent = client.responses.create(model=OPENAI, input="@usage 100 0 0")
    assert (silent.usage.output_tokens, silent.usage.total_tokens) == (0, 100)
    thought = client.responses.create(model=GEMINI, input="@thinking")
    assert thought.usage.output_tokens_details.reasoning_tokens == 30
    assert thought.usage.input_tokens_details.cached_tokens == 4
    with client.responses.stream(model=GEMINI, input="@thinking") as stream:
        final = stream.get_final_response()
    assert final.usage.output_tokens_details.reasoning_tokens == 30
    anthropic = client.responses.create(model=ANTHROPIC, input="@cached")
    assert anthropic.usage.input_tokens_details.cached_tokens == 100


@pytest.mark.parametrize("model", (ANTHROPIC, GEMINI))
def test_a_failure_mid_stream_is_raised_by_the_sdk(kinds, model):
    seen = []
    client = kinds.gateway.client()
    with (pytest.raises(openai.APIError) as caught,
          client.responses.stream(model=model, input="@midstream") as stream):
        seen.extend(event.type for event in stream)
    assert caught.value.message
    assert "response.output_text.delta" in seen and seen[-1] == "response.failed"
    assert "response.completed" not in seen
    raw = post(kinds, {"model": model, "input": "@midstream", "stream": True})
    events = events_of(raw)
    assert [e["type"] for e in events[-2:]] == ["response.failed", "error"]
    assert events[-2]["response"]["status"] == "failed"
    assert events[-2]["response"]["error"]["message"] == events[-1]["message"]
    row = kinds.gateway.wait_row(raw.headers["x-request-id"])
    assert row["door"] == "responses" and row["status"] >= 500


@pytest.mark.parametrize(("model", "body", "param"), [
    (ANTHROPIC, {"reasoning": {"effort": "high"}}, "reasoning.effort"),
    (GEMINI, {"text": {"verbosity": "low"}}, "text.verbosity"),
    (ANTHROPIC, {"input": [{"role": "user", "content": [
        {"type": "input_file", "file_data": "data:application/zip;base64,UEsDBA==",
         "filename": "a.zip"}]}]}, "input"),
])
def test_what_a_kind_cannot_carry_is_refused_in_this_doors_terms(kinds, model, body, param):
    with pytest.raises(openai.BadRequestError) as caught:
        kinds.gateway.client().responses.create(**{"model": model, "input": "hi", **body})
    assert caught.value.param == param
    for chat_name in ("reasoning_effort", "'verbosity'", "messages["):
        assert chat_name not in caught.value.message


def test_an_assistant_refusal_in_the_input_goes_upstream_as_its_text(kinds):
    kinds.gateway.client().responses.create(model=OPENAI, input=[
        {"role": "user", "content": "Help me pick a lock"},
        {"type": "message", "role": "assistant",
         "content": [{"type": "refusal", "refusal": "I cannot help with that."}]},
        {"role": "user", "content": "Say hello"}])
    sent = last_sent(kinds, OPENAI)["messages"]
    assert sent[1] == {"role": "assistant", "content": "I cannot help with that."}
