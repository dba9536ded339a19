"""The connection under the routes: aiohttp's request handler with the gateway's limits.

- **Connection cap.** At most `server.max_connections` are open at once; a connection beyond
  that is answered 503 `server_busy` (`Retry-After: 1`) as soon as it is accepted, and closed.
- **Header timeout.** A request's line and headers must all arrive within
  `server.header_timeout_s` of its first byte; each byte does not extend it, so a client
  trickling a header line a second is answered 408 `header_timeout` and closed.
- **Header size.** The line and headers of a request may have `HEAD_LIMIT` bytes in all (431
  beyond), so 128 headers of 8 KB each cannot be held for every connection.
- **Refusals in OpenAI's shape.** What aiohttp's parser refuses (a header over 8 KB: 431; bad
  chunking, a Content-Length beside a Transfer-Encoding, a bare CR or LF: 400; a method it does
  not know: 501) leaves as `{"error": {...}}` with a request id, never quoting the request: the
  raw line may hold a key.

This leans on aiohttp 3's `RequestHandler` internals (its message queue and counters), kept to
this module; the edge tests exercise each of them against a real process.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

from tokenmux.config.schema import Server as Limits
from tokenmux.errors import (
    GatewayError,
    HeadersTooLarge,
    InvalidRequest,
    MethodNotImplemented,
    ReadTimeout,
    ServerBusy,
)
from tokenmux.ids import unique
from tokenmux.logs import REQUEST_ID
from tokenmux.server.responses import error_response

log = logging.getLogger(__name__)

FIELD_LIMIT = 8190  # bytes in a request line or one header; aiohttp's default, stated here
HEAD_LIMIT = 64 * 1024  # bytes of a request's line and headers together
LINGER_SECONDS = 1.0  # a connection refused mid-headers stays this long to deliver the answer


class EdgeServer(web.Server):
    """aiohttp's server, making `EdgeProtocol`s and counting the connections they hold."""

    def __init__(self, handler: Any, *, limits: Limits, loop: asyncio.AbstractEventLoop,
                 **kwargs: Any):
        protocol_kwargs = {k: v for k, v in kwargs.items()
                           if k not in ("request_factory", "handler_cancellation")}
        super().__init__(handler, loop=loop, **kwargs)
        self.limits = limits
        self.open_connections = 0
        self._make = (loop, protocol_kwargs)

    def __call__(self) -> RequestHandler:
        loop, kwargs = self._make
        return EdgeProtocol(self, loop=loop, **kwargs)


class EdgeProtocol(RequestHandler):
    def __init__(self, manager: EdgeServer, **kwargs: Any):
        super().__init__(manager, max_line_size=FIELD_LIMIT, max_field_size=FIELD_LIMIT,
                         **kwargs)
        self._edge = manager
        self._counted = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._payload: StreamReader | None = None  # the body of the last request parsed
        self._head_bytes = 0  # of the request whose headers are arriving
        self._refused = False  # answered from here; what still comes is dropped

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        edge = self._edge
        if edge.open_connections >= edge.limits.max_connections:
            busy = ServerBusy("The gateway has as many connections open as it accepts; "
                              "retry in a moment.")
            transport.write(_raw(busy, unique("req_")))  # type: ignore[attr-defined]
            transport.close()
            return
        edge.open_connections += 1
        self._counted = True
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_header_timer()
        if self._counted:
            self._counted = False
            self._edge.open_connections -= 1
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._counted or self._refused:
            return
        between = self._payload is None or self._payload.is_eof()  # no body still arriving
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._stop_header_timer()
            self._head_bytes = 0
            if self._messages:
                self._payload = self._messages[-1][1]
        elif between and data:
            # A request has begun and its headers are not all here (a request that comes
            # whole in one read, the usual case, needs none of this).
            self._head_bytes += len(data)
            if self._head_bytes > HEAD_LIMIT:
                # Each line is within its limit, but together they would be held in memory.
                self._refuse_now(HeadersTooLarge(
                    f"The request's headers are larger than {HEAD_LIMIT} bytes in all."))
            elif self._header_timer is None:
                self._header_timer = self._loop.call_later(
                    self._edge.limits.header_timeout_s, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport is None:
            return
        timeout = self._edge.limits.header_timeout_s
        if self._request_in_progress:
            # Pipelined behind a request still being answered (a long stream): that answer is
            # not cut; the clock runs again and ends the connection if the headers still lag.
            self._header_timer = self._loop.call_later(timeout, self._headers_late)
            return
        self._refuse_now(ReadTimeout(
            f"The request headers did not arrive within {timeout:g} seconds.",
            code="header_timeout"))

    def _refuse_now(self, error: GatewayError) -> None:
        """Answers a request whose headers never completed, and closes the connection."""
        self._stop_header_timer()
        transport = self.transport
        if transport is None or self._request_in_progress or self._messages:
            self.force_close()
            return
        self._refused = True
        rid = unique("req_")
        # A transport callback's context outlives the call: the id goes with the record alone.
        log.info("refused a request before its headers were complete: %d %s", error.status,
                 error.code, extra={"request_id": rid})
        transport.write(_raw(error, rid))
        # Closing a socket with unread bytes resets it, and a client still sending would lose
        # the answer: end the writing side first, drop what comes for a moment, then close.
        if transport.can_write_eof():
            transport.write_eof()
        self._loop.call_later(LINGER_SECONDS, self.force_close)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, RequestPayloadError | HttpProcessingError):
            # A body that failed to decode fails again as aiohttp drains it after the answer
            # (already a 400): worth a line, not a traceback.
            log.debug("dropped a connection whose body did not decode: %s", type(exc).__name__)
            return
        super().log_exception(*args, **kw)

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        rid = unique("req_")
        REQUEST_ID.set(rid)
        error = _refusal(status, exc)
        if error.status >= 500 and not isinstance(error, MethodNotImplemented):
            log.error("failed handling a request from %s", request.remote, exc_info=exc)
        else:
            # The exception's text quotes the raw request; its class is what an operator needs.
            log.info("refused a malformed request from %s: %d %s", request.remote,
                     error.status, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("the response had begun; no error can follow it")
        response = error_response(error, rid)
        response.force_close()
        return response


def _refusal(status: int, exc: BaseException | None) -> GatewayError:
    if isinstance(exc, LineTooLong):
        return HeadersTooLarge(f"The request line or a header is longer than the gateway's "
                               f"limit of {FIELD_LIMIT} bytes.")
    if isinstance(exc, BadHttpMethod):
        return MethodNotImplemented("The request's method is not one the gateway knows.")
    if isinstance(exc, HttpProcessingError) or 400 <= status < 500:
        if "too many headers" in str(getattr(exc, "message", "")).lower():
            return HeadersTooLarge("The request has more headers than the gateway accepts.")
        return InvalidRequest("The request is not valid HTTP/1.1 "
                              f"({type(exc).__name__ if exc else HTTPStatus(status).phrase}).",
                              code="malformed_request")
    return GatewayError("The gateway failed unexpectedly; the request id names it in the "
                        "gateway's log.")


def _raw(error: GatewayError, rid: str) -> bytes:
    """A whole HTTP/1.1 response, for the moments there is no request to answer through."""
    body = orjson.dumps(error.body())
    head = [f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
            "Content-Type: application/json", f"Content-Length: {len(body)}",
            f"X-Request-Id: {rid}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in error.headers().items()
             if name.lower() != "connection"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
