"""Per-key spending budgets: a request reserves its worst-case cost, is charged its real cost,
and a key over its budget gets a 429 `insufficient_quota` the SDKs do not retry; in process and
shared by instances through Redis.

The suite's fake model costs 1.0 USD per million prompt tokens and 2.0 per million completion
tokens; `@usage P C K` makes the fake upstream report those counts, so every cost is known.
"""

from __future__ import annotations

import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import redis

from tests.conftest import Gateway, config_for, wait_until
from tests.fakes.openai_upstream import FakeOpenAI
from tests.test_shared_limits import (  # noqa: F401
    REDIS_URL,
    Fleet,
    config,
    database,
    health,
    rows,
)
from tokenmux.budgets import period_of

REMAINING = "X-TokenMux-Budget-Remaining"


def cost(prompt: int, completion: int) -> Decimal:
    return (Decimal(prompt) * 1 + Decimal(completion) * 2) / 1_000_000


def create(gateway: Gateway, *args: str) -> tuple[str, str, str]:
    """A new key: its id, name and secret."""
    name = f"b-{uuid.uuid4().hex[:8]}"
    created = gateway.cli("keys", "create", "--name", name, *args)
    key_id = re.search(r"Created key (key_\w+)", created.stderr)
    assert key_id is not None, created.stderr
    return key_id.group(1), name, created.stdout.strip().splitlines()[-1]


def ask(gateway: Gateway, key: str, content: str, marker: str = "", **extra: Any) -> Any:
    """CONTENT as the user's message; MARKER, if any, in a system message before it, for
    counting what reached the upstream."""
    messages = [{"role": "system", "content": marker}] if marker else []
    messages.append({"role": "user", "content": content})
    body = {"model": "fake-model", "messages": messages, **extra}
    return gateway.post(body, key=key, headers={"Connection": "close"})


def settled(gateway: Gateway, name: str, count: int) -> list[dict[str, Any]]:
    assert wait_until(lambda: len(gateway.rows(key_name=name)) == count, timeout=20)
    return gateway.rows(key_name=name)


@pytest.fixture
def budgeted(tmp_path: Path, upstream: FakeOpenAI) -> Any:
    gateway = Gateway(tmp_path, config_for(tmp_path, upstream)).start()
    yield gateway
    if gateway.process is not None and gateway.process.poll() is None:
        gateway.stop()


def test_the_header_is_exact_and_a_key_over_budget_gets_a_429_the_sdk_does_not_retry(
        budgeted: Gateway, upstream: FakeOpenAI) -> None:
    _, name, key = create(budgeted, "--budget", "0.01")
    marker = uuid.uuid4().hex
    first = ask(budgeted, key, "@usage 1000 2000 0", marker, max_tokens=2000)
    assert first.status_code == 200, first.text
    assert Decimal(first.headers[REMAINING]) == Decimal("0.01") - cost(1000, 2000)  # 0.005
    second = ask(budgeted, key, "@usage 1000 2000 0", marker, max_tokens=2000)
    assert second.headers[REMAINING] == "0"
    # The official SDK, with its default of two retries: it raises at once.
    client = openai.OpenAI(base_url=budgeted.base_url + "/v1", api_key=key)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "system", "content": marker},
                                          {"role": "user", "content": "@usage 1 1 0"}])
    assert refused.value.code == "insufficient_quota"
    assert refused.value.type == "insufficient_quota"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert refused.value.response.headers[REMAINING] == "0"
    # One request reached the gateway (one row), none the upstream.
    ledger = settled(budgeted, name, 3)
    assert sorted(r["status"] for r in ledger) == [200, 200, 429]
    assert sum(marker in str(seen.body) for seen in upstream.received) == 2
    assert sum(Decimal(str(r["cost_usd"])) for r in ledger if r["cost_usd"]) == Decimal("0.01")


def test_a_stream_shows_its_reservation_and_is_charged_its_real_cost(budgeted: Gateway) -> None:
    _, name, key = create(budgeted, "--budget", "0.01")
    with budgeted.client(key).chat.completions.with_streaming_response.create(
            model="fake-model", messages=[{"role": "user", "content": "@usage 1000 2000 0"}],
            max_tokens=2000, stream=True) as stream:
        # Sent before the cost is known: the budget less the reservation, 2000 tokens at the
        # output price and the prompt's estimate at the input price.
        shown = Decimal(stream.headers[REMAINING])
        assert Decimal("0.01") - cost(100, 2000) < shown < Decimal("0.01") - cost(0, 2000)
        assert sum(1 for _ in stream.iter_lines()) > 1
    [row] = settled(budgeted, name, 1)
    assert Decimal(str(row["cost_usd"])) == cost(1000, 2000)
    after = ask(budgeted, key, "@usage 0 1 0")
    assert Decimal(after.headers[REMAINING]) == Decimal("0.01") - cost(1000, 2000) - cost(0, 1)


def test_a_key_without_a_budget_gets_no_budget_header(budgeted: Gateway) -> None:
    _, _, key = create(budgeted)
    answer = ask(budgeted, key, "@usage 1000 2000 0")
    assert answer.status_code == 200
    assert REMAINING not in answer.headers


