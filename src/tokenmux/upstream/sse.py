"""Reads a server-sent event stream incrementally and yields each event's data payload."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp


async def sse_data(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    pending = b""
    data: list[bytes] = []
    async for block in content.iter_any():
        pending += block
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:  # a blank line ends an event
                if data:
                    yield b"\n".join(data)
                    data = []
            elif line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            # `event:`, `id:`, `retry:` and `:` comments carry nothing an OpenAI stream needs.
    if pending.startswith(b"data:"):
        data.append(pending[6:] if pending[5:6] == b" " else pending[5:])
    if data:
        yield b"\n".join(data)
