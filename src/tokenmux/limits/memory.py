"""The in-process limiter: one pair of token buckets per key.

A bucket holds up to a minute's allowance and refills continuously, so a key with `rpm: 60` may
burst 60 requests and then gets one a second, and the time until the next admission is exact,
which is what `Retry-After` reports. Tokens are reserved from an estimate when a request is
admitted and settled with the real count when it ends, so concurrent requests see each other.

Every answer to a limited key (JSON, a stream's headers, a 429 or any other error) carries
OpenAI's `x-ratelimit-limit-*`, `x-ratelimit-remaining-*` and `x-ratelimit-reset-*` headers for
requests and for tokens, read from these buckets: the remaining allowance once this request is
admitted, and the time until the bucket is full again, as a duration like "1s", "6m0s" or "20ms".

No single reservation takes more than a whole bucket, whatever `max_tokens` says, and an answer
longer than its reservation leaves the key at most one bucket in debt: so no key ever waits
longer than two refills (two minutes), and `Retry-After` never says more than that.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
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

    @property
    def capacity_int(self) -> int:
        return int(self.capacity)

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 when it already is)."""
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / (self.capacity / 60.0)


def duration(seconds: float) -> str:
    """A duration as OpenAI's reset headers write it: "20ms", "1s", "8.64s", "6m0s"."""
    ms = math.ceil(max(seconds, 0.0) * 1000)  # rounded up: a reset never comes early
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms / 1000, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def _limit_headers(kind: str, bucket: _Bucket, now: float, into: dict[str, str]) -> None:
    rate = bucket.capacity / 60.0
    level = min(bucket.capacity, bucket.level + (now - bucket.stamp) * rate)
    into[f"x-ratelimit-limit-{kind}"] = str(int(bucket.capacity))
    into[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(level)))
    into[f"x-ratelimit-reset-{kind}"] = duration((bucket.capacity - level) / rate)


def limit_headers(requests: _Bucket | None, tokens: _Bucket | None,
                  now: float | None = None) -> dict[str, str]:
    now = time.monotonic() if now is None else now
    headers: dict[str, str] = {}
    if requests is not None:
        _limit_headers("requests", requests, now, headers)
    if tokens is not None:
        _limit_headers("tokens", tokens, now, headers)
    return headers


def refusal(principal: Principal, kind: str, wait: float, headers: dict[str, str],
            part: str) -> RateLimited:
    """The 429 for a key whose KIND ("requests" or "tokens") bucket needs WAIT seconds more;
    PART says which share of the limit this process holds, when it holds one."""
    limit = principal.rpm if kind == "requests" else principal.tpm
    refused = RateLimited(f"Rate limit reached for key {principal.name!r}: {limit} {kind} per "
                          f"minute{part}. Retry in {wait:.1f}s.", retry_after=wait, kind=kind)
    refused.extra_headers = headers
    return refused


@dataclass(frozen=True, slots=True)
class Shortfall:
    """What a bucket lacks: which one ("requests" or "tokens"), and the seconds until it has
    it; with the rate-limit headers as they stand."""

    kind: str
    wait: float
    headers: dict[str, str]


@dataclass(slots=True)
class Reservation:
    bucket: _Bucket | None = None
    reserved: int = 0
    settled: bool = field(default=False)
    requests: _Bucket | None = None  # the key's requests bucket, for the headers
    clock: Callable[[], float] = time.monotonic

    def headers(self) -> dict[str, str] | None:
        """The rate-limit headers of the answer; None for a key without limits."""
        if self.bucket is None and self.requests is None:
            return None
        return limit_headers(self.requests, self.bucket, self.clock())

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
    """SHARE: how many processes hold a key's limits side by side, each with its part (at least
    1), so that together they never admit more than the key's limit."""

    def __init__(self, share: int = 1) -> None:
        self._share = share
        self._requests: dict[str, _Bucket] = {}
        self._tokens: dict[str, _Bucket] = {}
        self._now = time.monotonic

    def _bucket(self, table: dict[str, _Bucket], key_id: str, limit: int, now: float) -> _Bucket:
        capacity = max(1, limit // self._share)
        bucket = table.get(key_id)
        if bucket is None or bucket.capacity != capacity:
            bucket = table[key_id] = _Bucket(float(capacity), float(capacity), now)
        else:
            bucket.refill(now)
        return bucket

    def scope(self) -> str:
        """Where a key's limits are held, as `/health` says it."""
        return "process" if self._share == 1 else f"split 1/{self._share}"

    def part(self) -> str:
        return f" (this worker holds 1/{self._share} of it)" if self._share > 1 else ""

    async def admit(self, principal: Principal, estimated_tokens: int) -> Reservation:
        return self.reserve(principal, estimated_tokens)

    def reserve(self, principal: Principal, estimated_tokens: int) -> Reservation:
        if principal.rpm is None and principal.tpm is None:
            return Reservation()
        taken = self.take(principal.key_id, principal.rpm, principal.tpm, estimated_tokens)
        if isinstance(taken, Shortfall):
            raise refusal(principal, taken.kind, taken.wait, taken.headers, self.part())
        return taken

    async def hold(self, name: str, rpm: int | None, tpm: int | None,
                   estimated_tokens: int) -> Reservation | Shortfall:
        return self.take(name, rpm, tpm, estimated_tokens)

    def take(self, name: str, rpm: int | None, tpm: int | None,
             estimated_tokens: int) -> Reservation | Shortfall:
        """One request and its estimated tokens from NAME's buckets (a key's id, or a
        channel's quota), or what is missing."""
        now = self._now()
        requests = tokens = None
        if rpm is not None:
            requests = self._bucket(self._requests, name, rpm, now)
        if tpm is not None:
            tokens = self._bucket(self._tokens, name, tpm, now)
        if requests is not None:
            wait = requests.wait_for(1)
            if wait > 0:
                return Shortfall("requests", wait, limit_headers(requests, tokens, now))
        needed = 0
        if tokens is not None:
            # A request larger than the whole allowance waits for a full bucket, not forever,
            # and reserves no more than that bucket: the rest is settled from its real count.
            needed = min(estimated_tokens, tokens.capacity_int)
            wait = tokens.wait_for(needed)
            if wait > 0:
                return Shortfall("tokens", wait, limit_headers(requests, tokens, now))
            tokens.level -= needed
        if requests is not None:
            requests.level -= 1
        return Reservation(tokens, needed, requests=requests, clock=self._now)
