"""What one request leaves in the ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokenmux.ids import unique
from tokenmux.routing.catalog import Route


@dataclass(slots=True)
class UsageRow:
    request_id: str
    key_id: str | None
    key_name: str | None
    end_user: str | None
    requested_model: str | None
    route: Route | None  # the channel of the last attempt
    attempts: int
    tier: str
    queue_ms: float  # time spent waiting for a channel's concurrency slot
    stream: bool
    status: int
    error_code: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    usage_source: str
    latency_ms: float
    ttft_ms: float | None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: str = field(default_factory=unique)

    def as_record(self, cost: Decimal | None) -> dict[str, Any]:
        route = self.route
        return {
            "id": self.id,
            "created_at": self.created_at,
            "request_id": self.request_id,
            "key_id": self.key_id,
            "key_name": self.key_name,
            "end_user": self.end_user,
            "requested_model": self.requested_model,
            "model": route.model if route else None,
            "provider": route.provider if route else None,
            "upstream_model": route.upstream_model if route else None,
            "attempts": self.attempts,
            "tier": self.tier,
            "queue_ms": round(self.queue_ms, 3),
            "stream": self.stream,
            "status": self.status,
            "error_code": self.error_code,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "usage_source": self.usage_source,
            "cost_usd": cost,
            "latency_ms": round(self.latency_ms, 3),
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 3),
        }
