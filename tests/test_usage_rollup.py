"""The usage rollup behind the console's summaries: past days read from it give the very figures
their rows give, a row that arrives late for a rolled-up day counts at once, a rollup raced by
such a row is not kept, and a running gateway rolls up the days it finds marked.

Rows are written through the ledger's own store (the writer's code, which marks their days),
dated in past days, on the suite's database (SQLite, or PostgreSQL with
TOKENMUX_TEST_DATABASE=postgresql)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx2 as httpx
import sqlalchemy as sa
from alembic import command

from tests.conftest import ADMIN_KEY, Gateway, config_for, database_for, wait_until
from tests.fakes.openai_upstream import FakeOpenAI
from tokenmux.admin import rollup, usage
from tokenmux.db import connect
from tokenmux.db.engine import alembic_config
from tokenmux.db.schema import usage as usage_table
from tokenmux.db.schema import usage_dirty, usage_rollup
from tokenmux.ledger.lines import DeadLetters
from tokenmux.ledger.store import Store

NOW = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)
DAY1 = datetime(2026, 11, 16, tzinfo=UTC)  # three past days: the 16th, 17th and 18th
DAYS = [DAY1 + timedelta(days=i) for i in range(3)]
GROUPINGS = [[], ["day"], ["hour"], ["key"], ["model"], ["provider"], ["user"], ["door"],
             ["status"], ["error"], ["day", "key"], ["day", "model"], ["hour", "model"],
             ["hour", "key"], ["hour", "user"],
             ["key", "model"], ["status", "error"], ["upstream_model"]]
FILTERS = [
    {}, {"start": DAY1, "end": DAY1 + timedelta(days=3)},
    # part-days at both ends
    {"start": DAY1 + timedelta(hours=7, minutes=13), "end": DAY1 + timedelta(days=2, hours=5)},
    {"start": DAY1 + timedelta(days=1)}, {"end": DAY1 + timedelta(days=2)},
    {"key": "key_b"}, {"model": "model-1"}, {"provider": "prov-0"}, {"user": "user-3"},
    {"door": "messages"}, {"status": "error"}, {"status": "5xx"}, {"status": "429"},
    {"key": "key_a", "model": "model-2"}, {"request_id": "req-7"},
]


def record(i: int, at: datetime, **changes: Any) -> dict[str, Any]:
    """A request's row as the ledger's writer gets it, its figures varied by I."""
    failed = i % 7 == 0
    row = {
        "id": f"row-{at:%d%H%M%S}-{i}", "created_at": at, "request_id": f"req-{i}",
        "key_id": f"key_{'abc'[i % 3]}", "key_name": f"team-{'abc'[i % 3]}",
        "end_user": f"user-{i % 5}", "requested_model": f"model-{i % 4}",
        "model": f"model-{i % 4}", "provider": f"prov-{i % 2}",
        "upstream_model": f"model-{i % 4}-up", "attempts": 1, "tier": "medium", "queue_ms": 0.0,
        "stream": i % 2 == 1, "status": (502 if i % 14 == 0 else 429) if failed else 200,
        "error_code": ("bad_gateway" if i % 14 == 0 else "rate_limited") if failed else None,
        "prompt_tokens": 100 + i, "completion_tokens": 10 + i % 50, "cached_tokens": i % 3,
        "reasoning_tokens": i % 4, "usage_source": "upstream",
        "latency_ms": 40.0 + (i * 37) % 2500, "ttft_ms": 20.0 + (i * 11) % 300 if i % 2 else None,
        "dropped_params": None, "kind": None, "parent_id": None, "tokens_before": None,
        "tokens_after": None, "replay_of": None, "door": ("chat", "messages", "responses")[i % 3],
        "instance": "test", "cost_usd": Decimal(100 + i) / Decimal(10**6), "_pricing": None}
    return row | changes


def day_of_rows(day: datetime, count: int = 60) -> list[dict[str, Any]]:
    rows = [record(i, day + timedelta(minutes=23 * i + 1)) for i in range(count)]
    # A summariser's call (tokens and cost, no request) and a replay (a request, no cost).
    rows.append(record(1000, day + timedelta(hours=3), kind="compression", parent_id="x"))
    rows.append(record(1002, day + timedelta(hours=4), replay_of=rows[0]["id"],
                       usage_source="replay", cost_usd=Decimal(0)))
    return rows


def summaries(engine: sa.Engine) -> dict[tuple[str, str], Any]:
    found = {}
    for filters in FILTERS:
        for group_by in GROUPINGS:
            found[(repr(filters), repr(group_by))] = usage.summary(
                engine, usage.Filters(**filters), group_by, now=NOW)
    return found


def marked(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(usage_dirty.c.day)).scalars())


def test_past_days_read_from_the_rollup_give_the_figures_of_their_rows(engine, store):
    for day in DAYS:
        assert store.write(day_of_rows(day)) == 62
    assert marked(engine) == [rollup.day_of(day) for day in DAYS]
    from_rows = summaries(engine)  # every day marked: every summary reads the rows
    assert rollup.Rollup(engine).catch_up(now=NOW) == 3
    assert marked(engine) == []
    with engine.connect() as conn:
        kept = conn.execute(sa.select(usage_rollup.c.grain, usage_rollup.c.dims,
                                      sa.func.count()).group_by(
            usage_rollup.c.grain, usage_rollup.c.dims)).all()
    # Per day: 24 hours (those with rows), and each split.
    assert {(grain, dims) for grain, dims, _ in kept} == set(rollup.BUILDS)
    from_rollup = summaries(engine)
    for query, figures in from_rows.items():
        assert from_rollup[query] == figures, query
    # The figures themselves, for one of them: 3 days of 61 requests (60 and a replay).
    groups, totals = from_rollup[(repr({}), repr(["day"]))]
    assert [g["day"] for g in groups] == ["2026-11-16", "2026-11-17", "2026-11-18"]
    assert [g["requests"] for g in groups] == [61, 61, 61]
    assert totals["errors"] == 3 * 9
    # Costs: each day's 60 requests and its summariser's call; the replay costs nothing.
    day_cost = sum(Decimal(100 + i) for i in [*range(60), 1000]) / Decimal(10**6)
    assert totals["cost_usd"] == 3 * day_cost
    assert totals["prompt_tokens"] == 3 * sum(100 + i for i in [*range(60), 1000])


def test_a_summary_of_rolled_up_days_reads_the_rollup_not_the_rows(engine, store):
    store.write(day_of_rows(DAYS[0]))
    rollup.Rollup(engine).catch_up(now=NOW)
    whole = usage.Filters(start=DAYS[0], end=DAYS[0] + timedelta(days=1))
    before = usage.summary(engine, whole, ["model"], now=NOW)
    with engine.begin() as conn:  # the rows go, the day is not marked: only the rollup has it
        conn.execute(sa.text("DELETE FROM usage"))
    assert usage.summary(engine, whole, ["model"], now=NOW) == before
    # A part-day is read from the rows, now gone.
    part = usage.Filters(start=DAYS[0] + timedelta(hours=1), end=DAYS[0] + timedelta(days=1))
    assert usage.summary(engine, part, ["model"], now=NOW)[1]["requests"] == 0
    # A dimension no split holds is read from the rows, too.
    assert usage.summary(engine, whole, ["upstream_model"], now=NOW)[1]["requests"] == 0


def test_today_is_read_from_the_rows_and_never_rolled_up(engine, store):
    today = NOW.replace(hour=0, minute=0)
    store.write([record(i, today + timedelta(minutes=i)) for i in range(10)])
    assert rollup.Rollup(engine).catch_up(now=NOW) == 0
    assert marked(engine) == [rollup.day_of(today)]
    _, totals = usage.summary(engine, usage.Filters(), ["day"], now=NOW)
    assert totals["requests"] == 10
    # Once the day is over, it is rolled up.
    assert rollup.Rollup(engine).catch_up(now=NOW + timedelta(days=1)) == 1
    assert usage.summary(engine, usage.Filters(), ["day"], now=NOW + timedelta(days=1)
                         )[1]["requests"] == 10


def test_a_row_that_arrives_late_for_a_rolled_up_day_counts_at_once(engine, store):
    store.write(day_of_rows(DAYS[1]))
    rollup.Rollup(engine).catch_up(now=NOW)
    late = record(77, DAYS[1] + timedelta(hours=22), id="late-row", prompt_tokens=5000)
    store.write([late])  # a spool replayed after an outage, say
    assert marked(engine) == [rollup.day_of(DAYS[1])]
    _, totals = usage.summary(engine, usage.Filters(), ["model"], now=NOW)
    assert totals["requests"] == 62
    assert rollup.Rollup(engine).catch_up(now=NOW) == 1
    assert usage.summary(engine, usage.Filters(), ["model"], now=NOW)[1] == totals


def test_a_rollup_raced_by_a_late_row_is_not_kept(engine, store, monkeypatch):
    store.write(day_of_rows(DAYS[2]))
    gather = rollup.from_rows
    calls = []

    def gather_while_a_row_arrives(conn: Any, where: Any, into: Any) -> None:
        gather(conn, where, into)
        if not calls:  # the writer commits a row of the day while the figures are gathered
            store.write([record(88, DAYS[2] + timedelta(hours=5), id="racing-row")])
        calls.append(1)

    monkeypatch.setattr(rollup, "from_rows", gather_while_a_row_arrives)
    assert rollup.build(engine, rollup.day_of(DAYS[2])) is False
    assert marked(engine) == [rollup.day_of(DAYS[2])]  # still marked: its rows answer
    assert usage.summary(engine, usage.Filters(), [], now=NOW)[1]["requests"] == 62
    monkeypatch.setattr(rollup, "from_rows", gather)
    assert rollup.build(engine, rollup.day_of(DAYS[2])) is True
    assert marked(engine) == []
    assert usage.summary(engine, usage.Filters(), [], now=NOW)[1]["requests"] == 62


def test_rollups_of_one_day_at_once_keep_one_set_of_figures(engine, store):
    store.write(day_of_rows(DAYS[0]))
    day = rollup.day_of(DAYS[0])
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(rollup.build(engine, day)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # One claims the day's mark; the others find it gone or changed, and keep nothing.
    assert sorted(results) == [False, False, False, True]
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(usage_rollup).where(
            usage_rollup.c.grain == "day", usage_rollup.c.dims == "")).scalar()
    assert count == 1  # one day row, however many rollups ran
    assert usage.summary(engine, usage.Filters(), [], now=NOW)[1]["requests"] == 61


def test_the_migration_marks_every_day_that_has_rows(tmp_path):
    database = database_for(tmp_path)
    engine = connect(database, migrate=False)
    cfg = alembic_config()
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0012")
    with engine.begin() as conn:
        for at in (DAYS[0] + timedelta(hours=5), DAYS[2] + timedelta(hours=23, minutes=59)):
            row = {k: v for k, v in record(1, at).items() if not k.startswith("_")}
            conn.execute(usage_table.insert(), row | {"id": f"old-{at:%d}"})
    engine.dispose()
    engine = connect(database)  # the newest schema
    assert marked(engine) == [rollup.day_of(day) for day in DAYS]  # the day between, too
    assert rollup.Rollup(engine).catch_up(now=NOW) == 3
    _, totals = usage.summary(engine, usage.Filters(), ["day"], now=NOW)
    assert totals["requests"] == 2
    engine.dispose()


def test_a_running_gateway_rolls_up_the_days_it_finds_marked(tmp_path, upstream: FakeOpenAI):
    gateway = Gateway(tmp_path, config_for(tmp_path, upstream))
    engine = connect(gateway.database)
    Store(engine, DeadLetters(tmp_path / "dead.jsonl")).write(
        [r for day in DAYS for r in day_of_rows(day)])
    gateway.start()
    try:
        gateway.client().chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "@usage 1000 500 0"}])
        assert wait_until(lambda: marked(engine) == [rollup.day_of(datetime.now(UTC))], 30)
        health = httpx.get(gateway.base_url + "/health", timeout=10).json()
        assert health["rollup"] == "ok"
        assert wait_until(lambda: len(gateway.rows()) == 187, 10)
        today = f"{datetime.now(UTC):%Y-%m-%d}"
        answer = httpx.get(gateway.base_url + "/admin/v1/usage/summary",
                           params={"group_by": "day", "from": DAY1.isoformat()},
                           headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        days = {g["day"]: g for g in answer.json()["data"]}
        assert [days[f"{d:%Y-%m-%d}"]["requests"] for d in DAYS] == [61, 61, 61]
        assert days[today]["requests"] == 1
        assert days[today]["prompt_tokens"] == 1000
        assert days[today]["cost_usd"] == "0.002"  # 1000 in at $1/M, 500 out at $2/M
    finally:
        gateway.stop()
        engine.dispose()
