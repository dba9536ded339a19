"""`tokenmux serve`: runs the gateway until SIGTERM or SIGINT, then flushes the ledger; with
`--workers N`, N such processes on one port under a supervisor."""

from __future__ import annotations

import asyncio
import logging
import os

import click
from sqlalchemy import Engine

from tokenmux import gateway as gateway_module
from tokenmux import logs
from tokenmux.auth import records
from tokenmux.auth.options import KeyOptions
from tokenmux.cli.common import config_option, load, open_database
from tokenmux.config import Config
from tokenmux.routing import Catalog
from tokenmux.server import create_app
from tokenmux.server.runner import run
from tokenmux.server.supervisor import Supervisor, worker_command

log = logging.getLogger("tokenmux")


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
    secret, record = records.create_key(engine, "admin", KeyOptions(is_admin=True))
    click.echo("No admin key was configured, so one was created (" + record.id + "). "
               "It is shown only now; keep it:")
    click.echo(f"  TOKENMUX_ADMIN_KEY={secret}")


class WorkerCount(click.ParamType):
    name = "N|auto"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
                os.cpu_count() or 1)
        if text.isdigit() and 1 <= int(text) <= 256:
            return int(text)
        self.fail(f"{value!r} is not a number of workers from 1 to 256, nor 'auto'", param, ctx)


@click.command()
@config_option
@click.option("--host", default=None, help="Address to listen on (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default from config: 8080).")
@click.option("--workers", type=WorkerCount(), default=1, show_default=True,
              help="Gateway processes sharing the port; 'auto': one per core.")
@click.option("--worker-index", type=int, default=None, hidden=True)
def serve(config_path: str | None, host: str | None, port: int | None, workers: int,
          worker_index: int | None) -> None:
    """Run the gateway."""
    config = load(config_path)
    logs.configure(config.log_level)
    host = host or config.server.host
    port = config.server.port if port is None else port
    if worker_index is None:
        # Once, before any worker starts: the migrations and the first admin key.
        engine = open_database(config)
        _first_admin_key(config, engine)
        if workers > 1:
            engine.dispose()
            _supervise(config, config_path, host, port, workers)
            return
    else:
        engine = open_database(config)
    gateway = gateway_module.build(config, engine=engine, workers=workers,
                                   worker_index=worker_index or 0, port=port)
    if worker_index is None:
        models = ", ".join(entry.name for entry in gateway.catalog.entries)
        click.echo(f"tokenmux serving on http://{host}:{port}/v1 — models: {models}")
    run(create_app(gateway), config.server, host, port, _new_loop(), reuse_port=workers > 1)


def _supervise(config: Config, config_path: str | None, host: str, port: int,
               workers: int) -> None:
    if port == 0:
        raise click.UsageError("--workers needs a fixed --port: each worker would pick its own")
    models = ", ".join(entry.name for entry in Catalog(config).entries)
    click.echo(f"tokenmux serving on http://{host}:{port}/v1 with {workers} workers — "
               f"models: {models}")
    click.echo(f"  each worker holds its own rate limits, at 1/{workers} of each key's rpm and "
               "tpm, so that a key's total stays within its limits")
    args = ["--host", host, "--port", str(port)]
    if config_path:
        args[:0] = ["--config", config_path]
    code = Supervisor(worker_command(args), workers, config.server.shutdown_grace_s).run()
    raise SystemExit(code)
