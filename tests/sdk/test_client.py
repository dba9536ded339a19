"""The SDK against a running gateway (and, for what the gateway does not yet send, the fake
upstream directly): where each parameter lands, each error class, retries, streams."""

from __future__ import annotations

import asyncio

import pytest

import tokenmux
import tokenmux.sdk
from tests.conftest import ADMIN_KEY
from tests.fakes.openai_upstream import REPLY
from tokenmux import (
    APIConnectionError,
    APIStatusError,
    AsyncTokenMux,
    AuthenticationError,
    BadRequestError,
    MissingAPIKeyError,
    NotFoundError,
    RateLimitError,
    RequestTimeoutError,
    StreamError,
    TokenMux,
)

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def client(gateway):
    with TokenMux(api_key=ADMIN_KEY, base_url=gateway.base_url + "/v1", max_retries=0) as c:
        yield c


def test_public_names_are_exported():
    # The package's lazy names and the SDK's own list must never drift apart.
    assert set(tokenmux.__all__) - {"__version__"} == set(tokenmux.sdk.__all__)
    for name in tokenmux.__all__:
        assert getattr(tokenmux, name) is not None


def test_key_and_url_come_from_the_environment(gateway, monkeypatch):
    monkeypatch.delenv("TOKENMUX_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="TOKENMUX_API_KEY"):
        TokenMux()
    with pytest.raises(MissingAPIKeyError):
        AsyncTokenMux()
    monkeypatch.setenv("TOKENMUX_API_KEY", ADMIN_KEY)
    monkeypatch.setenv("TOKENMUX_BASE_URL", gateway.base_url + "/v1")
    answer = TokenMux().chat.completions.create(model="fake-model", messages=HELLO)
    assert answer.choices[0].message.content == REPLY
    monkeypatch.delenv("TOKENMUX_BASE_URL")
    assert TokenMux().base_url == "http://127.0.0.1:8080/v1"


def test_every_openai_parameter_reaches_the_upstream_body(client, upstream):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]
    response = client.chat.completions.create(
        model="fake-model", messages=HELLO, temperature=0.5, max_tokens=20, top_p=0.9,
        frequency_penalty=0.1, presence_penalty=0.2, stop=["END"], n=2, tools=tools,
        tool_choice="auto", response_format={"type": "json_object"}, user="u-1")
    body = upstream.last().body
    assert body["temperature"] == 0.5 and body["max_tokens"] == 20 and body["top_p"] == 0.9
    assert body["frequency_penalty"] == 0.1 and body["presence_penalty"] == 0.2
    assert body["stop"] == ["END"] and body["n"] == 2 and body["tools"] == tools
    assert body["tool_choice"] == "auto" and body["user"] == "u-1"
    assert body["response_format"] == {"type": "json_object"}
    assert len(response.choices) == 2
    assert response.usage.total_tokens == response.usage.prompt_tokens + 2 * len(REPLY.split())
    client.chat.completions.create(model="fake-model", messages=HELLO, stream=True,
                                   stream_options={"include_usage": True})
    assert upstream.last().body["stream_options"] == {"include_usage": True}


def test_gateway_options_land_in_headers_and_body(upstream):
    # Straight at the fake upstream, which records the wire: the gateway does not forward these.
    direct = TokenMux(api_key="tm-direct", base_url=upstream.base_url, max_retries=0)
    direct.chat.completions.create(
        model="m", messages=HELLO, timeout_ms=20_000, tier="fast", request_id="trace-9",
        fallbacks=["b", "c"], compression={"enabled": True, "model": "small"},
        extra_headers={"X-Custom": "1"}, extra_body={"knob": 3})
    sent = upstream.last()
    assert sent.headers["X-Timeout"] == "20000"
    assert sent.headers["X-Tier"] == "fast"
    assert sent.headers["X-Request-Id"] == "trace-9"
    assert sent.headers["X-Custom"] == "1"
    assert sent.body["models"] == ["m", "b", "c"]
    assert sent.body["compression"] == {"enabled": True, "model": "small"}
    assert sent.body["knob"] == 3


def test_request_id_reaches_the_gateway_and_its_ledger(client, gateway):
    client.chat.completions.create(model="fake-model", messages=HELLO, request_id="sdk-id-1")
    assert gateway.wait_row("sdk-id-1")["status"] == 200


def test_each_status_raises_its_class_with_status_body_and_request_id(client, gateway):
    with pytest.raises(BadRequestError) as bad:
        client.chat.completions.create(model="fake-model", messages=HELLO, temperature=9)
    assert (bad.value.status_code, bad.value.param) == (400, "temperature")
    assert bad.value.body["error"]["param"] == "temperature"
    assert bad.value.request_id.startswith("req_")

    with pytest.raises(AuthenticationError) as auth:
        TokenMux(api_key="tm-wrong", base_url=gateway.base_url + "/v1").models.list()
    assert (auth.value.status_code, auth.value.code) == (401, "invalid_api_key")

    with pytest.raises(NotFoundError) as missing:
        client.models.retrieve("nothing-here")
    assert missing.value.code == "model_not_found"

    with pytest.raises(APIStatusError) as upstream_failed:
        client.chat.completions.create(model="fake-model", messages=[
            {"role": "user", "content": "@fail 503"}])
    assert upstream_failed.value.status_code == 502
    assert type(upstream_failed.value) is APIStatusError


def test_rate_limit_error_carries_retry_after(gateway):
    secret = gateway.cli("keys", "create", "--name", "sdk-rpm", "--rpm", "1").stdout.split()[-1]
    sdk = TokenMux(api_key=secret, base_url=gateway.base_url + "/v1", max_retries=0)
    sdk.chat.completions.create(model="fake-model", messages=HELLO)
    with pytest.raises(RateLimitError) as limited:
        sdk.chat.completions.create(model="fake-model", messages=HELLO)
    assert limited.value.status_code == 429
    assert 50 <= limited.value.retry_after <= 60


