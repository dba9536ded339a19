"""Writes records to the usage table, idempotently, in the writer's thread.

Each row carries its own id, so writing a record twice (a replay after a crash that came between
the commit and the segment's deletion) changes nothing. A stream's checkpoint (billed only when
a crash cut the stream) has the id its final row will have; the rule that makes replay order
irrelevant: a final row replaces a checkpoint, a later checkpoint (more tokens) replaces an
earlier one, and nothing replaces a final row.

A batch the database refuses as data (a constraint, a value too long) is written row by row, and
only the rows at fault go to the dead letters. Any other refusal is an outage: it is raised for
the writer to retry.

On SQLite the upsert is compiled once, and each batch goes to the driver (`exec_driver_sql`) as
tuples with SQLAlchemy's bind processing applied column by column: compiling, cache-keying and
per-row parameter processing by SQLAlchemy cost more than the insert itself on SQLite, and they
ran under the interpreter lock the request path needs. The rows go many to a statement: the
driver lets the lock go and takes it back around each statement it runs, and under load each
taking back waited on the request path and then made it wait (bench/README.md, "The ledger's
writer and the interpreter lock"). SQLAlchemy still runs the transaction and wraps the driver's
errors, so refusals and lost connections are handled as before.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Insert, String, and_, insert, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from tokenmux.db.schema import usage, usage_dirty
from tokenmux.ledger.cost import Pricer
from tokenmux.ledger.lines import DeadLetters, clean_text
from tokenmux.ledger.row import CHECKPOINT_SOURCE

# str(): SQLAlchemy names columns with a str subclass that JSON encoders refuse as keys.
_COLUMNS = [str(column.name) for column in usage.columns]
_LIMITS = [(i, column.type.length) for i, column in enumerate(usage.columns)
           if isinstance(column.type, String) and column.type.length]
_CREATED_AT = _COLUMNS.index("created_at")
# The fewest values one SQLite statement may bind (its limit before 3.32): a statement holds as
# many rows as fit in them, so a batch of n rows takes about n // 31 statements.
_MOST_VALUES = 999


def is_data_error(exc: SQLAlchemyError) -> bool:
    """The rows are at fault, not the database: retrying would fail the same way forever."""
    return isinstance(exc, IntegrityError | DataError) or (
        isinstance(exc, StatementError) and not isinstance(exc, DBAPIError))


# Sees each row once, priced, in the writer's thread (the metrics and traces, telemetry/).
Meter = Callable[[list[dict[str, Any]]], None]
METERED = "_metered"  # a record's mark once the meter has seen it


class Store:
    def __init__(self, engine: Engine, dead: DeadLetters, meter: Meter | None = None):
        self._engine = engine
        self._dead = dead
        self._pricer = Pricer()
        dialect = engine.dialect
        self._statement = _statement(dialect.name)
        # PostgreSQL keeps SQLAlchemy's path: its batches go as multi-row VALUES, where psycopg's
        # own executemany (pipeline mode) waited forever on a connection reset mid-batch.
        self._driver = dialect.name == "sqlite"
        if self._driver:
            self._sql, self._constants = _compiled(self._statement, dialect)
        self._processors = _processors(dialect)
        self._mark = _mark(dialect.name)
        self.meter = meter

    def observe(self, records: list[dict[str, Any]]) -> None:
        """Hands the meter the rows of RECORDS it has not seen, priced (the write then keeps
        that price): the rows waiting in an outage, which no write meters."""
        self._see(_winners(records))

    def _see(self, records: list[dict[str, Any]]) -> None:
        assert self.meter is not None
        fresh = [record for record in records if METERED not in record]
        for record in fresh:
            self._price(record)
            record[METERED] = True
        if fresh:
            self.meter(fresh)

    def write(self, records: list[dict[str, Any]], *, metered: bool = True) -> int:
        """Commits RECORDS; raises SQLAlchemyError when the database is out. Returns how many
        rows it wrote (dead letters excluded). With METERED, the meter sees each record it has
        not seen yet, whether or not the database takes it."""
        winners = _winners(records)
        if not winners:
            return 0
        meter = self._see if metered and self.meter is not None else None
        try:
            self._execute(winners, meter)
        except Exception as exc:
            if meter is not None:
                meter(winners)  # the groups the failure kept from the meter
            if not (isinstance(exc, SQLAlchemyError) and is_data_error(exc)):
                raise
            return self._one_by_one(winners)
        return len(winners)

    def _one_by_one(self, records: list[dict[str, Any]]) -> int:
        written = 0
        for record in records:
            try:
                self._execute([record], None)
            except SQLAlchemyError as exc:
                if not is_data_error(exc):
                    raise
                self._dead.keep(dict(zip(_COLUMNS, self._prepare(record), strict=True)),
                                f"the database refused it: {exc.__class__.__name__}: "
                                f"{str(exc).splitlines()[0][:300]}")
            else:
                written += 1
        return written

    def _execute(self, records: list[dict[str, Any]], meter: Meter | None) -> None:
        if not self._driver:
            if meter is not None:
                meter(records)
            rows = [self._prepare(record) for record in records]
            with self._engine.begin() as conn:
                conn.execute(self._statement, [dict(zip(_COLUMNS, row, strict=True))
                                               for row in rows])
                self._mark_days(conn, {day_of(row[_CREATED_AT]) for row in rows})
            return
        # Driver SQL: SQLAlchemy's transaction, error wrapping and handling of a lost
        # connection, without its compiling or parameter processing. The rows are metered and
        # prepared a statement's worth at a time: the driver lets the lock go while SQLite runs
        # each statement, so the request path never waits for more than one group's Python
        # work, and the lock changes hands no more often than the statements need.
        most = next(iter(self._sql))
        with self._engine.begin() as conn:
            days: set[int] = set()
            for start in range(0, len(records), most):
                group = records[start:start + most]
                if meter is not None:
                    meter(group)
                rows = [self._prepare(record) for record in group]
                days.update(day_of(row[_CREATED_AT]) for row in rows)
                for sql, params in self._statements(rows):
                    conn.exec_driver_sql(sql, params)
            self._mark_days(conn, days)

    def _statements(self, rows: list[tuple[Any, ...]]) -> list[tuple[str, list[tuple[Any, ...]]]]:
        try:
            return list(self._grouped([self._bound(row) for row in rows]))
        except Exception as exc:  # a value no column type takes: the row's fault
            raise StatementError(f"a value cannot be bound: {exc}", self._sql[1], None,
                                 exc) from exc

    def _grouped(self, rows: list[list[Any]]) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
        """The statements that write ROWS, in groups of each size the SQL is made for, largest
        first: the SQL, and each group's values, row after row, then the conflict rule's
        constants."""
        done = 0
        for size, sql in self._sql.items():
            groups = (len(rows) - done) // size
            if not groups:
                continue
            params = []
            for _ in range(groups):
                values = [value for row in rows[done:done + size] for value in row]
                values += self._constants
                params.append(tuple(values))
                done += size
            yield sql, params

    def _mark_days(self, conn: Connection, days: set[int]) -> None:
        """Marks DAYS as changed, in the transaction that writes their rows, so that a summary
        never reads a day's rollup made before them (admin/rollup.py)."""
        conn.execute(self._mark, [{"day": day, "mark": random.getrandbits(62)}
                                  for day in sorted(days)])

    def _bound(self, row: tuple[Any, ...]) -> list[Any]:
        values = list(row)
        for i, process in self._processors:
            values[i] = process(values[i])
        return values

    def _price(self, record: dict[str, Any]) -> None:
        if "cost_usd" not in record:
            try:
                record["cost_usd"] = self._pricer.cost(record)
            except Exception:  # a price table's fault must never cost us the row
                record["cost_usd"] = None

    def _prepare(self, record: dict[str, Any]) -> tuple[Any, ...]:
        self._price(record)
        get = record.get
        row = [get(name) for name in _COLUMNS]
        for i, limit in _LIMITS:
            value = row[i]
            if isinstance(value, str) and len(value) > limit:
                row[i] = clean_text(value[:limit])
        return tuple(row)


