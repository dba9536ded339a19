"""What `/v1/messages` answers, in the Messages API's format: the message, the stream's events
and the errors, made from the pipeline's OpenAI chat completion, chunks and `GatewayError`s.

An answer from an Anthropic channel that was sent the request natively carries the upstream's
own message (`native`) and stream events: they go out as they came, under the model's name in
the catalog. Everything else is translated: text, `reasoning_content` as thinking, tool calls as
`tool_use`; finish reasons by the table in api/anthropic_wire.py. OpenAI and Gemini do not say
which stop sequence ended an answer, so through them such a stop reads `end_turn`.

Usage: OpenAI's `prompt_tokens` includes cache reads, Anthropic's `input_tokens` does not; a
translated answer has no cache writes to report (`cache_creation_input_tokens` 0).
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenmux.api.anthropic_wire import STOP_REASONS
from tokenmux.errors import GatewayError, UpstreamFailed
from tokenmux.ids import unique

# HTTP status → the Messages API's error type.
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 408: "timeout_error",
    413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
    504: "timeout_error", 529: "overloaded_error",
}
OVERLOADED = 529


def message_of(completion: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat.completion as a Messages API `message`."""
    if (native := completion.get("native")) is not None:
        return {**native, "model": completion.get("model")}
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if reasoning := reply.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if text := reply.get("content") or reply.get("refusal"):
        content.append({"type": "text", "text": text})
    for call in reply.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                        "input": _arguments(function.get("arguments"))})
    return {"id": message_id(completion.get("id")), "type": "message", "role": "assistant",
            "model": completion.get("model"), "content": content,
            "stop_reason": stop_reason(choice.get("finish_reason")), "stop_sequence": None,
            "usage": usage_of(completion.get("usage"))}


def message_id(completion_id: Any) -> str:
    if isinstance(completion_id, str) and completion_id:
        return "msg_" + completion_id.removeprefix("chatcmpl-")
    return unique("msg_")


def stop_reason(finish_reason: Any) -> str | None:
    if finish_reason is None:
        return None
    return STOP_REASONS.get(finish_reason, "end_turn")


def usage_of(usage: Any) -> dict[str, int]:
    usage = usage if isinstance(usage, dict) else {}
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {"input_tokens": max(0, int(usage.get("prompt_tokens") or 0) - cached),
            "output_tokens": int(usage.get("completion_tokens") or 0),
            "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0}


def _arguments(raw: Any) -> Any:
    try:
        value = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def error_status(error: GatewayError) -> int:
    # An upstream's overload, and the gateway's own, read as the Messages API's 529.
    if error.code == "server_busy" or (isinstance(error, UpstreamFailed) and error.overloaded):
        return OVERLOADED
    return error.status


def error_body(error: GatewayError, status: int) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status) or ("api_error" if status >= 500
                                       else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


class Events:
    """One stream's translation: OpenAI chunks in, Messages API events out, in order."""

    def __init__(self) -> None:
        self.native = False
        self.started = self.ended = False
        self.index = -1  # the open content block, or the last one
        self.open: str | None = None  # its type while open
        self.blocks: dict[int, int] = {}  # OpenAI tool call index → content block index
        self.stop: str | None = None
        self.usage: dict[str, int] | None = None

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if (event := chunk.get("native")) is not None:
            self.native = True
            if event.get("type") == "message_start":
                event = {**event, "message": {**event.get("message", {}),
                                              "model": chunk.get("model")}}
            elif event.get("type") == "message_stop":
                self.ended = True
            return [event]
        if self.native:
            return []  # the gateway's own usage chunk: the upstream's events said it
        out: list[dict[str, Any]] = []
        if not self.started:
            self.started = True
            out.append({"type": "message_start", "message": {
                "id": message_id(chunk.get("id")), "type": "message", "role": "assistant",
                "model": chunk.get("model"), "content": [], "stop_reason": None,
                "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}})
            out.append({"type": "ping"})
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            self._delta(choice.get("delta") or {}, out)
            if (reason := choice.get("finish_reason")) is not None:
                self._close(out)
                self.stop = stop_reason(reason)
        if (usage := chunk.get("usage")) is not None:
            self.usage = usage_of(usage)
            if self.stop is not None:
                self._end(out)
        return out

    def finish(self) -> list[dict[str, Any]]:
        """The events that end the stream, when the chunks have not."""
        out: list[dict[str, Any]] = []
        if not self.ended and not self.native:
            self._close(out)
            self._end(out)
        return out

    def _delta(self, delta: dict[str, Any], out: list[dict[str, Any]]) -> None:
        if thinking := delta.get("reasoning_content"):
            self._block("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
            out.append(self._event({"type": "thinking_delta", "thinking": thinking}))
        if text := delta.get("content"):
            self._block("text", {"type": "text", "text": ""}, out)
            out.append(self._event({"type": "text_delta", "text": text}))
        for call in delta.get("tool_calls") or ():
            position = call.get("index", 0)
            function = call.get("function") or {}
            if call.get("id") is not None or position not in self.blocks:
                self._close(out)
                self._block("tool_use", {"type": "tool_use", "id": call.get("id") or unique(
                    "toolu_"), "name": function.get("name") or "", "input": {}}, out)
                self.blocks[position] = self.index
            if arguments := function.get("arguments"):
                out.append({"type": "content_block_delta", "index": self.blocks[position],
                            "delta": {"type": "input_json_delta", "partial_json": arguments}})

    def _block(self, kind: str, start: dict[str, Any], out: list[dict[str, Any]]) -> None:
        if self.open == kind and kind != "tool_use":
            return
        self._close(out)
        self.index += 1
        self.open = kind
        out.append({"type": "content_block_start", "index": self.index, "content_block": start})

    def _event(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": self.index, "delta": delta}

    def _close(self, out: list[dict[str, Any]]) -> None:
        if self.open is not None:
            out.append({"type": "content_block_stop", "index": self.index})
            self.open = None

    def _end(self, out: list[dict[str, Any]]) -> None:
        self.ended = True
        out.append({"type": "message_delta",
                    "delta": {"stop_reason": self.stop or "end_turn", "stop_sequence": None},
                    "usage": self.usage or usage_of(None)})
        out.append({"type": "message_stop"})
