"""Per-key rate limits shared by every instance, in Redis, with the in-process limiter's meaning.

Admission is one atomic script (reserve.lua: refill, check, take) and one round trip before the
upstream call; the settle (settle.lua) runs after the answer, off the client's path. Both use
Redis's clock, so instances whose clocks disagree still share one bucket.

When Redis stops answering (the pool knows, see state/redis_pool.py), requests are not held up
by it: the limiter admits on in-process buckets, each instance holding 1/N of every limit, N
being the instances seen alive in the last minute, until Redis answers again. With
`redis_failure: closed`, limited keys are refused with a 503 meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from importlib import resources

from redis.commands.core import AsyncScript

from tokenmux.auth.keys import Principal
from tokenmux.errors import LimitsUnavailable
from tokenmux.limits.memory import (
    MemoryLimiter,
    Reservation,
    Shortfall,
    _Bucket,
    limit_headers,
    refusal,
)
from tokenmux.state import RedisPool
from tokenmux.state.redis_pool import FAILURES

log = logging.getLogger("tokenmux.limits")

SETTLE_EVERY_S = 0.05  # settles owed are sent together at most this late
KEEP_MS = 130_000  # an idle bucket is full again within two minutes (one of debt, one to fill)


def _script(name: str) -> str:
    return (resources.files("tokenmux.limits") / name).read_text()


@dataclass(slots=True)
class SharedReservation(Reservation):
    limiter: SharedLimiter | None = None
    tokens_key: str = ""  # the shared tokens bucket, in Redis

    def settle(self, actual_tokens: int) -> None:
        if self.settled:
            return
        reserved = self.reserved
        Reservation.settle(self, actual_tokens)  # the local copy, for the answer's headers
        if self.limiter is not None and self.bucket is not None and actual_tokens != reserved:
            self.limiter.settle_later(self.tokens_key, self.bucket.capacity_int,
                                      reserved - actual_tokens)


class SharedLimiter:
    def __init__(self, pool: RedisPool):
        self._pool = pool
        self._reserve: AsyncScript | None = None
        self._settle: AsyncScript | None = None
        self._fallback = MemoryLimiter()
        self._fallback_outage = 0  # the outage the in-process buckets were made for
        self._owed: dict[tuple[str, int], int] = {}  # (tokens bucket, tpm) → tokens to give back
        self._flush: asyncio.Task[None] | None = None

    def start(self) -> None:
        """After the pool has opened: the scripts are sent by hash, loaded once on a miss."""
        self._reserve = self._pool.client.register_script(_script("reserve.lua"))
        self._settle = self._pool.client.register_script(_script("settle.lua"))

    @property
    def degraded(self) -> bool:
        return self._pool.down

    def scope(self) -> str:
        return self._in_process().scope() if self.degraded else "redis"

    @property
    def refusing(self) -> bool:
        return self.degraded and self._pool.closed

    async def admit(self, principal: Principal, estimated_tokens: int) -> Reservation:
        if principal.rpm is None and principal.tpm is None:
            return Reservation()
        taken = await self.hold(principal.key_id, principal.rpm, principal.tpm,
                                estimated_tokens)
        if isinstance(taken, Shortfall):
            raise refusal(principal, taken.kind, taken.wait, taken.headers,
                          "" if not self.degraded else self._in_process().part())
        return taken

    async def hold(self, name: str, rpm: int | None, tpm: int | None,
                   estimated_tokens: int) -> Reservation | Shortfall:
        """One request and its estimated tokens from NAME's shared buckets (a key's id, or a
        channel's quota), or what is missing."""
        if self.degraded:
            return self._degraded(name, rpm, tpm, estimated_tokens)
        assert self._reserve is not None, "the shared limiter has not been started"
        keys = [self._pool.key("rl", name, "requests"), self._pool.key("rl", name, "tokens")]
        try:
            verdict, wait, requests, tokens, reserved = await self._reserve(
                keys=keys, args=["" if rpm is None else rpm, "" if tpm is None else tpm,
                                 estimated_tokens, KEEP_MS])
        except FAILURES as exc:
            self._pool.failed(exc)
            return self._degraded(name, rpm, tpm, estimated_tokens)
        now = time.monotonic()
        request_bucket = None if rpm is None else _Bucket(float(rpm), float(requests), now)
        token_bucket = None if tpm is None else _Bucket(float(tpm), float(tokens), now)
        if verdict != b"ok":
            return Shortfall(verdict.decode(), float(wait),
                             limit_headers(request_bucket, token_bucket, now))
        return SharedReservation(token_bucket, int(reserved), requests=request_bucket,
                                 limiter=self, tokens_key=keys[1])

    def _in_process(self) -> MemoryLimiter:
        """The buckets of the current outage, each holding this instance's part."""
        if self._fallback_outage != self._pool.outages:
            self._fallback_outage = self._pool.outages
            self._fallback = MemoryLimiter(share=self._pool.instances)
        return self._fallback

    def _degraded(self, name: str, rpm: int | None, tpm: int | None,
                  estimated_tokens: int) -> Reservation | Shortfall:
        if self._pool.closed:
            raise LimitsUnavailable(
                "The rate limits' shared store is unreachable and the gateway is configured "
                "to refuse rather than guess (redis_failure: closed). Retry shortly.")
        return self._in_process().take(name, rpm, tpm, estimated_tokens)

    def settle_later(self, tokens_key: str, tpm: int, delta: int) -> None:
        """Owed to a shared tokens bucket; sent with the others owed within SETTLE_EVERY_S, in
        one round trip, so that a settle costs the request path next to nothing."""
        if self.degraded:
            return
        bucket = (tokens_key, tpm)
        self._owed[bucket] = self._owed.get(bucket, 0) + delta
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._settle_owed())

    async def _settle_owed(self) -> None:
        await asyncio.sleep(SETTLE_EVERY_S)
        owed, self._owed = self._owed, {}
        assert self._settle is not None
        try:
            async with self._pool.client.pipeline(transaction=False) as pipe:
                for (bucket, tpm), delta in owed.items():
                    await self._settle(keys=[bucket], args=[tpm, delta, KEEP_MS], client=pipe)
                await pipe.execute()
        except FAILURES as exc:
            self._pool.failed(exc)
        except Exception:  # a settle must never take the loop's other work down with it
            log.exception("settling keys' tokens in Redis failed")

    async def close(self) -> None:
        if self._flush is not None:
            with contextlib.suppress(Exception):
                await self._flush
