"""Retry-safe requests across gateway instances sharing one Redis: an id is claimed by one
instance at a time, and a copy on another instance gets the answer through Redis."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import Gateway, config_for, free_port, wait_until
from tests.fakes.openai_upstream import REPLY, FakeOpenAI
from tests.test_idempotency import billed, body, calls, rows_for, tag

REDIS_URL = os.environ.get("TOKENMUX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def pair(tmp_path: Path, upstream: FakeOpenAI) -> Iterator[tuple[Gateway, Gateway]]:
    # Other suites share the Redis server: this test's keys live under a prefix of its own.
    shared = f"redis: {REDIS_URL}\nredis_prefix: 'test-{uuid.uuid4().hex}:'\n"
    gateways = []
    try:
        for name in ("a", "b"):
            directory = tmp_path / name
            directory.mkdir()
            gateways.append(Gateway(directory, config_for(directory, upstream, shared)).start())
        yield gateways[0], gateways[1]
    finally:
        for gateway in gateways:
            gateway.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_one_id_sent_to_two_instances_at_once_goes_upstream_once(pair, upstream, stream):
    one, two = pair
    rid, user, hold = tag(), tag(), tag()
    payload = body(user, f"@hold {hold}", **({"stream": True} if stream else {}))
    headers = {"X-Request-Id": rid}
    with ThreadPoolExecutor(4) as pool:
        sent = [pool.submit(gateway.post, payload, headers=headers)
                for gateway in (one, two, one, two)]
        assert wait_until(lambda: calls(upstream, user) >= 1)
        time.sleep(1.0)  # every copy has arrived, and is waiting
        upstream.release(hold)
        answers = [future.result(60) for future in sent]
    assert calls(upstream, user) == 1
    assert [a.status_code for a in answers] == [200] * 4
    assert len({a.content for a in answers}) == 1
    assert sorted(a.headers.get("Idempotent-Replayed", "") for a in answers) == [""] + ["true"] * 3
    if not stream:
        assert answers[0].json()["choices"][0]["message"]["content"] == REPLY
    assert wait_until(lambda: len(one.rows(request_id=rid) + two.rows(request_id=rid)) == 4)
    everywhere = one.rows(request_id=rid) + two.rows(request_id=rid)
    (first,) = billed(everywhere)
    assert first["status"] == 200 and first["completion_tokens"] > 0
    assert [r["replay_of"] for r in everywhere if r["replay_of"]] == [first["id"]] * 3


def test_a_kept_answer_is_replayed_by_the_other_instance(pair, upstream):
    one, two = pair
    rid, user = tag(), tag()
    first = one.post(body(user), headers={"X-Request-Id": rid})
    again = two.post(body(user), headers={"X-Request-Id": rid})
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    reused = two.post(body(user, "another body"), headers={"X-Request-Id": rid})
    assert (reused.status_code, reused.json()["error"]["code"]) == (422, "idempotency_key_reused")
    assert calls(upstream, user) == 1
    (replay,) = [row for row in rows_for(two, rid, 2) if row["replay_of"]]
    assert replay["replay_of"] == billed(rows_for(one, rid, 1))[0]["id"]


def test_a_failure_on_one_instance_reaches_the_copy_waiting_on_the_other(pair, upstream):
    one, two = pair
    rid, user, hold = tag(), tag(), tag()
    payload = body(user, f"@hold {hold}")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(one.post, payload, headers={"X-Request-Id": rid,
                                                        "X-Timeout": "5000"})
        assert wait_until(lambda: calls(upstream, user) == 1)
        copy = pool.submit(two.post, payload, headers={"X-Request-Id": rid})
        failed, copied = first.result(60), copy.result(60)
    upstream.release(hold)
    assert failed.status_code == copied.status_code == 408
    assert copied.json() == failed.json()
    assert calls(upstream, user) == 1
    assert two.post(payload, headers={"X-Request-Id": rid}).status_code == 200  # free again


def test_a_keyed_request_is_refused_while_redis_does_not_answer_if_so_configured(
        tmp_path, upstream):
    config = config_for(tmp_path, upstream, f"redis: redis://127.0.0.1:{free_port()}/0\n"
                                            "redis_failure: closed\n")
    running = Gateway(tmp_path, config).start()
    try:
        user = tag()
        refused = running.post(body(user), headers={"X-Request-Id": tag()})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "idempotency_unavailable"
        assert refused.headers["Retry-After"] == "1"
        assert calls(upstream, user) == 0
        assert running.post(body(user)).status_code == 200  # no key: served as ever
    finally:
        running.stop()


def test_a_keyed_request_runs_unkeyed_while_redis_does_not_answer_by_default(tmp_path, upstream):
    config = config_for(tmp_path, upstream, f"redis: redis://127.0.0.1:{free_port()}/0\n")
    running = Gateway(tmp_path, config).start()
    try:
        user, rid = tag(), tag()
        answers = [running.post(body(user), headers={"X-Request-Id": rid}) for _ in range(2)]
        # Served, as by a gateway without Redis would serve a request without a key: each
        # copy runs (the promise lapses while Redis is away, and /health says so).
        assert [a.status_code for a in answers] == [200, 200]
        assert "Idempotent-Replayed" not in answers[1].headers
        assert calls(upstream, user) == 2
        health = httpx.get(running.base_url + "/health", timeout=10).json()
        assert health["redis"] == "degraded" and health["status"] == "ok"
        assert "Redis does not answer" in running.log_so_far()
    finally:
        running.stop()
