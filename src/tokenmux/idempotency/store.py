"""The store of idempotency records: one interface, an in-process and a Redis backend.

A record is kept per scope (the API key) and id. It is one of:

    running   claimed by a request now in flight: its body's fingerprint and a run token
    kept      the answer of a run that ended with a 2xx, replayed until the ttl is out
    failed    (Redis only) the failure of the last run, for repeats waiting on another
              instance; an id whose last run failed is free to claim again

`claim` is one atomic step: it takes a free id, or reports what holds it. The bytes a record
travels as (to Redis) are built here, so both backends keep the same thing.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

FINGERPRINT_BYTES = 16
RUNNING, KEPT, FAILED = b"R", b"K", b"F"


def fingerprint(body: bytes) -> bytes:
    """A retry resends the same bytes: hashing them is far cheaper than comparing parsed JSON."""
    return hashlib.blake2b(body, digest_size=FINGERPRINT_BYTES).digest()


@dataclass(frozen=True, slots=True)
class Kept:
    """A 2xx answer as its client got it: the headers it reads and the body's bytes (a
    stream's events, in order, as sent)."""

    stream: bool
    headers: dict[str, str]
    body: bytes
    row_id: str  # the ledger row billed for it

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(k) + len(v) for k, v in self.headers.items())


@dataclass(frozen=True, slots=True)
class Failure:
    """What a failed run answered, for repeats that waited on it from another instance."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    row_id: str


# What a claim (or a look at an id) finds.
@dataclass(frozen=True, slots=True)
class Claimed:
    pass


@dataclass(frozen=True, slots=True)
class Running:
    token: str


@dataclass(frozen=True, slots=True)
class Done:
    kept: Kept


@dataclass(frozen=True, slots=True)
class Failed:
    token: str
    failure: Failure


@dataclass(frozen=True, slots=True)
class Reused:
    """The id holds a record of another body."""


@dataclass(frozen=True, slots=True)
class Free:
    pass


Found = Claimed | Running | Done | Failed | Reused | Free


class Store(Protocol):
    async def claim(self, key: str, print_: bytes, token: str, hold_s: float) -> Found:
        """Claims KEY for the run TOKEN of a body with fingerprint PRINT_, held at most
        HOLD_S; else what holds it (Running, Done, Reused)."""

    async def keep(self, key: str, token: str, print_: bytes, kept: Kept) -> None:
        """The run TOKEN ended with KEPT: replayed until the ttl is out."""

    async def free(self, key: str, token: str, print_: bytes,
                   failure: Failure | None) -> None:
        """The run TOKEN ended without an answer to keep: the id is free again."""

    async def look(self, key: str) -> Found:
        """What KEY holds now (Running, Done, Failed or Free), claiming nothing."""


def running_value(print_: bytes, token: str) -> bytes:
    return RUNNING + print_ + token.encode()


def kept_value(print_: bytes, kept: Kept) -> bytes:
    meta = orjson.dumps({"stream": kept.stream, "headers": kept.headers, "row": kept.row_id})
    return KEPT + print_ + struct.pack(">I", len(meta)) + meta + kept.body


def failed_value(print_: bytes, token: str, failure: Failure) -> bytes:
    meta = orjson.dumps({"token": token, "status": failure.status, "body": failure.body,
                         "headers": failure.headers, "row": failure.row_id})
    return FAILED + print_ + meta


def read_value(value: bytes | None) -> Found:
    """A stored value as what it stands for (its fingerprint is the caller's business)."""
    if not value:
        return Free()
    kind, rest = value[:1], value[1 + FINGERPRINT_BYTES:]
    if kind == RUNNING:
        return Running(rest.decode())
    if kind == KEPT:
        (size,) = struct.unpack(">I", rest[:4])
        meta = orjson.loads(rest[4:4 + size])
        return Done(Kept(meta["stream"], meta["headers"], rest[4 + size:], meta["row"]))
    meta = orjson.loads(rest)
    return Failed(meta["token"], Failure(meta["status"], meta["body"], meta["headers"],
                                         meta["row"]))


def printed(value: bytes) -> bytes:
    return value[1:1 + FINGERPRINT_BYTES]
