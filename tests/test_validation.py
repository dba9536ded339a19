"""The request schema, held at the door: every mistake a client can make in a chat completions
body is a 400 naming the field's path, before any upstream is asked, whichever kind of provider
serves the model; and no value makes a request cost more than its size."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.every_kind import ANTHROPIC, ECHO, GEMINI, MODELS, OPENAI, EveryKind, every_kind

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EveryKind]:
    with every_kind(tmp_path_factory.mktemp("validation")) as running:
        yield running


def assert_400(response: httpx.Response, param: str, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param,
                                                              code)
    assert "Traceback" not in error["message"]
    return error


def call(role: str = "assistant", **fields: Any) -> list[dict[str, Any]]:
    """A conversation whose first message is `role` with FIELDS, then a user's question."""
    return [{"role": role, **fields}, *HELLO]


TOOL_CALL = {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{}"}}

# (body fields, the param the 400 names): what schemathesis and the issue found, and more.
MISTAKES: list[tuple[dict[str, Any], str]] = [
    # n: refused past OpenAI's own 128, before anything is generated
    ({"n": 9223372036854775807}, "n"),
    ({"n": 2000000}, "n"),
    ({"n": 129}, "n"),
    ({"n": 1.5}, "n"),
    # unhashable roles and part types
    ({"messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": {"a": 1}, "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": ["text"], "text": "x"}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": {}, "text": "x"}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content[0]"),
    # names, ids and tool calls
    ({"messages": [{"role": "user", "content": "x", "name": 5}]}, "messages[0].name"),
    ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].name"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": 5}]},
     "messages[0].tool_call_id"),
    ({"messages": call(tool_calls="x")}, "messages[0].tool_calls"),
    ({"messages": call(tool_calls=[None])}, "messages[0].tool_calls[0]"),
    ({"messages": call(tool_calls=[{**TOOL_CALL, "function": "get_weather"}])},
     "messages[0].tool_calls[0].function"),
    ({"messages": call(tool_calls=[TOOL_CALL, {**TOOL_CALL, "function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}])},
     "messages[0].tool_calls[1].function.arguments"),
    ({"messages": call(tool_calls=[{**TOOL_CALL, "id": None}])}, "messages[0].tool_calls[0].id"),
    ({"messages": call(tool_calls=[{**TOOL_CALL, "type": "robot"}])},
     "messages[0].tool_calls[0].type"),
    ({"messages": call(tool_calls=[{**TOOL_CALL, "type": "builtin"}])},  # sorts before "custom"
     "messages[0].tool_calls[0].type"),
    ({"messages": call(tool_calls=[{"id": "call_1", "type": "custom", "custom": "grep"}])},
     "messages[0].tool_calls[0].custom"),
    ({"messages": call(function_call={"name": "f", "arguments": 1})},
     "messages[0].function_call.arguments"),
    ({"messages": call(content="x", refusal=5)}, "messages[0].refusal"),
    # content parts
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": 5}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": []}}]}]},
     "messages[0].content[0].image_url.detail"),
    ({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA"}}]}]},
     "messages[0].content[0].input_audio.format"),
    ({"messages": [{"role": "user", "content": [{"type": "file", "file": "x"}]}]},
     "messages[0].content[0].file"),
    # tools, tool_choice, response_format: wrong types
    ({"tools": "x"}, "tools"),
    ({"tools": [None]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": "f"}]}, "tools[0].function"),
    ({"tools": [{"type": "function", "function": {"name": 5}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "strict": "yes"}}]},
     "tools[0].function.strict"),
    ({"tool_choice": 5}, "tool_choice"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": "f"}}, "tool_choice.function"),
    ({"tool_choice": {"type": ["function"]}}, "tool_choice.type"),
    ({"response_format": 5}, "response_format"),
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
     "response_format.json_schema.name"),
    ({"response_format": {"type": "json_schema",
                          "json_schema": {"name": "a", "schema": []}}},
     "response_format.json_schema.schema"),
    # the other options
    ({"logit_bias": "x"}, "logit_bias"),
    ({"logit_bias": {"hello": 1}}, "logit_bias"),
    ({"logit_bias": {"50256": 101}}, "logit_bias.50256"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"top_logprobs": 21}, "top_logprobs"),
    ({"max_tokens": 1_000_001}, "max_tokens"),
    ({"max_completion_tokens": 10**30}, "max_completion_tokens"),
    ({"seed": 2**63}, "seed"),
    ({"seed": "42"}, "seed"),
    ({"parallel_tool_calls": 1}, "parallel_tool_calls"),
    ({"metadata": {"a": 1}}, "metadata.a"),
    ({"metadata": []}, "metadata"),
    ({"user": 5}, "user"),
    ({"stream": "yes"}, "stream"),
    ({"stream": True, "stream_options": {"include_usage": "no"}}, "stream_options.include_usage"),
    ({"stop": {"a": 1}}, "stop"),
    ({"reasoning_effort": 1}, "reasoning_effort"),
    ({"modalities": "text"}, "modalities"),
    ({"service_tier": []}, "service_tier"),
    ({"store": "no"}, "store"),
    ({"prediction": {"type": "content", "content": 5}}, "prediction.content"),
    ({"functions": [{"name": ""}]}, "functions[0].name"),
    ({"function_call": 5}, "function_call"),
]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("fields", "param"), MISTAKES, ids=[p for _, p in MISTAKES])
def test_a_mistake_is_a_400_naming_the_field_before_any_upstream(kinds, model, fields, param):
    before = kinds.upstream_requests()
    assert_400(kinds.gateway.post({"model": model, "messages": HELLO, **fields}), param)
    assert kinds.upstream_requests() == before


