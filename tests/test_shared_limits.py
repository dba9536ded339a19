"""Rate limits shared by gateway instances through Redis: exact across instances, and degraded
to in-process shares (or refused, when so configured) while Redis is away.

The instances share one PostgreSQL database, made and dropped here, as a deployment of many
machines would; the Redis of the machine is shared with other suites, so each test's keys live
under a prefix of their own. The test that stops Redis starts a Redis of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psycopg
import pytest
import redis

from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, Gateway, free_port, wait_until
from tests.fakes.openai_upstream import FakeOpenAI

REDIS_URL = os.environ.get("TOKENMUX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("TOKENMUX_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/postgres")
FRESH = {"Connection": "close"}


@pytest.fixture
def database() -> Iterator[str]:
    name = f"tm_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def config(database: str, upstream: FakeOpenAI, redis: str, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        database: {database}
        redis: {redis}
        redis_prefix: 'test-{uuid.uuid4().hex}:'
        admin_key: {ADMIN_KEY}
        ledger: {{flush_interval_ms: 50}}
        providers:
          fake: {{kind: openai, base_url: "{upstream.base_url}", api_key: "{UPSTREAM_KEY}"}}
        models:
          - name: fake-model
            channels: [{{provider: fake, model: upstream-model-v1}}]
            price: {{input: 1.0, output: 2.0}}
        """) + extra


class Fleet:
    """Gateway instances on ports of their own, with one config: one database, one Redis."""

    def __init__(self, root: Path, text: str, count: int):
        self.gateways = []
        for n in range(count):
            directory = root / f"instance-{n}"
            directory.mkdir()
            self.gateways.append(Gateway(directory, text))

    def start(self) -> Fleet:
        for gateway in self.gateways:
            gateway.start()
        return self

    def stop(self) -> None:
        for gateway in self.gateways:
            if gateway.process is not None:
                gateway.stop()

    def key(self, *limits: str) -> str:
        created = self.gateways[0].cli("keys", "create", "--name", f"k-{uuid.uuid4().hex[:8]}",
                                       *limits)
        return created.stdout.strip().splitlines()[-1]

    def ask(self, n: int, key: str, **extra: Any) -> httpx.Response:
        gateway = self.gateways[n % len(self.gateways)]
        body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], **extra}
        return gateway.post(body, key=key, headers=FRESH)


def health(gateway: Gateway) -> dict[str, Any]:
    return dict(httpx.get(gateway.base_url + "/health", timeout=10).json())


def rows(database: str, key_name: str | None = None) -> list[dict[str, Any]]:
    with psycopg.connect(database) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM usage")
        found = cur.fetchall()
    return [r for r in found if key_name is None or r["key_name"] == key_name]


def burst(fleet: Fleet, key: str, count: int, **extra: Any) -> tuple[list[httpx.Response], float]:
    """COUNT requests at once spread over the fleet; their answers and the seconds they took."""
    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda n: fleet.ask(n, key, **extra), range(count)))
    return answers, time.monotonic() - started


def test_three_instances_admit_exactly_a_keys_rpm(tmp_path: Path, upstream: FakeOpenAI,
                                                  database: str) -> None:
    fleet = Fleet(tmp_path, config(database, upstream, REDIS_URL), 3).start()
    try:
        key = fleet.key("--rpm", "50")
        answers, took = burst(fleet, key, 200)
        statuses = [a.status_code for a in answers]
        assert set(statuses) == {200, 429}
        # The bucket refills at 50 a minute while the burst runs: one more per 1.2 s of it.
        refilled = int(took * 50 / 60)
        assert 50 <= statuses.count(200) <= 50 + refilled, (statuses.count(200), took)
        # Each instance alone would have let 50 through: 150 in all.
        assert statuses.count(200) < 100
        assert {a.headers["x-ratelimit-limit-requests"] for a in answers} == {"50"}
        refused = next(a for a in answers if a.status_code == 429)
        assert int(refused.headers["Retry-After"]) >= 1
        assert "50 requests per minute" in refused.json()["error"]["message"]
        assert all(health(g)["limits"] == health(g)["budgets"] == "redis"
                   for g in fleet.gateways)
    finally:
        fleet.stop()


