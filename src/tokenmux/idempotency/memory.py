"""The in-process store: the default, and what a restart forgets.

Bounded: at most `idempotency.max_entries` answers and `idempotency.max_bytes` of them; past
either, the oldest kept answer goes first (all share one ttl, so the oldest is also the first
to expire). A running claim needs no bound of its own: each is a request in flight.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from tokenmux.config.schema import Idempotency as Settings
from tokenmux.idempotency.store import (
    Claimed,
    Done,
    Failure,
    Found,
    Free,
    Kept,
    Reused,
    Running,
)


class MemoryStore:
    def __init__(self, settings: Settings):
        self._settings = settings
        self._running: dict[str, tuple[bytes, str]] = {}
        self._kept: OrderedDict[str, tuple[bytes, Kept, float]] = OrderedDict()
        self._bytes = 0

    async def claim(self, key: str, print_: bytes, token: str, hold_s: float) -> Found:
        found = self._find(key)
        if isinstance(found, Free):
            self._running[key] = (print_, token)
            return Claimed()
        held = self._running.get(key)
        kept = self._kept.get(key)
        theirs = held[0] if held is not None else kept[0] if kept is not None else print_
        return found if theirs == print_ else Reused()

    async def keep(self, key: str, token: str, print_: bytes, kept: Kept) -> None:
        if self._running.get(key, (b"", ""))[1] == token:
            del self._running[key]
        if kept.size > self._settings.max_bytes:
            return
        self._drop(key)
        now = time.monotonic()
        while self._kept and next(iter(self._kept.values()))[2] <= now:  # expired, oldest first
            self._drop(next(iter(self._kept)))
        self._kept[key] = (print_, kept, now + self._settings.ttl)
        self._bytes += kept.size
        while (len(self._kept) > self._settings.max_entries
               or self._bytes > self._settings.max_bytes):
            self._drop(next(iter(self._kept)))

    async def free(self, key: str, token: str, print_: bytes,
                   failure: Failure | None) -> None:
        if self._running.get(key, (b"", ""))[1] == token:
            del self._running[key]

    async def look(self, key: str) -> Found:
        return self._find(key)

    def _find(self, key: str) -> Found:
        if (held := self._running.get(key)) is not None:
            return Running(held[1])
        if (kept := self._kept.get(key)) is not None:
            if kept[2] > time.monotonic():
                return Done(kept[1])
            self._drop(key)
        return Free()

    def _drop(self, key: str) -> None:
        old = self._kept.pop(key, None)
        if old is not None:
            self._bytes -= old[1].size
