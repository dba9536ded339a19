"""A row's cost, exactly, from the record alone (as the ledger writer prices it, also for a row
replayed after a restart): the config's price per million tokens, cache reads at the cached
price, and an empty cost where no price is known."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price

from tokenmux.ledger.cost import Pricer


def record(prompt: int, completion: int, cached: int = 0, price: list[float | None] | None = None,
           upstream_model: str = "m", price_provider: str | None = None,
           base_url: str | None = "http://127.0.0.1:9/v1", priced: bool = True) -> dict[str, Any]:
    pricing = {"price": price, "price_provider": price_provider, "base_url": base_url}
    return {"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": cached,
            "upstream_model": upstream_model, "_pricing": pricing if priced else None}


@pytest.mark.parametrize(("prompt", "completion", "cached", "price", "dollars"), [
    (1000, 500, 0, [2.0, 8.0, None], "0.006"),  # 1000 * 2 + 500 * 8 per million
    (1000, 0, 0, [2.0, 8.0, None], "0.002"),
    (0, 500, 0, [2.0, 8.0, None], "0.004"),
    (1000, 500, 400, [2.0, 8.0, 0.5], "0.0054"),  # 600 * 2 + 400 * 0.5 + 500 * 8
    (1000, 500, 400, [2.0, 8.0, None], "0.006"),  # no cached price: cache reads are input
    (1000, 500, 1500, [2.0, 8.0, 0.5], "0.0045"),  # never more cache reads than prompt tokens
    (1000, 500, 1000, [2.0, 8.0, 0.0], "0.004"),  # free cache reads
    (1, 1, 0, [0.1, 0.3, None], "0.0000004"),  # decimal, not float, arithmetic
])
def test_the_configs_price_is_charged_exactly(prompt, completion, cached, price, dollars):
    cost = Pricer().cost(record(prompt, completion, cached, price))
    assert cost == Decimal(dollars)


def test_a_row_without_tokens_costs_nothing_and_one_without_a_route_has_no_cost():
    assert Pricer().cost(record(0, 0, 0, [2.0, 8.0, 0.5])) == Decimal(0)
    assert Pricer().cost(record(0, 0, 0, None, upstream_model="no-such-model")) == Decimal(0)
    assert Pricer().cost(record(10, 10, 0, [2.0, 8.0, None], priced=False)) is None


def test_without_a_config_price_the_library_price_is_used_and_an_unknown_model_has_none():
    pricer = Pricer()
    known = pricer.cost(record(1000, 200, 300, price=None, upstream_model="gpt-4o",
                               price_provider="openai"))
    listed = calc_price(Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=300),
                        "gpt-4o", provider_id="openai").total_price
    assert known == listed > 0
    assert pricer.cost(record(10, 10, price=None, upstream_model="no-such-model-anywhere",
                              price_provider="openai")) is None
    # Asked again: still none (the warning is given once per model).
    assert pricer.cost(record(10, 10, price=None, upstream_model="no-such-model-anywhere",
                              price_provider="openai")) is None
