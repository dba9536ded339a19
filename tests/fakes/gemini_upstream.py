"""A fake Gemini API on loopback that holds the gateway to the official `google-genai` types.

Every request body is validated field by field against the SDK's pydantic models (`Content`,
`Tool`, `ToolConfig`, `GenerationConfig`, all forbidding unknown fields), and no unknown
top-level field is let through; a request that breaks them gets Gemini's own 400. Every answer,
whole or streamed, is validated with `GenerateContentResponse` before it is sent.

The last user text may be a command:

    @fail STATUS        answer STATUS with a Gemini error body (429 sends Retry-After: 1;
                        400 API_KEY_INVALID with @fail 400 key)
    @call NAME JSON     call function NAME with args JSON
    @calls2             a sentence, then two function calls at once (with a thought signature)
    @maxtokens          stop for MAX_TOKENS
    @safety             stop for SAFETY
    @blocked            block the prompt (no candidates)
    @fewer              one candidate only, whatever candidateCount asks
    @thinking           report thinking and cached tokens, with a thought part
    @midstream          (stream) a few words, then an error event
    @leak               answer 400 with the received key in the message

`models/{model}:batchEmbedContents` answers embeddings (tests/fakes/embeddings.py).

Otherwise it answers REPLY, or FINAL_ANSWER when the last turn brought function responses, as
many candidates as `candidateCount` asks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from google.genai import types
from pydantic import BaseModel, ValidationError

from tests.fakes.embeddings import gemini_batch
from tests.fakes.server import LoopbackServer, Received

REPLY = "Hello from the fake Gemini, happy to help"
FINAL_ANSWER = "It is sunny in Paris"
SIGNATURE = "c2lnbmF0dXJlLW9mLWEtdGhvdWdodA=="

_FIELDS: dict[str, Any] = {
    "contents": list[types.Content],
    "systemInstruction": types.Content,
    "tools": list[types.Tool],
    "toolConfig": types.ToolConfig,
    "generationConfig": types.GenerationConfig,
    "safetySettings": list[types.SafetySetting],
    "cachedContent": str,
}
_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
           504: "DEADLINE_EXCEEDED"}


@dataclass
class FakeGemini(LoopbackServer):
    api_key: str = "AIza-fake-gemini-secret-0123456789"
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # why requests were refused

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1beta"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{call}", self._handle)

    async def _embed(self, request: web.Request, model: str) -> web.Response:
        """Embeddings, as tests/fakes/embeddings.py describes."""
        if request.headers.get("x-goog-api-key") != self.api_key:
            return _error(400, "API key not valid.", reason="API_KEY_INVALID")
        status, answer = gemini_batch((await self.record(request)).body, model)
        if status == 400:
            self.rejected.append(answer["error"]["message"])
        return web.json_response(answer, status=status,
                                 headers={"Retry-After": "1"} if status == 429 else None)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        if method == "batchEmbedContents":
            return await self._embed(request, model)
        if method not in ("generateContent", "streamGenerateContent"):
            return _error(404, f"method {method!r} not found")
        stream = method == "streamGenerateContent"
        if stream and request.query.get("alt") != "sse":
            return _error(400, "this fake streams only with alt=sse")
        if request.headers.get("x-goog-api-key") != self.api_key or "key" in request.query:
            return _error(400, "API key not valid. Please pass a valid API key.",
                          reason="API_KEY_INVALID")
        body = (await self.record(request)).body
        problem = _invalid(body)
        if problem:
            self.rejected.append(problem)
            return _error(400, problem)
        command, _, arg = _last_user_text(body).partition(" ")
        if command == "@leak":
            return _error(400, f"bad key {request.headers.get('x-goog-api-key')}")
        if command == "@fail":
            status_text, _, detail = arg.partition(" ")
            status = int(status_text)
            if detail == "key":
                return _error(400, "API key not valid.", reason="API_KEY_INVALID")
            headers = {"Retry-After": "1"} if status == 429 else {}
            return _error(status, f"fake failure {status}", headers=headers)
        count = int((body.get("generationConfig") or {}).get("candidateCount") or 1)
        if command == "@fewer":
            count = 1
        answer = _answer(body, model, command, arg, count)
        if stream:
            return await _stream(request, answer, command)
        types.GenerateContentResponse.model_validate(answer)
        return web.json_response(answer)


def _error(status: int, message: str, *, reason: str | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message,
                             "status": _STATUS.get(status, "UNKNOWN")}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                             "reason": reason, "domain": "googleapis.com"}]
    return web.json_response({"error": error}, status=status, headers=headers)


def _invalid(body: dict[str, Any]) -> str | None:
    for name, value in body.items():
        if name not in _FIELDS:
            return f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.'
        schema = _FIELDS[name]
        try:
            if isinstance(schema, type) and issubclass(schema, BaseModel):
                schema.model_validate(value)
            elif schema is str:
                assert isinstance(value, str)
            else:
                [item_type] = schema.__args__
                if not isinstance(value, list):
                    return f"{name}: must be a list"
                for item in value:
                    item_type.model_validate(item)
        except ValidationError as exc:
            return f"{name}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
    contents = body.get("contents") or []
    if not contents:
        return "contents is not specified"
    for i, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            return f"contents[{i}].role must be user or model"
        if not content.get("parts"):
            return f"contents[{i}] must have at least one part"
        for part in content["parts"]:
            if "text" in part and not part["text"]:
                return f"contents[{i}]: a text part must not be empty"
            response = part.get("functionResponse")
            if response is not None and not isinstance(response.get("response"), dict):
                return f"contents[{i}]: functionResponse.response must be an object"
    return None


def _last_user_text(body: dict[str, Any]) -> str:
    for content in reversed(body["contents"]):
        if content["role"] != "user":
            continue
        texts = [p["text"] for p in content["parts"] if "text" in p]
        if texts:
            return texts[-1]
        if any("functionResponse" in p for p in content["parts"]):
            return "@function-responses"
    return ""


def _answer(body: dict[str, Any], model: str, command: str, arg: str,
            count: int) -> dict[str, Any]:
    reason = "STOP"
    parts: list[dict[str, Any]] = [{"text": REPLY}]
    if command == "@call":
        name, _, raw = arg.partition(" ")
        parts = [{"functionCall": {"name": name, "args": orjson.loads(raw or "{}")}}]
    elif command == "@calls2":
        parts = [{"text": "Let me look both up."},
                 {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                  "thoughtSignature": SIGNATURE},
                 {"functionCall": {"name": "get_time", "args": {"city": "Paris",
                                                                "format": "24h"}}}]
    elif command == "@function-responses":
        parts = [{"text": FINAL_ANSWER}]
    elif command == "@maxtokens":
        parts, reason = [{"text": "Cut off"}], "MAX_TOKENS"
    elif command == "@safety":
        parts, reason = [{"text": "I"}], "SAFETY"
    elif command == "@thinking":
        parts = [{"text": "Let me think about greetings.", "thought": True}, {"text": REPLY}]
    elif (body.get("generationConfig") or {}).get("responseMimeType") == "application/json":
        parts = [{"text": '{"answer": 42}'}]
    words = sum(len(p.get("text", "").split()) for p in parts if not p.get("thought"))
    usage: dict[str, Any] = {"promptTokenCount": 9 + 2 * len(body["contents"]),
                             "candidatesTokenCount": words * count}
    if command == "@thinking":
        usage.update(thoughtsTokenCount=30, cachedContentTokenCount=4)
    usage["totalTokenCount"] = (usage["promptTokenCount"] + usage["candidatesTokenCount"]
                                + usage.get("thoughtsTokenCount", 0))
    answer: dict[str, Any] = {"usageMetadata": usage, "modelVersion": model,
                              "responseId": "fake-response-1"}
    if command == "@blocked":
        answer["promptFeedback"] = {"blockReason": "SAFETY"}
        return answer
    answer["candidates"] = [{"content": {"role": "model", "parts": parts},
                             "finishReason": reason, "index": i} for i in range(count)]
    return answer


async def _stream(request: web.Request, answer: dict[str, Any],
                  command: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)

    async def send(event: dict[str, Any]) -> None:
        types.GenerateContentResponse.model_validate(event)
        await response.write(b"data: " + orjson.dumps(event) + b"\r\n\r\n")
        await asyncio.sleep(0)

    meta = {"modelVersion": answer["modelVersion"], "responseId": answer["responseId"]}
    if "candidates" not in answer:  # a blocked prompt: one event, no candidates
        await send(answer)
        await response.write_eof()
        return response
    # As Gemini does: text in pieces, each function call whole, the finish reason with the
    # last piece, and the full usage only at the end.
    for candidate in answer["candidates"]:
        pieces: list[dict[str, Any]] = []
        for part in candidate["content"]["parts"]:
            if "text" in part and not part.get("thought"):
                words = part["text"].split(" ")
                pieces += [{"text": " ".join(words[i:i + 2]) + (" " if i + 2 < len(words)
                                                                 else "")}
                           for i in range(0, len(words), 2)]
            else:
                pieces.append(part)
        for k, piece in enumerate(pieces):
            if command == "@midstream" and k == 2:
                await asyncio.sleep(0.1)  # what came so far reaches the client first
                await response.write(b"data: " + orjson.dumps({"error": {
                    "code": 503, "message": "The model is overloaded.",
                    "status": "UNAVAILABLE"}}) + b"\r\n\r\n")
                return response
            last = k == len(pieces) - 1
            event: dict[str, Any] = {**meta, "candidates": [{
                "content": {"role": "model", "parts": [piece]}, "index": candidate["index"],
                **({"finishReason": candidate["finishReason"]} if last else {})}]}
            event["usageMetadata"] = {"promptTokenCount": answer["usageMetadata"][
                "promptTokenCount"]}
            await send(event)
    await send({**meta, "usageMetadata": answer["usageMetadata"]})
    await response.write_eof()
    return response
