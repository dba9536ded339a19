"""Requests in flight per key: a key may have at most `server.max_concurrent_per_key` at once.

A slot is taken once the key is known, before the body is read, and given back when the request
ends however it ends: answered, streamed to the end, failed, or cut by a client that hung up. A
request over the cap is refused at once with 429 `concurrency_limit_exceeded` and
`Retry-After: 1`; it neither waits nor counts. The count lives in this process: with several
workers each enforces the cap on its own share of the traffic.
"""

from __future__ import annotations

from tokenmux.auth.keys import Principal
from tokenmux.errors import ConcurrencyLimited


class Slot:
    __slots__ = ("_key_id", "_owner")

    def __init__(self, owner: KeyConcurrency | None, key_id: str):
        self._owner = owner
        self._key_id = key_id

    def release(self) -> None:
        """Gives the slot back; a second call does nothing."""
        if self._owner is not None:
            self._owner._release(self._key_id)
            self._owner = None


_UNLIMITED = Slot(None, "")


class KeyConcurrency:
    def __init__(self, limit: int | None):
        self._limit = limit
        self._in_flight: dict[str, int] = {}

    def acquire(self, principal: Principal) -> Slot:
        if self._limit is None:
            return _UNLIMITED
        count = self._in_flight.get(principal.key_id, 0)
        if count >= self._limit:
            raise ConcurrencyLimited(
                f"Too many requests in flight for key {principal.name!r}: at most {self._limit} "
                "at once. Retry when one has finished.")
        self._in_flight[principal.key_id] = count + 1
        return Slot(self, principal.key_id)

    def in_flight(self, key_id: str) -> int:
        return self._in_flight.get(key_id, 0)

    def _release(self, key_id: str) -> None:
        count = self._in_flight[key_id] - 1
        if count:
            self._in_flight[key_id] = count
        else:
            del self._in_flight[key_id]  # a key with nothing in flight costs no memory
