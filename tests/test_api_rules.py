"""The API section's rules as a client sees them: the ranges of the penalties, `top_p` and the
other bounded fields, the X-Request-Id rule on every kind of response, and `/health` asking the
database each time."""

from __future__ import annotations

import secrets
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import psycopg
import pytest

from tests.conftest import ADMIN_KEY, Gateway

HELLO = [{"role": "user", "content": "hello"}]
POSTGRES = "postgresql://postgres@127.0.0.1:5432"


@pytest.mark.parametrize(("field", "value"), [
    ("presence_penalty", 2.01), ("presence_penalty", -2.5), ("frequency_penalty", 3),
    ("frequency_penalty", -2.01), ("top_p", -0.1), ("top_p", -1)])
def test_penalties_and_top_p_out_of_range_are_400_naming_the_field(gateway, upstream, field,
                                                                    value):
    before = len(upstream.received)
    response = gateway.post({"model": "fake-model", "messages": HELLO, field: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (field, None,
                                                             "invalid_request_error")
    assert len(upstream.received) == before  # refused before anything went upstream


@pytest.mark.parametrize(("field", "value"), [
    ("presence_penalty", -2), ("presence_penalty", 2), ("frequency_penalty", -2),
    ("frequency_penalty", 2), ("top_p", 0), ("top_p", 1)])
def test_penalties_and_top_p_at_their_bounds_are_served(gateway, upstream, field, value):
    response = gateway.post({"model": "fake-model", "messages": HELLO, field: value})
    assert response.status_code == 200
    assert upstream.last().body[field] == value


# Each other bounded field, one step past each of its ends (a field's error names it).
PAST_BOUNDS = [("temperature", 2.01), ("max_tokens", 1_000_001), ("max_completion_tokens", 0),
               ("top_logprobs", -1), ("top_logprobs", 21), ("seed", -(2**63) - 1),
               ("seed", 2**63), ("logit_bias", {"11": -101}), ("logit_bias", {"11": 100.5})]
AT_BOUNDS = [("temperature", 0), ("temperature", 2), ("max_tokens", 1),
             ("max_tokens", 1_000_000), ("max_completion_tokens", 1), ("n", 1),
             ("top_logprobs", 0), ("top_logprobs", 20), ("seed", 2**63 - 1),
             ("seed", -(2**63)), ("logit_bias", {"11": 100, "12": -100}),
             ("stop", ["a", "b", "c", "d"]), ("stop", "a")]


@pytest.mark.parametrize(("field", "value"), PAST_BOUNDS)
def test_a_number_past_its_fields_bounds_is_400_naming_the_field(gateway, upstream, field,
                                                                 value):
    before = len(upstream.received)
    response = gateway.post({"model": "fake-model", "messages": HELLO, field: value})
    assert response.status_code == 400, response.text
    param = response.json()["error"]["param"]
    assert param == (f"logit_bias.{next(iter(value))}" if field == "logit_bias" else field)
    assert len(upstream.received) == before


@pytest.mark.parametrize(("field", "value"), AT_BOUNDS)
def test_a_number_at_its_fields_bounds_is_served_unchanged(gateway, upstream, field, value):
    extra = {"logprobs": True} if field == "top_logprobs" else {}
    response = gateway.post({"model": "fake-model", "messages": HELLO, field: value, **extra})
    assert response.status_code == 200, response.text
    assert upstream.last().body[field] == value


ALLOWED = "Trace.id_9:part-" + "x" * 112  # every allowed kind of character, 128 in all


def test_a_request_id_of_allowed_characters_up_to_128_is_kept(gateway):
    assert len(ALLOWED) == 128
    response = gateway.post({"model": "fake-model", "messages": HELLO},
                            headers={"X-Request-Id": ALLOWED})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == ALLOWED
    assert gateway.wait_row(ALLOWED)["status"] == 200


@pytest.mark.parametrize("given", [ALLOWED + "x", "has space", "slash/id", "semi;colon",
                                   "<tag>", "quote'd", "a,b"])
def test_any_other_request_id_is_replaced_by_a_fresh_one(gateway, given):
    ids = []
    for _ in range(2):
        response = gateway.post({"model": "fake-model", "messages": HELLO},
                                headers={"X-Request-Id": given})
        assert response.status_code == 200
        ids.append(response.headers["x-request-id"])
    assert all(rid.startswith("req_") and rid != given for rid in ids)
    assert ids[0] != ids[1]
    assert gateway.wait_row(ids[0])["status"] == 200  # the ledger has the id the client got


def test_every_response_carries_the_request_id(gateway):
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    base = gateway.base_url
    chat = base + "/v1/chat/completions"
    calls = {
        "answer": ("POST", chat, {"model": "fake-model", "messages": HELLO}, auth),
        "stream": ("POST", chat, {"model": "fake-model", "messages": HELLO, "stream": True},
                   auth),
        "invalid": ("POST", chat, {"model": "fake-model", "messages": []}, auth),
        "no-key": ("POST", chat, {"model": "fake-model", "messages": HELLO}, {}),
        "unknown-model": ("POST", chat, {"model": "no-such", "messages": HELLO}, auth),
        "upstream-error": ("POST", chat, {"model": "fake-model", "messages": [
            {"role": "user", "content": "@fail 500"}]}, auth),
        "models": ("GET", base + "/v1/models", None, auth),
        "one-model": ("GET", base + "/v1/models/fake-model", None, auth),
        "health": ("GET", base + "/health", None, {}),
        "live": ("GET", base + "/health/live", None, {}),
        "no-route": ("GET", base + "/v1/nothing-here", None, auth),
    }
    statuses = {}
    for name, (method, url, body, headers) in calls.items():
        rid = f"every-{name}"
        response = httpx.request(method, url, json=body, timeout=30,
                                 headers={**headers, "X-Request-Id": rid})
        statuses[name] = response.status_code
        assert response.headers.get("x-request-id") == rid, name
        fresh = httpx.request(method, url, json=body, headers=headers, timeout=30)
        assert fresh.headers.get("x-request-id", "").startswith("req_"), name
    assert statuses == {"answer": 200, "stream": 200, "invalid": 400, "no-key": 401,
                        "unknown-model": 404, "upstream-error": 502, "models": 200,
                        "one-model": 200, "health": 200, "live": 200, "no-route": 404}


@pytest.fixture
def on_postgres(tmp_path: Path) -> Iterator[tuple[Gateway, str]]:
    name = f"tokenmux_rules_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES + "/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    running = Gateway(tmp_path, textwrap.dedent(f"""\
        database: {POSTGRES}/{name}
        admin_key: {ADMIN_KEY}
        ledger: {{flush_interval_ms: 50}}
        """)).start()
    try:
        yield running, name
    finally:
        running.stop()
        with psycopg.connect(POSTGRES + "/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_health_is_503_once_the_database_is_gone(on_postgres):
    running, name = on_postgres
    health = httpx.get(running.base_url + "/health", timeout=10)
    body = health.json()
    assert health.status_code == 200
    assert (body["status"], body["database"], body["keys"], body["ledger"]) == (
        "ok", "ok", "ok", "ok")
    with psycopg.connect(POSTGRES + "/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    # Asked anew on every call: the answer turns at once, with no key needed.
    health = httpx.get(running.base_url + "/health", timeout=30)
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "unavailable"
    assert body["database"].startswith("unreachable")
    assert health.headers["x-request-id"].startswith("req_")
    # The process itself still serves: liveness stays 200.
    assert httpx.get(running.base_url + "/health/live", timeout=10).status_code == 200
