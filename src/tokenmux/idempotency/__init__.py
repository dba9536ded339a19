"""Retry-safe requests: a request with an idempotency key runs once, is billed once, and its
copies get its answer (README, "Retry-safe requests").

The key is the request's `Idempotency-Key` or `X-Request-Id` (equal when both are sent), in
the scope of the API key; a request with neither pays nothing for any of this. The records
live in a store chosen once at start: in process (memory.py), or in Redis (redis.py).
"""

from __future__ import annotations

from tokenmux.config import Config
from tokenmux.errors import InvalidRequest
from tokenmux.idempotency.memory import MemoryStore
from tokenmux.idempotency.redis import RedisStore
from tokenmux.idempotency.runs import REPLAYED, Keyed, Runs
from tokenmux.idempotency.store import Store
from tokenmux.ids import is_client_id
from tokenmux.state import RedisPool

__all__ = ["REPLAYED", "Keyed", "Runs", "key_of", "runs_for"]


def key_of(request_id: str | None, idempotency_key: str | None) -> str | None:
    """The request's idempotency key, from its X-Request-Id and Idempotency-Key headers; an
    X-Request-Id that is not an id is replaced by one of the gateway's, and keys nothing."""
    if idempotency_key is None:
        return request_id if request_id is not None and is_client_id(request_id) else None
    if request_id is not None and request_id != idempotency_key:
        raise InvalidRequest("X-Request-Id and Idempotency-Key must be equal when both are "
                             "sent.", param="Idempotency-Key", code="idempotency_key_mismatch")
    if not is_client_id(idempotency_key):
        raise InvalidRequest("Idempotency-Key must be 1 to 128 letters, digits or `._:-`.",
                             param="Idempotency-Key", code="invalid_idempotency_key")
    return idempotency_key


def runs_for(config: Config, redis: RedisPool | None) -> tuple[Runs, RedisStore | None]:
    """The keyed runs of a gateway, on the store its config names."""
    shared = None if redis is None else RedisStore(redis, config.idempotency)
    store: Store = shared if shared is not None else MemoryStore(config.idempotency)
    return Runs(store, config.idempotency), shared
