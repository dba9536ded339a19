"""What the gateway has lately seen of one channel: a circuit breaker and its latencies.

The breaker opens after `failures` failures in a row and keeps the channel out of rotation for
`cooldown`; then one real request is let through as a probe (half-open). Its success closes the
breaker; its failure opens it again for twice as long, up to `max_cooldown`. A probe costs no
extra upstream call, and an idle channel is never billed for health checks.
"""

from __future__ import annotations

import time
from collections import deque

LATENCY_SAMPLES = 64
EWMA_WEIGHT = 0.2  # how much the latest latency moves the running estimate


class ChannelHealth:
    __slots__ = ("_cooldown", "_failures", "_max_cooldown", "_next_cooldown", "_probing",
                 "_threshold", "in_flight", "last_error", "latency", "open_until", "ttfts")

    def __init__(self, failures: int, cooldown: float, max_cooldown: float):
        self._threshold = failures
        self._cooldown = cooldown
        self._max_cooldown = max_cooldown
        self._next_cooldown = cooldown
        self._failures = 0
        self._probing = False
        self.open_until = 0.0  # 0: closed
        self.latency: float | None = None  # seconds to the answer (or first chunk), smoothed
        self.ttfts: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.in_flight = 0  # attempts sent here that have not answered yet
        # The latest failure: when (wall clock) and what it was, for the operators' console.
        self.last_error: tuple[float, str] | None = None

    def healthy(self, now: float) -> bool:
        """Whether a request may go here now; the first one after a cooldown is the probe."""
        if not self.open_until:
            return True
        if now < self.open_until or self._probing:
            return False
        self._probing = True
        return True

    def cooling(self, now: float) -> bool:
        return bool(self.open_until) and (now < self.open_until or self._probing)

    def succeeded(self, seconds: float) -> None:
        self._failures = 0
        self._probing = False
        if self.open_until:
            self.open_until = 0.0
            self._next_cooldown = self._cooldown
        self.ttfts.append(seconds)
        latency = self.latency
        self.latency = seconds if latency is None else latency + EWMA_WEIGHT * (seconds - latency)

    def failed(self, now: float | None = None, reason: str = "upstream_error") -> None:
        now = time.monotonic() if now is None else now
        self.last_error = (time.time(), reason)
        self._failures += 1
        if self._probing:
            self._probing = False
            self._next_cooldown = min(self._next_cooldown * 2, self._max_cooldown)
            self.open_until = now + self._next_cooldown
        elif self._failures >= self._threshold and not self.open_until:
            self.open_until = now + self._next_cooldown

    def released(self) -> None:
        """An attempt here ended without a verdict (the client left): free the probe slot."""
        self._probing = False

    def state(self, now: float) -> tuple[str, float, int]:
        """closed, open or half_open; the seconds of cooldown left; failures in a row."""
        if not self.open_until:
            return "closed", 0.0, self._failures
        if self._probing or now >= self.open_until:
            return "half_open", 0.0, self._failures
        return "open", self.open_until - now, self._failures

    def p90(self) -> float | None:
        samples = self.ttfts
        if len(samples) < 3:
            return None
        ordered = sorted(samples)
        return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
