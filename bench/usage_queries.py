"""How fast the admin API's usage queries answer over a month of a million ledger rows.

    .venv/bin/python bench/usage_queries.py [--rows 1000000] [--postgres URL] [--sqlite-only]

Fills a fresh database (a temporary SQLite file; on PostgreSQL a database made for the run and
dropped after) with ROWS usage rows spread evenly over 30 days, 50 keys, 8 models, 4 providers,
500 end users and the four doors, migrated to the newest schema so the indexes are the
product's. Then runs each query the console makes (admin/usage.py) a few times and prints the
best and median wall time of each, in milliseconds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine

from tokenmux.admin import usage
from tokenmux.db import connect
from tokenmux.db.schema import usage as usage_table

DAYS = 30
BATCH = 20_000
RUNS = 3
END = datetime(2026, 12, 1, tzinfo=UTC)
START = END - timedelta(days=DAYS)


def fake_rows(count: int, seed: int = 7) -> Iterator[list[dict[str, Any]]]:
    rng = random.Random(seed)
    span = (END - START).total_seconds()
    batch: list[dict[str, Any]] = []
    for i in range(count):
        prompt, completion = rng.randint(10, 4000), rng.randint(1, 1000)
        failed = rng.random() < 0.03
        model = f"model-{rng.randrange(8)}"
        batch.append({
            "id": f"row_{i:012d}", "created_at": START + timedelta(seconds=span * i / count),
            "request_id": f"req_{i:012d}", "key_id": f"key_{rng.randrange(50):04d}",
            "key_name": f"team-{rng.randrange(50)}", "end_user": f"user-{rng.randrange(500)}",
            "requested_model": model, "model": model,
            "provider": f"provider-{rng.randrange(4)}", "upstream_model": model + "-up",
            "attempts": 1, "tier": "medium", "queue_ms": 0.0, "stream": rng.random() < 0.5,
            "status": 502 if failed else 200, "error_code": "bad_gateway" if failed else None,
            "prompt_tokens": prompt, "completion_tokens": completion,
            "cached_tokens": 0, "reasoning_tokens": 0, "usage_source": "upstream",
            "cost_usd": Decimal(prompt + 2 * completion) / 1_000_000,
            "latency_ms": rng.lognormvariate(6, 0.6), "ttft_ms": rng.lognormvariate(5, 0.5),
            "door": rng.choice(("chat", "messages", "responses", "embeddings")),
        })
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def fill(engine: Engine, count: int) -> float:
    started = time.perf_counter()
    with engine.begin() as conn:
        for batch in fake_rows(count):
            conn.execute(usage_table.insert(), batch)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE usage")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


def queries() -> list[tuple[str, Callable[[Engine], Any]]]:
    month = usage.Filters(start=START, end=END)
    week = usage.Filters(start=END - timedelta(days=7), end=END)
    key = usage.Filters(start=START, end=END, key="key_0007")
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
    ]


def _pages(engine: Engine, filters: usage.Filters, pages: int) -> None:
    cursor = None
    for _ in range(pages):
        _, cursor = usage.rows(engine, filters, 100, cursor)


def measure(engine: Engine) -> None:
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        engine = connect(str(Path(directory) / "bench.db"))
        print(f"SQLite: {args.rows} rows filled in {fill(engine, args.rows):.0f} s")
        measure(engine)
        engine.dispose()
    if args.sqlite_only:
        return
    name = f"tm_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        engine = connect(args.postgres.rsplit("/", 1)[0] + "/" + name)
        print(f"PostgreSQL: {args.rows} rows filled in {fill(engine, args.rows):.0f} s")
        measure(engine)
        engine.dispose()
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
