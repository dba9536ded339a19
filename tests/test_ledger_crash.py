"""The ledger is the bill: no row lost, none counted twice, through kill -9, a locked database, a
full disk and a header that is not UTF-8. Real gateway processes, real signals, real SQLite."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest

from tests.conftest import ADMIN_KEY, Gateway, config_for, wait_until
from tests.fakes.openai_upstream import REPLY
from tests.streaming import Streamed
from tests.test_metrics import samples, total

HELLO = [{"role": "user", "content": "Say hello"}]
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _health(running: Gateway) -> httpx.Response:
    return httpx.get(running.base_url + "/health", timeout=30)


def _restart(running: Gateway) -> Gateway:
    """A new process on the same config and database, after the old one died."""
    assert running.config is not None
    return Gateway(running.directory, running.config.read_text()).start()


def _counts(running: Gateway) -> Counter[str]:
    return Counter(row["request_id"] for row in running.rows())


def _kill(running: Gateway) -> None:
    assert running.process is not None
    running.process.kill()  # SIGKILL: no cleanup, no flush
    running.process.wait(30)


class Load:
    """Client threads sending echo requests with their own X-Request-Id until stopped; `answered`
    holds the ids of the requests whose whole answer the client received."""

    def __init__(self, running: Gateway, threads: int, model: str = "tokenmux/echo"):
        self.url = running.base_url + "/v1/chat/completions"
        self.model = model
        self.answered: list[str] = []
        self.refused: list[int] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(n,), daemon=True)
                         for n in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _work(self, n: int) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                rid = f"load-{n}-{i}"
                i += 1
                try:
                    response = client.post(self.url, json={"model": self.model,
                                                           "messages": HELLO},
                                           headers={**AUTH, "X-Request-Id": rid})
                except httpx.HTTPError:
                    continue  # the gateway died under it: never answered
                if response.status_code == 200 and response.json()["choices"]:
                    self.answered.append(rid)
                else:
                    self.refused.append(response.status_code)


def test_kill_9_under_load_loses_no_answered_row_and_bills_cut_streams(tmp_path, upstream):
    running = Gateway(tmp_path, config_for(tmp_path, upstream)).start()
    try:
        streams = [Streamed(running, f"cut-{i}", "@slow 0.4") for i in range(2)]
        with Load(running, threads=4) as load:
            for stream in streams:
                stream.start()
            # Past a checkpoint (one a second) and well into the load, but before the end.
            assert wait_until(lambda: all(s.words >= 4 for s in streams), timeout=30)
            assert wait_until(lambda: len(load.answered) >= 50, timeout=30)
            # A live stream's checkpoints are insurance, not rows: none reached the database.
            assert not running.rows(request_id=streams[0].rid)
            _kill(running)
        for stream in streams:
            stream.join(30)
            assert stream.words < 8, "the stream ended before the kill; nothing was cut"
    finally:
        running.stop()
    answered = set(load.answered)
    restarted = _restart(running)
    try:
        counts = _counts(restarted)
        assert answered <= set(counts), f"lost: {sorted(answered - set(counts))[:10]}"
        assert max(counts.values()) == 1, "a row was written twice"
        for stream in streams:
            row = restarted.rows(request_id=stream.rid)[0]
            assert (row["status"], row["error_code"]) == (500, "interrupted")
            assert row["usage_source"] == "checkpoint" and row["stream"] == 1
            assert row["completion_tokens"] > 0 and row["prompt_tokens"] > 0
            assert row["model"] == "fake-model" and row["cost_usd"] > 0  # priced on replay
        assert _health(restarted).json()["ledger"] == "ok"
    finally:
        restarted.stop()
    # A clean stop of the restarted gateway writes nothing more and leaves no segment behind.
    assert _counts(restarted) == counts
    assert not list(running.wal_dir.glob("*/seg-*.jsonl"))


def test_a_cut_stream_is_billed_a_token_per_four_characters_up_to_its_checkpoint(tmp_path,
                                                                                 upstream):
    running = Gateway(tmp_path, config_for(tmp_path, upstream)).start()
    # Three words at once, a pause past the checkpoint's second, a fourth word (which leaves
    # the checkpoint), then nothing until the gateway is gone.
    body = orjson.dumps({"model": "fake-model", "stream": True, "messages": [
        {"role": "user", "content": "@stallhold 3 4 cut-by-checkpoint"}]})
    received: list[str] = []

    def stream() -> None:
        with contextlib.suppress(httpx.HTTPError), httpx.stream(
                "POST", running.base_url + "/v1/chat/completions", content=body, timeout=60,
                headers={**AUTH, "X-Request-Id": "checkpointed",
                         "Content-Type": "application/json"}) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    delta = orjson.loads(line[6:])["choices"][0]["delta"]
                    received.append(delta.get("content") or "")

    def checkpointed() -> bool:
        return any(b"checkpointed" in segment.read_bytes() for segment in
                   running.wal_dir.glob("*/seg-*.jsonl"))

    client = threading.Thread(target=stream, daemon=True)
    try:
        client.start()
        assert wait_until(lambda: len([t for t in received if t]) == 4, timeout=30)
        assert wait_until(checkpointed, timeout=10)
        _kill(running)
        client.join(30)
    finally:
        upstream.release("cut-by-checkpoint")
        running.stop()
    text = "".join(received)
    assert text == "Hello from the fake"
    # An older checkpoint of the same stream, with fewer tokens, in a segment before it that
    # the disk cannot give back yet (a directory where its file should be).
    [segment] = [path for path in running.wal_dir.glob("*/seg-*.jsonl")
                 if b"checkpointed" in path.read_bytes()]
    [line] = [line for line in segment.read_bytes().splitlines() if b"checkpointed" in line]
    older = {**orjson.loads(line), "completion_tokens": 2}
    unreadable = UnreadableSegment(segment.parent, tmp_path)
    restarted = _restart(running)
    try:
        row = restarted.wait_row("checkpointed")
        unreadable.give_back(orjson.dumps(older) + b"\n")
        _wait_for_no_segment(restarted)
        # The older checkpoint, landing after the newer one, replaces nothing.
        assert restarted.wait_row("checkpointed") == row
    finally:
        restarted.stop()
    assert (row["status"], row["error_code"], row["usage_source"]) == (500, "interrupted",
                                                                       "checkpoint")
    # Estimates, as at admission: a token per four characters (of the text, and of the body).
    assert row["completion_tokens"] == len(text) // 4 + 1 == 5
    assert row["prompt_tokens"] == len(body) // 4 + 1


def test_a_locked_database_then_kill_9_loses_no_row(tmp_path, upstream):
    running = Gateway(tmp_path, config_for(tmp_path, upstream, sqlite=True)).start()
    lock = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None, timeout=30)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # the writer's inserts now wait (busy timeout 10 s)
        with Load(running, threads=2) as load:
            assert wait_until(lambda: len(load.answered) >= 40, timeout=30)
            time.sleep(1)  # answers keep coming while the writer is stuck behind the lock
            _kill(running)
    finally:
        lock.rollback()
        lock.close()
        running.stop()
    answered = set(load.answered)
    restarted = _restart(running)
    try:
        counts = _counts(restarted)
        assert answered <= set(counts), f"lost {len(answered - set(counts))} of {len(answered)}"
        assert max(counts.values()) == 1
    finally:
        restarted.stop()


@contextlib.contextmanager
def _small_disk(mountpoint: Path, size: str) -> object:
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
                   check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _fill(path: Path) -> None:
    """Takes every free byte of PATH's filesystem."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)


