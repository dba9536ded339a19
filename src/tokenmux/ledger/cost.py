"""Prices a record: the config's own price when it has one, else the genai-prices tables.

It runs in the ledger writer's thread, from the record alone (its `_pricing` names the price
source), so a row read back from the write-ahead file after a restart is priced the same way.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

log = logging.getLogger(__name__)
_MILLION = Decimal(1_000_000)


class Pricer:
    def __init__(self) -> None:
        self._unknown: set[tuple[str, str]] = set()  # warn once per model, not once per row

    def cost(self, record: dict[str, Any]) -> Decimal | None:
        pricing = record.get("_pricing")
        prompt, completion = record["prompt_tokens"], record["completion_tokens"]
        if pricing is None or (prompt == 0 and completion == 0):
            return None if pricing is None else Decimal(0)
        cached_tokens = record["cached_tokens"]
        if pricing["price"] is not None:
            price_in, price_out, price_cached = pricing["price"]
            cached = min(cached_tokens, prompt) if price_cached is not None else 0
            total = (Decimal(str(price_in)) * (prompt - cached)
                     + Decimal(str(price_out)) * completion)
            if cached:
                total += Decimal(str(price_cached)) * cached
            return total / _MILLION
        model = record["upstream_model"] or ""
        where = (pricing["price_provider"] or pricing["base_url"] or "", model)
        if where in self._unknown:
            return None
        usage = PriceUsage(input_tokens=prompt, output_tokens=completion,
                           cache_read_tokens=cached_tokens or None)
        try:
            if pricing["price_provider"]:
                result = calc_price(usage, model, provider_id=pricing["price_provider"])
            else:
                result = calc_price(usage, model, provider_api_url=pricing["base_url"])
        except LookupError:
            self._unknown.add(where)
            log.warning("no known price for model %r at %r; its cost stays empty", model,
                        where[0])
            return None
        return result.total_price
