"""Identifiers that must be unique but need not be secret: request ids and ledger row ids.

A random prefix per process and a counter: minting one costs no system call, where a fresh
random id would cost a `getrandom` each, twice per request.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets

# What a client's own request id (X-Request-Id, Idempotency-Key) may be.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

_prefix = secrets.token_hex(6)
_counter = itertools.count()


def _reseed() -> None:
    # A forked child must not mint its parent's ids.
    global _prefix, _counter
    _prefix = secrets.token_hex(6)
    _counter = itertools.count()


os.register_at_fork(after_in_child=_reseed)


def unique(kind: str = "") -> str:
    """`kind` followed by 24 hex digits, never repeated by any process."""
    return f"{kind}{_prefix}{next(_counter):012x}"


def is_client_id(text: str) -> bool:
    return _CLIENT_ID.fullmatch(text) is not None
