"""The Responses door's stream: the pipeline's chat chunks as Responses events.

    first chunk       → response.created, response.in_progress
    delta.content     → (response.output_item.added message, response.content_part.added)
                        response.output_text.delta
    delta.refusal     → (… a refusal part) response.refusal.delta
    delta.tool_calls  → (response.output_item.added function_call)
                        response.function_call_arguments.delta
    end of stream     → for each item in order: its .done events, response.output_item.done;
                        then response.completed (or response.incomplete, at the token limit)
    a failure         → response.failed, then an `error` event the openai SDK raises

Each event is `event: <type>` and `data: <json>` with its `sequence_number`, as OpenAI sends
them. The chunks come as dicts from a live stream, or as the chat stream's bytes when the
idempotency layer is in between (it records and replays those bytes): both are translated the
same way, so a replayed stream is the same events.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tokenmux.api import response_object as objects
from tokenmux.errors import GatewayError
from tokenmux.server.responses_door import ResponsesDoor
from tokenmux.server.sse import SseWriter


@dataclass(slots=True)
class _Item:
    index: int  # its output_index
    body: dict[str, Any]
    parts: list[str] = field(default_factory=list)  # a call's argument fragments, or text
    refusal: list[str] | None = None  # a message's refusal part, once begun


class ResponseEvents:
    def __init__(self, http: web.Request, request_id: str, door: ResponsesDoor):
        self._out = SseWriter(http, request_id)
        self._request_id = request_id
        self._door = door  # its request is read by the time the stream opens
        self._sequence = 0
        self._response: dict[str, Any] | None = None
        self._items: list[_Item] = []
        self._message: _Item | None = None
        self._calls: dict[int, _Item] = {}
        self._reason: str | None = None
        self._usage: dict[str, Any] | None = None
        self._buffer = b""
        self._ended = False  # the last event (completed, incomplete or failed) is out

    @property
    def response(self) -> web.StreamResponse | None:
        return self._out.response

    async def open(self, headers: dict[str, str]) -> None:
        await self._out.open(headers)

    async def send(self, chunks: list[dict[str, Any]]) -> None:
        await self._out.write(self._translate(chunks))

    async def done(self, tail: list[dict[str, Any]]) -> None:
        await self._out.end(self._translate(tail) + await self._finish())

    async def fail(self, error: GatewayError) -> None:
        with contextlib.suppress(ConnectionError):  # a client already gone needs no notice
            await self._out.end(self._failed(error.body()))

    # What the idempotency layer records of this stream, and hands to `write` and `end`: the
    # chat stream's own bytes, translated on the way out, so that a live copy and a replay
    # give the same events.
    def encode(self, chunks: list[dict[str, Any]]) -> bytes:
        return self._out.encode(chunks)

    def encode_failure(self, error: GatewayError) -> bytes:
        return self._out.encode_failure(error)

    def encode_done(self, tail: list[dict[str, Any]]) -> bytes:
        return self._out.encode_done(tail)

    async def write(self, data: bytes) -> None:
        chunks, end = self._decode(data)
        out = self._translate(chunks)
        if end is not None:  # a keyed stream's copy ends with its last write
            out += await self._last(end)
        await self._out.write(out)

    async def end(self, data: bytes) -> None:
        chunks, end = self._decode(data)
        out = self._translate(chunks)
        if end is None and not self._ended:
            end = {"error": {"message": "The stream ended before its answer did.",
                             "type": "api_error", "param": None, "code": "stream_truncated"}}
        await self._out.end(out if end is None else out + await self._last(end))

    def _decode(self, data: bytes) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Chat stream bytes as their chunks, and how the stream ended if it did ({} for its
        [DONE], else the error event's body)."""
        self._buffer += data
        events = self._buffer.split(b"\n\n")
        self._buffer = events.pop()
        chunks, end = [], None
        for event in events:
            payload = event.removeprefix(b"data: ")
            if payload == b"[DONE]":
                end = {}
            elif payload:
                chunk = orjson.loads(payload)
                if "error" in chunk:
                    end = chunk
                else:
                    chunks.append(chunk)
        return chunks, end

    async def _last(self, end: dict[str, Any]) -> bytes:
        self._ended = True
        return self._failed(end) if end else await self._finish()

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _translate(self, chunks: list[dict[str, Any]]) -> bytes:
        out: list[bytes] = []
        for chunk in chunks:
            if self._response is None:
                out.append(self._start(chunk))
            if chunk.get("usage"):
                self._usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                if content := delta.get("content"):
                    out.append(self._text(content))
                if refusal := delta.get("refusal"):
                    out.append(self._refusal(refusal))
                for call in delta.get("tool_calls") or ():
                    out.append(self._call(call))
                if choice.get("finish_reason"):
                    self._reason = choice["finish_reason"]
        return b"".join(out)

    def _start(self, chunk: dict[str, Any]) -> bytes:
        rid = objects.response_id(self._request_id, str(chunk.get("id")))
        assert self._door.request is not None
        self._response = objects.shell(self._door.request, rid, str(chunk.get("model")),
                                       float(chunk.get("created") or 0), "in_progress")
        return (self._event("response.created", response=self._response)
                + self._event("response.in_progress", response=self._response))

    def _rid(self) -> str:
        assert self._response is not None
        return str(self._response["id"])

    def _open_message(self) -> tuple[_Item, bytes]:
        if self._message is not None:
            return self._message, b""
        body = objects.message_item(self._rid(), None, None, "in_progress")
        item = self._message = _Item(len(self._items), body)
        self._items.append(item)
        return item, self._event("response.output_item.added", output_index=item.index,
                                 item=body)

    def _text(self, text: str) -> bytes:
        item, out = self._open_message()
        if not item.parts:
            out += self._event("response.content_part.added", output_index=item.index,
                               item_id=item.body["id"], content_index=0,
                               part=objects.output_text(""))
        item.parts.append(text)
        return out + self._event("response.output_text.delta", output_index=item.index,
                                 item_id=item.body["id"], content_index=0, delta=text,
                                 logprobs=[])

    def _refusal(self, text: str) -> bytes:
        item, out = self._open_message()
        index = 1 if item.parts else 0
        if item.refusal is None:
            item.refusal = []
            out += self._event("response.content_part.added", output_index=item.index,
                               item_id=item.body["id"], content_index=index,
                               part={"type": "refusal", "refusal": ""})
        item.refusal.append(text)
        return out + self._event("response.refusal.delta", output_index=item.index,
                                 item_id=item.body["id"], content_index=index, delta=text)

    def _call(self, call: dict[str, Any]) -> bytes:
        index = call.get("index", 0)
        function = call.get("function") or {}
        out = b""
        item = self._calls.get(index)
        if item is None:
            body = objects.call_item(self._rid(), index, str(call.get("id")),
                                     str(function.get("name")), "", "in_progress")
            item = self._calls[index] = _Item(len(self._items), body)
            self._items.append(item)
            out = self._event("response.output_item.added", output_index=item.index, item=body)
        if fragment := function.get("arguments"):
            item.parts.append(fragment)
            out += self._event("response.function_call_arguments.delta",
                               output_index=item.index, item_id=item.body["id"],
                               delta=fragment)
        return out

    async def _finish(self) -> bytes:
        if self._response is None:  # nothing came at all
            return self._failed({"error": {"message": "The upstream sent no answer.",
                                           "type": "api_error", "code": "empty_stream"}})
        status = "incomplete" if self._reason in objects.INCOMPLETE else "completed"
        out: list[bytes] = []
        output = []
        for item in self._items:
            body = dict(item.body)
            if body["type"] == "message":
                out.append(self._finish_message(item, body, status))
            else:
                body.update(arguments="".join(item.parts) or "{}", status="completed")
                out.append(self._event("response.function_call_arguments.done",
                                       output_index=item.index, item_id=body["id"],
                                       name=body["name"], arguments=body["arguments"]))
            out.append(self._event("response.output_item.done", output_index=item.index,
                                   item=body))
            output.append(body)
        response = {**self._response, "output": output,
                    "usage": objects.usage(self._usage)}
        objects.finished(response, self._reason)
        await self._door.keep(response)  # kept before the client hears it is done
        kind = ("response.completed" if response["status"] == "completed"
                else "response.incomplete")
        out.append(self._event(kind, response=response))
        return b"".join(out)

    def _finish_message(self, item: _Item, body: dict[str, Any], status: str) -> bytes:
        content: list[dict[str, Any]] = []
        out = b""
        if item.parts:
            part = objects.output_text("".join(item.parts))
            out += self._event("response.output_text.done", output_index=item.index,
                               item_id=body["id"], content_index=0, text=part["text"],
                               logprobs=[])
            out += self._event("response.content_part.done", output_index=item.index,
                               item_id=body["id"], content_index=0, part=part)
            content.append(part)
        if item.refusal is not None:
            refusal = {"type": "refusal", "refusal": "".join(item.refusal)}
            out += self._event("response.refusal.done", output_index=item.index,
                               item_id=body["id"], content_index=len(content),
                               refusal=refusal["refusal"])
            out += self._event("response.content_part.done", output_index=item.index,
                               item_id=body["id"], content_index=len(content), part=refusal)
            content.append(refusal)
        body.update(content=content, status=status)
        return out

    def _failed(self, body: dict[str, Any]) -> bytes:
        error = body.get("error") or {}
        out = b""
        if self._response is not None:
            # The response's error takes OpenAI's codes only; the `error` event has the
            # gateway's own.
            code = "rate_limit_exceeded" if error.get("code") == "rate_limit_exceeded" else (
                "server_error")
            failed = {**self._response, "status": "failed",
                      "error": {"code": code, "message": error.get("message")}}
            out = self._event("response.failed", response=failed)
        # The `error` object makes the openai SDK raise, as it does on the chat door.
        return out + self._event("error", code=error.get("code"), message=error.get("message"),
                                 param=error.get("param"), error=error)
