"""Rendering JSON bodies and errors, always in the OpenAI shape."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tokenmux.errors import GatewayError


def json_response(body: Any, request_id: str, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    """BODY as JSON; bytes are taken as already encoded (a replay's kept body)."""
    encoded = body if isinstance(body, bytes) else orjson.dumps(body)
    response = web.Response(body=encoded, status=status,
                            content_type="application/json")
    response.headers["X-Request-Id"] = request_id
    if headers:
        response.headers.update(headers)
    return response


def error_response(error: GatewayError, request_id: str) -> web.Response:
    headers = error.headers()
    if error.retries_spent:
        headers["x-should-retry"] = "false"
    if error.extra_headers:
        headers.update(error.extra_headers)
    return json_response(error.body(), request_id, error.status, headers)
