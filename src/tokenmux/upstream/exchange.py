"""Runs one attempt against an HTTP upstream: the adapter translates, this module does the I/O.

aiohttp's exceptions stop here and become the gateway's own: a timeout is `UpstreamTimeout`
(504), anything else that goes wrong on the wire is `UpstreamFailed` (502).

What an upstream sends back is bounded, so that no upstream can take the gateway down: a JSON
answer by the provider's `max_response_bytes` (read as it comes, given up the moment it is
exceeded), an error body by MAX_ERROR_BYTES (the rest is not read), a stream's event by
`max_event_bytes`, and the silence between a started stream's events by `stream_idle_timeout`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson

from tokenmux.config.schema import Provider as ProviderConfig
from tokenmux.errors import GatewayError, UpstreamFailed, UpstreamTimeout
from tokenmux.providers.base import (
    Adapter,
    Call,
    Completion,
    EmbedAdapter,
    EmbedCall,
    Embeddings,
    StreamState,
    UpstreamRequest,
    counted_embedding_usage,
    counted_usage,
)
from tokenmux.providers.vectors import embedding_usage
from tokenmux.routing.catalog import Route
from tokenmux.tokens import message_text
from tokenmux.upstream.sse import EventTooLarge, sse_batches

# An error body is read for its message only; past this much, the rest is left unread.
MAX_ERROR_BYTES = 64 * 1024

_REASONS = (
    (aiohttp.ClientConnectorError, "could not be reached"),
    (aiohttp.ServerDisconnectedError, "closed the connection"),
    (aiohttp.ClientPayloadError, "cut its response short"),
    (aiohttp.ClientResponseError, "sent a malformed response"),
)


def _wire_error(exc: BaseException, route: Route) -> GatewayError:
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamTimeout(
            f"The upstream {route.provider!r} did not answer within {route.timeout:g}s.")
    reason = next((text for kind, text in _REASONS if isinstance(exc, kind)), "failed on the wire")
    return UpstreamFailed(f"The upstream {route.provider!r} {reason} ({type(exc).__name__}).")


_WIRE_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


def _too_large(route: Route, limit: int) -> UpstreamFailed:
    return UpstreamFailed(f"The upstream {route.provider!r} sent an answer too large: more than "
                          f"{limit} bytes (the provider's max_response_bytes).")


async def _read_answer(response: aiohttp.ClientResponse, limit: int, route: Route) -> bytes:
    """The whole body, but never more than `limit` bytes of it in memory."""
    length = response.content_length
    if length is not None and length > limit:
        raise _too_large(route, limit)
    if length is not None and "Content-Encoding" not in response.headers:
        return await response.read()  # bounded by its declared length: read as one
    body = bytearray()  # chunked, or compressed: the cap applies to what it inflates to
    while chunk := await response.content.readany():
        body += chunk
        if len(body) > limit:
            raise _too_large(route, limit)
    return bytes(body)


async def _read_error(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    while len(body) < MAX_ERROR_BYTES and (chunk := await response.content.readany()):
        body += chunk
    return bytes(body[:MAX_ERROR_BYTES])


class HttpProvider:
    def __init__(self, session: Callable[[], aiohttp.ClientSession], adapter: Adapter,
                 config: ProviderConfig):
        self._session = session
        self._adapter = adapter
        # The same adapter, when its kind's API embeds (decided once, here).
        self._embeds = adapter if isinstance(adapter, EmbedAdapter) else None
        self._max_response_bytes = config.max_response_bytes
        self._max_event_bytes = config.max_event_bytes
        self._idle = config.stream_idle_timeout
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._stream_timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._deadline_timeouts: dict[int, aiohttp.ClientTimeout] = {}

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            if len(self._timeouts) > 4096:  # a request's `fallback_timeout` may be any value
                self._timeouts.clear()
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return timeout

    def _deadline_timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        # Kept to 10 ms, rounded up: aiohttp would round a timer of 5 s or more up to the next
        # whole second, which suits a channel timeout but not the caller's deadline. In steps of
        # 10 ms, fresh requests with the same X-Timeout share one timeout object.
        key = math.ceil(seconds * 100)
        timeout = self._deadline_timeouts.get(key)
        if timeout is None:
            if len(self._deadline_timeouts) > 4096:
                self._deadline_timeouts.clear()
            timeout = self._deadline_timeouts[key] = aiohttp.ClientTimeout(
                total=key / 100, ceil_threshold=float("inf"))
        return timeout

    def _stream_timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        # The channel timeout bounds the wait for the answer to start and every silence after.
        timeout = self._stream_timeouts.get(seconds)
        if timeout is None:
            if len(self._stream_timeouts) > 4096:
                self._stream_timeouts.clear()
            timeout = self._stream_timeouts[seconds] = aiohttp.ClientTimeout(
                total=None, sock_connect=min(seconds, 30), sock_read=seconds)
        return timeout

    async def complete(self, call: Call) -> Completion:
        raw = await self._exchange(self._adapter.build_request(call), call.route, call.limit)
        body, usage = self._adapter.read_completion(raw, call.route)
        if call.native:
            # The door of the provider's own API answers with the provider's answer as it came.
            body["native"] = orjson.loads(raw)
        if usage is None:
            text = "".join(message_text((c.get("message") or {}).get("content"))
                           for c in body["choices"] if isinstance(c, dict))
            usage = await counted_usage(call.request, text)
            body["usage"] = usage.as_openai()
        return Completion(body, usage)

    async def embed(self, call: EmbedCall) -> Embeddings:
        adapter = self._embeds
        if adapter is None:  # the config lets no embedding model have such a channel
            raise UpstreamFailed(f"The upstream {call.route.provider!r} has no embeddings API.")
        raw = await self._exchange(adapter.build_embed_request(call), call.route, call.limit)
        body, usage = adapter.read_embeddings(raw, call)
        if usage is None:
            usage = await counted_embedding_usage(call.request)
            body["usage"] = embedding_usage(usage)
        return Embeddings(body, usage)

    async def _exchange(self, request: UpstreamRequest, route: Route,
                        limit: float | None) -> bytes:
        """One JSON request and its 200 answer's body; any other answer raised as the
        adapter reads it."""
        timeout = (self._timeout(route.timeout) if limit is None
                   else self._deadline_timeout(limit))
        try:
            async with self._session().post(
                request.url, data=request.body, headers=request.headers, timeout=timeout,
            ) as response:
                try:
                    raw = await (_read_answer(response, self._max_response_bytes, route)
                                 if response.status == 200 else _read_error(response))
                except GatewayError:
                    response.close()  # the unread rest is dropped with the connection
                    raise
                if not response.content.is_eof():
                    response.close()
        except _WIRE_ERRORS as exc:
            raise _wire_error(exc, route) from None
        if response.status != 200:
            raise self._adapter.read_error(
                response.status, raw, route, response.headers.get("Retry-After"))
        return raw

    @asynccontextmanager
    async def stream(self, call: Call) -> AsyncIterator[_Chunks]:
        request = self._adapter.build_request(call)
        route = call.route
        timeout = self._stream_timeout(route.timeout)
        try:
            response = await self._session().post(
                request.url, data=request.body, headers=request.headers, timeout=timeout)
        except _WIRE_ERRORS as exc:
            raise _wire_error(exc, route) from None
        try:
            if response.status != 200:
                try:
                    raw = await _read_error(response)
                except _WIRE_ERRORS as exc:
                    raise _wire_error(exc, route) from None
                raise self._adapter.read_error(
                    response.status, raw, route, response.headers.get("Retry-After"))
            if not response.content_type.startswith("text/event-stream"):
                raise UpstreamFailed(f"The upstream {route.provider!r} answered a stream request "
                                     f"with {response.content_type or 'no content type'}.")
            yield _Chunks(response, self._adapter, call, self._max_event_bytes, self._idle)
        finally:
            # Closing (not releasing) drops the connection, which is how the upstream learns
            # that a client left: its generation stops and so does its bill.
            response.close()


class _StreamIdle(Exception):
    """Set on a stream's reader by its idle watch, which wakes the read waiting on it."""


