"""The usage ledger: one row per request, what it holds, and that a clean stop keeps every row."""

from __future__ import annotations

import json
import signal
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx2 as httpx

from tests.conftest import Gateway, config_for, wait_until
from tests.fakes.openai_upstream import REPLY
from tests.test_metrics import samples, total

HELLO = [{"role": "user", "content": "Say hello"}]


def test_a_row_holds_who_what_tokens_cost_and_timing(gateway):
    secret = gateway.cli("keys", "create", "--name", "ledger-team").stdout.split()[-1]
    raw = gateway.client(key=secret).chat.completions.with_raw_response.create(
        model="fake-alias", messages=HELLO, user="alice")
    row = gateway.wait_row(raw.headers["x-request-id"])
    words = len(REPLY.split())
    assert row["key_name"] == "ledger-team"
    assert row["key_id"].startswith("key_")
    assert row["end_user"] == "alice"
    assert row["requested_model"] == "fake-alias"
    assert row["model"] == "fake-model"
    assert row["provider"] == "fake"
    assert row["upstream_model"] == "upstream-model-v1"
    assert row["status"] == 200
    assert row["stream"] == 0
    assert (row["prompt_tokens"], row["completion_tokens"]) == (11, words)
    assert row["usage_source"] == "upstream"
    # The config prices fake-model at $1 in and $2 out per million tokens.
    assert Decimal(str(row["cost_usd"])) == (Decimal(11) + 2 * Decimal(words)) / 1_000_000
    assert 0 < row["latency_ms"] < 10_000
    assert row["ttft_ms"] is None


def test_end_user_from_header_and_stream_timing(gateway):
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="fake-model", messages=HELLO, stream=True, extra_headers={"X-User": "bob"})
    list(raw.parse())
    row = gateway.wait_row(raw.headers["x-request-id"])
    assert row["end_user"] == "bob"
    assert row["stream"] == 1
    assert row["completion_tokens"] == len(REPLY.split())
    assert 0 < row["ttft_ms"] <= row["latency_ms"]


def test_refused_requests_are_recorded_with_their_status(gateway):
    response = gateway.post({"model": "nope", "messages": HELLO})
    row = gateway.wait_row(response.headers["x-request-id"])
    assert (row["status"], row["error_code"]) == (404, "model_not_found")
    assert row["requested_model"] == "nope"
    assert row["prompt_tokens"] == row["completion_tokens"] == 0


def test_usage_command_prints_rows_and_totals(gateway):
    secret = gateway.cli("keys", "create", "--name", "report-key").stdout.split()[-1]
    for _ in range(3):
        gateway.client(key=secret).chat.completions.create(model="fake-model", messages=HELLO)
    assert wait_until(lambda: len(gateway.rows(key_name="report-key")) == 3)
    document = json.loads(gateway.cli("usage", "--json").stdout)
    by_key = {t["key"]: t for t in document["totals"]["by_key"]}
    assert by_key["report-key"]["requests"] == 3
    assert by_key["report-key"]["completion_tokens"] == 3 * len(REPLY.split())
    assert by_key["report-key"]["cost_usd"] > 0
    assert any(t["model"] == "fake-model" for t in document["totals"]["by_model"])
    assert document["rows"][0]["request_id"]
    table = gateway.cli("usage").stdout
    assert "report-key" in table and "Totals per model" in table


def test_clean_stop_flushes_every_row(tmp_path, upstream):
    # A flush interval of a minute: only the shutdown flush can have written these rows.
    config = config_for(tmp_path, upstream).replace("flush_interval_ms: 50",
                                                    "flush_interval_ms: 60000")
    running = Gateway(tmp_path, config).start()
    try:
        client = running.client()

        def one(i: int) -> str:
            raw = client.chat.completions.with_raw_response.create(
                model="fake-model", messages=HELLO, stream=i % 2 == 0)
            if i % 2 == 0:
                list(raw.parse())
            return raw.headers["x-request-id"]

        with ThreadPoolExecutor(8) as pool:
            ids = set(pool.map(one, range(40)))
        assert running.rows() == []
    finally:
        code = running.stop(signal.SIGTERM)
    assert code == 0, running.output
    rows = running.rows()
    assert {r["request_id"] for r in rows} == ids
    assert len(rows) == 40


def _health(running: Gateway) -> dict:
    return httpx.get(running.base_url + "/health", timeout=30).json()


def _waiting_rows(directory) -> set[str]:
    """The request ids of the rows in the write-ahead segments under DIRECTORY."""
    return {json.loads(line)["request_id"] for segment in directory.glob("*/seg-*.jsonl")
            for line in segment.read_text().splitlines() if line.strip()}


def test_rows_survive_a_database_outage_through_the_spool(tmp_path, upstream):
    # SQLite's own outage (test_postgres_outage.py cuts PostgreSQL's connections instead).
    running = Gateway(tmp_path, config_for(tmp_path, upstream, sqlite=True)).start()
    database = tmp_path / "gateway.db"
    try:
        # Take the ledger table away under the running gateway: its writes must fail.
        with sqlite3.connect(database) as conn:
            conn.execute("ALTER TABLE usage RENAME TO usage_away")
        ids = [running.post({"model": "fake-model", "messages": HELLO}).headers["x-request-id"]
               for _ in range(5)]
        wal = tmp_path / "gateway.db.ledger"
        assert wait_until(lambda: _health(running)["ledger"] == "spooling")
        assert _waiting_rows(wal) == set(ids)
        # The metrics count the rows as they wait, once each, however often the writer retries.
        assert wait_until(lambda: total(samples(running), "tokenmux_requests_total") == 5)
        failed = _health(running)["ledger_detail"]["database_failures"]
        assert wait_until(lambda: _health(running)["ledger_detail"]["database_failures"]
                          >= failed + 2)
        assert total(samples(running), "tokenmux_requests_total") == 5
        with sqlite3.connect(database) as conn:
            conn.execute("ALTER TABLE usage_away RENAME TO usage")
        # The writer retries on its own, and nothing is counted twice.
        ids.append(running.post({"model": "fake-model", "messages": HELLO})
                   .headers["x-request-id"])
        for request_id in ids:
            running.wait_row(request_id)
        assert wait_until(lambda: not _waiting_rows(wal))
        assert wait_until(lambda: _health(running)["ledger"] == "ok")
        assert total(samples(running), "tokenmux_requests_total") == 6
    finally:
        running.stop()
    assert sorted(r["request_id"] for r in running.rows()) == sorted(ids)
