"""Every error a client can meet: the status, the OpenAI error shape, and the headers."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import UPSTREAM_KEY, wait_until

HELLO = [{"role": "user", "content": "Say hello"}]


def assert_error(response, status: int, *, code=None, param=None, type_=None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    assert error["code"] == code
    assert error["param"] == param
    if type_:
        assert error["type"] == type_
    return error


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": HELLO}, "model"),
    ({"model": 5, "messages": HELLO}, "model"),
    ({"model": "fake-model"}, "messages"),
    ({"model": "fake-model", "messages": "hi"}, "messages"),
    ({"model": "fake-model", "messages": []}, "messages"),
    ({"model": "fake-model", "messages": ["hi"]}, "messages[0]"),
    ({"model": "fake-model", "messages": [{"role": "robot", "content": "x"}]},
     "messages[0].role"),
    ({"model": "fake-model", "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": "fake-model", "messages": [{"role": "user", "content": 42}]},
     "messages[0].content"),
    ({"model": "fake-model", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "messages[0].content[0].text"),
    ({"model": "fake-model", "messages": [{"role": "user", "content": [{"type": "video"}]}]},
     "messages[0].content[0].type"),
    ({"model": "fake-model", "messages": [{"role": "tool", "content": "42"}]},
     "messages[0].tool_call_id"),
    ({"model": "fake-model", "messages": HELLO, "temperature": 2.5}, "temperature"),
    ({"model": "fake-model", "messages": HELLO, "temperature": -0.1}, "temperature"),
    ({"model": "fake-model", "messages": HELLO, "temperature": "hot"}, "temperature"),
    ({"model": "fake-model", "messages": HELLO, "top_p": 1.5}, "top_p"),
    ({"model": "fake-model", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ({"model": "fake-model", "messages": HELLO, "max_tokens": 1.5}, "max_tokens"),
    ({"model": "fake-model", "messages": HELLO, "max_tokens": "10"}, "max_tokens"),
    ({"model": "fake-model", "messages": HELLO, "max_completion_tokens": -3},
     "max_completion_tokens"),
    ({"model": "fake-model", "messages": HELLO, "n": 0}, "n"),
    ({"model": "fake-model", "messages": HELLO, "n": True}, "n"),
    ({"model": "fake-model", "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "fake-model", "messages": HELLO, "stop": [1]}, "stop"),
    ({"model": "fake-model", "messages": HELLO, "stream_options": {"include_usage": True}},
     "stream_options"),
])
def test_invalid_requests_are_400_with_the_field_named(gateway, upstream, body, param):
    before = len(upstream.received)
    assert_error(gateway.post(body), 400, param=param, type_="invalid_request_error")
    assert len(upstream.received) == before  # nothing invalid is sent upstream


def test_malformed_json_is_400(gateway):
    error = assert_error(gateway.post(b'{"model": "fake-model", "messages": ['), 400)
    assert "not valid JSON" in error["message"]
    assert_error(gateway.post(b"[1, 2]"), 400)


def test_the_sdk_raises_bad_request_for_a_bad_value(gateway):
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client().chat.completions.create(model="fake-model", messages=HELLO,
                                                 temperature=3)
    assert caught.value.param == "temperature"


def test_body_over_the_limit_is_413(gateway):
    big = "x" * 70_000
    assert_error(gateway.post({"model": "fake-model", "messages": [
        {"role": "user", "content": big}]}), 413, code="request_too_large")


@pytest.mark.parametrize("key", [None, "tm-not-a-real-key", "Basic abc"])
def test_missing_or_unknown_key_is_401(gateway, key):
    headers = {} if key is None else {
        "Authorization": key if key.startswith("Basic") else f"Bearer {key}"}
    response = gateway.post({"model": "fake-model", "messages": HELLO}, key=None,
                            headers=headers)
    assert_error(response, 401, code="invalid_api_key")


def test_the_sdk_raises_authentication_error(gateway):
    with pytest.raises(openai.AuthenticationError) as caught:
        gateway.client(key="tm-wrong").chat.completions.create(model="fake-model",
                                                                messages=HELLO)
    assert caught.value.code == "invalid_api_key"
    assert caught.value.request_id


def test_revoked_key_is_refused_by_the_running_gateway(gateway):
    secret = gateway.cli("keys", "create", "--name", "soon-revoked").stdout.strip().splitlines()[-1]
    body = {"model": "fake-model", "messages": HELLO}
    assert wait_until(lambda: gateway.post(body, key=secret).status_code == 200)
    gateway.cli("keys", "revoke", "soon-revoked")
    assert wait_until(lambda: gateway.post(body, key=secret).status_code == 401, timeout=5)
    assert_error(gateway.post(body, key=secret), 401, code="invalid_api_key")


def test_unknown_model_is_404(gateway):
    with pytest.raises(openai.NotFoundError) as caught:
        gateway.client().chat.completions.create(model="no-such-model", messages=HELLO)
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"


def test_requests_per_minute_limit_gives_429_with_retry_after(gateway):
    secret = gateway.cli("keys", "create", "--name", "rpm-2", "--rpm", "2").stdout.split()[-1]
    body = {"model": "fake-model", "messages": HELLO}
    assert wait_until(lambda: gateway.post(body, key=secret).status_code == 200)
    assert gateway.post(body, key=secret).status_code == 200
    response = gateway.post(body, key=secret)
    error = assert_error(response, 429, code="rate_limit_exceeded", type_="requests")
    assert "2 requests per minute" in error["message"]
    # Two per minute refill one every 30 s; the first admission was at most a few seconds ago.
    assert 20 <= int(response.headers["retry-after"]) <= 30
    with pytest.raises(openai.RateLimitError):
        gateway.client(key=secret).chat.completions.create(model="fake-model", messages=HELLO)


def test_tokens_per_minute_limit_counts_the_answer(gateway):
    secret = gateway.cli("keys", "create", "--name", "tpm", "--tpm", "600").stdout.split()[-1]
    # Each call reserves its prompt estimate plus max_tokens, then settles the real count.
    body = {"model": "fake-model", "messages": HELLO, "max_tokens": 250}
    assert wait_until(lambda: gateway.post(body, key=secret).status_code == 200)
    # The refusal itself is asserted: a later call may be admitted again, as the bucket refills.
    answers = []
    while len(answers) < 60 and (not answers or answers[-1].status_code == 200):
        answers.append(gateway.post(body, key=secret))
    assert_error(answers[-1], 429, code="rate_limit_exceeded", type_="tokens")
    assert 1 <= int(answers[-1].headers["retry-after"]) <= 60
    # The settled counts are small (about 20 tokens a call), so many more than 600/250 fit.
    assert len(answers) > 10


def test_upstream_server_error_is_502(gateway):
    response = gateway.post({"model": "fake-model", "messages": [
        {"role": "user", "content": "@fail 500"}]})
    error = assert_error(response, 502, code="bad_gateway", type_="upstream_error")
    assert "HTTP 500" in error["message"]


def test_upstream_garbage_is_502(gateway):
    error = assert_error(gateway.post({"model": "fake-model", "messages": [
        {"role": "user", "content": "@garbage"}]}), 502, code="bad_gateway")
    assert "invalid JSON" in error["message"]


def test_upstream_hang_up_is_502(gateway):
    assert_error(gateway.post({"model": "fake-model", "messages": [
        {"role": "user", "content": "@hangup"}]}), 502, code="bad_gateway")


def test_unreachable_upstream_is_502(gateway):
    assert_error(gateway.post({"model": "dead-model", "messages": HELLO}), 502,
                 code="bad_gateway")


def test_upstream_too_slow_is_504(gateway):
    response = gateway.post({"model": "quick-model", "messages": [
        {"role": "user", "content": "@stall 4"}]})
    error = assert_error(response, 504, code="upstream_timeout", type_="timeout")
    assert "1.5s" in error["message"]


def test_upstream_too_slow_to_start_a_stream_is_504(gateway):
    response = gateway.post({"model": "quick-model", "stream": True, "messages": [
        {"role": "user", "content": "@stall 4"}]})
    assert_error(response, 504, code="upstream_timeout")


def test_upstream_client_error_passes_through(gateway):
    error = assert_error(gateway.post({"model": "fake-model", "messages": [
        {"role": "user", "content": "@fail 400"}]}), 400, code="fake_code", param="messages")
    assert error["message"] == "fake failure 400"


def test_upstream_rate_limit_forwards_retry_after(gateway, upstream):
    before = len(upstream.received)
    # A 7 s wait does not fit in a 5 s deadline: the caller hears at once, with the upstream's
    # Retry-After, instead of waiting for nothing.
    response = gateway.post({"model": "fake-model", "messages": [
        {"role": "user", "content": "@fail 429"}]}, headers={"X-Timeout": "5000"})
    assert_error(response, 429, code="fake_code")
    assert response.headers["retry-after"] == "7"
    assert len(upstream.received) == before + 1


def test_upstream_refusing_the_gateways_key_is_a_final_502(gateway):
    response = gateway.post({"model": "fake-model", "messages": [
        {"role": "user", "content": "@fail 401"}]})
    error = assert_error(response, 502, code="bad_gateway")
    assert response.headers["x-should-retry"] == "false"
    assert "api_key" in error["message"]


def test_provider_key_never_appears_in_a_response(gateway):
    response = gateway.post({"model": "fake-model", "messages": [
        {"role": "user", "content": "@leak"}]})
    assert response.status_code == 400
    assert UPSTREAM_KEY not in response.text
    assert "***" in response.json()["error"]["message"]


def test_unknown_route_and_method_are_openai_shaped(gateway):
    import httpx2 as httpx

    assert_error(httpx.get(gateway.base_url + "/v1/nothing-here"), 404, code="not_found")
    assert_error(httpx.get(gateway.base_url + "/v1/chat/completions"), 405,
                 code="method_not_allowed")
