"""Routing's retry rules as a client sees them: which upstream answers pass through and which
move on, the backoff between attempts on one channel (measured at the fake upstream), the
dropping of a channel that does not know its model, and the deadline's reach over a stall, a
queue and a stream's first chunk."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import httpx2 as httpx
import pytest

from tests.conftest import Gateway, started_gateway, wait_until
from tests.fakes.openai_upstream import REPLY, FakeOpenAI

# Large backoffs, so that the margins around them are wide: a retry waits
# min(initial * 2**retry, max) scaled by a jitter of 0.75-1.
INITIAL_S, MAX_S = 0.4, 0.8
STANDING = {"pair-first": "", "no-such-upstream-model": "@fail 404", "broken": "@fail 503",
            "unknown-upstream-model": "@fail 404"}


@pytest.fixture(scope="module")
def retrying(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Gateway]:
    running = started_gateway(tmp_path_factory.mktemp("retry-rules"), textwrap.dedent(f"""\
        routing:
          max_attempts: 5
          backoff_initial_ms: {int(INITIAL_S * 1000)}
          backoff_max_ms: {int(MAX_S * 1000)}
          default_timeout_ms: 5000
          breaker: {{failures: 1000000}}
        providers:
          fake: {{kind: openai, base_url: "{upstream.base_url}", api_key: sk-fake}}
        models:
          - name: lone
            channels: [{{provider: fake, model: lone-upstream}}]
          - name: pair
            channels:
              - {{provider: fake, model: pair-first, priority: 0}}
              - {{provider: fake, model: pair-second, priority: 1}}
          - name: gone-then-broken
            channels:
              - {{provider: fake, model: no-such-upstream-model, priority: 0}}
              - {{provider: fake, model: broken, priority: 1}}
          - name: gone-then-there
            channels:
              - {{provider: fake, model: unknown-upstream-model, priority: 0}}
              - {{provider: fake, model: there, priority: 1}}
          - name: gated
            channels: [{{provider: fake, model: gated-upstream, max_concurrency: 1}}]
          - name: ordered
            channels: [{{provider: fake, model: ordered-own}}]
            fallbacks: [configured-fallback]
          - name: configured-fallback
            channels: [{{provider: fake, model: configured-fallback-upstream}}]
          - name: requested-fallback
            channels: [{{provider: fake, model: requested-fallback-upstream}}]
        """))
    upstream.standing.update({k: v for k, v in STANDING.items() if v})
    yield running
    running.stop()
    for model in STANDING:
        upstream.standing.pop(model, None)


def seen(upstream: FakeOpenAI, user: str) -> list[str]:
    """The upstream models asked, in order, for the requests of end user USER."""
    return [r.body["model"] for r in upstream.received if r.body.get("user") == user]


def ask(gateway: Gateway, model: str, text: str, user: str, headers: dict[str, str] | None = None,
        **fields: object) -> httpx.Response:
    return gateway.post({"model": model, "messages": [{"role": "user", "content": text}],
                         "user": user, **fields}, headers=headers or {})


@pytest.mark.parametrize("status", [413, 422])
def test_an_upstream_413_or_422_passes_through_and_is_never_retried(retrying, upstream, status):
    user = f"refused-{status}"
    response = ask(retrying, "pair", f"@fail {status}", user)
    assert response.status_code == status
    assert response.json() == {"error": {"message": f"fake failure {status}",
                                         "type": "invalid_request_error", "param": None,
                                         "code": "fake_code"}}
    assert seen(upstream, user) == ["pair-first"]  # one request; the second channel untried
    row = retrying.wait_row(response.headers["x-request-id"])
    assert (row["status"], row["attempts"]) == (status, 1)


@pytest.mark.parametrize("status", [408, 409])
def test_an_upstream_408_or_409_moves_on_to_the_next_channel(retrying, upstream, status):
    user = f"moved-on-{status}"
    upstream.standing["pair-first"] = f"@fail {status}"
    try:
        response = ask(retrying, "pair", "hello", user)
    finally:
        upstream.standing.pop("pair-first")
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == REPLY
    assert response.headers["x-tokenmux-channel"] == "fake/pair-second"
    assert response.headers["x-tokenmux-attempts"] == "2"
    assert seen(upstream, user) == ["pair-first", "pair-second"]


def test_backoff_grows_from_its_initial_value_is_capped_and_jittered(retrying, upstream):
    ratios: list[float] = []
    for trial in range(2):
        user = f"backoff-{trial}"
        response = ask(retrying, "lone", "@fail 503", user, headers={"X-Timeout": "60000"})
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "bad_gateway"
        times = [r.at for r in upstream.received if r.body.get("user") == user]
        assert len(times) == 5  # routing.max_attempts, all on the only channel
        gaps = [b - a for a, b in pairwise(times)]
        ceilings = [min(INITIAL_S * 2 ** i, MAX_S) for i in range(4)]  # 0.4, 0.8, 0.8, 0.8
        # Never sooner than the jitter's floor: the first from backoff_initial_ms, then doubled.
        assert all(gap >= 0.75 * c - 0.01 for gap, c in zip(gaps, ceilings, strict=True)), gaps
        # Never much later: the first is not the 1.2 s of a backoff four times too long, and
        # the last is far below the 2.4 s it would be without backoff_max_ms.
        assert gaps[0] < 1.1, gaps
        assert gaps[3] < 2.0, gaps
        ratios += [gap / c for gap, c in zip(gaps, ceilings, strict=True)]
    # Jitter: without it no wait is shorter than its ceiling, and delays only add to it; with
    # it, some of eight waits drawn from 75-100% of the ceiling falls below 98.5% of it.
    assert min(ratios) < 0.985, ratios


def test_a_channel_that_does_not_know_its_model_is_dropped_from_the_plan(retrying, upstream):
    response = ask(retrying, "gone-then-there", "hello", "dropped-then-served")
    assert response.status_code == 200
    assert response.headers["x-tokenmux-channel"] == "fake/there"
    assert seen(upstream, "dropped-then-served") == ["unknown-upstream-model", "there"]
    # With the other channel failing too, the retries stay on it: the unknown model is asked
    # once, not every other attempt.
    response = ask(retrying, "gone-then-broken", "hello", "dropped-for-good")
    assert response.status_code == 502
    assert seen(upstream, "dropped-for-good") == ["no-such-upstream-model"] + ["broken"] * 4


def test_the_plan_is_the_models_channels_then_the_requests_models_then_its_fallbacks(
        retrying, upstream):
    response = ask(retrying, "ordered", "@fail 500", "plan-order",
                   models=["ordered", "requested-fallback"])
    assert response.status_code == 502
    assert seen(upstream, "plan-order")[:3] == [
        "ordered-own", "requested-fallback-upstream", "configured-fallback-upstream"]
    # And when one answers, the response names the model that did.
    upstream.standing["ordered-own"] = "@fail 500"
    try:
        response = ask(retrying, "ordered", "hello", "plan-answer",
                       models=["requested-fallback"])
    finally:
        upstream.standing.pop("ordered-own")
    assert response.status_code == 200
    assert response.json()["model"] == "requested-fallback"
    assert response.headers["x-tokenmux-channel"] == "fake/requested-fallback-upstream"


def test_the_default_deadline_is_routing_default_timeout_ms(retrying):
    started = time.monotonic()
    response = ask(retrying, "lone", "@stall 30", "default-deadline")
    elapsed = time.monotonic() - started
    assert response.status_code == 408
    assert response.json() == {"error": {
        "message": "Total request timeout (5000ms) exceeded after 1 channel attempts. "
                   "Set X-Timeout header to adjust.",
        "type": "timeout", "code": "request_timeout"}}
    assert int(response.headers["x-timeout-elapsed-ms"]) >= 5000
    assert 5.0 <= elapsed < 20


def test_the_deadline_bounds_the_wait_in_a_full_channels_queue(retrying, upstream):
    with ThreadPoolExecutor(1) as pool:
        holder = pool.submit(ask, retrying, "gated", "@hold gated-queue", "queue-holder",
                             {"X-Timeout": "60000"})
        try:
            assert wait_until(lambda: seen(upstream, "queue-holder"), timeout=10)
            started = time.monotonic()
            response = ask(retrying, "gated", "hello", "queue-waiter",
                           headers={"X-Timeout": "5000"})
            elapsed = time.monotonic() - started
        finally:
            upstream.release("gated-queue")
        assert holder.result(timeout=30).status_code == 200
    assert response.status_code == 408
    assert response.json()["error"]["code"] == "request_timeout"
    assert 5.0 <= elapsed < 20
    assert seen(upstream, "queue-waiter") == []  # it never got past the queue
    row = retrying.wait_row(response.headers["x-request-id"])
    assert row["status"] == 408
    assert row["queue_ms"] >= 4500


def test_a_stream_that_sends_nothing_within_the_deadline_gets_a_408(retrying):
    started = time.monotonic()
    response = ask(retrying, "lone", "@stall 30", "stream-deadline", stream=True,
                   headers={"X-Timeout": "5000"})
    elapsed = time.monotonic() - started
    assert response.status_code == 408
    assert response.json()["error"]["message"].startswith("Total request timeout (5000ms)")
    assert response.headers["x-should-retry"] == "false"
    assert 5.0 <= elapsed < 20
