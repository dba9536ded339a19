"""Completed responses kept for `previous_response_id`: get and put by key and id, with a TTL.

A record is the response's conversation in chat form (its input and its answer, instructions
left out) and the response object itself, as JSON bytes: a continuation decodes a fresh copy, so
nothing it does changes what is kept. Records are scoped by API key: a key continues only its
own responses. The in-process store is bounded (at most `MAX_ENTRIES` records and `MAX_BYTES`
of them, the oldest leaving first, each for `TTL_S`); with Redis, every instance shares them,
kept by Redis for the same TTL, and while Redis is away the in-process store stands in.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol

from tokenmux.state import RedisPool
from tokenmux.state.redis_pool import FAILURES

TTL_S = 3600.0
MAX_ENTRIES = 10_000
MAX_BYTES = 64 * 1024 * 1024
MAX_RECORD_BYTES = 4 * 1024 * 1024  # a longer conversation is not kept (the answer says so)


class ResponseStore(Protocol):
    async def get(self, scope: str, response_id: str) -> bytes | None: ...

    async def put(self, scope: str, response_id: str, record: bytes) -> bool: ...


class MemoryResponses:
    def __init__(self, entries: int = MAX_ENTRIES, size: int = MAX_BYTES, ttl: float = TTL_S):
        self._entries, self._size, self._ttl = entries, size, ttl
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    async def get(self, scope: str, response_id: str) -> bytes | None:
        found = self._items.get(f"{scope}:{response_id}")
        if found is None:
            return None
        if found[0] <= time.monotonic():
            self._drop(f"{scope}:{response_id}")
            return None
        return found[1]

    async def put(self, scope: str, response_id: str, record: bytes) -> bool:
        if len(record) > MAX_RECORD_BYTES:
            return False
        key = f"{scope}:{response_id}"
        self._drop(key)
        self._items[key] = (time.monotonic() + self._ttl, record)
        self._bytes += len(record)
        # All share one TTL: the oldest is also the first to expire.
        while self._items and (len(self._items) > self._entries or self._bytes > self._size
                               or next(iter(self._items.values()))[0] <= time.monotonic()):
            self._drop(next(iter(self._items)))
        return True

    def _drop(self, key: str) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])


class RedisResponses:
    def __init__(self, pool: RedisPool, fallback: MemoryResponses, ttl: float = TTL_S):
        self._pool, self._fallback, self._ttl = pool, fallback, ttl

    def _key(self, scope: str, response_id: str) -> str:
        return self._pool.key("response", scope, response_id)

    async def get(self, scope: str, response_id: str) -> bytes | None:
        if not self._pool.down:
            try:
                value = await self._pool.client.get(self._key(scope, response_id))
            except FAILURES as exc:
                self._pool.failed(exc)
            else:
                if isinstance(value, bytes):
                    return value
        # Kept here while Redis was away, or never shared.
        return await self._fallback.get(scope, response_id)

    async def put(self, scope: str, response_id: str, record: bytes) -> bool:
        if len(record) > MAX_RECORD_BYTES:
            return False
        if not self._pool.down:
            try:
                await self._pool.client.set(self._key(scope, response_id), record,
                                            px=int(self._ttl * 1000))
                return True
            except FAILURES as exc:
                self._pool.failed(exc)
        return await self._fallback.put(scope, response_id, record)


def store_for(redis: RedisPool | None) -> ResponseStore:
    memory = MemoryResponses()
    return memory if redis is None else RedisResponses(redis, memory)
