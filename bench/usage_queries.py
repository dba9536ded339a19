"""How fast the admin API's usage queries answer over a month of a million ledger rows.

    .venv/bin/python bench/usage_queries.py [--rows 1000000] [--postgres URL] [--sqlite-only]

Fills a fresh database (a temporary SQLite file; on PostgreSQL a database made for the run and
dropped after), migrated to the newest schema so the indexes are the product's, with ROWS usage
rows spread evenly over 30 days, 50 keys, 8 models on 4 providers, 500 end users and the four
doors. Rows made so bypass the ledger's writer, so the run marks their days as the writer
would and times the rollup catching up on them (admin/rollup.py). Then runs each query the
console makes (admin/usage.py) a few times and prints the best and median wall time of each,
in milliseconds; `--no-rollup` leaves the days marked, so every summary reads the rows.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, text

from tokenmux.admin import rollup, usage
from tokenmux.db import connect
from tokenmux.db.schema import usage_dirty

DAYS = 30
RUNS = 3
END = datetime(2026, 12, 1, tzinfo=UTC)
START = END - timedelta(days=DAYS)


# The rows are made by the database itself (a recursive CTE on SQLite, generate_series on
# PostgreSQL), so a million of them take seconds, not the minutes a client-side insert would.
# Columns: key (50), model (8, each served by one of 4 providers), end user (500), door (4),
# 3% failures, latency around 400 ms and TTFT around 150 ms (half the requests stream).
SQLITE_FILL = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :rows - 1)
INSERT INTO usage (id, created_at, request_id, key_id, key_name, end_user, requested_model,
                   model, provider, upstream_model, attempts, tier, queue_ms, stream, status,
                   error_code, prompt_tokens, completion_tokens, cached_tokens,
                   reasoning_tokens, usage_source, cost_usd, latency_ms, ttft_ms, door)
SELECT printf('row_%012d', i),
       strftime('%Y-%m-%d %H:%M:%S', :start, '+' || (i * :step / 1000000) || ' seconds')
         || printf('.%06d', (i * :step) % 1000000),
       printf('req_%012d', i), printf('key_%04d', i * 7 % 50), printf('team-%d', i * 7 % 50),
       printf('user-%d', i * 13 % 500), printf('model-%d', i % 8), printf('model-%d', i % 8),
       printf('provider-%d', i % 8 % 4), printf('model-%d-up', i % 8), 1, 'medium', 0,
       i % 2, CASE WHEN i % 33 = 0 THEN 502 ELSE 200 END,
       CASE WHEN i % 33 = 0 THEN 'bad_gateway' END,
       10 + i * 31 % 3990, 1 + i * 17 % 1000, 0, 0, 'upstream',
       (10 + i * 31 % 3990 + 2 * (1 + i * 17 % 1000)) / 1000000.0,
       100 + abs(random()) % 900 + (abs(random()) % 1000) / 1000.0,
       CASE WHEN i % 2 = 1 THEN 50 + abs(random()) % 250 END,
       CASE i % 10 WHEN 0 THEN 'messages' WHEN 1 THEN 'responses' WHEN 2 THEN 'embeddings'
                   ELSE 'chat' END
FROM n
"""
POSTGRES_FILL = """
INSERT INTO usage (id, created_at, request_id, key_id, key_name, end_user, requested_model,
                   model, provider, upstream_model, attempts, tier, queue_ms, stream, status,
                   error_code, prompt_tokens, completion_tokens, cached_tokens,
                   reasoning_tokens, usage_source, cost_usd, latency_ms, ttft_ms, door)
SELECT 'row_' || lpad(i::text, 12, '0'),
       CAST(:start AS timestamptz) + i * (:step / 1000000.0) * interval '1 second',
       'req_' || lpad(i::text, 12, '0'), 'key_' || lpad((i * 7 % 50)::text, 4, '0'),
       'team-' || (i * 7 % 50), 'user-' || (i * 13 % 500), 'model-' || (i % 8),
       'model-' || (i % 8), 'provider-' || (i % 8 % 4), 'model-' || (i % 8) || '-up', 1,
       'medium', 0, i % 2 = 1, CASE WHEN i % 33 = 0 THEN 502 ELSE 200 END,
       CASE WHEN i % 33 = 0 THEN 'bad_gateway' END,
       10 + i * 31 % 3990, 1 + i * 17 % 1000, 0, 0, 'upstream',
       (10 + i * 31 % 3990 + 2 * (1 + i * 17 % 1000)) / 1000000.0,
       100 + random() * 900, CASE WHEN i % 2 = 1 THEN 50 + random() * 250 END,
       CASE i % 10 WHEN 0 THEN 'messages' WHEN 1 THEN 'responses' WHEN 2 THEN 'embeddings'
                   ELSE 'chat' END
FROM generate_series(0, :rows - 1) AS i
"""


