"""The Responses door under the gateway's rules: its errors in OpenAI's shape, the same keys,
limits, tiers, deadline and idempotency as the chat door, `store: false`, and conversations
shared by instances through Redis."""

from __future__ import annotations

import time
import uuid

import httpx2 as httpx
import openai
import pytest

from tests import test_idempotency_redis
from tests.conftest import ADMIN_KEY, Gateway
from tests.fakes.openai_upstream import REPLY
from tests.test_ratelimit_headers import new_key

pair = test_idempotency_redis.pair  # two gateways sharing one Redis


def post(gateway: Gateway, body: object, key: str = ADMIN_KEY, **headers: str) -> httpx.Response:
    return httpx.post(gateway.base_url + "/v1/responses", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}", **headers})


def refused(response: httpx.Response, status: int, param: str | None,
            code: str | None = None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return str(error["message"])


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "fake-model", "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"model": "fake-model", "input": "hi", "tools": [{"type": "file_search",
                                                       "vector_store_ids": ["vs_1"]}]},
     "tools[0].type"),
    ({"model": "fake-model", "input": "hi", "tools": [
        {"type": "function", "name": "f"}, {"type": "code_interpreter",
                                            "container": {"type": "auto"}}]},
     "tools[1].type"),
    ({"model": "fake-model", "input": "hi", "tool_choice": {"type": "web_search_preview"}},
     "tool_choice.type"),
])
def test_hosted_tools_are_refused_naming_the_param(gateway, upstream, body, param):
    before = len(upstream.received)
    message = refused(post(gateway, body), 400, param)
    assert "hosted" in message or "not supported" in message
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client().responses.create(**body)
    assert caught.value.param == param
    assert len(upstream.received) == before  # nothing went upstream


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "fake-model"}, "input"),
    ({"model": "fake-model", "input": 7}, "input"),
    ({"model": "fake-model", "input": []}, "input"),
    ({"model": "fake-model", "input": [{"type": "item_reference", "id": "msg_1"}]},
     "input[0].type"),
    ({"model": "fake-model", "input": [{"role": "user", "content": [
        {"type": "input_image", "file_id": "file_1"}]}]}, "input[0].content[0].image_url"),
    ({"model": "fake-model", "input": [{"type": "function_call_output", "output": "x"}]},
     "input[0].call_id"),
    ({"model": "fake-model", "input": [{"type": "function_call_output", "call_id": "c",
                                         "output": [{"type": "input_text", "text": "a"},
                                                    {"type": "input_image", "image_url": "x"}]}]},
     "input[0].output[1]"),
    ({"model": "fake-model", "input": "hi", "text": {"format": {"type": "xml"}}},
     "text.format.type"),
    ({"model": "fake-model", "input": "hi", "background": True}, "background"),
    ({"model": "fake-model", "input": "hi", "n": 2}, "n"),
    ({"model": "fake-model", "input": "hi", "text": {"format": {"type": "json_schema"}}},
     "text.format.name"),
    ({"model": "fake-model", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "hi"}, "model"),
    ({"model": "fake-model", "input": "hi", "metadata": {"n": 1}}, "metadata"),
    ({"model": "fake-model", "input": "hi", "truncation": "middle"}, "truncation"),
    ({"model": "fake-model", "input": "hi", "tool_choice": "sometimes"}, "tool_choice"),
    ({"model": "fake-model", "input": [{"type": "function_call", "call_id": "c",
                                         "name": "f", "arguments": {"a": 1}}]},
     "input[0].arguments"),
])
def test_bad_requests_are_400_in_openais_shape(gateway, body, param):
    message = refused(post(gateway, body), 400, param)
    assert param.partition("[")[0].partition(".")[0] in message
    assert "max_completion_tokens" not in message and "'messages" not in message


def test_a_plain_text_format_and_a_functions_output_in_parts_go_upstream(gateway, upstream):
    plain = post(gateway, {"model": "fake-model", "input": "hi",
                           "text": {"format": {"type": "text"}}})
    assert plain.status_code == 200, plain.text
    assert "response_format" not in upstream.received[-1].body
    answered = post(gateway, {"model": "fake-model", "input": [
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1",
         "output": [{"type": "input_text", "text": "sunny"},
                    {"type": "input_text", "text": ", 21C"}]}]})
    assert answered.status_code == 200, answered.text
    assert upstream.received[-1].body["messages"][-1] == {
        "role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"}


