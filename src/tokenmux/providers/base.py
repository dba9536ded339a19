"""The values that cross the seam between the pipeline and any provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tokenmux import tokens
from tokenmux.api.chat import ChatRequest
from tokenmux.api.embeddings import EmbeddingRequest
from tokenmux.errors import GatewayError
from tokenmux.routing.catalog import Route


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    # "upstream" when the provider reported it, "counted" when the gateway had to count.
    source: str = "upstream"

    def as_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Call:
    """One attempt to have a route answer a request."""

    request: ChatRequest
    route: Route
    request_id: str
    # Seconds this attempt may take when the caller's deadline is nearer than the channel's
    # own timeout; None: the channel's timeout.
    limit: float | None = None
    # The sampling hints of the request this route's policy leaves out (routing/params.py).
    dropped: tuple[str, ...] = ()
    # The route is sent the request in its door's own API, as the client sent it (the door's
    # `Native`, which also refuses here what a route of another kind would be sent without).
    native: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.request.native is not None:
            self.native = self.request.native.prepare(self.request, self.route.kind)


@dataclass(slots=True)
class Completion:
    body: dict[str, Any]  # an OpenAI `chat.completion`, its `model` already our model's name
    usage: Usage


@dataclass(slots=True)
class StreamState:
    """What a stream has produced so far, kept for the ledger whether or not it finishes."""

    usage: Usage | None = None
    text: list[str] = field(default_factory=list)
    finished: bool = False
    memo: Any = None  # the adapter's own per-stream state, when it needs some


async def counted_usage(request: ChatRequest, completion_text: str) -> Usage:
    """The gateway's own count, for when the provider reported none; a large one is counted
    off the event loop (tokens.measured)."""
    messages = request.body["messages"]

    def count() -> Usage:
        return Usage(prompt_tokens=tokens.count_messages(messages),
                     completion_tokens=tokens.count_text(completion_text), source="counted")

    return await tokens.measured(tokens.messages_size(messages) + len(completion_text), count)


class ChunkStream(Protocol):
    state: StreamState

    def __aiter__(self) -> AsyncIterator[list[dict[str, Any]]]: ...


class Provider(Protocol):
    async def complete(self, call: Call) -> Completion: ...

    def stream(self, call: Call) -> AbstractAsyncContextManager[ChunkStream]:
        """Opens the upstream stream. It yields batches (what one upstream read brought) of
        OpenAI `chat.completion.chunk` dicts without usage; the final usage, when the provider
        reports it, lands in `state.usage`."""
        ...


class Adapter(Protocol):
    """A provider kind's translation, pure and without I/O; `upstream.HttpProvider` drives it."""

    def build_request(self, call: Call) -> UpstreamRequest: ...

    def read_completion(self, raw: bytes, route: Route) -> tuple[dict[str, Any], Usage | None]: ...

    def read_chunk(self, data: bytes, call: Call, state: StreamState) -> dict[str, Any] | None: ...

    def read_error(self, status: int, raw: bytes, route: Route,
                   retry_after: str | None) -> GatewayError: ...


# ---------------------------------------------------------------- embeddings


@dataclass(slots=True)
class EmbedCall:
    """One attempt to have a route embed a request's inputs."""

    request: EmbeddingRequest
    route: Route
    request_id: str
    limit: float | None = None  # as in `Call`


@dataclass(slots=True)
class Embeddings:
    body: dict[str, Any]  # an OpenAI embeddings `list`, its `model` already our model's name
    usage: Usage


async def counted_embedding_usage(request: EmbeddingRequest) -> Usage:
    """The gateway's own count of what was embedded, for a provider that reports none."""
    if request.token_arrays is not None:
        return Usage(prompt_tokens=sum(map(len, request.token_arrays)), source="counted")
    texts = request.texts or []

    def count() -> Usage:
        return Usage(prompt_tokens=sum(map(tokens.count_text, texts)), source="counted")

    return await tokens.measured(sum(map(len, texts)), count)


class Embedder(Protocol):
    async def embed(self, call: EmbedCall) -> Embeddings: ...


@runtime_checkable
class EmbedAdapter(Protocol):
    """The translation of a provider kind whose API embeds; pure, as `Adapter` is."""

    def build_embed_request(self, call: EmbedCall) -> UpstreamRequest: ...

    def read_embeddings(self, raw: bytes, call: EmbedCall
                        ) -> tuple[dict[str, Any], Usage | None]: ...
