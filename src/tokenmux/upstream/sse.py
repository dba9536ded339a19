"""Reads a server-sent event stream incrementally, one network read at a time.

Linear in the bytes received, whatever their shape: a read that brings no newline is only
searched for one and kept aside, never joined to what came before until the line's end comes.
An event may not grow beyond `max_event_bytes` (its raw bytes, counted per read), so an upstream
that never ends a line or an event costs a bounded amount of memory and time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp


class EventTooLarge(Exception):
    """An event grew beyond the reader's limit before it ended."""

    def __init__(self, limit: int):
        super().__init__(f"a stream event exceeded {limit} bytes")
        self.limit = limit


def _field(line: bytes) -> bytes:
    return line[6:] if line[5:6] == b" " else line[5:]


async def sse_batches(content: aiohttp.StreamReader,
                      max_event_bytes: int) -> AsyncIterator[list[bytes]]:
    """Yields the data payloads of the events completed by each read, as one list per read.

    Batching by read keeps the relay to one write per read however many events it brought.
    """
    pending = b""  # the line in progress, when a read ended inside one
    parts: list[bytes] = []  # the reads since, while none of them brings its end
    data: list[bytes] = []  # the data lines of the event in progress
    held = 0  # bytes of the event in progress, about
    async for block in content.iter_any():
        fresh = len(block)
        if pending:
            if b"\n" not in block:
                parts.append(block)
                held += fresh
                if held > max_event_bytes:
                    raise EventTooLarge(max_event_bytes)
                continue
            if parts:
                pending = b"".join([pending, *parts])
                parts = []
            block = pending + block
        *lines, pending = block.split(b"\n")
        events: list[bytes] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:  # a blank line ends an event
                if data:
                    events.append(b"\n".join(data))
                    data = []
            elif line.startswith(b"data:"):
                data.append(_field(line))
            # `event:`, `id:`, `retry:` and `:` comments carry nothing an OpenAI stream needs.
        if events:
            yield events
        if data or pending:
            # What this read left unfinished; all of it when no event ended in it.
            held = len(pending) + sum(map(len, data)) if events else held + fresh
            if held > max_event_bytes:
                raise EventTooLarge(max_event_bytes)
        else:
            held = 0
    if parts:
        pending = b"".join([pending, *parts])
    if pending.startswith(b"data:"):
        data.append(_field(pending))
    if data:
        yield [b"\n".join(data)]