def nested(levels: int) -> Any:
    """`levels` arrays, one inside the other."""
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def post_raw(kinds: EveryKind, raw: str) -> httpx.Response:
    return kinds.gateway.post(raw.encode(), headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("levels", [64, 254, 600, 1023])
def test_json_nested_too_deep_is_a_400(kinds, model, levels):
    # Written by hand: the client's own JSON encoder would give up before the gateway's decoder.
    # The body is a level of its own: an array of `levels` levels under it is one too many.
    deep = "[" * levels + "]" * levels
    hello = '[{"role": "user", "content": "Say hello"}]'
    response = post_raw(kinds, f'{{"model": "{model}", "messages": {hello}, "extra": {deep}}}')
    error = assert_400(response, None, "nesting_too_deep")
    assert "64 levels" in error["message"]
    inner = min(levels, 1020)  # three levels above it; the decoder itself stops at 1024
    deep = "[" * inner + "]" * inner
    message = f'{{"role": "user", "content": "x", "extra": {deep}}}'
    response = post_raw(kinds, f'{{"model": "{model}", "messages": [{message}]}}')
    assert_400(response, None, "nesting_too_deep")


def test_json_nested_as_deep_as_allowed_passes_through_unchanged(kinds):
    body = {"model": OPENAI, "messages": HELLO, "extra": nested(63)}
    response = kinds.gateway.post(body)
    assert response.status_code == 200, response.text
    assert kinds.openai.last().body["extra"] == nested(63)


def test_n_up_to_128_is_served_by_the_echo(kinds):
    response = kinds.gateway.post({"model": ECHO, "messages": HELLO, "n": 128})
    assert response.status_code == 200, response.text
    choices = response.json()["choices"]
    assert [c["index"] for c in choices] == list(range(128))
    assert {c["message"]["content"] for c in choices} == {"Say hello"}


def test_a_stream_of_a_billion_choices_is_refused_before_it_starts(kinds):
    with httpx.stream("POST", kinds.gateway.base_url + "/v1/chat/completions",
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30,
                      json={"model": ECHO, "messages": HELLO, "n": 10**9,
                            "stream": True}) as response:
        body = response.read()
    assert response.status_code == 400
    assert len(body) < 1000
    assert response.json()["error"]["param"] == "n"


def test_the_echo_refuses_n_copies_of_a_long_message(kinds):
    long = "word " * 20_000  # 100,000 characters: 128 copies would be 12.8 MB
    response = kinds.gateway.post({"model": ECHO, "n": 128,
                                   "messages": [{"role": "user", "content": long}]})
    assert_400(response, "n")
    response = kinds.gateway.post({"model": ECHO, "n": 2,
                                   "messages": [{"role": "user", "content": long}]})
    assert response.status_code == 200
    assert len(response.json()["choices"]) == 2


def sse_events(response: httpx.Response) -> list[bytes]:
    return [line[6:] for line in response.content.split(b"\n") if line.startswith(b"data: ")]


def test_a_named_message_streams_to_its_usage_chunk_and_done(kinds):
    messages = [{"role": "user", "content": "one two three", "name": "alice"}]
    refused = kinds.gateway.post({"model": ECHO, "stream": True,
                                  "messages": [{**messages[0], "name": 5}]})
    assert_400(refused, "messages[0].name")  # before: cut after the chunks, no usage, no DONE
    response = kinds.gateway.post({"model": ECHO, "stream": True, "messages": messages})
    events = sse_events(response)
    assert events[-1] == b"[DONE]"
    usage = json.loads(events[-2])["usage"]
    assert usage["completion_tokens"] == 3
    assert usage["prompt_tokens"] > 3


def test_a_long_echo_streams_whole_in_batches(kinds):
    words = [f"w{i}" for i in range(3000)]
    response = kinds.gateway.post({"model": ECHO, "stream": True, "n": 2,
                                   "messages": [{"role": "user", "content": " ".join(words)}]})
    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for index in (0, 1):
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                       if c["choices"] and c["choices"][0]["index"] == index)
        assert text.split() == words
    assert chunks[-1]["usage"]["completion_tokens"] >= 2 * 3000


