"""Budgets shared by every instance, in Redis: one spending counter per key and period for the
whole fleet, so concurrent requests on many machines cannot overshoot it together.

Admission is one atomic script (reserve.lua) and one round trip, before the upstream call; the
charge (settle.lua) runs after the answer, off the client's path. Redis's counter is seeded from
the ledger (seed.lua, set only if absent) once per instance and key, off the request path.

Redis away (the pool knows, see state/redis_pool.py): budgets are held in process, each
instance with 1/N of what is left, N being the instances last seen alive, or refused with a 503
under `redis_failure: closed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript
from sqlalchemy import Engine

from tokenmux.auth.keys import Principal
from tokenmux.budgets.memory import MemoryBudgets, over_budget, period_kind
from tokenmux.budgets.money import Hold, period_of
from tokenmux.budgets.spent import OncePerKey, read_spent
from tokenmux.errors import LimitsUnavailable
from tokenmux.state import RedisPool
from tokenmux.state.redis_pool import FAILURES

log = logging.getLogger("tokenmux.budgets")

HOLD_MINUTES = 10  # a reservation is counted this long at most: longer than any request lasts
_KEEP_MS = {"day": 2 * 86_400_000, "month": 63 * 86_400_000, "total": 0}


def _script(name: str) -> str:
    return (resources.files("tokenmux.budgets") / name).read_text()


class SharedBudgets:
    def __init__(self, pool: RedisPool, engine: Engine):
        self._pool = pool
        self._engine = engine
        self._reserve: AsyncScript | None = None
        self._settle: AsyncScript | None = None
        self._seed: AsyncScript | None = None
        self._seeded = OncePerKey()
        self._fallback: MemoryBudgets | None = None
        self._pending: set[asyncio.Task[Any]] = set()

    async def start(self, principals: Iterable[Principal]) -> None:
        """After the pool has opened: the scripts are sent by hash, loaded once on a miss; each
        key with a budget is seeded from the ledger before serving."""
        client = self._pool.client
        self._reserve = client.register_script(_script("reserve.lua"))
        self._settle = client.register_script(_script("settle.lua"))
        self._seed = client.register_script(_script("seed.lua"))
        with contextlib.suppress(*FAILURES):  # Redis away at start: seeded when it is back
            await asyncio.gather(*(self._learn(p) for p in principals if p.budget is not None))

    def scope(self) -> str:
        return self._local().scope() if self._pool.down else "redis"

    def _spending(self, key_id: str, period: str) -> str:
        return self._pool.key("budget", key_id, period)

    async def admit(self, principal: Principal, worst: int) -> Hold:
        assert principal.budget is not None and self._reserve is not None
        if not self._pool.down:
            self._fallback = None
            try:
                return await self._admit(principal, worst)
            except FAILURES as exc:
                self._pool.failed(exc)
        if self._pool.closed:
            raise LimitsUnavailable(
                "The budgets' shared store is unreachable and the gateway is configured to "
                "refuse rather than guess (redis_failure: closed). Retry shortly.")
        return await self._local().admit(principal, worst)

    async def _admit(self, principal: Principal, worst: int) -> Hold:
        assert principal.budget is not None and self._reserve is not None
        await self._learn(principal)
        period, _ = period_of(principal.budget_period, datetime.now(UTC))
        held = self._pool.key("budget", principal.key_id, "held") + ":"
        verdict, left, minute = await self._reserve(
            keys=[self._spending(principal.key_id, period), held],
            args=[principal.budget, worst, _KEEP_MS[principal.budget_period], HOLD_MINUTES])
        if verdict != b"ok":
            raise over_budget(principal, int(left))
        return Hold(period, worst, int(left), self._charge_for(principal), held + minute.decode())

    def _charge_for(self, principal: Principal) -> Callable[[Hold, int, datetime], None]:
        def charge(hold: Hold, actual: int, when: datetime) -> None:
            period, _ = period_of(period_kind(hold.period), when)
            task = asyncio.get_running_loop().create_task(self._charge(
                hold, actual, self._spending(principal.key_id, period),
                _KEEP_MS[principal.budget_period]))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        return charge

    async def _charge(self, hold: Hold, actual: int, spending: str, keep: int) -> None:
        assert self._settle is not None
        try:
            await self._settle(keys=[hold.bucket, spending], args=[hold.reserved, actual, keep])
        except FAILURES as exc:
            # The ledger has the row; Redis's count misses it until the period ends.
            self._pool.failed(exc)
        except Exception:  # a charge must never take the loop's task down with it
            log.exception("charging a key's budget in Redis failed")

    async def _learn(self, principal: Principal) -> None:
        await self._seeded.run(principal.key_id, lambda: self._read(principal))

    async def _read(self, principal: Principal) -> None:
        assert self._seed is not None
        period, start = period_of(principal.budget_period, datetime.now(UTC))
        spent = await read_spent(self._engine, principal.key_id, start)
        await self._seed(keys=[self._spending(principal.key_id, period)],
                         args=[spent, _KEEP_MS[principal.budget_period]])

    def _local(self) -> MemoryBudgets:
        """The in-process budgets of a degraded spell, made anew for each (so that what they
        read from the ledger is current), each instance holding 1/N of what is left."""
        share = max(1, self._pool.instances)
        if self._fallback is None or self._fallback.share != share:
            self._fallback = MemoryBudgets(self._engine, share=share)
        return self._fallback

    async def close(self) -> None:
        for task in list(self._pending):
            with contextlib.suppress(Exception):
                await task