class UnreadableSegment:
    """A segment older than the others that the disk cannot give back (a link to a directory:
    EISDIR) until `give_back`, which swaps the link, at once, for one to a file of LINES."""

    def __init__(self, folder: Path, scratch: Path):
        self.path = folder / "seg-00000000.jsonl"
        self._scratch = scratch
        (scratch / "a-directory").mkdir()
        self.path.symlink_to(scratch / "a-directory")

    def give_back(self, lines: bytes) -> None:
        (self._scratch / "given-back.jsonl").write_bytes(lines)
        swap = self.path.with_name("swap")  # not a segment's name: never read meanwhile
        swap.symlink_to(self._scratch / "given-back.jsonl")
        os.replace(swap, self.path)


def _wait_for_no_segment(running: Gateway) -> None:
    deadline = time.monotonic() + 30
    while (detail := _health(running).json()["ledger_detail"])["segments_waiting"] or detail[
            "segments_unreadable"]:
        assert time.monotonic() < deadline, _health(running).json()
        time.sleep(0.1)


def _chat(running: Gateway, rid: str) -> httpx.Response:
    return httpx.post(running.base_url + "/v1/chat/completions", timeout=30,
                      json={"model": "tokenmux/echo", "messages": HELLO},
                      headers={**AUTH, "X-Request-Id": rid})


