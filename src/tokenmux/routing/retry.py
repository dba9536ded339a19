"""Tries a request's channels in turn within one deadline.

Connection errors, timeouts, 408, 409, 429 and 5xx move on to the next channel in the plan (or
the same one again when it is the only one, after an exponential backoff with jitter that honours
an upstream `Retry-After`); an upstream's verdict on the request itself (400, 413, 422) ends the
attempts at once. The caller's deadline bounds everything: attempts, backoffs and fallbacks.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tokenmux.config.schema import Routing
from tokenmux.errors import (
    DeadlineExceeded,
    GatewayError,
    UpstreamFailed,
    UpstreamRejected,
    UpstreamTimeout,
)
from tokenmux.routing.catalog import Route

T = TypeVar("T")


@dataclass(slots=True)
class Deadline:
    budget_ms: int
    started: float  # time.perf_counter() at arrival

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)

    def remaining(self) -> float:
        return self.budget_ms / 1000 - (time.perf_counter() - self.started)


@dataclass(slots=True)
class Attempts:
    """What the attempts came to, for the response headers and the ledger."""

    count: int = 0
    route: Route | None = None


def retryable(error: GatewayError) -> bool:
    if isinstance(error, UpstreamFailed | UpstreamTimeout):
        return True
    return isinstance(error, UpstreamRejected) and (
        error.status in (408, 409, 429) or error.status >= 500)


def _backoff(policy: Routing, retry: int, error: GatewayError, rng: random.Random) -> float:
    if isinstance(error, UpstreamRejected) and error.retry_after:
        try:
            return float(error.retry_after)
        except ValueError:
            pass  # an HTTP date: rare from model APIs; fall back to our own backoff
    ceiling = min(policy.backoff_initial_ms * 2 ** retry, policy.backoff_max_ms) / 1000
    return ceiling * (0.75 + 0.25 * rng.random())


async def attempt_in_turn(plan: list[Route], deadline: Deadline, policy: Routing,
                          attempts: Attempts, rng: random.Random,
                          attempt: Callable[[Route], Awaitable[T]]) -> T:
    last: GatewayError | None = None
    for i in range(policy.max_attempts):
        route = plan[i % len(plan)]
        if last is not None and route is attempts.route:
            # The same channel again: give it room. A wait the deadline cannot afford helps
            # nobody; the caller gets the upstream's answer, with its Retry-After, at once.
            wait = _backoff(policy, i - 1, last, rng)
            if wait >= deadline.remaining():
                raise last
            await asyncio.sleep(wait)
        remaining = deadline.remaining()
        if remaining <= 0:
            raise DeadlineExceeded(deadline.budget_ms, attempts.count, deadline.elapsed_ms())
        attempts.count += 1
        attempts.route = route
        try:
            async with asyncio.timeout(remaining):
                return await attempt(route)
        except TimeoutError:
            raise DeadlineExceeded(deadline.budget_ms, attempts.count,
                                   deadline.elapsed_ms()) from None
        except GatewayError as error:
            if not retryable(error):
                raise
            last = error
    assert last is not None
    raise last
