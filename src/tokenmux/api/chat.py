"""Validation of `POST /v1/chat/completions` bodies.

Checks what a client can get wrong and what would otherwise fail upstream as a confusing error or
a wasted call; every other field passes through untouched to OpenAI-kind upstreams. The body is
parsed once, and the dict travels on; nothing here copies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tokenmux.errors import InvalidRequest

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_PART_TYPES = {
    "system": frozenset({"text"}),
    "developer": frozenset({"text"}),
    "user": frozenset({"text", "image_url", "input_audio", "file"}),
    "assistant": frozenset({"text", "refusal"}),
    "tool": frozenset({"text"}),
    "function": frozenset({"text"}),
}
_PART_FIELD = {"text": "text", "refusal": "refusal", "image_url": "image_url",
               "input_audio": "input_audio", "file": "file"}


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
    _check_messages(body.get("messages"))

    _check_range(body, "temperature", 0, 2)
    _check_range(body, "top_p", 0, 1)
    _check_range(body, "presence_penalty", -2, 2)
    _check_range(body, "frequency_penalty", -2, 2)
    max_tokens = _positive_int(body, "max_tokens")
    max_completion = _positive_int(body, "max_completion_tokens")
    _positive_int(body, "n")
    _check_stop(body.get("stop"))

    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    options = body.get("stream_options")
    include_usage = None
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
        if not stream:
            raise InvalidRequest("'stream_options' is only allowed when 'stream' is true.",
                                 param="stream_options")
        flag = options.get("include_usage")
        if not isinstance(flag, bool) and flag is not None:
            raise InvalidRequest("'stream_options.include_usage' must be a boolean.",
                                 param="stream_options.include_usage")
        include_usage = flag

    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string.", param="user")
    models = body.pop("models", None)
    if models:  # rare; most requests name one model and pay nothing here
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise InvalidRequest("'models' must be an array of model names.", param="models")
        models = [m for m in models if m != model]
    fallbacks = None if body.keys().isdisjoint(_ASKS_FALLBACK) else _fallbacks(body)
    return ChatRequest(body, model, bool(stream), include_usage,
                       max_completion if max_completion is not None else max_tokens, user,
                       models or [], fallbacks)


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


def _check_range(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be a number between {low} and {high}; got {value!r}.",
                             param=name)


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"'{name}' must be a positive integer; got {value!r}.", param=name)
    return value


def _check_stop(stop: Any) -> None:
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise InvalidRequest("'stop' must be a string or an array of strings.", param="stop")
    if len(stop) > 4:
        raise InvalidRequest(f"'stop' takes at most 4 sequences; got {len(stop)}.", param="stop")


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise InvalidRequest("'messages' is required.", param="messages")
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' must be an array of message objects.", param="messages")
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"'{where}' must be an object.", param=where)
        role = message.get("role")
        if role not in _ROLES:
            raise InvalidRequest(
                f"'{where}.role' must be one of 'system', 'developer', 'user', 'assistant' or "
                f"'tool'; got {role!r}.", param=f"{where}.role")
        _check_content(message, role, where)
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise InvalidRequest(f"'{where}.tool_call_id' is required for a tool message.",
                                 param=f"{where}.tool_call_id")


def _check_content(message: dict[str, Any], role: str, where: str) -> None:
    content = message.get("content")
    if isinstance(content, str):
        return
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return
        raise InvalidRequest(f"'{where}.content' is required for a {role} message.",
                             param=f"{where}.content")
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}.content' must be a string or an array of content parts.",
                             param=f"{where}.content")
    allowed = _PART_TYPES[role]
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            raise InvalidRequest(
                f"'{at}.type' must be one of {', '.join(sorted(allowed))} for a {role} message; "
                f"got {kind!r}.", param=f"{at}.type")
        field = _PART_FIELD[kind]
        value = part.get(field)
        expected = str if kind in ("text", "refusal") else dict
        if not isinstance(value, expected):
            raise InvalidRequest(f"'{at}.{field}' is required and must be a "
                                 f"{'string' if expected is str else 'object'}.",
                                 param=f"{at}.{field}")
