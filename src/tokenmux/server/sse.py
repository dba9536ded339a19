"""Writes an OpenAI stream: `data: <json>` events, `data: [DONE]` at the end, nothing else.

No `event:` or `id:` lines: the openai SDK would take them for chunks.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web

from tokenmux.answer import DONE, events
from tokenmux.errors import GatewayError


class _Stream(web.StreamResponse):
    # The headers leave with the first events, in one write: aiohttp sends a stream's headers
    # on their own by default, one more packet and one more wake of the client per stream.
    _send_headers_immediately = False


class SseWriter:
    def __init__(self, request: web.Request, request_id: str):
        self._request = request
        self._request_id = request_id
        self.response: web.StreamResponse | None = None  # made only if the answer is a stream

    async def open(self, headers: dict[str, str]) -> None:
        self.response = _Stream(headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # tells a fronting nginx not to hold chunks back
            "X-Request-Id": self._request_id,
            **headers,
        })
        await self.response.prepare(self._request)

    async def send(self, chunks: list[dict[str, Any]]) -> None:
        # Everything one upstream read brought leaves in one write: one syscall, not one a chunk.
        await self.write(self.encode(chunks))

    # The last events leave with the end of the body, in the same write.

    async def fail(self, error: GatewayError) -> None:
        with contextlib.suppress(ConnectionError):  # a client already gone needs no notice
            await self.end(self.encode_failure(error))

    async def done(self, tail: list[dict[str, Any]]) -> None:
        await self.end(self.encode_done(tail))

    def encode(self, chunks: list[dict[str, Any]]) -> bytes:
        return events(chunks)

    def encode_failure(self, error: GatewayError) -> bytes:
        # The openai SDK raises APIError on an event whose object has an `error` key.
        return events([error.body()])

    def encode_done(self, tail: list[dict[str, Any]]) -> bytes:
        return events(tail) + DONE

    async def write(self, data: bytes) -> None:
        assert self.response is not None
        await self.response.write(data)

    async def end(self, data: bytes) -> None:
        assert self.response is not None
        await self.response.write_eof(data)
