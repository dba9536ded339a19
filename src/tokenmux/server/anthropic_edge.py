"""The Messages API's side of the HTTP edge: its stream writer (`event: <type>` and
`data: <json>` for each event, as the anthropic SDK reads them; a failure once the stream has
begun is an `error` event) and its error responses."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tokenmux.api.anthropic_answers import Events, error_body, error_status
from tokenmux.errors import GatewayError
from tokenmux.server.responses import json_response
from tokenmux.server.sse import SseWriter


def _encoded(events: list[dict[str, Any]]) -> bytes:
    return b"".join([b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event)
                     + b"\n\n" for event in events])


class MessagesSse(SseWriter):
    def __init__(self, request: web.Request, request_id: str):
        super().__init__(request, request_id)
        self._events = Events()

    async def open(self, headers: dict[str, str]) -> None:
        await super().open({**headers, "request-id": self._request_id})

    def encode(self, chunks: list[dict[str, Any]]) -> bytes:
        feed = self._events.feed
        return _encoded([event for chunk in chunks for event in feed(chunk)])

    def encode_failure(self, error: GatewayError) -> bytes:
        return _encoded([error_body(error, error_status(error))])

    def encode_done(self, tail: list[dict[str, Any]]) -> bytes:
        return self.encode(tail) + _encoded(self._events.finish())


def error_response(error: GatewayError, request_id: str) -> web.Response:
    """ERROR as the Messages API's error body, with the status the anthropic SDK maps to its
    exception classes, and the headers the OpenAI-shaped one would carry."""
    status = error_status(error)
    headers = error.headers()
    if error.retries_spent:
        headers["x-should-retry"] = "false"
    if error.extra_headers:
        headers.update(error.extra_headers)
    headers["request-id"] = request_id  # where the anthropic SDK reads it
    body = error_body(error, status)
    body["request_id"] = request_id
    return json_response(body, request_id, status, headers)
