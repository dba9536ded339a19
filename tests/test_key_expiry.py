"""A key's expiry as a client and an operator see it: a key works until its time, then is a 401
that says it expired (in each door's own error shape), a later expiry brings it back within the
keys' poll, `null` clears it; the CLI takes a time or a duration; a past or malformed expiry is
refused by the CLI and the admin API alike, naming the option or field."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx2 as httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, Gateway, gateway_of_its_own, wait_until
from tests.fakes.openai_upstream import FakeOpenAI
from tests.test_admin_api import admin, new_key

HELLO = [{"role": "user", "content": "hello"}]
LIFETIME = 6  # seconds the short-lived key has: time for its first request on a loaded machine


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory,
       module_upstream: FakeOpenAI) -> Iterator[Gateway]:
    yield from gateway_of_its_own(tmp_path_factory, module_upstream, "expiry")


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def ask(gw: Gateway, secret: str) -> Any:
    return gw.client(key=secret).chat.completions.create(model="fake-model", messages=HELLO)


def refusal(gw: Gateway, secret: str) -> openai.AuthenticationError | None:
    try:
        ask(gw, secret)
    except openai.AuthenticationError as refused:
        return refused
    return None


def test_a_key_works_until_it_expires_then_a_later_expiry_or_none_brings_it_back(gw):
    expires = datetime.now(UTC) + timedelta(seconds=LIFETIME)
    made = new_key(gw, "short-lived", expires_at=iso(expires))
    secret, key_id = made["secret"], made["id"]
    assert made["expires_at"] == expires.isoformat()
    assert ask(gw, secret).choices[0].message.content
    assert time.time() < expires.timestamp(), "the first request came too late to tell"

    # Refused from its second on, by the running gateway, with no change to poll for.
    deadline = time.monotonic() + LIFETIME + 60
    refused = None
    while refused is None and time.monotonic() < deadline:
        refused = refusal(gw, secret)
        if refused is None:
            time.sleep(0.1)
    assert refused is not None, "the key was still served long after its expiry"
    assert time.time() >= expires.timestamp()
    assert refused.status_code == 401 and refused.code == "invalid_api_key"
    message = refused.body["message"]  # type: ignore[index]
    assert "has expired" in message and iso(expires.replace(microsecond=0)) in message
    assert secret[:6] in message and secret not in message
    listed = gw.cli("keys", "list").stdout
    assert next(line for line in listed.splitlines() if key_id in line).endswith("expired")

    # The Messages door says so in its own shape.
    door = anthropic.Anthropic(base_url=gw.base_url, api_key=secret, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        door.messages.create(model="fake-model", max_tokens=10, messages=HELLO)
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "authentication_error" and "has expired" in error["message"]

    # Another change keeps the expiry that has passed; a later one brings the key back.
    other = admin(gw, "PATCH", f"/admin/v1/keys/{key_id}", json={"rpm": 1000})
    assert other.status_code == 200 and other.json()["expires_at"] == expires.isoformat()
    later = datetime.now(UTC) + timedelta(days=1)
    extended = admin(gw, "PATCH", f"/admin/v1/keys/{key_id}", json={"expires_at": iso(later)})
    assert extended.status_code == 200 and extended.json()["expires_at"] == later.isoformat()
    assert wait_until(lambda: refusal(gw, secret) is None, timeout=15)
    cleared = admin(gw, "PATCH", f"/admin/v1/keys/{key_id}", json={"expires_at": None})
    assert cleared.status_code == 200 and cleared.json()["expires_at"] is None
    assert gw.sql("SELECT expires_at FROM api_keys WHERE id = ?", key_id) == [
        {"expires_at": None}]
    answered = gw.client(key=secret).chat.completions.with_raw_response.create(
        model="fake-model", messages=HELLO)
    assert answered.status_code == 200

    # The ledger bills the requests served, and has no row for the refused ones (a 401 is
    # answered before any row is begun).
    gw.wait_row(answered.headers["x-request-id"])
    assert {r["status"] for r in gw.rows(key_id=key_id)} == {200}


def test_an_expired_admin_key_ends_its_console_session_and_opens_none(gw):
    expires = datetime.now(UTC) + timedelta(seconds=LIFETIME)
    made = new_key(gw, "short-lived-admin", is_admin=True, expires_at=iso(expires))
    opened = httpx.post(gw.base_url + "/ui/login", data={"key": made["secret"]}, timeout=10)
    assert opened.status_code == 303
    jar = {"tokenmux_session": opened.cookies["tokenmux_session"]}

    def keys_by_session() -> httpx.Response:
        return httpx.get(gw.base_url + "/admin/v1/keys", cookies=jar, timeout=10)

    assert keys_by_session().status_code == 200
    assert time.time() < expires.timestamp(), "the session was opened too late to tell"
    assert wait_until(lambda: keys_by_session().status_code == 401, timeout=LIFETIME + 60)
    assert time.time() >= expires.timestamp()
    assert "has ended" in keys_by_session().json()["error"]["message"]
    again = httpx.post(gw.base_url + "/ui/login", data={"key": made["secret"]}, timeout=10)
    assert again.status_code == 401 and "has expired" in again.text
    assert "set-cookie" not in again.headers


def test_the_api_takes_a_zone_or_reads_none_as_utc(gw):
    zoned = new_key(gw, "zoned", expires_at="2099-06-01T12:00:00+02:00")
    assert zoned["expires_at"] == "2099-06-01T10:00:00+00:00"
    naive = new_key(gw, "naive", expires_at="2099-06-01T12:00:00")
    assert naive["expires_at"] == "2099-06-01T12:00:00+00:00"
    listed = admin(gw, "GET", f"/admin/v1/keys/{naive['id']}").json()
    assert listed["expires_at"] == "2099-06-01T12:00:00+00:00"
    assert new_key(gw, "never")["expires_at"] is None


@pytest.mark.parametrize(("value", "says"), [
    ("2020-01-01T00:00:00Z", "2020-01-01T00:00:00Z has passed"),
    ("next tuesday", "ISO 8601"),
    ("30d", "ISO 8601"),
    (1893456000, "ISO 8601"),
    ("9999-12-31T23:59:59-05:00", "before the year 10000"),
])
def test_a_past_or_malformed_expiry_is_a_400_naming_the_field(gw, value, says):
    refused = admin(gw, "POST", "/admin/v1/keys", json={"name": "bad", "expires_at": value})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error", "expires_at", None)
    assert says in error["message"] and error["message"].startswith("expires_at")
    live = new_key(gw, "patched-badly")
    patched = admin(gw, "PATCH", f"/admin/v1/keys/{live['id']}", json={"expires_at": value})
    assert patched.status_code == 400 and patched.json()["error"]["param"] == "expires_at"
    assert admin(gw, "GET", f"/admin/v1/keys/{live['id']}").json()["expires_at"] is None


def test_the_cli_takes_a_duration_or_a_time_and_lists_it(gw):
    before = datetime.now(UTC)
    created = gw.cli("keys", "create", "--name", "month-long", "--expires", "30d")
    assert "expires " in created.stderr
    gw.cli("keys", "create", "--name", "zoned-cli", "--expires", "2099-06-01T12:00:00+02:00")
    listed = {k["name"]: k for k in json.loads(gw.cli("keys", "list", "--json").stdout)}
    month = datetime.fromisoformat(listed["month-long"]["expires_at"])
    assert before + timedelta(days=30) <= month <= datetime.now(UTC) + timedelta(days=30)
    assert listed["zoned-cli"]["expires_at"] == "2099-06-01T10:00:00+00:00"
    text = gw.cli("keys", "list").stdout
    assert "EXPIRES" in text.splitlines()[0]
    line = next(line for line in text.splitlines() if "zoned-cli" in line)
    assert "2099-06-01T10:00:00Z" in line and line.endswith("active")
    assert ADMIN_KEY not in text


@pytest.mark.parametrize(("value", "says"), [
    ("2020-01-01T00:00:00Z", "2020-01-01T00:00:00Z has passed"),
    ("soon", "an ISO 8601 time such as 2027-01-31T00:00:00Z, or a duration such as 30d"),
    ("30y", "or a duration such as 30d"),
])
def test_the_cli_refuses_a_past_or_malformed_expiry(gw, value, says):
    refused = gw.cli("keys", "create", "--name", "bad-cli", "--expires", value, check=False)
    assert refused.returncode == 2, refused.stderr  # click's usage error
    assert "--expires" in refused.stderr and says in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not gw.sql("SELECT id FROM api_keys WHERE name = 'bad-cli'")
