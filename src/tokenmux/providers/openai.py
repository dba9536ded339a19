"""Provider kind `openai`: OpenAI and every server that speaks its chat completions format.

Pure translation, no I/O: the request goes out nearly as it came (our model name swapped for the
upstream's, usage always asked for, the sampling hints the route's policy drops left out), and
answers come back with our model name and the usage
pulled out for the ledger. Fields the gateway does not know pass through untouched.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenmux.config.schema import Provider
from tokenmux.errors import GatewayError, UpstreamFailed
from tokenmux.providers.base import Call, EmbedCall, StreamState, UpstreamRequest, Usage
from tokenmux.providers.translate import load_answer, scrub, upstream_error
from tokenmux.routing.catalog import Route


class OpenAIAdapter:
    def __init__(self, provider: Provider):
        self.url = provider.base_url.rstrip("/") + "/chat/completions"
        self.embeddings_url = provider.base_url.rstrip("/") + "/embeddings"
        self.secret = provider.api_key
        headers = {"Content-Type": "application/json", **provider.headers}
        if provider.api_key:
            headers["Authorization"] = f"Bearer {provider.api_key}"
        self.headers = headers

    def build_request(self, call: Call) -> UpstreamRequest:
        body = call.request.body  # parsed once at the edge; mutated in place, never copied
        body["model"] = call.route.upstream_model
        if call.request.stream:
            options = body.get("stream_options")
            body["stream_options"] = {**options, "include_usage": True} if options else {
                "include_usage": True}
        if call.dropped:
            # A copy, not a deletion: a fallback to a route that takes them still gets them.
            body = {name: value for name, value in body.items() if name not in call.dropped}
        return UpstreamRequest(self.url, self.headers, orjson.dumps(body))

    def read_completion(self, raw: bytes, route: Route) -> tuple[dict[str, Any], Usage | None]:
        return _answer(raw, route, "choices")

    def build_embed_request(self, call: EmbedCall) -> UpstreamRequest:
        body = call.request.body  # goes as it came, the upstream's model name in ours' place
        body["model"] = call.route.upstream_model
        return UpstreamRequest(self.embeddings_url, self.headers, orjson.dumps(body))

    def read_embeddings(self, raw: bytes, call: EmbedCall) -> tuple[dict[str, Any], Usage | None]:
        return _answer(raw, call.route, "data")

    def read_chunk(self, data: bytes, call: Call, state: StreamState) -> dict[str, Any] | None:
        """One SSE `data` payload in, the chunk to forward out (None: nothing to forward)."""
        name = call.route.provider
        chunk = load_answer(data, call.route, "sent a stream event that is not JSON")
        if not isinstance(chunk, dict):
            raise UpstreamFailed(f"The upstream {name!r} sent a malformed stream event.")
        if error := chunk.get("error"):
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise UpstreamFailed(f"The upstream {name!r} failed mid-stream: {message}")
        usage = chunk.pop("usage", None)
        if usage:
            # Some servers repeat a running total on every chunk; the last one wins.
            state.usage = read_usage(usage)
        choices = chunk.get("choices")
        if not choices:
            return None  # the upstream's usage-only chunk: the gateway sends its own at the end
        for choice in choices:
            delta = choice.get("delta")
            if delta and (text := delta.get("content")):
                state.text.append(text)
            if choice.get("finish_reason"):
                state.finished = True
        chunk["model"] = call.route.model
        return chunk

    def read_error(self, status: int, raw: bytes, route: Route,
                   retry_after: str | None) -> GatewayError:
        message, param, code = _error_fields(raw)
        return upstream_error(status, route, scrub(message, self.secret), code=code,
                              param=param, retry_after=retry_after)


def _answer(raw: bytes, route: Route, array: str) -> tuple[dict[str, Any], Usage | None]:
    """A JSON answer whose ARRAY holds what was asked for (choices, embeddings), with our model
    name, and its usage."""
    body = load_answer(raw, route)
    if not isinstance(body, dict) or not isinstance(body.get(array), list):
        raise UpstreamFailed(
            f"The upstream {route.provider!r} answered without a '{array}' array.")
    body["model"] = route.model
    return body, read_usage(body.get("usage"))


def read_usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(prompt_details.get("cached_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


def _error_fields(raw: bytes) -> tuple[str | None, str | None, str | None]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, None, None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, param = error.get("code"), error.get("param")
        return (str(error.get("message") or "") or None,
                str(param) if param is not None else None,
                str(code) if code is not None else None)
    if isinstance(error, str):
        return error, None, None
    return None, None, None
