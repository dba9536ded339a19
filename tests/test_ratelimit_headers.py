"""OpenAI's `x-ratelimit-*` headers on every answer of a limited key: JSON, a stream's headers,
a 429 and an upstream's error; none at all for a key without limits."""

from __future__ import annotations

import re

from tests.conftest import Gateway

HELLO = [{"role": "user", "content": "Hello"}]
NAMES = [f"x-ratelimit-{what}-{kind}" for kind in ("requests", "tokens")
         for what in ("limit", "remaining", "reset")]
DURATION = re.compile(r"(\d+m)?\d+(\.\d+)?s|\d+ms")


def new_key(gateway: Gateway, name: str, *limits: str) -> str:
    return gateway.cli("keys", "create", "--name", name, *limits).stdout.strip().splitlines()[-1]


def test_a_limited_keys_answers_say_where_it_stands(gateway: Gateway):
    key = new_key(gateway, "headers-limited", "--rpm", "3", "--tpm", "100000")
    first = gateway.post({"model": "fake-model", "messages": HELLO}, key=key)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "3"
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    assert first.headers["x-ratelimit-limit-tokens"] == "100000"
    assert 0 < int(first.headers["x-ratelimit-remaining-tokens"]) < 100000
    assert all(DURATION.fullmatch(first.headers[f"x-ratelimit-reset-{k}"])
               for k in ("requests", "tokens"))

    with gateway.client(key).chat.completions.with_streaming_response.create(
            model="fake-model", messages=HELLO, stream=True) as streamed:
        list(streamed.iter_lines())
        assert streamed.headers["x-ratelimit-remaining-requests"] == "1"

    failed = gateway.post({"model": "dead-model", "messages": HELLO}, key=key)
    assert failed.status_code >= 500
    assert failed.headers["x-ratelimit-remaining-requests"] == "0"

    refused = gateway.post({"model": "fake-model", "messages": HELLO}, key=key)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert DURATION.fullmatch(refused.headers["x-ratelimit-reset-requests"])
    assert set(NAMES) <= set(refused.headers)


def test_a_key_without_limits_gets_none(gateway: Gateway):
    key = new_key(gateway, "headers-unlimited")
    response = gateway.post({"model": "fake-model", "messages": HELLO}, key=key)
    assert response.status_code == 200
    assert not [h for h in response.headers if h.startswith("x-ratelimit")]
