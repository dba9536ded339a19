"""The order in which a request's channels are tried.

A model's channels by priority (lower first), weighted at random among equals; then the models
the request names in `models`, then the model's configured fallbacks, each in the same way.
"""

from __future__ import annotations

import random

from tokenmux.routing.catalog import Catalog, ModelEntry, Route


def _weighted_order(routes: tuple[Route, ...], rng: random.Random) -> list[Route]:
    # Sorting by u^(1/w) draws without replacement in proportion to the weights (Efraimidis and
    # Spirakis, 2006), in one pass.
    keyed = [(r.priority, -(rng.random() ** (1.0 / r.weight)), i, r) for i, r in enumerate(routes)]
    return [route for *_, route in sorted(keyed)]


def plan(catalog: Catalog, entry: ModelEntry, requested: list[str],
         rng: random.Random) -> list[Route]:
    models = [entry]
    for i, name in enumerate(requested):
        models.append(catalog.resolve(name, param=f"models[{i}]"))
    models.extend(catalog.resolve(name) for name in entry.fallbacks)
    seen: set[str] = set()
    order: list[Route] = []
    for model in models:
        if model.name not in seen:
            seen.add(model.name)
            order.extend(_weighted_order(model.routes, rng))
    return order
