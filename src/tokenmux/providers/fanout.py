"""`n > 1` for provider kinds that have no such parameter: n requests for one answer each, run
at once and merged into one response whose choices are numbered 0..n-1. Every answer is billed:
the usage is their sum. With n = 1 (nearly every request) the call goes straight through.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from tokenmux.errors import InvalidRequest
from tokenmux.providers.base import Call, ChunkStream, Completion, Provider, StreamState, Usage

MAX_N = 8  # each one is a full upstream request


def _n(call: Call) -> int:
    n = call.request.body.get("n") or 1
    if n > MAX_N:
        raise InvalidRequest(f"'n' may be at most {MAX_N} for model '{call.route.model}', whose "
                             "channels answer one completion per request.", param="n")
    return int(n)


def _sum(usages: list[Usage | None]) -> Usage | None:
    if any(u is None for u in usages):
        return None
    total = Usage(source="upstream")
    for usage in usages:
        assert usage is not None
        total.prompt_tokens += usage.prompt_tokens
        total.completion_tokens += usage.completion_tokens
        total.cached_tokens += usage.cached_tokens
        total.reasoning_tokens += usage.reasoning_tokens
        if usage.source != "upstream":
            total.source = usage.source
    return total


class FanOut:
    def __init__(self, inner: Provider):
        self._inner = inner

    async def complete(self, call: Call) -> Completion:
        n = _n(call)
        if n == 1:
            return await self._inner.complete(call)
        # A TaskGroup cancels the rest as soon as one fails: the retry loop starts over anyway.
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._inner.complete(call)) for _ in range(n)]
        completions = [task.result() for task in tasks]
        body = completions[0].body
        body["choices"] = [{**c.body["choices"][0], "index": i}
                           for i, c in enumerate(completions)]
        usage = _sum([c.usage for c in completions])
        assert usage is not None  # complete() always reports one, counted if need be
        body["usage"] = usage.as_openai()
        return Completion(body, usage)

    def stream(self, call: Call) -> AbstractAsyncContextManager[ChunkStream]:
        n = _n(call)
        if n == 1:
            return self._inner.stream(call)
        return self._streams(call, n)

    @asynccontextmanager
    async def _streams(self, call: Call, n: int) -> AsyncIterator[ChunkStream]:
        async with AsyncExitStack() as stack:
            streams = [await stack.enter_async_context(self._inner.stream(call))
                       for _ in range(n)]
            yield _Merged(streams)


class _Merged:
    """Several streams as one: each chunk's choice takes its stream's number."""

    def __init__(self, streams: list[ChunkStream]):
        self._streams = streams
        self.state = StreamState()

    def _update(self) -> None:
        states = [s.state for s in self._streams]
        self.state.finished = all(s.finished for s in states)
        self.state.usage = _sum([s.usage for s in states])
        self.state.text = [text for s in states for text in s.text]

    async def __aiter__(self) -> AsyncIterator[list[dict[str, Any]]]:
        queue: asyncio.Queue[tuple[int, list[dict[str, Any]] | None, BaseException | None]] = (
            asyncio.Queue())

        async def pump(i: int, stream: ChunkStream) -> None:
            try:
                async for batch in stream:
                    await queue.put((i, batch, None))
            except Exception as exc:  # handed to the reader, which raises it
                await queue.put((i, None, exc))
            else:
                await queue.put((i, None, None))

        tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(self._streams)]
        chunk_id: Any = None
        try:
            running = len(tasks)
            while running:
                i, batch, error = await queue.get()
                if error is not None:
                    raise error
                if batch is None:
                    running -= 1
                    continue
                for chunk in batch:
                    # One stream to the client: one id throughout, the first stream's.
                    chunk_id = chunk_id or chunk.get("id")
                    chunk["id"] = chunk_id
                    for choice in chunk.get("choices") or ():
                        choice["index"] = i
                self._update()
                yield batch
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._update()
