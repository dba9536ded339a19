"""Reading a request's body, which the pipeline asks for only once the key is known.

What can be refused from the headers is refused before a byte of the body is read: a type that
is not JSON (415), an encoding the gateway cannot decode (415), a declared length over
`server.max_request_bytes` (413). The read itself has `server.body_timeout_s` in all, so a
client trickling its body cannot hold a connection and a buffer for longer; a body that does not
decode (bad chunking, a gzip that is not gzip) is the client's mistake, a 400.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from tokenmux.config.schema import Server
from tokenmux.errors import InvalidRequest, PayloadTooLarge, ReadTimeout, UnsupportedMediaType

# The encodings aiohttp decodes with the standard library alone; any other would reach the JSON
# parser still encoded.
DECODED = frozenset({"identity", "gzip", "deflate"})


def check_headers(request: web.Request, limits: Server) -> None:
    """What the headers alone say about the body: its type, its encoding, its length."""
    _check_type(request.headers.get("Content-Type"))
    encoding = request.headers.get("Content-Encoding")
    if encoding is not None and encoding.strip().lower() not in DECODED:
        raise UnsupportedMediaType(
            "Content-Encoding must be gzip, deflate or identity.", code="unsupported_encoding")
    length = request.content_length
    if length is not None and length > limits.max_request_bytes:
        raise _too_large(limits)


async def read_body(request: web.Request, limits: Server) -> bytes:
    check_headers(request, limits)
    try:
        if request.content.is_eof():  # all of it came with the headers: no timer to arm
            return await request.read()
        async with asyncio.timeout(limits.body_timeout_s):
            return await request.read()
    except TimeoutError:
        raise ReadTimeout(f"The request body did not arrive within {limits.body_timeout_s:g} "
                          "seconds.") from None
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limits) from None
    except (HttpProcessingError, RequestPayloadError) as exc:
        # The parser's message may quote the raw bytes; the class name says enough.
        raise InvalidRequest(f"The request body could not be decoded ({type(exc).__name__}).",
                             code="invalid_body") from None


def _check_type(content_type: str | None) -> None:
    if content_type is None:  # many scripts send none; the body is JSON or a 400 anyway
        return
    media = content_type.partition(";")[0].strip().lower()
    if media == "application/json" or ("/" in media and media.endswith("+json")):
        return
    raise UnsupportedMediaType("Content-Type must be application/json.")


def _too_large(limits: Server) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the gateway's limit of "
                           f"{limits.max_request_bytes} bytes.")
