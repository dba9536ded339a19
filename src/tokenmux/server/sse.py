"""Writes an OpenAI stream: `data: <json>` events, `data: [DONE]` at the end, nothing else.

No `event:` or `id:` lines: the openai SDK would take them for chunks.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from aiohttp import web

from tokenmux.errors import GatewayError


class SseWriter:
    def __init__(self, request: web.Request, request_id: str):
        self._request = request
        self.response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # tells a fronting nginx not to hold chunks back
            "X-Request-Id": request_id,
        })

    async def open(self, headers: dict[str, str]) -> None:
        self.response.headers.update(headers)
        await self.response.prepare(self._request)

    async def send(self, chunks: list[dict[str, Any]]) -> None:
        # Everything one upstream read brought leaves in one write: one syscall, not one a chunk.
        await self.response.write(_events(chunks))

    async def fail(self, error: GatewayError) -> None:
        # The openai SDK raises APIError on an event whose object has an `error` key.
        with contextlib.suppress(ConnectionError):  # a client already gone needs no notice
            await self.response.write(_events([error.body()]))
            await self.response.write_eof()

    async def done(self, tail: list[dict[str, Any]]) -> None:
        await self.response.write(_events(tail) + b"data: [DONE]\n\n")
        await self.response.write_eof()


def _events(chunks: list[Any]) -> bytes:
    return b"".join([b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks])
