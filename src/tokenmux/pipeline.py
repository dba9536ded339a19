"""The order of the stages one chat completion goes through, and nothing else.

    authenticate → [a keyed request: its copies get its answer, see idempotency/]
    → take a slot → read the body → validate → plan the channels → reserve budget and limits
    → compress the conversation, when asked → attempt the channels in turn within the deadline
    → answer (JSON, or SSE chunk by chunk) → settle budget and limits, give the slot back
    → ledger row

Every stage is a plain call with a typed value; the HTTP edge (server/) hands in the request's
headers, a reader for its body and an SSE sink, and renders whatever `GatewayError` comes out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tokenmux import compression, tokens
from tokenmux.answer import Answer, SseSink
from tokenmux.api.chat import ChatRequest, parse_chat
from tokenmux.auth import Principal
from tokenmux.budgets import Hold, ticks, ticks_to_usd, worst_cost
from tokenmux.budgets.money import real_cost
from tokenmux.config.schema import Routing
from tokenmux.errors import (
    GatewayError,
    IdempotencyUnavailable,
    InvalidRequest,
    ShuttingDown,
    UpstreamFailed,
)
from tokenmux.gateway import Gateway
from tokenmux.idempotency import Keyed
from tokenmux.ids import unique
from tokenmux.ledger import UsageRow
from tokenmux.ledger.row import CHECKPOINT_SOURCE, INTERRUPTED, INTERRUPTED_STATUS, REPLAY_SOURCE
from tokenmux.limits import Reservation, Slot
from tokenmux.providers.base import (
    Call,
    ChunkStream,
    Completion,
    Provider,
    StreamState,
    Usage,
    counted_usage,
)
from tokenmux.routing import Route, fallbacks
from tokenmux.routing.catalog import ModelEntry
from tokenmux.routing.params import dropped, keep_first_tool_call
from tokenmux.routing.plan import plan
from tokenmux.routing.retry import Attempts, Deadline, attempt_in_turn
from tokenmux.routing.tiers import NAMES as TIER_NAMES
from tokenmux.routing.tiers import requested_tier

CLIENT_CLOSED = 499  # nginx's convention for "the client went away before the answer"
CHECKPOINT_SECONDS = 1.0
MIN_TIMEOUT_MS, MAX_TIMEOUT_MS = 5_000, 300_000


@dataclass(slots=True)
class Inbound:
    body: bytes  # empty until the key is known: a caller without one never gets it read
    authorization: str | None
    api_key: str | None
    end_user: str | None
    timeout: str | None  # the X-Timeout header, milliseconds for the whole request
    tier: str | None  # the X-Tier header
    request_id: str
    started: float  # time.perf_counter() when the request arrived
    read_body: Callable[[], Awaitable[bytes]]
    strict_params: str | None = None  # the X-Strict-Params header: "true" refuses, drops nothing
    compression: compression.Headers | None = None  # the X-*Compression* headers, when sent
    idempotency_key: str | None = None  # X-Request-Id or Idempotency-Key: runs once, replayed
    # The API the request came in through; the ledger row says so. Every door hands the
    # pipeline an OpenAI chat completion request and renders its answer in its own format.
    door: str = "chat"
    # Reads the body into the one internal request: a door of another API translates here.
    parse: Callable[[bytes], ChatRequest] = parse_chat


__all__ = ["Answer", "Inbound", "SseSink", "chat_completion"]


@dataclass(slots=True)
class _Outcome:
    """What the ledger needs to know, filled in as the request goes."""

    attempts: Attempts = field(default_factory=Attempts)
    status: int = 200
    error_code: str | None = None
    usage: Usage | None = None
    ttft: float | None = None
    row_id: str = field(default_factory=unique)  # a stream's checkpoints and its final row share it
    dropped: tuple[str, ...] = ()  # the sampling hints the answering route left out
    compressed: compression.Result | None = None  # what came of a compression asked for


@dataclass(slots=True)
class _OpenStream:
    """A stream whose first chunks are in hand."""

    upstream: AbstractAsyncContextManager[ChunkStream]  # entered; exiting closes the upstream
    chunks: ChunkStream
    batches: AsyncIterator[list[dict[str, Any]]]
    first: list[dict[str, Any]]

    async def close(self) -> None:
        await self.upstream.__aexit__(None, None, None)


async def chat_completion(gw: Gateway, inbound: Inbound, sink: SseSink) -> Answer:
    principal = await gw.keys.authenticate(inbound.authorization, inbound.api_key)
    if inbound.idempotency_key is None or _without_redis(gw):
        return await _answer(gw, inbound, principal, sink)
    try:
        return await _once(gw, inbound, principal, sink, inbound.idempotency_key)
    except IdempotencyUnavailable:
        if not _without_redis(gw):
            raise
        return await _answer(gw, inbound, principal, sink)


def _without_redis(gw: Gateway) -> bool:
    """Redis is away and the config says to serve on meanwhile (`redis_failure: open`): a keyed
    request runs as an unkeyed one, as it would on a gateway without Redis (README)."""
    return gw.redis is not None and gw.redis.down and not gw.redis.closed


async def _once(gw: Gateway, inbound: Inbound, principal: Principal, sink: SseSink,
                key: str) -> Answer:
    """A keyed request: run once per key and body, its copies answered from that run."""

    def note(status: int, code: str | None, replay_of: str | None, stream: bool) -> None:
        gw.ledger.record(_copy_row(inbound, principal, status, code, replay_of, stream))

    try:
        inbound.body = await inbound.read_body()  # the fingerprint is the body's
        budget = _budget(inbound.timeout, gw.config.routing)
    except GatewayError as error:
        note(error.status, error.code, None, False)
        raise
    keyed = Keyed(key, principal.key_id, inbound.body, inbound.started + budget / 1000)
    return await gw.idempotency.serve(
        gw, keyed, sink, lambda tee, row_id: _answer(gw, inbound, principal, tee, row_id), note)


async def _answer(gw: Gateway, inbound: Inbound, principal: Principal, sink: SseSink,
                  row_id: str | None = None) -> Answer:
    outcome = _Outcome() if row_id is None else _Outcome(row_id=row_id)
    billing = _Billing(gw, inbound, principal, outcome)
    try:
        billing.slot = gw.concurrency.acquire(principal)
        if not inbound.body:  # a keyed request's was read already
            inbound.body = await inbound.read_body()
        request = billing.request = inbound.parse(inbound.body)
        deadline = Deadline(_budget(inbound.timeout, gw.config.routing), inbound.started)
        tier = outcome.attempts.tier = requested_tier(inbound.tier, principal.tier,
                                                      principal.max_tier)
        entry = gw.catalog.resolve(request.model)
        if request.max_output is not None:
            entry.check_output_limit(request.max_output, "max_completion_tokens"
                                     if "max_completion_tokens" in request.body else "max_tokens")
        fallback = None
        if request.fallbacks is not None or principal.fallback_models or request.models:
            fallback = fallbacks.chosen(request, principal)
            billing.requested = entry.name
        routes = plan(gw.catalog, entry, request.models, tier, gw.rng, fallback)
        # One attempt per model at least, for a request that asked for more models than that.
        most = None if fallback is None else len({route.model for route in routes})
        prompt = tokens.estimate_prompt(len(inbound.body))
        answers = request.body.get("n") or 1
        if principal.budget is not None:
            billing.budget = await gw.budgets.admit(principal, worst_cost(
                gw.catalog, routes, prompt, answers, request.max_output))
        estimate = prompt + answers * entry.answer_estimate(request.max_output, prompt)
        billing.reservation = await gw.limiter.admit(principal, estimate)
        if (request.compression is not None or inbound.compression is not None
                or principal.compression or entry.compression is not None):
            outcome.compressed = await _compress(gw, inbound, principal, request, entry, routes,
                                                 deadline, outcome)
        chat = request
        # The header decides when sent; else the key's own setting (the provider's is in the
        # route's policy already).
        strict = (principal.strict_params if inbound.strict_params is None
                  else _strict(inbound.strict_params))

        def call(route: Route, limit: float | None = None) -> Call:
            # The policy is the route's own: a fallback to another provider applies its own.
            return Call(chat, route, inbound.request_id, limit,
                        () if strict else dropped(chat.body, route.drop))

        if not request.stream:
            completion = await attempt_in_turn(
                routes, deadline, gw.config.routing, outcome.attempts, gw.rng,
                lambda route, limit: gw.providers[route.provider].complete(call(route, limit)),
                limits_itself=True, max_attempts=most, quotas=gw.limiter, estimate=estimate)
            outcome.usage = completion.usage
            billing.charge()
            return Answer(completion.body,
                          billing.headers(_answered_by(outcome, chat, completion, strict)))
        opened = await attempt_in_turn(
            routes, deadline, gw.config.routing, outcome.attempts, gw.rng,
            lambda route, _: _open(gw.providers[route.provider], call(route)), _OpenStream.close,
            max_attempts=most, quotas=gw.limiter, estimate=estimate)
        outcome.ttft = time.perf_counter() - inbound.started
        assert outcome.attempts.route is not None
        served = call(outcome.attempts.route)
        outcome.dropped = served.dropped
        headers = _served_by(outcome.attempts)
        if outcome.dropped:
            headers["X-TokenMux-Dropped-Params"] = ",".join(outcome.dropped)
        await _relay(opened, served, sink, outcome, billing, billing.headers(headers))
        return Answer(None, {})
    except GatewayError as error:
        outcome.status, outcome.error_code = error.status, error.code
        billing.charge()
        extra = billing.headers({}, answered=False)
        if extra:
            error.extra_headers = {**(error.extra_headers or {}), **extra}
        raise
    except asyncio.CancelledError:
        if not gw.draining:
            outcome.status, outcome.error_code = CLIENT_CLOSED, "client_closed"
            raise
        stopped = _shutting_down()
        outcome.status, outcome.error_code = stopped.status, stopped.code
        raise stopped from None
    finally:
        billing.finish()


async def _compress(gw: Gateway, inbound: Inbound, principal: Principal, request: ChatRequest,
                    entry: ModelEntry, routes: list[Route], deadline: Deadline,
                    outcome: _Outcome) -> compression.Result | None:
    settings = compression.resolve(request.compression, inbound.compression, principal, entry,
                                   gw.catalog, gw.config.compression.model)
    if settings is None:
        return None
    return await compression.compress(compression.Job(
        gw, request, len(inbound.body), routes, deadline, outcome.attempts.tier,
        inbound.request_id, principal, outcome.row_id), settings)


def _budget(header: str | None, policy: Routing) -> int:
    if header is None:
        return policy.default_timeout_ms
    # ASCII digits only: int() would also take full-width digits, "6_000" and " +6000 ".
    budget = int(header) if header.isascii() and header.isdigit() else -1
    if not MIN_TIMEOUT_MS <= budget <= MAX_TIMEOUT_MS:
        raise InvalidRequest(
            f"X-Timeout must be a whole number of milliseconds from {MIN_TIMEOUT_MS} to "
            f"{MAX_TIMEOUT_MS}; got {header!r}.", code="invalid_timeout")
    return budget


def _strict(header: str) -> bool:
    value = header.strip().lower()
    if value not in ("true", "false"):
        raise InvalidRequest(f"X-Strict-Params must be 'true' or 'false'; got {header!r}.",
                             param="X-Strict-Params", code="invalid_header")
    return value == "true"


def _answered_by(outcome: _Outcome, request: ChatRequest, completion: Completion,
                 strict: bool) -> dict[str, str]:
    """A JSON answer's headers: the channel's, and what the parameter policy left out."""
    headers = _served_by(outcome.attempts)
    route = outcome.attempts.route
    assert route is not None
    if not strict and (names := dropped(request.body, route.drop)):
        outcome.dropped = names
        headers["X-TokenMux-Dropped-Params"] = ",".join(names)
    # `parallel_tool_calls: false` where the API cannot be told: the first call is kept.
    if route.trims_tool_calls and request.body.get("parallel_tool_calls") is False and (
            trimmed := keep_first_tool_call(completion.body)):
        headers["X-TokenMux-Trimmed-Tool-Calls"] = str(trimmed)
    return headers


def _served_by(attempts: Attempts) -> dict[str, str]:
    assert attempts.route is not None
    return {"X-TokenMux-Channel": attempts.route.channel,
            "X-TokenMux-Attempts": str(attempts.count),
            "X-TokenMux-Tier": TIER_NAMES[attempts.tier]}


async def _open(provider: Provider, call: Call) -> _OpenStream:
    """One stream attempt: it counts as answered once the first chunk is in hand, so that any
    failure before it can still fail over to another channel, unseen by the client."""
    # The context manager is driven by hand, not by `async with`, because it stays open past
    # this function when the attempt succeeds: the relay closes it.
    upstream = provider.stream(call)
    chunks = await upstream.__aenter__()
    try:
        batches = aiter(chunks)
        async for batch in batches:
            if batch:
                return _OpenStream(upstream, chunks, batches, batch)
        raise UpstreamFailed(
            f"The upstream {call.route.provider!r} ended the stream without any chunk.")
    except BaseException:
        await upstream.__aexit__(None, None, None)
        raise


@dataclass(slots=True)
class _Billing:
    """The request's row, recorded once and before the answer's last bytes leave (so a client
    that saw the end has a row, whatever happens next), and a stream's checkpoints."""

    gw: Gateway
    inbound: Inbound
    principal: Principal
    outcome: _Outcome
    request: ChatRequest | None = None
    reservation: Reservation | None = None
    budget: Hold | None = None  # for a key with a budget
    cost: Decimal | None = None  # what the answer cost, once known (None: no price known)
    slot: Slot | None = None  # the key's concurrency slot
    recorded: bool = False
    requested: str | None = None  # the model's canonical name, when the request asked for
    # fallbacks: the answer then carries the fallback headers

    def headers(self, headers: dict[str, str], answered: bool = True) -> dict[str, str]:
        """The answer's headers: `headers`, plus the key's rate-limit state and, for a request
        that asked for fallbacks, what came of them."""
        if self.reservation is not None and (limits := self.reservation.headers()):
            headers.update(limits)
        if self.outcome.compressed is not None:
            headers.update(self.outcome.compressed.headers())
        if self.budget is not None:
            headers.update(self.budget.headers())
        if self.requested is not None and self.request is not None:
            headers.update(fallbacks.headers(self.request.model, self.requested,
                                             self.outcome.attempts, answered))
        return headers

    def charge(self) -> None:
        """Prices the answer, once its usage is known, as the ledger writer would: the budget
        header then shows the real cost in place of the reservation, and the row carries the
        very amount the budget is charged."""
        if self.budget is None or self.budget.actual is not None:
            return
        usage = self.outcome.usage
        if usage is not None:
            try:
                self.cost = real_cost(self.gw.pricer, self.outcome.attempts.route, usage)
            except Exception:  # as in the writer: a price table's fault never costs the row
                self.cost = None
        self.budget.actual = 0 if self.cost is None else ticks(self.cost)
        if self.cost is not None:
            self.cost = ticks_to_usd(self.budget.actual)

    def finish(self) -> None:
        if self.recorded:
            return
        self.recorded = True
        outcome = self.outcome
        if self.slot is not None:
            self.slot.release()
        outcome.attempts.release()
        usage = outcome.usage or Usage(source="none")
        answered = usage.prompt_tokens + usage.completion_tokens
        outcome.attempts.settle(answered)
        if self.reservation is not None:
            spent = 0 if outcome.compressed is None else outcome.compressed.spent
            self.reservation.settle(answered + spent)
        row = _row(self.inbound, self.principal, self.request, outcome, usage)
        if self.budget is not None:
            self.charge()
            assert self.budget.actual is not None
            row.cost_usd = self.cost
            self.budget.settle(self.budget.actual, row.created_at)
        self.gw.ledger.record(row)

    def checkpoint(self, state: StreamState) -> None:
        self.gw.ledger.checkpoint(
            _checkpoint_row(self.inbound, self.principal, self.request, self.outcome, state))


