"""Collects usage rows in memory and writes them in batches, away from the request path.

`record()` is a list append. A background task flushes every `flush_interval` or as soon as a
batch is full, in a worker thread. When the database refuses a batch, or too many rows pile up
while it is slow, rows go to the spool file and are replayed on the next good write or start.
`close()` writes everything that is left, so a clean stop loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import Engine, Insert, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from tokenmux.db.schema import usage
from tokenmux.ledger.cost import Pricer
from tokenmux.ledger.row import UsageRow
from tokenmux.ledger.spool import Spool

log = logging.getLogger(__name__)


class LedgerWriter:
    def __init__(self, engine: Engine, spool_path: str, *, batch_size: int,
                 flush_interval: float, max_pending: int):
        self._engine = engine
        self._spool = Spool(spool_path)
        self._pricer = Pricer()
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max_pending = max_pending
        self._pending: list[UsageRow] = []
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._spills: set[asyncio.Future[None]] = set()

    def record(self, row: UsageRow) -> None:
        self._pending.append(row)
        if len(self._pending) >= self._batch_size:
            self._full.set()
        if len(self._pending) >= self._max_pending:
            # The database is not keeping up: keep memory bounded, park the rows on disk.
            batch, self._pending = self._pending, []
            spill = asyncio.ensure_future(asyncio.to_thread(self._spill, batch))
            self._spills.add(spill)
            spill.add_done_callback(self._spills.discard)

    async def start(self) -> None:
        await asyncio.to_thread(self._replay)
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._pending:
            await self._flush()
        if self._spills:
            await asyncio.gather(*self._spills)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._interval)
            self._full.clear()
            if self._pending:
                await self._flush()

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        # Shielded: a stop that cancels the writer mid-flush must not lose the batch in flight.
        await asyncio.shield(asyncio.to_thread(self._write, batch))

    def _write(self, batch: list[UsageRow]) -> None:
        records = [row.as_record(self._price(row)) for row in batch]
        try:
            self._insert(records)
        except SQLAlchemyError:
            log.exception("ledger: database write failed; %d rows kept in %s",
                          len(records), self._spool.path)
            self._spool.append(records)
            return
        self._replay()

    def _spill(self, batch: list[UsageRow]) -> None:
        self._spool.append([row.as_record(self._price(row)) for row in batch])

    def _price(self, row: UsageRow) -> Any:
        try:
            return self._pricer.cost(row)
        except Exception:  # a price table's fault must never cost us the row
            log.exception("ledger: pricing failed for request %s", row.request_id)
            return None

    def _replay(self) -> None:
        if not self._spool.pending():
            return
        with self._spool.lock:
            records = self._spool.read()
            try:
                self._insert(records)
            except SQLAlchemyError:
                log.warning("ledger: database still refuses writes; %d rows stay spooled",
                            len(records))
                return
            self._spool.clear()
        log.info("ledger: replayed %d spooled rows", len(records))

    def _insert(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        dialect = self._engine.dialect.name
        statement: Insert
        if dialect == "sqlite":
            statement = sqlite.insert(usage).on_conflict_do_nothing(index_elements=["id"])
        elif dialect == "postgresql":
            statement = postgresql.insert(usage).on_conflict_do_nothing(index_elements=["id"])
        else:
            statement = insert(usage)
        with self._engine.begin() as conn:
            conn.execute(statement, records)
