"""The gateway's view of the keys: a dict lookup per request, refreshed from the database.

A background task polls the keys table's revision, so a key created or revoked with the CLI takes
effect in a running gateway within `poll_interval` without any database round trip per request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tokenmux.auth import records
from tokenmux.auth.keys import Principal, hash_key
from tokenmux.errors import Unauthenticated

log = logging.getLogger(__name__)


class KeyCache:
    def __init__(self, engine: Engine, *, static: Mapping[str, Principal], poll_interval: float):
        self._engine = engine
        self._static = dict(static)  # keys from the config, by hash
        self._keys: dict[str, Principal] = dict(static)
        self._revision: tuple[int, str] | None = None
        self._poll_interval = poll_interval

    def authenticate(self, authorization: str | None, api_key_header: str | None) -> Principal:
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
        principal = self._keys.get(hash_key(secret))
        if principal is None:
            # Never echo the key back: a prefix is enough for the caller to recognise it.
            raise Unauthenticated(f"Incorrect or revoked API key provided: {secret[:6]}…")
        return principal

    def refresh(self) -> bool:
        """Reloads the keys when they changed; blocking, so run it in a thread."""
        current = records.revision(self._engine)
        if current == self._revision:
            return False
        keys = records.live_principals(self._engine)
        keys.update(self._static)
        self._keys = keys  # one reference swap, so readers never see a half-built dict
        self._revision = current
        return True

    async def watch(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.refresh)
            except SQLAlchemyError:  # the database may come back; until then the last view stands
                log.exception("could not refresh API keys")
            await asyncio.sleep(self._poll_interval)
