"""OpenAI's rate-limit headers, read from the limiter's buckets on a controlled clock."""

from __future__ import annotations

import pytest

from tokenmux.auth import Principal
from tokenmux.errors import RateLimited
from tokenmux.limits import MemoryLimiter
from tokenmux.limits.memory import duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0ms"), (0.02, "20ms"), (0.0201, "21ms"), (1, "1s"), (8.64, "8.64s"),
    (0.9996, "1s"), (59.9996, "1m0s"), (60, "1m0s"), (360, "6m0s"), (179.56, "2m59.56s"),
])
def test_durations_read_as_openais(seconds, text):
    assert duration(seconds) == text


def test_an_answer_reports_what_is_left_and_when_it_is_full_again():
    limiter, clock = MemoryLimiter(), Clock()
    limiter._now = clock  # the one seam a test needs: time
    key = Principal("k1", "team", rpm=6, tpm=6000)
    reservation = limiter.reserve(key, 600)
    assert reservation.headers() == {
        "x-ratelimit-limit-requests": "6", "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-reset-requests": "10s",  # one request at 6 a minute
        "x-ratelimit-limit-tokens": "6000", "x-ratelimit-remaining-tokens": "5400",
        "x-ratelimit-reset-tokens": "6s",
    }
    clock.now += 5
    headers = reservation.headers()
    assert headers is not None
    assert headers["x-ratelimit-reset-requests"] == "5s"
    assert headers["x-ratelimit-remaining-tokens"] == "5900"


def test_a_refusal_carries_the_headers_too():
    limiter, clock = MemoryLimiter(), Clock()
    limiter._now = clock
    key = Principal("k2", "team", rpm=2)
    limiter.reserve(key, 1)
    limiter.reserve(key, 1)
    with pytest.raises(RateLimited) as caught:
        limiter.reserve(key, 1)
    assert caught.value.extra_headers == {
        "x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m0s"}


def test_a_key_without_limits_has_no_headers():
    assert MemoryLimiter().reserve(Principal("k3", "team"), 100).headers() is None
