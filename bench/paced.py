"""A paced upstream: answers every chat completion with an OpenAI stream of N content chunks,
M ms apart, as a model that writes at a steady pace would.

Chunk i leaves at the request's arrival + i * M ms (a fixed schedule, so one late chunk does
not push the rest back), which makes the gaps a client sees the upstream's pace plus whatever
the path in between adds. Each content chunk says its index ("c0 ", "c1 ", …), so a client can
tell a lost chunk from a late one. Usage comes last when the request asks for it
(`stream_options.include_usage`, which the gateway always does), then `data: [DONE]`. A request
without `stream: true` gets the whole answer at once, as a `chat.completion` (the soak's JSON).

    python bench/paced.py --port 19121 --chunks 33 --gap-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
import uvloop
from aiohttp import web


def chunk(model: str, delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    event = {"id": "chatcmpl-paced", "object": "chat.completion.chunk", "created": 1732300000,
             "model": model, "choices": [] if usage else [
                 {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if usage:
        event["usage"] = usage
    return b"data: " + orjson.dumps(event) + b"\n\n"


def completion(model: str, chunks: int) -> bytes:
    return orjson.dumps({
        "id": "chatcmpl-paced", "object": "chat.completion", "created": 1732300000,
        "model": model, "choices": [{
            "index": 0, "message": {"role": "assistant",
                                    "content": "".join(f"c{i} " for i in range(chunks))},
            "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": chunks, "total_tokens": 9 + chunks}})


def app(chunks: int, gap: float) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        body = orjson.loads(await request.read())
        model = body.get("model", "static-model")
        if not body.get("stream"):
            return web.Response(body=completion(model, chunks), content_type="application/json")
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                          "Cache-Control": "no-cache"})
        await out.prepare(request)
        await out.write(chunk(model, {"role": "assistant", "content": ""}))
        for i in range(chunks):
            delay = arrived + i * gap - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await out.write(chunk(model, {"content": f"c{i} "}))
        await out.write(chunk(model, {}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            await out.write(chunk(model, {}, usage={"prompt_tokens": 9,
                                                    "completion_tokens": chunks,
                                                    "total_tokens": 9 + chunks}))
        await out.write(b"data: [DONE]\n\n")
        await out.write_eof()
        return out

    application = web.Application()
    application.router.add_post("/{prefix:.*}/chat/completions", chat)
    return application


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=33)
    parser.add_argument("--gap-ms", type=float, default=20.0)
    args = parser.parse_args()
    web.run_app(app(args.chunks, args.gap_ms / 1000), host="127.0.0.1", port=args.port,
                access_log=None, print=None, backlog=4096, loop=uvloop.new_event_loop())
