"""Per-key rate limits shared by every instance, in Redis, with the in-process limiter's meaning.

Admission is one atomic script (reserve.lua: refill, check, take) and one round trip before the
upstream call; the settle (settle.lua) runs after the answer, off the client's path. Both use
Redis's clock, so instances whose clocks disagree still share one bucket.

When Redis stops answering, requests are not held up by it: the limiter turns `degraded`
(logged once) and admits on in-process buckets, each instance holding 1/N of every limit, N
being the instances that have been seen alive in the last minute (a heartbeat set in Redis,
kept up by every instance). A heartbeat that gets through again turns it back to `ok`. With
`redis_failure: closed`, a degraded limiter refuses limited keys with a 503 instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from tokenmux.auth.keys import Principal
from tokenmux.errors import LimitsUnavailable
from tokenmux.limits.memory import MemoryLimiter, Reservation, _Bucket, limit_headers, refusal
from tokenmux.state import RedisPool

log = logging.getLogger("tokenmux.limits")

KEEP_MS = 130_000  # an idle bucket is full again within two minutes (one of debt, one to fill)
HEARTBEAT_S = 5.0  # how often an instance says it is alive
PROBE_S = 1.0  # how often a degraded limiter asks whether Redis is back
ALIVE_S = 60.0  # an instance seen within this is counted among those sharing the limits
FAILURES = (RedisError, OSError, asyncio.TimeoutError)


def _script(name: str) -> str:
    return (resources.files("tokenmux.limits") / name).read_text()


@dataclass(slots=True)
class SharedReservation(Reservation):
    limiter: SharedLimiter | None = None
    principal: Principal | None = None

    def settle(self, actual_tokens: int) -> None:
        if self.settled:
            return
        reserved = self.reserved
        Reservation.settle(self, actual_tokens)  # the local copy, for the answer's headers
        if (self.limiter is not None and self.principal is not None and self.bucket is not None
                and actual_tokens != reserved):
            self.limiter.settle_later(self.principal, reserved - actual_tokens)


class SharedLimiter:
    def __init__(self, pool: RedisPool, instance: str, *, closed: bool = False):
        self._pool = pool
        self._instance = instance
        self._closed = closed
        self._reserve: AsyncScript | None = None
        self._settle: AsyncScript | None = None
        self._fallback = MemoryLimiter()
        self.degraded = False
        self.instances = 1
        self._pending: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        """After the pool has opened: the scripts are sent by hash, loaded once on a miss."""
        self._reserve = self._pool.client.register_script(_script("reserve.lua"))
        self._settle = self._pool.client.register_script(_script("settle.lua"))

    @property
    def pool(self) -> RedisPool:
        return self._pool

    def scope(self) -> str:
        return self._fallback.scope() if self.degraded else "redis"

    @property
    def refusing(self) -> bool:
        return self.degraded and self._closed

    def _keys(self, principal: Principal) -> list[str]:
        return [self._pool.key("rl", principal.key_id, "requests"),
                self._pool.key("rl", principal.key_id, "tokens")]

    async def admit(self, principal: Principal, estimated_tokens: int) -> Reservation:
        if principal.rpm is None and principal.tpm is None:
            return Reservation()
        if self.degraded:
            return self._degraded(principal, estimated_tokens)
        assert self._reserve is not None, "the shared limiter has not been started"
        try:
            verdict, wait, requests, tokens, reserved = await self._reserve(
                keys=self._keys(principal),
                args=["" if principal.rpm is None else principal.rpm,
                      "" if principal.tpm is None else principal.tpm,
                      estimated_tokens, KEEP_MS])
        except FAILURES as exc:
            self.turn_degraded(exc)
            return self._degraded(principal, estimated_tokens)
        now = time.monotonic()
        request_bucket = None if principal.rpm is None else _Bucket(
            float(principal.rpm), float(requests), now)
        token_bucket = None if principal.tpm is None else _Bucket(
            float(principal.tpm), float(tokens), now)
        if verdict != b"ok":
            kind = verdict.decode()
            raise refusal(principal, kind, float(wait), limit_headers(
                request_bucket, token_bucket, now), "")
        return SharedReservation(token_bucket, int(reserved), requests=request_bucket,
                                 limiter=self, principal=principal)

    def _degraded(self, principal: Principal, estimated_tokens: int) -> Reservation:
        if self._closed:
            raise LimitsUnavailable(
                "The rate limits' shared store is unreachable and the gateway is configured "
                "to refuse rather than guess (redis_failure: closed). Retry shortly.")
        return self._fallback.reserve(principal, estimated_tokens)

    def settle_later(self, principal: Principal, delta: int) -> None:
        if self.degraded or principal.tpm is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._settle_now(principal.tpm, self._keys(principal)[1], delta))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle_now(self, tpm: int, bucket: str, delta: int) -> None:
        assert self._settle is not None
        try:
            await self._settle(keys=[bucket], args=[tpm, delta, KEEP_MS])
        except FAILURES as exc:
            self.turn_degraded(exc)
        except Exception:  # a settle must never take the task's loop down with it
            log.exception("settling a key's tokens in Redis failed")

    def turn_degraded(self, exc: BaseException) -> None:
        if self.degraded:
            return
        self.degraded = True
        self._fallback = MemoryLimiter(share=max(1, self.instances))
        log.warning("Redis does not answer (%s): rate limits are held in process, each "
                    "instance with 1/%d of every key's, until it does", type(exc).__name__,
                    max(1, self.instances))

    async def heartbeat(self) -> None:
        """Runs for the life of the process: says this instance is alive, counts the others,
        and while degraded asks Redis every second whether it is back."""
        alive = self._pool.key("instances")
        while True:
            try:
                client = self._pool.client
                now = time.time()
                async with client.pipeline(transaction=True) as pipe:
                    pipe.zadd(alive, {self._instance: now})
                    pipe.zremrangebyscore(alive, "-inf", now - ALIVE_S)
                    pipe.zcard(alive)
                    pipe.expire(alive, int(ALIVE_S * 2))
                    answers = await pipe.execute()
                self.instances = max(1, int(answers[2]))
                if self.degraded:
                    self.degraded = False
                    log.warning("Redis answers again: rate limits are shared again")
            except FAILURES as exc:
                self.turn_degraded(exc)
            except Exception:  # the heartbeat must outlive any surprise, or health would lie
                log.exception("the rate limits' heartbeat failed; trying again")
            await asyncio.sleep(PROBE_S if self.degraded else HEARTBEAT_S)

    async def close(self) -> None:
        for task in list(self._pending):
            with contextlib.suppress(Exception):
                await task