def test_request_timeout_error_reads_attempts_and_elapsed(upstream):
    direct = TokenMux(api_key="tm-direct", base_url=upstream.base_url)
    before = len(upstream.received)
    with pytest.raises(RequestTimeoutError) as timed_out:
        direct.chat.completions.create(model="m", messages=[
            {"role": "user", "content": "@fail 408"}])
    assert (timed_out.value.attempts, timed_out.value.elapsed_ms) == (3, 20012)
    assert len(upstream.received) - before == 1  # `x-should-retry: false`: asked once only


def test_timeout_ms_is_the_gateways_deadline(gateway):
    sdk = TokenMux(api_key=ADMIN_KEY, base_url=gateway.base_url + "/v1")  # retries allowed
    with pytest.raises(RequestTimeoutError) as timed_out:
        sdk.chat.completions.create(model="fake-model", timeout_ms=5_000, request_id="sdk-dl",
                                    messages=[{"role": "user", "content": "@stall 30"}])
    assert timed_out.value.status_code == 408
    assert timed_out.value.attempts == 1
    assert 5_000 <= timed_out.value.elapsed_ms < 15_000
    # The gateway said not to retry, and the SDK asked once: one request, one row.
    row = gateway.wait_row("sdk-dl")
    assert (row["status"], row["error_code"]) == (408, "request_timeout")


def test_tier_reaches_the_gateway(client, gateway):
    raw = gateway.post({"model": "fake-model", "messages": HELLO}, headers={"X-Tier": "slow"})
    assert raw.headers["X-TokenMux-Tier"] == "slow"
    client.chat.completions.create(model="fake-model", messages=HELLO, tier="fast",
                                   request_id="sdk-tier")
    assert gateway.wait_row("sdk-tier")["tier"] == "fast"
    with pytest.raises(BadRequestError) as bad:
        client.chat.completions.create(model="fake-model", messages=HELLO, tier="warp")
    assert bad.value.code == "invalid_tier"


def test_fallbacks_serve_when_the_model_cannot(client, gateway):
    answer = client.chat.completions.create(model="dead-model", messages=HELLO,
                                            fallbacks=["fake-model"], request_id="sdk-fb")
    assert answer.choices[0].message.content == REPLY
    assert answer.model == "fake-model"
    row = gateway.wait_row("sdk-fb")
    assert (row["requested_model"], row["model"], row["status"]) == (
        "dead-model", "fake-model", 200)
    assert row["attempts"] >= 2


def test_connection_error_when_nothing_listens():
    sdk = TokenMux(api_key="tm-x", base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(APIConnectionError):
        sdk.chat.completions.create(model="m", messages=HELLO)


def test_retries_reuse_one_request_id(upstream):
    # Straight at the fake upstream, whose 500 invites retries (the gateway's own 5xx, once it
    # has retried, tells the SDK not to).
    sdk = TokenMux(api_key="tm-direct", base_url=upstream.base_url, max_retries=2)
    before = len(upstream.received)
    with pytest.raises(APIStatusError):
        sdk.chat.completions.create(model="fake-model", messages=[
            {"role": "user", "content": "@fail 500"}])
    sent = upstream.received[before:]
    assert len(sent) == 3
    [request_id] = {r.headers["X-Request-Id"] for r in sent}
    assert request_id.startswith("req_")


def test_sync_stream_exposes_usage_and_raises_stream_errors(client):
    stream = client.chat.completions.create(model="fake-model", messages=HELLO, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == REPLY
    assert stream.usage.completion_tokens == len(REPLY.split())
    with pytest.raises(StreamError, match="cut its response short"):
        list(client.chat.completions.create(model="fake-model", stream=True, messages=[
            {"role": "user", "content": "@drop 2"}]))


def test_async_client_streams_and_lists_models(gateway):
    async def run():
        async with AsyncTokenMux(api_key=ADMIN_KEY, base_url=gateway.base_url + "/v1") as sdk:
            stream = await sdk.chat.completions.create(model="fake-model", messages=HELLO,
                                                       stream=True)
            async with stream:
                parts = [c.choices[0].delta.content async for c in stream if c.choices]
            models = [m.id for m in (await sdk.models.list()).data]
            one = await sdk.models.retrieve("fake-alias")
            with pytest.raises(NotFoundError):
                await sdk.chat.completions.create(model="absent", messages=HELLO)
            return "".join(p or "" for p in parts), stream.usage, models, one.id

    text, usage, models, one = asyncio.run(run())
    assert text == REPLY
    assert usage.total_tokens == 11 + len(REPLY.split())
    assert "fake-model" in models and one == "fake-model"


def test_leaving_a_stream_early_lets_it_run_on_for_the_same_call(client, gateway, upstream):
    # Every call of the SDK carries its request id, so it is idempotent (README, "Retry-safe
    # requests"): leaving does not cancel it; it runs to its end, is billed once, and the same
    # call made again gets the whole stream.
    call = {"model": "fake-model", "stream": True, "user": "sdk-leaver", "request_id":
            "sdk-leaver-1", "messages": [{"role": "user", "content": "@slow 0.3"}]}
    with client.chat.completions.create(**call) as stream:
        next(iter(stream))
    row = gateway.wait_row("sdk-leaver-1", timeout=20)
    assert (row["status"], row["completion_tokens"]) == (200, len(REPLY.split()))
    assert "sdk-leaver" not in upstream.abandoned
    again = client.chat.completions.create(**call)
    assert "".join(c.choices[0].delta.content or "" for c in again if c.choices) == REPLY
