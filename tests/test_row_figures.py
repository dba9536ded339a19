"""What a ledger row's timings mean: `latency_ms`, `ttft_ms` and `queue_ms` are milliseconds of
the request's own life. Each is bounded below by a wait the upstream (or a full channel) imposed
and above by the time the client itself measured, so the bounds are wide on a loaded machine."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import pytest

from tests.conftest import Gateway, started_gateway, wait_until
from tests.fakes.openai_upstream import FakeOpenAI
from tokenmux.ledger import UsageRow

STALL_S = 0.6


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Gateway]:
    running = started_gateway(tmp_path_factory.mktemp("row-figures"), textwrap.dedent(f"""\
        routing: {{breaker: {{failures: 1000000}}}}
        providers:
          fake: {{kind: openai, base_url: "{upstream.base_url}", api_key: sk-fake}}
        models:
          - name: open
            channels: [{{provider: fake, model: open-upstream}}]
          - name: one-at-a-time
            channels: [{{provider: fake, model: gated-figures, max_concurrency: 1}}]
        """))
    yield running
    running.stop()


def timed(gateway: Gateway, model: str, text: str, rid: str, timeout_ms: int | None = None,
          **fields: object) -> tuple[httpx.Response, float]:
    """The response and the milliseconds the client waited for all of it."""
    headers = {"X-Request-Id": rid}
    if timeout_ms is not None:
        headers["X-Timeout"] = str(timeout_ms)
    started = time.monotonic()
    response = gateway.post({"model": model, "messages": [{"role": "user", "content": text}],
                             **fields}, headers=headers)
    return response, (time.monotonic() - started) * 1000


def test_latency_ms_is_the_answers_time_in_milliseconds(gated):
    response, waited_ms = timed(gated, "open", f"@stall {STALL_S}", "figures-latency")
    assert response.status_code == 200
    row = gated.wait_row("figures-latency")
    assert STALL_S * 1000 <= row["latency_ms"] <= waited_ms
    assert row["ttft_ms"] is None
    assert row["queue_ms"] == 0


def test_a_streams_ttft_ms_is_its_first_chunks_time_and_within_its_latency(gated):
    response, waited_ms = timed(gated, "open", f"@stall {STALL_S}", "figures-ttft", stream=True)
    assert response.status_code == 200 and response.text.rstrip().endswith("data: [DONE]")
    row = gated.wait_row("figures-ttft")
    assert STALL_S * 1000 <= row["ttft_ms"] <= row["latency_ms"] <= waited_ms


def test_queue_ms_is_the_wait_for_a_full_channel_in_milliseconds(gated, upstream):
    with ThreadPoolExecutor(1) as pool:
        holder = pool.submit(timed, gated, "one-at-a-time", "@hold figures-queue",
                             "figures-holder")
        try:
            assert wait_until(lambda: any(r.body["model"] == "gated-figures"
                                          for r in upstream.received), timeout=10)
            # The channel stays full: the waiter queues until its deadline.
            response, waited_ms = timed(gated, "one-at-a-time", "hello", "figures-waiter",
                                        timeout_ms=5000)
        finally:
            upstream.release("figures-queue")
        assert holder.result(timeout=30)[0].status_code == 200
    assert response.status_code == 408
    row = gated.wait_row("figures-waiter")
    # Queued from just after arrival until the deadline: most of its 5000 ms, never more than
    # the client waited.
    assert 4000 <= row["queue_ms"] <= waited_ms


def test_a_rows_timings_keep_the_microsecond():
    """Milliseconds to three decimals: finer would be noise, coarser would hide what the
    gateway's own cost is (a fraction of a millisecond)."""
    row = UsageRow("req", None, None, None, "m", None, 1, "medium", 0.98765, True, 200, None,
                   prompt_tokens=1, completion_tokens=1, cached_tokens=0, reasoning_tokens=0,
                   usage_source="upstream", latency_ms=1234.56789, ttft_ms=12.34567)
    record = row.as_record()
    assert (record["latency_ms"], record["ttft_ms"], record["queue_ms"]) == (
        1234.568, 12.346, 0.988)
