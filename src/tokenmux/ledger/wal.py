"""The write-ahead file: every ledger row is appended here when it is recorded, before the
response's last bytes leave, and it stays until the database has committed it.

Layout under the WAL directory (`ledger.wal_dir`, by default `<database>.ledger/`):

    <owner>/lock               flock'ed by the running process that owns the directory
    <owner>/seg-00000001.jsonl  one record per line, appended with one write(2) each
    dead-letter.jsonl          rows that could not be encoded or that the database refused

A segment is closed at each flush (or every `batch_size` rows) and deleted once its rows are
committed. An append is one `write` to an O_APPEND file, so a row survives the process being
killed (kill -9) as soon as `record()` returns; it survives a power cut only with `fsync: true`,
which syncs each append. A short write (a full disk) is cut back, so no torn line is left for the
next row to be glued to.

At start, directories whose owner is gone (their lock is free) are adopted: their segments are
replayed, including the checkpoints of streams the crash cut (see writer.py), then removed.
Each process owns its own directory, so gateways sharing a disk never replay each other's rows.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenmux.ids import unique

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
_OWNER = re.compile(r"p[0-9a-f]{24}")  # unique("p"): only such directories are ever adopted


@dataclass(frozen=True, slots=True)
class Segment:
    path: Path
    adopted: bool  # written by a process that is gone: its checkpoints are billed too
    # The rows as recorded, while this process still holds them: committing them then needs no
    # read and decode of the file. None: the file is read (adopted, or let go in an outage).
    records: list[dict[str, Any]] | None = field(default=None, compare=False)


class WriteAheadLog:
    def __init__(self, root: Path, *, fsync: bool, carry: Callable[[], list[bytes]]):
        self.root = root
        self.dir = root / unique("p")
        self._fsync = fsync
        self._carry = carry  # the lines each new segment starts with: live streams' checkpoints
        self._fd: int | None = None
        self._offset = 0
        self._seq = 0
        self.rows = 0  # rows (not checkpoints) in the open segment
        self._records: list[dict[str, Any]] = []  # those rows, as recorded
        self.closed: deque[Segment] = deque()  # oldest first; their rows await the database
        self._locks: dict[Path, int] = {}  # directory → the fd holding its lock

    def open(self, legacy_spool: Path | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir()
        self._lock(self.dir)
        for sibling in sorted(self.root.iterdir()):
            if (_OWNER.fullmatch(sibling.name) and sibling.is_dir() and sibling != self.dir
                    and self._try_lock(sibling)):
                self.closed.extend(Segment(path, adopted=True)
                                   for path in sorted(sibling.glob("seg-*.jsonl")))
                self._forget_if_empty(sibling)
        if legacy_spool is not None and legacy_spool.is_file():
            self.closed.append(Segment(legacy_spool, adopted=True))

    def append(self, line: bytes, record: dict[str, Any] | None = None) -> None:
        """Appends a row (`record` is the line's row) or a checkpoint (None). Raises OSError
        when the disk does not take the line; nothing of it is left then."""
        if self._fd is None:
            self._new_segment()
        assert self._fd is not None
        self._write(self._fd, line)
        if record is not None:
            self.rows += 1
            self._records.append(record)

    def rotate(self, *, keep: bool = True) -> None:
        """Closes the open segment, when it holds rows, for the writer to commit; with `keep`
        its rows stay in memory for that commit."""
        if self._fd is None or self.rows == 0:
            return
        os.close(self._fd)
        self._fd = None
        self.closed.append(Segment(self._path(), adopted=False,
                                   records=self._records if keep else None))
        self._records = []
        self.rows = 0
        with contextlib.suppress(OSError):  # a full disk: the next append tries again
            self._new_segment()

    def open_path(self) -> Path:
        return self._path()

    def committed(self, segment: Segment) -> None:
        """The segment's rows are in the database: it goes."""
        segment.path.unlink(missing_ok=True)
        with contextlib.suppress(ValueError):  # not always the oldest: one may be unreadable
            self.closed.remove(segment)
        if segment.path.parent in self._locks and segment.path.parent != self.dir:
            self._forget_if_empty(segment.path.parent)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if self.rows == 0:  # only checkpoints, which the writer has turned into rows
                self._path().unlink(missing_ok=True)
        if not self.closed:
            self._forget_if_empty(self.dir)

    def _new_segment(self) -> None:
        self._seq += 1
        fd = os.open(self._path(), _FLAGS, 0o600)
        self._offset = 0
        try:
            for line in self._carry():
                self._write(fd, line)
        except OSError:
            os.close(fd)
            self._path().unlink(missing_ok=True)
            raise
        self._fd = fd
        if self._fsync:
            _sync_directory(self.dir)

    def _write(self, fd: int, line: bytes) -> None:
        try:
            written = os.write(fd, line)
        except OSError:
            self._cut_back(fd)
            raise
        if written != len(line):
            self._cut_back(fd)
            raise OSError(errno.ENOSPC, "short write to the ledger's write-ahead file")
        self._offset += written
        if self._fsync:
            os.fdatasync(fd)

    def _cut_back(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, self._offset)

    def _path(self) -> Path:
        return self.dir / f"seg-{self._seq:08d}.jsonl"

    def _lock(self, directory: Path) -> None:
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._locks[directory] = fd

    def _try_lock(self, directory: Path) -> bool:
        try:
            self._lock(directory)
        except BlockingIOError:
            return False  # its owner is alive
        except OSError:
            return False  # removed meanwhile by another starting process
        return True

    def _forget_if_empty(self, directory: Path) -> None:
        if directory not in self._locks or any(directory.glob("seg-*.jsonl")):
            return
        with contextlib.suppress(OSError):
            (directory / "lock").unlink(missing_ok=True)
            directory.rmdir()
        fd = self._locks.pop(directory, None)
        if fd is not None:
            os.close(fd)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
