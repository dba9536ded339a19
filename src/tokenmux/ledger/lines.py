"""Records as lines of the write-ahead file: encoding with repair, decoding, and the dead letters.

A record that cannot be encoded is repaired, not dropped: text that is not valid Unicode (a lone
surrogate, as a header with a non-UTF-8 byte decodes to) becomes U+FFFD. What still cannot be
encoded, or what the database refuses as data, goes to the dead-letter file with a log line.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("tokenmux.ledger")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError


def clean_text(text: str) -> str:
    """`text` as valid Unicode: each lone surrogate replaced by U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def repair(record: dict[str, Any]) -> None:
    for key, value in record.items():
        if isinstance(value, str):
            record[key] = clean_text(value)
        elif isinstance(value, dict):
            repair(value)


def encode(record: dict[str, Any]) -> bytes:
    """One line; repairs the record in place when it does not encode as it is.
    Raises TypeError when even the repaired record does not encode."""
    try:
        return orjson.dumps(record, default=_default) + b"\n"
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        repair(record)
        return orjson.dumps(record, default=_default) + b"\n"


def decode(line: bytes) -> dict[str, Any] | None:
    """The record of one line; None for a line torn by a crash in the middle of its write."""
    try:
        record = orjson.loads(line)
        record["created_at"] = datetime.fromisoformat(record["created_at"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("cost_usd"), str):  # rows of the old spool file carry their cost
        record["cost_usd"] = Decimal(record["cost_usd"])
    return record


def read_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a file, and how many of its lines were torn."""
    records, torn = [], 0
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        record = decode(line)
        if record is None:
            torn += 1
        else:
            records.append(record)
    return records, torn


class DeadLetters:
    """Rows that could be neither encoded nor written, kept for a person to look at."""

    def __init__(self, path: Path):
        self.path = path
        self.count = 0
        self._lock = threading.Lock()  # written from the loop and from the writer's thread

    def keep(self, record: dict[str, Any], reason: str) -> None:
        self.count += 1
        # Plain str keys and repr values: whatever the record holds, this line encodes.
        entry = {"at": time.time(), "reason": clean_text(reason),
                 "record": {str(k): repr(v) for k, v in record.items()}}
        log.error("ledger: row %r of request %r quarantined in %s: %s", record.get("id"),
                  record.get("request_id"), self.path, reason)
        try:
            with self._lock, self.path.open("ab") as file:
                file.write(orjson.dumps(entry, default=repr) + b"\n")
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            log.error("ledger: the dead-letter file %s cannot be written (%s); the row is only "
                      "in this log: %r", self.path, exc, entry)
