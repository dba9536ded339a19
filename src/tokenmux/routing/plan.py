"""The order in which a request's channels are tried.

The model's own channels first, then the models the request names in `models`, then the model's
configured fallbacks. Within each model the tier decides: `medium` goes by priority (lower
first), weighted at random among equals; `fast` and `ludicrous` by lowest recent latency; `slow`
by lowest price. A channel whose breaker is open goes to the back, so it is skipped while any
other can serve, and still tried when none can.
"""

from __future__ import annotations

import random
import time

from tokenmux.routing.catalog import Catalog, ModelEntry, Route
from tokenmux.routing.tiers import Tier


def _weighted_order(routes: tuple[Route, ...], rng: random.Random) -> list[Route]:
    # Sorting by u^(1/w) draws without replacement in proportion to the weights (Efraimidis and
    # Spirakis, 2006), in one pass.
    keyed = [(r.priority, -(rng.random() ** (1.0 / r.weight)), i, r) for i, r in enumerate(routes)]
    return [route for *_, route in sorted(keyed)]


def _order(routes: tuple[Route, ...], tier: Tier, rng: random.Random) -> list[Route]:
    if len(routes) == 1:
        return [routes[0]]
    ordered = _weighted_order(routes, rng)
    if tier >= Tier.FAST:
        # A channel never measured goes first, once: medium traffic may never reach a channel
        # of low priority, and without a figure it could never be found to be the fastest.
        ordered.sort(key=lambda r: -1.0 if r.health.latency is None else r.health.latency)
    elif tier == Tier.SLOW:
        ordered.sort(key=lambda r: (r.unit_price is None, r.unit_price or 0.0))
    return ordered


def plan(catalog: Catalog, entry: ModelEntry, requested: list[str], tier: Tier,
         rng: random.Random) -> list[Route]:
    if not requested and not entry.fallbacks:
        order = _order(entry.routes, tier, rng)
    else:
        groups = [(entry.name, entry.routes)]
        for i, name in enumerate(requested):
            model = catalog.resolve(name, param=f"models[{i}]")
            groups.append((model.name, model.routes))
        groups.extend(entry.fallbacks)
        seen: set[str] = set()
        order = []
        for name, routes in groups:
            if name not in seen:
                seen.add(name)
                order.extend(_order(routes, tier, rng))
    if len(order) > 1 and any(r.health.open_until for r in order):
        now = time.monotonic()
        order.sort(key=lambda r: r.health.cooling(now))  # stable: the order otherwise holds
    return order