def test_a_full_disk_keeps_rows_in_memory_refuses_when_nowhere_and_recovers(tmp_path, upstream):
    with _small_disk(tmp_path / "small", "2m") as disk:
        config = config_for(tmp_path, upstream, sqlite=True).replace(
            "ledger: {flush_interval_ms: 50}",
            f"ledger: {{flush_interval_ms: 50, max_pending: 5, retry_max_ms: 400, "
            f"wal_dir: {disk}/wal}}")
        running = Gateway(tmp_path, config).start()
        database = tmp_path / "gateway.db"
        served: list[str] = []
        try:
            _fill(disk / "filler")
            # The disk refuses the write-ahead file; the database still takes every batch.
            for i in range(3):
                assert _chat(running, f"full-{i}").status_code == 200
                served.append(f"full-{i}")
            health = _health(running)
            assert (health.status_code, health.json()["ledger"]) == (200, "degraded")
            assert health.json()["ledger_detail"]["disk_failures"] >= 3
            for rid in served:
                running.wait_row(rid)

            # Now the database too: rows can be kept in memory only, up to max_pending (5).
            with sqlite3.connect(database) as conn:
                conn.execute("ALTER TABLE usage RENAME TO usage_away")
            for i in range(5):
                assert _chat(running, f"nowhere-{i}").status_code == 200
                served.append(f"nowhere-{i}")
            assert wait_until(lambda: _health(running).json()["ledger"] == "failing")
            health = _health(running)
            assert health.status_code == 503
            assert health.json()["ledger_detail"]["rows_in_memory"] == 5
            refused = _chat(running, "refused")
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "ledger_unavailable"

            # Space comes back: the rows in memory go to disk, serving resumes, still spooling.
            (disk / "filler").unlink()
            assert wait_until(lambda: _health(running).json()["ledger"] == "spooling",
                              timeout=20)
            assert _health(running).json()["ledger_detail"]["rows_in_memory"] == 0
            assert _chat(running, "after-space").status_code == 200
            served.append("after-space")

            # And the database: every row lands, once.
            with sqlite3.connect(database) as conn:
                conn.execute("ALTER TABLE usage_away RENAME TO usage")
            assert wait_until(lambda: _health(running).json()["ledger"] == "ok", timeout=20)
            for rid in served:
                running.wait_row(rid, timeout=20)
        finally:
            running.stop()
        counts = _counts(running)
        assert set(counts) == set(served) and max(counts.values()) == 1
        assert "refused" not in counts  # refused before any work: nothing to bill
        # Each failure is told once when it starts and once when it ends, not once a batch.
        log = running.output
        assert log.count("cannot be written") == 1 and log.count("takes rows again") == 1
        assert log.count("refuses writes") == 1 and log.count("takes writes again") == 1
        assert "rows wait in memory" in log


def test_a_header_that_is_not_utf8_costs_no_row(tmp_path, upstream):
    running = Gateway(tmp_path, config_for(tmp_path, upstream)).start()
    try:
        ids = []
        for i, user in enumerate([b"ann", b"caf\xe9 \xff", b"bob"] * 2):
            response = httpx.post(running.base_url + "/v1/chat/completions", timeout=30,
                                  json={"model": "tokenmux/echo", "messages": HELLO},
                                  headers={**AUTH, "X-Request-Id": f"user-{i}", "X-User": user})
            assert response.status_code == 200
            ids.append(f"user-{i}")
        rows = {rid: running.wait_row(rid) for rid in ids}
        assert rows["user-0"]["end_user"] == "ann" and rows["user-2"]["end_user"] == "bob"
        assert rows["user-1"]["end_user"] == "caf\ufffd \ufffd"
        # Still alive and well: the writer keeps writing after the repaired row.
        assert _chat(running, "later").status_code == 200
        running.wait_row("later")
        health = _health(running)
        assert (health.status_code, health.json()["ledger"]) == (200, "ok")
        assert health.json()["ledger_detail"]["dead_letters"] == 0
    finally:
        code = running.stop()
    assert code == 0
    assert len(running.rows()) == 7


