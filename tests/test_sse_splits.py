"""However the network splits an upstream's stream into reads, the gateway reads the same chunks.

Each provider kind's stream is recorded from its fake upstream, answering the very request the
adapter builds; it is then rewritten as other servers may write it (CRLF line endings, comments
and ignored fields, data spread over several lines, no space after the colon) and fed to an
in-memory aiohttp StreamReader in arbitrary pieces, one piece per read. The SSE reader and the
adapter's read_chunk must give the chunks, the usage and the end they give for the recording
read in one piece. Pure parsing: no gateway process, nothing mocked.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx2 as httpx
import orjson
import pytest
from aiohttp.base_protocol import BaseProtocol
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tokenmux.api.chat import parse_chat
from tokenmux.config.schema import Provider
from tokenmux.providers import adapter_for
from tokenmux.providers.base import Adapter, Call, StreamState
from tokenmux.routing.catalog import Route
from tokenmux.upstream.sse import EventTooLarge, sse_batches

LIMIT = 8 * 1024 * 1024
PROMPTS = ["Say hello", '@call get_weather {"city": "Paris", "unit": "celsius"}']


@dataclass
class Recording:
    kind: str
    adapter: Adapter
    call: Call
    raw: bytes  # the stream exactly as the fake upstream sent it


def _call(kind: str, prompt: str) -> Call:
    body = {"model": "m", "stream": True, "max_tokens": 200,
            "messages": [{"role": "user", "content": prompt}]}
    route = Route("m", kind, kind, f"upstream-{kind}", 30.0, None, None, None)
    return Call(parse_chat(orjson.dumps(body)), route, "req-splits")


@pytest.fixture(scope="module")
def recordings(upstream: FakeOpenAI) -> Iterator[list[Recording]]:
    claude, gemini = FakeAnthropic().start(), FakeGemini().start()
    try:
        servers = {"openai": (upstream.base_url, "sk-splits"),
                   "anthropic": (claude.base_url, claude.api_key),
                   "gemini": (gemini.base_url, gemini.api_key)}
        found = []
        for kind, (base_url, key) in servers.items():
            adapter = adapter_for(Provider(kind=kind, base_url=base_url, api_key=key))
            for prompt in PROMPTS:
                call = _call(kind, prompt)
                request = adapter.build_request(call)
                response = httpx.post(request.url, content=request.body,
                                      headers=request.headers, timeout=30)
                assert response.status_code == 200, response.text
                found.append(Recording(kind, adapter, _call(kind, prompt), response.content))
        yield found
    finally:
        claude.stop()
        gemini.stop()


class _Reads(aiohttp.StreamReader):
    """A StreamReader that keeps what each read returned."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        protocol = BaseProtocol(loop)
        protocol.connection_made(asyncio.Transport())
        super().__init__(protocol, 2**30, loop=loop)
        self.reads: list[bytes] = []

    async def readany(self) -> bytes:
        data = await super().readany()
        if data:
            self.reads.append(data)
        return data


async def _read(recording: Recording, pieces: list[bytes]) -> tuple[list[Any], StreamState]:
    reader = _Reads(asyncio.get_running_loop())

    async def feed() -> None:
        for piece in pieces:
            reader.feed_data(piece)
            await asyncio.sleep(0)  # the reader takes it before the next one comes
        reader.feed_eof()

    feeding = asyncio.create_task(feed())
    state, chunks = StreamState(), []
    call = recording.call
    async for events in sse_batches(reader, LIMIT):
        for data in events:
            if data == b"[DONE]":
                state.finished = True
                continue
            chunk = recording.adapter.read_chunk(data, call, state)
            if chunk is not None:
                chunks.append(_steady(chunk))
    await feeding
    assert reader.reads == [p for p in pieces if p]
    return chunks, state


def _steady(chunk: dict[str, Any]) -> dict[str, Any]:
    """The chunk without what the gateway makes afresh each time: the clock, Gemini call ids."""
    chunk.pop("created", None)
    for choice in chunk["choices"]:
        for tool_call in choice["delta"].get("tool_calls") or ():
            if tool_call.get("id", "").startswith("call_"):
                tool_call["id"] = "call_"
    return chunk


def _events(raw: bytes) -> list[list[bytes]]:
    """The recording's events, each as its lines (the fakes write plain `field: value` lines)."""
    blocks = raw.replace(b"\r\n", b"\n").split(b"\n\n")
    return [block.split(b"\n") for block in blocks if block.strip()]


@st.composite
def _rewritten(draw: st.DrawFn, raw: bytes) -> bytes:
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    out = []
    for lines in _events(raw):
        if draw(st.booleans()):
            out.append(b": keep-alive" + newline)
        for line in lines:
            name, _, value = line.partition(b": ")
            if name == b"data" and value.startswith(b"{") and draw(st.booleans()):
                # Indented JSON breaks only between tokens: each line a `data:` line of its own.
                parts = orjson.dumps(orjson.loads(value), option=orjson.OPT_INDENT_2)
                out += [b"data: " + part + newline for part in parts.split(b"\n")]
            else:
                colon = draw(st.sampled_from([b": ", b":"]))
                out.append(name + colon + value + newline)
        if draw(st.booleans()):
            out.append(b"id: 7" + newline)
        out.append(newline)
    return b"".join(out)


def _split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=40, unique=True))
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _whole(recording: Recording) -> tuple[list[Any], StreamState]:
    return asyncio.run(_read(recording, [recording.raw]))


@pytest.mark.parametrize("index", range(len(PROMPTS) * 3),
                         ids=[f"{k}-{p}" for k in ("openai", "anthropic", "gemini")
                              for p in ("text", "tool")])
def test_any_split_of_a_stream_gives_the_same_chunks(recordings, index):
    recording = recordings[index]
    expected, whole = _whole(recording)
    assert whole.finished
    assert whole.usage is not None
    assert expected and len(_events(recording.raw)) >= 2

    @settings(max_examples=40, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def check(data: st.DataObject) -> None:
        stream = data.draw(_rewritten(recording.raw))
        pieces = _split(data.draw, stream)
        chunks, state = asyncio.run(_read(recording, pieces))
        assert chunks == expected
        assert (state.usage, state.text, state.finished) == (
            whole.usage, whole.text, whole.finished)

    check()


def test_one_byte_at_a_time_gives_the_same_chunks(recordings):
    for recording in recordings:
        raw = recording.raw.replace(b"\n", b"\r\n") if recording.kind != "gemini" else recording.raw
        chunks, _ = asyncio.run(_read(recording, [raw[i:i + 1] for i in range(len(raw))]))
        assert chunks == _whole(recording)[0]


def test_a_line_without_end_is_read_in_linear_time_up_to_the_limit():
    # 6 MB in 4 KB reads: re-scanning what came before at each read would copy about 4 GB.
    async def run(limit: int) -> None:
        reader = _Reads(asyncio.get_running_loop())
        reader.feed_data(b"data: ")

        async def feed() -> None:
            for _ in range(1536):
                reader.feed_data(b"x" * 4096)
                await asyncio.sleep(0)
            reader.feed_data(b"\n\n")
            reader.feed_eof()

        feeding = asyncio.create_task(feed())
        try:
            batches = [events async for events in sse_batches(reader, limit)]
            assert [len(e) for b in batches for e in b] == [6 * 1024 * 1024]
        finally:
            await feeding

    start = time.process_time()
    asyncio.run(run(LIMIT))
    assert time.process_time() - start < 2
    with pytest.raises(EventTooLarge):
        asyncio.run(run(1024 * 1024))