def test_three_instances_share_a_keys_tpm(tmp_path: Path, upstream: FakeOpenAI,
                                          database: str) -> None:
    fleet = Fleet(tmp_path, config(database, upstream, REDIS_URL), 3).start()
    try:
        key = fleet.key("--tpm", "6000")
        # Each answer uses 600 tokens, more than its reservation (its prompt's estimate plus
        # its max_tokens): the settle charges the difference. Learn the reservation.
        usage = {"messages": [{"role": "user", "content": "@usage 400 200 0"}], "max_tokens": 500}
        probe = fleet.ask(0, key, **usage)
        assert probe.status_code == 200
        reserved = 6000 - int(probe.headers["x-ratelimit-remaining-tokens"])
        assert 500 < reserved < 600
        answers, took = burst(fleet, key, 60, **usage)
        assert {a.status_code for a in answers} <= {200, 429}, [
            (a.status_code, a.text[:300]) for a in answers if a.status_code not in (200, 429)]
        admitted = [a for a in answers if a.status_code == 200]
        # Every admission needs a reservation's worth left of the minute's 6000 (and the refill
        # meanwhile, 100 a second): a dozen in all. Instances on their own would admit 3 times
        # that, and settles missed would admit every request.
        most = (6000 + took * 100) // reserved
        assert 5 <= len(admitted) <= most, (len(admitted), reserved, took)
        limits = {a.headers.get("x-ratelimit-limit-tokens") for a in answers}
        assert limits == {"6000"}, [(a.status_code, dict(a.headers)) for a in answers
                                    if "x-ratelimit-limit-tokens" not in a.headers]
    finally:
        fleet.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    port = free_port()

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        assert wait_until(lambda: subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
        ).stdout.strip() == "PONG", timeout=20)
        return process

    server = {"process": start()}

    def stop() -> None:
        server["process"].terminate()
        server["process"].wait(20)

    def restart() -> None:
        server["process"] = start()

    yield f"redis://127.0.0.1:{port}/0", (stop, restart)
    if server["process"].poll() is None:
        stop()


def test_redis_away_degrades_to_in_process_shares_and_comes_back(
        tmp_path: Path, upstream: FakeOpenAI, database: str, own_redis: Any) -> None:
    url, (stop, restart) = own_redis
    fleet = Fleet(tmp_path, config(database, upstream, url), 2).start()
    try:
        key = fleet.key("--rpm", "40")
        assert fleet.ask(0, key).status_code == 200
        assert all(health(g)["redis"] == "ok" for g in fleet.gateways)
        # Once both have seen each other's heartbeat, a share, if needed, is a half.
        assert all(wait_until(lambda g=g: health(g)["instances"] == 2, timeout=30)
                   for g in fleet.gateways)
        stop()
        # No request fails for Redis being away: each is answered, by a share of the limit.
        answers = [fleet.ask(n, key) for n in range(60)]
        assert {a.status_code for a in answers} <= {200, 429}
        assert all(wait_until(lambda g=g: health(g)["redis"] == "degraded", timeout=20)
                   for g in fleet.gateways)
        first = health(fleet.gateways[0])
        assert first["status"] == "ok" and first["limits"] == first["budgets"] == "split 1/2"
        assert {a.headers["x-ratelimit-limit-requests"] for a in answers[-10:]} == {"20"}
        assert "Redis does not answer" in fleet.gateways[0].log_so_far()
        restart()
        assert all(wait_until(lambda g=g: health(g)["redis"] == "ok", timeout=30)
                   for g in fleet.gateways)
        again = fleet.ask(1, key)
        assert again.headers["x-ratelimit-limit-requests"] == "40"
        assert "Redis answers again" in fleet.gateways[1].log_so_far()
    finally:
        fleet.stop()


