"""Per-key rate limits: requests and tokens per minute, reserved at admission, settled after."""

from tokenmux.limits.memory import MemoryLimiter, Reservation

__all__ = ["MemoryLimiter", "Reservation"]
