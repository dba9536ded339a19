"""The figures of a usage summary, gathered in parts and finished once: counters summed per
group, and latency and TTFT histograms from which the percentiles are read.

A part comes from the usage rows (one GROUP BY for the counters with the latency histogram, one
for the TTFT histogram of the streamed requests; no row travels to Python) or from the rollup
that holds the same figures by day (admin/rollup.py). The histogram's buckets are 1 ms wide
below 100 ms, 10 ms to 1 s, 100 ms to 10 s and 1 s above, so a percentile is within one bucket
of the exact figure, and parts add up exactly.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, case, cast, func, select
from sqlalchemy import Integer as SqlInteger
from sqlalchemy.sql.elements import KeyedColumnElement

from tokenmux.budgets.money import UNIT
from tokenmux.db.schema import usage

TIME_UNITS = ("hour", "day")
DIMENSIONS = {"key": usage.c.key_id, "model": usage.c.model, "provider": usage.c.provider,
              "user": usage.c.end_user, "door": usage.c.door, "status": usage.c.status,
              "error": usage.c.error_code, "upstream_model": usage.c.upstream_model}
PERCENTILES = (50, 90, 95, 99)
COUNTERS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens",
            "reasoning_tokens")
SPREADS = ("latency", "ttft")

Group = tuple[Any, ...]
Histogram = tuple[int, list[int]]  # the first bucket, and the counts of the buckets from it on


class Figures:
    """A summary's figures so far, by group (the values of its group_by, in order)."""

    def __init__(self, group_by: list[str]):
        self.group_by = group_by
        self.named = "key" in group_by  # each group carries its key's name
        self.groups: dict[Group, dict[str, Any]] = {}
        self.spread: dict[str, dict[Group, Histogram]] = {name: {} for name in SPREADS}

    def add(self, group: Group, counters: Mapping[Any, Any]) -> None:
        entry = self.groups.get(group)
        if entry is None:
            entry = self.groups[group] = {**dict(zip(self.group_by, group, strict=True)),
                                          **dict.fromkeys(COUNTERS, 0), "cost_usd": None}
        _add(entry, counters, self.named)

    def count(self, spread: str, group: Group, bucket: int, n: int) -> None:
        self.count_all(spread, group, bucket, [n])

    def count_all(self, spread: str, group: Group, first: int, counts: list[int]) -> None:
        """Adds the counts of the buckets from FIRST on (the list is kept, not copied)."""
        histograms = self.spread[spread]
        histograms[group] = _merged(histograms.get(group), first, counts)

    def finish(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The groups, ordered by their values, and the totals of all, with percentiles."""
        totals: dict[str, Any] = {**dict.fromkeys(COUNTERS, 0), "cost_usd": None}
        for entry in self.groups.values():
            _add(totals, entry, False)
        for name, histograms in self.spread.items():
            merged: Histogram | None = None
            for group, (first, counts) in histograms.items():
                self.groups[group].update(_percentiles(name, counts, first))
                # The first is copied: the totals' histogram must not grow into a group's.
                merged = _merged(merged, first, list(counts) if merged is None else counts)
            first, counts = merged or (0, [])
            totals.update(_percentiles(name, counts, first))
            for entry in self.groups.values():  # a group with no request to time
                for figure in _percentiles(name, [], 0):
                    entry.setdefault(figure, None)
        ordered = sorted(self.groups.values(),
                         key=lambda e: tuple(str(e[name]) for name in self.group_by))
        return ordered, totals


def _merged(have: Histogram | None, first: int, counts: list[int]) -> Histogram:
    """HAVE with COUNTS added from bucket FIRST on, in a few C-level passes (a summary over a
    month adds thousands of histograms); HAVE's list is changed in place."""
    if have is None:
        return first, counts
    low, kept = have
    if first < low:
        kept[:0] = [0] * (low - first)
        low = first
    start = first - low
    end = start + len(counts)
    if end > len(kept):
        kept.extend([0] * (end - len(kept)))
    kept[start:end] = map(operator.add, kept[start:end], counts)
    return low, kept


def _add(into: dict[str, Any], counters: Mapping[Any, Any], named: bool) -> None:
    """Adds COUNTERS into INTO, and, when NAMED, the key's name (grouped by key)."""
    for name in COUNTERS:
        into[name] += counters[name]
    if counters["cost_usd"] is not None:
        # SQLite sums money as a double: back to the ledger's precision before adding exactly.
        cost = Decimal(str(counters["cost_usd"])).quantize(UNIT)
        into["cost_usd"] = cost if into["cost_usd"] is None else into["cost_usd"] + cost
    key_name = counters["key_name"] if named else None
    if key_name is not None and (into.get("key_name") is None or key_name > into["key_name"]):
        into["key_name"] = key_name  # max(), as SQL picks it: the parts agree with one query


def from_rows(conn: Connection, where: ColumnElement[bool], into: Figures) -> None:
    """Adds the figures of the usage rows WHERE matches, grouped by INTO's group_by."""
    groups = _groups(conn.dialect.name, into.group_by)
    width = len(groups)
    request = usage.c.kind.is_(None)
    billed = usage.c.replay_of.is_(None)
    # A summariser's call counts its tokens and cost, but is no request to time: bucket -1.
    latency = case((request, bucket_of(usage.c.latency_ms)), else_=-1).label("bucket")
    counters = select(
        *groups, latency,
        func.count().filter(request).label("requests"),
        func.count().filter(and_(request, usage.c.status >= 400)).label("errors"),
        *(func.coalesce(func.sum(usage.c[name]).filter(billed), 0).label(name)
          for name in COUNTERS[2:]),
        func.sum(usage.c.cost_usd).filter(billed).label("cost_usd"),
        *([func.max(usage.c.key_name).label("key_name")] if into.named else []),
    ).where(where).group_by(*groups, latency)
    ttft = bucket_of(usage.c.ttft_ms).label("bucket")
    ttfts = select(*groups, ttft, func.count().label("n")).where(
        where, request, usage.c.ttft_ms.is_not(None)).group_by(*groups, ttft)
    for row in conn.execute(counters):
        group = tuple(row[:width])
        into.add(group, row._mapping)
        if row.bucket >= 0:
            into.count("latency", group, row.bucket, row.requests)
    for row in conn.execute(ttfts):
        into.count("ttft", tuple(row[:width]), row.bucket, row.n)


def _groups(dialect: str, group_by: list[str]) -> list[Any]:
    return [(_period_of(dialect, name) if name in TIME_UNITS else DIMENSIONS[name]).label(name)
            for name in group_by]


def _period_of(dialect: str, unit: str) -> ColumnElement[str]:
    """A row's hour as 'YYYY-MM-DD HH:00:00', or its day as 'YYYY-MM-DD', in UTC."""
    if dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff', in UTC
        hours = func.substr(usage.c.created_at, 1, 13 if unit == "hour" else 10)
        return (hours + ":00:00") if unit == "hour" else hours
    shape = "YYYY-MM-DD HH24:00:00" if unit == "hour" else "YYYY-MM-DD"
    return func.to_char(func.timezone("UTC", usage.c.created_at), shape)


def bucket_of(column: KeyedColumnElement[Any]) -> ColumnElement[int]:
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


def _percentiles(name: str, counts: list[int], first: int) -> dict[str, float | None]:
    """The percentiles of the histogram whose buckets from FIRST on hold COUNTS: each is the
    first bucket by which that share of the requests is reached."""
    running = list(itertools.accumulate(counts))
    total = running[-1] if running else 0
    return {f"{name}_p{p}_ms": _bucket_ms(first + bisect.bisect_left(running, p / 100 * total))
            if total else None for p in PERCENTILES}
