"""`GET /metrics`: Prometheus's text, parsed with prometheus_client's own parser after known
traffic through the `openai` SDK, and compared with what the ledger recorded."""

from __future__ import annotations

import os
import signal
import tempfile
import textwrap
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_KEY, Gateway, config_for, started_gateway, wait_until
from tests.fakes.openai_upstream import FakeOpenAI

FRESH = {"Connection": "close"}
HI = [{"role": "user", "content": "hi"}]
# Tokens whose price in dollars is a power of two: the cost sums are exact in a float too.
PRICED = [{"role": "user", "content": "@usage 250000 125000 0"}]  # fake-model: $0.25 + $0.25


def scrape(gateway: Gateway, key: str | None = ADMIN_KEY) -> httpx.Response:
    headers = {**FRESH, **({"Authorization": f"Bearer {key}"} if key else {})}
    return httpx.get(gateway.base_url + "/metrics", headers=headers, timeout=10)


def samples(gateway: Gateway, key: str | None = ADMIN_KEY
            ) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of the scrape, by sample name (`tokenmux_requests_total`, …)."""
    response = scrape(gateway, key)
    assert response.status_code == 200, response.text
    found: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[sample.name].append((sample.labels, sample.value))
    return found


def total(found: dict[str, list[tuple[dict[str, str], float]]], name: str,
          **labels: str) -> float:
    return sum(value for have, value in found.get(name, [])
               if all(have.get(k) == v for k, v in labels.items()))


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("metrics")
    running = Gateway(directory, config_for(directory, upstream)).start()
    yield running
    running.stop()


def test_known_traffic_is_counted_as_the_ledger_recorded_it(metered: Gateway) -> None:
    client = metered.client()
    for _ in range(3):
        client.chat.completions.create(model="fake-model", messages=PRICED)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(model="fake-alias", messages=PRICED,  # type: ignore[arg-type]
                                                 stream=True))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 125000
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=HI)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):  # the upstream's own 400, passed on
        client.chat.completions.create(model="fake-model", messages=[  # type: ignore[arg-type]
            {"role": "user", "content": "@fail 400"}])
    # The first channel is down: a second attempt, on the next channel, answers.
    answer = client.chat.completions.with_raw_response.create(
        model="failover-model", messages=HI)  # type: ignore[arg-type]
    assert answer.headers["X-TokenMux-Attempts"] == "2"
    with pytest.raises(openai.InternalServerError):  # every attempt fails
        client.chat.completions.create(model="dead-model", messages=HI)  # type: ignore[arg-type]

    assert wait_until(lambda: len(metered.rows()) == 8, timeout=20)
    rows = metered.rows()
    assert wait_until(lambda: total(samples(metered), "tokenmux_requests_total") == 8)
    found = samples(metered)

    def requests(**labels: str) -> float:
        return total(found, "tokenmux_requests_total", **labels)

    assert requests(model="fake-model", provider="fake", status_class="2xx", door="chat",
                    tier="medium", error_code="") == 4
    assert requests(model="", provider="", status_class="4xx",
                    error_code="model_not_found") == 1
    assert requests(model="fake-model", status_class="4xx", error_code="fake_code") == 1
    assert requests(model="failover-model", provider="fake", status_class="2xx") == 1
    dead = [row for row in rows if row["requested_model"] == "dead-model"]
    assert requests(model="dead-model", provider="dead", status_class="5xx",
                    error_code=dead[0]["error_code"]) == 1
    # Tokens and cost, label set by label set, as the ledger has them.
    for kind, column in (("prompt", "prompt_tokens"), ("completion", "completion_tokens"),
                         ("cached", "cached_tokens"), ("reasoning", "reasoning_tokens")):
        for model in ("fake-model", "failover-model"):
            expected = sum(row[column] for row in rows if row["model"] == model)
            assert total(found, "tokenmux_tokens_total", model=model, type=kind) == expected
    assert total(found, "tokenmux_tokens_total", model="fake-model", type="prompt") == 4 * 250000
    priced = [row for row in rows if row["model"] == "fake-model" and row["status"] == 200]
    assert sum(float(row["cost_usd"]) for row in priced) == 2.0  # four answers at $0.50
    assert total(found, "tokenmux_cost_usd_total", model="fake-model") == 2.0
    assert total(found, "tokenmux_cost_usd_total") == sum(float(row["cost_usd"] or 0)
                                                          for row in rows)
    # Attempts and retries.
    assert total(found, "tokenmux_upstream_attempts_total") == sum(row["attempts"] for row in rows)
    assert total(found, "tokenmux_upstream_attempts_total", model="failover-model") == 2
    assert total(found, "tokenmux_retries_total", model="failover-model") == 1
    assert total(found, "tokenmux_retries_total", model="dead-model") == dead[0]["attempts"] - 1
    assert dead[0]["attempts"] == 3
    assert total(found, "tokenmux_hedges_total") == 0
    # Durations: one observation per request; a stream's first token once.
    assert total(found, "tokenmux_request_duration_seconds_count") == 8
    assert total(found, "tokenmux_request_duration_seconds_sum") == pytest.approx(
        sum(row["latency_ms"] for row in rows) / 1000, rel=1e-3)
    assert total(found, "tokenmux_time_to_first_token_seconds_count", model="fake-model") == 1
    inf = [value for labels, value in found["tokenmux_request_duration_seconds_bucket"]
           if labels["le"] == "+Inf"]
    assert sum(inf) == 8
    # States: no breaker open here; everything committed.
    assert total(found, "tokenmux_channel_breaker_state", channel="fake/upstream-model-v1") == 0
    assert total(found, "tokenmux_ledger_backlog_rows") == 0
    assert "tokenmux_ledger_spool_bytes" in found


def test_labels_never_carry_a_key_name_or_what_a_client_sent(metered: Gateway) -> None:
    secret = metered.cli("keys", "create", "--name", "team-secret-name").stdout.split()[-1]
    assert secret.startswith("tm-")
    assert wait_until(lambda: metered.post({"model": "fake-model", "messages": HI,
                                            "user": "alice@example.com"},
                                           key=secret).status_code == 200)
    with pytest.raises(openai.NotFoundError):
        metered.client().chat.completions.create(model="model-named-by-a-client", messages=HI)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        metered.client().chat.completions.create(model="fake-model", messages=HI,  # type: ignore[arg-type]
                                                 extra_headers={"X-Tier": "made-up-tier"})
    assert wait_until(lambda: "model_not_found" in scrape(metered).text)
    text = scrape(metered).text
    for leaked in ("team-secret-name", "alice", secret, "model-named-by-a-client",
                   "made-up-tier", "fake_upstream", "sk-upstream"):
        assert leaked not in text


def test_only_an_admin_key_may_scrape_by_default(metered: Gateway) -> None:
    secret = metered.cli("keys", "create", "--name", "scraper").stdout.split()[-1]
    assert wait_until(lambda: metered.post({"model": "fake-model", "messages": HI},
                                           key=secret).status_code == 200)
    refused = scrape(metered, key=None)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    client = scrape(metered, key=secret)
    assert client.status_code == 403
    assert client.json()["error"]["code"] == "insufficient_permissions"
    assert "tokenmux_requests_total" not in client.text
    allowed = scrape(metered)
    assert allowed.status_code == 200
    assert allowed.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert allowed.headers["X-Request-Id"]


def test_open_metrics_need_no_key_and_show_breakers_queues_and_hedges(
        tmp_path: Path, upstream: FakeOpenAI) -> None:
    gateway = started_gateway(tmp_path, f"""\
        metrics: {{access: open}}
        routing: {{breaker: {{failures: 1, cooldown_ms: 600000}}, hedge_default_ms: 300}}
        providers:
          fake: {{kind: openai, base_url: "{upstream.base_url}", api_key: sk-x}}
          dead: {{kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk-dead}}
        models:
          - name: narrow
            channels: [{{provider: fake, model: narrow-upstream, max_concurrency: 1}}]
          - name: dead-model
            channels: [{{provider: dead, model: nothing}}]
          - name: hedged
            channels:
              - {{provider: fake, model: metrics-tortoise, priority: 0}}
              - {{provider: fake, model: metrics-hare, priority: 1}}
        """)
    upstream.standing["metrics-tortoise"] = "@stall 30"
    try:
        found = samples(gateway, None)
        assert total(found, "tokenmux_channel_breaker_state", channel="dead/nothing",
                     provider="dead") == 0
        client = gateway.client()
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="dead-model", messages=HI)  # type: ignore[arg-type]
        assert total(samples(gateway, None), "tokenmux_channel_breaker_state",
                     channel="dead/nothing") == 2  # open
        # One request holds the channel's only slot, the next waits for it.
        answers: list[int] = []

        def ask(name: str) -> None:
            answers.append(gateway.post({"model": "narrow", "messages": [
                {"role": "user", "content": "@hold metrics-queue"}]}, headers={
                    "X-Request-Id": name}).status_code)

        threads = [threading.Thread(target=ask, args=(f"queued-{n}",)) for n in range(2)]
        for thread in threads:
            thread.start()
        assert wait_until(lambda: total(samples(gateway, None),
                                        "tokenmux_channel_queue_depth",
                                        channel="fake/narrow-upstream") == 1, timeout=20)
        found = samples(gateway, None)
        assert total(found, "tokenmux_channel_in_flight", channel="fake/narrow-upstream") == 1
        upstream.release("metrics-queue")
        for thread in threads:
            thread.join(30)
        assert answers == [200, 200]
        found = samples(gateway, None)
        assert total(found, "tokenmux_channel_queue_depth", channel="fake/narrow-upstream") == 0
        assert total(found, "tokenmux_channel_in_flight", channel="fake/narrow-upstream") == 0
        # A ludicrous request whose first channel is slow: the second starts beside it.
        hedged = gateway.post({"model": "hedged", "messages": HI},
                              headers={"X-Tier": "ludicrous"})
        assert hedged.headers["X-TokenMux-Channel"] == "fake/metrics-hare"
        assert wait_until(lambda: total(samples(gateway, None), "tokenmux_hedges_total",
                                        model="hedged") == 1)
        found = samples(gateway, None)
        assert total(found, "tokenmux_upstream_attempts_total", model="hedged") == 2
        assert total(found, "tokenmux_retries_total", model="hedged") == 0
        assert total(found, "tokenmux_requests_total", model="hedged", tier="ludicrous") == 1
    finally:
        upstream.standing.pop("metrics-tortoise", None)
        upstream.hold("metrics-queue")
        gateway.stop()


def test_metrics_off_leave_no_route(tmp_path: Path, upstream: FakeOpenAI) -> None:
    gateway = Gateway(tmp_path, config_for(tmp_path, upstream, textwrap.dedent("""\
        metrics: {access: off}
        """))).start()
    try:
        assert gateway.client().chat.completions.create(
            model="fake-model", messages=HI).choices  # type: ignore[arg-type]
        response = scrape(gateway)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    finally:
        gateway.stop()


def pids(gateway: Gateway) -> set[int]:
    return {httpx.get(gateway.base_url + "/health", headers=FRESH, timeout=10).json()["pid"]
            for _ in range(20)}


def test_one_scrape_sums_every_worker_and_a_dead_ones_counts_stay(
        tmp_path: Path, upstream: FakeOpenAI) -> None:
    gateway = Gateway(tmp_path, config_for(tmp_path, upstream)).start(args=["--workers", "2"])
    try:
        assert wait_until(lambda: len(pids(gateway)) == 2, timeout=60)
        # The directory the supervisor gave its workers, read from a worker's own environment.
        environ = Path(f"/proc/{min(pids(gateway))}/environ").read_bytes().split(b"\0")
        given = [entry.split(b"=", 1)[1].decode() for entry in environ
                 if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
        assert len(given) == 1
        made = Path(given[0])
        assert made.parent == Path(tempfile.gettempdir())
        assert made.name.startswith("tokenmux-metrics-")
        assert wait_until(lambda: any(made.glob("gauge_*.db")))  # the states each worker writes
        for n in range(30):
            assert gateway.post({"model": "fake-model", "messages": PRICED},
                                headers={**FRESH, "X-Request-Id": f"w-{n}"}).status_code == 200
        assert wait_until(lambda: len(gateway.rows(status=200)) == 30, timeout=20)
        served = {row["instance"] for row in gateway.rows()}
        assert len(served) == 2  # both workers answered some
        # Whichever worker answers the scrape (each on a fresh connection), it shows both
        # workers' requests.
        assert wait_until(lambda: all(total(samples(gateway), "tokenmux_requests_total") == 30
                                      for _ in range(10)), timeout=20)
        found = samples(gateway)
        assert total(found, "tokenmux_tokens_total", type="completion") == 30 * 125000
        assert total(found, "tokenmux_cost_usd_total", model="fake-model") == 15.0
        # A worker killed: its counts stay in the sum, its states leave it.
        before = pids(gateway)
        os.kill(min(before), signal.SIGKILL)
        assert wait_until(lambda: len(pids(gateway)) == 2 and pids(gateway) != before,
                          timeout=60)
        assert wait_until(lambda: all(total(samples(gateway), "tokenmux_requests_total") == 30
                                      for _ in range(6)), timeout=20)
        assert all(total(samples(gateway), "tokenmux_ledger_backlog_rows") == 0
                   for _ in range(6))
    finally:
        gateway.stop()
    assert not made.exists()  # the supervisor took its directory away
