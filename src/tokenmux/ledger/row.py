"""What one request leaves in the ledger, and the plain record a row travels as.

A record is the row's database columns plus `_pricing` (what the writer needs to price it in its
own thread, so the request path does not) and, for a checkpoint, `_checkpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokenmux.ids import unique
from tokenmux.routing.catalog import Route

# A stream cut by a crash is billed up to its last checkpoint: status 500, error_code
# "interrupted", usage_source "checkpoint" (its counts are estimates from the text's length).
INTERRUPTED_STATUS = 500
INTERRUPTED = "interrupted"
CHECKPOINT_SOURCE = "checkpoint"
# The kind of a row that bills a request's summariser call; a request's own row has none.
COMPRESSION = "compression"
# A keyed request answered from another one's outcome (README, "Retry-safe requests"): unbilled,
# no tokens, cost 0, `replay_of` naming the row of the request that did the work.
REPLAY_SOURCE = "replay"


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
    dropped_params: str | None = None  # the sampling hints left out, comma-separated
    kind: str | None = None  # None: the request itself; "compression": its summariser's call
    parent_id: str | None = None  # a summariser's row: the id of its request's row
    tokens_before: int | None = None  # a compressed request: its conversation, in tokens
    tokens_after: int | None = None  # and as it went upstream
    replay_of: str | None = None  # the billed row whose answer this repeat was given
    door: str = "chat"  # the API the request came in through (pipeline.Inbound.door)
    hedges: int = 0  # of the attempts, those started beside a slow one (not a column)
    # Priced already (a key with a budget is charged this very amount); None: the writer prices
    cost_usd: Decimal | None = None

    def as_record(self) -> dict[str, Any]:
        route = self.route
        record = {
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
            "latency_ms": round(self.latency_ms, 3),
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 3),
            "dropped_params": self.dropped_params,
            "kind": self.kind,
            "parent_id": self.parent_id,
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
            "replay_of": self.replay_of,
            "door": self.door,
            "_pricing": None if route is None else pricing(route),
        } | ({"cost_usd": 0} if self.replay_of is not None else
             {"cost_usd": self.cost_usd} if self.cost_usd is not None else {})
        if self.hedges:
            record["_hedges"] = self.hedges
        return record


def door_of(record: dict[str, Any]) -> str:
    """The door a record counts under in the metrics and traces: a summariser's call is
    `compression`; rows older than the door column came in through chat."""
    return COMPRESSION if record.get("kind") == COMPRESSION else record.get("door", "chat")


def pricing(route: Route) -> dict[str, Any]:
    price = route.price
    return {
        "price": None if price is None else [price.input, price.output, price.cached_input],
        "price_provider": route.price_provider,
        "base_url": route.base_url,
    }
