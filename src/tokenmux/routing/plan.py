"""The order in which a request's channels are tried.

The model's own channels first, then the models the request names in `models`, then its
`fallback_models` (or, when it names none, its key's default fallback models), then the model's
configured fallbacks; a model named twice is tried once, where it first comes. Where the request
asked for `fallback_models` (or its key has defaults), each attempt on the model itself, on its
`models` and on those fallback models may take at most the fallback timeout (and never more than
its channel's own) before the next one starts; the configured fallbacks keep their own timeouts.

Within each model the tier decides: `medium` goes by priority (lower first), weighted at random
among equals; `fast` and `ludicrous` by lowest recent latency; `slow` by lowest price. A channel
whose breaker is open goes to the back, so it is skipped while any other can serve, and still
tried when none can.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace

from tokenmux.errors import ModelNotFound
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


@dataclass(frozen=True, slots=True)
class FallbackModels:
    """The request's (or its key's) fallback models and the time an attempt may take."""

    models: tuple[str, ...]
    timeout: float  # seconds
    strict: bool  # the request's own: an unknown name is a 404; a key's default is skipped


def _timed(routes: tuple[Route, ...], fallback: FallbackModels | None) -> tuple[Route, ...]:
    if fallback is None:
        return routes
    # The operator's channel timeout stays the ceiling: a request may shorten it, not lengthen it.
    limit = fallback.timeout
    return tuple(r if r.timeout <= limit else replace(r, timeout=limit) for r in routes)


def _fallback_groups(catalog: Catalog, fallback: FallbackModels
                     ) -> list[tuple[str, tuple[Route, ...]]]:
    groups = []
    for i, name in enumerate(fallback.models):
        try:
            model = catalog.resolve(name, param=f"fallback_models[{i}]")
        except ModelNotFound:
            if fallback.strict:
                raise
            continue  # a key's default no longer served: the request still has its model
        groups.append((model.name, _timed(model.routes, fallback)))
    return groups


def plan(catalog: Catalog, entry: ModelEntry, requested: list[str], tier: Tier,
         rng: random.Random, fallback: FallbackModels | None = None) -> list[Route]:
    if not requested and not entry.fallbacks and fallback is None:
        order = _order(entry.routes, tier, rng)
    else:
        groups = [(entry.name, _timed(entry.routes, fallback))]
        for i, name in enumerate(requested):
            model = catalog.resolve(name, param=f"models[{i}]")
            groups.append((model.name, _timed(model.routes, fallback)))
        if fallback is not None:
            groups.extend(_fallback_groups(catalog, fallback))
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
