"""`ledger.fsync`: with it, every row is synced to the disk as it is appended and every new
segment's name in its folder too, so that a power cut loses neither; without it, the request
path never waits for the disk.

A power cut cannot be made here: the syncs are counted as the operating system is asked for
them, by path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tokenmux.ledger.wal import WriteAheadLog


def synced(monkeypatch: pytest.MonkeyPatch, fsync: bool, root: Path) -> list[tuple[str, str]]:
    """What a write-ahead log asked to be synced while it took three rows, rotated, and took one
    more: (the call, the name of what it synced)."""
    calls: list[tuple[str, str]] = []

    def spy(name: str) -> Callable[[int], None]:
        real = getattr(os, name)

        def call(fd: int) -> None:
            calls.append((name, Path(os.readlink(f"/proc/self/fd/{fd}")).name))
            real(fd)
        return call

    monkeypatch.setattr(os, "fsync", spy("fsync"))
    monkeypatch.setattr(os, "fdatasync", spy("fdatasync"))
    wal = WriteAheadLog(root, fsync=fsync, carry=list)
    wal.open(None)
    for i in range(3):
        wal.append(b'{"row": %d}\n' % i, {"row": i})
    wal.rotate()
    wal.append(b'{"row": 3}\n', {"row": 3})
    wal.close()
    return [(call, "<folder>" if name == wal.dir.name else name) for call, name in calls]


def test_with_fsync_each_row_and_each_new_segments_name_reach_the_disk(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    assert synced(monkeypatch, True, tmp_path) == [
        ("fsync", "<folder>"),  # the first segment's name
        ("fdatasync", "seg-00000001.jsonl"), ("fdatasync", "seg-00000001.jsonl"),
        ("fdatasync", "seg-00000001.jsonl"),
        ("fsync", "<folder>"),  # the second's, made by the rotation
        ("fdatasync", "seg-00000002.jsonl")]


def test_without_fsync_nothing_waits_for_the_disk(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path):
    assert synced(monkeypatch, False, tmp_path) == []
