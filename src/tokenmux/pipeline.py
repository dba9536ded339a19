"""The order of the stages one chat completion goes through, and nothing else.

    authenticate → validate → resolve the model → reserve limits → call the provider
    → answer (JSON, or SSE chunk by chunk) → settle limits → ledger row

Every stage is a plain call with a typed value; the HTTP edge (server/) hands in the request's
bytes and headers and an SSE sink, and renders whatever `GatewayError` comes out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from tokenmux import tokens
from tokenmux.api.chat import ChatRequest, parse_chat
from tokenmux.auth import Principal
from tokenmux.errors import GatewayError, UpstreamFailed
from tokenmux.gateway import Gateway
from tokenmux.ledger import UsageRow
from tokenmux.limits import Reservation
from tokenmux.providers.base import Call, Provider, StreamState, Usage, counted_usage
from tokenmux.routing import Route

CLIENT_CLOSED = 499  # nginx's convention for "the client went away before the answer"


@dataclass(slots=True)
class Inbound:
    body: bytes
    authorization: str | None
    api_key: str | None
    end_user: str | None
    request_id: str
    started: float  # time.perf_counter() when the request arrived


class SseSink(Protocol):
    async def open(self) -> None: ...

    async def send(self, chunks: list[dict[str, Any]]) -> None: ...

    async def fail(self, error: GatewayError) -> None: ...

    async def done(self, tail: list[dict[str, Any]]) -> None: ...


@dataclass(slots=True)
class _Outcome:
    """What the ledger needs to know, filled in as the request goes."""

    status: int = 200
    error_code: str | None = None
    usage: Usage | None = None
    ttft: float | None = None


async def chat_completion(gw: Gateway, inbound: Inbound, sink: SseSink) -> dict[str, Any] | None:
    """Returns the completion body, or None when the answer went out as a stream."""
    principal = await gw.keys.authenticate(inbound.authorization, inbound.api_key)
    outcome = _Outcome()
    request: ChatRequest | None = None
    route: Route | None = None
    reservation: Reservation | None = None
    try:
        request = parse_chat(inbound.body)
        route = gw.catalog.resolve(request.model).routes[0]
        estimate = tokens.estimate_prompt(len(inbound.body)) + (request.max_output or 0)
        reservation = gw.limiter.reserve(principal, estimate)
        call = Call(request, route, inbound.request_id)
        provider = gw.providers[route.provider]
        if not request.stream:
            completion = await provider.complete(call)
            outcome.usage = completion.usage
            return completion.body
        await _relay(provider, call, sink, inbound.started, outcome)
        return None
    except GatewayError as error:
        outcome.status, outcome.error_code = error.status, error.code
        raise
    except asyncio.CancelledError:
        outcome.status, outcome.error_code = CLIENT_CLOSED, "client_closed"
        raise
    finally:
        usage = outcome.usage or Usage(source="none")
        if reservation is not None:
            reservation.settle(usage.prompt_tokens + usage.completion_tokens)
        gw.ledger.record(_row(inbound, principal, request, route, outcome, usage))


async def _relay(provider: Provider, call: Call, sink: SseSink, started: float,
                 outcome: _Outcome) -> None:
    async with provider.stream(call) as chunks:
        # Nothing has gone to the client until the first chunk is in hand, so any failure
        # before it is still an ordinary HTTP error.
        batches = aiter(chunks)
        first = await _first_batch(batches, call)
        outcome.ttft = time.perf_counter() - started
        try:
            await sink.open()
            await sink.send(first)
            async for batch in batches:
                if batch:
                    await sink.send(batch)
            outcome.usage = _stream_usage(chunks.state, call)
            tail: list[dict[str, Any]] = []
            if call.request.include_usage:
                tail.append({
                    "id": first[0].get("id"), "object": "chat.completion.chunk",
                    "created": first[0].get("created"), "model": call.route.model,
                    "choices": [], "usage": outcome.usage.as_openai(),
                })
            await sink.done(tail)
        except GatewayError as error:
            # Headers are gone: the only honest way left to fail is an error event.
            outcome.status, outcome.error_code = error.status, error.code
            await sink.fail(error)
        except ConnectionError:
            # The client hung up between two writes; the upstream is closed on the way out.
            outcome.status, outcome.error_code = CLIENT_CLOSED, "client_closed"
        finally:
            if outcome.usage is None:
                outcome.usage = _stream_usage(chunks.state, call)


async def _first_batch(batches: AsyncIterator[list[dict[str, Any]]],
                       call: Call) -> list[dict[str, Any]]:
    async for batch in batches:
        if batch:
            return batch
    raise UpstreamFailed(
        f"The upstream {call.route.provider!r} ended the stream without any chunk.")


def _stream_usage(state: StreamState, call: Call) -> Usage:
    if state.usage is not None and state.finished:
        return state.usage
    # Cut short, or the upstream never said: bill what was produced, counted by us.
    counted = counted_usage(call.request, "".join(state.text))
    if state.usage is not None:
        counted.completion_tokens = max(counted.completion_tokens, state.usage.completion_tokens)
    return counted


def _row(inbound: Inbound, principal: Principal, request: ChatRequest | None,
         route: Route | None, outcome: _Outcome, usage: Usage) -> UsageRow:
    now = time.perf_counter()
    return UsageRow(
        request_id=inbound.request_id,
        key_id=principal.key_id,
        key_name=principal.name,
        end_user=(request.user if request else None) or inbound.end_user,
        requested_model=request.model if request else None,
        route=route,
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
    )
