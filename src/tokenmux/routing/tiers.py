"""Service tiers: what a caller trades between speed and cost.

    slow       the cheapest healthy channel; waits for it in the queue rather than spilling over
    medium     channel priority, weighted at random among equals (the default)
    fast       the channel with the lowest recent latency
    ludicrous  as fast, and hedged: a second channel starts when the first is slower than usual

A key has a default tier and may be capped at a highest one; the `X-Tier` header picks per
request, within the cap. When a channel's concurrency limit is reached, waiting requests are
admitted by tier first, then by deadline.
"""

from __future__ import annotations

from enum import IntEnum

from tokenmux.errors import InvalidRequest


class Tier(IntEnum):
    # The value is the admission rank: higher goes first.
    SLOW = 0
    MEDIUM = 1
    FAST = 2
    LUDICROUS = 3


NAMES = tuple(tier.name.lower() for tier in Tier)  # NAMES[tier] is the tier's name, cheaply
_BY_NAME = {NAMES[tier]: tier for tier in Tier}


def tier_named(name: str) -> Tier:
    return _BY_NAME[name]


def requested_tier(header: str | None, default: Tier, cap: Tier | None) -> Tier:
    """The tier a request runs at: the header's, else the key's default, never above the cap."""
    tier = default
    if header is not None:
        found = _BY_NAME.get(header.strip().lower())
        if found is None:
            raise InvalidRequest(f"X-Tier must be one of {', '.join(NAMES)}; got {header!r}.",
                                 code="invalid_tier")
        tier = found
    # A capped key asking for more still gets an answer, at the best tier it is allowed; the
    # X-TokenMux-Tier response header says which.
    return tier if cap is None or tier <= cap else cap
