"""The tokenmux client library. It imports nothing from the gateway's side."""

from tokenmux.sdk.client import AsyncTokenMux, TokenMux
from tokenmux.sdk.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    MissingAPIKeyError,
    NotFoundError,
    RateLimitError,
    RequestTimeoutError,
    StreamError,
    TokenMuxError,
)
from tokenmux.sdk.streaming import AsyncStream, Stream

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
]
