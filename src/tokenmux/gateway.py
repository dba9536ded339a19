"""The gateway's parts, built once from a validated config, with their start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from sqlalchemy import Engine

from tokenmux.admin.rollup import Rollup
from tokenmux.auth import KeyCache, Principal, hash_key
from tokenmux.budgets import MemoryBudgets, SharedBudgets
from tokenmux.compression import MemorySummaries, RedisSummaries, SummaryCache
from tokenmux.config import Config
from tokenmux.config.schema import NO_EMBEDDINGS
from tokenmux.db import connect
from tokenmux.idempotency import Runs, runs_for
from tokenmux.idempotency.redis import RedisStore
from tokenmux.ledger import LedgerWriter
from tokenmux.ledger.cost import Pricer
from tokenmux.limits import KeyConcurrency, MemoryLimiter, SharedLimiter
from tokenmux.providers import FAN_OUT, adapter_for
from tokenmux.providers.base import Embedder, Provider
from tokenmux.providers.echo import EchoProvider
from tokenmux.providers.fanout import FanOut
from tokenmux.routing import Catalog
from tokenmux.routing.catalog import ECHO_PROVIDER
from tokenmux.state import RedisPool
from tokenmux.telemetry import Telemetry
from tokenmux.upstream import HttpProvider, new_session

log = logging.getLogger(__name__)

KEY_POLL_SECONDS = 0.5
YOUNG_COLLECTION_EVERY = 20_000  # allocations between the cycle collector's young passes


@dataclass
class Gateway:
    config: Config
    catalog: Catalog
    keys: KeyCache
    limiter: MemoryLimiter | SharedLimiter
    providers: Mapping[str, Provider]
    ledger: LedgerWriter
    engine: Engine
    idempotency: Runs
    budgets: MemoryBudgets | SharedBudgets
    redis: RedisPool | None = None  # the pool every Redis-backed part uses, when configured
    shared_records: RedisStore | None = None
    rng: random.Random = field(default_factory=random.Random)
    pricer: Pricer = field(default_factory=Pricer)  # prices the answers of keys with a budget
    concurrency: KeyConcurrency = field(default_factory=lambda: KeyConcurrency(None))
    summaries: SummaryCache = field(default_factory=lambda: MemorySummaries(10_000))
    _session: aiohttp.ClientSession | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _key_watch: asyncio.Task[None] | None = None
    # The handlers of chat requests in flight, so that a stop can end them when its grace is out.
    inflight: set[asyncio.Task[Any]] = field(default_factory=set)
    draining: bool = False  # the stop's grace is out: a cancelled request ends as shutting_down
    workers: int = 1  # processes serving the same port on this machine
    instance: str = ""  # this process, as its ledger rows name it: host:port/worker index
    _grace: asyncio.Task[None] | None = None
    telemetry: Telemetry | None = None  # `GET /metrics` and the traces (telemetry/)
    # The providers whose kind has an embeddings API, by name (`POST /v1/embeddings`).
    embedders: Mapping[str, Embedder] = field(default_factory=dict)
    rollup: Rollup | None = None  # the usage aggregates of past days (admin/rollup.py)
    _rollup_task: asyncio.Task[None] | None = None

    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "the gateway has not been started"
        return self._session

    async def start(self) -> None:
        await asyncio.to_thread(self.keys.refresh)
        await self.ledger.start()
        if self.redis is not None:
            await self.redis.start()
            self._tasks.append(asyncio.create_task(self.redis.heartbeat(), name="redis-heartbeat"))
            if self.shared_records is not None:
                self.shared_records.start()
            if isinstance(self.limiter, SharedLimiter):
                self.limiter.start()
        # What each key with a budget has spent in its period, read from the ledger once.
        await self.budgets.start(self.keys.principals())
        self._session = new_session()
        self._key_watch = asyncio.create_task(self.keys.watch(), name="key-watch")
        self._tasks.append(self._key_watch)
        if self.rollup is not None:
            self._rollup_task = asyncio.create_task(self.rollup.keep(), name="usage-rollup")
            self._tasks.append(self._rollup_task)
        metrics = None if self.telemetry is None else self.telemetry.metrics
        if metrics is not None and metrics.multiprocess:
            self._tasks.append(asyncio.create_task(metrics.keep_sampling(), name="metrics"))
        # What start built (config, catalog, price tables, tokenizer) lives as long as the
        # process: frozen, it is no longer rescanned by every full garbage collection, which
        # otherwise costs the request path a pause proportional to all of it.
        gc.freeze()
        # Reference counting frees almost all a request makes; the cycle collector is for the
        # rest. At its default (a young collection every 700 allocations) it walked the live
        # objects of every request in flight hundreds of times a second, for about a fifth of a
        # JSON request's CPU at 32 connections (bench/README.md, "Profiles"). Every 20,000 it
        # still runs many times a second under load, so cycles go as before: the soak is flat.
        gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])

    async def stop(self) -> None:
        # Requests can outlive their handlers (a keyed request whose client left runs on):
        # they end, or the grace ends them, before the ledger closes, so their rows are kept.
        if self._grace is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._grace
        if self.inflight:
            await asyncio.gather(*self.inflight, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
        if isinstance(self.limiter, SharedLimiter):
            await self.limiter.close()
        if isinstance(self.budgets, SharedBudgets):
            await self.budgets.close()
        if self.redis is not None:
            await self.redis.stop()
        await self.ledger.close()
        if self.telemetry is not None:
            await asyncio.to_thread(self.telemetry.close)
        self.engine.dispose()

    def begin_stop(self, grace: float) -> None:
        """No more requests come; those in flight get GRACE seconds, then are ended."""
        self._grace = asyncio.create_task(self._end_inflight(grace), name="stop-grace")
        self._tasks.append(self._grace)

    async def _end_inflight(self, grace: float) -> None:
        deadline = asyncio.get_running_loop().time() + grace
        while self.inflight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(min(0.1, grace))
        if not self.inflight:
            return
        log.warning("stop: the grace of %g s is out; ending %d requests in flight", grace,
                    len(self.inflight))
        self.draining = True
        for task in list(self.inflight):
            task.cancel()

    def keys_health(self) -> str:
        """`ok`, `stale` (refreshes fail or hang) or `stopped` (the watch ended: a bug)."""
        if self._key_watch is not None and self._key_watch.done():
            return "stopped"
        return self.keys.health()

    def rollup_health(self) -> str:
        """`ok`, `failing` (a day could not be rolled up: its summaries read its rows) or
        `stopped` (the task ended: a bug)."""
        if self.rollup is None:
            return "off"
        if self._rollup_task is not None and self._rollup_task.done():
            return "stopped"
        return self.rollup.health()

    def database_ready(self) -> bool:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True


def _ledger(config: Config, engine: Engine, instance: str, telemetry: Telemetry) -> LedgerWriter:
    settings = config.ledger
    wal_dir = settings.wal_dir or (
        config.database + ".ledger" if "://" not in config.database else "tokenmux-ledger")
    return LedgerWriter(
        engine, wal_dir, batch_size=settings.batch_size,
        flush_interval=settings.flush_interval_ms / 1000, max_pending=settings.max_pending,
        fsync=settings.fsync, retry_max=settings.retry_max_ms / 1000,
        legacy_spool=settings.spool, instance=instance, meter=telemetry.meter(),
    )


def build(config: Config, *, engine: Engine | None = None, workers: int = 1,
          worker_index: int = 0, port: int | None = None) -> Gateway:
    """WORKERS processes serve this machine's port, this one as WORKER_INDEX; without a shared
    store each holds 1/WORKERS of every key's rate limits."""
    engine = engine or connect(config.database)
    # Unique among the gateways of a fleet: one machine may run several, on ports of their own.
    port = config.server.port if port is None else port
    instance = f"{socket.gethostname()}:{port}/{worker_index}"
    redis = None if config.redis is None else RedisPool(
        config.redis, config.redis_prefix, instance=instance,
        closed=config.redis_failure == "closed")
    idempotency, shared_records = runs_for(config, redis)
    in_process = MemorySummaries(config.compression.cache_entries)
    summaries: SummaryCache = in_process if redis is None else RedisSummaries(redis, in_process)
    static: dict[str, Principal] = {}
    if config.admin_key:
        static[hash_key(config.admin_key)] = Principal("admin", "admin", is_admin=True)
    catalog = Catalog(config)
    telemetry = Telemetry(config, catalog)
    gateway = Gateway(
        config=config,
        catalog=catalog,
        keys=KeyCache(engine, static=static, poll_interval=KEY_POLL_SECONDS),
        limiter=MemoryLimiter(share=workers) if redis is None else SharedLimiter(redis),
        budgets=MemoryBudgets(engine, share=workers) if redis is None else SharedBudgets(
            redis, engine),
        providers={},
        ledger=_ledger(config, engine, instance, telemetry),
        engine=engine,
        idempotency=idempotency,
        redis=redis,
        shared_records=shared_records,
        concurrency=KeyConcurrency(config.server.max_concurrent_per_key),
        workers=workers,
        instance=instance,
        summaries=summaries,
        telemetry=telemetry,
        rollup=Rollup(engine),
    )
    if telemetry.metrics is not None:
        telemetry.metrics.watch(gateway.ledger)
    providers: dict[str, Provider] = {ECHO_PROVIDER: EchoProvider()}
    embedders: dict[str, Embedder] = {}
    for name, provider in config.providers.items():
        http = HttpProvider(gateway.session, adapter_for(provider), provider)
        providers[name] = FanOut(http) if provider.kind in FAN_OUT else http
        if provider.kind not in NO_EMBEDDINGS:
            embedders[name] = http
    gateway.providers = providers
    gateway.embedders = embedders
    return gateway
