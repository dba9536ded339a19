"""The in-process limiter's arithmetic, on a controlled clock."""

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


@pytest.fixture
def limiter_and_clock():
    limiter, clock = MemoryLimiter(), Clock()
    limiter._now = clock  # the one seam a test needs: time
    return limiter, clock


def test_requests_per_minute_burst_then_exact_retry_after(limiter_and_clock):
    limiter, clock = limiter_and_clock
    key = Principal("k1", "team", rpm=6)
    for _ in range(6):
        limiter.reserve(key, 1)
    with pytest.raises(RateLimited) as caught:
        limiter.reserve(key, 1)
    assert caught.value.retry_after == pytest.approx(10.0)  # 6 a minute: one every 10 s
    assert caught.value.headers()["Retry-After"] == "10"
    clock.now += 9.9
    with pytest.raises(RateLimited):
        limiter.reserve(key, 1)
    clock.now += 0.2
    limiter.reserve(key, 1)


def test_tokens_are_reserved_then_settled_to_the_real_count(limiter_and_clock):
    limiter, _clock = limiter_and_clock
    key = Principal("k2", "team", tpm=1000)
    first = limiter.reserve(key, 800)
    with pytest.raises(RateLimited) as caught:
        limiter.reserve(key, 300)  # concurrent requests see each other's reservations
    assert caught.value.type == "tokens"
    first.settle(100)  # the answer was short: 700 tokens come back
    limiter.reserve(key, 300).settle(300)
    first.settle(5000)  # a second settle changes nothing
    limiter.reserve(key, 500)


def test_an_overdrawn_key_waits_for_its_debt(limiter_and_clock):
    limiter, _clock = limiter_and_clock
    key = Principal("k3", "team", tpm=600)
    limiter.reserve(key, 10).settle(1200)  # 600 over the allowance
    with pytest.raises(RateLimited) as caught:
        limiter.reserve(key, 10)
    # 610 tokens missing at 10 tokens a second.
    assert caught.value.retry_after == pytest.approx(61.0)


def test_a_request_larger_than_the_allowance_waits_for_a_full_bucket(limiter_and_clock):
    limiter, _ = limiter_and_clock
    key = Principal("k4", "team", tpm=100)
    limiter.reserve(key, 5000).settle(50)


def test_keys_without_limits_are_never_refused(limiter_and_clock):
    limiter, _ = limiter_and_clock
    key = Principal("k5", "free")
    for _ in range(10_000):
        limiter.reserve(key, 10**6)


def test_one_reservation_takes_at_most_the_whole_bucket(limiter_and_clock):
    limiter, clock = limiter_and_clock
    key = Principal("k6", "team", tpm=600)
    limiter.reserve(key, 9_223_372_036_854_775_807)  # max_tokens at its largest
    with pytest.raises(RateLimited) as caught:
        limiter.reserve(key, 10)
    # The bucket is empty, not 9e18 in debt: 10 tokens at 10 a second.
    assert caught.value.retry_after == pytest.approx(1.0)
    clock.now += 60
    limiter.reserve(key, 600)


def test_debt_is_at_most_one_bucket(limiter_and_clock):
    limiter, _clock = limiter_and_clock
    key = Principal("k7", "team", tpm=600)
    limiter.reserve(key, 10).settle(10**9)  # an answer far beyond the allowance
    with pytest.raises(RateLimited) as caught:
        limiter.reserve(key, 600)
    # One bucket of debt and one bucket needed: two refills, never more.
    assert caught.value.retry_after == pytest.approx(120.0)
    assert caught.value.headers()["Retry-After"] == "120"
