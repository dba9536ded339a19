"""A fake OpenAI chat completions server on loopback, speaking the real wire format.

It answers like OpenAI unless the last user message starts with a command:

    @fail STATUS [S]  answer STATUS with an OpenAI error body (429 also sends Retry-After: S,
                      7 by default)
    @stall SECONDS    wait that long before answering
    @hangup           close the connection without answering
    @garbage          answer 200 with a body that is not JSON
    @drop N           (stream) send N content chunks, then cut the connection
    @truncate N       (stream) send N content chunks, then end the body cleanly, unfinished
    @slow SECONDS     (stream) wait that long between chunks
    @nousage          leave usage out of the answer
    @leak             answer 400 with the received Authorization header in the message
    @call NAME JSON   call tool NAME with arguments JSON (streamed in fragments)
    @callbare NAME JSON  (stream) as @call, the fragments after the first without their
                      `index`, as some OpenAI-compatible servers send them
    @huge BYTES [length]  answer 200 with a JSON body of about BYTES bytes, sent 1 MiB at a time
                      and chunked (with `length`: its Content-Length declared up front); it
                      stops as soon as the client closes the connection
    @hugeerror BYTES  answer 500 with an error body of BYTES bytes, sent the same way
    @nonewline BYTES [N]  (stream) send the role chunk and N content chunks (without N: no
                      chunk at all), then a `data:` line of BYTES bytes that never ends, then
                      end the body
    @stallafter N SECONDS  (stream) send N content chunks, then wait SECONDS before the rest
    @stallhold N SECONDS NAME  (stream) send N content chunks, wait SECONDS, send one more, then
                      wait until the test calls `release(NAME)` before the rest
    @hold NAME        wait until the test calls `release(NAME)` (a control route), then answer
    @usage P C K      report P prompt tokens (K of them read from the cache) and C completion
    @maxtokens        answer a few words and stop for `length`

After a tool result (the last message has role `tool`) it answers FINAL_ANSWER; asked for JSON
of a schema (`response_format` json_schema) it answers JSON_ANSWER. An upstream
model whose name starts with `summariser` is a fake compression model: it answers
`SUMMARY <digest>`, the digest a hash of the text it was asked to summarise, so a test can tell
one summary from another and recognise it where the gateway puts it.

As OpenAI does, a reasoning model (an upstream model named gpt-5…, o1…, o3…, o4…) refuses
`temperature` other than 1, `top_p`, and the penalties, with OpenAI's 400; and no OpenAI model
(gpt-…, o…) takes `top_k`, which other servers of the format may.

`standing` gives an upstream model a command of its own, obeyed by every request for that model
that carries none, until the test changes it: a channel that keeps failing, or recovers.

Every request is recorded (path, headers, JSON body), and so is every stream the client
abandoned, so tests can assert what went upstream and what the gateway did to it.

`POST /v1/embeddings` answers embeddings (tests/fakes/embeddings.py).

Every request body is validated against the `openai` package's own `CompletionCreateParams`
(no unknown field below the top level, every value of its type); one that fails gets a 400
naming what failed, and the reason is kept in `rejected`. Unknown top-level fields are let
through, as OpenAI-compatible servers take their own extensions there (`top_k`, …).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import orjson
from aiohttp import web
from openai.types.chat.completion_create_params import (
    CompletionCreateParamsNonStreaming,
    CompletionCreateParamsStreaming,
)
from pydantic import ConfigDict, TypeAdapter, ValidationError

from tests.fakes.embeddings import openai_embeddings, stall_of
from tests.fakes.server import LoopbackServer, Received, drain

REPLY = "Hello from the fake upstream, here to help"
FINAL_ANSWER = "It is sunny in Paris"
JSON_ANSWER = '{"answer": 42}'
_STRICT = ConfigDict(extra="forbid")
# Wrapped in a tuple so that the strict config reaches every nested TypedDict.
_REQUEST = TypeAdapter(tuple[CompletionCreateParamsNonStreaming], config=_STRICT)
_STREAM_REQUEST = TypeAdapter(tuple[CompletionCreateParamsStreaming], config=_STRICT)
_KNOWN = frozenset(CompletionCreateParamsNonStreaming.__annotations__) | frozenset(
    CompletionCreateParamsStreaming.__annotations__)


@dataclass
class FakeOpenAI(LoopbackServer):
    host: str = "127.0.0.1"
    port: int = 0
    received: list[Received] = field(default_factory=list)
    # The `user` of requests whose client left: streams cut short, stalls never waited out.
    abandoned: list[str] = field(default_factory=list)
    standing: dict[str, str] = field(default_factory=dict)  # upstream model → command
    rejected: list[str] = field(default_factory=list)  # why requests failed the SDK's types
    _holds: dict[str, asyncio.Event] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/control/release/{name}", self._release)

    def release(self, name: str) -> None:
        """Lets every request held by `@hold NAME` answer, now and from now on."""
        url = f"http://{self.host}:{self.port}/control/release/{name}"
        httpx.post(url, timeout=10).raise_for_status()

    def hold(self, name: str) -> None:
        """Makes `@hold NAME` hold again after a release."""
        self._loop.call_soon_threadsafe(self._hold(name).clear)

    def _hold(self, name: str) -> asyncio.Event:
        return self._holds.setdefault(name, asyncio.Event())

    async def _release(self, request: web.Request) -> web.Response:
        self._hold(request.match_info["name"]).set()
        return web.json_response({"released": request.match_info["name"]})

    async def _embeddings(self, request: web.Request) -> web.Response:
        """Embeddings, as tests/fakes/embeddings.py describes."""
        body = (await self.record(request)).body
        if stall := stall_of(body):
            await asyncio.sleep(stall)
        status, answer = openai_embeddings(body)
        if status == 400:
            self.rejected.append(answer["error"]["message"])
        return web.json_response(answer, status=status,
                                 headers={"Retry-After": "1"} if status == 429 else None)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = (await self.record(request)).body
        problem = _invalid(body)
        if problem:
            self.rejected.append(problem)
            return web.json_response({"error": {"message": problem, "type":
                                                "invalid_request_error", "param": None,
                                                "code": "fake_invalid_request"}}, status=400)
        if refusal := _unsupported_sampling(body):
            return web.json_response({"error": refusal}, status=400)
        text = _last_user_text(body)
        if not text.startswith("@"):
            text = self.standing.get(body.get("model", ""), "")
        command, _, arg = text.partition(" ") if text.startswith("@") else ("", "", "")
        if (body.get("messages") or [{}])[-1].get("role") == "tool":
            command, arg = "@tool-results", ""
        if not command and (body.get("response_format") or {}).get("type") == "json_schema":
            command = "@json"
        if not command and str(body.get("model", "")).startswith("summariser"):
            command, arg = "@summary", summary_of(body)
        if command in ("@stall", "@hold"):
            try:
                if command == "@hold":
                    await self._hold(arg).wait()
                else:
                    await asyncio.sleep(float(arg))
            except asyncio.CancelledError:
                self.abandoned.append(str(body.get("user")))
                raise
        elif command == "@fail":
            status_text, _, wait = arg.partition(" ")
            status = int(status_text)
            headers = {"Retry-After": wait or "7"} if status == 429 else {}
            if status == 408:  # as the gateway answers a spent deadline
                headers = {"X-Timeout-Attempts": "3", "X-Timeout-Elapsed-Ms": "20012",
                           "x-should-retry": "false"}
            return web.json_response(
                {"error": {"message": f"fake failure {status}", "type": "server_error",
                           "param": "messages" if status == 400 else None, "code": "fake_code"}},
                status=status, headers=headers)
        elif command == "@leak":
            message = f"bad key {request.headers.get('Authorization')}"
            return web.json_response({"error": {"message": message, "type": "x",
                                                "param": None, "code": None}}, status=400)
        elif command == "@hangup":
            request.transport.close()  # type: ignore[union-attr]
            await asyncio.sleep(1)
            return web.Response()
        elif command == "@garbage":
            return web.Response(text="<html>upstream broke</html>", content_type="text/html")
        elif command in ("@huge", "@hugeerror"):
            return await self._huge(request, body, command, arg)
        if body.get("stream"):
            return await self._stream(request, body, command, arg)
        return web.json_response(_completion(body, command, arg))

    async def _huge(self, request: web.Request, body: dict[str, Any], command: str,
                    arg: str) -> web.StreamResponse:
        size_text, _, how = arg.partition(" ")
        size = int(size_text)
        if command == "@huge":
            status, head = 200, orjson.dumps(_completion(body, "", ""))[:-1] + b', "padding": "'
        else:
            status, head = 500, b'{"error": {"message": "'
        tail = b'"}' if command == "@huge" else b'"}}'
        response = web.StreamResponse(status=status,
                                      headers={"Content-Type": "application/json"})
        if how == "length":
            response.content_length = size
        await response.prepare(request)
        filler = b"x" * (1024 * 1024)
        try:
            await response.write(head)
            left = size - len(head) - len(tail)
            while left > 0:
                await response.write(filler[:left])
                left -= len(filler)
            await response.write(tail)
        except (ConnectionResetError, asyncio.CancelledError):
            self.abandoned.append(str(body.get("user")))
            raise
        return response

    async def _stream(self, request: web.Request, body: dict[str, Any], command: str,
                      arg: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body["model"],
                "system_fingerprint": "fp_fake"}
        if include_usage:
            base["usage"] = None

        async def send(event: dict[str, Any]) -> None:
            await response.write(b"data: " + orjson.dumps(event) + b"\n\n")

        words = _reply_words(command, arg)
        reason = "length" if command == "@maxtokens" else "stop"
        try:
            if command != "@nonewline" or arg.partition(" ")[2]:
                await send({**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                            "content": ""}, "logprobs": None, "finish_reason": None}]})
            if command in ("@call", "@callbare"):
                words, reason = [], "tool_calls"
                call = _tool_call(arg)
                arguments = call["function"]["arguments"]
                deltas = [{"index": 0, **call, "function": {"name": call["function"]["name"],
                                                            "arguments": ""}}]
                fragment = {} if command == "@callbare" else {"index": 0}
                deltas += [{**fragment, "function": {"arguments": arguments[i:i + 6]}}
                           for i in range(0, len(arguments), 6)]
                for delta in deltas:
                    await send({**base, "choices": [{"index": 0, "delta": {
                        "tool_calls": [delta]}, "logprobs": None, "finish_reason": None}]})
            if command == "@nonewline":
                size_text, _, count = arg.partition(" ")
                words = words[:int(count or 0)]
            for i, word in enumerate(words):
                if command == "@stallafter" and i == int(arg.partition(" ")[0]):
                    await asyncio.sleep(float(arg.partition(" ")[2]))
                if command == "@stallhold":
                    count, seconds, name = arg.split(" ")
                    if i == int(count):
                        await asyncio.sleep(float(seconds))
                    elif i == int(count) + 1:
                        await self._hold(name).wait()
                if command == "@drop" and i == int(arg):
                    request.transport.close()  # type: ignore[union-attr]
                    return response
                if command == "@truncate" and i == int(arg):
                    await response.write_eof()
                    return response
                if command == "@slow":
                    await asyncio.sleep(float(arg))
                await send({**base, "choices": [{"index": 0, "delta": {"content": word},
                            "logprobs": None, "finish_reason": None}]})
            if command == "@nonewline":
                await response.write(b"data: ")
                filler, left = b"x" * (1024 * 1024), int(size_text)
                while left > 0:
                    await response.write(filler[:left])
                    left -= len(filler)
                await response.write_eof()
                return response
            await send({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                        "finish_reason": reason}]})
            if include_usage and command != "@nousage":
                await send({**base, "choices": [],
                            "usage": _usage(body, len(words), command, arg)})
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.abandoned.append(str(body.get("user")))
            raise
        return response


def summary_of(body: dict[str, Any]) -> str:
    """The fake compression model's answer to BODY."""
    text = _last_user_text(body)
    return "SUMMARY " + hashlib.sha256(text.encode()).hexdigest()[:12]


