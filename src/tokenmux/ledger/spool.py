"""An append-only file for ledger rows the database could not take, replayed once it can.

Rows carry their own id and are inserted with "on conflict do nothing", so a replay that is cut
short and run again never counts a row twice.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError


class Spool:
    def __init__(self, path: str):
        self.path = Path(path)
        # Spills and replays run in worker threads; one at a time touches the file.
        self.lock = threading.Lock()

    def append(self, records: list[dict[str, Any]]) -> None:
        lines = b"".join(orjson.dumps(r, default=_default) + b"\n" for r in records)
        with self.lock, self.path.open("ab") as file:
            file.write(lines)
            file.flush()
            os.fsync(file.fileno())

    def pending(self) -> bool:
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def read(self) -> list[dict[str, Any]]:
        records = []
        for line in self.path.read_bytes().splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line torn by a crash mid-write; its request was never confirmed
            record["created_at"] = datetime.fromisoformat(record["created_at"])
            if record.get("cost_usd") is not None:
                record["cost_usd"] = Decimal(record["cost_usd"])
            records.append(record)
        return records

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
