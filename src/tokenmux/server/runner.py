"""Runs the application on a TCP port until SIGTERM or SIGINT, on the gateway's own protocol.

`aiohttp.web.run_app` cannot be handed a request handler class, so this is its loop, with the
app runner's server swapped for `EdgeServer`: start the app, listen, wait for a signal, then stop
accepting and let requests in flight finish (up to `server.shutdown_grace_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from aiohttp.web_runner import GracefulExit

from tokenmux.config.schema import Server as Limits
from tokenmux.server.protocol import EdgeServer

log = logging.getLogger(__name__)

# aiohttp waits `shutdown_timeout` for the handlers, then as long again after cancelling them.
# The gateway ends its requests itself when the grace is out (Gateway.begin_stop), so aiohttp's
# wait only needs a margin past the grace for the last writes.
STOP_MARGIN_S = 3.0
KEEPALIVE_SECONDS = 75  # an idle keep-alive connection is closed after this
BACKLOG = 1024  # a burst of connects waits in the kernel rather than being dropped
_SPARE_FDS = 256  # for upstream connections, the database, the ledger's files


class EdgeRunner(web.AppRunner):
    def __init__(self, app: web.Application, limits: Limits):
        super().__init__(app, handle_signals=True,
                         shutdown_timeout=limits.shutdown_grace_s + STOP_MARGIN_S,
                         handler_cancellation=True)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the app; only its two callables are kept
        return EdgeServer(plain.request_handler, request_factory=plain.request_factory,
                          handler_cancellation=True, limits=self._limits,
                          loop=asyncio.get_running_loop(), access_log=None,
                          keepalive_timeout=KEEPALIVE_SECONDS)


def raise_fd_limit(wanted: int) -> int:
    """Lifts the soft limit on open files to the hard one; returns the limit in force."""
    try:
        import resource
    except ImportError:  # not a POSIX system: nothing to lift
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit is not accepted as a soft one everywhere: then a million will do.
    for target in (hard, 1 << 20):
        if soft == target:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        soft = target
        break
    if soft != resource.RLIM_INFINITY and soft < wanted + _SPARE_FDS:
        log.warning("the open-file limit (%d) is below server.max_connections (%d) plus spare; "
                    "connections may fail before the cap is reached", soft, wanted)
    return soft


async def _serve(runner: EdgeRunner, host: str, port: int, reuse_port: bool) -> None:
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=BACKLOG,
                          reuse_port=reuse_port or None).start()
        await asyncio.Event().wait()  # until a signal raises GracefulExit out of the loop
    finally:
        await runner.cleanup()


def run(app: web.Application, limits: Limits, host: str, port: int,
        loop: asyncio.AbstractEventLoop, *, reuse_port: bool = False) -> None:
    """REUSE_PORT: other workers listen on the same port, and the kernel spreads connections."""
    raise_fd_limit(limits.max_connections)
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(EdgeRunner(app, limits), host, port, reuse_port))
    try:
        loop.run_until_complete(main)
    except (GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(main)
        _cancel_leftovers(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