def test_a_long_stream_that_finished_keeps_its_final_row_through_kill_9(tmp_path, upstream):
    # Nothing is committed before the kill (a minute's flush): the restart's replay decides
    # between each stream's checkpoints and its final row. With fsync on, as a power cut needs.
    config = config_for(tmp_path, upstream).replace(
        "ledger: {flush_interval_ms: 50}", "ledger: {flush_interval_ms: 60000, fsync: true}")
    running = Gateway(tmp_path, config).start()
    finished = Streamed(running, "finished", "@slow 0.3")  # 8 words in 2.4 s: two checkpoints
    # Three words, a pause past the checkpoint's second, one more, then held until the kill:
    # still running then, however long the rest takes on a loaded machine.
    cut = Streamed(running, "cut", "@stallhold 3 3 kill9-cut")
    try:
        finished.start()
        cut.start()
        finished.join(60)
        assert finished.error is None and finished.events[-1] == "[DONE]"
        for i in range(10):
            assert _chat(running, f"echo-{i}").status_code == 200
        assert wait_until(lambda: cut.words >= 4, timeout=30)
        # The checkpoint follows the fourth word's write: the kill waits for it.
        assert wait_until(lambda: any(b'"cut"' in segment.read_bytes() for segment in
                                      running.wal_dir.glob("*/seg-*.jsonl")), timeout=30)
        assert running.rows() == []
        _kill(running)
        cut.join(30)
    finally:
        running.stop()
    restarted = _restart(running)
    try:
        rows = {row["request_id"]: row for row in restarted.rows()}
        assert len(restarted.rows()) == len(rows) == 12
        assert (rows["finished"]["status"], rows["finished"]["usage_source"]) == (200, "upstream")
        assert rows["finished"]["completion_tokens"] == 8
        assert (rows["cut"]["status"], rows["cut"]["error_code"]) == (500, "interrupted")
        assert rows["cut"]["completion_tokens"] > 0
    finally:
        restarted.stop()


def test_the_old_spool_file_is_replayed_once(tmp_path, upstream):
    row = {"id": "old-row-1", "created_at": "2026-11-30T10:00:00+00:00", "request_id": "old-req",
           "key_id": None, "key_name": "admin", "end_user": None, "requested_model": "m",
           "model": "m", "provider": "p", "upstream_model": "u", "attempts": 1,
           "tier": "medium", "queue_ms": 0.0, "stream": False, "status": 200,
           "error_code": None, "prompt_tokens": 3, "completion_tokens": 4, "cached_tokens": 0,
           "reasoning_tokens": 0, "usage_source": "upstream", "cost_usd": "0.0000110000",
           "latency_ms": 5.0, "ttft_ms": None}
    spool = tmp_path / "gateway.db.spool"
    spool.write_bytes(orjson.dumps(row) + b"\n" + b'{"torn": ')
    running = Gateway(tmp_path, config_for(tmp_path, upstream, sqlite=True)).start()
    try:
        found = running.wait_row("old-req")
        assert found["cost_usd"] == pytest.approx(0.000011)
        assert not spool.exists()
    finally:
        running.stop()
    # The torn last line is skipped, and the operator is told how many were, once.
    assert "ledger: 1 torn lines skipped" in running.output
    assert running.output.count("torn lines") == 1
    again = _restart(running)
    try:  # and none is counted for the rows this process writes itself
        assert _chat(again, "after-replay").status_code == 200
        again.wait_row("after-replay")
    finally:
        again.stop()
    assert "torn lines" not in again.output
    assert len(again.rows(request_id="old-req")) == 1


