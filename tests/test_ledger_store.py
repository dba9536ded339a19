"""The ledger's store writes a batch many rows to a statement: every row of a batch of any size
lands with each of its values, and the rule between a stream's checkpoints and its final row
holds inside one statement as it does across batches.

On the suite's database (SQLite, or PostgreSQL with TOKENMUX_TEST_DATABASE=postgresql); SQLite's
statement journal is checked on a SQLite file whatever the suite's database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.test_usage_rollup import record
from tokenmux.db import connect
from tokenmux.db.schema import usage
from tokenmux.ledger.row import CHECKPOINT_SOURCE
from tokenmux.ledger.store import Store

AT = datetime(2026, 11, 20, 9, tzinfo=UTC)


def rows(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {row["id"]: dict(row) for row in conn.execute(sa.select(usage)).mappings()}


def checkpoint(i: int, tokens: int) -> dict[str, Any]:
    return record(i, AT + timedelta(seconds=i), usage_source=CHECKPOINT_SOURCE, status=500,
                  error_code="interrupted", completion_tokens=tokens, _checkpoint=True)


@pytest.mark.parametrize("count", [1, 7, 8, 9, 30, 31, 32, 75, 500])
def test_every_row_of_a_batch_lands_with_its_values(store: Store, engine: sa.Engine,
                                                    count: int):
    batch = [record(i, AT + timedelta(seconds=i), end_user=f"user-{i}")
             for i in range(count)]
    assert store.write([dict(row) for row in batch]) == count
    found = rows(engine)
    assert len(found) == count
    for sent in batch:
        kept = found[sent["id"]]
        assert kept["created_at"].replace(tzinfo=UTC) == sent["created_at"]
        for name in ("request_id", "key_id", "end_user", "model", "provider", "status",
                     "error_code", "prompt_tokens", "completion_tokens", "cached_tokens",
                     "reasoning_tokens", "latency_ms", "ttft_ms", "door", "instance"):
            assert kept[name] == sent[name], (sent["id"], name)
        assert kept["cost_usd"] == sent["cost_usd"]


def test_a_value_longer_than_its_column_is_cut_to_it(store: Store, engine: sa.Engine):
    # end_user holds 256 characters, error_code 64: a longer value is cut, one that fits is kept.
    long = record(0, AT, end_user="u" * 300, error_code="e" * 64)
    store.write([long])
    kept = rows(engine)[long["id"]]
    assert (kept["end_user"], kept["error_code"]) == ("u" * 256, "e" * 64)


def test_final_rows_and_later_checkpoints_replace_checkpoints_inside_one_batch(
        store: Store, engine: sa.Engine):
    streams = range(40)
    store.write([checkpoint(i, 5) for i in streams])
    # One batch: streams 0-19 ended (their final rows bill fewer tokens than the checkpoint's
    # estimate), streams 20-39 went on (a later checkpoint, more tokens).
    store.write([record(i, AT + timedelta(seconds=i), completion_tokens=3) for i in range(20)]
                + [checkpoint(i, 9) for i in range(20, 40)])
    # Then an earlier checkpoint of every stream comes again (a replay after a crash).
    store.write([checkpoint(i, 1) for i in streams])
    found = sorted(rows(engine).values(), key=lambda row: row["created_at"])
    assert [(row["usage_source"], row["completion_tokens"], row["status"]) for row in found] == (
        [("upstream", 3, 200 if i % 7 else (502 if i % 14 == 0 else 429)) for i in range(20)]
        + [(CHECKPOINT_SOURCE, 9, 500)] * 20)


def test_sqlite_keeps_a_statement_journal_in_memory(tmp_path: Path):
    """A statement of many rows keeps a journal to undo it alone: in a file, SQLite would
    create, write and delete one for every batch the ledger writes."""
    engine = connect(str(tmp_path / "ledger.db"))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA temp_store").scalar() == 2  # MEMORY
    finally:
        engine.dispose()
