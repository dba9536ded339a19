"""The ledger read for operators: filtered rows a page at a time, and aggregates by time and
dimension. Blocking (SQLAlchemy); the routes run these in a thread.

Rows come newest first and page by keyset (a cursor naming the last row shown), so the hundredth
page costs what the first does. Aggregates are one GROUP BY for the counters and one for a
latency histogram: each group's percentiles are read from its histogram, whose buckets are 1 ms
wide below 100 ms, 10 ms to 1 s, 100 ms to 10 s and 1 s above, so a percentile is within one
bucket of the exact figure, and no row travels to Python.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, case, cast, func, literal, or_, select
from sqlalchemy import Integer as SqlInteger
from sqlalchemy.sql.elements import KeyedColumnElement

from tokenmux.budgets.money import UNIT
from tokenmux.db.schema import usage

MAX_PAGE = 1000
EXPORT_BATCH = 5000
TIME_UNITS = ("hour", "day")
DIMENSIONS = {"key": usage.c.key_id, "model": usage.c.model, "provider": usage.c.provider,
              "user": usage.c.end_user, "door": usage.c.door, "status": usage.c.status,
              "error": usage.c.error_code, "upstream_model": usage.c.upstream_model}
PERCENTILES = (50, 90, 95, 99)


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
        terms: list[ColumnElement[bool]] = []
        if self.start is not None:
            terms.append(c.created_at >= self.start)
        if self.end is not None:
            terms.append(c.created_at < self.end)
        for column, value in ((c.key_id, self.key), (c.model, self.model),
                              (c.provider, self.provider), (c.end_user, self.user),
                              (c.door, self.door), (c.request_id, self.request_id)):
            if value is not None:
                terms.append(column == value)
        if self.status is not None:
            terms.append(_status_is(self.status))
        return and_(literal(True), *terms)


STATUS_CLASSES = ("ok", "error", "2xx", "3xx", "4xx", "5xx")


def _status_is(status: str) -> ColumnElement[bool]:
    c = usage.c.status
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


def _bucket_of(dialect: str, unit: str) -> ColumnElement[str]:
    if dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff', in UTC
        hours = func.substr(usage.c.created_at, 1, 13 if unit == "hour" else 10)
        return (hours + ":00:00") if unit == "hour" else hours
    shape = "YYYY-MM-DD HH24:00:00" if unit == "hour" else "YYYY-MM-DD"
    return func.to_char(func.timezone("UTC", usage.c.created_at), shape)


def _histogram(column: KeyedColumnElement[Any]) -> ColumnElement[int]:
    ms = column
    return case(
        (ms < 100, cast(ms, SqlInteger)),
        (ms < 1000, 100 + cast(ms / 10, SqlInteger)),
        (ms < 10000, 200 + cast(ms / 100, SqlInteger)),
        else_=300 + cast(ms / 1000, SqlInteger))


def _bucket_ms(bucket: int) -> float:
    """The middle of a histogram bucket, in milliseconds."""
    if bucket < 100:
        return bucket + 0.5
    if bucket < 200:
        return (bucket - 100) * 10 + 5
    if bucket < 300:
        return (bucket - 200) * 100 + 50
    return (bucket - 300) * 1000 + 500


COUNTERS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens",
            "reasoning_tokens")


def summary(engine: Engine, filters: Filters,
            group_by: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One entry per group, and the totals of all: requests (a summariser's call is not one, a
    replay is), errors, tokens by type, cost (replays cost nothing again), and latency and TTFT
    percentiles of the requests. Two passes over the rows: the counters with the latency
    histogram, then the TTFT histogram of the streamed requests."""
    groups = _groups(engine.dialect.name, group_by)
    width = len(groups)
    request = usage.c.kind.is_(None)
    billed = usage.c.replay_of.is_(None)
    # A summariser's call counts its tokens and cost, but is no request to time: bucket -1.
    latency = case((request, _histogram(usage.c.latency_ms)), else_=-1).label("bucket")
    counters = select(
        *groups, latency,
        func.count().filter(request).label("requests"),
        func.count().filter(and_(request, usage.c.status >= 400)).label("errors"),
        func.coalesce(func.sum(usage.c.prompt_tokens).filter(billed), 0).label("prompt_tokens"),
        func.coalesce(func.sum(usage.c.completion_tokens).filter(billed), 0)
        .label("completion_tokens"),
        func.coalesce(func.sum(usage.c.cached_tokens).filter(billed), 0).label("cached_tokens"),
        func.coalesce(func.sum(usage.c.reasoning_tokens).filter(billed), 0)
        .label("reasoning_tokens"),
        func.sum(usage.c.cost_usd).filter(billed).label("cost_usd"),
        *([func.max(usage.c.key_name).label("key_name")] if "key" in group_by else []),
    ).where(filters.where()).group_by(*groups, latency)
    ttft = _histogram(usage.c.ttft_ms).label("bucket")
    ttfts = select(*groups, ttft, func.count().label("n")).where(
        filters.where(), request, usage.c.ttft_ms.is_not(None)).group_by(*groups, ttft)
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    spread: dict[str, dict[tuple[Any, ...], dict[int, int]]] = {"latency": {}, "ttft": {}}
    with engine.connect() as conn:
        for row in conn.execute(counters):
            group = tuple(row[:width])
            names = dict(zip((g.name for g in groups), group, strict=True))
            entry = found.setdefault(group, {**names, **dict.fromkeys(COUNTERS, 0),
                                             "cost_usd": None})
            _add(entry, row._mapping)
            if row.bucket >= 0:
                _count(spread["latency"], group, row.bucket, row.requests)
        for row in conn.execute(ttfts):
            _count(spread["ttft"], tuple(row[:width]), row.bucket, row.n)
    totals: dict[str, Any] = {**dict.fromkeys(COUNTERS, 0), "cost_usd": None}
    for entry in found.values():
        _add(totals, entry)
    for name, histograms in spread.items():
        merged: dict[int, int] = {}
        for group, histogram in histograms.items():
            found[group].update(_percentiles(name, histogram))
            for bucket, n in histogram.items():
                merged[bucket] = merged.get(bucket, 0) + n
        totals.update(_percentiles(name, merged))
        for entry in found.values():  # a group with no request to time
            for figure in _percentiles(name, {}):
                entry.setdefault(figure, None)
    totals.pop("key_name", None)
    ordered = sorted(found.values(), key=lambda e: tuple(str(e[g.name]) for g in groups))
    return ordered, totals


