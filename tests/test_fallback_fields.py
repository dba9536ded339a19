"""Request-level fallbacks as the reference documents them: `fallback_models`, `fallback_timeout`,
`fallback_enabled` in the body, a key's defaults, and the `X-Fallback-*` / `X-Actual-Model`
headers on every answer of a request that asked for them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ADMIN_KEY, Gateway, started_gateway
from tests.fakes.openai_upstream import REPLY, FakeOpenAI

HELLO = [{"role": "user", "content": "Hello"}]
STANDING = {"fb-fails": "@fail 503", "fb-limited": "@fail 429 0", "fb-stalls": "@stall 60",
            "fb-cfg-fails": "@fail 500"}
FALLBACK_HEADERS = ("x-fallback-used", "x-fallback-from", "x-actual-model", "x-fallback-reason")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Gateway]:
    upstream.standing.update(STANDING)
    running = started_gateway(tmp_path_factory.mktemp("fallback-fields"), f"""\
        routing: {{breaker: {{failures: 1000000}}}}
        providers:
          fake: {{kind: openai, base_url: "{upstream.base_url}", api_key: sk-fake}}
        models:
          - {{name: fails, channels: [{{provider: fake, model: fb-fails}}]}}
          - {{name: limited, channels: [{{provider: fake, model: fb-limited}}]}}
          - {{name: stalls, channels: [{{provider: fake, model: fb-stalls}}]}}
          - name: answers
            aliases: [answers-alias]
            channels: [{{provider: fake, model: fb-ok}}]
          - {{name: second, channels: [{{provider: fake, model: fb-second}}]}}
          - {{name: stalls-briefly, channels: [{{provider: fake, model: fb-stalls, timeout: 1}}]}}
          - name: configured
            channels: [{{provider: fake, model: fb-cfg-fails}}]
            fallbacks: [second]
        """)
    yield running
    running.stop()
    for name in STANDING:
        upstream.standing.pop(name, None)


def ask(gateway: Gateway, key: str = ADMIN_KEY, headers: dict | None = None, **body):
    return gateway.post({"messages": HELLO, **body}, key=key, headers=headers or {})


def sent_models(upstream: FakeOpenAI, since: int) -> list[str]:
    return [r.body["model"] for r in upstream.received[since:]]


def test_a_failing_model_falls_back_and_says_so(gateway, upstream):
    before = len(upstream.received)
    response = ask(gateway, model="fails", fallback_models=["answers"])
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == REPLY
    assert response.json()["model"] == "answers"
    assert {h: response.headers.get(h) for h in FALLBACK_HEADERS} == {
        "x-fallback-used": "true", "x-fallback-from": "fails", "x-actual-model": "answers",
        "x-fallback-reason": "upstream_error"}
    assert sent_models(upstream, before) == ["fb-fails", "fb-ok"]
    # The fields are the gateway's: the upstream never sees them.
    assert not {"fallback_models", "fallback_timeout", "fallback_enabled"} & set(
        upstream.received[-1].body)


def test_a_rate_limited_model_falls_back_with_that_reason(gateway):
    response = ask(gateway, model="limited", fallback_models=["answers"])
    assert response.status_code == 200
    assert response.headers["x-fallback-reason"] == "rate_limited"
    assert response.headers["x-fallback-from"] == "limited"


def test_a_model_that_answers_says_no_fallback_was_used(gateway):
    response = ask(gateway, model="answers-alias", fallback_models=["second"])
    assert response.status_code == 200
    assert response.headers["x-fallback-used"] == "false"
    assert response.headers["x-actual-model"] == "answers"
    assert "x-fallback-from" not in response.headers
    assert "x-fallback-reason" not in response.headers


def test_a_request_without_fallbacks_gets_no_fallback_headers(gateway):
    response = ask(gateway, model="answers")
    assert response.status_code == 200
    assert not {h for h in FALLBACK_HEADERS if h in response.headers}


def test_fallback_timeout_moves_on_from_a_model_that_does_not_answer(gateway, upstream):
    before = len(upstream.received)
    started = time.monotonic()
    response = ask(gateway, model="stalls", fallback_models=["answers"], fallback_timeout=5000)
    took = time.monotonic() - started
    assert response.status_code == 200
    assert response.headers["x-fallback-reason"] == "timeout"
    assert response.headers["x-actual-model"] == "answers"
    assert 5 <= took < 50  # the fallback timeout, not the 60 s stall
    assert sent_models(upstream, before) == ["fb-stalls", "fb-ok"]


def test_a_longer_fallback_timeout_never_lengthens_the_channels_own(gateway):
    started = time.monotonic()
    response = ask(gateway, model="stalls-briefly", fallback_models=["answers"],
                   fallback_timeout=60_000)
    assert response.status_code == 200
    assert response.headers["x-fallback-reason"] == "timeout"
    assert 1 <= time.monotonic() - started < 30  # the channel's 1 s, not the 60 s asked for


def test_the_x_timeout_deadline_bounds_the_fallbacks_and_the_error_has_the_headers(gateway):
    started = time.monotonic()
    response = ask(gateway, headers={"X-Timeout": "6000"}, model="stalls",
                   fallback_models=["fails"], fallback_timeout=5000)
    took = time.monotonic() - started
    # 5 s on `stalls`, a quick failure on `fails`, then `stalls` again is cut by the deadline.
    assert response.status_code == 408, response.text
    assert 6 <= took < 60
    assert response.headers["x-fallback-used"] == "true"
    assert response.headers["x-fallback-from"] == "stalls"
    assert response.headers["x-actual-model"] == "stalls"  # the last one tried
    assert response.headers["x-fallback-reason"] == "upstream_error"  # why `fails` was left


def test_a_stream_falls_back_and_its_headers_say_so(gateway):
    with gateway.client().chat.completions.with_streaming_response.create(
            model="fails", messages=HELLO, stream=True,
            extra_body={"fallback_models": ["answers"]}) as response:
        text = "".join(c.choices[0].delta.content or "" for c in response.parse())
        headers = response.headers
    assert text == REPLY
    assert headers["x-fallback-used"] == "true" and headers["x-actual-model"] == "answers"
    assert headers["x-fallback-reason"] == "upstream_error"


def test_the_order_is_model_then_models_then_fallback_models_then_the_configs(gateway, upstream):
    before = len(upstream.received)
    response = ask(gateway, model="configured", models=["limited"], fallback_models=["fails"])
    assert response.status_code == 200
    assert sent_models(upstream, before) == ["fb-cfg-fails", "fb-limited", "fb-fails",
                                             "fb-second"]
    # Four models are attempted, past the policy's three attempts: each was asked for.
    assert response.headers["x-actual-model"] == "second"
    assert response.headers["x-fallback-reason"] == "upstream_error"


def test_fallback_enabled_false_turns_them_off(gateway, upstream):
    before = len(upstream.received)
    response = ask(gateway, model="fails", fallback_models=["answers"], fallback_enabled=False)
    assert response.status_code == 502  # the gateway's answer to an upstream that kept failing
    assert response.headers["x-fallback-used"] == "false"
    assert response.headers["x-actual-model"] == "fails"
    assert set(sent_models(upstream, before)) == {"fb-fails"}


@pytest.mark.parametrize(("field", "value", "param"), [
    ("fallback_models", "answers", "fallback_models"),
    ("fallback_models", ["answers", 3], "fallback_models"),
    ("fallback_models", ["answers", ""], "fallback_models"),
    ("fallback_models", ["answers"] * 6, "fallback_models"),
    ("fallback_timeout", 4999, "fallback_timeout"),
    ("fallback_timeout", 300_001, "fallback_timeout"),
    ("fallback_timeout", "30000", "fallback_timeout"),
    ("fallback_timeout", 5000.5, "fallback_timeout"),
    ("fallback_timeout", True, "fallback_timeout"),
    ("fallback_enabled", "yes", "fallback_enabled"),
])
def test_bad_fallback_fields_are_a_clear_400(gateway, field, value, param):
    response = ask(gateway, model="answers", **{field: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert field in error["message"]


def test_five_fallback_models_are_the_most_and_are_taken(gateway):
    response = ask(gateway, model="fails", fallback_models=["limited"] * 4 + ["answers"])
    assert response.status_code == 200
    assert response.headers["x-actual-model"] == "answers"


def test_an_unknown_fallback_model_is_a_404_like_an_unknown_model(gateway):
    response = ask(gateway, model="answers", fallback_models=["second", "nothing-here"])
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("model_not_found", "fallback_models[1]")
    assert response.headers["x-fallback-used"] == "false"


def test_a_keys_default_fallbacks(gateway, upstream):
    created = gateway.cli("keys", "create", "--name", "with-fallbacks", "--fallback-model",
                          "limited", "--fallback-model", "answers", "--fallback-timeout", "5000")
    key = created.stdout.strip().splitlines()[-1]
    listed = json.loads(gateway.cli("keys", "list", "--json").stdout)
    mine = next(k for k in listed if k["name"] == "with-fallbacks")
    assert (mine["fallback_models"], mine["fallback_timeout_ms"]) == (["limited", "answers"], 5000)

    before = len(upstream.received)
    response = ask(gateway, key=key, model="fails")
    assert response.status_code == 200
    assert response.headers["x-actual-model"] == "answers"
    assert response.headers["x-fallback-reason"] == "rate_limited"
    assert sent_models(upstream, before) == ["fb-fails", "fb-limited", "fb-ok"]
    # The request's own list replaces the key's; `fallback_enabled: false` refuses both.
    response = ask(gateway, key=key, model="fails", fallback_models=["second"])
    assert response.headers["x-actual-model"] == "second"
    response = ask(gateway, key=key, model="fails", fallback_enabled=False)
    assert response.status_code == 502 and response.headers["x-fallback-used"] == "false"


@pytest.mark.parametrize("args", [
    ["--fallback-model", "nothing-here"],
    ["--fallback-model", "answers"] * 6,
    ["--fallback-timeout", "4999"],
])
def test_keys_create_refuses_bad_fallback_defaults(gateway, args):
    result = gateway.cli("keys", "create", "--name", "bad", *args, check=False)
    assert result.returncode != 0
    assert "fallback" in result.stderr