def day_of(at: datetime) -> int:
    """The UTC day of AT, in days since 1970 (a time without a zone is UTC, as SQLite keeps)."""
    return int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp() // 86400)


def _mark(dialect: str) -> Insert:
    """An upsert that gives a day a new mark. It takes the day's row lock on PostgreSQL, so a
    rollup of that day finishing meanwhile finds its mark changed (DO NOTHING would not)."""
    if dialect not in ("sqlite", "postgresql"):
        return insert(usage_dirty)
    upsert = (sqlite.insert(usage_dirty) if dialect == "sqlite"
              else postgresql.insert(usage_dirty))
    return upsert.on_conflict_do_update(index_elements=["day"],
                                        set_={"mark": upsert.excluded.mark})


def _winners(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per id (a multi-row upsert may not touch a row twice), by the rule above."""
    best: dict[str, dict[str, Any]] = {}
    for record in records:
        seen = best.get(record["id"])
        if seen is None or _better(record, seen):
            best[record["id"]] = record
    return list(best.values())


def _better(new: dict[str, Any], old: dict[str, Any]) -> bool:
    if old.get("_checkpoint") is None:
        return False
    return new.get("_checkpoint") is None or new["completion_tokens"] > old["completion_tokens"]


def _compiled(statement: Insert, dialect: Dialect) -> tuple[dict[int, str], list[Any]]:
    """The SQL that writes a group of rows, by the group's size (the most that fit, 8 and 1,
    largest first), and the constants that follow the rows' values: the literals of the conflict
    rule (CHECKPOINT_SOURCE)."""
    compiled = statement.compile(dialect=dialect, column_keys=_COLUMNS)
    names = list(compiled.positiontup or ())
    constants = [compiled.params[name] for name in names[len(_COLUMNS):]]
    one = "(" + ", ".join(["?"] * len(_COLUMNS)) + ")"
    if names[:len(_COLUMNS)] != _COLUMNS or f" VALUES {one} " not in compiled.string:
        raise RuntimeError("the usage upsert's SQL is not one row of values, then its rule")
    most = (_MOST_VALUES - len(constants)) // len(_COLUMNS)
    return {size: compiled.string.replace(f" VALUES {one} ",
                                          " VALUES " + ", ".join([one] * size) + " ", 1)
            for size in (most, 8, 1)}, constants


def _processors(dialect: Dialect) -> list[tuple[int, Callable[[Any], Any]]]:
    """SQLAlchemy's own conversion of each column's values for this driver (SQLite: datetimes
    to text, decimals to floats), so that the rows read back as before."""
    found: list[tuple[int, Callable[[Any], Any]]] = []
    for i, column in enumerate(usage.columns):
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            found.append((i, process))
    return found


def _statement(dialect: str) -> Insert:
    if dialect not in ("sqlite", "postgresql"):
        return insert(usage)
    upsert = (sqlite.insert(usage) if dialect == "sqlite" else postgresql.insert(usage))
    new = upsert.excluded
    return upsert.on_conflict_do_update(
        index_elements=["id"],
        set_={name: new[name] for name in _COLUMNS if name != "id"},
        where=and_(usage.c.usage_source == CHECKPOINT_SOURCE,
                   or_(new.usage_source != CHECKPOINT_SOURCE,
                       new.completion_tokens > usage.c.completion_tokens)),
    )
