"""A channel's concurrency limit, with a queue that admits the waiting by tier, then deadline."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class Gate:
    __slots__ = ("_counter", "_waiting", "busy", "limit")

    def __init__(self, limit: int):
        self.limit = limit
        self.busy = 0
        # (-tier rank, deadline, arrival) orders the heap: best tier, then the most urgent.
        self._waiting: list[tuple[int, float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    def free(self) -> bool:
        return self.busy < self.limit and not self._waiting

    def queued(self) -> int:
        """How many wait for a slot now (read at a metrics scrape, not on the request path)."""
        return sum(1 for *_, waiter in self._waiting if not waiter.done())

    def try_enter(self) -> bool:
        if self.free():
            self.busy += 1
            return True
        return False

    async def enter(self, rank: int, deadline: float) -> None:
        """Waits for a slot; the caller bounds the wait (its deadline) and may be cancelled."""
        if self.try_enter():
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (-rank, deadline, next(self._counter), waiter))
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as the wait ended: pass it on.
                self.leave()
            else:
                waiter.cancel()  # still queued; leave() skips it when its turn comes
            raise

    def leave(self) -> None:
        while self._waiting:
            *_, waiter = heapq.heappop(self._waiting)
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter; busy stays as it is
                return
        self.busy -= 1
