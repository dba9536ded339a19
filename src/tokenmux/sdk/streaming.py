"""Streams of chunks that close their connection when left, and keep the final usage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk
from openai.types.completion_usage import CompletionUsage

from tokenmux.sdk.errors import convert


class Stream:
    def __init__(self, inner: openai.Stream[ChatCompletionChunk], request_id: str | None):
        self._inner = inner
        self.request_id = request_id
        self.usage: CompletionUsage | None = None  # set when the final usage chunk arrives

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        try:
            for chunk in self._inner:
                if chunk.usage is not None:
                    self.usage = chunk.usage
                yield chunk
        except openai.OpenAIError as exc:
            raise convert(exc) from None

    def close(self) -> None:
        """Drops the connection; the gateway then cancels the upstream request."""
        self._inner.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class AsyncStream:
    def __init__(self, inner: openai.AsyncStream[ChatCompletionChunk], request_id: str | None):
        self._inner = inner
        self.request_id = request_id
        self.usage: CompletionUsage | None = None

    async def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        try:
            async for chunk in self._inner:
                if chunk.usage is not None:
                    self.usage = chunk.usage
                yield chunk
        except openai.OpenAIError as exc:
            raise convert(exc) from None

    async def close(self) -> None:
        await self._inner.close()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()
