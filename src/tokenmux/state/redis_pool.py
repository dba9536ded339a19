"""The gateway's connection pool to Redis: one per process, opened at start, closed at stop.

Every part that keeps shared state in Redis (rate limits, idempotency records, compression
summaries) takes its client and its key prefix from here, so a process holds one pool whatever
uses it, and one config (`redis`, `redis_prefix`, `redis_failure`) names where all of it lives.

The pool also knows whether Redis answers. The first part to meet a failure says so
(`failed()`), which is logged once; from then on no request waits on Redis: each part does
without it, as `redis_failure` says, until the heartbeat gets through again. The heartbeat
(every 5 s, every second while Redis is away) also keeps the set of live instances, whose count
is how many share the limits while each holds its part alone.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("tokenmux.redis")

SOCKET_TIMEOUT_S = 2.0  # one command may take this long before it counts as Redis being down
HEARTBEAT_S = 5.0  # how often an instance says it is alive
PROBE_S = 1.0  # how often, while Redis is away, it asks whether Redis is back
ALIVE_S = 60.0  # an instance seen within this is counted among the live ones
FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class RedisPool:
    def __init__(self, url: str, prefix: str, *, instance: str = "", closed: bool = False):
        self.prefix = prefix
        self.instance = instance
        self.closed = closed  # `redis_failure: closed`: refuse what needs Redis while it is away
        self._url = url
        self._client: Redis | None = None
        self.down = False
        self.outages = 0  # how many times Redis went away: a part's cue to start afresh
        self.instances = 1  # live instances, as the last heartbeat counted them

    @property
    def client(self) -> Redis:
        assert self._client is not None, "the Redis pool has not been opened"
        return self._client

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def failed(self, exc: BaseException) -> None:
        if self.down:
            return
        self.down = True
        self.outages += 1
        log.warning("Redis does not answer (%s): shared state is held in process (rate limits "
                    "at 1/%d of each key's) until it does", type(exc).__name__, self.instances)

    async def start(self) -> None:
        self._client = Redis.from_url(self._url, socket_timeout=SOCKET_TIMEOUT_S,
                                      socket_connect_timeout=SOCKET_TIMEOUT_S,
                                      health_check_interval=30)
        await self._beat()

    async def heartbeat(self) -> None:
        """Runs for the life of the process, and outlives any failure: /health reads it."""
        while True:
            await asyncio.sleep(PROBE_S if self.down else HEARTBEAT_S)
            await self._beat()

    async def _beat(self) -> None:
        alive = self.key("instances")
        try:
            now = time.time()
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.zadd(alive, {self.instance: now})
                pipe.zremrangebyscore(alive, "-inf", now - ALIVE_S)
                pipe.zcard(alive)
                pipe.expire(alive, int(ALIVE_S * 2))
                answers = await pipe.execute()
            self.instances = max(1, int(answers[2]))
            if self.down:
                self.down = False
                log.warning("Redis answers again: shared state is shared again")
        except FAILURES as exc:
            self.failed(exc)
        except Exception:
            log.exception("the Redis heartbeat failed; trying again")

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
