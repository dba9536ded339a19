"""tokenmux: an OpenAI-compatible LLM gateway, and its Python SDK.

`from tokenmux import TokenMux` is the SDK (tokenmux.sdk). The gateway lives in the other
subpackages and needs the `server` extra; the SDK is loaded only when asked for, so the gateway
process never imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenmux.sdk import (
        APIConnectionError,
        APIError,
        APIStatusError,
        AsyncStream,
        AsyncTokenMux,
        AuthenticationError,
        BadRequestError,
        MissingAPIKeyError,
        NotFoundError,
        RateLimitError,
        RequestTimeoutError,
        Stream,
        StreamError,
        TokenMux,
        TokenMuxError,
    )

__version__ = "0.1.0"
__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "AsyncStream",
    "AsyncTokenMux",
    "AuthenticationError",
    "BadRequestError",
    "MissingAPIKeyError",
    "NotFoundError",
    "RateLimitError",
    "RequestTimeoutError",
    "Stream",
    "StreamError",
    "TokenMux",
    "TokenMuxError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("tokenmux.sdk"), name)
    raise AttributeError(f"module 'tokenmux' has no attribute {name!r}")
