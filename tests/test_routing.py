"""Channels, retries, the request deadline and fallbacks, through the openai SDK and raw HTTP."""

from __future__ import annotations

import itertools
import random
import time

import httpx2 as httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY
from tests.fakes.openai_upstream import REPLY
from tokenmux.config.schema import Config
from tokenmux.routing import Catalog
from tokenmux.routing.plan import plan
from tokenmux.routing.retry import Deadline
from tokenmux.routing.tiers import Tier

HELLO = [{"role": "user", "content": "Say hello"}]


def say(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_a_failing_channel_fails_over_to_the_next_priority(gateway, upstream):
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="failover-model", messages=HELLO)
    assert raw.parse().choices[0].message.content == REPLY
    assert raw.headers["x-tokenmux-channel"] == "fake/upstream-b"
    assert raw.headers["x-tokenmux-attempts"] == "2"
    row = gateway.wait_row(raw.headers["x-request-id"])  # one row: billed once
    assert (row["provider"], row["upstream_model"], row["attempts"]) == ("fake", "upstream-b", 2)
    assert upstream.last().body["model"] == "upstream-b"


def test_a_stream_fails_over_before_its_first_chunk_unseen(gateway):
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="failover-model", messages=HELLO, stream=True)
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert raw.headers["x-tokenmux-attempts"] == "2"
    assert gateway.wait_row(raw.headers["x-request-id"])["status"] == 200


def test_server_errors_are_retried_and_the_request_billed_once(gateway, upstream):
    before = len(upstream.received)
    response = gateway.post({"model": "fake-model", "messages": say("@fail 500")})
    assert response.status_code == 502
    assert len(upstream.received) == before + 3  # routing.max_attempts
    row = gateway.wait_row(response.headers["x-request-id"])
    assert (row["status"], row["attempts"]) == (502, 3)
    # The gateway spent its retries: an SDK retrying on top would triple the load again.
    assert response.headers["x-should-retry"] == "false"


def test_the_sdk_does_not_pile_retries_on_the_gateways_own(gateway, upstream):
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=ADMIN_KEY, max_retries=2)
    before = len(upstream.received)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="fake-model", messages=say("@fail 503"))
    assert caught.value.status_code == 502
    assert len(upstream.received) == before + 3  # the gateway's three, and no more


def test_a_channel_refusing_the_credentials_is_not_asked_again(gateway, upstream):
    upstream.standing["refuses-credentials"] = "@fail 401"
    try:
        before = len(upstream.received)
        raw = gateway.client().chat.completions.with_raw_response.create(
            model="refused-first", messages=HELLO)
        assert raw.headers["x-tokenmux-channel"] == "fake/upstream-b"
        assert [r.body["model"] for r in upstream.received[before:]] == [
            "refuses-credentials", "upstream-b"]
    finally:
        upstream.standing.pop("refuses-credentials")


def test_a_clients_mistake_is_never_retried(gateway, upstream):
    before = len(upstream.received)
    assert gateway.post({"model": "fake-model", "messages": say("@fail 400")}).status_code == 400
    assert len(upstream.received) == before + 1


def test_retry_after_from_the_upstream_is_honoured(gateway, upstream):
    before = len(upstream.received)
    response = gateway.post({"model": "fake-model", "messages": say("@fail 429 1")})
    assert response.status_code == 429
    arrivals = [r.at for r in upstream.received[before:]]
    assert len(arrivals) == 3
    assert all(later - earlier >= 0.95 for earlier, later in itertools.pairwise(arrivals))


def test_the_deadline_gives_408_with_the_exact_body_and_headers(gateway):
    started = time.monotonic()
    response = gateway.post({"model": "fake-model", "messages": say("@stall 30")},
                            headers={"X-Timeout": "5000"})
    waited = time.monotonic() - started
    assert response.status_code == 408
    assert response.json() == {"error": {
        "message": "Total request timeout (5000ms) exceeded after 1 channel attempts. "
                   "Set X-Timeout header to adjust.",
        "type": "timeout", "code": "request_timeout"}}
    assert response.headers["x-timeout-attempts"] == "1"
    assert 5000 <= int(response.headers["x-timeout-elapsed-ms"]) < 8000
    assert response.headers["x-should-retry"] == "false"
    assert 5 <= waited < 9
    row = gateway.wait_row(response.headers["x-request-id"])
    assert (row["status"], row["error_code"]) == (408, "request_timeout")