def test_a_row_the_database_refuses_goes_to_the_dead_letters_and_its_batch_lands(tmp_path,
                                                                                 upstream):
    config = config_for(tmp_path, upstream, sqlite=True).replace("ledger: {flush_interval_ms: 50}",
                                                    "ledger: {flush_interval_ms: 1000}")
    running = Gateway(tmp_path, config).start()
    with sqlite3.connect(tmp_path / "gateway.db") as conn:
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON usage WHEN NEW.end_user = 'poison' "
                     "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    try:
        ids = []
        for i, user in enumerate(["ann", "poison", "bob", "cid"]):  # one batch, one bad row
            response = httpx.post(running.base_url + "/v1/chat/completions", timeout=30,
                                  json={"model": "tokenmux/echo", "messages": HELLO},
                                  headers={**AUTH, "X-Request-Id": f"dl-{i}", "X-User": user})
            assert response.status_code == 200
            ids.append(f"dl-{i}")
        for rid in ("dl-0", "dl-2", "dl-3"):
            running.wait_row(rid)
        health = _health(running)
        assert (health.status_code, health.json()["ledger"]) == (200, "ok")
        assert health.json()["ledger_detail"]["dead_letters"] == 1
        dead = (running.wal_dir / "dead-letter.jsonl").read_text().splitlines()
        assert len(dead) == 1 and "dl-1" in dead[0] and "refused by the test" in dead[0]
        assert _chat(running, "after").status_code == 200
        running.wait_row("after")
    finally:
        running.stop()
    assert not running.rows(request_id="dl-1")
    assert running.output.count("quarantined") == 1


def test_a_row_that_cannot_be_encoded_goes_to_the_dead_letters_and_the_answer_is_served(
        tmp_path, upstream):
    # An upstream's count past what any JSON encoder takes (2**64 and beyond).
    huge = 10**20
    running = Gateway(tmp_path, config_for(tmp_path, upstream)).start()
    try:
        response = running.post({"model": "fake-model", "messages": [
            {"role": "user", "content": f"@usage {huge} 5 0"}]},
            headers={"X-Request-Id": "unencodable"})
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == REPLY
        assert _chat(running, "after-unencodable").status_code == 200
        running.wait_row("after-unencodable")
        health = _health(running)
        assert (health.status_code, health.json()["ledger"]) == (200, "ok")
        assert health.json()["ledger_detail"]["dead_letters"] == 1
        dead = (running.wal_dir / "dead-letter.jsonl").read_text().splitlines()
        assert len(dead) == 1
        entry = orjson.loads(dead[0])
        assert "cannot be encoded" in entry["reason"]
        assert "unencodable" in entry["record"]["request_id"]
        assert str(huge) in entry["record"]["prompt_tokens"]
    finally:
        running.stop()
    assert not running.rows(request_id="unencodable")
    assert running.output.count("quarantined") == 1


def test_a_live_streams_checkpoint_is_never_a_row_through_a_database_outage(tmp_path,
                                                                            upstream):
    running = Gateway(tmp_path, config_for(tmp_path, upstream, sqlite=True)).start()
    received: list[str] = []

    def stream() -> None:
        body = {"model": "fake-model", "stream": True, "messages": [
            {"role": "user", "content": "@stallhold 3 4 live-through-outage"}]}
        with httpx.stream("POST", running.base_url + "/v1/chat/completions", json=body,
                          timeout=60, headers={**AUTH, "X-Request-Id": "live"}) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    received.append(line)

    def checkpointed() -> bool:
        return any(b'"live"' in segment.read_bytes() for segment in
                   running.wal_dir.glob("*/seg-*.jsonl"))

    # Three words, then four seconds before the fourth: the relay's first checkpoint is due a
    # second after it starts, so the fourth word leaves one even if the relay started seconds
    # late, as a fresh gateway's first stream may on a loaded machine.
    client = threading.Thread(target=stream, daemon=True)
    with sqlite3.connect(tmp_path / "gateway.db") as conn:
        conn.execute("ALTER TABLE usage RENAME TO usage_away")  # the database refuses writes
    try:
        client.start()
        assert wait_until(checkpointed, timeout=30)
        assert _chat(running, "before-spooling").status_code == 200
        assert wait_until(lambda: _health(running).json()["ledger"] == "spooling", timeout=30)
        # A row in a segment the outage leaves on disk only, which starts with the live
        # stream's checkpoint.
        assert _chat(running, "during-outage").status_code == 200
        with sqlite3.connect(tmp_path / "gateway.db") as conn:
            conn.execute("ALTER TABLE usage_away RENAME TO usage")
        running.wait_row("during-outage", timeout=30)
        running.wait_row("before-spooling")
        assert wait_until(lambda: _health(running).json()["ledger"] == "ok", timeout=30)
        assert running.rows(request_id="live") == []  # still streaming: no row yet
    finally:
        upstream.release("live-through-outage")
        client.join(30)
        running.stop()
    assert received[-1] == "data: [DONE]"
    row = running.wait_row("live")
    assert (row["status"], row["usage_source"]) == (200, "upstream")


