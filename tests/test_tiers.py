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
        """, routing="hedge_default_ms: 300")
    upstream.standing.update({"tortoise": "@stall 0.4", "hedge-tortoise": "@stall 5",
                              "one-at-a-time": "@stall 0.8", "spill-first": "@stall 0.8"})
    yield running
    running.stop()


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
    raw = ask(tiered, "hedged", tier="ludicrous", user="hedge-1")
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
    # Unmeasured, the channel has the configured 300 ms to answer; it needs a few.
    assert raw.headers["x-tokenmux-attempts"] == "1"
    assert [r.body["model"] for r in upstream.received if r.body.get("user") == "no-hedge"] == [
        "fresh-a"]


def test_a_saturated_channel_admits_by_tier_then_deadline(tiered, upstream):
    async def scenario() -> list[str]:
        client = tiered.async_client(timeout=30)
        finished: list[str] = []

        async def one(name: str, tier: str, timeout_ms: int = 60_000) -> None:
            raw = await client.chat.completions.with_raw_response.create(
                model="gated", messages=HELLO, user=name,
                extra_headers={"X-Tier": tier, "X-Timeout": str(timeout_ms)})
            assert raw.headers["x-tokenmux-tier"] == tier
            finished.append(name)

        holder = asyncio.create_task(one("holder", "medium"))
        await asyncio.sleep(0.3)  # the holder has the only slot; the rest queue behind it
        queued = [asyncio.create_task(one("slow", "slow"))]
        await asyncio.sleep(0.1)
        queued.append(asyncio.create_task(one("medium-late", "medium", 50_000)))
        await asyncio.sleep(0.1)
        queued.append(asyncio.create_task(one("fast", "fast")))
        await asyncio.sleep(0.1)
        queued.append(asyncio.create_task(one("medium-urgent", "medium", 20_000)))
        await asyncio.gather(holder, *queued)
        await client.close()
        return finished

    finished = asyncio.run(scenario())
    # Tier first; within a tier the nearer deadline, though it arrived last.
    assert finished == ["holder", "fast", "medium-urgent", "medium-late", "slow"]
    order = [r.body["user"] for r in upstream.received if r.body.get("model") == "one-at-a-time"]
    assert order[-5:] == finished
    assert wait_until(lambda: len(tiered.rows(model="gated")) == 5)
    rows = {r["end_user"]: r for r in tiered.rows(model="gated")}
    assert rows["holder"]["queue_ms"] < 200
    assert rows["slow"]["queue_ms"] >= 4 * 700  # waited out four others of 0.8 s each
    assert rows["fast"]["queue_ms"] >= 150  # arrived 0.5 s into the holder's 0.8 s


def test_a_saturated_channel_spills_over_unless_the_tier_is_slow(tiered):
    async def scenario() -> dict[str, str]:
        client = tiered.async_client(timeout=30)

        async def one(name: str, tier: str) -> tuple[str, str]:
            raw = await client.chat.completions.with_raw_response.create(
                model="spill", messages=HELLO, user=name, extra_headers={"X-Tier": tier})
            return name, raw.headers["x-tokenmux-channel"]

        holder = asyncio.create_task(one("holder", "medium"))
        await asyncio.sleep(0.3)
        others = await asyncio.gather(one("medium", "medium"), one("slow", "slow"))
        served = dict([await holder, *others])
        await client.close()
        return served

    served = asyncio.run(scenario())
    assert served == {"holder": "fake/spill-first", "medium": "fake/spill-second",
                      "slow": "fake/spill-first"}


@pytest.fixture
def breaker(tmp_path: Path, upstream: FakeOpenAI) -> Iterator[Gateway]:
    running = gateway_with(tmp_path, upstream, """\
        models:
          - name: flaky-pair
            channels:
              - {provider: fake, model: flaky, priority: 0}
              - {provider: fake, model: steady, priority: 1}
        """, routing="breaker: {failures: 2, cooldown_ms: 1500}")
    yield running
    running.stop()
    upstream.standing.pop("flaky", None)


def test_a_failing_channel_cools_down_and_is_probed_back_in(breaker, upstream):
    upstream.standing["flaky"] = "@fail 503"

    def flaky_calls() -> int:
        return sum(1 for r in upstream.received if r.body.get("model") == "flaky")

    before = flaky_calls()
    for _ in range(2):  # two failures in a row open the breaker; each request still succeeds
        raw = ask(breaker, "flaky-pair")
        assert raw.headers["x-tokenmux-channel"] == "fake/steady"
        assert raw.headers["x-tokenmux-attempts"] == "2"
    assert flaky_calls() == before + 2
    for _ in range(3):  # cooling down: skipped while the other is healthy
        raw = ask(breaker, "flaky-pair")
        assert raw.headers["x-tokenmux-attempts"] == "1"
    assert flaky_calls() == before + 2
    upstream.standing.pop("flaky")  # it recovers
    time.sleep(1.7)
    raw = ask(breaker, "flaky-pair")  # the probe, a real request, succeeds: back in rotation
    assert raw.headers["x-tokenmux-channel"] == "fake/flaky"
    assert ask(breaker, "flaky-pair").headers["x-tokenmux-channel"] == "fake/flaky"


def test_a_failed_probe_cools_the_channel_down_again(breaker, upstream):
    upstream.standing["flaky"] = "@fail 500"
    for _ in range(2):
        ask(breaker, "flaky-pair")
    time.sleep(1.7)
    probe = ask(breaker, "flaky-pair")  # the probe fails over, unseen
    assert probe.headers["x-tokenmux-attempts"] == "2"
    assert ask(breaker, "flaky-pair").headers["x-tokenmux-attempts"] == "1"


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
