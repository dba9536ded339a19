"""Every failure the gateway reports, as one tree.

    GatewayError                      500 api_error
    ├── InvalidRequest                400 invalid_request_error
    │   ├── PayloadTooLarge           413 invalid_request_error / request_too_large
    │   ├── UnsupportedMediaType      415 invalid_request_error / unsupported_media_type
    │   ├── ExpectationFailed         417 invalid_request_error / expectation_failed
    │   └── HeadersTooLarge           431 invalid_request_error / request_header_too_large
    ├── Unauthenticated               401 invalid_request_error / invalid_api_key
    ├── ModelNotFound                 404 invalid_request_error / model_not_found
    ├── RouteNotFound                 404 invalid_request_error / not_found
    ├── MethodNotAllowed              405 invalid_request_error / method_not_allowed
    ├── MethodNotImplemented          501 invalid_request_error / method_not_implemented
    ├── ReadTimeout                   408 timeout / header_timeout | body_timeout
    ├── IdempotencyInProgress         409 invalid_request_error / idempotency_in_progress
    ├── IdempotencyKeyReused          422 invalid_request_error / idempotency_key_reused
    ├── Repeated                      the failure of the keyed request a repeat waited on
    ├── ConcurrencyLimited            429 requests / concurrency_limit_exceeded (+ Retry-After)
    ├── ServerBusy                    503 server_error / server_busy (+ Retry-After)
    ├── RateLimited                   429 requests|tokens / rate_limit_exceeded (+ Retry-After)
    ├── UpstreamRejected              the upstream's own 4xx, passed on (the client's mistake)
    ├── DeadlineExceeded              408 timeout / request_timeout (+ X-Timeout-* headers)
    ├── UpstreamFailed                502 upstream_error / bad_gateway
    ├── UpstreamTimeout               504 timeout / upstream_timeout
    ├── ShuttingDown                  503 api_error / shutting_down
    ├── LimitsUnavailable             503 api_error / limits_unavailable (+ Retry-After)
    ├── IdempotencyUnavailable        503 api_error / idempotency_unavailable (+ Retry-After)
    └── LedgerUnavailable             503 api_error / ledger_unavailable

Each class knows its HTTP status and its OpenAI `type` and `code`, so the HTTP edge renders any of
them the same way: `{"error": {"message", "type", "param", "code"}}` plus `headers()`. Library
exceptions are converted into these at the boundary where they happen (upstream client, config).
"""

from __future__ import annotations

import math
from typing import Any


class GatewayError(Exception):
    status = 500
    type = "api_error"
    code: str | None = "internal_error"
    # Set when the gateway has already retried as much as its policy allows: a client retrying
    # on top would only multiply the load on a failing upstream, so the answer says not to.
    retries_spent = False
    # Headers the answer carries whatever the error (rate-limit state, fallback headers), set
    # by whoever knows them on the way out.
    extra_headers: dict[str, str] | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code: str | None = None


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class Unauthenticated(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class RouteNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RateLimited(GatewayError):
    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, kind: str):
        super().__init__(message)
        self.retry_after = retry_after
        # OpenAI names the exhausted resource in `type`: "requests" or "tokens".
        self.type = kind

    def headers(self) -> dict[str, str]:
        return _retry_in(self.retry_after)


def _retry_in(seconds: float) -> dict[str, str]:
    # Retry-After is whole seconds; rounding down would invite a retry that fails again.
    return {"Retry-After": str(max(1, math.ceil(seconds))),
            "retry-after-ms": str(max(1, math.ceil(seconds * 1000)))}


class ChannelsAtQuota(GatewayError):
    """Every channel that could answer is at its upstream account's rate limit, for longer than
    the request's deadline could wait."""

    status = 429
    type = "rate_limit_error"
    code = "upstream_quota_exceeded"

    def __init__(self, message: str, *, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return _retry_in(self.retry_after)


class DeadlineExceeded(GatewayError):
    """The caller's whole-request deadline (`X-Timeout`) ran out."""

    status = 408
    type = "timeout"
    code = "request_timeout"

    def __init__(self, budget_ms: int, attempts: int, elapsed_ms: int):
        super().__init__(
            f"Total request timeout ({budget_ms}ms) exceeded after {attempts} channel attempts. "
            "Set X-Timeout header to adjust.")
        self.attempts = attempts
        self.elapsed_ms = elapsed_ms

    def body(self) -> dict[str, dict[str, str | None]]:
        # The documented body has no `param`; clients match it exactly.
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}

    def headers(self) -> dict[str, str]:
        # The SDKs retry a 408 by default, which would triple the caller's wait.
        return {"X-Timeout-Attempts": str(self.attempts),
                "X-Timeout-Elapsed-Ms": str(self.elapsed_ms), "x-should-retry": "false"}


