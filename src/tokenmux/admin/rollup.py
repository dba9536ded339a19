"""The usage summaries' rollup: each past UTC day's figures and each of its hours', whole and split
by one dimension at a time (hours by end user aside: as many rows as requests), so that a
summary over a month reads hundreds or thousands of rows, not a million.

Kept in the background (`Rollup.keep`), a day at a time once the day is over, and again when
rows of a day arrive later (a spool replayed after an outage). The ledger's writer marks a day
with a new random mark in the transaction that writes its rows (ledger/store.py); a day's new
rollup replaces the old one only if the day's mark is still the one read before its figures
were gathered, and clears the mark. A summary reads a marked day, today and the part-days at
the ends of its range from the rows themselves, so it is exact whatever the rollup's state.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, and_, delete, insert, or_, select

from tokenmux.admin.aggregate import (
    COUNTERS,
    DIMENSIONS,
    SPREADS,
    TIME_UNITS,
    Figures,
    Histogram,
    from_rows,
)
from tokenmux.auth.options import utc_time
from tokenmux.db.schema import usage, usage_dirty, usage_rollup
from tokenmux.ledger.store import day_of

if TYPE_CHECKING:
    from tokenmux.admin.usage import Filters

log = logging.getLogger(__name__)

ROLLUP_SECONDS = 10.0  # how often a gateway looks for days to roll up
# Each split's dimensions: "status" keeps the error code beside the status, so it also answers
# a summary by error, and one filtered by status.
SPLITS: dict[str, tuple[str, ...]] = {
    "": (), "key": ("key",), "model": ("model",), "provider": ("provider",), "user": ("user",),
    "door": ("door",), "status": ("status", "error")}
BUILDS = [*(("hour", split) for split in SPLITS if split != "user"),
          *(("day", split) for split in SPLITS)]
# Each split dimension's column, named in the rollup as in the usage table.
COLUMNS = {name: str(DIMENSIONS[name].name) for dims in SPLITS.values() for name in dims}
# The filters the rollup can apply: each names the dimension it needs.
FILTERED = ("key", "model", "provider", "user", "door", "status")
_FOREVER = -10**6  # a day before any row: the first of an open-ended range


def _first_whole_day(at: datetime) -> int:
    day = day_of(at)
    return day if _midnight(day) == utc_time(at) else day + 1


def _midnight(day: int) -> datetime:
    return datetime.fromtimestamp(day * 86400, UTC)


def split_for(filters: Filters, group_by: list[str]) -> tuple[str, str] | None:
    """The grain and split whose rows answer this summary; None when only the usage rows can."""
    if filters.request_id is not None:
        return None
    needed = {name for name in group_by if name not in TIME_UNITS}
    needed |= {name for name in FILTERED if getattr(filters, name) is not None}
    grain = "hour" if "hour" in group_by else "day"
    for split, dims in SPLITS.items():
        if needed <= set(dims) and (grain, split) in BUILDS:
            return grain, split
    return None


def plan(conn: Connection, filters: Filters, now: datetime
         ) -> tuple[list[tuple[int, int]], list[tuple[datetime | None, datetime | None]]]:
    """The runs of whole past days [first, end) the rollup answers for FILTERS' range, and the
    spans of time left to the usage rows (None: open)."""
    start = None if filters.start is None else utc_time(filters.start)
    first = _FOREVER if start is None else _first_whole_day(start)
    end = day_of(now) if filters.end is None else min(day_of(now), day_of(filters.end))
    if first >= end:
        return [], [(start, filters.end)]
    marked = conn.execute(select(usage_dirty.c.day).where(
        usage_dirty.c.day >= first, usage_dirty.c.day < end).order_by(usage_dirty.c.day))
    runs, day = [], first
    for dirty in marked.scalars():
        if dirty > day:
            runs.append((day, dirty))
        day = dirty + 1
    if day < end:
        runs.append((day, end))
    spans: list[tuple[datetime | None, datetime | None]] = []
    at = start
    for run_first, run_end in runs:
        if run_first != _FOREVER and (at is None or at < _midnight(run_first)):
            spans.append((at, _midnight(run_first)))
        at = _midnight(run_end)
    if filters.end is None or at is None or at < utc_time(filters.end):
        spans.append((at, filters.end))
    return runs, spans


def read(conn: Connection, grain: str, split: str, runs: list[tuple[int, int]],
         filters: Filters, into: Figures) -> None:
    """Adds the rollup's figures of the days in RUNS that match FILTERS."""
    t = usage_rollup
    days = or_(*(and_(t.c.period >= first * 24, t.c.period < end * 24) for first, end in runs))
    columns = [t.c.period, *(t.c[COLUMNS[name]] for name in into.group_by if name in COLUMNS),
               *(t.c[name] for name in COUNTERS), t.c.cost_usd,
               *(t.c[spread] for spread in SPREADS), *([t.c.key_name] if into.named else [])]
    query = select(*columns).where(t.c.grain == grain, t.c.dims == split, days,
                                   *filters.dimension_terms(t))
    loads, add, count_all = json.loads, into.add, into.count_all
    for row in conn.execute(query):
        values = row._mapping
        group = tuple(_value(values, name) for name in into.group_by)
        add(group, values)
        for spread in SPREADS:
            counts = loads(values[spread])
            if counts:
                count_all(spread, group, counts[0], counts[1:])


