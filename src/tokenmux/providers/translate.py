"""Pieces every native translation needs: reading an OpenAI request's parts, refusing what a
provider cannot honour, and reading a provider's answer as JSON."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import orjson

from tokenmux.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamFailed,
    UpstreamRejected,
    UpstreamTimeout,
)
from tokenmux.ids import unique
from tokenmux.routing.catalog import Route

# OpenAI's own bookkeeping and hints: meaningless to other providers, harmless to leave behind.
OPENAI_ONLY = frozenset({"metadata", "store", "service_tier", "safety_identifier",
                         "prompt_cache_key", "stream_options"})


def check_fields(body: Mapping[str, Any], route: Route, handled: Collection[str],
                 unsupported: Mapping[str, Any], ignored: Collection[str], api: str) -> None:
    """Refuses, with a 400 naming it, any field the provider cannot honour: an unknown one, or
    an unsupported one set to anything but the value that asks for nothing."""
    for name, value in body.items():
        if name in handled or name in OPENAI_ONLY or name in ignored:
            continue
        if name in unsupported:
            if value is None or value == unsupported[name]:
                continue
            raise InvalidRequest(f"'{name}' cannot be honoured by model '{route.model}' "
                                 f"({a_channel(api)} has no such parameter); leave it out.",
                                 param=name)
        raise InvalidRequest(f"'{name}' is not supported by model '{route.model}' "
                             f"({a_channel(api)}); leave it out.", param=name)


def a_channel(api: str) -> str:
    """'an Anthropic channel', 'a Gemini channel': the article the name's sound takes."""
    return f"{'an' if api[:1].upper() in 'AEIOU' else 'a'} {api} channel"


def text_parts(content: Any, where: str, api: str) -> list[str]:
    """The non-empty texts of a message's content, a string or an array of text parts."""
    if not content:
        return []
    if isinstance(content, str):
        return [content]
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind not in ("text", "refusal"):
            raise InvalidRequest(f"Content parts of type '{kind}' cannot go in this message on "
                                 f"{a_channel(api)}.", param=f"{where}.content[{j}]")
        if text := part.get(kind):
            texts.append(text)
    return texts


def tool_arguments(tool_call: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The arguments of a validated tool call (api/messages.py), as an object."""
    if tool_call["type"] != "function":
        raise InvalidRequest("Only function tool calls can go to this channel; custom tools "
                             "are OpenAI's own.", param=f"{where}.type")
    raw = tool_call["function"]["arguments"] or "{}"
    try:
        arguments = orjson.loads(raw)
    except orjson.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise InvalidRequest("Tool call arguments must be a JSON object encoded as a string.",
                             param=f"{where}.function.arguments")
    return arguments


def data_url(url: str, where: str, media_types: Collection[str] | None,
             api: str) -> tuple[str, str]:
    """(media type, base64 data) of a `data:` URL."""
    header, _, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if encoding != "base64" or not data or (media_types is not None
                                            and media_type not in media_types):
        allowed = f" of type {', '.join(sorted(media_types))}" if media_types else ""
        raise InvalidRequest(f"An image data URL must be base64{allowed} for {a_channel(api)}; "
                             f"got '{header}'.", param=f"{where}.image_url.url")
    return media_type, data


def tool_choice_name(choice: Any) -> str | None:
    """The function a named `tool_choice` forces. The choice is validated (api/schema.py);
    OpenAI's custom and allowed-tools choices have no equivalent elsewhere."""
    if choice is None or isinstance(choice, str):
        return None
    if choice["type"] != "function":
        raise InvalidRequest(f"A 'tool_choice' of type '{choice['type']}' can only go to an "
                             "OpenAI-kind channel.", param="tool_choice.type")
    return str(choice["function"]["name"])


def functions(tools: list[Any]) -> list[dict[str, Any]]:
    """The `function` objects of validated `tools` (api/schema.py); custom tools are OpenAI's
    own."""
    found = []
    for i, tool in enumerate(tools):
        if tool["type"] != "function":
            raise InvalidRequest(f"A tool of type '{tool['type']}' can only go to an OpenAI-kind "
                                 "channel.", param=f"tools[{i}].type")
        found.append(tool["function"])
    return found


def load_answer(raw: bytes, route: Route, what: str = "answered with invalid JSON") -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamFailed(f"The upstream {route.provider!r} {what}.") from None


def scrub(message: str | None, secret: str | None) -> str | None:
    """A provider's message, without the provider's key should it echo it."""
    if secret and message:
        return message.replace(secret, "***")
    return message


def upstream_error(status: int, route: Route, message: str | None, *,
                   code: str | None = None, param: str | None = None,
                   retry_after: str | None = None,
                   credentials_refused: bool = False) -> GatewayError:
    """What the client sees of an upstream's non-2xx answer, whatever the provider's kind.

    The request's own faults (400, 413, 422) and a rate limit (429, with its Retry-After) pass
    through; refused credentials and an unknown model are the gateway's problem (502, not worth
    retrying on that channel); timeouts are 504; anything else is a 502 worth retrying.
    """
    name = route.provider
    if credentials_refused or status in (401, 403):
        return UpstreamFailed(
            f"The upstream {name!r} refused the gateway's credentials (HTTP {status}); "
            "check the provider's api_key.", retryable=False)
    if status in (400, 413, 422):
        return UpstreamRejected(message or f"The upstream {name!r} rejected the request.",
                                status=status, param=param, code=code)
    if status == 429:
        return UpstreamRejected(
            message or f"The upstream {name!r} is rate limiting the gateway.", status=429,
            code=code or "upstream_rate_limited", retry_after=retry_after)
    if status == 404:
        return UpstreamFailed(
            f"The upstream {name!r} does not serve model {route.upstream_model!r} "
            "(HTTP 404); check the channel's model.", retryable=False)
    if status in (408, 504):
        return UpstreamTimeout(f"The upstream {name!r} timed out (HTTP {status}).")
    detail = f": {message}" if message else ""
    return UpstreamFailed(f"The upstream {name!r} failed with HTTP {status}{detail}",
                          overloaded=status in (503, 529))


def completion_id(provider_id: Any) -> str:
    """An OpenAI-style id for an answer, the provider's own id inside when it gave one."""
    return f"chatcmpl-{provider_id}" if provider_id else unique("chatcmpl-")