def fill(engine: Engine, count: int) -> float:
    started = time.perf_counter()
    step = int((END - START).total_seconds() * 1_000_000 / count)  # microseconds apart
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        conn.execute(text(SQLITE_FILL if sqlite else POSTGRES_FILL),
                     {"rows": count, "step": step,
                      "start": START.strftime("%Y-%m-%d %H:%M:%S") if sqlite
                      else START.isoformat()})
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE" if sqlite else "ANALYZE usage")
        days = range(rollup.day_of(START), rollup.day_of(END))
        conn.execute(usage_dirty.insert(), [{"day": day, "mark": random.getrandbits(62)}
                                            for day in days])
    return time.perf_counter() - started


def roll_up(engine: Engine) -> tuple[int, float]:
    started = time.perf_counter()
    built = rollup.Rollup(engine).catch_up(now=END)
    return built, time.perf_counter() - started


def queries() -> list[tuple[str, Callable[[Engine], Any]]]:
    month = usage.Filters(start=START, end=END)
    week = usage.Filters(start=END - timedelta(days=7), end=END)
    key = usage.Filters(start=START, end=END, key="key_0007")
    # A range the console asks for: from a moment 30 days ago to now, part-days at both ends.
    ragged = usage.Filters(start=START + timedelta(hours=13, minutes=37),
                           end=END - timedelta(hours=10, minutes=23))
    day = usage.Filters(start=END - timedelta(days=1), end=END)
    return [
        ("rows, newest page of the month", lambda e: usage.rows(e, month, 100)),
        ("rows, one key, the month", lambda e: usage.rows(e, key, 100)),
        ("rows, one end user", lambda e: usage.rows(
            e, usage.Filters(start=START, end=END, user="user-42"), 100)),
        ("rows, one provider, errors", lambda e: usage.rows(
            e, usage.Filters(start=START, end=END, provider="provider-2", status="error"), 100)),
        ("rows, one model", lambda e: usage.rows(
            e, usage.Filters(start=START, end=END, model="model-3"), 100)),
        ("rows, by request id", lambda e: usage.rows(
            e, usage.Filters(request_id="req_000000500000"), 100)),
        ("rows, tenth page of one key", lambda e: _pages(e, key, 10)),
        ("summary, one key by day, the month", lambda e: usage.summary(e, key, ["day"])),
        ("summary, one key by model, the month", lambda e: usage.summary(e, key, ["model"])),
        ("summary, everything by day, a week", lambda e: usage.summary(e, week, ["day"])),
        ("summary, everything by day, the month", lambda e: usage.summary(e, month, ["day"])),
        ("summary, everything by model, the month",
         lambda e: usage.summary(e, month, ["model"])),
        ("summary, everything by key, the month", lambda e: usage.summary(e, month, ["key"])),
        ("summary, everything by end user, the month",
         lambda e: usage.summary(e, month, ["user"])),
        ("summary, errors by code, the month", lambda e: usage.summary(
            e, usage.Filters(start=START, end=END, status="error"), ["error"])),
        ("summary, everything by hour, the last day",
         lambda e: usage.summary(e, day, ["hour"])),
        ("summary, by hour and model, the month",
         lambda e: usage.summary(e, month, ["hour", "model"])),
        ("summary, one key by hour, a week", lambda e: usage.summary(
            e, usage.Filters(start=END - timedelta(days=7), end=END, key="key_0007"), ["hour"])),
        ("summary, by day, 30 days to a part-day", lambda e: usage.summary(e, ragged, ["day"])),
        ("summary, by model, 30 days to a part-day",
         lambda e: usage.summary(e, ragged, ["model"])),
    ]


def _pages(engine: Engine, filters: usage.Filters, pages: int) -> None:
    cursor = None
    for _ in range(pages):
        _, cursor = usage.rows(engine, filters, 100, cursor)


def measure(engine: Engine, now_rolled: bool) -> None:
    if now_rolled:
        built, seconds = roll_up(engine)
        print(f"  the rollup of {built} days built in {seconds:.1f} s")
    for name, query in queries():
        times = []
        for _ in range(RUNS):
            started = time.perf_counter()
            query(engine)
            times.append((time.perf_counter() - started) * 1000)
        print(f"  {name:<42} best {min(times):8.1f} ms   median {statistics.median(times):8.1f}"
              " ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--no-rollup", action="store_true",
                        help="summaries from the rows alone, as before the rollup")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        engine = connect(str(Path(directory) / "bench.db"))
        print(f"SQLite: {args.rows} rows filled in {fill(engine, args.rows):.0f} s")
        measure(engine, not args.no_rollup)
        engine.dispose()
    if args.sqlite_only:
        return
    name = f"tm_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        engine = connect(args.postgres.rsplit("/", 1)[0] + "/" + name)
        print(f"PostgreSQL: {args.rows} rows filled in {fill(engine, args.rows):.0f} s")
        measure(engine, not args.no_rollup)
        engine.dispose()
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
