"""A fake Anthropic Messages API on loopback that holds the gateway to the official SDK's types.

Every request body is validated against the `anthropic` package's `MessageCreateParams` (no
unknown field at any depth), plus the rules the API enforces beyond types: turns alternate
starting with the user, no empty text, every `tool_use` answered by a `tool_result` at the start
of the next turn; and the rules of the `anthropic-version` sent: 2026-10-21 (the SDK's own)
refuses `temperature`, `top_p` and `top_k` at any value, document blocks in assistant turns and
citations on user text; 2023-06-01 still takes the three sampling fields. A request that breaks
them gets the API's own 400. Every answer, JSON or
stream event, is validated with the SDK's response models before it is sent.

The last user text may be a command:

    @fail STATUS [TYPE]   answer STATUS with an Anthropic error body (429 sends Retry-After: 1)
    @call NAME JSON       call tool NAME with input JSON (streamed as several JSON fragments)
    @calls2               a sentence, then two tool calls at once (one under
                          `disable_parallel_tool_use`)
    @maxtokens            stop for max_tokens
    @refusal              stop for refusal
    @cached               report cache reads and writes in the usage
    @midstream            (stream) a few words, then an `error` event (overloaded)
    @leak                 answer 400 with the received x-api-key in the message

Otherwise it answers REPLY, or FINAL_ANSWER when the last turn brought tool results.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent
from anthropic.types.message_create_params import (
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)
from pydantic import ConfigDict, TypeAdapter, ValidationError

from tests.fakes.server import LoopbackServer, Received, drain

REPLY = "Hello from the fake Claude, glad to help"
FINAL_ANSWER = "It is sunny in Paris"
_STRICT = ConfigDict(extra="forbid")
# Wrapped in a tuple so that the strict config reaches every nested TypedDict.
_REQUEST = TypeAdapter(tuple[MessageCreateParamsNonStreaming], config=_STRICT)
_STREAM_REQUEST = TypeAdapter(tuple[MessageCreateParamsStreaming], config=_STRICT)
_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
CURRENT_VERSION, OLD_VERSION = "2026-10-21", "2023-06-01"
SAMPLING = ("temperature", "top_p", "top_k")


@dataclass
class FakeAnthropic(LoopbackServer):
    api_key: str = "sk-ant-fake-secret-0123456789"
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # why requests were refused

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("x-api-key") != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if version not in (CURRENT_VERSION, OLD_VERSION):
            return _error(400, "invalid_request_error",
                          f"anthropic-version: {version!r} is not a valid version")
        body = (await self.record(request)).body
        problem = _version_rules(body, version) or _invalid(
            {k: v for k, v in body.items() if k not in SAMPLING})
        if problem:
            self.rejected.append(problem)
            return _error(400, "invalid_request_error", problem)
        command, _, arg = _last_user_text(body).partition(" ")
        if command == "@leak":
            return _error(400, "invalid_request_error",
                          f"bad key {request.headers.get('x-api-key')}")
        if command == "@fail":
            status_text, _, kind = arg.partition(" ")
            status = int(status_text)
            headers = {"retry-after": "1"} if status == 429 else {}
            return _error(status, kind or "api_error", f"fake failure {status}", headers)
        blocks, stop_reason = _answer(body, command, arg)
        usage = _usage(body, blocks, cached=command == "@cached")
        if body.get("stream"):
            return await _stream(request, body, blocks, stop_reason, usage, command)
        message = {"id": "msg_fake01", "type": "message", "role": "assistant",
                   "model": body["model"], "content": blocks, "stop_reason": stop_reason,
                   "stop_sequence": None, "usage": usage}
        Message.model_validate(message)
        return web.json_response(message)


def _error(status: int, kind: str, message: str,
           headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message},
            "request_id": "req_fake"}
    ErrorResponse.model_validate(body)
    return web.json_response(body, status=status, headers=headers)


def _version_rules(body: dict[str, Any], version: str) -> str | None:
    if version == OLD_VERSION:
        return None  # the sampling fields are then checked as numbers by the API, not here
    for name in SAMPLING:
        if name in body:
            return f"{name}: Extra inputs are not permitted"
    for i, message in enumerate(body.get("messages") or ()):
        content = message.get("content")
        for block in content if isinstance(content, list) else ():
            if message.get("role") == "assistant" and block.get("type") == "document":
                return f"messages.{i}: document blocks are not permitted in assistant messages"
            if message.get("role") == "user" and block.get("type") == "text" \
                    and block.get("citations"):
                return f"messages.{i}: citations are not permitted on user text blocks"
    return None


def _invalid(body: dict[str, Any]) -> str | None:
    schema = _STREAM_REQUEST if body.get("stream") else _REQUEST
    try:
        drain(schema.validate_python((body,)))
    except ValidationError as exc:
        return f"invalid request: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
    messages = body["messages"]
    if messages[0]["role"] != "user":
        return "messages: the first message must use the user role"
    pending: set[str] = set()
    for i, message in enumerate(messages):
        if i and message["role"] == messages[i - 1]["role"]:
            return f"messages.{i}: roles must alternate between user and assistant"
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if pending:
            leading = [b.get("tool_use_id") for b in blocks[:len(pending)]
                       if b["type"] == "tool_result"]
            if set(leading) != pending:
                return (f"messages.{i}: tool_use ids {sorted(pending)} need tool_result "
                        "blocks at the start of the next message")
        pending = {b["id"] for b in blocks if b["type"] == "tool_use"}
        for block in blocks:
            if block["type"] == "text" and not block["text"]:
                return f"messages.{i}: text content blocks must be non-empty"
    if pending:
        return "the last message has tool_use blocks without results"
    return None


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body["messages"]):
        if message["role"] != "user":
            continue
        content = message["content"]
        if isinstance(content, str):
            return content
        texts = [b["text"] for b in content if b["type"] == "text"]
        if texts:
            return texts[-1]
        if any(b["type"] == "tool_result" for b in content):
            return "@tool-results"
    return ""


def _answer(body: dict[str, Any], command: str, arg: str) -> tuple[list[dict[str, Any]], str]:
    if command == "@call":
        name, _, raw = arg.partition(" ")
        return [{"type": "tool_use", "id": "toolu_fake01", "name": name,
                 "input": orjson.loads(raw or "{}")}], "tool_use"
    if command == "@calls2":
        blocks = [{"type": "text", "text": "Let me look both up."},
                  {"type": "tool_use", "id": "toolu_fakeA", "name": "get_weather",
                   "input": {"city": "Paris"}},
                  {"type": "tool_use", "id": "toolu_fakeB", "name": "get_time",
                   "input": {"city": "Paris", "format": "24h"}}]
        # As the API does: told so, the model calls one tool at most.
        if (body.get("tool_choice") or {}).get("disable_parallel_tool_use"):
            blocks = blocks[:2]
        return blocks, "tool_use"
    if command == "@tool-results":
        return [{"type": "text", "text": FINAL_ANSWER}], "end_turn"
    if command == "@maxtokens":
        return [{"type": "text", "text": "Cut off"}], "max_tokens"
    if command == "@refusal":
        return [{"type": "text", "text": "I can't help with that."}], "refusal"
    if body.get("output_config"):
        return [{"type": "text", "text": '{"answer": 42}'}], "end_turn"
    return [{"type": "text", "text": REPLY}], "end_turn"


def _usage(body: dict[str, Any], blocks: list[dict[str, Any]], *, cached: bool) -> dict[str, Any]:
    words = sum(len(b.get("text", "").split()) + 3 * (b["type"] == "tool_use") for b in blocks)
    return {"input_tokens": 10 + 2 * len(body["messages"]), "output_tokens": words,
            "cache_read_input_tokens": 100 if cached else 0,
            "cache_creation_input_tokens": 20 if cached else 0}


async def _stream(request: web.Request, body: dict[str, Any], blocks: list[dict[str, Any]],
                  stop_reason: str, usage: dict[str, Any], command: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)

    async def send(event: dict[str, Any]) -> None:
        # `ping` and `error` are outside the SDK's event union; it reads them on their own.
        if event["type"] == "error":
            ErrorResponse.model_validate({**event, "request_id": None})
        elif event["type"] != "ping":
            _EVENT.validate_python(event)
        await response.write(f"event: {event['type']}\n".encode() + b"data: "
                             + orjson.dumps(event) + b"\n\n")

    start_usage = {**usage, "output_tokens": 1}
    await send({"type": "message_start", "message": {
        "id": "msg_fake01", "type": "message", "role": "assistant", "model": body["model"],
        "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}})
    await send({"type": "ping"})
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            await send({"type": "content_block_start", "index": index,
                        "content_block": {"type": "text", "text": ""}})
            for i, word in enumerate(block["text"].split(" ")):
                if command == "@midstream" and i == 3:
                    await asyncio.sleep(0.1)  # the words so far reach the client first
                    await send({"type": "error", "error": {
                        "type": "overloaded_error", "message": "Overloaded"}})
                    return response
                await send({"type": "content_block_delta", "index": index, "delta": {
                    "type": "text_delta", "text": word if i == 0 else " " + word}})
                await asyncio.sleep(0)
        else:
            await send({"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})
            raw = orjson.dumps(block["input"]).decode()
            # As the API does: an empty first fragment, then the JSON in uneven pieces.
            for piece in ("", raw[:5], raw[5:12], raw[12:]):
                if piece or raw == "{}":
                    await send({"type": "content_block_delta", "index": index, "delta": {
                        "type": "input_json_delta", "partial_json": piece}})
        await send({"type": "content_block_stop", "index": index})
    await send({"type": "message_delta", "delta": {"stop_reason": stop_reason,
                                                   "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]}})
    await send({"type": "message_stop"})
    await response.write_eof()
    return response
