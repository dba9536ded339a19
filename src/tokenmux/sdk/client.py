"""`TokenMux` and `AsyncTokenMux`: the openai client underneath, the gateway's powers on top.

Built on the official openai package, which already does what a careful HTTP client must:
connection pooling, timeouts, retries with exponential backoff and jitter that honour
`Retry-After` and `x-should-retry`, SSE parsing, and typed response objects. This layer adds the
gateway's own request options and its error classes, and gives every call one request id that
all of its retries reuse, so the gateway can recognise them as one request.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Generator, Mapping
from typing import Any

import openai
from openai.pagination import AsyncPage, SyncPage
from openai.types import Model
from openai.types.chat import ChatCompletion

from tokenmux.sdk.errors import MissingAPIKeyError, convert
from tokenmux.sdk.streaming import AsyncStream, Stream

DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"
DEFAULT_TIMEOUT = 600.0
DEFAULT_MAX_RETRIES = 2


def _settings(api_key: str | None, base_url: str | None) -> tuple[str, str]:
    key = api_key or os.environ.get("TOKENMUX_API_KEY")
    if not key:
        raise MissingAPIKeyError(
            "No API key: pass api_key= or set TOKENMUX_API_KEY (create one with "
            "`tokenmux keys create --name NAME`).")
    return key, base_url or os.environ.get("TOKENMUX_BASE_URL") or DEFAULT_BASE_URL


def _gateway_options(
    model: str, params: dict[str, Any], *, timeout_ms: int | None, tier: str | None,
    request_id: str | None, fallbacks: list[str] | None, compression: Mapping[str, Any] | None,
    extra_headers: Mapping[str, str] | None, extra_body: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], str]:
    """Turns the gateway's own options into headers and body fields for the openai client."""
    rid = request_id or "req_" + secrets.token_hex(12)
    headers: dict[str, str] = {"X-Request-Id": rid, **(extra_headers or {})}
    if timeout_ms is not None:
        headers["X-Timeout"] = str(int(timeout_ms))
    if tier is not None:
        headers["X-Tier"] = tier
    body: dict[str, Any] = dict(extra_body or {})
    if fallbacks:
        body["models"] = [model, *fallbacks]
    if compression is not None:
        body["compression"] = dict(compression)
    return {**params, "model": model, "extra_headers": headers, "extra_body": body or None}, rid


class _Completions:
    def __init__(self, client: openai.OpenAI):
        self._client = client

    def create(self, *, model: str, messages: Any, timeout_ms: int | None = None,
               tier: str | None = None, request_id: str | None = None,
               fallbacks: list[str] | None = None, compression: Mapping[str, Any] | None = None,
               extra_headers: Mapping[str, str] | None = None,
               extra_body: Mapping[str, Any] | None = None,
               **params: Any) -> ChatCompletion | Stream:
        """Every OpenAI chat parameter (temperature, tools, stream, …) as keyword arguments,
        plus the gateway's: timeout_ms, tier, request_id, fallbacks, compression."""
        options, rid = _gateway_options(
            model, {**params, "messages": messages}, timeout_ms=timeout_ms, tier=tier,
            request_id=request_id, fallbacks=fallbacks, compression=compression,
            extra_headers=extra_headers, extra_body=extra_body)
        try:
            result = self._client.chat.completions.create(**options)
        except openai.OpenAIError as exc:
            raise convert(exc) from None
        if isinstance(result, openai.Stream):
            return Stream(result, rid)
        return result


class _AsyncCompletions:
    def __init__(self, client: openai.AsyncOpenAI):
        self._client = client

    async def create(self, *, model: str, messages: Any, timeout_ms: int | None = None,
                     tier: str | None = None, request_id: str | None = None,
                     fallbacks: list[str] | None = None,
                     compression: Mapping[str, Any] | None = None,
                     extra_headers: Mapping[str, str] | None = None,
                     extra_body: Mapping[str, Any] | None = None,
                     **params: Any) -> ChatCompletion | AsyncStream:
        options, rid = _gateway_options(
            model, {**params, "messages": messages}, timeout_ms=timeout_ms, tier=tier,
            request_id=request_id, fallbacks=fallbacks, compression=compression,
            extra_headers=extra_headers, extra_body=extra_body)
        try:
            result = await self._client.chat.completions.create(**options)
        except openai.OpenAIError as exc:
            raise convert(exc) from None
        if isinstance(result, openai.AsyncStream):
            return AsyncStream(result, rid)
        return result


class _Chat:
    def __init__(self, completions: Any):
        self.completions = completions


class _Models:
    def __init__(self, client: openai.OpenAI):
        self._client = client

    def list(self) -> SyncPage[Model]:
        """The page the openai client returns: iterate it, or read `.data`."""
        try:
            return self._client.models.list()
        except openai.OpenAIError as exc:
            raise convert(exc) from None

    def retrieve(self, model: str) -> Model:
        try:
            return self._client.models.retrieve(model)
        except openai.OpenAIError as exc:
            raise convert(exc) from None


class _AsyncModels:
    def __init__(self, client: openai.AsyncOpenAI):
        self._client = client

    def list(self) -> _ModelPages:
        """As with the openai client: `await` it for the page (`.data`), or `async for` it."""
        return _ModelPages(self._client)

    async def retrieve(self, model: str) -> Model:
        try:
            return await self._client.models.retrieve(model)
        except openai.OpenAIError as exc:
            raise convert(exc) from None


class _ModelPages:
    """What `AsyncTokenMux.models.list()` returns: awaitable for the page, and iterable, like
    the openai client's paginator, with the SDK's own errors."""

    def __init__(self, client: openai.AsyncOpenAI):
        self._client = client

    def __await__(self) -> Generator[Any, None, AsyncPage[Model]]:
        return self._page().__await__()

    async def _page(self) -> AsyncPage[Model]:
        try:
            return await self._client.models.list()
        except openai.OpenAIError as exc:
            raise convert(exc) from None

    async def __aiter__(self) -> AsyncIterator[Model]:
        page = await self._page()
        try:
            async for model in page:
                yield model
        except openai.OpenAIError as exc:
            raise convert(exc) from None


class TokenMux:
    def __init__(self, *, api_key: str | None = None, base_url: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, max_retries: int = DEFAULT_MAX_RETRIES,
                 default_headers: Mapping[str, str] | None = None):
        key, url = _settings(api_key, base_url)
        self.base_url = url
        self._client = openai.OpenAI(api_key=key, base_url=url, timeout=timeout,
                                     max_retries=max_retries, default_headers=default_headers)
        self.chat = _Chat(_Completions(self._client))
        self.models = _Models(self._client)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TokenMux:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class AsyncTokenMux:
    def __init__(self, *, api_key: str | None = None, base_url: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, max_retries: int = DEFAULT_MAX_RETRIES,
                 default_headers: Mapping[str, str] | None = None):
        key, url = _settings(api_key, base_url)
        self.base_url = url
        self._client = openai.AsyncOpenAI(api_key=key, base_url=url, timeout=timeout,
                                          max_retries=max_retries,
                                          default_headers=default_headers)
        self.chat = _Chat(_AsyncCompletions(self._client))
        self.models = _AsyncModels(self._client)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncTokenMux:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()
