"""A channel's upstream quota: the requests and tokens per minute its provider account allows
(`rpm` and `tpm` on the channel in the config).

An attempt holds its share before it is sent, in buckets like the keys' own (limits/: in
process, or in Redis for a fleet, where every instance draws on the same one), so that a channel
at its quota is passed over for the next in the plan instead of being sent a request its
upstream would refuse with a 429. When every channel of the plan is at its quota, the request
waits for the first to have room if its deadline allows, and is answered 429 otherwise. The
answering attempt's tokens are settled with the real count; a failed attempt keeps its hold, as
its upstream counted it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # limits/ needs the keys, which need routing/: no import at run time
    from tokenmux.limits.memory import Reservation, Shortfall


@dataclass(frozen=True, slots=True)
class Quota:
    name: str  # the buckets' name, apart from every key's: "channel:" + provider/upstream model
    rpm: int | None
    tpm: int | None


class Holder(Protocol):
    """The limiter whose buckets hold the quotas (limits.MemoryLimiter or SharedLimiter)."""

    async def hold(self, name: str, rpm: int | None, tpm: int | None,
                   estimated_tokens: int) -> Reservation | Shortfall: ...


class QuotaSpent(Exception):
    """An attempt not sent: its channel is at its quota for WAIT seconds more."""

    def __init__(self, wait: float):
        super().__init__(wait)
        self.wait = wait
