"""Streams as the common clients read them, on every provider kind: the loop from OpenAI's own
docs, the openai SDK's stream helper, LangChain's ChatOpenAI and litellm's chunk builder. By
default the usage rides on the finish chunk, so no chunk lacks choices; a client that asks for
`include_usage` gets OpenAI's own separate usage chunk; `include_usage: false` gets none."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2 as httpx
import litellm
import pytest
from langchain_openai import ChatOpenAI

from tests.conftest import ADMIN_KEY, Gateway
from tests.every_kind import VIA_EACH_KIND, via_each_kind
from tests.fakes.openai_upstream import FakeOpenAI

KINDS = [*VIA_EACH_KIND, "tokenmux/echo"]
SAY = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Gateway]:
    with via_each_kind(tmp_path_factory.mktemp("stream-clients"), upstream) as running:
        yield running


def raw_events(gateway: Gateway, body: dict) -> list[dict]:
    """The stream's `data:` events as JSON, read off the wire, `[DONE]` left out."""
    events = []
    with httpx.stream("POST", gateway.base_url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    return events


@pytest.mark.parametrize("model", KINDS)
def test_the_loop_from_openais_docs_runs_to_the_end(gateway, model):
    whole = gateway.client().chat.completions.create(model=model, messages=SAY)
    stream = gateway.client().chat.completions.create(model=model, messages=SAY, stream=True)
    parts = []
    for chunk in stream:
        parts.append(chunk.choices[0].delta.content)  # IndexError on a chunk without choices
    assert "".join(p or "" for p in parts) == whole.choices[0].message.content
    # The last chunk is the finish chunk, and it carries the usage.
    assert chunk.choices[0].finish_reason == "stop"
    assert chunk.usage.total_tokens == whole.usage.total_tokens
    assert chunk.usage.prompt_tokens == whole.usage.prompt_tokens


@pytest.mark.parametrize("model", KINDS)
def test_usage_asked_for_comes_as_openais_own_chunk(gateway, model):
    events = raw_events(gateway, {"model": model, "messages": SAY, "stream": True,
                                  "stream_options": {"include_usage": True}})
    last = events[-1]
    assert last["choices"] == [] and last["usage"]["total_tokens"] > 0
    assert all(e["choices"] for e in events[:-1]) and all("usage" not in e for e in events[:-1])
    assert last["id"] == events[0]["id"] and last["model"] == model
    # The usage chunk carries a system_fingerprint exactly when the others do.
    fingerprints = {e.get("system_fingerprint") for e in events[:-1]}
    assert len(fingerprints) == 1
    assert last.get("system_fingerprint") == fingerprints.pop()


def test_the_usage_chunk_carries_the_upstreams_system_fingerprint(gateway):
    events = raw_events(gateway, {"model": "via-openai", "messages": SAY, "stream": True,
                                  "stream_options": {"include_usage": True}})
    assert events[-1]["choices"] == [] and events[-1]["system_fingerprint"] == "fp_fake"


@pytest.mark.parametrize("model", KINDS)
def test_no_usage_when_the_client_turns_it_off(gateway, model):
    events = raw_events(gateway, {"model": model, "messages": SAY, "stream": True,
                                  "stream_options": {"include_usage": False}})
    assert all(e["choices"] for e in events) and all("usage" not in e for e in events)
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("model", KINDS)
def test_by_default_only_the_finish_chunk_has_usage(gateway, model):
    events = raw_events(gateway, {"model": model, "messages": SAY, "stream": True})
    assert all(e["choices"] for e in events)
    assert [e for e in events if "usage" in e] == [events[-1]]
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("model", KINDS)
@pytest.mark.parametrize("usage", [None, {"include_usage": True}])
def test_the_sdks_stream_helper(gateway, model, usage):
    whole = gateway.client().chat.completions.create(model=model, messages=SAY)
    extra = {} if usage is None else {"stream_options": usage}
    with gateway.client().chat.completions.stream(model=model, messages=SAY, **extra) as stream:
        pieces = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(pieces) == whole.choices[0].message.content
    assert final.choices[0].message.content == whole.choices[0].message.content
    assert final.choices[0].finish_reason == "stop"
    assert final.usage.total_tokens == whole.usage.total_tokens


@pytest.mark.parametrize("model", KINDS)
@pytest.mark.parametrize("stream_usage", [False, True])
def test_langchain_streams_with_and_without_stream_usage(gateway, model, stream_usage):
    whole = gateway.client().chat.completions.create(model=model, messages=SAY)
    chat = ChatOpenAI(model=model, base_url=gateway.base_url + "/v1", api_key=ADMIN_KEY,
                      max_retries=0, stream_usage=stream_usage)
    chunks = list(chat.stream("Say hello"))
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total.content == whole.choices[0].message.content
    assert total.usage_metadata["total_tokens"] == whole.usage.total_tokens
    assert total.response_metadata["finish_reason"] == "stop"


@pytest.mark.parametrize("model", KINDS)
@pytest.mark.parametrize("usage", [None, {"include_usage": True}])
def test_litellms_chunk_builder_rebuilds_the_answer(gateway, model, usage):
    whole = gateway.client().chat.completions.create(model=model, messages=SAY)
    extra = {} if usage is None else {"stream_options": usage}
    chunks = [c.model_dump() for c in gateway.client().chat.completions.create(
        model=model, messages=SAY, stream=True, **extra)]
    built = litellm.stream_chunk_builder(chunks, messages=SAY)
    assert built.choices[0].message.content == whole.choices[0].message.content
    assert built.choices[0].finish_reason == "stop"
    assert built.usage.total_tokens == whole.usage.total_tokens


def test_a_streamed_gemini_tool_call_has_the_json_answers_null_content(gateway):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": '@call get_weather {"city": "Paris"}'}]
    client = gateway.client()
    whole = client.chat.completions.create(model="via-gemini", messages=messages, tools=tools)
    with client.chat.completions.stream(model="via-gemini", messages=messages,
                                        tools=tools) as stream:
        final = stream.get_final_completion()
    assert whole.choices[0].message.content is None
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert final.choices[0].message.content is None


@pytest.mark.parametrize("model", ["via-anthropic", "via-gemini", "tokenmux/echo"])
def test_with_two_answers_the_usage_is_on_the_last_finish_chunk(gateway, model):
    events = raw_events(gateway, {"model": model, "messages": SAY, "stream": True, "n": 2})
    assert all(e["choices"] for e in events)
    finishes = [e for e in events if e["choices"][0]["finish_reason"] is not None]
    assert sorted(e["choices"][0]["index"] for e in finishes) == [0, 1]
    assert [e for e in events if "usage" in e] == [events[-1]] and events[-1] in finishes
    whole = gateway.client().chat.completions.create(model=model, messages=SAY, n=2)
    assert events[-1]["usage"]["total_tokens"] == whole.usage.total_tokens
