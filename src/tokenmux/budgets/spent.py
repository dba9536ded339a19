"""What a key has spent since an instant, by the ledger: the one database read budgets make."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from tokenmux.budgets.money import ticks
from tokenmux.db.schema import usage
from tokenmux.errors import LedgerUnavailable


async def read_spent(engine: Engine, key_id: str, start: datetime | None) -> int:
    """`spent_since` in a thread; a database that does not answer is a 503 for the request that
    waits on it (the next one asks again), never a guess that could overspend the budget."""
    try:
        return await asyncio.to_thread(spent_since, engine, key_id, start)
    except SQLAlchemyError as exc:
        raise LedgerUnavailable("What this key has spent could not be read from the ledger "
                                "to check its budget; retry shortly.") from exc


def spent_since(engine: Engine, key_id: str, start: datetime | None) -> int:
    """Ticks; START None: since ever. Blocking: run it in a thread."""
    query = select(func.coalesce(func.sum(usage.c.cost_usd), 0)).where(usage.c.key_id == key_id)
    if start is not None:
        query = query.where(usage.c.created_at >= start)
    with engine.connect() as conn:
        total = conn.execute(query).scalar_one()
    # Each row holds whole ticks; a sum in floating point (SQLite) is only near one.
    return ticks(Decimal(str(total)), ROUND_HALF_EVEN)


class OncePerKey:
    """A key's ledger read, once per process, shared by the requests that wait on it; one that
    failed is tried again by the next request."""

    def __init__(self) -> None:
        self._runs: dict[str, asyncio.Future[None]] = {}

    async def run(self, key_id: str, read: Callable[[], Awaitable[None]]) -> None:
        run = self._runs.get(key_id)
        if run is None or (run.done() and run.exception() is not None):
            run = self._runs[key_id] = asyncio.ensure_future(read())
        await asyncio.shield(run)
