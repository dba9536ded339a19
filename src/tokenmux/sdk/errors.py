"""The SDK's errors, each carrying the status, the error body and the request id.

    TokenMuxError
    ├── MissingAPIKeyError            no key given and none in TOKENMUX_API_KEY
    └── APIError                      anything the gateway or the wire did wrong
        ├── APIConnectionError        the gateway could not be reached (or timed out)
        ├── StreamError               a stream ended with an error event after it began
        └── APIStatusError            an HTTP error status
            ├── BadRequestError       400, 413, 422
            ├── AuthenticationError   401
            ├── NotFoundError         404
            ├── RequestTimeoutError   408: the request's deadline ran out (attempts, elapsed_ms)
            └── RateLimitError        429 (retry_after)

The official openai package's exceptions are converted into these where they are raised.
"""

from __future__ import annotations

from typing import Any

import openai


class TokenMuxError(Exception):
    pass


class MissingAPIKeyError(TokenMuxError):
    pass


class APIError(TokenMuxError):
    def __init__(self, message: str, *, body: Any = None, request_id: str | None = None):
        super().__init__(message)
        self.message = message
        self.body = body
        self.request_id = request_id
        error = body.get("error") if isinstance(body, dict) else None
        self.code: str | None = error.get("code") if isinstance(error, dict) else None
        self.param: str | None = error.get("param") if isinstance(error, dict) else None
        self.type: str | None = error.get("type") if isinstance(error, dict) else None


class APIConnectionError(APIError):
    pass


class StreamError(APIError):
    pass


class APIStatusError(APIError):
    def __init__(self, message: str, *, status_code: int, headers: Any, body: Any,
                 request_id: str | None):
        super().__init__(message, body=body, request_id=request_id)
        self.status_code = status_code
        self.headers = headers


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    @property
    def retry_after(self) -> float | None:
        """Seconds the gateway asked to wait, from `retry-after-ms` or `Retry-After`."""
        if (ms := self.headers.get("retry-after-ms")) is not None:
            return float(ms) / 1000
        value = self.headers.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class RequestTimeoutError(APIStatusError):
    @property
    def attempts(self) -> int | None:
        value = self.headers.get("x-timeout-attempts")
        return int(value) if value is not None else None

    @property
    def elapsed_ms(self) -> int | None:
        value = self.headers.get("x-timeout-elapsed-ms")
        return int(value) if value is not None else None


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError, 413: BadRequestError, 422: BadRequestError,
    401: AuthenticationError, 404: NotFoundError, 408: RequestTimeoutError, 429: RateLimitError,
}


def convert(exc: openai.OpenAIError) -> TokenMuxError:
    """The most specific TokenMux error for an exception of the openai package."""
    if isinstance(exc, openai.APIStatusError):
        response = exc.response
        kind = _BY_STATUS.get(response.status_code, APIStatusError)
        return kind(exc.message, status_code=response.status_code, headers=response.headers,
                    body=_body(exc), request_id=response.headers.get("x-request-id"))
    if isinstance(exc, openai.APIConnectionError):
        return APIConnectionError(exc.message)
    if isinstance(exc, openai.APIError):
        return StreamError(exc.message, body=_body(exc))
    return TokenMuxError(str(exc))


def _body(exc: openai.APIError) -> Any:
    body = exc.body
    # The openai package hands over the inner error object; keep the wire's whole shape.
    if isinstance(body, dict) and "error" not in body:
        return {"error": body}
    return body
