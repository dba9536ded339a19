"""The fakes' embeddings endpoints: OpenAI's `POST /v1/embeddings` and Gemini's
`models/{model}:batchEmbedContents`, each validating what it receives with its provider's SDK
types and answering in its exact wire format.

Vectors are deterministic: `vector(text, dims)` for a text, `vector(str(tokens), dims)` for a
token array, with values k/128 (exact in float32, so a base64 round trip loses nothing). A text
input may be a command:

    @fail STATUS   answer STATUS with the provider's error body (429 with Retry-After: 1)
    @stall SECONDS (OpenAI) wait that long before answering

OpenAI's usage counts a text's words and a token array's tokens; Gemini's answer has no usage,
as its reference documents.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any, get_args, get_type_hints

from google.genai import types
from openai.types import EmbeddingCreateParams
from pydantic import ConfigDict, TypeAdapter, ValidationError

from tests.fakes.server import drain

DEFAULT_DIMENSIONS = 8
_OPENAI = TypeAdapter(tuple[EmbeddingCreateParams], config=ConfigDict(extra="forbid"))
# The SDK's `input` union, member by member: pydantic takes a lazy iterable branch as matched
# before its items are seen, so each member is tried whole, in the SDK's order.
_INPUTS = [TypeAdapter(member) for member in get_args(get_args(
    get_type_hints(EmbeddingCreateParams, include_extras=True)["input"])[0])]
_GEMINI_REQUEST_FIELDS = {"model", "content", "taskType", "title", "outputDimensionality"}


def vector(seed: str, dims: int = DEFAULT_DIMENSIONS) -> list[float]:
    digest = b""
    while len(digest) < dims:
        digest += hashlib.sha256(f"{seed}/{len(digest)}".encode()).digest()
    return [(byte - 128) / 128 for byte in digest[:dims]]


def stall_of(body: dict[str, Any]) -> float:
    """The seconds an OpenAI request's `@stall` asks the fake to wait (0: none)."""
    first = body.get("input")
    first = first[0] if isinstance(first, list) and first else first
    if isinstance(first, str) and first.startswith("@stall "):
        return float(first.split()[1])
    return 0.0


def openai_embeddings(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """OpenAI's answer to BODY: (status, JSON)."""
    try:
        drain(_OPENAI.validate_python(({**body, "input": "checked below"},)))
    except ValidationError as exc:
        return 400, _openai_error("invalid request: " + "; ".join(
            f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors()[:3]))
    if not any(_fits(member, body.get("input")) for member in _INPUTS):
        return 400, _openai_error("invalid request: 'input' is none of the SDK's input types")
    raw = body["input"]
    inputs: list[Any] = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) \
        else list(raw)
    if isinstance(inputs[0], str) and inputs[0].startswith("@fail "):
        status = int(inputs[0].split()[1])
        return status, _openai_error(f"fake failure {status}")
    dims = body.get("dimensions") or DEFAULT_DIMENSIONS
    data, tokens = [], 0
    for i, item in enumerate(inputs):
        values = vector(item if isinstance(item, str) else str(item), dims)
        tokens += len(item.split()) if isinstance(item, str) else len(item)
        encoded: Any = values
        if body.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{dims}f", *values)).decode()
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    return 200, {"object": "list", "data": data, "model": body["model"],
                 "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def gemini_batch(body: dict[str, Any], model: str) -> tuple[int, dict[str, Any]]:
    """Gemini's answer to a batchEmbedContents BODY for MODEL: (status, JSON)."""
    if set(body) != {"requests"} or not isinstance(body["requests"], list) \
            or not body["requests"]:
        return 400, _gemini_error(400, "requests is required, and the only field")
    vectors = []
    for i, each in enumerate(body["requests"]):
        if unknown := set(each) - _GEMINI_REQUEST_FIELDS:
            return 400, _gemini_error(400, f'requests[{i}]: Unknown name "{unknown.pop()}"')
        if each.get("model") != f"models/{model}":
            return 400, _gemini_error(400, f"requests[{i}].model must be models/{model}")
        try:
            content = types.Content.model_validate(each.get("content"))
            config = types.EmbedContentConfig.model_validate(
                {"output_dimensionality": each.get("outputDimensionality")})
        except ValidationError as exc:
            return 400, _gemini_error(400, f"requests[{i}]: {exc.errors()[0]['msg']}")
        texts = [part.text for part in content.parts or () if part.text]
        if len(texts) != 1 or len(content.parts or ()) != 1:
            return 400, _gemini_error(400, f"requests[{i}].content must be one text part")
        if texts[0].startswith("@fail "):
            status = int(texts[0].split()[1])
            return status, _gemini_error(status, f"fake failure {status}")
        vectors.append(vector(texts[0], config.output_dimensionality or DEFAULT_DIMENSIONS))
    answer = {"embeddings": [{"values": values} for values in vectors]}
    types.EmbedContentResponse.model_validate(answer)
    return 200, answer


def _fits(member: TypeAdapter[Any], value: Any) -> bool:
    try:
        drain(member.validate_python(value))
    except ValidationError:
        return False
    return True


def _openai_error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": "fake_invalid_request"}}


_STATUS = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
           503: "UNAVAILABLE"}


def _gemini_error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message,
                      "status": _STATUS.get(status, "UNKNOWN")}}
