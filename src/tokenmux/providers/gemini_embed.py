"""Embeddings on a Gemini-kind channel: OpenAI's embeddings request as `batchEmbedContents`.

Pure translation, no I/O. Each input is one request of the batch, `{model, content: {parts:
[{text}]}}`, with `dimensions` as its `outputDimensionality`; the answer's `embeddings[i].values`
become OpenAI's `data[i].embedding` (base64 made by the gateway when asked, see vectors.py).
Gemini reads text only: token arrays are refused with a 400, and so is any field it has no
equivalent of. Its answer may carry no usage: then the gateway counts the inputs itself.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenmux.errors import InvalidRequest, UpstreamFailed
from tokenmux.providers.base import EmbedCall, UpstreamRequest, Usage
from tokenmux.providers.translate import check_fields, load_answer
from tokenmux.providers.vectors import embedding_list

_HANDLED = frozenset({"model", "input", "dimensions", "encoding_format",
                      "user"})  # the ledger keeps `user`; Gemini has no such field


def embed_request(base: str, headers: dict[str, str], ignored: frozenset[str],
                  call: EmbedCall) -> UpstreamRequest:
    request, route = call.request, call.route
    check_fields(request.body, route, _HANDLED, {}, ignored, "Gemini")
    if request.texts is None:
        raise InvalidRequest(f"Token arrays cannot go to model '{route.model}' (a Gemini "
                             "channel embeds text only); send the inputs as strings.",
                             param="input")
    model = f"models/{route.upstream_model}"
    each: dict[str, Any] = {}
    if request.dimensions is not None:
        each["outputDimensionality"] = request.dimensions
    body = {"requests": [{"model": model, "content": {"parts": [{"text": text}]}, **each}
                         for text in request.texts]}
    return UpstreamRequest(f"{base}{route.upstream_model}:batchEmbedContents", headers,
                           orjson.dumps(body))


def embed_answer(raw: bytes, call: EmbedCall) -> tuple[dict[str, Any], Usage | None]:
    route = call.route
    answer = load_answer(raw, route)
    embeddings = answer.get("embeddings") if isinstance(answer, dict) else None
    if not isinstance(embeddings, list) or len(embeddings) != call.request.count:
        raise UpstreamFailed(f"The upstream {route.provider!r} answered without one embedding "
                             "per input.")
    vectors = []
    for embedding in embeddings:
        values = embedding.get("values") if isinstance(embedding, dict) else None
        if not isinstance(values, list):
            raise UpstreamFailed(f"The upstream {route.provider!r} sent an embedding without "
                                 "values.")
        vectors.append(values)
    usage = None
    metadata = answer.get("usageMetadata")
    if isinstance(metadata, dict) and metadata.get("promptTokenCount") is not None:
        usage = Usage(prompt_tokens=int(metadata["promptTokenCount"]))
    return embedding_list(vectors, call.request, route, usage), usage
