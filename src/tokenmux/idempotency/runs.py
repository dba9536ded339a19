"""Each keyed request runs once; its copies get its answer.

    claim the id ─┬─ claimed:   run it (in a task of its own, which a client leaving does not
                  │             end), recording what it sends; keep the answer if it is a 2xx,
                  │             else free the id
                  ├─ running here:   follow the run: its events so far, then each as it comes
                  ├─ running on another instance: poll the store until its outcome is there
                  ├─ kept:      the kept answer, byte for byte, `Idempotent-Replayed: true`
                  └─ reused (another body under the id): 422, nothing run

Every wait is bounded by the copy's own deadline (`X-Timeout`); a copy that runs out of it
while the first still runs gets 409 `idempotency_in_progress` with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from tokenmux.answer import Answer, SseSink
from tokenmux.config.schema import Idempotency as Settings
from tokenmux.errors import (
    GatewayError,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    IdempotencyUnavailable,
    Repeated,
)
from tokenmux.idempotency.flight import Flight, Tee, client_headers
from tokenmux.idempotency.store import (
    Claimed,
    Done,
    Failed,
    Failure,
    Found,
    Free,
    Kept,
    Reused,
    Running,
    Store,
    fingerprint,
)
from tokenmux.ids import unique

if TYPE_CHECKING:
    from tokenmux.gateway import Gateway

log = logging.getLogger(__name__)

REPLAYED = "Idempotent-Replayed"
HOLD_MARGIN_S = 120.0  # a claim outlives its run's deadline by this, then lets go
POLL_FIRST_S, POLL_MAX_S = 0.02, 0.5
RETRY_AFTER_S = 1

# The first's run: given the sink it writes through and its ledger row's id.
Run = Callable[[SseSink, str], Awaitable[Answer]]
# A ledger row for a copy: its status, error code, the row it replays, whether a stream.
Note = Callable[[int, str | None, str | None, bool], None]


@dataclass(frozen=True, slots=True)
class Keyed:
    key: str  # the id (X-Request-Id or Idempotency-Key)
    scope: str  # the API key's id: the same id under two keys is two requests
    body: bytes
    deadline: float  # time.perf_counter() when the request's X-Timeout runs out


class Runs:
    def __init__(self, store: Store, settings: Settings):
        self._store = store
        self._settings = settings
        self._flights: dict[str, Flight] = {}

    async def serve(self, gw: Gateway, keyed: Keyed, sink: SseSink, run: Run,
                    note: Note) -> Answer:
        key = f"{keyed.scope}:{keyed.key}"
        print_ = fingerprint(keyed.body)
        while True:
            flight = self._flights.get(key)
            found: Found
            if flight is None:
                token = unique()
                hold = keyed.deadline - time.perf_counter() + HOLD_MARGIN_S
                found = await self._store.claim(key, print_, token, hold)
                if isinstance(found, Claimed):
                    flight = Flight(print_, token, unique(), self._settings.max_stream_bytes)
                    self._flights[key] = flight
                    return await self._first(gw, key, flight, sink, run)
                local = self._flights.get(key)
                if isinstance(found, Running) and local is not None and local.token == found.token:
                    flight = local
            elif flight.print_ != print_:
                found = Reused()
            if flight is not None and flight.print_ == print_:
                answer = await self._follow(flight, keyed, sink, note)
                if answer is None:  # the run ended without an outcome (the gateway stopping)
                    await asyncio.sleep(POLL_FIRST_S)  # while it lets go of the id
                    continue
                return answer
            if isinstance(found, Running):
                found = await self._wait(key, found.token, keyed.deadline)
                if isinstance(found, Free):
                    continue
            if isinstance(found, Reused):
                note(422, IdempotencyKeyReused.code, None, False)
                raise IdempotencyKeyReused(
                    "This idempotency key was used with a different request body; send the "
                    "same body to retry, or a new key for a new request.",
                    param="Idempotency-Key")
            if isinstance(found, Done):
                note(200, None, found.kept.row_id, found.kept.stream)
                return await _replay(found.kept, sink)
            if isinstance(found, Failed):
                failed = found.failure
                note(failed.status, failed.body["error"].get("code"), failed.row_id, False)
                raise Repeated(failed.status, failed.body, failed.headers)
            note(409, IdempotencyInProgress.code, None, False)
            raise _in_progress()

    async def _first(self, gw: Gateway, key: str, flight: Flight, sink: SseSink,
                     run: Run) -> Answer:
        task = asyncio.create_task(self._run(key, flight, sink, run))
        gw.inflight.add(task)  # a stop waits for it, and ends it when its grace is out
        task.add_done_callback(_retrieved)
        task.add_done_callback(gw.inflight.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not gw.draining:
                raise  # the client left: the run goes on, for its retry to find
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return await task  # the stop ends it too, and it answers shutting_down

    async def _run(self, key: str, flight: Flight, sink: SseSink, run: Run) -> Answer:
        tee = Tee(sink, flight)
        kept: Kept | None = None
        failure: GatewayError | None = None
        try:
            answer = await run(tee, flight.row_id)
            if answer.body is not None:
                raw = orjson.dumps(answer.body)
                kept = Kept(False, client_headers(answer.headers), raw, flight.row_id)
                answer = Answer(None, answer.headers, raw)
            elif tee.finished and not flight.too_large and flight.headers is not None:
                kept = Kept(True, flight.headers, b"".join(flight.events), flight.row_id)
            return answer
        except GatewayError as error:
            failure = error
            raise
        finally:
            flight.end(kept, failure)
            try:
                if kept is not None:
                    await self._store.keep(key, flight.token, flight.print_, kept)
                else:
                    await self._store.free(key, flight.token, flight.print_,
                                           None if failure is None else _failure(failure,
                                                                                 flight.row_id))
            except IdempotencyUnavailable as exc:
                log.warning("could not record the outcome of a keyed request: %s", exc.message)
            finally:
                if self._flights.get(key) is flight:
                    del self._flights[key]

    async def _follow(self, flight: Flight, keyed: Keyed, sink: SseSink,
                      note: Note) -> Answer | None:
        """A copy of a request running here: its answer, as it comes."""
        while flight.headers is None and not flight.ended:
            remaining = keyed.deadline - time.perf_counter()
            if remaining <= 0:
                note(409, IdempotencyInProgress.code, None, False)
                raise _in_progress()
            await flight.changed(remaining)
        if flight.headers is None:
            if flight.kept is not None:
                note(200, None, flight.row_id, False)
                return await _replay(flight.kept, sink)
            if flight.failure is not None:
                note(flight.failure.status, flight.failure.code, flight.row_id, False)
                raise Repeated.of(flight.failure)
            return None
        if flight.too_large:
            note(409, IdempotencyInProgress.code, None, True)
            raise _in_progress()
        status, code = 200, None
        try:
            await sink.open({**flight.headers, REPLAYED: "true"})
            sent = 0
            while True:
                if flight.too_large:
                    status, code = 409, IdempotencyInProgress.code
                    await sink.end(sink.encode_failure(_in_progress()))
                    break
                if sent < len(flight.events):
                    data = b"".join(flight.events[sent:])
                    sent = len(flight.events)
                    if flight.ended:
                        await sink.end(data)
                        break
                    await sink.write(data)
                elif flight.ended:
                    await sink.end(b"")
                    break
                else:
                    await flight.changed(None)
        except ConnectionError:
            status, code = 499, "client_closed"
        except asyncio.CancelledError:  # this copy's client left; the run goes on
            status, code = 499, "client_closed"
            raise
        finally:
            note(status, code, flight.row_id, True)
        return Answer(None, {})

    async def _wait(self, key: str, token: str, deadline: float) -> Found:
        """A copy of a request running on another instance: its outcome once the store has it
        (Done or Failed), Free when the id is free to claim again, Running when time ran out."""
        delay = POLL_FIRST_S
        while (remaining := deadline - time.perf_counter()) > 0:
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, POLL_MAX_S)
            if key in self._flights:  # a run on this instance took the id over
                return Free()
            found = await self._store.look(key)
            if isinstance(found, Running) and found.token == token:
                continue
            if isinstance(found, Done) or (isinstance(found, Failed) and found.token == token):
                return found
            return Free()
        return Running(token)


async def _replay(kept: Kept, sink: SseSink) -> Answer:
    headers = {**kept.headers, REPLAYED: "true"}
    if not kept.stream:
        return Answer(None, headers, kept.body)
    try:
        await sink.open(headers)
        await sink.end(kept.body)
    except ConnectionError:
        pass  # the client left; there is nothing to stop
    return Answer(None, {})


def _in_progress() -> IdempotencyInProgress:
    return IdempotencyInProgress(
        "A request with this idempotency key is still in progress; retry after it ends to get "
        "its answer.", retry_after=RETRY_AFTER_S)


def _failure(error: GatewayError, row_id: str) -> Failure:
    repeated = Repeated.of(error)
    return Failure(repeated.status, repeated.body(), repeated.headers(), row_id)


def _retrieved(task: asyncio.Task[Answer]) -> None:
    # A run whose client left may fail with nobody awaiting it: that is its answer, not a bug.
    if not task.cancelled():
        task.exception()
