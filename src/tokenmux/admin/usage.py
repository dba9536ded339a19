"""The ledger read for operators: filtered rows a page at a time, and aggregates by time and
dimension. Blocking (SQLAlchemy); the routes run these in a thread.

Rows come newest first and page by keyset (a cursor naming the last row shown), so the hundredth
page costs what the first does. Aggregates are gathered by admin/aggregate.py, from the rows and
from the rollup of past days.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Engine, Table, and_, literal, or_, select

from tokenmux.admin import rollup
from tokenmux.admin.aggregate import DIMENSIONS, TIME_UNITS, Figures, from_rows
from tokenmux.db.schema import usage

MAX_PAGE = 1000
EXPORT_BATCH = 5000


@dataclass(frozen=True, slots=True)
class Filters:
    """What the rows must match; None: anything."""

    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    key: str | None = None  # a key's id
    model: str | None = None  # the model's canonical name (an alias asked for reads as it)
    provider: str | None = None
    user: str | None = None  # the end user the request named (X-User, or the body's `user`)
    door: str | None = None
    status: str | None = None  # a status ("429"), a class ("4xx", "5xx"), "ok" or "error"
    request_id: str | None = None

    def where(self) -> ColumnElement[bool]:
        c = usage.c
        terms = self.dimension_terms(usage)
        if self.start is not None:
            terms.append(c.created_at >= self.start)
        if self.end is not None:
            terms.append(c.created_at < self.end)
        if self.request_id is not None:
            terms.append(c.request_id == self.request_id)
        return and_(literal(True), *terms)

    def dimension_terms(self, table: Table) -> list[ColumnElement[bool]]:
        """The terms on the dimensions, for the usage table or its rollup (same columns)."""
        c = table.c
        terms: list[ColumnElement[bool]] = []
        for column, value in ((c.key_id, self.key), (c.model, self.model),
                              (c.provider, self.provider), (c.end_user, self.user),
                              (c.door, self.door)):
            if value is not None:
                terms.append(column == value)
        if self.status is not None:
            terms.append(_status_is(c.status, self.status))
        return terms


STATUS_CLASSES = ("ok", "error", "2xx", "3xx", "4xx", "5xx")


def _status_is(c: Any, status: str) -> ColumnElement[bool]:
    if status == "ok":
        return c < 400
    if status == "error":
        return c >= 400
    if status in STATUS_CLASSES:
        low = int(status[0]) * 100
        return and_(c >= low, c < low + 100)
    return c == int(status)


def rows(engine: Engine, filters: Filters, limit: int,
         cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Up to LIMIT rows after CURSOR, newest first, and the cursor of the next page (None: no
    more)."""
    query = select(usage).where(filters.where())
    if cursor is not None:
        at, row_id = _decode(cursor)
        query = query.where(or_(usage.c.created_at < at,
                                and_(usage.c.created_at == at, usage.c.id < row_id)))
    query = query.order_by(usage.c.created_at.desc(), usage.c.id.desc()).limit(limit + 1)
    with engine.connect() as conn:
        found = [{str(k): v for k, v in row._mapping.items()} for row in conn.execute(query)]
    more = len(found) > limit
    found = found[:limit]
    return found, _encode(found[-1]) if more else None


def every_row(engine: Engine, filters: Filters) -> Iterator[list[dict[str, Any]]]:
    """All matching rows, newest first, a batch at a time: an export's memory is one batch."""
    cursor: str | None = None
    while True:
        batch, cursor = rows(engine, filters, EXPORT_BATCH, cursor)
        if batch:
            yield batch
        if cursor is None:
            return


def _encode(row: dict[str, Any]) -> str:
    text = f"{row['created_at'].isoformat()}|{row['id']}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, str]:
    """The position a cursor names; ValueError when it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, row_id = text.split("|", 1)
        return datetime.fromisoformat(at), row_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("cursor: not a cursor this API gave") from exc


def summary(engine: Engine, filters: Filters, group_by: list[str], now: datetime | None = None
            ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One entry per group, and the totals of all: requests (a summariser's call is not one, a
    replay is), errors, tokens by type, cost (replays cost nothing again), and latency and TTFT
    percentiles of the requests. The whole past days of the range come from the rollup where
    it holds them (admin/rollup.py), the rest from the rows; the figures are the same."""
    figures = Figures(group_by)
    with engine.connect() as conn:
        spans: list[tuple[datetime | None, datetime | None]] = [(filters.start, filters.end)]
        chosen = rollup.split_for(filters, group_by)
        if chosen is not None:
            runs, spans = rollup.plan(conn, filters, now or datetime.now(UTC))
            if runs:
                rollup.read(conn, *chosen, runs, filters, figures)
        for start, end in spans:
            from_rows(conn, replace(filters, start=start, end=end).where(), figures)
    return figures.finish()


def check_group_by(names: list[str]) -> str | None:
    """What is wrong with a group_by, or None."""
    for name in names:
        if name not in TIME_UNITS and name not in DIMENSIONS:
            return (f"group_by: unknown group {name!r} (known: "
                    f"{', '.join((*TIME_UNITS, *DIMENSIONS))})")
    if len([n for n in names if n in TIME_UNITS]) > 1:
        return "group_by: at most one of hour, day"
    if len(set(names)) != len(names):
        return "group_by: a group named twice"
    return None


def plain(value: Any) -> Any:
    """A JSON-friendly form of a ledger value: times in ISO 8601, money as a decimal text."""
    if isinstance(value, datetime):
        # SQLite gives the time back without its zone; every time the gateway stores is UTC.
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return value

