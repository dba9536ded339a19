"""What the pipeline hands back to the HTTP edge, and the sink a stream is written through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from tokenmux.errors import GatewayError

DONE = b"data: [DONE]\n\n"


@dataclass(slots=True)
class Answer:
    body: dict[str, Any] | None  # None: the answer went out as a stream, or is in `raw`
    headers: dict[str, str]
    raw: bytes | None = None  # the JSON body already encoded (a replay sends the kept bytes)


class SseSink(Protocol):
    async def open(self, headers: dict[str, str]) -> None: ...

    async def send(self, chunks: list[dict[str, Any]]) -> None: ...

    async def fail(self, error: GatewayError) -> None: ...

    async def done(self, tail: list[dict[str, Any]]) -> None: ...

    # The same stream as bytes already encoded: what a replay sends.
    async def write(self, data: bytes) -> None: ...

    async def end(self, data: bytes) -> None: ...

    # The bytes `send`, `fail` and `done` write, in the sink's own API: what a recording of the
    # stream keeps (idempotency/flight.py). Each is called once per event, in order.
    def encode(self, chunks: list[dict[str, Any]]) -> bytes: ...

    def encode_failure(self, error: GatewayError) -> bytes: ...

    def encode_done(self, tail: list[dict[str, Any]]) -> bytes: ...


def events(chunks: list[Any]) -> bytes:
    """Chunks as the events of an OpenAI stream: `data: <json>` each, and nothing else."""
    return b"".join([b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks])