def _value(row: Any, name: str) -> Any:
    if name == "hour":
        return datetime.fromtimestamp(row["period"] * 3600, UTC).strftime("%Y-%m-%d %H:00:00")
    if name == "day":
        return _midnight(row["period"] // 24).strftime("%Y-%m-%d")
    return row[COLUMNS[name]]


def build(engine: Engine, day: int) -> bool:
    """Replaces DAY's rollup with its figures now, if DAY is marked and no row of it came while
    they were gathered. False: it was not marked, or it was marked again meanwhile."""
    with engine.connect() as conn:
        mark = conn.execute(select(usage_dirty.c.mark).where(usage_dirty.c.day == day)).scalar()
        if mark is None:
            return False
        where = and_(usage.c.created_at >= _midnight(day), usage.c.created_at < _midnight(day + 1))
        rows: list[dict[str, Any]] = []
        for grain, split in BUILDS:
            figures = Figures((["hour"] if grain == "hour" else []) + list(SPLITS[split]))
            from_rows(conn, where, figures)
            rows.extend(_rollup_rows(grain, split, day, figures))
    with engine.begin() as conn:
        # First, so that on SQLite the transaction holds the write lock from here on, and on
        # PostgreSQL the day's row lock: a writer marking the day again waits for the commit.
        claimed = conn.execute(delete(usage_dirty).where(usage_dirty.c.day == day,
                                                         usage_dirty.c.mark == mark))
        if not claimed.rowcount:
            return False
        conn.execute(delete(usage_rollup).where(usage_rollup.c.period >= day * 24,
                                                usage_rollup.c.period < (day + 1) * 24))
        if rows:
            conn.execute(insert(usage_rollup), rows)
    return True


def _rollup_rows(grain: str, split: str, day: int, figures: Figures) -> Iterator[dict[str, Any]]:
    for group, entry in figures.groups.items():
        period = day * 24
        if grain == "hour":
            hour = datetime.strptime(entry["hour"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            period = int(hour.timestamp() // 3600)
        cost = entry["cost_usd"]
        yield {"grain": grain, "period": period, "dims": split,
               **{column: None for column in COLUMNS.values()},
               **{COLUMNS[name]: entry[name] for name in SPLITS[split]},
               "key_name": entry.get("key_name"),
               **{name: entry[name] for name in COUNTERS},
               "cost_usd": None if cost is None else format(cost, "f"),
               **{spread: _encode(figures.spread[spread].get(group)) for spread in SPREADS}}


def _encode(histogram: Histogram | None) -> str:
    """[first, n, n, ...]: the first bucket, then the counts of every bucket from it to the
    last it holds. JSON, because its parser reads a month of them fastest."""
    if histogram is None:
        return "[]"
    first, counts = histogram
    return json.dumps([first, *counts], separators=(",", ":"))


class Rollup:
    """Rolls up every past day that is marked, every ROLLUP_SECONDS, in a thread."""

    def __init__(self, engine: Engine, interval: float = ROLLUP_SECONDS):
        self._engine = engine
        self._interval = interval
        self.failing = False

    def catch_up(self, now: datetime | None = None) -> int:
        """Rolls up the marked days before NOW's; how many it replaced."""
        today = day_of(now or datetime.now(UTC))
        with self._engine.connect() as conn:
            days = list(conn.execute(select(usage_dirty.c.day).where(
                usage_dirty.c.day < today).order_by(usage_dirty.c.day)).scalars())
        built, failed = 0, False
        for day in days:
            try:
                built += build(self._engine, day)
            # One day that cannot be rolled up (or a database gone) must not stop the others:
            # its summaries read its rows meanwhile, and the health says so.
            except Exception:
                if not self.failing and not failed:
                    log.exception("could not roll up the usage of %s; its rows answer for it",
                                  _midnight(day).date())
                failed = True
        if self.failing and not failed:
            log.info("the usage rollup works again")
        self.failing = failed
        return built

    async def keep(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.catch_up)
            except Exception:  # the task's outermost handler: the rollup never stops for good
                if not self.failing:
                    log.exception("could not look for usage to roll up")
                self.failing = True
            await asyncio.sleep(self._interval)

    def health(self) -> str:
        return "failing" if self.failing else "ok"
