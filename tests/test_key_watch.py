"""The key watch survives any row and any outage, and /health says when its view is stale."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import Gateway, started_gateway, wait_until

ECHO = {"model": "tokenmux/echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[Gateway]:
    running = started_gateway(tmp_path, "routing: {}\n")
    yield running
    running.stop()


def _health(gateway: Gateway) -> httpx.Response:
    return httpx.get(gateway.base_url + "/health", timeout=10)


def test_a_key_row_with_an_unknown_tier_stops_neither_the_watch_nor_the_others(watched):
    secret = watched.cli("keys", "create", "--name", "kept").stdout.split()[-1]
    assert watched.post(ECHO, key=secret).status_code == 200
    watched.sql("INSERT INTO api_keys (id, name, key_hash, prefix, is_admin, tier, "
                  "created_at, updated_at) VALUES ('key_odd', 'odd', 'ab', 'tm-odd', false, "
                  "'warp', '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
    assert wait_until(lambda: "key_odd is left out: unknown tier 'warp'" in watched.log_so_far())
    # Revocation reaches the gateway only through the watch: it is still running.
    watched.cli("keys", "revoke", "kept")
    assert wait_until(lambda: watched.post(ECHO, key=secret).status_code == 401, timeout=5)
    health = _health(watched)
    assert (health.status_code, health.json()["keys"]) == (200, "ok")


def test_health_says_stale_while_keys_cannot_be_read_and_ok_once_they_can(watched):
    assert _health(watched).json()["keys"] == "ok"
    watched.sql("ALTER TABLE api_keys RENAME TO api_keys_away")
    cut = time.monotonic()
    try:
        # Twenty polls of half a second without a good refresh: 10 s after the last good one,
        # which came about a poll before the cut (the bounds leave seconds for a busy machine).
        assert wait_until(lambda: _health(watched).json()["keys"] == "stale", timeout=30,
                          interval=0.2)
        assert 5 <= time.monotonic() - cut <= 17
        health = _health(watched)
        assert (health.status_code, health.json()["status"]) == (503, "unavailable")
    finally:
        watched.sql("ALTER TABLE api_keys_away RENAME TO api_keys")
    assert wait_until(lambda: _health(watched).status_code == 200, timeout=10)
    assert _health(watched).json()["keys"] == "ok"
    log = watched.log_so_far()
    # Logged once when the refreshes began to fail and once when they came back, not per poll.
    assert log.count("could not refresh API keys") == 1
    assert log.count("API keys refresh again") == 1