def test_redis_failure_closed_refuses_limited_keys_while_redis_is_away(
        tmp_path: Path, upstream: FakeOpenAI, database: str, own_redis: Any) -> None:
    url, (stop, _restart) = own_redis
    fleet = Fleet(tmp_path, config(database, upstream, url, "redis_failure: closed\n"),
                  1).start()
    try:
        limited, free = fleet.key("--rpm", "100"), fleet.key()
        assert fleet.ask(0, limited).status_code == 200
        stop()
        assert wait_until(lambda: fleet.ask(0, limited).status_code == 503, timeout=20)
        refused = fleet.ask(0, limited)
        assert refused.json()["error"]["code"] == "limits_unavailable"
        assert refused.headers["Retry-After"] == "1"
        # A key without limits needs no shared count, and is served.
        assert fleet.ask(0, free).status_code == 200
        assert health(fleet.gateways[0])["redis"] == "degraded"
    finally:
        fleet.stop()


def test_rows_from_every_instance_reach_the_one_database(tmp_path: Path, upstream: FakeOpenAI,
                                                         database: str) -> None:
    fleet = Fleet(tmp_path, config(database, upstream, REDIS_URL), 2).start()
    try:
        key = fleet.key()
        for n in range(10):
            assert fleet.ask(n, key).status_code == 200
        assert wait_until(lambda: len([r for r in rows(database) if r["status"] == 200]) >= 10,
                          timeout=20)
        served = rows(database)
        assert len({r["id"] for r in served}) == len(served)
        assert all(r["cost_usd"] is not None and r["cost_usd"] > 0 for r in served)
    finally:
        fleet.stop()


def test_instances_starting_together_on_a_new_database_migrate_once(
        tmp_path: Path, upstream: FakeOpenAI, database: str) -> None:
    fleet = Fleet(tmp_path, config(database, upstream, REDIS_URL), 3)
    for gateway in fleet.gateways:
        gateway.process = subprocess.Popen(
            [sys.executable, "-m", "tokenmux", "serve", "--config", str(gateway.config),
             "--port", str(gateway.port)], cwd=gateway.cwd, env=gateway.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for gateway in fleet.gateways:
            assert wait_until(lambda g=gateway: live(g), timeout=60), gateway.log_so_far()
        with psycopg.connect(database) as conn:
            versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        assert len(versions) == 1
        key = fleet.key()
        assert all(fleet.ask(n, key).status_code == 200 for n in range(3))
    finally:
        fleet.stop()


def live(gateway: Gateway) -> bool:
    try:
        return httpx.get(gateway.base_url + "/health/live", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_short_answer_gives_the_fleet_back_what_it_did_not_use(
        tmp_path: Path, upstream: FakeOpenAI, database: str) -> None:
    text = config(database, upstream, REDIS_URL)
    prefix = text.split("redis_prefix: '", 1)[1].split("'", 1)[0]
    fleet = Fleet(tmp_path, text, 2).start()
    try:
        key = fleet.key("--tpm", "6000")
        listed = fleet.gateways[0].cli("keys", "list", "--json").stdout
        (key_id,) = [k["id"] for k in __import__("json").loads(listed)
                     if k["name"].startswith("k-")]
        # 10 tokens used of a reservation of more than 500 (the max_tokens and the prompt).
        short = {"messages": [{"role": "user", "content": "@usage 5 5 0"}], "max_tokens": 500}
        answer = fleet.ask(0, key, **short)
        assert answer.status_code == 200
        reserved = 6000 - int(answer.headers["x-ratelimit-remaining-tokens"])
        assert reserved > 500
        store = redis.Redis.from_url(REDIS_URL)
        try:
            def level() -> float:
                return float(store.hget(f"{prefix}rl:{key_id}:tokens", "level") or 0)
            # The settle gives the unused tokens back to the shared bucket, for every instance.
            assert wait_until(lambda: level() >= 6000 - 10 - 1, timeout=20), level()
        finally:
            store.close()
        second = fleet.ask(1, key, **short)
        assert int(second.headers["x-ratelimit-remaining-tokens"]) >= 6000 - 10 - reserved - 1
    finally:
        fleet.stop()
