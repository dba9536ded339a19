"""The gateway's view of the keys: a dict lookup per request, refreshed from the database.

A background task polls the keys table's revision, so a key revoked with the CLI is refused by a
running gateway within `poll_interval`, with no database round trip per request. An unknown key
waits for a refresh that began after it arrived (shared by concurrent callers, at most one per
`MISS_REFRESH_GAP`, so a flood of wrong keys costs the database ten reads a second and each of
them a wait of up to that gap), so a key created a moment ago works on its first request. An
expired key stays in the view, so its refusal can say it expired; the expiry is compared at each
request, so it takes effect at its second, not at the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tokenmux.auth import records
from tokenmux.auth.keys import Principal, hash_key
from tokenmux.auth.options import iso
from tokenmux.errors import Unauthenticated

log = logging.getLogger(__name__)

MISS_REFRESH_GAP = 0.1  # seconds; bounds what a flood of wrong keys can cost the database
STALE_AFTER = 20  # polls without a good refresh before /health says the keys are stale


class KeyCache:
    def __init__(self, engine: Engine, *, static: Mapping[str, Principal], poll_interval: float):
        self._engine = engine
        self._static = dict(static)  # keys from the config, by hash
        self._keys: dict[str, Principal] = dict(static)
        self._revision: tuple[int, str] | None = None
        self._poll_interval = poll_interval
        self._refreshing: asyncio.Future[bool] | None = None  # the newest, kept once done
        # When the newest refresh for an unknown key began. Only those count: a poll that began
        # just before a key was created must not keep that key out until the next poll.
        self._last_miss = -MISS_REFRESH_GAP
        self.refreshed_at = time.monotonic()  # the last refresh that reached the database

    async def authenticate(self, authorization: str | None,
                           api_key_header: str | None) -> Principal:
        secret = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer":
                secret = value.strip()
        if not secret:
            secret = api_key_header
        if not secret:
            raise Unauthenticated(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
        if not (secret.isascii() and secret.isprintable()):
            # A byte that is not UTF-8 reaches here as a surrogate, which cannot even be hashed.
            raise Unauthenticated("The API key holds characters no API key has (only printable "
                                  "ASCII is valid).")
        hashed = hash_key(secret)
        principal = self._keys.get(hashed)
        if principal is None:
            await self._refresh_since(time.monotonic())
            principal = self._keys.get(hashed)
        if principal is None:
            # Never echo the key back: a prefix is enough for the caller to recognise it.
            raise Unauthenticated(f"Incorrect or revoked API key provided: {secret[:6]}…")
        if principal.expired(time.time()):
            assert principal.expires_at is not None
            when = iso(datetime.fromtimestamp(principal.expires_at, UTC))
            raise Unauthenticated(f"The API key {secret[:6]}… has expired (at {when}).")
        return principal

    async def _refresh_since(self, arrived: float) -> None:
        """Returns once a refresh that began at or after ARRIVED has ended. One that began
        before may have read the table before the key was written, and so cannot refuse it.
        Each pass of the loop awaits what is not yet done, or returns: awaiting a done future
        does not yield, and a loop that did would hold the event loop."""
        while True:
            refreshing = self._refreshing
            began_after = refreshing is not None and self._last_miss >= arrived
            if refreshing is None or (refreshing.done() and not began_after):
                wait = self._last_miss + MISS_REFRESH_GAP - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue  # another caller may have started one meanwhile
                self._last_miss = time.monotonic()
                refreshing = asyncio.ensure_future(asyncio.to_thread(self.refresh))
                self._refreshing, began_after = refreshing, True
            try:
                await asyncio.shield(refreshing)
            except SQLAlchemyError:
                log.warning("could not refresh API keys for an unknown key")
                return
            if began_after:
                return

    def refresh(self) -> bool:
        """Reloads the keys when they changed; blocking, so run it in a thread."""
        current = records.revision(self._engine)
        changed = current != self._revision
        if changed:
            keys = records.live_principals(self._engine)
            keys.update(self._static)
            self._keys = keys  # one reference swap, so readers never see a half-built dict
            self._revision = current
        self.refreshed_at = time.monotonic()
        return changed

    def by_hash(self, hashed: str) -> Principal | None:
        """The live key whose secret hashes to HASHED (a console session names its key so);
        None once it has expired."""
        principal = self._keys.get(hashed)
        return None if principal is None or principal.expired(time.time()) else principal

    def principals(self) -> list[Principal]:
        return list(self._keys.values())

    def health(self) -> str:
        """`ok` while the view of the keys is fresh; `stale` once refreshes have failed (or
        hung) for STALE_AFTER polls, so a revoked key may still be served."""
        age = time.monotonic() - self.refreshed_at
        return "ok" if age < STALE_AFTER * self._poll_interval else "stale"

    async def watch(self) -> None:
        failing = False
        while True:
            try:
                await asyncio.to_thread(self.refresh)
            # The task's outermost handler: whatever a refresh meets, the watch goes on, or
            # revocations would silently stop reaching this process.
            except Exception:
                if not failing:
                    log.exception("could not refresh API keys; the last view stands")
                failing = True
            else:
                if failing:
                    log.info("API keys refresh again")
                failing = False
            await asyncio.sleep(self._poll_interval)
