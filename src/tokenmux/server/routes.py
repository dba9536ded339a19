"""The HTTP routes: each turns a request into a pipeline call and its result into a response."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import HttpVersion11, web
from aiohttp.typedefs import Handler
from sqlalchemy.exc import SQLAlchemyError

from tokenmux import pipeline, tokens
from tokenmux.api.anthropic_answers import message_of
from tokenmux.api.anthropic_messages import parse_count, parse_messages
from tokenmux.api.openapi import document
from tokenmux.api.response_object import render
from tokenmux.api.response_store import ResponseStore, store_for
from tokenmux.api.responses import door_param
from tokenmux.compression import Headers
from tokenmux.errors import (
    ExpectationFailed,
    Forbidden,
    GatewayError,
    InvalidRequest,
    LedgerUnavailable,
    MethodNotAllowed,
    PayloadTooLarge,
    ResponseNotFound,
    RouteNotFound,
)
from tokenmux.gateway import Gateway
from tokenmux.idempotency import key_of
from tokenmux.ids import is_client_id, unique
from tokenmux.limits import SharedLimiter
from tokenmux.logs import REQUEST_ID
from tokenmux.server import anthropic_edge
from tokenmux.server.body import check_headers, read_body
from tokenmux.server.response_events import ResponseEvents
from tokenmux.server.responses import error_response, json_response
from tokenmux.server.responses_door import ResponsesDoor
from tokenmux.server.sse import SseWriter
from tokenmux.telemetry.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

log = logging.getLogger(__name__)

GATEWAY = web.AppKey("gateway", Gateway)
RESPONSES = web.AppKey("responses", ResponseStore)  # kept for `previous_response_id`
# A pipeline entry: the request's headers and body in, its answer out.
Door = Callable[[Gateway, pipeline.Inbound, SseWriter], Awaitable[pipeline.Answer]]


def request_id(request: web.Request) -> str:
    rid: str | None = request.get("request_id")
    if rid is None:
        # The client's id when it sent one (an Idempotency-Key alone names the request too).
        given = request.headers.get("X-Request-Id") or request.headers.get("Idempotency-Key")
        rid = given if given and is_client_id(given) else unique("req_")
        request["request_id"] = rid
    return rid


def _inbound(request: web.Request) -> pipeline.Inbound:
    started = time.perf_counter()
    headers = request.headers
    # The body is read only when the pipeline asks, once the key is known.
    return pipeline.Inbound(b"", headers.get("Authorization"), headers.get("x-api-key"),
                            headers.get("X-User"), headers.get("X-Timeout"),
                            headers.get("X-Tier"), request_id(request), started,
                            functools.partial(read_body, request,
                                              request.app[GATEWAY].config.server),
                            headers.get("X-Strict-Params"), Headers.read(headers.get),
                            key_of(headers.get("X-Request-Id"),
                                   headers.get("Idempotency-Key")))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _served(request, pipeline.chat_completion, "chat")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await _served(request, pipeline.embeddings, "embeddings")


async def _served(request: web.Request, door: Door, name: str) -> web.StreamResponse:
    """A door in OpenAI's own format: the pipeline's answer goes out as it is."""
    rid = request_id(request)
    gateway = request.app[GATEWAY]
    inbound = _inbound(request)
    inbound.door = name
    sink = SseWriter(request, rid)
    answer = await door(gateway, inbound, sink)
    if answer.raw is not None:
        return json_response(answer.raw, rid, headers=answer.headers)
    if answer.body is None:
        assert sink.response is not None
        return sink.response
    return json_response(answer.body, rid, headers=answer.headers)


async def messages(request: web.Request) -> web.StreamResponse:
    """The Messages API's door: the same pipeline, its request and answers translated."""
    rid = request_id(request)
    inbound = _inbound(request)
    inbound.door = "messages"
    gateway = request.app[GATEWAY]
    inbound.parse = functools.partial(parse_messages,
                                      version=request.headers.get("anthropic-version"),
                                      beta=request.headers.get("anthropic-beta"),
                                      reasons=functools.partial(_reasons, gateway))
    sink = anthropic_edge.MessagesSse(request, rid)
    answer = await pipeline.chat_completion(gateway, inbound, sink)
    if answer.body is None and answer.raw is None:
        assert sink.response is not None
        return sink.response
    # A keyed request's answer is kept as the pipeline made it, and rendered each time.
    body = answer.body if answer.body is not None else orjson.loads(answer.raw or b"{}")
    response = json_response(message_of(body), rid, headers=answer.headers)
    response.headers["request-id"] = rid
    return response