@pytest.mark.parametrize("model", [ANTHROPIC, GEMINI])
def test_custom_tools_are_a_400_on_other_providers(kinds, model):
    messages = [*HELLO, {"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "custom", "custom": {"name": "grep", "input": "x"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "found"}]
    assert_400(kinds.gateway.post({"model": model, "messages": messages}),
               "messages[1].tool_calls[0].type")
    custom = {"type": "custom", "custom": {"name": "grep"}}
    assert_400(kinds.gateway.post({"model": model, "messages": HELLO, "tools": [custom]}),
               "tools[0].type")
    assert_400(kinds.gateway.post({"model": model, "messages": HELLO,
                                   "tool_choice": {"type": "custom", "custom": {"name": "g"}}}),
               "tool_choice.type")


def test_valid_options_of_every_kind_pass_through_to_openai_unchanged(kinds):
    options = {
        "tools": [{"type": "function", "function": {
            "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": True}},
            {"type": "custom", "custom": {"name": "grep"}}],
        "tool_choice": {"type": "allowed_tools", "allowed_tools": {
            "mode": "auto", "tools": [{"type": "function", "function": {"name": "f"}}]}},
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": {"type": "object"}, "strict": True}},
        "logit_bias": {"50256": -100, "11": 5}, "logprobs": True, "top_logprobs": 20,
        "n": 1, "max_completion_tokens": 1_000_000, "seed": -(2**63), "parallel_tool_calls": True,
        "metadata": {"team": "a"}, "stop": ["x"], "user": "u", "reasoning_effort": "low",
        "modalities": ["text"], "service_tier": "auto", "store": False,
        "prediction": {"type": "content", "content": [{"type": "text", "text": "x"}]},
        "something_new": {"any": ["shape", 1, None]}, "temperature": None,
    }
    messages = [{"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "name": "alice", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                    {"type": "file", "file": {"file_id": "file-1"}}]},
                {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    response = kinds.gateway.post({"model": OPENAI, "messages": messages, **options})
    assert response.status_code == 200, response.text
    sent = kinds.openai.last().body
    assert sent["messages"] == messages
    assert {k: sent[k] for k in options} == options


@pytest.mark.parametrize(("role", "shown"), [
    ("r" * 58, "'" + "r" * 58 + "'"),  # 60 characters with its quotes: shown whole
    ("r" * 59, "'" + "r" * 56 + "..."),  # 61: cut to 57 and an ellipsis
])
def test_a_wrong_value_is_quoted_in_the_message_up_to_60_characters(kinds, role, shown):
    error = assert_400(kinds.gateway.post({"model": ECHO, "messages": [
        {"role": role, "content": "hi"}]}), "messages[0].role")
    assert error["message"].endswith(f"; got {shown}.")
