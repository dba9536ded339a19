"""What a key has spent since an instant, by the ledger: the one database read budgets make."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy import Engine, func, select

from tokenmux.budgets.money import ticks
from tokenmux.db.schema import usage


def spent_since(engine: Engine, key_id: str, start: datetime | None) -> int:
    """Ticks; START None: since ever. Blocking: run it in a thread."""
    query = select(func.coalesce(func.sum(usage.c.cost_usd), 0)).where(usage.c.key_id == key_id)
    if start is not None:
        query = query.where(usage.c.created_at >= start)
    with engine.connect() as conn:
        total = conn.execute(query).scalar_one()
    # Each row holds whole ticks; a sum in floating point (SQLite) is only near one.
    return ticks(Decimal(str(total)), ROUND_HALF_EVEN)
