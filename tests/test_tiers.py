"""Service tiers, channel concurrency limits with their queue, hedging and the breaker, each on a
gateway of its own so that channel health and latency records start clean."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY, Gateway, started_gateway, wait_until
from tests.fakes.openai_upstream import REPLY, FakeOpenAI

HELLO = [{"role": "user", "content": "Say hello"}]
# An unmeasured channel's time to answer before a ludicrous request hedges: long enough that a
# quick answer never needs a hedge on a loaded machine, short enough to keep the hedges quick.
HEDGE_DEFAULT_S = 1.5
COOLDOWN_S = 2.0


def gateway_with(directory: Path, upstream: FakeOpenAI, models: str, routing: str = "") -> Gateway:
    return started_gateway(directory, textwrap.dedent(f"""\
        routing: {{{routing}}}
        providers:
          fake: {{kind: openai, base_url: "{upstream.base_url}", api_key: sk-fake}}
          priced: {{kind: openai, base_url: "{upstream.base_url}", api_key: sk-fake,
                    price_provider: openai}}
        """) + textwrap.dedent(models))


@pytest.fixture(scope="module")
def tiered(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Gateway]:
    running = gateway_with(tmp_path_factory.mktemp("tiers"), upstream, """\
        models:
          - name: race
            channels:
              - {provider: fake, model: tortoise, priority: 0}
              - {provider: fake, model: hare, priority: 1}
          - name: hedged
            channels:
              - {provider: fake, model: hedge-tortoise, priority: 0}
              - {provider: fake, model: hedge-hare, priority: 1}
          - name: unmeasured
            channels:
              - {provider: fake, model: fresh-a, priority: 0}
              - {provider: fake, model: fresh-b, priority: 1}
          - name: bargain
            channels:
              - {provider: priced, model: gpt-4o, priority: 0}
              - {provider: priced, model: gpt-4o-mini, priority: 1}
          - name: gated
            channels: [{provider: fake, model: one-at-a-time, max_concurrency: 1}]
          - name: spill
            channels:
              - {provider: fake, model: spill-first, max_concurrency: 1, priority: 0}
              - {provider: fake, model: spill-second, priority: 1}
          - name: p90
            channels:
              - {provider: fake, model: p90-backup, priority: 0}
              - {provider: fake, model: p90-quick, priority: 1}
          - name: priced-trio
            channels:
              - {provider: priced, model: gpt-4o, priority: 0}
              - {provider: priced, model: gpt-4.1-nano, priority: 1}
              - {provider: priced, model: gpt-4o-mini, priority: 2}
        """, routing=f"hedge_default_ms: {int(HEDGE_DEFAULT_S * 1000)}")
    standing = {"tortoise": "@stall 0.4", "hedge-tortoise": "@stall 30",
                "p90-backup": "@stall 0.3"}
    upstream.standing.update(standing)
    yield running
    running.stop()
    for model in (*standing, "p90-quick"):
        upstream.standing.pop(model, None)


def ask(gateway: Gateway, model: str, tier: str | None = None, key: str = ADMIN_KEY,
        user: str | None = None):  # type: ignore[no-untyped-def]
    headers = {"X-Tier": tier} if tier else {}
    extra = {"user": user} if user else {}
    return gateway.client(key).chat.completions.with_raw_response.create(
        model=model, messages=HELLO, extra_headers=headers, **extra)


def test_an_unknown_tier_is_400(tiered):
    response = tiered.post({"model": "race", "messages": HELLO}, headers={"X-Tier": "warp"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_tier"
    assert "slow, medium, fast, ludicrous" in error["message"]


def test_medium_follows_priority_and_fast_the_lowest_latency(tiered):
    raw = ask(tiered, "race")  # medium by default: priority 0, the slow one
    assert raw.headers["x-tokenmux-channel"] == "fake/tortoise"
    assert raw.headers["x-tokenmux-tier"] == "medium"
    # The hare has never been measured, so a fast request tries it once; from then on its
    # latency, far below the tortoise's 0.4 s, keeps it first.
    for _ in range(3):
        raw = ask(tiered, "race", tier="fast")
        assert raw.headers["x-tokenmux-channel"] == "fake/hare"
        assert raw.headers["x-tokenmux-tier"] == "fast"
    row = tiered.wait_row(raw.headers["x-request-id"])
    assert (row["tier"], row["upstream_model"]) == ("fast", "hare")


def test_slow_takes_the_cheapest_channel(tiered):
    assert ask(tiered, "bargain").headers["x-tokenmux-channel"] == "priced/gpt-4o"
    raw = ask(tiered, "bargain", tier="slow")
    assert raw.headers["x-tokenmux-channel"] == "priced/gpt-4o-mini"
    row = tiered.wait_row(raw.headers["x-request-id"])
    assert row["tier"] == "slow"
    assert float(row["cost_usd"]) > 0


def test_a_key_has_a_default_tier_and_a_cap(tiered):
    fast = tiered.cli("keys", "create", "--name", "quick", "--tier", "fast").stdout.strip()
    capped = tiered.cli("keys", "create", "--name", "capped", "--max-tier",
                        "medium").stdout.strip()
    listing = tiered.cli("keys", "list").stdout
    assert "fast" in listing and "medium (max medium)" in listing
    raw = ask(tiered, "race", key=fast)
    assert raw.headers["x-tokenmux-tier"] == "fast"
    assert ask(tiered, "race", key=fast, tier="slow").headers["x-tokenmux-tier"] == "slow"
    raw = ask(tiered, "race", key=capped, tier="ludicrous")
    assert raw.headers["x-tokenmux-tier"] == "medium"  # answered, at the best tier allowed
    assert tiered.wait_row(raw.headers["x-request-id"])["tier"] == "medium"
    refused = tiered.cli("keys", "create", "--name", "odd", "--tier", "fast", "--max-tier",
                         "slow", check=False)
    assert refused.returncode != 0 and "above --max-tier" in refused.stderr


def test_ludicrous_hedges_and_bills_only_the_winner(tiered, upstream):
    started = time.monotonic()
    raw = ask(tiered, "hedged", tier="ludicrous", user="hedge-1")
    # Unmeasured, the first channel had routing.hedge_default_ms before the second started.
    assert time.monotonic() - started >= HEDGE_DEFAULT_S
    assert raw.parse().choices[0].message.content == REPLY
    assert raw.headers["x-tokenmux-channel"] == "fake/hedge-hare"
    assert raw.headers["x-tokenmux-attempts"] == "2"
    sent = [r.body["model"] for r in upstream.received if r.body.get("user") == "hedge-1"]
    assert sent == ["hedge-tortoise", "hedge-hare"]
    # The loser was cancelled, not waited out: the upstream saw its client leave.
    assert wait_until(lambda: "hedge-1" in upstream.abandoned, timeout=10)
    row = tiered.wait_row(raw.headers["x-request-id"])  # one row, the winner's
    assert (row["upstream_model"], row["attempts"], row["tier"]) == ("hedge-hare", 2, "ludicrous")
    usage = raw.parse().usage
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        usage.prompt_tokens, usage.completion_tokens)


def test_a_hedged_stream_relays_the_winner_alone(tiered, upstream):
    raw = tiered.client().chat.completions.with_raw_response.create(
        model="hedged", messages=HELLO, stream=True, user="hedge-stream",
        extra_headers={"X-Tier": "ludicrous"})
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert raw.headers["x-tokenmux-channel"] == "fake/hedge-hare"
    assert raw.headers["x-tokenmux-attempts"] == "2"
    assert wait_until(lambda: "hedge-stream" in upstream.abandoned, timeout=10)
    row = tiered.wait_row(raw.headers["x-request-id"])
    assert (row["upstream_model"], row["status"], row["stream"]) == ("hedge-hare", 200, 1)


def test_a_quick_first_channel_is_not_hedged(tiered, upstream):
    raw = ask(tiered, "unmeasured", tier="ludicrous", user="no-hedge")
    # Unmeasured, the channel has the configured 1.5 s to answer; it needs a few ms.
    assert raw.headers["x-tokenmux-attempts"] == "1"
    assert [r.body["model"] for r in upstream.received if r.body.get("user") == "no-hedge"] == [
        "fresh-a"]


def test_a_saturated_channel_admits_by_tier_then_deadline(tiered, upstream):
    # Each request is held at the upstream until the test lets it go, so the channel's one
    # slot passes from request to request only on the test's word, and the order in which the
    # upstream sees them is the order of admission.
    def admitted() -> list[str]:
        return [r.body["user"] for r in upstream.received
                if r.body.get("model") == "one-at-a-time" and r.body["user"].startswith("q-")]

    async def scenario() -> None:
        client = tiered.async_client(timeout=60)

        async def one(name: str, tier: str, timeout_ms: int = 60_000) -> None:
            raw = await client.chat.completions.with_raw_response.create(
                model="gated", messages=[{"role": "user", "content": f"@hold {name}"}],
                user=name, extra_headers={"X-Tier": tier, "X-Timeout": str(timeout_ms)})
            assert raw.headers["x-tokenmux-tier"] == tier

        async def until(predicate) -> None:  # type: ignore[no-untyped-def]
            deadline = time.monotonic() + 20
            while not predicate():
                assert time.monotonic() < deadline, admitted()
                await asyncio.sleep(0.02)

        tasks = [asyncio.create_task(one("q-holder", "medium"))]
        await until(lambda: admitted() == ["q-holder"])  # the holder has the only slot
        # Arrival order does not matter (tier, then the nearer deadline, decides); the nearer
        # deadline comes last all the same, and ludicrous after fast.
        for name, tier, timeout_ms in [("q-slow", "slow", 60_000),
                                       ("q-medium-late", "medium", 50_000),
                                       ("q-fast", "fast", 60_000),
                                       ("q-ludicrous", "ludicrous", 60_000),
                                       ("q-medium-urgent", "medium", 20_000)]:
            tasks.append(asyncio.create_task(one(name, tier, timeout_ms)))
        await asyncio.sleep(1.5)  # for the five to reach the queue: a wide margin on loopback
        assert admitted() == ["q-holder"]  # they all wait
        for count in range(2, 7):
            upstream.release(admitted()[-1])
            await until(lambda count=count: len(admitted()) == count)
        upstream.release(admitted()[-1])
        await asyncio.gather(*tasks)
        await client.close()

    asyncio.run(scenario())
    # Tier first; within a tier the nearer deadline, though it arrived last.
    assert admitted() == ["q-holder", "q-ludicrous", "q-fast", "q-medium-urgent",
                          "q-medium-late", "q-slow"]
    assert wait_until(lambda: len(tiered.rows(model="gated")) == 6)
    rows = {r["end_user"]: r for r in tiered.rows(model="gated")}
    assert rows["q-holder"]["queue_ms"] < 200
    assert all(rows[name]["queue_ms"] >= 1000 for name in admitted()[1:])  # the 1.5 s at least
    assert rows["q-slow"]["queue_ms"] > rows["q-ludicrous"]["queue_ms"]


def test_a_saturated_channel_spills_over_unless_the_tier_is_slow(tiered, upstream):
    def seen(user: str) -> list[str]:
        return [r.body["model"] for r in upstream.received if r.body.get("user") == user]

    async def scenario() -> dict[str, str]:
        client = tiered.async_client(timeout=60)

        async def one(name: str, tier: str, text: str = "hello") -> tuple[str, str]:
            raw = await client.chat.completions.with_raw_response.create(
                model="spill", messages=[{"role": "user", "content": text}], user=name,
                extra_headers={"X-Tier": tier})
            return name, raw.headers["x-tokenmux-channel"]

        holder = asyncio.create_task(one("spill-holder", "medium", "@hold spill-holder"))
        deadline = time.monotonic() + 20
        while not seen("spill-holder"):  # the holder has spill-first's only slot
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        medium = await one("spill-medium", "medium")  # spills over at once
        slow = asyncio.create_task(one("spill-slow", "slow"))
        await asyncio.sleep(1.0)  # for it to reach the queue
        assert seen("spill-slow") == []  # it waits for the full channel instead
        upstream.release("spill-holder")
        served = dict([await holder, medium, await slow])
        await client.close()
        return served

    served = asyncio.run(scenario())
    assert served == {"spill-holder": "fake/spill-first", "spill-medium": "fake/spill-second",
                      "spill-slow": "fake/spill-first"}


def test_ludicrous_hedges_at_the_channels_p90_once_it_has_three_answers(tiered, upstream):
    def timed(tier: str) -> tuple[float, object]:
        started = time.monotonic()
        raw = ask(tiered, "p90", tier=tier)
        return time.monotonic() - started, raw

    # The backup (priority 0, 0.3 s an answer) is measured by a medium request, the quick one
    # by two fast ones (never measured, it is tried first; then it is the faster).
    assert timed("medium")[1].headers["x-tokenmux-channel"] == "fake/p90-backup"
    for _ in range(2):
        assert timed("fast")[1].headers["x-tokenmux-channel"] == "fake/p90-quick"
    try:
        # Two answers on record are not enough: the hedge waits routing.hedge_default_ms.
        upstream.standing["p90-quick"] = "@hold p90-quick"
        elapsed, raw = timed("ludicrous")
        assert raw.headers["x-tokenmux-channel"] == "fake/p90-backup"
        assert raw.headers["x-tokenmux-attempts"] == "2"
        assert elapsed >= HEDGE_DEFAULT_S
        del upstream.standing["p90-quick"]
        assert timed("fast")[1].headers["x-tokenmux-channel"] == "fake/p90-quick"  # the third
        # Now the hedge starts at the quick channel's 90th percentile, a few ms: the backup
        # answers in its 0.3 s, far sooner than the default 1.5 s and the 0.3 s after it.
        upstream.standing["p90-quick"] = "@hold p90-quick"
        elapsed, raw = timed("ludicrous")
        assert raw.headers["x-tokenmux-channel"] == "fake/p90-backup"
        assert raw.headers["x-tokenmux-attempts"] == "2"
        assert 0.3 <= elapsed < HEDGE_DEFAULT_S
    finally:
        upstream.standing.pop("p90-quick", None)
        upstream.release("p90-quick")


def test_slow_tries_the_channels_from_the_cheapest_up(tiered, upstream):
    for tier, expected in [("slow", ["gpt-4.1-nano", "gpt-4o-mini", "gpt-4o"]),
                           ("medium", ["gpt-4o", "gpt-4.1-nano", "gpt-4o-mini"])]:
        response = tiered.post({"model": "priced-trio", "user": f"trio-{tier}",
                                "messages": [{"role": "user", "content": "@fail 500"}]},
                               headers={"X-Tier": tier})
        assert response.status_code == 502  # every channel failed, each tried once
        assert [r.body["model"] for r in upstream.received
                if r.body.get("user") == f"trio-{tier}"] == expected


@pytest.fixture
def breaker(tmp_path: Path, upstream: FakeOpenAI) -> Iterator[Gateway]:
    running = gateway_with(tmp_path, upstream, """\
        models:
          - name: flaky-pair
            channels:
              - {provider: fake, model: flaky, priority: 0}
              - {provider: fake, model: steady, priority: 1}
        """, routing=f"breaker: {{failures: 2, cooldown_ms: {int(COOLDOWN_S * 1000)}}}")
    yield running
    running.stop()
    upstream.standing.pop("flaky", None)


def flaky_times(upstream: FakeOpenAI) -> list[float]:
    return [r.at for r in upstream.received if r.body.get("model") == "flaky"]


def open_the_breaker(breaker: Gateway, upstream: FakeOpenAI, command: str) -> float:
    """Two failures in a row; returns when the upstream saw the second."""
    upstream.standing["flaky"] = command
    before = len(flaky_times(upstream))
    for _ in range(2):  # each request still succeeds, on the other channel
        raw = ask(breaker, "flaky-pair")
        assert raw.headers["x-tokenmux-channel"] == "fake/steady"
        assert raw.headers["x-tokenmux-attempts"] == "2"
    assert len(flaky_times(upstream)) == before + 2
    return flaky_times(upstream)[-1]


def test_a_failing_channel_cools_down_and_is_probed_back_in(breaker, upstream):
    opened = open_the_breaker(breaker, upstream, "@fail 503")
    upstream.standing.pop("flaky")  # it recovers, but nobody asks it until the cooldown ends
    cooling: list[str] = []
    deadline = time.monotonic() + 20
    while True:
        raw = ask(breaker, "flaky-pair")
        if raw.headers["x-tokenmux-channel"] == "fake/flaky":
            break  # the probe, a real request, succeeded
        assert raw.headers["x-tokenmux-attempts"] == "1"  # skipped, not tried and failed over
        cooling.append(raw.headers["x-request-id"])
        assert time.monotonic() < deadline, "no probe within 20 s"
        time.sleep(0.05)
    assert cooling  # requests came during the cooldown, and none went to the channel
    assert flaky_times(upstream)[-1] - opened >= COOLDOWN_S
    assert ask(breaker, "flaky-pair").headers["x-tokenmux-channel"] == "fake/flaky"  # back in


def test_a_failed_probe_cools_the_channel_down_again(breaker, upstream):
    opened = open_the_breaker(breaker, upstream, "@fail 500")
    calls = len(flaky_times(upstream))
    deadline = time.monotonic() + 20
    while len(flaky_times(upstream)) == calls:
        probe = ask(breaker, "flaky-pair")  # until one is the probe; it fails over, unseen
        assert probe.status_code == 200
        assert time.monotonic() < deadline, "no probe within 20 s"
        time.sleep(0.05)
    assert probe.headers["x-tokenmux-attempts"] == "2"
    assert flaky_times(upstream)[-1] - opened >= COOLDOWN_S
    assert ask(breaker, "flaky-pair").headers["x-tokenmux-attempts"] == "1"  # cooling again


def test_a_fallback_has_its_own_timeout(tmp_path, upstream):
    running = gateway_with(tmp_path, upstream, """\
        models:
          - name: primary
            channels: [{provider: fake, model: primary-broken}]
            fallbacks: [{model: backup, timeout: 1.0}]
          - name: backup
            channels: [{provider: fake, model: backup-stalls}]
        """, routing="max_attempts: 2")
    upstream.standing.update({"primary-broken": "@fail 500", "backup-stalls": "@stall 30"})
    try:
        started = time.monotonic()
        response = running.post({"model": "primary", "messages": HELLO})
        assert response.status_code == 504  # the last attempt timed out: the fallback's 1 s
        assert time.monotonic() - started < 8
        assert response.json()["error"]["code"] == "upstream_timeout"
        row = running.wait_row(response.headers["x-request-id"])
        assert (row["upstream_model"], row["attempts"]) == ("backup-stalls", 2)
    finally:
        running.stop()
        for model in ("primary-broken", "backup-stalls"):
            upstream.standing.pop(model, None)
