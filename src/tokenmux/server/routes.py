"""The HTTP routes: each turns a request into a pipeline call and its result into a response."""

from __future__ import annotations

import asyncio
import logging
import re
import time

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy.exc import SQLAlchemyError

from tokenmux import pipeline
from tokenmux.api.openapi import document
from tokenmux.errors import (
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
)
from tokenmux.gateway import Gateway
from tokenmux.ids import unique
from tokenmux.server.responses import error_response, json_response
from tokenmux.server.sse import SseWriter

log = logging.getLogger(__name__)

GATEWAY = web.AppKey("gateway", Gateway)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id(request: web.Request) -> str:
    rid: str | None = request.get("request_id")
    if rid is None:
        given = request.headers.get("X-Request-Id")
        rid = given if given and _REQUEST_ID.fullmatch(given) else unique("req_")
        request["request_id"] = rid
    return rid


async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    rid = request_id(request)
    body = await request.read()  # over the size limit: HTTPRequestEntityTooLarge, see below
    headers = request.headers
    inbound = pipeline.Inbound(body, headers.get("Authorization"), headers.get("x-api-key"),
                               headers.get("X-User"), headers.get("X-Timeout"),
                               headers.get("X-Tier"), rid, started)
    sink = SseWriter(request, rid)
    answer = await pipeline.chat_completion(request.app[GATEWAY], inbound, sink)
    if answer.body is None:
        assert sink.response is not None
        return sink.response
    return json_response(answer.body, rid, headers=answer.headers)


async def _authenticate(request: web.Request) -> None:
    await request.app[GATEWAY].keys.authenticate(request.headers.get("Authorization"),
                                           request.headers.get("x-api-key"))


async def list_models(request: web.Request) -> web.Response:
    await _authenticate(request)
    catalog = request.app[GATEWAY].catalog
    data = [entry.as_openai(catalog.created) for entry in catalog.entries]
    return json_response({"object": "list", "data": data}, request_id(request))


async def retrieve_model(request: web.Request) -> web.Response:
    await _authenticate(request)
    catalog = request.app[GATEWAY].catalog
    entry = catalog.resolve(request.match_info["model"])
    return json_response(entry.as_openai(catalog.created), request_id(request))


async def health(request: web.Request) -> web.Response:
    """Liveness and readiness at once: 200 only when the database answers too."""
    gateway = request.app[GATEWAY]
    try:
        await asyncio.wait_for(asyncio.to_thread(gateway.database_ready), 5)
    except (SQLAlchemyError, TimeoutError) as exc:
        body = {"status": "unavailable", "database": f"unreachable: {type(exc).__name__}"}
        return json_response(body, request_id(request), 503)
    return json_response({"status": "ok", "database": "ok"}, request_id(request))


async def live(request: web.Request) -> web.Response:
    return json_response({"status": "ok"}, request_id(request))


async def openapi(request: web.Request) -> web.Response:
    response = web.Response(body=document(), content_type="application/json")
    response.headers["X-Request-Id"] = request_id(request)
    return response


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost handler: every failure leaves as an OpenAI-shaped error with a request id."""
    try:
        return await handler(request)
    except GatewayError as error:
        return error_response(error, request_id(request))
    except web.HTTPException as exc:
        return error_response(_from_http(exc, request), request_id(request))
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        failure = GatewayError("The gateway failed unexpectedly; the request id names it in "
                               "the gateway's log.")
        return error_response(failure, request_id(request))


def _from_http(exc: web.HTTPException, request: web.Request) -> GatewayError:
    if exc.status == 404:
        return RouteNotFound(f"There is no route for {request.path}.")
    if exc.status == 405:
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}.")
    if exc.status == 413:
        limit = request.app[GATEWAY].config.server.max_request_bytes
        return PayloadTooLarge(f"The request body is larger than the gateway's limit of "
                               f"{limit} bytes.")
    return InvalidRequest(exc.reason or "The request could not be read.")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/api/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/api/v1/chat/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/openapi.json", openapi)
