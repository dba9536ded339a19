"""Tries a request's channels in turn within one deadline.

Connection errors, timeouts, 408, 409, 429 and 5xx move on to the next channel in the plan (or
the same one again when it is the only one, after an exponential backoff with jitter that honours
an upstream `Retry-After`); a channel that refused the gateway's credentials or does not know its
model is dropped from the plan; an upstream's verdict on the request itself (400, 413, 422) ends
the attempts at once. The caller's deadline bounds everything: queueing, attempts, backoffs and
fallbacks. Every attempt's outcome feeds its channel's breaker and latency record.

A ludicrous-tier attempt is hedged: when its channel has not answered by its usual 90th
percentile, the next channel starts too; the first answer wins and the other is cancelled, so
only the winner is billed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tokenmux.config.schema import Routing
from tokenmux.errors import (
    ChannelsAtQuota,
    DeadlineExceeded,
    GatewayError,
    UpstreamFailed,
    UpstreamRejected,
    UpstreamTimeout,
)
from tokenmux.limits.memory import Reservation, Shortfall
from tokenmux.routing.admission import Gate
from tokenmux.routing.catalog import Route
from tokenmux.routing.quota import Holder, QuotaSpent
from tokenmux.routing.tiers import Tier

T = TypeVar("T")
# One attempt on a route, given how long it may take when the deadline is nearer than the
# route's own timeout (None: the route's timeout applies).
Attempt = Callable[[Route, float | None], Awaitable[T]]


@dataclass(slots=True)
class Deadline:
    budget_ms: int
    started: float  # time.perf_counter() at arrival

    @property
    def at(self) -> float:
        return self.started + self.budget_ms / 1000

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)

    def remaining(self) -> float:
        return self.at - time.perf_counter()

    def exceeded(self, attempts: int) -> DeadlineExceeded:
        # A timer may fire a hair before the deadline by this clock; a deadline reported as
        # exceeded never reads as less than itself.
        return DeadlineExceeded(self.budget_ms, attempts, max(self.budget_ms, self.elapsed_ms()))


@dataclass(slots=True)
class Attempts:
    """What the attempts came to, for the response headers and the ledger."""

    tier: Tier = Tier.MEDIUM
    count: int = 0
    route: Route | None = None
    queue_seconds: float = 0.0
    hedges: int = 0  # second channels started because the first was slow
    gate: Gate | None = None  # the winner's concurrency slot, held until the answer is out
    quota: Reservation | None = None  # the winner's hold on its channel's upstream quota
    # Each failed attempt that moved on: its model, and why (see `left_because`).
    failures: list[tuple[str, str]] = field(default_factory=list)

    def release(self) -> None:
        if self.gate is not None:
            self.gate.leave()
            self.gate = None

    def settle(self, tokens: int) -> None:
        """The answer's real token count, in place of the estimate its channel's quota held."""
        if self.quota is not None:
            self.quota.settle(tokens)


def retryable(error: GatewayError) -> bool:
    if isinstance(error, UpstreamFailed | UpstreamTimeout):
        return True
    return isinstance(error, UpstreamRejected) and (
        error.status in (408, 409, 429) or error.status >= 500)


def left_because(error: GatewayError) -> str:
    """Why an attempt was left for the next, as the `X-Fallback-Reason` header says it."""
    if isinstance(error, UpstreamTimeout):
        return "timeout"
    if isinstance(error, UpstreamRejected) and error.status == 429:
        return "rate_limited"
    return "upstream_error"


def _channel_at_fault(error: GatewayError) -> bool:
    # An upstream turning down the request itself (400, 413, 422), or the gateway refusing it
    # before it went out, says nothing of the channel's health.
    return isinstance(error, UpstreamFailed) or retryable(error)


def _backoff(policy: Routing, retry: int, error: GatewayError, rng: random.Random) -> float:
    if isinstance(error, UpstreamRejected) and error.retry_after:
        try:
            return float(error.retry_after)
        except ValueError:
            pass  # an HTTP date: rare from model APIs; fall back to our own backoff
    ceiling = min(policy.backoff_initial_ms * 2 ** retry, policy.backoff_max_ms) / 1000
    return ceiling * (0.75 + 0.25 * rng.random())


class _Turns(Generic[T]):
    """One request's attempts: the state they share, and one attempt (a leg) at a time."""

    def __init__(self, deadline: Deadline, attempts: Attempts, attempt: Attempt[T],
                 discard: Callable[[T], Awaitable[None]] | None, quotas: Holder | None,
                 estimate: int):
        self.deadline = deadline
        self.attempts = attempts
        self.attempt = attempt
        self.discard = discard
        self.quotas = quotas
        self.estimate = estimate  # the request's tokens, as its key's limits estimated them

    async def leg(self, route: Route) -> tuple[T, Route, Reservation | None]:
        """One attempt on one channel, holding a slot of its concurrency limit and its share of
        the channel's quota when it wins; QuotaSpent, without an attempt, when there is none."""
        attempts, health, gate = self.attempts, route.health, route.gate
        if gate is not None and not gate.try_enter():
            queued = time.perf_counter()
            try:
                async with asyncio.timeout(self.deadline.remaining()):
                    await gate.enter(attempts.tier, self.deadline.at)
            finally:
                attempts.queue_seconds += time.perf_counter() - queued
        # The quota is held only once the attempt is about to go out: a request that waited at
        # the gate until its deadline sent nothing, and must not have spent the upstream's quota.
        held = None
        if route.quota is not None and self.quotas is not None:
            quota = route.quota
            try:
                taken = await self.quotas.hold(quota.name, quota.rpm, quota.tpm, self.estimate)
                if isinstance(taken, Shortfall):
                    raise QuotaSpent(taken.wait)
            except BaseException:
                if gate is not None:
                    gate.leave()
                raise
            held = taken
        attempts.count += 1
        if health.open_until:
            health.healthy(time.monotonic())  # after a cooldown, the first attempt is the probe
        started = time.perf_counter()
        remaining = self.deadline.at - started
        health.in_flight += 1
        try:
            result = await self.attempt(route, remaining if remaining < route.timeout else None)
        except GatewayError as error:
            if gate is not None:
                gate.leave()
            if _channel_at_fault(error):
                health.failed(reason=error.code or left_because(error))
            else:
                health.released()
            raise
        except BaseException:
            if gate is not None:
                gate.leave()
            health.released()
            raise
        finally:
            health.in_flight -= 1
        health.succeeded(time.perf_counter() - started)
        return result, route, held

    async def hedged(self, first: Route, second: Route, delay: float
                     ) -> tuple[T, Route, Reservation | None]:
        tasks = [asyncio.create_task(self.leg(first))]
        kept: asyncio.Task[tuple[T, Route, Reservation | None]] | None = None
        try:
            done, _ = await asyncio.wait(tasks, timeout=delay)
            if not done:
                self.attempts.hedges += 1
                tasks.append(asyncio.create_task(self.leg(second)))
            pending: set[asyncio.Task[tuple[T, Route, Reservation | None]]] = set(tasks)
            error: BaseException | None = None
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:  # in start order, so that a tie goes to the first channel
                    if task not in done:
                        continue
                    failure = task.exception()
                    if failure is None:
                        kept = kept or task
                    elif isinstance(failure, QuotaSpent) and task is not tasks[0]:
                        continue  # the hedge's channel is at its quota: no hedge, then
                    elif isinstance(failure, GatewayError) and not retryable(failure):
                        raise failure  # the request itself is at fault: the other would agree
                    else:
                        error = failure
                if kept is not None:
                    return kept.result()
            assert error is not None
            raise error
        finally:
            others = [task for task in tasks if task is not kept]
            for task in others:
                task.cancel()
            for task in others:
                try:
                    result = await task
                except BaseException:
                    continue  # failed or cancelled: its leg already gave back what it held
                await self._drop(result)  # it answered too, a moment late: not billed

    async def _drop(self, result: tuple[T, Route, Reservation | None]) -> None:
        value, route, _ = result
        if route.gate is not None:
            route.gate.leave()
        if self.discard is not None:
            await self.discard(value)


