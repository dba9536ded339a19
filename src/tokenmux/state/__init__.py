"""State shared by the gateway's instances, and the connections it lives behind."""

from tokenmux.state.redis_pool import RedisPool

__all__ = ["RedisPool"]