def _shutting_down() -> ShuttingDown:
    # The cancellation was the stop's, not the client's: it is handled here, not propagated.
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    return ShuttingDown("The gateway is shutting down; retry the request.")


async def _relay(opened: _OpenStream, call: Call, sink: SseSink, outcome: _Outcome,
                 billing: _Billing, headers: dict[str, str]) -> None:
    head, state = opened.first[0], opened.chunks.state
    # Unless the client asked for OpenAI's own usage chunk (or for none), the usage rides on the
    # finish chunk, so that no chunk without choices breaks a client's `choices[0]`: that chunk
    # is held back until the stream ends (the upstream's usage follows it at once). The check is
    # one per upstream read, never one per chunk.
    hold = call.request.include_usage is None
    held: dict[str, Any] | None = None
    try:
        await sink.open(headers)
        first = opened.first
        if hold:
            first, held = _finish_held(first, None)
        if first:
            await sink.send(first)
        # A long stream leaves a checkpoint at most once a second: a crash bills it up to there.
        due = time.perf_counter() + CHECKPOINT_SECONDS
        async for batch in opened.batches:
            if batch:
                if hold:
                    batch, held = _finish_held(batch, held)
                    if batch:
                        await sink.send(batch)
                else:
                    await sink.send(batch)
                if time.perf_counter() >= due:
                    billing.checkpoint(state)
                    due = time.perf_counter() + CHECKPOINT_SECONDS
        outcome.usage = await _stream_usage(state, call)
        billing.finish()
        tail: list[dict[str, Any]] = []
        if held is not None:
            held["usage"] = outcome.usage.as_openai()
            tail.append(held)
        elif call.request.include_usage:
            tail.append(_usage_chunk(head, call, outcome.usage))
        await sink.done(tail)
    except GatewayError as error:
        # Headers are gone: the only honest way left to fail is an error event.
        outcome.status, outcome.error_code = error.status, error.code
        call.route.health.failed()
        outcome.usage = await _stream_usage(state, call)
        billing.finish()
        await _fail(sink, error, held, outcome.usage)
    except asyncio.CancelledError:
        if not billing.gw.draining:
            raise
        stopped = _shutting_down()
        outcome.status, outcome.error_code = stopped.status, stopped.code
        outcome.usage = await _stream_usage(state, call)
        billing.finish()
        await _fail(sink, stopped, held, outcome.usage)
    except ConnectionError:
        # The client hung up between two writes; the upstream is closed on the way out.
        outcome.status, outcome.error_code = CLIENT_CLOSED, "client_closed"
    finally:
        # Closed first: the count may take a moment, and the upstream bills while it is open.
        await opened.close()
        if outcome.usage is None:
            outcome.usage = await _stream_usage(state, call)


