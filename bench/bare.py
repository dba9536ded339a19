"""The floor: the least a Python proxy on aiohttp can do for a chat completion.

Parses the JSON, forwards it with one pooled aiohttp client, parses the answer and sends it back
(a stream is relayed chunk by chunk). No auth, no limits, no routing, no ledger: whatever the
gateway costs above this is what its features cost. Same loop (uvloop) and JSON library (orjson)
as the gateway, so the comparison is of the work, not of the parts.

    python bench/bare.py --port 19103 --upstream http://127.0.0.1:19101
"""

from __future__ import annotations

import argparse

import aiohttp
import orjson
import uvloop
from aiohttp import web

# The bench's two models, as the gateway's config maps them onto the static upstream.
ROUTES = {"bench-json": "/json/v1/chat/completions", "bench-sse": "/sse/v1/chat/completions"}


def app(upstream: str) -> web.Application:
    async def session(app: web.Application):
        app["client"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app["client"].close()

    async def chat(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        model, body["model"] = body["model"], "static-model"
        async with request.app["client"].post(upstream + ROUTES[model], data=orjson.dumps(body),
                                              headers={"Content-Type": "application/json"}) as up:
            if body.get("stream"):
                out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await out.prepare(request)
                async for chunk in up.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out
            answer = orjson.loads(await up.read())
        answer["model"] = model
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    application = web.Application()
    application.router.add_post("/v1/chat/completions", chat)
    application.cleanup_ctx.append(session)
    return application


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    web.run_app(app(args.upstream), host="127.0.0.1", port=args.port, access_log=None,
                print=None, loop=uvloop.new_event_loop())
