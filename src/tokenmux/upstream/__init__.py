"""I/O with upstream providers: one pooled HTTP client, an SSE reader, and the exchange that
drives a provider's pure adapter over them."""

from tokenmux.upstream.exchange import HttpProvider
from tokenmux.upstream.pool import new_session

__all__ = ["HttpProvider", "new_session"]
