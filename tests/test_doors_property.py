"""Properties of the Messages and Responses doors, over generated JSON, as the chat door's are in
test_validation_property.py: any value in any top-level field, in any field of a message (or
an input item) and of a content block, gets a 2xx or a 4xx from a live gateway, never a 5xx,
with every error in the door's own shape and every stream whole, whichever provider kind
serves the model."""

from __future__ import annotations

import json
from typing import Any

import httpx2 as httpx
from hypothesis import given
from hypothesis import strategies as st

from tests.every_kind import MODELS
from tests.test_validation_property import BOUNDED, assert_openai_error, client, json_values, kinds

# Fixtures, found by pytest under these names: the chat door's gateway (every provider kind
# behind it) and client, one of each for this module too.
__all__ = ["client", "kinds"]

MESSAGES_FIELDS = ["model", "messages", "max_tokens", "system", "stop_sequences", "stream",
                   "tools", "tool_choice", "metadata", "thinking", "output_config",
                   "cache_control", "service_tier", "temperature", "top_p", "top_k",
                   "container", "mcp_servers", "context_management", "not_a_field"]
MESSAGE_FIELDS = ["role", "content", "not_a_field"]
BLOCK_TYPES = ["text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking",
               "document", "search_result"]
BLOCK_FIELDS = ["type", "text", "source", "id", "name", "input", "tool_use_id", "content",
                "is_error", "thinking", "signature", "data", "cache_control", "citations"]
RESPONSES_FIELDS = ["model", "input", "instructions", "tools", "tool_choice", "text",
                    "max_output_tokens", "reasoning", "stream", "store", "previous_response_id",
                    "metadata", "truncation", "include", "stream_options",
                    "parallel_tool_calls", "temperature", "top_p", "user", "service_tier",
                    "background", "models", "fallback_models", "compression", "not_a_field"]
ITEM_TYPES = ["message", "function_call", "function_call_output", "reasoning", "web_search_call"]
ITEM_FIELDS = ["type", "role", "content", "call_id", "name", "arguments", "output", "id",
               "status", "summary", "not_a_field"]
PART_TYPES = ["input_text", "output_text", "input_image", "input_file", "refusal"]
PART_FIELDS = ["type", "text", "image_url", "detail", "file_id", "file_data", "refusal",
               "annotations"]
HELLO = {"role": "user", "content": "Say hello"}


def _events(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in response.text.split("\n")
            if line.startswith("data: ")]


def assert_messages_answered(client: httpx.Client, body: dict[str, Any]) -> None:
    response = client.post("/v1/messages", content=json.dumps(body),
                           headers={"Content-Type": "application/json",
                                    "anthropic-version": "2023-06-01"})
    assert response.status_code < 500, (body, response.text)
    if response.status_code >= 400:
        answer = response.json()
        assert answer["type"] == "error" and set(answer["error"]) == {"type", "message"}, answer
        assert isinstance(answer["error"]["message"], str)
        assert "Traceback" not in answer["error"]["message"]
    elif response.headers["Content-Type"].startswith("text/event-stream"):
        types = [event["type"] for event in _events(response)]
        assert types[0] == "message_start" and types[-1] == "message_stop", (body, types)
        assert "error" not in types, (body, response.text[-300:])
    else:
        assert response.json()["type"] == "message", (body, response.text)


def assert_responses_answered(client: httpx.Client, body: dict[str, Any]) -> None:
    response = client.post("/v1/responses", content=json.dumps(body),
                           headers={"Content-Type": "application/json"})
    assert response.status_code < 500, (body, response.text)
    if response.status_code >= 400:
        assert_openai_error(response)
    elif response.headers["Content-Type"].startswith("text/event-stream"):
        types = [event["type"] for event in _events(response)]
        assert types[0] == "response.created", (body, types)
        assert types[-1] in ("response.completed", "response.incomplete"), (body, types)
    else:
        assert response.json()["object"] == "response", (body, response.text)


@given(model=st.sampled_from(MODELS), field=st.sampled_from(MESSAGES_FIELDS), value=json_values,
       stream=st.booleans())
@BOUNDED
def test_messages_any_value_in_any_top_level_field(client, model, field, value, stream):
    body = {"model": model, "max_tokens": 50, "messages": [HELLO], "stream": stream,
            field: value}
    assert_messages_answered(client, body)


@given(model=st.sampled_from(MODELS), role=st.sampled_from(["user", "assistant", "system"]),
       field=st.sampled_from(MESSAGE_FIELDS), value=json_values, stream=st.booleans())
@BOUNDED
def test_messages_any_value_in_any_message_field(client, model, role, field, value, stream):
    body = {"model": model, "max_tokens": 50, "stream": stream,
            "messages": [HELLO, {"role": role, "content": "look", field: value}, HELLO]}
    assert_messages_answered(client, body)


@given(model=st.sampled_from(MODELS), kind=st.sampled_from(BLOCK_TYPES),
       field=st.sampled_from(BLOCK_FIELDS), value=json_values,
       role=st.sampled_from(["user", "assistant"]))
@BOUNDED
def test_messages_any_value_in_any_content_block_field(client, model, kind, field, value, role):
    block = {"type": kind, "text": "x", "id": "toolu_1", "name": "f", "input": {},
             "tool_use_id": "toolu_1", field: value}
    body = {"model": model, "max_tokens": 50,
            "messages": [HELLO, {"role": role, "content": [block]}, HELLO]}
    assert_messages_answered(client, body)


@given(model=st.sampled_from(MODELS), field=st.sampled_from(RESPONSES_FIELDS),
       value=json_values, stream=st.booleans())
@BOUNDED
def test_responses_any_value_in_any_top_level_field(client, model, field, value, stream):
    body = {"model": model, "input": "Say hello", "stream": stream, field: value}
    assert_responses_answered(client, body)


@given(model=st.sampled_from(MODELS), kind=st.sampled_from(ITEM_TYPES),
       field=st.sampled_from(ITEM_FIELDS), value=json_values, stream=st.booleans())
@BOUNDED
def test_responses_any_value_in_any_input_item_field(client, model, kind, field, value, stream):
    item = {"type": kind, "role": "user", "content": "look", "call_id": "call_1", "name": "f",
            "arguments": "{}", "output": "ok", field: value}
    body = {"model": model, "stream": stream, "input": [HELLO, item, HELLO]}
    assert_responses_answered(client, body)


@given(model=st.sampled_from(MODELS), kind=st.sampled_from(PART_TYPES),
       field=st.sampled_from(PART_FIELDS), value=json_values,
       role=st.sampled_from(["user", "assistant", "system", "developer"]))
@BOUNDED
def test_responses_any_value_in_any_content_part_field(client, model, kind, field, value, role):
    part = {"type": kind, "text": "x", field: value}
    body = {"model": model, "input": [HELLO, {"role": role, "content": [part]}, HELLO]}
    assert_responses_answered(client, body)