def _finish_held(batch: list[dict[str, Any]], held: dict[str, Any] | None
                 ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The batch to send now, the held finish chunk (if any) first, and the chunk to hold: the
    batch's last, when it finishes a choice. Batches are the reader's own fresh lists: taking
    the last one off copies nothing."""
    if held is not None:
        batch = [held, *batch]
    choices = batch[-1].get("choices")
    if choices and choices[-1].get("finish_reason") is not None:
        return batch, batch.pop()
    return batch, None


def _usage_chunk(head: dict[str, Any], call: Call, usage: Usage) -> dict[str, Any]:
    """OpenAI's own final chunk, for a client that asked for `include_usage`."""
    chunk: dict[str, Any] = {"id": head.get("id"), "object": "chat.completion.chunk",
                             "created": head.get("created"), "model": call.route.model}
    for name in ("service_tier", "system_fingerprint"):  # as the other chunks carry them
        if (value := head.get(name)) is not None:
            chunk[name] = value
    chunk["choices"] = []
    chunk["usage"] = usage.as_openai()
    return chunk


async def _fail(sink: SseSink, error: GatewayError, held: dict[str, Any] | None,
                usage: Usage) -> None:
    if held is not None:  # the finish came; what broke was after it
        held["usage"] = usage.as_openai()
        try:
            await sink.send([held])
        except ConnectionError:
            return
    await sink.fail(error)


async def _stream_usage(state: StreamState, call: Call) -> Usage:
    if state.usage is not None and state.finished:
        return state.usage
    # Cut short, or the upstream never said: bill what was produced, counted by us.
    counted = await counted_usage(call.request, "".join(state.text))
    if state.usage is not None:
        counted.completion_tokens = max(counted.completion_tokens, state.usage.completion_tokens)
    return counted


def _checkpoint_row(inbound: Inbound, principal: Principal, request: ChatRequest | None,
                    outcome: _Outcome, state: StreamState) -> UsageRow:
    # Estimates, cheap enough for once a second: the final row counts exactly.
    chars = sum(map(len, state.text))
    usage = Usage(prompt_tokens=tokens.estimate_prompt(len(inbound.body)),
                  completion_tokens=chars // 4 + 1, source=CHECKPOINT_SOURCE)
    row = _row(inbound, principal, request, outcome, usage)
    row.status, row.error_code = INTERRUPTED_STATUS, INTERRUPTED
    return row


def _copy_row(inbound: Inbound, principal: Principal, status: int, code: str | None,
              replay_of: str | None, stream: bool) -> UsageRow:
    """A keyed request's copy, or one refused before it could run: billed nothing."""
    row = _row(inbound, principal, None, _Outcome(status=status, error_code=code),
               Usage(source=REPLAY_SOURCE if replay_of else "none"))
    row.replay_of, row.stream = replay_of, stream
    return row


def _row(inbound: Inbound, principal: Principal, request: ChatRequest | None,
         outcome: _Outcome, usage: Usage) -> UsageRow:
    now = time.perf_counter()
    return UsageRow(
        request_id=inbound.request_id,
        key_id=principal.key_id,
        key_name=principal.name,
        end_user=(request.user if request else None) or inbound.end_user,
        requested_model=request.model if request else None,
        route=outcome.attempts.route,
        attempts=outcome.attempts.count,
        tier=TIER_NAMES[outcome.attempts.tier],
        queue_ms=outcome.attempts.queue_seconds * 1000,
        stream=bool(request and request.stream),
        status=outcome.status,
        error_code=outcome.error_code,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        usage_source=usage.source,
        latency_ms=(now - inbound.started) * 1000,
        ttft_ms=None if outcome.ttft is None else outcome.ttft * 1000,
        id=outcome.row_id,
        dropped_params=",".join(outcome.dropped) or None,
        tokens_before=None if outcome.compressed is None else outcome.compressed.original,
        tokens_after=None if outcome.compressed is None else outcome.compressed.final,
        door=inbound.door,
    )
