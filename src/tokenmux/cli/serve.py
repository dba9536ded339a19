"""`tokenmux serve`: runs the gateway until SIGTERM or SIGINT, then flushes the ledger."""

from __future__ import annotations

import asyncio
import logging

import click
from aiohttp import web
from sqlalchemy import Engine

from tokenmux import gateway as gateway_module
from tokenmux.auth import records
from tokenmux.cli.common import config_option, load, open_database
from tokenmux.config import Config
from tokenmux.server import create_app

log = logging.getLogger("tokenmux")

# aiohttp waits `shutdown_timeout` for the handlers, then as long again after cancelling them
# (60 s with a 30 s timeout). The gateway ends its requests itself when the grace is out
# (Gateway.begin_stop), so aiohttp's wait only needs a margin past it for the last writes.
STOP_MARGIN_S = 3.0


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop does not build everywhere; asyncio's own loop still works
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _first_admin_key(config: Config, engine: Engine) -> None:
    """Nothing is ever served anonymously: with no admin key anywhere, make one and show it."""
    if config.admin_key or records.has_admin_key(engine):
        return
    secret, record = records.create_key(engine, "admin", is_admin=True)
    click.echo("No admin key was configured, so one was created (" + record.id + "). "
               "It is shown only now; keep it:")
    click.echo(f"  TOKENMUX_ADMIN_KEY={secret}")


@click.command()
@config_option
@click.option("--host", default=None, help="Address to listen on (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default from config: 8080).")
def serve(config_path: str | None, host: str | None, port: int | None) -> None:
    """Run the gateway."""
    config = load(config_path)
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = open_database(config)
    _first_admin_key(config, engine)
    gateway = gateway_module.build(config, engine=engine)
    host = host or config.server.host
    port = config.server.port if port is None else port
    models = ", ".join(entry.name for entry in gateway.catalog.entries)
    click.echo(f"tokenmux serving on http://{host}:{port}/v1 — models: {models}")
    web.run_app(
        create_app(gateway), host=host, port=port, access_log=None, print=None,
        handler_cancellation=True,
        shutdown_timeout=config.server.shutdown_grace_s + STOP_MARGIN_S, loop=_new_loop(),
    )
