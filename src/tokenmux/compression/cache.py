"""Summaries kept between turns, behind a small interface: get and put by key, with a TTL.

A summary is found by a hash of everything it replaced (every message before its end, in order,
with the key's id, the compression model and the strategy), so only the same conversation of the
same key finds it. The in-process store keeps at most `entries` summaries, the least recently
used leaving first; a shared store (Redis) takes the same calls, which is why they are async.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any, Protocol

import orjson

from tokenmux.state import RedisPool
from tokenmux.state.redis_pool import FAILURES

KEY_PREFIX = "tokenmux:summary:"


class SummaryCache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...


class MemorySummaries:
    """In this process only: a bounded LRU whose entries expire after their TTL."""

    def __init__(self, entries: int):
        self._entries = entries
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        found = self._items.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        self._items[key] = (time.monotonic() + ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._entries:
            self._items.popitem(last=False)


class RedisSummaries:
    """Shared by every instance: a summary one instance wrote is reused by all, kept until its
    TTL. While Redis is away, the in-process store stands in, so a summary is never waited
    for: a lost summary costs one more summariser call, never a failed request."""

    def __init__(self, pool: RedisPool, fallback: MemorySummaries):
        self._pool = pool
        self._fallback = fallback

    def _key(self, key: str) -> str:
        return self._pool.key("summary", key.removeprefix(KEY_PREFIX))

    async def get(self, key: str) -> bytes | None:
        if self._pool.down:
            return await self._fallback.get(key)
        try:
            value = await self._pool.client.get(self._key(key))
        except FAILURES as exc:
            self._pool.failed(exc)
            return await self._fallback.get(key)
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        if self._pool.down:
            await self._fallback.put(key, value, ttl)
            return
        try:
            await self._pool.client.set(self._key(key), value, px=max(1, int(ttl * 1000)))
        except FAILURES as exc:
            self._pool.failed(exc)
            await self._fallback.put(key, value, ttl)


def prefix_keys(messages: list[dict[str, Any]], ends: list[int], scope: str) -> dict[int, str]:
    """The cache key of each prefix `messages[:end]`, in one pass over the messages."""
    digest = hashlib.sha256(scope.encode())
    keys: dict[int, str] = {}
    wanted = set(ends)
    for i, message in enumerate(messages[:max(ends, default=0)]):
        digest.update(orjson.dumps(message, option=orjson.OPT_SORT_KEYS))
        digest.update(b"\x00")
        if i + 1 in wanted:
            keys[i + 1] = KEY_PREFIX + digest.copy().hexdigest()
    return keys