class _IdleWatch:
    """Fails a started stream whose upstream sends no event for `idle` seconds.

    One timer per stream, not one per event: each event only notes the time, and the timer,
    when it fires early, is set again for the silence still left. Time the relay spends
    writing to the client is not silence: while it does, `since` is None.
    """

    __slots__ = ("_handle", "_idle", "_loop", "_response", "since")

    def __init__(self, response: aiohttp.ClientResponse, idle: float):
        self._loop = asyncio.get_running_loop()
        self._response = response
        self._idle = idle
        self.since: float | None = None
        self._handle = self._loop.call_at(self._loop.time() + idle, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        if self._response.closed:
            return  # the stream is over, read to its end or closed
        if self.since is None:
            self._handle = self._loop.call_at(now + self._idle, self._check)
        elif now < self.since + self._idle:
            self._handle = self._loop.call_at(self.since + self._idle, self._check)
        else:
            self._response.content.set_exception(_StreamIdle())

    def cancel(self) -> None:
        self._handle.cancel()


class _Chunks:
    def __init__(self, response: aiohttp.ClientResponse, adapter: Adapter, call: Call,
                 max_event_bytes: int, idle: float):
        self._response = response
        self._adapter = adapter
        self._call = call
        self._max_event_bytes = max_event_bytes
        self._idle = idle
        self.state = StreamState()

    async def __aiter__(self) -> AsyncIterator[list[dict[str, Any]]]:
        route, read_chunk = self._call.route, self._adapter.read_chunk
        content, loop = self._response.content, asyncio.get_running_loop()
        # Until the first chunk the channel's timeout bounds the wait; from then on, the watch.
        watch: _IdleWatch | None = None
        try:
            async for events in sse_batches(content, self._max_event_bytes):
                batch: list[dict[str, Any]] = []
                for data in events:
                    if data == b"[DONE]":
                        self.state.finished = True
                        yield batch
                        return
                    try:
                        chunk = read_chunk(data, self._call, self.state)
                    except GatewayError:
                        if batch:
                            yield batch  # what came before the failure is delivered, as billed
                        raise
                    if chunk is not None:
                        batch.append(chunk)
                if watch is None and batch:
                    watch = _IdleWatch(self._response, self._idle)
                if watch is None:
                    yield batch
                else:
                    watch.since = None
                    yield batch
                    watch.since = loop.time()
        except _WIRE_ERRORS as exc:
            raise _wire_error(exc, route) from None
        except EventTooLarge as exc:
            raise UpstreamFailed(f"The upstream {route.provider!r} sent a stream event too "
                                 f"large: more than {exc.limit} bytes (the provider's "
                                 "max_event_bytes).") from None
        except _StreamIdle:
            raise UpstreamTimeout(f"The upstream {route.provider!r} sent nothing for "
                                  f"{self._idle:g}s in the middle of a stream (the provider's "
                                  "stream_idle_timeout).") from None
        finally:
            if watch is not None:
                watch.cancel()
        if not self.state.finished:
            raise UpstreamFailed(
                f"The upstream {route.provider!r} ended the stream before it finished.")
