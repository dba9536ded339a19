"""Runs one attempt against an HTTP upstream: the adapter translates, this module does the I/O.

aiohttp's exceptions stop here and become the gateway's own: a timeout is `UpstreamTimeout`
(504), anything else that goes wrong on the wire is `UpstreamFailed` (502).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from tokenmux.errors import GatewayError, UpstreamFailed, UpstreamTimeout
from tokenmux.providers.base import (
    Adapter,
    Call,
    Completion,
    StreamState,
    counted_usage,
)
from tokenmux.routing.catalog import Route
from tokenmux.tokens import message_text
from tokenmux.upstream.sse import sse_batches

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


class HttpProvider:
    def __init__(self, session: Callable[[], aiohttp.ClientSession], adapter: Adapter):
        self._session = session
        self._adapter = adapter
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._stream_timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._deadline_timeouts: dict[int, aiohttp.ClientTimeout] = {}

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
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
            timeout = self._stream_timeouts[seconds] = aiohttp.ClientTimeout(
                total=None, sock_connect=min(seconds, 30), sock_read=seconds)
        return timeout

    async def complete(self, call: Call) -> Completion:
        request = self._adapter.build_request(call)
        route = call.route
        timeout = (self._timeout(route.timeout) if call.limit is None
                   else self._deadline_timeout(call.limit))
        try:
            async with self._session().post(
                request.url, data=request.body, headers=request.headers, timeout=timeout,
            ) as response:
                raw = await response.read()
        except _WIRE_ERRORS as exc:
            raise _wire_error(exc, route) from None
        if response.status != 200:
            raise self._adapter.read_error(
                response.status, raw, route, response.headers.get("Retry-After"))
        body, usage = self._adapter.read_completion(raw, route)
        if usage is None:
            text = "".join(message_text((c.get("message") or {}).get("content"))
                           for c in body["choices"] if isinstance(c, dict))
            usage = counted_usage(call.request, text)
            body["usage"] = usage.as_openai()
        return Completion(body, usage)

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
                    raw = await response.read()
                except _WIRE_ERRORS as exc:
                    raise _wire_error(exc, route) from None
                raise self._adapter.read_error(
                    response.status, raw, route, response.headers.get("Retry-After"))
            if not response.content_type.startswith("text/event-stream"):
                raise UpstreamFailed(f"The upstream {route.provider!r} answered a stream request "
                                     f"with {response.content_type or 'no content type'}.")
            yield _Chunks(response, self._adapter, call)
        finally:
            # Closing (not releasing) drops the connection, which is how the upstream learns
            # that a client left: its generation stops and so does its bill.
            response.close()


class _Chunks:
    def __init__(self, response: aiohttp.ClientResponse, adapter: Adapter, call: Call):
        self._response = response
        self._adapter = adapter
        self._call = call
        self.state = StreamState()

    async def __aiter__(self) -> AsyncIterator[list[dict[str, Any]]]:
        route, read_chunk = self._call.route, self._adapter.read_chunk
        try:
            async for events in sse_batches(self._response.content):
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
                yield batch
        except _WIRE_ERRORS as exc:
            raise _wire_error(exc, route) from None
        if not self.state.finished:
            raise UpstreamFailed(
                f"The upstream {route.provider!r} ended the stream before it finished.")