def test_unknown_model_key_and_json(gateway):
    refused(post(gateway, {"model": "no-such-model", "input": "hi"}), 404, "model",
            "model_not_found")
    refused(post(gateway, {"model": "fake-model", "input": "hi"}, key="tm-wrong"), 401, None,
            "invalid_api_key")
    bad = httpx.post(gateway.base_url + "/v1/responses", content=b"{", timeout=30,
                     headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        gateway.client("tm-wrong").responses.create(model="fake-model", input="hi")


def test_an_unknown_previous_response_is_404(gateway, upstream):
    before = len(upstream.received)
    with pytest.raises(openai.NotFoundError) as caught:
        gateway.client().responses.create(model="fake-model", input="hi",
                                          previous_response_id="resp_nothing")
    assert caught.value.code == "previous_response_not_found"
    assert caught.value.param == "previous_response_id"
    assert "resp_nothing" in caught.value.message
    assert len(upstream.received) == before
    row = gateway.wait_row(caught.value.response.headers["x-request-id"])
    assert (row["status"], row["error_code"], row["door"]) == (
        404, "previous_response_not_found", "responses")


def test_a_response_made_with_store_false_is_not_kept(gateway):
    client = gateway.client()
    for stream in (False, True):
        if stream:
            with client.responses.stream(model="fake-model", input="hi", store=False) as s:
                unkept = s.get_final_response()
        else:
            unkept = client.responses.create(model="fake-model", input="hi", store=False)
        assert unkept.store is False
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model="fake-model", input="again",
                                    previous_response_id=unkept.id)


def test_a_response_is_continued_only_by_the_key_that_made_it(gateway):
    mine, theirs = new_key(gateway, "resp-mine"), new_key(gateway, "resp-theirs")
    made = gateway.client(mine).responses.create(model="fake-model", input="hi")
    assert gateway.client(mine).responses.retrieve(made.id) == made
    for key, unknown in ((theirs, made.id), (mine, "resp_none")):
        with pytest.raises(openai.NotFoundError) as caught:
            gateway.client(key).responses.retrieve(unknown)
        assert caught.value.code == "not_found" and caught.value.param == "response_id"
    with pytest.raises(openai.NotFoundError):
        gateway.client(theirs).responses.create(model="fake-model", input="more",
                                                previous_response_id=made.id)
    kept = gateway.client(mine).responses.create(model="fake-model", input="more",
                                                 previous_response_id=made.id)
    assert kept.output_text == REPLY


def test_the_same_rate_limit_and_tiers_apply(gateway):
    key = new_key(gateway, "resp-limited", "--rpm", "2")
    first = post(gateway, {"model": "fake-model", "input": "hi"}, key=key, **{"X-Tier": "fast"})
    assert first.status_code == 200
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-tokenmux-tier"] == "fast"
    assert gateway.wait_row(first.headers["x-request-id"])["tier"] == "fast"
    # A chat request spends from the same limit.
    assert gateway.post({"model": "fake-model", "messages": [
        {"role": "user", "content": "hi"}]}, key=key).status_code == 200
    with pytest.raises(openai.RateLimitError) as caught:
        gateway.client(key).responses.create(model="fake-model", input="hi")
    assert caught.value.code == "rate_limit_exceeded"
    assert int(caught.value.response.headers["retry-after"]) >= 1
    refused(post(gateway, {"model": "fake-model", "input": "hi"}, **{"X-Tier": "warp"}),
            400, None, "invalid_tier")


def test_the_deadline_is_a_408(gateway):
    started = time.monotonic()
    response = post(gateway, {"model": "fake-model", "input": "@stall 30"},
                    **{"X-Timeout": "5000"})
    assert response.status_code == 408
    assert response.json()["error"]["code"] == "request_timeout"
    assert response.headers["x-should-retry"] == "false"
    assert time.monotonic() - started >= 5
    row = gateway.wait_row(response.headers["x-request-id"])
    assert (row["status"], row["door"]) == (408, "responses")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_an_idempotent_retry_is_the_same_response(gateway, upstream, stream):
    body = {"model": "fake-model", "input": f"hi {uuid.uuid4().hex}", "stream": stream}
    key = {"Idempotency-Key": f"resp-{uuid.uuid4().hex}"}
    before = len(upstream.received)
    first, again = post(gateway, body, **key), post(gateway, body, **key)
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert len(upstream.received) == before + 1
    assert first.text == again.text  # the same id, the same events
    if not stream:
        continued = gateway.client().responses.create(
            model="fake-model", input="more", previous_response_id=first.json()["id"])
        assert continued.status == "completed"


def test_instances_sharing_redis_continue_each_others_responses(pair, upstream):
    a, b = pair
    made = a.client().responses.create(model="fake-model", input="Say hello")
    with b.client().responses.stream(model="fake-model", input="Once more",
                                     previous_response_id=made.id) as stream:
        continued = stream.get_final_response()
    assert [m["role"] for m in upstream.last().body["messages"]] == ["user", "assistant",
                                                                     "user"]
    again = a.client().responses.create(model="fake-model", input="Thanks",
                                        previous_response_id=continued.id)
    assert len(upstream.last().body["messages"]) == 5 and again.output_text == REPLY
