"""Prices a row: the config's own price when it has one, else the genai-prices tables."""

from __future__ import annotations

import logging
from decimal import Decimal

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from tokenmux.ledger.row import UsageRow

log = logging.getLogger(__name__)
_MILLION = Decimal(1_000_000)


class Pricer:
    def __init__(self) -> None:
        self._unknown: set[tuple[str, str]] = set()  # warn once per model, not once per row

    def cost(self, row: UsageRow) -> Decimal | None:
        route = row.route
        if route is None or (row.prompt_tokens == 0 and row.completion_tokens == 0):
            return None if route is None else Decimal(0)
        if route.price is not None:
            price = route.price
            cached = min(row.cached_tokens, row.prompt_tokens) if price.cached_input is not None \
                else 0
            total = (Decimal(str(price.input)) * (row.prompt_tokens - cached)
                     + Decimal(str(price.output)) * row.completion_tokens)
            if cached:
                total += Decimal(str(price.cached_input)) * cached
            return total / _MILLION
        where = (route.price_provider or route.base_url or "", route.upstream_model)
        if where in self._unknown:
            return None
        usage = PriceUsage(input_tokens=row.prompt_tokens, output_tokens=row.completion_tokens,
                           cache_read_tokens=row.cached_tokens or None)
        try:
            if route.price_provider:
                result = calc_price(usage, route.upstream_model, provider_id=route.price_provider)
            else:
                result = calc_price(usage, route.upstream_model, provider_api_url=route.base_url)
        except LookupError:
            self._unknown.add(where)
            log.warning("no known price for model %r at %r; its cost stays empty",
                        route.upstream_model, where[0])
            return None
        return result.total_price

