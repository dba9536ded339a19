"""What a key is: a random secret shown once, known to the gateway only by its SHA-256."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from tokenmux.routing.tiers import Tier

SECRET_PREFIX = "tm-"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as far as limits and the ledger care."""

    key_id: str
    name: str
    is_admin: bool = False
    rpm: int | None = None
    tpm: int | None = None
    tier: Tier = Tier.MEDIUM
    max_tier: Tier | None = None
    # Tried when a request names no `fallback_models` of its own (`fallback_enabled` may refuse
    # them); the timeout, milliseconds, is the request's `fallback_timeout` when it sends none.
    fallback_models: tuple[str, ...] = ()
    fallback_timeout_ms: int | None = None
    # Refuse, rather than drop, a sampling field a model does not take (as X-Strict-Params).
    strict_params: bool = False
    # The key's compression default (a strategy; None: none), its model and threshold.
    compression: str | None = None
    compression_model: str | None = None
    compression_threshold: int | None = None
    # What the key may spend per period, in ticks of 1e-10 USD (budgets/); None: no budget.
    budget: int | None = None
    budget_period: str = "total"  # "day" or "month" (UTC), or "total"
    # When the key stops working, in seconds since the epoch (compared with time.time() at
    # each request, so it takes effect to the second); None: never.
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def hash_key(secret: str) -> str:
    # Keys are 256 random bits, so a fast unsalted hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:10]
