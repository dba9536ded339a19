"""Request-level fallbacks: which models a request falls back to (its `fallback_*` fields, else
its key's defaults), and the `X-Fallback-*` headers that say what came of them."""

from __future__ import annotations

from tokenmux.api.chat import ChatRequest
from tokenmux.auth import Principal
from tokenmux.routing.plan import FallbackModels
from tokenmux.routing.retry import Attempts

DEFAULT_FALLBACK_TIMEOUT_MS = 30_000


def chosen(request: ChatRequest, principal: Principal) -> FallbackModels | None:
    """The request's fallback models, else its key's; None when there are none, or when the
    request turned them off with `fallback_enabled: false`."""
    asked = request.fallbacks
    models, strict = principal.fallback_models, False
    timeout = principal.fallback_timeout_ms
    if asked is not None:
        if asked.enabled is False:
            return None
        if asked.models is not None:
            models, strict = tuple(asked.models), True
        timeout = asked.timeout_ms or timeout
    if not models:
        return None
    return FallbackModels(models, (timeout or DEFAULT_FALLBACK_TIMEOUT_MS) / 1000, strict)


def headers(requested: str, model: str, attempts: Attempts, answered: bool) -> dict[str, str]:
    """`X-Fallback-*` and `X-Actual-Model` for a request that asked for fallback models: on an
    answer, whether another model gave it; on an error, whether another model was tried (the
    actual model is then the last one tried, whose failure the error reports)."""
    route = attempts.route
    if route is None:  # refused before any attempt
        return {"X-Fallback-Used": "false"}
    used = route.model != model or (
        not answered and any(failed != model for failed, _ in attempts.failures))
    headers = {"X-Fallback-Used": "true" if used else "false", "X-Actual-Model": route.model}
    if used:
        headers["X-Fallback-From"] = requested
        # Why the last model before this one was left; no failure at all: its channels were
        # skipped (breaker open, or saturated).
        headers["X-Fallback-Reason"] = next(
            (why for failed, why in reversed(attempts.failures) if failed != route.model),
            "unavailable")
    return headers
