"""Per-key rate limits: requests and tokens per minute, reserved at admission, settled after;
in process, or shared by every instance through Redis."""

from tokenmux.limits.concurrency import KeyConcurrency, Slot
from tokenmux.limits.memory import MemoryLimiter, Reservation
from tokenmux.limits.shared import SharedLimiter

__all__ = ["KeyConcurrency", "MemoryLimiter", "Reservation", "SharedLimiter", "Slot"]
