"""The Redis store: the records shared by every instance on one Redis.

A claim is one script (claim.lua: look and take in one step); a run's end is another
(settle.lua), which never overwrites a run that took the id after this one's claim expired.
Both are loaded once and run by their SHA. A failure to reach Redis is a 503
`idempotency_unavailable` with `redis_failure: closed`: a keyed request is refused rather than
risk running twice; with `open` (the default), the pipeline serves it as an unkeyed one.
"""

from __future__ import annotations

import math
from importlib import resources

from redis.exceptions import RedisError

from tokenmux.config.schema import Idempotency as Settings
from tokenmux.errors import IdempotencyUnavailable
from tokenmux.idempotency.store import (
    Claimed,
    Failure,
    Found,
    Kept,
    Reused,
    failed_value,
    kept_value,
    read_value,
    running_value,
)
from tokenmux.state import RedisPool

FAILED_TTL_MS = 60_000  # long enough for every waiting repeat to see the failure


def _script(name: str) -> str:
    return resources.files("tokenmux.idempotency").joinpath(name).read_text("utf-8")


class RedisStore:
    def __init__(self, pool: RedisPool, settings: Settings):
        self._pool = pool
        self._ttl_ms = max(1, math.ceil(settings.ttl * 1000))
        self._sources = _script("claim.lua"), _script("settle.lua")

    def start(self) -> None:
        """The scripts bound to the open pool (each is loaded once, on its first use)."""
        claim, settle = self._sources
        self._claim = self._pool.client.register_script(claim)
        self._settle = self._pool.client.register_script(settle)

    def _unavailable(self, exc: BaseException) -> IdempotencyUnavailable:
        self._pool.failed(exc)
        return IdempotencyUnavailable(
            f"The gateway's Redis does not answer ({type(exc).__name__}); a request with an "
            "idempotency key cannot be run safely now.")

    def _key(self, key: str) -> str:
        return self._pool.key("idem", key)

    async def claim(self, key: str, print_: bytes, token: str, hold_s: float) -> Found:
        try:
            answer = await self._claim(keys=[self._key(key)], args=[
                print_, running_value(print_, token), max(1, math.ceil(hold_s * 1000))])
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from None
        if answer == b"C":
            return Claimed()
        if answer == b"M":
            return Reused()
        return read_value(answer)

    async def keep(self, key: str, token: str, print_: bytes, kept: Kept) -> None:
        await self._end(key, print_, token, kept_value(print_, kept), self._ttl_ms)

    async def free(self, key: str, token: str, print_: bytes,
                   failure: Failure | None) -> None:
        value = b"" if failure is None else failed_value(print_, token, failure)
        await self._end(key, print_, token, value, FAILED_TTL_MS)

    async def look(self, key: str) -> Found:
        try:
            value = await self._pool.client.get(self._key(key))
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from None
        return read_value(value if isinstance(value, bytes) else None)

    async def _end(self, key: str, print_: bytes, token: str, value: bytes, px: int) -> None:
        try:
            await self._settle(keys=[self._key(key)],
                               args=[running_value(print_, token), value, px])
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from None



