"""The gateway's connection pool to Redis: one per process, opened at start, closed at stop.

Every part that keeps shared state in Redis (idempotency records today; rate limits and
summaries next) takes its client and its key prefix from here, so a process holds one pool
whatever uses it, and one config (`redis`, `redis_prefix`) names where all of it lives.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

SOCKET_TIMEOUT_S = 2.0  # one command may take this long before it counts as Redis being down


class RedisPool:
    def __init__(self, url: str, prefix: str):
        self.prefix = prefix
        self._url = url
        self._client: Redis | None = None

    @property
    def client(self) -> Redis:
        assert self._client is not None, "the Redis pool has not been opened"
        return self._client

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def start(self) -> None:
        self._client = Redis.from_url(self._url, socket_timeout=SOCKET_TIMEOUT_S,
                                      socket_connect_timeout=SOCKET_TIMEOUT_S,
                                      health_check_interval=30)
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            # Not fatal: each use converts the failure into its own answer (a 503 for a keyed
            # request), and the pool reconnects once Redis is back.
            log.warning("Redis does not answer at start (%s); keyed requests are refused until "
                        "it does", type(exc).__name__)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
