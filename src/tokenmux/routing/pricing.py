"""A model's list price, per million tokens, as `/v1/models` shows it.

Looked up once per model when the catalog is built. The ledger prices each row itself
(ledger/cost.py) from the same two sources in the same order: the config's price, else the
genai-prices table found by the route's price_provider or base_url and its upstream model.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from genai_prices import Usage, calc_price

from tokenmux.config.schema import Price


def list_price(price: Price | None, price_provider: str | None, base_url: str | None,
               upstream_model: str, *, embedding: bool = False) -> Price | None:
    """The config's PRICE, else the library's current price for the model; None when unknown.
    An EMBEDDING model writes no output: the library lists its input price alone."""
    if price is not None:
        return price
    try:
        if price_provider:
            found = calc_price(Usage(), upstream_model, provider_id=price_provider)
        else:
            found = calc_price(Usage(), upstream_model, provider_api_url=base_url)
    except LookupError:
        return None
    table = found.model_price
    input_price = _base(getattr(table, "input_mtok", None))
    output_price = _base(getattr(table, "output_mtok", None))
    if embedding and output_price is None:
        output_price = Decimal(0)
    if input_price is None or output_price is None:
        return None
    cached = _base(getattr(table, "cache_read_mtok", None))
    return Price(input=float(input_price), output=float(output_price),
                 cached_input=None if cached is None else float(cached))


def _base(value: Any) -> Decimal | None:
    # A tiered price (more per token past a prompt size) shows its first tier, the one most
    # requests pay.
    base = getattr(value, "base", value)
    return base if isinstance(base, Decimal) else None