def _reply_words(command: str = "", arg: str = "") -> list[str]:
    text = {"@tool-results": FINAL_ANSWER, "@summary": arg, "@json": JSON_ANSWER,
            "@maxtokens": "Cut off"}.get(command, REPLY)
    words = text.split(" ")
    return [words[0], *(" " + w for w in words[1:])]


def _tool_call(arg: str) -> dict[str, Any]:
    name, _, arguments = arg.partition(" ")
    return {"id": "call_fake01", "type": "function",
            "function": {"name": name, "arguments": arguments or "{}"}}


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content or ""
    return ""


def _invalid(body: dict[str, Any]) -> str | None:
    schema = _STREAM_REQUEST if body.get("stream") else _REQUEST
    try:
        drain(schema.validate_python(({k: v for k, v in body.items() if k in _KNOWN},)))
    except ValidationError as exc:
        # A union reports every branch it tried; the first few say enough.
        return "invalid request: " + "; ".join(
            f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors()[:3])
    return None


def _usage(body: dict[str, Any], completion: int, command: str = "",
           arg: str = "") -> dict[str, Any]:
    prompt, cached = 11 * len(body.get("messages") or []), 0
    if command == "@usage":
        prompt, completion, cached = (int(n) for n in arg.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}


def _completion(body: dict[str, Any], command: str, arg: str) -> dict[str, Any]:
    n = int(body.get("n") or 1)
    words = _reply_words(command, arg)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(words),
                               "refusal": None, "annotations": []}
    reason = "length" if command == "@maxtokens" else "stop"
    if command == "@call":
        message.update(content=None, tool_calls=[_tool_call(arg)])
        reason = "tool_calls"
    answer: dict[str, Any] = {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
        "model": body["model"], "system_fingerprint": "fp_fake",
        "choices": [{"index": i, "message": message, "logprobs": None, "finish_reason": reason}
                    for i in range(n)],
        "service_tier": "default",
    }
    if command != "@nousage":
        answer["usage"] = _usage(body, len(words) * n, command, arg)
    return answer


_REASONING = ("gpt-5", "o1", "o3", "o4")


def _unsupported_sampling(body: dict[str, Any]) -> dict[str, Any] | None:
    model = str(body.get("model", ""))
    if "top_k" in body and model.startswith(("gpt-", *_REASONING)):
        return {"message": "Unrecognized request argument supplied: top_k",
                "type": "invalid_request_error", "param": None, "code": None}
    if not model.startswith(_REASONING):
        return None
    if body.get("temperature") not in (None, 1):
        return {"message": f"Unsupported value: 'temperature' does not support "
                           f"{body['temperature']} with this model. Only the default (1) value "
                           "is supported.", "type": "invalid_request_error",
                "param": "temperature", "code": "unsupported_value"}
    for name in ("top_p", "presence_penalty", "frequency_penalty"):
        if body.get(name) is not None:
            return {"message": f"Unsupported parameter: '{name}' is not supported with this "
                               "model.", "type": "invalid_request_error", "param": name,
                    "code": "unsupported_parameter"}
    return None
