"""Unknown keys arriving in every turn of the event loop, so that some arrive in the very turn a
reread of the keys ends: each is refused, the loop is never held, and a flood of them costs the
database a bounded number of reads. Run in this process on a real SQLite database, because the
window is one turn of the loop wide and a gateway process cannot be aimed at it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import event

from tokenmux.auth import KeyCache
from tokenmux.auth.cache import MISS_REFRESH_GAP
from tokenmux.auth.records import create_key
from tokenmux.db import connect
from tokenmux.errors import Unauthenticated

FLOOD_SECONDS = 2.0


async def _flood(cache: KeyCache, engine: Any) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[Any]] = []
    stop = loop.time() + FLOOD_SECONDS

    def tick() -> None:
        # A task made in this turn takes its first step in the next one, behind whatever this
        # turn scheduled before it: in some turns, just behind the step that ends a reread.
        if loop.time() < stop:
            tasks.append(asyncio.ensure_future(cache.authenticate("Bearer tm-not-a-key", None)))
            loop.call_soon(tick)

    loop.call_soon(tick)
    await asyncio.sleep(FLOOD_SECONDS)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    # A key created once the flood is over works on its first request.
    secret, _ = create_key(engine, "after-the-flood")
    principal = await cache.authenticate(f"Bearer {secret}", None)
    return {"results": results, "principal": principal.name}


def test_unknown_keys_in_every_turn_are_refused_and_never_hold_the_loop(tmp_path: Path):
    engine = connect(str(tmp_path / "keys.sqlite"))
    reads = 0

    @event.listens_for(engine, "before_cursor_execute")
    def _count(*_: Any) -> None:
        nonlocal reads
        reads += 1

    cache = KeyCache(engine, static={}, poll_interval=0.5)
    outcome: dict[str, Any] = {}

    def run() -> None:
        outcome.update(asyncio.run(_flood(cache, engine)))

    # A held loop never returns, so the flood runs in a thread the test can give up on.
    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive(), "the event loop was held: a wait for a reread spun"

    results = outcome["results"]
    assert len(results) > 100  # the flood really ran: a request in every turn, for seconds
    assert all(isinstance(r, Unauthenticated) for r in results), {type(r) for r in results}
    assert {str(r) for r in results} == {"Incorrect or revoked API key provided: tm-not…"}
    assert outcome["principal"] == "after-the-flood"
    # At most one reread per gap while the flood lasts (a reread is two statements when the
    # table changed, one when it did not), plus the last key's: never one per request.
    assert reads <= 2 * (FLOOD_SECONDS / MISS_REFRESH_GAP + 4)
    assert reads < len(results)


async def _two_waiting(cache: KeyCache, engine: Any) -> list[Any]:
    # A wrong key starts a reread; two keys made just after it come inside the gap that follows,
    # so both wait for the next reread, and the one that does not start it must still wait for
    # its end.
    results: list[Any] = list(await asyncio.gather(
        cache.authenticate("Bearer tm-not-a-key", None), return_exceptions=True))
    secrets = [create_key(engine, name)[0] for name in ("made-in-the-gap", "made-beside-it")]
    results += await asyncio.gather(*(cache.authenticate(f"Bearer {secret}", None)
                                      for secret in secrets), return_exceptions=True)
    return results


def test_two_keys_made_in_the_gap_after_a_wrong_one_both_work_at_once(tmp_path: Path):
    engine = connect(str(tmp_path / "keys.sqlite"))
    cache = KeyCache(engine, static={}, poll_interval=0.5)
    wrong, *made = asyncio.run(_two_waiting(cache, engine))
    assert isinstance(wrong, Unauthenticated)
    assert [getattr(m, "name", m) for m in made] == ["made-in-the-gap", "made-beside-it"]
