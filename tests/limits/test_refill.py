"""A bucket refills to its capacity and no further: a key idle for an hour still bursts only
its minute's allowance. On the limiter's controlled clock, as in test_memory.py."""

from __future__ import annotations

import pytest

from tokenmux.auth import Principal
from tokenmux.errors import RateLimited
from tokenmux.limits import MemoryLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("kind", ["requests", "tokens"])
def test_an_idle_key_bursts_no_more_than_its_allowance(kind):
    limiter, clock = MemoryLimiter(), Clock()
    limiter._now = clock  # the one seam a test needs: time
    key = Principal("idle", "team", rpm=6) if kind == "requests" else Principal(
        "idle", "team", tpm=600)
    amount = 1 if kind == "requests" else 100
    limiter.reserve(key, amount).settle(amount)
    clock.now += 3600  # an hour idle: sixty refills' worth, capped at one bucket
    for _ in range(6):
        limiter.reserve(key, amount).settle(amount)
    with pytest.raises(RateLimited) as caught:
        limiter.reserve(key, amount).settle(amount)
    assert caught.value.type == kind
    assert caught.value.retry_after == pytest.approx(10.0)  # a sixth of the minute
