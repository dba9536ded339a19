"""Validation of `POST /v1/chat/completions` bodies.

Checks every field the gateway or an adapter reads (api/schema.py for the options, api/messages.py
for the conversation); every other field passes through untouched to OpenAI-kind upstreams. The
body is parsed once, and the dict travels on; nothing here copies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tokenmux.api.messages import check_messages
from tokenmux.api.schema import check_fields
from tokenmux.errors import InvalidRequest


@dataclass(slots=True)
class ChatRequest:
    body: dict[str, Any]
    model: str
    stream: bool
    # What the client asked for (None: nothing); the upstream is always asked for usage.
    include_usage: bool | None
    max_output: int | None
    user: str | None
    models: list[str]  # the request's own fallback models, taken out of the body
    fallbacks: Fallbacks | None = None  # `fallback_*` fields, taken out of the body
    # The `compression` field as sent, taken out of the body (compression/settings.py reads it).
    compression: Any = None
    # The request as its door's API sent it, when that API is a provider kind's own (the
    # Messages API): a channel of that kind is sent it nearly as it came.
    native: Native | None = None


@dataclass(slots=True)
class Native:
    kind: str  # the provider kind whose API the body is in
    body: dict[str, Any]
    # The translated conversation it stands for: once compression has replaced it, the native
    # body no longer says what is to be sent, and the translation goes instead.
    messages: list[Any]
    # Where the body holds something only that kind can carry (a path, for the error); any
    # other kind refuses the request rather than send it without.
    untranslated: str | None = None
    headers: dict[str, str] | None = None  # the client's headers of that API (anthropic-beta)
    # Fields of the translation that only channels of one kind take, by kind (OpenAI's
    # `reasoning_effort`, which the other kinds' adapters refuse).
    per_kind: dict[str, dict[str, Any]] | None = None

    def prepare(self, request: ChatRequest, kind: str) -> bool:
        """Readies the request for a channel of KIND: whether the native body goes (a 400 when
        it cannot and the translation would leave something out), and the translation with
        the fields of that kind only."""
        native = kind == self.kind and request.body.get("messages") is self.messages
        if not native and self.untranslated is not None:
            raise InvalidRequest(
                f"'{self.untranslated}' can only go to a channel of kind '{self.kind}' (and "
                f"without compression); this request's channel is of kind '{kind}'.",
                param=self.untranslated)
        for of, fields in (self.per_kind or {}).items():
            if of == kind:
                request.body.update(fields)
            else:
                for name in fields:
                    request.body.pop(name, None)
        return native


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body, which every door takes as one JSON object."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def read_request(raw: bytes) -> tuple[dict[str, Any], str]:
    """A request body of any door that names a model: the object, and its `model`."""
    body = json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string.", param="model")
    return body, model


def parse_chat(raw: bytes) -> ChatRequest:
    body, model = read_request(raw)
    check_messages(body.get("messages"))
    check_fields(body)

    stream = bool(body.get("stream"))
    options = body.get("stream_options")
    include_usage = None
    if options is not None:
        if not stream:
            raise InvalidRequest("'stream_options' is only allowed when 'stream' is true.",
                                 param="stream_options")
        include_usage = options.get("include_usage")  # a boolean or None, as check_fields saw
    models = body.pop("models", None)
    if models:  # rare; most requests name one model and pay nothing here
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise InvalidRequest("'models' must be an array of model names.", param="models")
        models = [m for m in models if m != model]
    max_output = body.get("max_completion_tokens") or body.get("max_tokens")
    fallbacks = None if body.keys().isdisjoint(_ASKS_FALLBACK) else _fallbacks(body)
    return ChatRequest(body, model, stream, include_usage, max_output, body.get("user"),
                       models or [], fallbacks, body.pop("compression", None))


_ASKS_FALLBACK = frozenset({"fallback_models", "fallback_timeout", "fallback_enabled"})
MAX_FALLBACK_MODELS = 5
MIN_FALLBACK_TIMEOUT_MS, MAX_FALLBACK_TIMEOUT_MS = 5_000, 300_000


@dataclass(slots=True)
class Fallbacks:
    """The request's `fallback_models`, `fallback_timeout` and `fallback_enabled`; None where
    the request left a field out (the key's default, then the gateway's, applies)."""

    models: list[str] | None
    timeout_ms: int | None
    enabled: bool | None


def _fallbacks(body: dict[str, Any]) -> Fallbacks:
    models = body.pop("fallback_models", None)
    timeout = body.pop("fallback_timeout", None)
    enabled = body.pop("fallback_enabled", None)
    if models is not None:
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise InvalidRequest("'fallback_models' must be an array of model names.",
                                 param="fallback_models")
        if len(models) > MAX_FALLBACK_MODELS:
            raise InvalidRequest(f"'fallback_models' takes at most {MAX_FALLBACK_MODELS} "
                                 f"models; got {len(models)}.", param="fallback_models")
    if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int)
            or not MIN_FALLBACK_TIMEOUT_MS <= timeout <= MAX_FALLBACK_TIMEOUT_MS):
        raise InvalidRequest(
            f"'fallback_timeout' must be a whole number of milliseconds from "
            f"{MIN_FALLBACK_TIMEOUT_MS} to {MAX_FALLBACK_TIMEOUT_MS}; got {timeout!r}.",
            param="fallback_timeout")
    if enabled is not None and not isinstance(enabled, bool):
        raise InvalidRequest("'fallback_enabled' must be a boolean.", param="fallback_enabled")
    return Fallbacks(models, timeout, enabled)
