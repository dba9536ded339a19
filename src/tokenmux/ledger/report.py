"""Reading the ledger back: recent rows and totals per key and per model."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select

from tokenmux.db.schema import usage


def recent_rows(engine: Engine, limit: int) -> list[dict[str, Any]]:
    query = select(usage).order_by(usage.c.created_at.desc()).limit(limit)
    with engine.connect() as conn:
        return [_plain_keys(row._mapping) for row in conn.execute(query)]


def totals(engine: Engine, by: str) -> list[dict[str, Any]]:
    column = {"key": usage.c.key_name, "model": usage.c.model}[by]
    query = (
        select(
            column.label(by),
            func.count().label("requests"),
            func.coalesce(func.sum(usage.c.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(usage.c.completion_tokens), 0).label("completion_tokens"),
            func.sum(usage.c.cost_usd).label("cost_usd"),
        )
        .where(usage.c.replay_of.is_(None))  # a replay is a row, not a request billed again
        .group_by(column)
        .order_by(column)
    )
    with engine.connect() as conn:
        return [_plain_keys(row._mapping) for row in conn.execute(query)]


def _plain_keys(mapping: Any) -> dict[str, Any]:
    # SQLAlchemy names columns with a str subclass that JSON encoders refuse as keys.
    return {str(key): value for key, value in mapping.items()}


def plain(value: Any) -> Any:
    """A JSON-friendly form of a ledger value."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value
