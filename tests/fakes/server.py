"""A fake upstream's plumbing: an aiohttp app served on loopback from a thread of its own."""

from __future__ import annotations

import asyncio
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Self

import orjson
from aiohttp import web
from multidict import CIMultiDict


@dataclass
class Received:
    """One request as the fake upstream saw it."""

    path: str
    headers: CIMultiDict[str]  # case-insensitive, as HTTP headers are
    body: dict[str, Any]
    query: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


def drain(value: Any) -> Any:
    """VALUE validated through and through: the SDK's types hold iterables, which pydantic
    validates only as they are consumed."""
    if isinstance(value, dict):
        return {k: drain(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or hasattr(value, "__next__"):
        return [drain(v) for v in value]
    return value


class LoopbackServer(ABC):
    host = "127.0.0.1"
    port = 0

    received: list[Received]

    @abstractmethod
    def routes(self, app: web.Application) -> None:
        """Adds the provider's endpoints to the app."""

    async def record(self, request: web.Request) -> Received:
        seen = Received(request.path, CIMultiDict(request.headers),
                        orjson.loads(await request.read()), dict(request.query))
        self.received.append(seen)
        return seen

    def last(self) -> Received:
        return self.received[-1]

    def start(self) -> Self:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def boot() -> None:
            app = web.Application(client_max_size=64 * 1024 * 1024)
            self.routes(app)
            # Handlers of requests whose client left are cancelled, as a real server's are, and
            # a stop does not wait on stalls that nobody is listening to any more.
            self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                                         shutdown_timeout=1)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(boot())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name=type(self).__name__)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
