"""The dashboard at `/ui`: a login page, then one page of plain HTML, CSS and JS modules that
calls the admin API with the session's cookie.

Everything but the login page and its stylesheet needs a console session (admin/sessions.py).
Logging in takes an admin key, checked as the API checks it, and answers a cookie that is
HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it) and holds a random
id, never the key. Changes need the session's CSRF token, which the page carries in a meta tag,
and an Origin of the gateway's own (admin/access.py). The files ship in the package and are read
once, at the first request for each.
"""

from __future__ import annotations

import asyncio
import functools
import html
from importlib import resources

from aiohttp import web

from tokenmux.admin import sessions
from tokenmux.admin.access import CSRF_HEADER, SESSION, check_origin, session_admin
from tokenmux.auth import hash_key
from tokenmux.errors import GatewayError, RouteNotFound, Unauthenticated
from tokenmux.server.routes import GATEWAY

STATIC = resources.files("tokenmux.admin") / "static"
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
PUBLIC = frozenset({"login.css"})  # what the login page needs before there is a session
SECURITY = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; frame-ancestors "
                               "'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it a browser sends `Origin: null`, and the Origin check refuses.
    "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
}


@functools.cache
def _asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _page(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", headers=SECURITY)


def _login_page(problem: str | None = None, status: int = 200) -> web.Response:
    text = _asset("login.html").decode()
    note = f'<p class="problem" role="alert">{html.escape(problem)}</p>' if problem else ""
    return _page(text.replace("<!--problem-->", note), status)


async def login_form(request: web.Request) -> web.Response:
    return _login_page()


async def login(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    try:
        check_origin(request)
    except GatewayError as refused:
        return _login_page(refused.message, 403)
    form = await request.post()
    key = str(form.get("key", "")).strip()
    try:
        principal = await gateway.keys.authenticate(f"Bearer {key}", None)
    except Unauthenticated:
        return _login_page("That key is not a key of this gateway (or it was revoked, or has "
                           "expired).", 401)
    if not principal.is_admin:
        return _login_page("That key is a client's; the console takes an admin key.", 403)
    session_id, _ = await asyncio.to_thread(sessions.open_session, gateway.engine, hash_key(key))
    response = _redirect("/ui")
    response.set_cookie(sessions.COOKIE, session_id, path="/", httponly=True, samesite="Strict",
                        secure=request.secure, max_age=int(sessions.LIFETIME.total_seconds()))
    return response


def _redirect(location: str) -> web.Response:
    # Returned, not raised: the error middleware answers every raised HTTP error as an error.
    return web.Response(status=303, headers={**SECURITY, "Location": location})


async def logout(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    await session_admin(request, gateway)  # a POST: checks the CSRF token and the Origin
    await asyncio.to_thread(sessions.close_session, gateway.engine,
                            request.cookies[sessions.COOKIE])
    response = web.Response(status=204, headers=SECURITY)
    response.del_cookie(sessions.COOKIE, path="/")
    return response


async def _signed_in(request: web.Request) -> sessions.Session | None:
    try:
        await session_admin(request, request.app[GATEWAY])
    except Unauthenticated:
        return None
    return request[SESSION]


async def app_page(request: web.Request) -> web.Response:
    session = await _signed_in(request)
    if session is None:
        return _redirect("/ui/login")
    text = _asset("app.html").decode().replace("{{csrf}}", html.escape(session.csrf))
    return _page(text.replace("{{csrf_header}}", CSRF_HEADER))


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    suffix = name[name.rfind("."):] if "." in name else ""
    if "/" in name or suffix not in TYPES or not (STATIC / name).is_file():
        raise RouteNotFound(f"There is no route for {request.path}.")
    if name not in PUBLIC and await _signed_in(request) is None:
        raise Unauthenticated("Log in to the console at /ui first.")
    return web.Response(body=_asset(name), content_type=TYPES[suffix],
                        headers={**SECURITY, "Cache-Control": "private, max-age=300"})


def add_ui_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/ui", app_page)
    router.add_get("/ui/", app_page)
    router.add_get("/ui/login", login_form)
    router.add_post("/ui/login", login)
    router.add_post("/ui/logout", logout)
    router.add_get("/ui/static/{name}", asset)