async def attempt_in_turn(plan: list[Route], deadline: Deadline, policy: Routing,
                          attempts: Attempts, rng: random.Random, attempt: Attempt[T],
                          discard: Callable[[T], Awaitable[None]] | None = None, *,
                          limits_itself: bool = False, max_attempts: int | None = None,
                          quotas: Holder | None = None, estimate: int = 0) -> T:
    """Runs `attempt` on the plan's channels until one answers. On success `attempts.route` is
    the channel that answered and `attempts.gate` its concurrency slot, for the caller to
    release once the answer is out; `discard` closes an answer that lost a hedge.
    `max_attempts` raises the policy's cap for a request that asked for more fallback models.

    An attempt that `limits_itself` keeps to the time limit it is given, which spares the
    common path an asyncio timeout of its own (a timer, a task lookup and a reschedule).

    A channel at its upstream quota (routing/quota.py, held in QUOTAS, ESTIMATE tokens a
    request) is passed over without an attempt; when all are, the request waits for the first
    to have room, within its deadline."""
    turns = _Turns(deadline, attempts, attempt, discard, quotas, estimate)
    at_quota: dict[str, float] = {}  # channel → seconds until it has room, this round
    last: GatewayError | None = None
    n = len(plan)
    i = 0
    cap = policy.max_attempts if max_attempts is None else max(max_attempts, policy.max_attempts)
    while attempts.count < cap:
        route = plan[i % n]
        if route.gate is not None and not route.gate.free() and attempts.tier != Tier.SLOW:
            # Saturated: spill over to a later channel with room; the slow tier waits instead.
            route = next((r for r in plan[i % n + 1:] if r.gate is None or r.gate.free()), route)
        if last is not None and route is attempts.route:
            # The same channel again: give it room. A wait the deadline cannot afford helps
            # nobody; the caller gets the upstream's answer, with its Retry-After, at once.
            wait = _backoff(policy, attempts.count - 1, last, rng)
            if wait >= deadline.remaining():
                raise last
            await asyncio.sleep(wait)
        remaining = deadline.remaining()
        if remaining <= 0:
            raise deadline.exceeded(attempts.count)
        hedge = (attempts.tier == Tier.LUDICROUS and cap - attempts.count >= 2
                 and n > 1 and plan[(i + 1) % n] is not route)
        previous, attempts.route = attempts.route, route
        before = attempts.count
        try:
            if limits_itself and not hedge:
                result, winner, held = await turns.leg(route)
            else:
                async with asyncio.timeout(remaining):
                    if hedge:
                        delay = route.health.p90() or policy.hedge_default_ms / 1000
                        result, winner, held = await turns.hedged(route, plan[(i + 1) % n],
                                                                  delay)
                    else:
                        result, winner, held = await turns.leg(route)
        except QuotaSpent as spent:
            attempts.route = previous  # nothing was sent there
            at_quota[route.channel] = spent.wait
            if len(at_quota) >= len({r.channel for r in plan}):
                await _room(at_quota, deadline, route)
            i += 1
            continue
        except TimeoutError:
            raise deadline.exceeded(attempts.count) from None
        except GatewayError as error:
            if isinstance(error, UpstreamTimeout) and deadline.remaining() < 0.005:
                raise deadline.exceeded(attempts.count) from None
            if not retryable(error):
                raise
            last = error
            attempts.failures.append((route.model, left_because(error)))
            if isinstance(error, UpstreamFailed) and not error.retryable:
                # Bad credentials or an unknown model: another channel may serve, this one
                # will not, however often it is asked.
                plan = [r for r in plan if r.channel != attempts.route.channel]
                if not plan:
                    raise
                n = len(plan)
                i = i % n
                continue
            i += attempts.count - before  # past the hedge's second channel too, if it ran
            continue
        attempts.route, attempts.gate, attempts.quota = winner, winner.gate, held
        return result
    assert last is not None
    last.retries_spent = attempts.count > 1  # with one attempt, the client's retry is the only one
    raise last


async def _room(at_quota: dict[str, float], deadline: Deadline, route: Route) -> None:
    """Every channel of the plan is at its quota: waits for the first to have room, or, when
    the deadline cannot wait that long, answers 429 with the time it would take."""
    wait = min(at_quota.values())
    if wait >= deadline.remaining():
        raise ChannelsAtQuota(
            f"Every channel of the model '{route.model}' is at its upstream's rate limit; "
            f"one has room in {wait:.1f}s.", retry_after=wait)
    await asyncio.sleep(wait)
    at_quota.clear()
