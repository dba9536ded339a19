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
    include_usage: bool  # what the client asked for; the upstream is always asked for usage
    max_output: int | None
    user: str | None
    models: list[str]  # the request's own fallback models, taken out of the body


def parse_chat(raw: bytes) -> ChatRequest:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")

    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string.", param="model")
    check_messages(body.get("messages"))
    check_fields(body)

    stream = bool(body.get("stream"))
    options = body.get("stream_options")
    include_usage = True
    if options is not None:
        if not stream:
            raise InvalidRequest("'stream_options' is only allowed when 'stream' is true.",
                                 param="stream_options")
        include_usage = options.get("include_usage") is not False
    models = body.pop("models", None)
    if models:  # rare; most requests name one model and pay nothing here
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise InvalidRequest("'models' must be an array of model names.", param="models")
        models = [m for m in models if m != model]
    max_output = body.get("max_completion_tokens") or body.get("max_tokens")
    return ChatRequest(body, model, stream, include_usage, max_output, body.get("user"),
                       models or [])
