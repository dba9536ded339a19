"""Builds the aiohttp application around a Gateway and ties their lifetimes together."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from tokenmux.admin.api import add_admin_routes
from tokenmux.admin.ui import add_ui_routes
from tokenmux.gateway import Gateway
from tokenmux.server.routes import GATEWAY, add_routes, errors


def create_app(gateway: Gateway) -> web.Application:
    app = web.Application(
        middlewares=[errors],
        client_max_size=gateway.config.server.max_request_bytes,
    )
    app[GATEWAY] = gateway
    add_routes(app)
    add_admin_routes(app)
    add_ui_routes(app)

    async def lifetime(_app: web.Application) -> AsyncIterator[None]:
        await gateway.start()
        yield
        # Runs after in-flight requests have finished, so their ledger rows are flushed too.
        await gateway.stop()

    async def stopping(_app: web.Application) -> None:
        # aiohttp calls this once the listener is closed and before it waits for the handlers.
        gateway.begin_stop(gateway.config.server.shutdown_grace_s)

    app.cleanup_ctx.append(lifetime)
    app.on_shutdown.append(stopping)
    return app
