"""Every channel's health as this process sees it, with its recent latencies from the ledger."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from tokenmux.admin import usage
from tokenmux.routing import Catalog
from tokenmux.routing.catalog import Route

RECENT = timedelta(minutes=15)  # the window of the ledger's latency figures


def live(catalog: Catalog) -> list[dict[str, Any]]:
    """The in-memory state of each channel: its breaker, its queue and what it has in flight.
    Cheap and without I/O, so it runs on the event loop."""
    channels: dict[str, dict[str, Any]] = {}
    routes: dict[str, Route] = {}
    now = time.monotonic()
    for entry in catalog.entries:
        for route in (*entry.routes, *(r for _, fallback in entry.fallbacks for r in fallback)):
            known = channels.get(route.channel)
            if known is not None:
                if route.model not in known["models"]:
                    known["models"].append(route.model)
                continue
            routes[route.channel] = route
            health = route.health
            state, cooldown, failures = health.state(now)
            samples = sorted(health.ttfts)
            gate = route.gate
            channels[route.channel] = {
                "channel": route.channel, "provider": route.provider, "kind": route.kind,
                "upstream_model": route.upstream_model, "models": [route.model],
                "breaker": state, "cooldown_left_s": round(cooldown, 3),
                "failures_in_a_row": failures,
                # Seconds to the answer (to its first chunk when streamed), of recent attempts.
                "attempt_p50_ms": _ms(_at(samples, 0.5)), "attempt_p90_ms": _ms(_at(samples, 0.9)),
                "attempt_samples": len(samples),
                "in_flight": gate.busy if gate is not None else health.in_flight,
                "max_concurrency": gate.limit if gate is not None else None,
                "queued": gate.waiting() if gate is not None else 0,
                "last_error": None if health.last_error is None else {
                    "at": datetime.fromtimestamp(health.last_error[0], UTC).isoformat(),
                    "code": health.last_error[1]},
            }
    return list(channels.values())


def recent(engine: Engine) -> dict[tuple[str, str], dict[str, Any]]:
    """Latency and TTFT percentiles of each channel's requests in the last RECENT, from the
    ledger (every process's requests); blocking."""
    since = datetime.now(UTC) - RECENT
    groups, _ = usage.summary(engine, usage.Filters(start=since), ["provider", "upstream_model"])
    return {(g["provider"], g["upstream_model"]): g for g in groups}


def with_recent(channels: list[dict[str, Any]],
                figures: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    for channel in channels:
        seen = figures.get((channel["provider"], channel["upstream_model"]), {})
        channel["recent"] = {name: seen.get(name) for name in (
            "requests", "errors", "latency_p50_ms", "latency_p90_ms", "ttft_p50_ms",
            "ttft_p90_ms")}
        channel["recent"]["requests"] = channel["recent"]["requests"] or 0
        channel["recent"]["errors"] = channel["recent"]["errors"] or 0
    return channels


def _at(samples: list[float], share: float) -> float | None:
    if not samples:
        return None
    return samples[min(len(samples) - 1, int(share * len(samples)))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
