"""The in-process limiter: one pair of token buckets per key.

A bucket holds up to a minute's allowance and refills continuously, so a key with `rpm: 60` may
burst 60 requests and then gets one a second, and the time until the next admission is exact,
which is what `Retry-After` reports. Tokens are reserved from an estimate when a request is
admitted and settled with the real count when it ends, so concurrent requests see each other.

No single reservation takes more than a whole bucket, whatever `max_tokens` says, and an answer
longer than its reservation leaves the key at most one bucket in debt: so no key ever waits
longer than two refills (two minutes), and `Retry-After` never says more than that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tokenmux.auth.keys import Principal
from tokenmux.errors import RateLimited


@dataclass(slots=True)
class _Bucket:
    capacity: float
    level: float
    stamp: float

    def refill(self, now: float) -> None:
        rate = self.capacity / 60.0
        self.level = min(self.capacity, self.level + (now - self.stamp) * rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 when it already is)."""
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / (self.capacity / 60.0)


@dataclass(slots=True)
class Reservation:
    bucket: _Bucket | None = None
    reserved: int = 0
    settled: bool = field(default=False)

    def settle(self, actual_tokens: int) -> None:
        """Charges the real token count in place of the estimate; a second call does nothing."""
        if self.settled:
            return
        self.settled = True
        bucket = self.bucket
        if bucket is not None:
            # May go below zero: an answer longer than estimated delays the key's next request.
            bucket.level = max(-bucket.capacity, bucket.level - (actual_tokens - self.reserved))


class MemoryLimiter:
    def __init__(self) -> None:
        self._requests: dict[str, _Bucket] = {}
        self._tokens: dict[str, _Bucket] = {}
        self._now = time.monotonic

    def _bucket(self, table: dict[str, _Bucket], key_id: str, capacity: int, now: float) -> _Bucket:
        bucket = table.get(key_id)
        if bucket is None or bucket.capacity != capacity:
            bucket = table[key_id] = _Bucket(float(capacity), float(capacity), now)
        else:
            bucket.refill(now)
        return bucket

    def reserve(self, principal: Principal, estimated_tokens: int) -> Reservation:
        if principal.rpm is None and principal.tpm is None:
            return Reservation()
        now = self._now()
        requests = tokens = None
        if principal.rpm is not None:
            requests = self._bucket(self._requests, principal.key_id, principal.rpm, now)
            wait = requests.wait_for(1)
            if wait > 0:
                raise RateLimited(
                    f"Rate limit reached for key {principal.name!r}: {principal.rpm} requests "
                    f"per minute. Retry in {wait:.1f}s.", retry_after=wait, kind="requests")
        if principal.tpm is not None:
            tokens = self._bucket(self._tokens, principal.key_id, principal.tpm, now)
            # A request larger than the whole allowance waits for a full bucket, not forever,
            # and reserves no more than that bucket: the rest is settled from its real count.
            needed = min(estimated_tokens, principal.tpm)
            wait = tokens.wait_for(needed)
            if wait > 0:
                raise RateLimited(
                    f"Rate limit reached for key {principal.name!r}: {principal.tpm} tokens "
                    f"per minute. Retry in {wait:.1f}s.", retry_after=wait, kind="tokens")
        if requests is not None:
            requests.level -= 1
        if tokens is None:
            return Reservation()
        tokens.level -= needed
        return Reservation(tokens, needed)
