"""Reads a server-sent event stream incrementally, one network read at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp


def _field(line: bytes) -> bytes:
    return line[6:] if line[5:6] == b" " else line[5:]


async def sse_batches(content: aiohttp.StreamReader) -> AsyncIterator[list[bytes]]:
    """Yields the data payloads of the events completed by each read, as one list per read.

    Batching by read keeps the relay to one write per read however many events it brought.
    """
    pending = b""
    data: list[bytes] = []
    async for block in content.iter_any():
        pending += block
        *lines, pending = pending.split(b"\n")
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
    if pending.startswith(b"data:"):
        data.append(_field(pending))
    if data:
        yield [b"\n".join(data)]
