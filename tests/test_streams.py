"""Streams that go wrong: cut mid-way by the upstream, or abandoned by the client."""

from __future__ import annotations

import time

import httpx2 as httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, wait_until


def test_upstream_dropping_mid_stream_raises_in_the_sdk_and_is_billed(gateway):
    stream = gateway.client().chat.completions.with_raw_response.create(
        model="fake-model", stream=True, messages=[{"role": "user", "content": "@drop 3"}])
    request_id = stream.headers["x-request-id"]
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream.parse():
            received.append(chunk)
    assert "cut its response short" in str(caught.value)
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == "Hello from the"
    row = gateway.wait_row(request_id)
    assert row["status"] == 502
    assert row["error_code"] == "bad_gateway"
    assert row["usage_source"] == "counted"
    assert row["completion_tokens"] == 3  # what was delivered, counted by the gateway
    assert row["ttft_ms"] is not None


def test_upstream_ending_a_stream_unfinished_is_an_error_not_a_clean_end(gateway):
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in gateway.client().chat.completions.create(
                model="fake-model", stream=True,
                messages=[{"role": "user", "content": "@truncate 4"}]):
            received.append(chunk)
    assert "ended the stream before it finished" in str(caught.value)
    assert "".join(c.choices[0].delta.content or "" for c in received) == "Hello from the fake"


def test_the_wire_ends_with_an_error_event_and_no_done(gateway):
    with httpx.stream("POST", gateway.base_url + "/v1/chat/completions", timeout=10,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                      json={"model": "fake-model", "stream": True,
                            "messages": [{"role": "user", "content": "@drop 2"}]}) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line]
    assert events[-1].startswith('data: {"error":')
    assert "data: [DONE]" not in events
    assert all(e.startswith("data: ") for e in events)


def test_client_leaving_a_stream_cancels_the_upstream_request(gateway, upstream):
    client = gateway.client()
    raw = client.chat.completions.with_raw_response.create(
        model="fake-model", stream=True, user="leaver-1",
        messages=[{"role": "user", "content": "@slow 0.3"}])
    request_id = raw.headers["x-request-id"]
    stream = raw.parse()
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    started = time.monotonic()
    stream.close()
    assert wait_until(lambda: "leaver-1" in upstream.abandoned, timeout=10)
    # The upstream would have run about three more seconds; it was stopped well before.
    assert time.monotonic() - started < 3
    row = gateway.wait_row(request_id)
    assert row["status"] == 499
    assert row["end_user"] == "leaver-1"
