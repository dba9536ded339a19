"""The same `openai` SDK code against an OpenAI-kind, an Anthropic-kind and a Gemini-kind
channel: equivalent answers, tool calls, streams, usage and costs from each."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import Gateway
from tests.every_kind import VIA_EACH_KIND, via_each_kind
from tests.fakes.openai_upstream import FakeOpenAI

KINDS = list(VIA_EACH_KIND)
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
FINAL_ANSWER = "It is sunny in Paris"  # what every fake says once it has the tool's result


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Gateway]:
    with via_each_kind(tmp_path_factory.mktemp("equivalence"), upstream) as running:
        yield running


@pytest.mark.parametrize("model", KINDS)
def test_a_plain_answer_with_usage_and_cost(gateway, model):
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Say hello"}])
    completion = raw.parse()
    choice = completion.choices[0]
    assert completion.model == model and completion.object == "chat.completion"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert (choice.message.role, choice.finish_reason) == ("assistant", "stop")
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    row = gateway.wait_row(raw.headers["x-request-id"])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        usage.prompt_tokens, usage.completion_tokens)
    assert float(row["cost_usd"]) > 0


@pytest.mark.parametrize("model", KINDS)
def test_a_stream_says_what_the_answer_says(gateway, model):
    client = gateway.client()
    messages = [{"role": "user", "content": "Say hello"}]
    whole = client.chat.completions.create(model=model, messages=messages)
    chunks = list(client.chat.completions.create(model=model, messages=messages, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and {c.model for c in chunks} == {model}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    # The usage rides on the finish chunk: no chunk without choices by default.
    assert all(c.choices for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", KINDS)
def test_a_tool_calling_round_trip(gateway, model, stream):
    client = gateway.client()
    messages: list[dict[str, object]] = [
        {"role": "user", "content": '@call get_weather {"city": "Paris"}'}]
    if stream:
        with client.chat.completions.stream(model=model, messages=messages,
                                            tools=[WEATHER_TOOL]) as events:
            first = events.get_final_completion()
    else:
        first = client.chat.completions.create(model=model, messages=messages,
                                               tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.id and call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    # The call as the API's request types have it: a streamed call also carries its `index`.
    sent = call.model_dump(exclude_none=True, include={"id", "type", "function"})
    messages += [{"role": "assistant", "tool_calls": [sent]},
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"}]
    final = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    assert final.choices[0].message.content == FINAL_ANSWER
    assert final.choices[0].finish_reason == "stop"
