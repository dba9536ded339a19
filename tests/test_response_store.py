"""The in-process store of completed responses stays within its bounds: entries, bytes, time."""

from __future__ import annotations

import asyncio
import time

from tokenmux.api.response_store import MAX_RECORD_BYTES, MemoryResponses


def test_the_oldest_leave_first_past_the_entry_and_byte_bounds():
    async def run() -> None:
        store = MemoryResponses(entries=3, size=1000, ttl=60)
        for i in range(5):
            assert await store.put("key", f"resp_{i}", b"x" * 100)
        assert [await store.get("key", f"resp_{i}") for i in range(5)] == [
            None, None, b"x" * 100, b"x" * 100, b"x" * 100]
        assert await store.put("key", "big", b"y" * 900)  # over the bytes: the others go
        assert await store.get("key", "big") == b"y" * 900
        # 1,200 bytes: the two oldest leave, and 1,000 stay.
        assert await store.get("key", "resp_3") is None
        assert await store.get("key", "resp_4") == b"x" * 100
        assert await store.get("other-key", "big") is None  # kept per key

    asyncio.run(run())


def test_a_record_expires_and_an_oversized_one_is_not_kept():
    async def run() -> None:
        store = MemoryResponses(ttl=0.2)
        assert await store.put("key", "resp_a", b"{}")
        assert await store.get("key", "resp_a") == b"{}"
        started = time.monotonic()
        while await store.get("key", "resp_a") is not None:
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.05)
        assert time.monotonic() - started >= 0.15
        assert not await store.put("key", "resp_b", b"z" * (MAX_RECORD_BYTES + 1))
        assert await store.get("key", "resp_b") is None
        # A conversation of 4 MiB is kept, as the README says.
        longest = b"z" * (4 * 1024 * 1024)
        assert await store.put("key", "resp_c", longest)
        assert await store.get("key", "resp_c") == longest

    asyncio.run(run())
