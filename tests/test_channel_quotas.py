"""Channel quotas (`rpm`/`tpm` on a channel): the upstream account's own limits, paced to by
the gateway, which moves on to the next channel instead of spending an attempt on a 429 it can
foresee; across a fleet, through Redis, every instance draws on the one quota."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import UPSTREAM_KEY, Gateway, started_gateway, wait_until
from tests.fakes.openai_upstream import FakeOpenAI
from tests.test_shared_limits import FRESH, REDIS_URL, Fleet, config, database

__all__ = ["database"]  # the fixture, used by the fleet test

ASK = {"model": "paced", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


def models(upstream: FakeOpenAI, first: str) -> str:
    return textwrap.dedent(f"""\
        providers:
          fake: {{kind: openai, base_url: "{upstream.base_url}", api_key: "{UPSTREAM_KEY}"}}
        models:
          - name: paced
            channels:
              - {{provider: fake, model: quota-first, priority: 0, {first}}}
              - {{provider: fake, model: quota-second, priority: 1}}
          - name: alone
            channels: [{{provider: fake, model: quota-alone, rpm: 2}}]
          - name: brisk
            channels: [{{provider: fake, model: quota-brisk, rpm: 120}}]
          - name: gated
            channels: [{{provider: fake, model: quota-gated, rpm: 2, max_concurrency: 1}}]
        """)


def sent_to(upstream: FakeOpenAI, model: str) -> int:
    return sum(1 for r in upstream.received if r.body.get("model") == model)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory,
            module_upstream: FakeOpenAI) -> Iterator[Gateway]:
    running = started_gateway(tmp_path_factory.mktemp("quotas"),
                              models(module_upstream, "rpm: 3, tpm: 100000"))
    yield running
    running.stop()


def test_a_channel_at_its_rpm_is_passed_over_without_an_attempt(
        gateway: Gateway, module_upstream: FakeOpenAI) -> None:
    answers = [gateway.post(ASK) for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert [a.headers["X-TokenMux-Channel"] for a in answers] == (
        ["fake/quota-first"] * 3 + ["fake/quota-second"] * 2)
    # Nothing was sent to be refused: each answer took one attempt, the first channel got 3.
    assert {a.headers["X-TokenMux-Attempts"] for a in answers} == {"1"}
    assert sent_to(module_upstream, "quota-first") == 3
    rows = [gateway.wait_row(a.headers["X-Request-Id"]) for a in answers]
    assert [(r["upstream_model"], r["attempts"]) for r in rows] == (
        [("quota-first", 1)] * 3 + [("quota-second", 1)] * 2)


def test_when_every_channel_is_at_quota_beyond_the_deadline_the_answer_is_429(
        gateway: Gateway, module_upstream: FakeOpenAI) -> None:
    body = {**ASK, "model": "alone"}
    assert [gateway.post(body).status_code for _ in range(2)] == [200, 200]
    refused = gateway.post(body, headers={"X-Timeout": "5000"})
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "upstream_quota_exceeded"
    assert error["type"] == "rate_limit_error"
    # rpm 2 refills one request every 30 s: that is the wait, in whole seconds rounded up.
    assert 25 <= int(refused.headers["Retry-After"]) <= 30
    assert sent_to(module_upstream, "quota-alone") == 2
    row = gateway.wait_row(refused.headers["X-Request-Id"])
    assert (row["status"], row["error_code"], row["attempts"]) == (
        429, "upstream_quota_exceeded", 0)


def test_requests_beyond_the_quota_wait_for_room_when_their_deadline_allows(
        gateway: Gateway, module_upstream: FakeOpenAI) -> None:
    # rpm 120: a burst of 120, then one more every 0.5 s. 126 requests at once cannot all be
    # sent in less than 3 s; paced, each is answered, with one attempt, none refused.
    body = {**ASK, "model": "brisk"}
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: gateway.post(body, headers=FRESH), range(126)))
    took = time.monotonic() - started
    assert [a.status_code for a in answers] == [200] * 126
    assert {a.headers["X-TokenMux-Attempts"] for a in answers} == {"1"}
    assert took >= 2.9, f"126 requests in {took:.2f}s: more than the quota allows"
    assert sent_to(module_upstream, "quota-brisk") == 126


def test_a_request_that_never_left_the_gate_spends_none_of_the_quota(
        gateway: Gateway, module_upstream: FakeOpenAI) -> None:
    # rpm 2 and one request at a time: the first holds the channel, the second waits at its
    # gate until its deadline and is never sent, so the quota's second request is still there.
    body = {**ASK, "model": "gated"}
    held = {**body, "messages": [{"role": "user", "content": "@hold quota-gate"}]}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(gateway.post, held)
        assert wait_until(lambda: sent_to(module_upstream, "quota-gated") == 1)
        queued = gateway.post(body, headers={"X-Timeout": "5000"})
        module_upstream.release("quota-gate")
        assert first.result().status_code == 200
    assert queued.status_code == 408
    assert sent_to(module_upstream, "quota-gated") == 1
    after = gateway.post(body, headers={"X-Timeout": "5000"})
    assert after.status_code == 200, after.text
    assert sent_to(module_upstream, "quota-gated") == 2


def test_a_channel_at_its_tpm_is_passed_over_and_the_real_count_settles(
        tmp_path: Path, module_upstream: FakeOpenAI) -> None:
    # Each request reserves its estimate (a few prompt tokens plus max_tokens 10); the answer
    # settles its real count (11 prompt tokens, 9 or so completion) in place of it.
    running = started_gateway(tmp_path, models(module_upstream, "tpm: 100"))
    try:
        first = running.post({**ASK, "max_tokens": 60})
        assert first.headers["X-TokenMux-Channel"] == "fake/quota-first"
        row = running.wait_row(first.headers["X-Request-Id"])
        spent = row["prompt_tokens"] + row["completion_tokens"]
        assert spent < 40
        # 100 - spent tokens left: a request reserving more goes to the second channel, one
        # reserving less still fits the first (it would not, had the estimate of 60+ stayed).
        over = running.post({**ASK, "max_tokens": 100 - spent + 5})
        assert over.headers["X-TokenMux-Channel"] == "fake/quota-second"
        fits = running.post({**ASK, "max_tokens": 100 - spent - 35})
        assert fits.headers["X-TokenMux-Channel"] == "fake/quota-first"
    finally:
        running.stop()


def test_a_fleet_shares_one_channel_quota_through_redis(
        tmp_path: Path, module_upstream: FakeOpenAI, database: str) -> None:
    text = config(database, module_upstream, REDIS_URL).split("providers:")[0]
    fleet = Fleet(tmp_path, text + models(module_upstream, "rpm: 7"), 3).start()
    try:
        before = sent_to(module_upstream, "quota-first")
        started = time.monotonic()
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(
                lambda n: fleet.gateways[n % 3].post(ASK, headers=FRESH), range(24)))
        # rpm 7 refills one request every 60/7 s: on a slow machine, one more may have fitted.
        allowed = 7 + int((time.monotonic() - started) * 7 / 60)
        assert [a.status_code for a in answers] == [200] * 24
        channels = [a.headers["X-TokenMux-Channel"] for a in answers]
        # The quota went to the first channel, whichever instance took each request.
        assert 7 <= channels.count("fake/quota-first") <= allowed
        assert channels.count("fake/quota-first") + channels.count("fake/quota-second") == 24
        assert sent_to(module_upstream, "quota-first") - before == channels.count(
            "fake/quota-first")
        assert {a.headers["X-TokenMux-Attempts"] for a in answers} == {"1"}
    finally:
        fleet.stop()