def test_concurrent_requests_never_overshoot_by_more_than_one_reservation(
        budgeted: Gateway) -> None:
    _, name, key = create(budgeted, "--budget", "0.01")
    # Each costs 10 prompt and 200 completion tokens (0.00041 USD) and reserves more: its
    # prompt's estimate and its max_tokens at the output price.
    content = "@usage 10 200 0"
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: ask(budgeted, key, content, max_tokens=200),
                                range(60)))
    statuses = [a.status_code for a in answers]
    assert set(statuses) == {200, 429}
    admitted = statuses.count(200)
    spent = admitted * cost(10, 200)
    # One reservation (35-odd prompt tokens and 200 completion tokens: under 0.0005) at most
    # over; without the reservations, the 16 at once would all have gone through.
    assert spent <= Decimal("0.01") + Decimal("0.0005")
    assert spent >= Decimal("0.01") - Decimal("0.0005") * 16  # the rest were held in flight
    for refused in (a for a in answers if a.status_code == 429):
        assert refused.json()["error"]["code"] == "insufficient_quota"
        assert refused.headers["x-should-retry"] == "false"
    # The ledger and the counter agree: the next refusal says what is left, to the tick.
    ledger = settled(budgeted, name, 60)
    total = sum(Decimal(str(r["cost_usd"])) for r in ledger if r["status"] == 200)
    assert total == spent
    after = ask(budgeted, key, content)
    assert after.status_code == 429
    assert Decimal(after.headers[REMAINING]) == Decimal("0.01") - total


def test_a_restart_keeps_what_was_spent_and_keys_list_shows_it(budgeted: Gateway) -> None:
    key_id, name, key = create(budgeted, "--budget", "1", "--budget-period", "day")
    assert ask(budgeted, key, "@usage 1000 2000 0").status_code == 200
    settled(budgeted, name, 1)
    budgeted.stop()
    budgeted.start()
    again = ask(budgeted, key, "@usage 3000 1000 0")
    assert Decimal(again.headers[REMAINING]) == 1 - cost(1000, 2000) - cost(3000, 1000)
    settled(budgeted, name, 2)
    listed = orjson.loads(budgeted.cli("keys", "list", "--json").stdout)
    mine = next(k for k in listed if k["id"] == key_id)
    assert (mine["budget_usd"], mine["budget_period"], mine["spent_usd"]) == ("1", "day", "0.01")
    table = budgeted.cli("keys", "list").stdout
    assert "$1 per day ($0.01)" in next(line for line in table.splitlines() if key_id in line)


def test_a_period_without_a_budget_is_refused(budgeted: Gateway) -> None:
    refused = budgeted.cli("keys", "create", "--name", "x", "--budget-period", "day",
                           check=False)
    assert refused.returncode != 0
    assert "--budget-period" in refused.stderr


def test_a_day_begins_at_midnight_utc_and_a_month_on_its_first() -> None:
    late = datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert period_of("day", late) == ("2026-12-31", datetime(2026, 12, 31, tzinfo=UTC))
    assert period_of("day", late + timedelta(microseconds=1)) == (
        "2027-01-01", datetime(2027, 1, 1, tzinfo=UTC))
    # 01:30 in UTC+2 is 23:30 of the day before in UTC.
    east = datetime(2026, 6, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert period_of("day", east) == ("2026-05-31", datetime(2026, 5, 31, tzinfo=UTC))
    assert period_of("month", east) == ("2026-05", datetime(2026, 5, 1, tzinfo=UTC))
    assert period_of("month", late) == ("2026-12", datetime(2026, 12, 1, tzinfo=UTC))
    assert period_of("total", late) == ("total", None)


def test_three_instances_on_redis_share_one_budget(tmp_path: Path, upstream: FakeOpenAI,
                                                   database: str) -> None:  # noqa: F811
    text = config(database, upstream, REDIS_URL)
    prefix = re.search(r"redis_prefix: '([^']+)'", text)
    assert prefix is not None
    fleet = Fleet(tmp_path, text, 3).start()
    try:
        key_id, name, key = create(fleet.gateways[0], "--budget", "0.01")
        usage = {"messages": [{"role": "user", "content": "@usage 10 200 0"}],
                 "max_tokens": 200}
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(lambda n: fleet.ask(n, key, **usage), range(90)))
        statuses = [a.status_code for a in answers]
        # Redis answered all along (else budgets were held in process, as documented).
        states = [health(g)["redis"] for g in fleet.gateways]
        assert states == ["ok"] * 3, (states, [g.log_so_far()[-2000:] for g in fleet.gateways])
        assert set(statuses) == {200, 429}, statuses
        spent = statuses.count(200) * cost(10, 200)
        # Instances on their own would each have spent the budget: three times as much.
        assert spent <= Decimal("0.01") + Decimal("0.0005"), statuses
        assert all(a.headers["x-should-retry"] == "false" for a in answers
                   if a.status_code == 429)
        assert wait_until(lambda: len(rows(database, name)) == 90, timeout=30)
        total = sum(Decimal(r["cost_usd"]) for r in rows(database, name) if r["cost_usd"])
        assert total == spent
        # Redis's counter is the ledger's sum, to the tick (1e-10 USD).
        store = redis.Redis.from_url(REDIS_URL)
        try:
            assert wait_until(lambda: Decimal(int(store.get(
                f"{prefix.group(1)}budget:{key_id}:total") or 0)) / 10**10 == total, timeout=30)
        finally:
            store.close()
        after = fleet.ask(1, key, **usage)
        assert after.status_code == 429
        assert Decimal(after.headers[REMAINING]) == Decimal("0.01") - total
    finally:
        fleet.stop()
