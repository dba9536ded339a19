"""An OpenAI embeddings answer made from a provider's vectors, for kinds that answer in floats.

`encoding_format: base64` is the vector's float32 values, little-endian, base64-encoded: what
OpenAI sends, and what the `openai` SDK decodes (it asks for base64 by default).
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Sequence
from typing import Any

from tokenmux.api.embeddings import EmbeddingRequest
from tokenmux.providers.base import Usage
from tokenmux.routing.catalog import Route


def as_base64(values: Sequence[float]) -> str:
    floats = array("f", values)
    if sys.byteorder == "big":
        floats.byteswap()
    return base64.b64encode(floats.tobytes()).decode("ascii")


def embedding_list(vectors: list[list[float]], request: EmbeddingRequest, route: Route,
                   usage: Usage | None) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i,
             "embedding": as_base64(vector) if request.base64 else vector}
            for i, vector in enumerate(vectors)]
    body: dict[str, Any] = {"object": "list", "data": data, "model": route.model}
    if usage is not None:
        body["usage"] = embedding_usage(usage)
    return body


def embedding_usage(usage: Usage) -> dict[str, int]:
    """OpenAI's usage of an embeddings answer: what was read, and nothing written."""
    return {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens}