def _add(into: dict[str, Any], row: Any) -> None:
    for name in COUNTERS:
        into[name] += row[name]
    if row["cost_usd"] is not None:
        # SQLite sums money as a double: back to the ledger's precision before adding exactly.
        cost = Decimal(str(row["cost_usd"])).quantize(UNIT)
        into["cost_usd"] = cost if into["cost_usd"] is None else into["cost_usd"] + cost
    if row.get("key_name") is not None:
        into["key_name"] = row["key_name"]


def _count(into: dict[tuple[Any, ...], dict[int, int]], group: tuple[Any, ...], bucket: int,
           n: int) -> None:
    histogram = into.setdefault(group, {})
    histogram[bucket] = histogram.get(bucket, 0) + n


def _groups(dialect: str, group_by: list[str]) -> list[Any]:
    groups: list[Any] = []
    for name in group_by:
        if name in TIME_UNITS:
            groups.append(_bucket_of(dialect, name).label(name))
        else:
            groups.append(DIMENSIONS[name].label(name))
    return groups


def _percentiles(name: str, histogram: dict[int, int]) -> dict[str, float | None]:
    total = sum(histogram.values())
    result: dict[str, float | None] = {}
    for p in PERCENTILES:
        value = None
        if total:
            rank, seen = p / 100 * total, 0
            for bucket in sorted(histogram):
                seen += histogram[bucket]
                if seen >= rank:
                    value = _bucket_ms(bucket)
                    break
        result[f"{name}_p{p}_ms"] = value
    return result


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

