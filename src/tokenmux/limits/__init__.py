"""Per-key rate limits: requests and tokens per minute, reserved at admission, settled after."""

from tokenmux.limits.concurrency import KeyConcurrency, Slot
from tokenmux.limits.memory import MemoryLimiter, Reservation

__all__ = ["KeyConcurrency", "MemoryLimiter", "Reservation", "Slot"]
