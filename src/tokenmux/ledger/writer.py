"""Keeps every usage row: appended to the write-ahead file when recorded, committed to the
database in batches by a background task, off the response path.

`record()` encodes the row and appends it to the write-ahead file (wal.py): from then on it
survives the process being killed. Every `flush_interval_ms`, or once `batch_size` rows are in,
the writer closes the open segment and, in a worker thread, commits the closed segments oldest
first, deleting each once committed. A stream that lasts writes a checkpoint at most once a
second (`checkpoint()`); only a crash makes one a row (`interrupted`), see store.py.

Failures never end the writer, and are reported once per change of state, not once per batch:

    ok         the disk takes each row and the database each batch
    spooling   the database refuses writes: rows wait on disk and are retried with backoff
    degraded   the disk refuses appends: rows wait in memory for the next batch; or a segment
               cannot be read back: it waits, retried at each batch, and the rows after it land
    failing    neither: rows wait in memory only (up to `max_pending`), /health answers 503
    stopped    the writer's task ended (a bug): rows still reach the disk, /health answers 503

Once `max_pending` rows wait in memory, `accepting()` is false and new requests are refused
with 503 `ledger_unavailable` until the database or the disk takes rows again. A row that cannot
be encoded is repaired; one that still cannot, or that the database refuses as data, goes to
the dead-letter file, never silently away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tokenmux.ledger.lines import DeadLetters, decode, encode, read_lines
from tokenmux.ledger.row import UsageRow
from tokenmux.ledger.store import Meter, Store
from tokenmux.ledger.wal import Segment, WriteAheadLog

log = logging.getLogger("tokenmux.ledger")


@dataclass(slots=True)
class _Drained:
    rows: int = 0
    torn: int = 0
    error: Exception | None = None  # the database's refusal, when the drain stopped on one
    read: set[Path] = field(default_factory=set)  # segments read back from disk
    unreadable: dict[Path, str] = field(default_factory=dict)  # and those the disk refused


class LedgerWriter:
    def __init__(self, engine: Engine, wal_dir: str, *, batch_size: int, flush_interval: float,
                 max_pending: int, fsync: bool = False, retry_max: float = 5.0,
                 legacy_spool: str | None = None, instance: str | None = None,
                 meter: Meter | None = None):
        root = Path(wal_dir)
        self._instance = instance  # stamped on each row: which process served it
        self._dead = DeadLetters(root / "dead-letter.jsonl")
        self._store = Store(engine, self._dead, meter)
        self._metered: set[Path] = set()  # segments read from disk that the meter has seen
        self._live: dict[str, bytes] = {}  # row id → the latest checkpoint of a live stream
        self._wal = WriteAheadLog(root, fsync=fsync, carry=lambda: list(self._live.values()))
        self._legacy = Path(legacy_spool) if legacy_spool else None
        self._batch_size = batch_size
        self._interval = flush_interval
        self._retry_max = max(retry_max, flush_interval)
        self._max_pending = max_pending
        self._memory: list[dict[str, Any]] = []  # rows the disk did not take
        self._memory_in_drain = 0  # of those, the ones the drain in progress holds
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.database_error: str | None = None
        self.disk_error: str | None = None
        self.database_failures = 0
        self.disk_failures = 0
        self.unreadable: dict[Path, str] = {}  # waiting segments the disk cannot give back

    # The request path: no database, one write(2) per row.

    def record(self, row: UsageRow) -> None:
        self._live.pop(row.id, None)
        record = row.as_record()
        record["instance"] = self._instance
        try:
            line = encode(record)
        except TypeError as exc:
            self._dead.keep(record, f"it cannot be encoded: {exc}")
            return
        if not self._append(line, record):
            self._memory.append(record)
        elif self._wal.rows >= self._batch_size:
            if self.database_error is None:
                self._full.set()
            else:
                # Keep segments small while the database is out, and only on disk.
                self._wal.rotate(keep=False)

    def checkpoint(self, row: UsageRow) -> None:
        """What a live stream has delivered so far; replaced by its final `record()`."""
        record = row.as_record()
        record["instance"] = self._instance
        record["_checkpoint"] = True
        try:
            line = encode(record)
        except TypeError:
            return  # its final row will be repaired or quarantined; a checkpoint is insurance
        if self._append(line, None):
            self._live[row.id] = line

    def accepting(self) -> bool:
        return self.rows_in_memory < self._max_pending

    @property
    def rows_in_memory(self) -> int:
        return len(self._memory) + self._memory_in_drain

    @property
    def state(self) -> str:
        if self._task is not None and self._task.done() and not self._stopping:
            return "stopped"
        if self.database_error and self.disk_error:
            return "failing"
        if self.database_error:
            return "spooling"
        return "degraded" if self.disk_error or self.unreadable else "ok"

    def backlog(self) -> tuple[int, int]:
        """Rows recorded and not yet committed that this process holds (in memory or in
        segments it keeps), and the bytes of write-ahead files waiting on disk."""
        # A copy (one C call, so atomic): the drain's thread takes segments out meanwhile.
        closed = list(self._wal.closed)
        rows = self.rows_in_memory + self._wal.rows + sum(
            len(segment.records) for segment in closed if segment.records is not None)
        size = 0
        for path in [*(segment.path for segment in closed), self._wal.open_path()]:
            with contextlib.suppress(OSError):
                size += path.stat().st_size
        return rows, size

    def health(self) -> dict[str, Any]:
        try:
            stats = os.statvfs(self._wal.root)
            free: int | None = stats.f_bavail * stats.f_frsize
        except OSError:
            free = None
        return {"state": self.state, "rows_in_memory": self.rows_in_memory,
                "segments_waiting": len(self._wal.closed),
                "segments_unreadable": len(self.unreadable),
                "database_failures": self.database_failures,
                "disk_failures": self.disk_failures, "dead_letters": self._dead.count,
                "disk_free_bytes": free}

    # Start and stop.

    async def start(self) -> None:
        await asyncio.to_thread(self._wal.open, self._legacy)
        if self._wal.closed:  # a crash or an outage left rows: they land before serving
            drained = await asyncio.to_thread(self._drain, [])
            self._settle(drained)
            log.info("ledger: replayed %d rows from %s", drained.rows, self._wal.root)
        self._task = asyncio.create_task(self._run(), name="ledger-writer")
        self._task.add_done_callback(self._ended)

    async def close(self) -> None:
        self._stopping = True
        self._full.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        # Every stream has ended by now; a checkpoint left means its final row never came.
        for line in self._live.values():
            if (record := _final(line)) is not None:
                self._memory.append(record)
        self._live.clear()
        await self._cycle()
        if self._memory:
            log.error("ledger: %d rows could be kept neither in the database nor on disk; "
                      "they are lost with this process", len(self._memory))
        elif self._wal.closed:
            log.warning("ledger: %d segments of rows wait in %s for the next start",
                        len(self._wal.closed), self._wal.root)
        self._wal.close()

    # The background task.

    async def _run(self) -> None:
        delay = self._interval
        while not self._stopping:
            # In an outage nothing sets the event but a stop: the backoff is waited out.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), delay)
            self._full.clear()
            if self._stopping:
                return
            try:
                healthy = await self._cycle()
            except Exception:  # the writer must outlive any bug; the rows are on disk
                log.exception("ledger: the writer's cycle failed; it is retried")
                healthy = False
            delay = self._interval if healthy else min(delay * 2, self._retry_max)

    async def _cycle(self) -> bool:
        # While the database is out, segments pile up: their rows wait on disk, not in memory.
        self._wal.rotate(keep=self.database_error is None)
        if not self._wal.closed and not self._memory:
            return True  # nothing waits: an idle gateway's writer wakes no thread
        memory, self._memory = self._memory, []
        self._memory_in_drain = len(memory)
        try:
            drained = await asyncio.to_thread(self._drain, memory)
        finally:
            self._memory_in_drain = 0
            self._memory[:0] = memory  # what the drain did not write: nothing if it succeeded
        self._settle(drained)
        return drained.error is None

    def _drain(self, memory: list[dict[str, Any]]) -> _Drained:
        """In a worker thread: commits the closed segments oldest first, then rows in memory.
        A segment the disk cannot give back waits for the next drain; the rest go on."""
        drained = _Drained()
        for segment in list(self._wal.closed):
            try:
                if segment.records is not None:
                    records, torn = segment.records, 0
                else:
                    records, torn = read_lines(segment.path)
                    drained.read.add(segment.path)
            except FileNotFoundError:
                self._wal.committed(segment)
                continue
            except OSError as exc:
                drained.unreadable[segment.path] = str(exc)
                continue
            try:
                drained.rows += self._store.write(_billable(records, segment),
                                                  metered=segment.path not in self._metered)
            except Exception as exc:  # an outage, or a bug: retried, never fatal
                drained.error = exc
                if segment.records is None:
                    self._metered.add(segment.path)  # the write metered it all the same
                self._meter_waiting(memory)
                return drained
            drained.torn += torn
            self._wal.committed(segment)
            self._metered.discard(segment.path)
        if memory:
            try:
                drained.rows += self._store.write(memory)
            except Exception as exc:
                drained.error = exc
                return drained
            memory.clear()
        if drained.unreadable:
            self._meter_waiting([])
        return drained

    def _meter_waiting(self, memory: list[dict[str, Any]]) -> None:
        """Every row left waiting, seen once by the meter (records mark themselves; the paths
        of segments read from disk are kept), so that the metrics move in an outage too. The
        rows written are metered by the write, group by group (store.py)."""
        if self._store.meter is None:
            return
        for segment in list(self._wal.closed):
            if segment.records is not None:
                self._store.observe(_billable(segment.records, segment))
            elif segment.path not in self._metered:
                try:
                    records, _ = read_lines(segment.path)
                except OSError:
                    continue  # the drain reports it
                self._store.observe(_billable(records, segment))
                self._metered.add(segment.path)
        if memory:
            self._store.observe(memory)

    def _settle(self, drained: _Drained) -> None:
        """Back on the loop: state changes, logged once each; unwritten rows go to disk."""
        if drained.torn:
            log.warning("ledger: %d torn lines skipped (a crash cut their write short, before "
                        "their response was sent)", drained.torn)
        self._note_unreadable(drained)
        if drained.error is not None:
            self.database_failures += 1
            if self.database_error is None:
                self.database_error = f"{type(drained.error).__name__}: {drained.error}"[:300]
                log.error("ledger: the database refuses writes (%s); rows wait in %s and are "
                          "retried", self.database_error,
                          "memory" if self.disk_error else self._wal.root)
        elif self.database_error is not None:
            log.warning("ledger: the database takes writes again (%d failed attempts since "
                        "start)", self.database_failures)
            self.database_error = None
        if drained.error is not None and self._memory:
            self._to_disk()

    def _note_unreadable(self, drained: _Drained) -> None:
        waiting = {segment.path for segment in self._wal.closed}
        for path, error in drained.unreadable.items():
            if path not in self.unreadable:
                self.disk_failures += 1
                log.error("ledger: the write-ahead segment %s cannot be read (%s); it waits, "
                          "retried at each batch, and the rows after it go on", path, error)
        for path in drained.read & self.unreadable.keys():
            log.warning("ledger: the write-ahead segment %s can be read again", path)
        self.unreadable = {path: error
                           for path, error in {**self.unreadable, **drained.unreadable}.items()
                           if path in waiting and path not in drained.read}

    def _to_disk(self) -> None:
        """Rows in memory go to the write-ahead file if it takes them now."""
        kept: list[dict[str, Any]] = []
        for record in self._memory:
            try:
                line = encode(record)
            except TypeError:
                line = b""
            if not line or not self._append(line, record):
                kept.append(record)
        self._memory = kept

    def _append(self, line: bytes, record: dict[str, Any] | None) -> bool:
        try:
            self._wal.append(line, record)
        except OSError as exc:
            self._disk_failed(exc)
            return False
        if self.disk_error is not None:
            log.warning("ledger: the write-ahead file takes rows again (%d failed appends "
                        "since start)", self.disk_failures)
            self.disk_error = None
        return True

    def _disk_failed(self, exc: OSError) -> None:
        self.disk_failures += 1
        if self.disk_error is None:
            self.disk_error = str(exc)
            log.error("ledger: the write-ahead file in %s cannot be written (%s); rows wait "
                      "in memory (%d at most) until the disk or the database takes them",
                      self._wal.root, exc, self._max_pending)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not self._stopping and not task.cancelled():
            log.error("ledger: the writer's task ended; rows still go to %s but reach the "
                      "database only after a restart", self._wal.root, exc_info=task.exception())


def _billable(records: list[dict[str, Any]], segment: Segment) -> list[dict[str, Any]]:
    # A checkpoint of this process's own streams is not a row: their final rows will come.
    if segment.adopted:
        return records
    return [record for record in records if not record.get("_checkpoint")]


def _final(line: bytes) -> dict[str, Any] | None:
    record = decode(line)
    if record is not None:
        record.pop("_checkpoint", None)
    return record
