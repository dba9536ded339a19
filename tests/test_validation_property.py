"""Properties of the request's door, over generated JSON: any value in any top-level field, in
any field of a message or of a content part, gets a 2xx or a 4xx from a live gateway, never a
5xx, with every error in OpenAI's shape and every stream whole, whichever provider kind serves
the model; and the token counter takes any JSON value without raising."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ADMIN_KEY
from tests.every_kind import MODELS, EveryKind, every_kind
from tokenmux import tokens
from tokenmux.api.schema import FIELDS

HELLO = {"role": "user", "content": "Say hello"}
EXAMPLES = 300  # per property: a few seconds each, even on a loaded 2-core machine
BOUNDED = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = (st.none() | st.booleans() | st.integers() | st.text(max_size=12)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from(["text", "function", "user", "auto", "json_schema", "", "0"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8) | st.sampled_from(["type", "name", "function", "url", "text"]),
    inner, max_size=4), max_leaves=12)

TOP_LEVEL = sorted({*FIELDS, "model", "messages", "models", "not_a_field"})
MESSAGE_FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id", "function_call",
                  "refusal", "audio", "not_a_field"]
PART_TYPES = ["text", "image_url", "input_audio", "file", "refusal"]


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EveryKind]:
    with every_kind(tmp_path_factory.mktemp("property")) as running:
        yield running


@pytest.fixture(scope="module")
def client(kinds: EveryKind) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=kinds.gateway.base_url, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as session:
        yield session


def assert_openai_error(response: httpx.Response) -> None:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and "Traceback" not in error["message"]


def assert_answered(client: httpx.Client, body: dict[str, Any]) -> None:
    response = client.post("/v1/chat/completions", content=json.dumps(body),
                           headers={"Content-Type": "application/json"})
    assert response.status_code < 500, (body, response.text)
    if response.status_code >= 400:
        assert_openai_error(response)
    elif response.headers["Content-Type"].startswith("text/event-stream"):
        events = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
        assert events[-1] == "[DONE]", (body, response.text[-300:])
        assert not any(json.loads(e).get("error") for e in events[:-1]), body
    else:
        assert response.json()["choices"], body


@given(model=st.sampled_from(MODELS), field=st.sampled_from(TOP_LEVEL), value=json_values,
       stream=st.booleans())
@BOUNDED
def test_any_value_in_any_top_level_field_is_answered_or_refused(client, model, field, value,
                                                                 stream):
    body = {"model": model, "messages": [HELLO], "stream": stream, field: value}
    assert_answered(client, body)


@given(model=st.sampled_from(MODELS), role=st.sampled_from(["system", "user", "assistant",
                                                            "tool", "developer", "function"]),
       field=st.sampled_from(MESSAGE_FIELDS), value=json_values, stream=st.booleans())
@BOUNDED
def test_any_value_in_any_message_field_is_answered_or_refused(client, model, role, field,
                                                               value, stream):
    message = {"role": role, "content": "look", "tool_call_id": "call_1", "name": "n",
               field: value}
    body = {"model": model, "messages": [HELLO, message, HELLO], "stream": stream}
    assert_answered(client, body)


@given(model=st.sampled_from(MODELS), kind=st.sampled_from(PART_TYPES),
       field=st.sampled_from([*PART_TYPES, "type", "url", "detail"]), value=json_values,
       role=st.sampled_from(["user", "assistant", "system"]))
@BOUNDED
def test_any_value_in_any_content_part_field_is_answered_or_refused(client, model, kind, field,
                                                                    value, role):
    part = {"type": kind, field: value}
    if field in ("url", "detail"):
        part = {"type": "image_url", "image_url": {"url": "https://x/a.png", field: value}}
    body = {"model": model, "messages": [HELLO, {"role": role, "content": [part]}, HELLO]}
    assert_answered(client, body)


@given(messages=json_values)
@settings(max_examples=300, derandomize=True, database=None, deadline=None)
def test_the_token_counter_takes_any_json_value(messages):
    assert tokens.count_messages(messages) >= 3
    assert isinstance(tokens.message_text(messages), str)
    conversation = [{"role": messages, "content": messages, "name": messages,
                     "tool_calls": messages}, {"tool_calls": [messages, {"function": messages}]}]
    assert tokens.count_messages(conversation) >= 3