def test_the_sdk_does_not_retry_the_408(gateway):
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=ADMIN_KEY, max_retries=2)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="fake-model", messages=say("@stall 30"),
                                       extra_headers={"X-Timeout": "5000"})
    assert caught.value.status_code == 408
    assert time.monotonic() - started < 9  # one wait, not three


def test_a_stream_outlives_the_deadline_once_its_first_chunk_came(gateway):
    started = time.monotonic()
    with httpx.stream("POST", gateway.base_url + "/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}", "X-Timeout": "5000"},
                      json={"model": "fake-model", "stream": True,
                            "messages": say("@slow 0.8")}) as response:
        lines = [line for line in response.iter_lines() if line]
    assert time.monotonic() - started > 6  # eight words, 0.8 s apart, past the 5 s deadline
    assert lines[-1] == "data: [DONE]"


@pytest.mark.parametrize("value", ["abc", "4999", "300001", "-5"])
def test_an_x_timeout_out_of_range_is_400(gateway, value):
    response = gateway.post({"model": "fake-model", "messages": HELLO},
                            headers={"X-Timeout": value})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_timeout"


def test_configured_fallback_model_answers_when_the_channels_are_exhausted(gateway):
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="primary-down", messages=HELLO)
    assert raw.parse().model == "fake-model"
    assert raw.headers["x-tokenmux-channel"] == "fake/upstream-model-v1"
    assert raw.headers["x-tokenmux-attempts"] == "2"


def test_a_request_may_name_its_own_fallback_models(gateway, upstream):
    completion = gateway.client().chat.completions.create(
        model="dead-model", messages=HELLO, extra_body={"models": ["dead-model", "fake-alias"]})
    assert completion.model == "fake-model"
    assert "models" not in upstream.last().body
    response = gateway.post({"model": "dead-model", "messages": HELLO, "models": ["nope"]})
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "models[0]"


def test_weights_share_traffic_among_equal_priorities(gateway, upstream):
    before = len(upstream.received)
    for _ in range(200):
        assert gateway.post({"model": "weighted-model", "messages": HELLO}).status_code == 200
    chosen = [r.body["model"] for r in upstream.received[before:]]
    # 9 to 1: about 180 heavy; the bounds are seven standard deviations wide.
    assert 150 <= chosen.count("heavy") <= 199
    assert chosen.count("heavy") + chosen.count("light") == 200


def test_plan_orders_by_priority_then_weight_then_fallbacks():
    config = Config.model_validate({
        "providers": {"p": {"kind": "openai"}},
        "models": [
            {"name": "a", "fallbacks": ["b"], "channels": [
                {"provider": "p", "model": "late", "priority": 2},
                {"provider": "p", "model": "early", "priority": 1}]},
            {"name": "b", "channels": [{"provider": "p", "model": "other"}]},
        ]})
    catalog = Catalog(config)
    order = plan(catalog, catalog.resolve("a"), [], Tier.MEDIUM, random.Random(1))
    assert [r.upstream_model for r in order] == ["early", "late", "other"]
    assert [r.model for r in order] == ["a", "a", "b"]


def test_a_deadline_that_fired_early_still_reports_its_whole_budget():
    # The client's timer may fire a fraction of a millisecond before the gateway's clock says
    # the budget is spent: the 408 still reports at least the budget.
    fired_early = Deadline(5000, time.perf_counter() - 4.9995).exceeded(2)
    assert fired_early.elapsed_ms == 5000
    assert fired_early.headers()["X-Timeout-Elapsed-Ms"] == "5000"
    late = Deadline(5000, time.perf_counter() - 5.25).exceeded(2)
    assert 5250 <= late.elapsed_ms < 6000
