"""Who may use the admin API: an admin key in the request's headers, or a console session.

A client's key is refused with 403, no credentials at all with 401. A console session (the
dashboard's cookie, admin/sessions.py) stands for the admin key that opened it, for as long as
that key lives; a call that changes anything must also carry the session's CSRF token and, when
the browser sends one, an Origin of the gateway itself.
"""

from __future__ import annotations

import asyncio
import hmac
from urllib.parse import urlsplit

from aiohttp import web

from tokenmux.admin import sessions
from tokenmux.auth import Principal
from tokenmux.errors import Forbidden, Unauthenticated
from tokenmux.gateway import Gateway

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
SESSION = web.RequestKey("console_session", sessions.Session)


async def admin_of(request: web.Request, gateway: Gateway) -> Principal:
    headers = request.headers
    if headers.get("Authorization") or headers.get("x-api-key"):
        principal = await gateway.keys.authenticate(headers.get("Authorization"),
                                                    headers.get("x-api-key"))
        if not principal.is_admin:
            raise Forbidden("This key may not use the admin API; an admin key may.")
        return principal
    return await session_admin(request, gateway)


async def session_admin(request: web.Request, gateway: Gateway) -> Principal:
    """The admin whose console session the request's cookie names; Unauthenticated when none."""
    cookie = request.cookies.get(sessions.COOKIE)
    if not cookie:
        raise Unauthenticated("You didn't provide an API key. Send it as 'Authorization: "
                              "Bearer <key>', or log in to the console at /ui.")
    session = await asyncio.to_thread(sessions.find, gateway.engine, cookie)
    principal = None if session is None else gateway.keys.by_hash(session.key_hash)
    if session is None or principal is None or not principal.is_admin:
        raise Unauthenticated("The console session has ended (logged out, past its lifetime, or "
                              "its key was revoked or has expired); log in again at /ui.")
    if request.method not in SAFE_METHODS:
        given = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(given.encode(), session.csrf.encode()):
            raise Forbidden(f"A change made from the console needs its {CSRF_HEADER} header.")
        check_origin(request)
    request[SESSION] = session
    return principal


def check_origin(request: web.Request) -> None:
    """A browser names the page a request came from; only the gateway's own pages may change
    anything."""
    origin = request.headers.get("Origin")
    # The host alone: a proxy in front may end TLS, so the scheme seen here can differ.
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise Forbidden(f"Changes are accepted from the console's own pages, not from {origin}.")