async def count_tokens(request: web.Request) -> web.Response:
    """The Messages API's token count, by the gateway's own tokenizer: free, and not billed."""
    gateway = request.app[GATEWAY]
    await _authenticate(request)
    counted = parse_count(await read_body(request, gateway.config.server))
    gateway.catalog.resolve(counted.model)  # an unknown model is a 404, as a request's would be
    chat = counted.body
    tools = orjson.dumps(chat["tools"]).decode() if chat.get("tools") else ""
    total = await tokens.measured(
        tokens.messages_size(chat["messages"]) + len(tools),
        lambda: tokens.count_messages(chat["messages"]) + tokens.count_text(tools))
    return json_response({"input_tokens": total}, request_id(request))


def _reasons(gateway: Gateway, model: str) -> bool:
    try:
        return "reasoning" in gateway.catalog.resolve(model).capabilities
    except GatewayError:
        return False  # an unknown model: the pipeline says so


def _anthropic(handler: Handler) -> Handler:
    """A route of the Messages API: its failures leave in that API's error shape."""

    async def anthropic(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as error:
            return _refused(error, request, anthropic_edge.error_response)
        except web.HTTPException as exc:
            return _refused(_from_http(exc, request), request, anthropic_edge.error_response)

    return anthropic


async def create_response(request: web.Request) -> web.StreamResponse:
    """`POST /v1/responses`: the same pipeline, the body read by the Responses door and the
    answer rendered as a response object or its stream of events."""
    inbound = _inbound(request)
    gateway = request.app[GATEWAY]
    door = ResponsesDoor(gateway.keys, request.app[RESPONSES], inbound.authorization,
                         inbound.api_key, inbound.read_body)
    inbound.read_body, inbound.parse, inbound.door = door.read_body, door.parse, "responses"
    sink = ResponseEvents(request, inbound.request_id, door)
    try:
        answer = await pipeline.chat_completion(gateway, inbound, sink)
    except GatewayError as error:
        # The chat rules name chat fields: the client sent this door's.
        if (param := door_param(error.param)) != error.param:
            assert error.param is not None and param is not None
            error.message = error.message.replace(error.param, param)
            error.param = param
        raise
    if answer.body is None and answer.raw is None:
        assert sink.response is not None
        return sink.response
    assert door.request is not None
    completion = answer.body if answer.body is not None else orjson.loads(answer.raw or b"")
    response = render(door.request, inbound.request_id, completion)
    await door.keep(response)
    return json_response(response, inbound.request_id, headers=answer.headers)


async def retrieve_response(request: web.Request) -> web.Response:
    """`GET /v1/responses/{id}`: a kept response, to the key that made it."""
    gateway = request.app[GATEWAY]
    principal = await gateway.keys.authenticate(request.headers.get("Authorization"),
                                                request.headers.get("x-api-key"))
    found = request.match_info["response_id"]
    record = await request.app[RESPONSES].get(principal.key_id, found)
    if record is None:
        raise ResponseNotFound(f"No response with id '{found}' is kept for this key.",
                               param="response_id", code="not_found")
    return json_response(orjson.loads(record)["response"], request_id(request))


async def _authenticate(request: web.Request) -> None:
    await request.app[GATEWAY].keys.authenticate(request.headers.get("Authorization"),
                                           request.headers.get("x-api-key"))


async def continue_once_known(
        request: web.Request,
        render: Callable[[GatewayError, str], web.Response] = error_response,
) -> web.StreamResponse | None:
    """`Expect: 100-continue`: a client that waits for the go before sending its body gets it
    only with a valid key and an acceptable body, so a refused upload is never sent at all."""
    REQUEST_ID.set(request_id(request))
    if request.version != HttpVersion11:
        return None
    try:
        if request.headers.get("Expect", "").lower() != "100-continue":
            raise ExpectationFailed("The only expectation the gateway meets is 100-continue.")
        await _authenticate(request)
        check_headers(request, request.app[GATEWAY].config.server)
    except GatewayError as error:
        return _refused(error, request, render)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer proper has not begun
    return None


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
    """Liveness and readiness at once: 200 only when the database answers, the view of the keys
    is fresh (a revoked key is refused), the ledger can keep rows somewhere (the database or
    its disk), and limited keys are served (Redis answers, or may be done without)."""
    gateway = request.app[GATEWAY]
    ledger = gateway.ledger.health()
    body = {"status": "ok", "database": "ok", "keys": gateway.keys_health(),
            "ledger": ledger.pop("state"), "ledger_detail": ledger,
            "instance": gateway.instance, "pid": os.getpid(), "workers": gateway.workers,
            # Where each key's rate limits are held: in this process whole, split over the
            # instances, or shared through Redis.
            "limits": gateway.limiter.scope(), "budgets": gateway.budgets.scope(),
            # The console's aggregates of past days; summaries stay exact without it (their
            # rows answer), so it never makes the gateway unavailable.
            "rollup": gateway.rollup_health()}
    if gateway.redis is not None:
        body["redis"] = "degraded" if gateway.redis.down else "ok"
        body["instances"] = gateway.redis.instances  # seen alive in the last minute
    try:
        await asyncio.wait_for(asyncio.to_thread(gateway.database_ready), 5)
    except (SQLAlchemyError, TimeoutError) as exc:
        body["database"] = f"unreachable: {type(exc).__name__}"
    # Degraded Redis stops the serving only where the config says to refuse meanwhile.
    refusing = isinstance(gateway.limiter, SharedLimiter) and gateway.limiter.refusing
    if (body["database"] != "ok" or body["keys"] != "ok"
            or body["ledger"] in ("failing", "stopped") or refusing):
        body["status"] = "unavailable"
        return json_response(body, request_id(request), 503)
    return json_response(body, request_id(request))


async def live(request: web.Request) -> web.Response:
    return json_response({"status": "ok"}, request_id(request))


async def metrics(request: web.Request) -> web.Response:
    """Prometheus's scrape; with `metrics.access: admin`, for an admin key only."""
    gateway = request.app[GATEWAY]
    assert gateway.telemetry is not None and gateway.telemetry.metrics is not None
    if gateway.config.metrics.access == "admin":
        principal = await gateway.keys.authenticate(request.headers.get("Authorization"),
                                                    request.headers.get("x-api-key"))
        if not principal.is_admin:
            raise Forbidden("The metrics are for an admin key (metrics.access: admin).")
    meter = gateway.telemetry.metrics
    meter.sample()  # the states, read on the loop that changes them
    # Reading every worker's files is disk work: off the loop.
    body = await asyncio.to_thread(meter.render) if meter.multiprocess else meter.render()
    response = web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})
    response.headers["X-Request-Id"] = request_id(request)
    return response