def test_rows_behind_a_segment_the_disk_cannot_give_back_land_and_are_counted(tmp_path,
                                                                               upstream):
    # Nothing is committed before the kill (a minute's flush): the three rows stay in a segment.
    fast = config_for(tmp_path, upstream)
    config = fast.replace("ledger: {flush_interval_ms: 50}", "ledger: {flush_interval_ms: 60000}")
    running = Gateway(tmp_path, config).start()
    try:
        for i in range(3):
            assert _chat(running, f"behind-{i}").status_code == 200
        assert running.rows() == []
        _kill(running)
    finally:
        running.stop()
    assert running.config is not None and fast != config
    running.config.write_text(fast)  # the gateways after it flush every 50 ms
    [segment] = running.wal_dir.glob("p*/seg-*.jsonl")
    unreadable = UnreadableSegment(segment.parent, tmp_path)
    restarted = _restart(running)
    try:
        # The rows behind it land; it waits, and the ledger says it is degraded.
        assert {row["request_id"] for row in restarted.rows()} >= {
            f"behind-{i}" for i in range(3)}, restarted.rows()
        health = _health(restarted)
        assert (health.status_code, health.json()["ledger"]) == (200, "degraded")
        detail = health.json()["ledger_detail"]
        assert (detail["disk_failures"], detail["segments_waiting"],
                detail["segments_unreadable"]) == (1, 1, 1)
        assert _chat(restarted, "after").status_code == 200
        assert restarted.wait_row("after")["status"] == 200
        found = samples(restarted)
        assert total(found, "tokenmux_requests_total") == 4
        # The segment is the restarted gateway's now: another starting beside it leaves it.
        beside = _restart(running)
        try:
            assert _health(beside).json()["ledger_detail"]["segments_waiting"] == 0
            assert total(samples(beside), "tokenmux_requests_total") == 0
        finally:
            beside.stop()
        # Once the disk gives it back (here: an empty file), it goes, and the ledger is well.
        unreadable.give_back(b"")
        _wait_for_no_segment(restarted)
        assert _health(restarted).json()["ledger"] == "ok"
        assert not unreadable.path.exists()
    finally:
        restarted.stop()


def test_rows_replayed_into_a_database_outage_are_counted_once(tmp_path, upstream):
    # Nothing is committed before the kill (a minute's flush): 40 rows wait in one segment,
    # more than one statement holds, and the gateway after it finds the ledger table gone.
    fast = config_for(tmp_path, upstream, sqlite=True)
    config = fast.replace("ledger: {flush_interval_ms: 50}", "ledger: {flush_interval_ms: 60000}")
    running = Gateway(tmp_path, config).start()
    try:
        with ThreadPoolExecutor(8) as pool:
            ids = set(pool.map(lambda i: _chat(running, f"replayed-{i}").headers["x-request-id"],
                               range(40)))
        _kill(running)
    finally:
        running.stop()
    assert running.config is not None and fast != config
    running.config.write_text(fast)
    with sqlite3.connect(tmp_path / "gateway.db") as conn:
        conn.execute("ALTER TABLE usage RENAME TO usage_away")
    restarted = _restart(running)
    try:
        # The metrics count each row once, however often the writer tries and fails.
        assert _health(restarted).json()["ledger"] == "spooling"
        failed = _health(restarted).json()["ledger_detail"]["database_failures"]
        assert wait_until(lambda: _health(restarted).json()["ledger_detail"][
            "database_failures"] >= failed + 2)
        assert total(samples(restarted), "tokenmux_requests_total") == 40
        with sqlite3.connect(tmp_path / "gateway.db") as conn:
            conn.execute("ALTER TABLE usage_away RENAME TO usage")
        _wait_for_no_segment(restarted)
        assert {row["request_id"] for row in restarted.rows()} == ids
        assert total(samples(restarted), "tokenmux_requests_total") == 40
    finally:
        restarted.stop()