class UpstreamRejected(GatewayError):
    """The upstream refused the request for a reason that lies in the request itself."""

    type = "invalid_request_error"
    code = None

    def __init__(self, message: str, *, status: int, param: str | None = None,
                 code: str | None = None, retry_after: str | None = None):
        super().__init__(message, param=param, code=code)
        self.status = status
        self.retry_after = retry_after
        if status == 429:
            self.type = "rate_limit_error"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": self.retry_after} if self.retry_after else {}


class UpstreamFailed(GatewayError):
    status = 502
    type = "upstream_error"
    code = "bad_gateway"

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable

    def headers(self) -> dict[str, str]:
        # A misconfigured channel will not heal by itself; say so, or the SDKs ask three times.
        return {} if self.retryable else {"x-should-retry": "false"}


class UpstreamTimeout(GatewayError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"


class UnsupportedMediaType(InvalidRequest):
    status = 415
    code = "unsupported_media_type"


class ExpectationFailed(InvalidRequest):
    status = 417
    code = "expectation_failed"


class HeadersTooLarge(InvalidRequest):
    status = 431
    code = "request_header_too_large"


class MethodNotImplemented(GatewayError):
    status = 501
    type = "invalid_request_error"
    code = "method_not_implemented"


class ReadTimeout(GatewayError):
    """The client took longer than the server's limit to send its headers or its body."""

    status = 408
    type = "timeout"
    code = "body_timeout"

    def headers(self) -> dict[str, str]:
        # The connection is closed after this answer; what was sent of the request is lost.
        return {"Connection": "close"}


class ConcurrencyLimited(GatewayError):
    status = 429
    type = "requests"
    code = "concurrency_limit_exceeded"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1", "retry-after-ms": "1000"}


class ServerBusy(GatewayError):
    status = 503
    type = "server_error"
    code = "server_busy"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1", "Connection": "close"}
class ShuttingDown(GatewayError):
    """The gateway is stopping and its grace for requests in flight has run out."""

    status = 503
    code = "shutting_down"


class LedgerUnavailable(GatewayError):
    """Neither the database nor the disk takes ledger rows and memory holds all it may: a
    request served now could not be billed, so none is served until one of them recovers."""

    status = 503
    code = "ledger_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class BudgetExhausted(GatewayError):
    """The key has spent its budget for the period: no retry helps before it ends, so the SDKs
    are told not to (they would retry a plain 429)."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"
    retries_spent = True


class LimitsUnavailable(GatewayError):
    """The shared store of rate limits does not answer and the config says to refuse rather
    than admit on each instance's guess (`redis_failure: closed`)."""

    status = 503
    code = "limits_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class IdempotencyInProgress(GatewayError):
    """The request with this key is still running and this repeat could not wait it out."""

    status = 409
    type = "invalid_request_error"
    code = "idempotency_in_progress"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class IdempotencyKeyReused(GatewayError):
    status = 422
    type = "invalid_request_error"
    code = "idempotency_key_reused"


class IdempotencyUnavailable(GatewayError):
    """The shared store of idempotency records does not answer: a keyed request is refused
    rather than risk running twice."""

    status = 503
    code = "idempotency_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class Repeated(GatewayError):
    """What the first of a keyed request's copies failed with, given to a copy that waited on
    it (here or on another instance): the same status, body and headers."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str]):
        error = body.get("error") or {}
        super().__init__(str(error.get("message") or ""), param=error.get("param"),
                         code=error.get("code"))
        self.status = status
        self.type = str(error.get("type") or GatewayError.type)
        self._body, self._headers = body, headers

    @classmethod
    def of(cls, original: GatewayError) -> Repeated:
        headers = original.headers()
        if original.retries_spent:
            headers["x-should-retry"] = "false"
        headers.update(original.extra_headers or {})
        return cls(original.status, original.body(), headers)

    def body(self) -> dict[str, Any]:
        return self._body

    def headers(self) -> dict[str, str]:
        return dict(self._headers)
