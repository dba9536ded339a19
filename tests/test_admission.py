"""A channel's concurrency gate, on its own event loop: at most `limit` inside, and the waiting
let in by tier (`ludicrous` first), then by the nearest deadline, then by arrival; a waiter
that gives up never takes a slot. The gateway-level tests (tests/test_tiers.py) show the same
through real requests, with wide margins."""

from __future__ import annotations

import asyncio

import pytest

from tokenmux.routing.admission import Gate
from tokenmux.routing.tiers import Tier


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_the_gate_lets_in_its_limit_and_no_more():
    gate = Gate(2)
    assert gate.free() and gate.try_enter()
    assert gate.free() and gate.try_enter()
    assert not gate.free() and not gate.try_enter()
    assert gate.busy == 2
    gate.leave()
    assert gate.free() and gate.busy == 1


@pytest.mark.parametrize("limit", [1, 2])
def test_the_waiting_go_in_by_tier_then_deadline_then_arrival(limit):
    async def scenario() -> list[str]:
        gate = Gate(limit)
        for _ in range(limit):
            assert gate.try_enter()
        order: list[str] = []

        async def wait(name: str, tier: Tier, deadline: float) -> None:
            await gate.enter(tier, deadline)
            order.append(name)

        arrivals = [("slow", Tier.SLOW, 1.0), ("medium-late", Tier.MEDIUM, 9.0),
                    ("medium-soon", Tier.MEDIUM, 5.0), ("ludicrous", Tier.LUDICROUS, 9.0),
                    ("medium-soon-second", Tier.MEDIUM, 5.0), ("fast", Tier.FAST, 9.0)]
        tasks = []
        for name, tier, deadline in arrivals:
            tasks.append(asyncio.create_task(wait(name, tier, deadline)))
            await settle()  # queued in this order
        assert order == [] and not gate.free()
        for _ in arrivals:
            gate.leave()  # one slot handed over at a time
            await settle()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        # Every slot went to a waiter; the last ones out leave the gate empty.
        assert gate.busy == limit
        for _ in range(limit):
            gate.leave()
        assert gate.busy == 0 and gate.free()
        return order

    assert asyncio.run(scenario()) == ["ludicrous", "fast", "medium-soon", "medium-soon-second",
                                       "medium-late", "slow"]


def test_a_waiter_that_gives_up_never_takes_a_slot():
    async def scenario() -> None:
        gate = Gate(1)
        assert gate.try_enter()
        quitter = asyncio.create_task(gate.enter(Tier.LUDICROUS, 1.0))
        stayer = asyncio.create_task(gate.enter(Tier.SLOW, 9.0))
        await settle()
        quitter.cancel()
        await settle()
        gate.leave()  # the slot skips the cancelled waiter
        await asyncio.wait_for(stayer, 5)
        assert gate.busy == 1 and not gate.free()
        gate.leave()
        assert gate.busy == 0

    asyncio.run(scenario())


def test_a_free_gate_lets_a_caller_straight_in():
    async def scenario() -> None:
        gate = Gate(1)
        await asyncio.wait_for(gate.enter(Tier.SLOW, 1.0), 5)
        assert gate.busy == 1 and not gate.free()

    asyncio.run(scenario())
