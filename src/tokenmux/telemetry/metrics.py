"""The Prometheus metrics behind `GET /metrics`, fed from the ledger's rows.

Nothing here runs on the request path. Each row reaches `Metrics.observe` once, priced, in the
ledger writer's thread (ledger/store.py), batched with the rows of the same flush; what is a
state rather than an event (breakers, queues, the ledger's backlog) is read when it is scraped.
Every label comes from a closed set: the catalog's model and provider names, a status class, the
error codes the gateway knows (plus a few of an upstream's own, then `other`), the tier, the door.
No key, no end user, no text a client sent ever becomes a label.

With `--workers N` the supervisor gives every worker one fresh directory in
PROMETHEUS_MULTIPROC_DIR: prometheus_client then keeps each worker's values in files there, and
whichever worker answers a scrape sums them all (README, "Metrics and traces"). The states are
then written there too, by each worker once a second, so a scrape also shows the other workers'.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from tokenmux.errors import GatewayError
from tokenmux.ledger.row import INTERRUPTED, door_of
from tokenmux.routing import Catalog
from tokenmux.routing.admission import Gate
from tokenmux.routing.health import ChannelHealth
from tokenmux.settings import metrics_dir

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SAMPLE_SECONDS = 1.0  # how often a worker writes its states for the others' scrapes
REQUEST = ("model", "provider", "status_class", "error_code", "tier", "door")
DURATION = ("model", "provider", "status_class", "tier", "door")
SPEND = ("model", "provider", "tier", "door")
# Seconds; a request's whole time, and a stream's first chunk.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TOKEN_TYPES = (("prompt_tokens", "prompt"), ("completion_tokens", "completion"),
               ("cached_tokens", "cached"), ("reasoning_tokens", "reasoning"))
BREAKER = {"closed": 0, "half_open": 1, "open": 2}
# An upstream's own error codes pass through as labels, up to this many distinct ones.
UPSTREAM_CODES = 32
_CODE = re.compile(r"[a-z][a-z0-9_.]{0,47}")


def _known_codes() -> set[str]:
    codes = {"client_closed", INTERRUPTED}
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.code:
            codes.add(cls.code)
    return codes


@dataclass(slots=True)
class _Series:
    """One label set's children, looked up once: `labels()` per row would cost more than all
    the increments together."""

    requests: Any
    duration: Any
    ttft: Any
    tokens: tuple[tuple[str, Any], ...]
    cost: Any
    attempts: Any
    retries: Any
    hedges: Any


@dataclass(frozen=True, slots=True)
class _Channel:
    name: str
    provider: str
    health: ChannelHealth
    gate: Gate | None


class Metrics:
    def __init__(self, catalog: Catalog):
        self.multiprocess = metrics_dir() is not None
        # In multiprocess mode the values live in files; each scrape reads them all anew.
        own = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        self._registry = own
        self._requests = Counter("tokenmux_requests", "Requests answered, by outcome.", REQUEST,
                                 registry=own)
        self._duration = Histogram(
            "tokenmux_request_duration_seconds", "From arrival to the answer's end.",
            DURATION, buckets=DURATION_BUCKETS, registry=own)
        self._ttft = Histogram(
            "tokenmux_time_to_first_token_seconds", "A stream's first chunk, from arrival.",
            SPEND, buckets=TTFT_BUCKETS, registry=own)
        self._tokens = Counter("tokenmux_tokens", "Tokens billed, by type.", (*SPEND, "type"),
                               registry=own)
        self._cost = Counter("tokenmux_cost_usd", "What the answers cost, in US dollars.",
                             SPEND, registry=own)
        self._attempts = Counter("tokenmux_upstream_attempts", "Upstream attempts made.", SPEND,
                                 registry=own)
        self._retries = Counter("tokenmux_retries", "Attempts after a failed one.", SPEND,
                                registry=own)
        self._hedges = Counter("tokenmux_hedges", "Second channels started beside a slow one.",
                               SPEND, registry=own)
        # States: the worst breaker and the sums of the others over the live workers.
        mode: dict[str, Any] = {"multiprocess_mode": "livemax"}
        self._breaker = Gauge("tokenmux_channel_breaker_state",
                              "A channel's breaker: 0 closed, 1 half-open, 2 open.",
                              ("channel", "provider"), registry=own, **mode)
        mode = {"multiprocess_mode": "livesum"}
        self._queued = Gauge("tokenmux_channel_queue_depth",
                             "Requests waiting for a slot of a channel's max_concurrency.",
                             ("channel", "provider"), registry=own, **mode)
        self._busy = Gauge("tokenmux_channel_in_flight",
                           "Requests holding a slot of a channel's max_concurrency.",
                           ("channel", "provider"), registry=own, **mode)
        self._backlog = Gauge("tokenmux_ledger_backlog_rows",
                              "Usage rows recorded and not yet committed to the database.",
                              registry=own, **mode)
        self._spool = Gauge("tokenmux_ledger_spool_bytes",
                            "Write-ahead files waiting on disk for the database.",
                            registry=own, **mode)
        self._series: dict[tuple[Any, ...], _Series] = {}
        self._codes = _known_codes()
        self._upstream_codes: set[str] = set()
        self._channels = _channels(catalog)
        self._ledger: Any = None

    # Rows, in the ledger writer's thread.

    def observe(self, records: list[dict[str, Any]]) -> None:
        """Counts a batch: the counters once per label set and batch, the histograms per row."""
        series = self._series
        batch: dict[tuple[Any, ...], list[Any]] = {}
        for record in records:
            door = door_of(record)
            key = (record["model"], record["provider"], record["status"],
                   record["error_code"], record["tier"], door)
            sums = batch.get(key)
            if sums is None:
                one = series.get(key)
                if one is None:
                    one = series[key] = self._new_series(key)
                sums = batch[key] = [one, 0, 0, 0, 0, 0, 0.0, 0, 0, 0]
            one = sums[0]
            one.duration.observe(record["latency_ms"] / 1000)
            if (ttft := record["ttft_ms"]) is not None:
                one.ttft.observe(ttft / 1000)
            sums[1] += 1
            sums[2] += record["prompt_tokens"]
            sums[3] += record["completion_tokens"]
            sums[4] += record["cached_tokens"]
            sums[5] += record["reasoning_tokens"]
            if cost := record.get("cost_usd"):
                sums[6] += float(cost)
            if attempts := record["attempts"]:
                sums[7] += attempts
                sums[8] += 1  # a request that went upstream at all: its first attempt
                sums[9] += record.get("_hedges", 0)
        for one, requests, *tokens, cost, attempts, attempted, hedges in batch.values():
            one.requests.inc(requests)
            for (_, child), count in zip(one.tokens, tokens, strict=True):
                if count:
                    child.inc(count)
            if cost:
                one.cost.inc(cost)
            if attempts:
                one.attempts.inc(attempts)
                # Every attempt past a request's first is a retry, unless it was a hedge.
                if retries := attempts - attempted - hedges:
                    one.retries.inc(retries)
                if hedges:
                    one.hedges.inc(hedges)

    def _new_series(self, key: tuple[Any, ...]) -> _Series:
        model, provider, status, code, tier, door = key
        model, provider = model or "", provider or ""
        outcome = f"{status // 100}xx"
        spend = (model, provider, tier, door)
        return _Series(
            self._requests.labels(model, provider, outcome, self._code(code), tier, door),
            self._duration.labels(model, provider, outcome, tier, door),
            self._ttft.labels(*spend),
            tuple((column, self._tokens.labels(*spend, kind)) for column, kind in TOKEN_TYPES),
            self._cost.labels(*spend), self._attempts.labels(*spend),
            self._retries.labels(*spend), self._hedges.labels(*spend))

    def _code(self, code: str | None) -> str:
        if code is None:
            return ""
        if code in self._codes or code in self._upstream_codes:
            return code
        if len(self._upstream_codes) < UPSTREAM_CODES and _CODE.fullmatch(code):
            self._upstream_codes.add(code)
            return code
        return "other"

    # States, read when scraped (and once a second with several workers).

    def watch(self, ledger: Any) -> None:
        """The ledger whose backlog the scrape shows (it is built after these metrics)."""
        self._ledger = ledger

    def sample(self) -> None:
        now = time.monotonic()
        for channel in self._channels:
            labels = (channel.name, channel.provider)
            self._breaker.labels(*labels).set(BREAKER[_breaker(channel.health, now)])
            if channel.gate is not None:
                self._queued.labels(*labels).set(channel.gate.waiting())
                self._busy.labels(*labels).set(channel.gate.busy)
        if self._ledger is not None:
            rows, size = self._ledger.backlog()
            self._backlog.set(rows)
            self._spool.set(size)

    async def keep_sampling(self) -> None:
        """With several workers: a worker's states reach the files the others' scrapes read."""
        while True:
            with contextlib.suppress(Exception):  # a metric must never end the gateway's task
                self.sample()
            await asyncio.sleep(SAMPLE_SECONDS)

    def render(self) -> bytes:
        """The text a scrape gets (the states as last sampled)."""
        if self._registry is not None:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)


def _breaker(health: ChannelHealth, now: float) -> str:
    if not health.open_until:
        return "closed"
    return "open" if now < health.open_until else "half_open"


def _channels(catalog: Catalog) -> list[_Channel]:
    seen: dict[str, _Channel] = {}
    for entry in catalog.entries:
        routes: Iterable[Any] = entry.routes
        for route in routes:
            seen.setdefault(route.channel, _Channel(route.channel, route.provider, route.health,
                                                    route.gate))
    return list(seen.values())