async def openapi(request: web.Request) -> web.Response:
    response = web.Response(body=document(), content_type="application/json")
    response.headers["X-Request-Id"] = request_id(request)
    return response


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost handler: every failure leaves as an OpenAI-shaped error with a request id,
    and every line logged meanwhile carries that id."""
    # Each request runs in a task of its own, so the variable needs no reset.
    REQUEST_ID.set(request_id(request))
    try:
        return await handler(request)
    except GatewayError as error:
        return _refused(error, request)
    except web.HTTPException as exc:
        return _refused(_from_http(exc, request), request)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        failure = GatewayError("The gateway failed unexpectedly; the request id names it in "
                               "the gateway's log.")
        return _refused(failure, request)


def _refused(error: GatewayError, request: web.Request,
             render: Callable[[GatewayError, str], web.Response] = error_response
             ) -> web.Response:
    if error.status >= 500:
        # The gateway's or an upstream's failure, not the client's: the operator looks it up by
        # the request id the client was given.
        log.warning("answered %d %s: %s", error.status, error.code, error.message)
    response = render(error, request_id(request))
    if not request.content.is_eof():
        # Refused before its body was read, or while reading it: the rest of the body is
        # drained and dropped (for at most aiohttp's lingering time), then the connection
        # closes, so a refused upload cannot hold it open.
        response.force_close()
    return response


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


def _billed(handler: Handler) -> Handler:
    """A route that serves (and bills) requests: refused while the ledger can keep no row, and
    known to the stop, which ends it when the grace is out."""

    async def billed(request: web.Request) -> web.StreamResponse:
        gateway = request.app[GATEWAY]
        if not gateway.ledger.accepting():
            raise LedgerUnavailable("The gateway cannot record usage right now (neither its "
                                    "database nor its disk takes rows), so it serves no "
                                    "request.")
        task = asyncio.current_task()
        assert task is not None
        gateway.inflight.add(task)
        try:
            return await handler(request)
        finally:
            gateway.inflight.discard(task)

    return billed


def add_routes(app: web.Application) -> None:
    chat = _billed(chat_completions)
    for path in ("/v1/chat/completions", "/api/v1/chat/completions"):
        app.router.add_post(path, chat, expect_handler=continue_once_known)
    expect = functools.partial(continue_once_known, render=anthropic_edge.error_response)
    for path in ("/v1/messages", "/api/v1/messages"):
        app.router.add_post(path, _anthropic(_billed(messages)), expect_handler=expect)
        app.router.add_post(path + "/count_tokens", _anthropic(count_tokens),
                            expect_handler=expect)
    app[RESPONSES] = store_for(app[GATEWAY].redis)
    responses = _billed(create_response)
    for path in ("/v1/responses", "/api/v1/responses"):
        app.router.add_post(path, responses, expect_handler=continue_once_known)
        app.router.add_get(path + "/{response_id}", retrieve_response)
    for path in ("/v1/embeddings", "/api/v1/embeddings"):
        app.router.add_post(path, _billed(embeddings), expect_handler=continue_once_known)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/api/v1/chat/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
    app.router.add_get("/api/v1/models", list_models)
    app.router.add_get("/api/v1/models/{model:.+}", retrieve_model)
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/openapi.json", openapi)
    telemetry = app[GATEWAY].telemetry
    if telemetry is not None and telemetry.metrics is not None:
        app.router.add_get("/metrics", metrics)
