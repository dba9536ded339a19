"""A keyed request running on this instance, what it has sent so far, and the sink that
records it as it goes to the first client.

Copies of the request that arrive meanwhile follow the flight: they get every event it has
sent, then each new one as it comes. A client that left does not stop the flight: the tee
keeps recording after its writes start failing, so the retry finds the whole answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tokenmux.answer import SseSink
from tokenmux.errors import GatewayError
from tokenmux.idempotency.store import Kept

# The answer's headers a client reads, and all that a replay repeats of them.
KEPT_PREFIX = "x-tokenmux-"


def client_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower().startswith(KEPT_PREFIX)}


class Flight:
    def __init__(self, print_: bytes, token: str, row_id: str, max_stream_bytes: int):
        self.print_ = print_
        self.token = token
        self.row_id = row_id  # the ledger row of the run: what replays point to
        self.headers: dict[str, str] | None = None  # a stream's, once it has opened
        self.events: list[bytes] = []  # a stream's writes, as sent
        self.too_large = False  # more than max_stream_bytes: not kept, and not followed
        self.kept: Kept | None = None
        self.failure: GatewayError | None = None
        self.ended = False
        self._size, self._limit = 0, max_stream_bytes
        self._changed: asyncio.Event | None = None  # made only once a copy waits on the flight

    def opened(self, headers: dict[str, str]) -> None:
        self.headers = client_headers(headers)
        self._notify()

    def add(self, data: bytes) -> None:
        if self.too_large:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.too_large = True
            self.events.clear()
        else:
            self.events.append(data)
        self._notify()

    def end(self, kept: Kept | None, failure: GatewayError | None) -> None:
        self.kept, self.failure, self.ended = kept, failure, True
        self._notify()

    async def changed(self, timeout: float | None) -> None:
        """Returns once something happened to the flight, or TIMEOUT seconds have passed."""
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            return

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


class Tee:
    """The first client's sink, recording every write into the flight; a write that fails
    because the client left is dropped, and the stream goes on."""

    def __init__(self, client: SseSink, flight: Flight):
        self._client = client
        self._flight = flight
        self._gone = False
        self.finished = False  # the stream ended with its [DONE]
        self.failed = False  # the stream ended with an error event

    async def open(self, headers: dict[str, str]) -> None:
        self._flight.opened(headers)
        try:
            await self._client.open(headers)
        except ConnectionError:
            self._gone = True

    async def send(self, chunks: list[dict[str, Any]]) -> None:
        await self.write(self.encode(chunks))

    async def fail(self, error: GatewayError) -> None:
        self.failed = True
        await self.end(self.encode_failure(error))

    async def done(self, tail: list[dict[str, Any]]) -> None:
        self.finished = True
        await self.end(self.encode_done(tail))

    # Recorded in the client's API, as the client's sink encodes it.
    def encode(self, chunks: list[dict[str, Any]]) -> bytes:
        return self._client.encode(chunks)

    def encode_failure(self, error: GatewayError) -> bytes:
        return self._client.encode_failure(error)

    def encode_done(self, tail: list[dict[str, Any]]) -> bytes:
        return self._client.encode_done(tail)

    async def write(self, data: bytes) -> None:
        await self._relay(data, self._client.write)

    async def end(self, data: bytes) -> None:
        await self._relay(data, self._client.end)

    async def _relay(self, data: bytes, send: Callable[[bytes], Awaitable[None]]) -> None:
        self._flight.add(data)
        if not self._gone:
            try:
                await send(data)
            except ConnectionError:
                self._gone = True
