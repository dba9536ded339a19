"""A clean stop as documented: SIGTERM or SIGINT stops accepting, lets requests in flight finish
within `server.shutdown_grace_s`, ends the streams left with a `shutting_down` error event and a
whole chunked body, bills them, flushes every row and exits."""

from __future__ import annotations

import signal
import threading
import time

import httpx2 as httpx
import orjson
import pytest

from tests.conftest import ADMIN_KEY, Gateway, config_for, wait_until
from tests.streaming import Streamed

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
GRACE = 2


class Posted(threading.Thread):
    def __init__(self, running: Gateway, rid: str, text: str):
        super().__init__(daemon=True)
        self.url = running.base_url + "/v1/chat/completions"
        self.rid = rid
        self.text = text
        self.response: httpx.Response | None = None

    def run(self) -> None:
        self.response = httpx.post(self.url, timeout=60, headers={**AUTH, "X-Request-Id": self.rid},
                                   json={"model": "fake-model",
                                         "messages": [{"role": "user", "content": self.text}]})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_ends_what_outlives_the_grace_with_an_error_event_and_bills_it(
        tmp_path, upstream, sig):
    config = config_for(tmp_path, upstream).replace(
        "server: {max_request_bytes: 65536}",
        f"server: {{max_request_bytes: 65536, shutdown_grace_s: {GRACE}}}")
    running = Gateway(tmp_path, config).start()
    stalled = Streamed(running, "stalled", "@slow 0.7")  # 8 words: 5.6 s, far past the grace
    quick = Streamed(running, "quick", "@slow 0.1")  # finishes within the grace
    waiting = Posted(running, "waiting", "@stall 30")  # a JSON answer that never comes in time
    try:
        stalled.start()
        waiting.start()
        assert wait_until(lambda: stalled.words >= 1, timeout=30)
        quick.start()
        assert wait_until(lambda: len(quick.events) >= 1, timeout=30)
        assert running.process is not None
        began = time.monotonic()
        running.process.send_signal(sig)
        code = running.process.wait(60)
        took = time.monotonic() - began
    finally:
        running.stop()
    for thread in (stalled, quick, waiting):
        thread.join(30)
    assert code == 0, running.output
    # It waited the grace out, and not much longer (60 s before the fix).
    assert GRACE - 0.2 <= took < GRACE + 15, took

    # The stream in flight within the grace ended as usual.
    assert quick.error is None and quick.events[-1] == "[DONE]"
    # The stalled one: some words, then the error event, then a proper end of the body.
    assert stalled.error is None, stalled.error
    assert 1 <= stalled.words < 8
    last = orjson.loads(stalled.events[-1])
    assert last["error"]["code"] == "shutting_down" and "[DONE]" not in stalled.events
    # The JSON request got an answer, not a cut connection.
    assert waiting.response is not None and waiting.response.status_code == 503
    assert waiting.response.json()["error"]["code"] == "shutting_down"

    rows = {row["request_id"]: row for row in running.rows()}
    assert rows["quick"]["status"] == 200
    assert (rows["stalled"]["status"], rows["stalled"]["error_code"]) == (503, "shutting_down")
    assert rows["stalled"]["completion_tokens"] >= stalled.words >= 1
    assert rows["stalled"]["usage_source"] == "counted"
    assert (rows["waiting"]["status"], rows["waiting"]["error_code"]) == (503, "shutting_down")
    assert len(rows) == 3


def test_a_stop_with_nothing_in_flight_is_prompt(tmp_path, upstream):
    running = Gateway(tmp_path, config_for(tmp_path, upstream)).start()
    try:
        assert running.post({"model": "tokenmux/echo", "messages": [
            {"role": "user", "content": "hi"}]}).status_code == 200
        assert running.process is not None
        began = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        code = running.process.wait(60)
        took = time.monotonic() - began
    finally:
        running.stop()
    assert code == 0 and took < 10, took  # the default grace is 30 s: it was not waited for
    assert len(running.rows()) == 1
    # Nothing is left on disk for a next start.
    assert not list(running.wal_dir.glob("*/seg-*.jsonl"))
