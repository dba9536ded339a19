"""Shared fixtures: a fake OpenAI upstream and real gateway processes started from the CLI
(through `tests.launcher`)."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import psycopg
import pytest
import sqlalchemy as sa

from tests import launcher
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI

# litellm (a client some tests drive) reads its price map from its own package, not the network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

ADMIN_KEY = "tm-test-admin-key-for-the-suite"
UPSTREAM_KEY = "sk-upstream-secret-0123456789"
# The variables that bring a shipped provider in when no config file is given.
PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
                 "DEEPSEEK_API_KEY", "XAI_API_KEY")


# The database of every gateway the suite starts through `config_for` or `started_gateway`: a
# SQLite file in its directory, or, with TOKENMUX_TEST_DATABASE=postgresql, a PostgreSQL
# database of its own on the server of TOKENMUX_TEST_POSTGRES_URL (made here, dropped when the
# session ends), so that the same tests show the gateway on both. Tests of SQLite itself (its
# file, its locks, its write-ahead folder beside it) name their file.
ON_POSTGRES = os.environ.get("TOKENMUX_TEST_DATABASE", "sqlite") == "postgresql"
POSTGRES_URL = os.environ.get("TOKENMUX_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/postgres")
_MADE: list[str] = []


def database_for(directory: Path, *, sqlite: bool = False) -> str:
    if sqlite or not ON_POSTGRES:
        return f"{directory}/gateway.db"
    name = f"tm_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    _MADE.append(name)
    return POSTGRES_URL.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session", autouse=True)
def _drop_made_databases() -> Iterator[None]:
    yield
    if _MADE:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            for name in _MADE:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    """The suite's database (SQLite, or PostgreSQL), at the newest schema."""
    from tokenmux.db import connect  # the conftest itself loads none of the gateway's code

    made = connect(database_for(tmp_path))
    yield made
    made.dispose()


@pytest.fixture
def store(engine: sa.Engine, tmp_path: Path) -> Any:
    """The ledger's store on `engine`: rows written as the writer's thread writes them."""
    from tokenmux.ledger.lines import DeadLetters
    from tokenmux.ledger.store import Store

    return Store(engine, DeadLetters(tmp_path / "dead.jsonl"))


def _as_sqlite_gives(value: Any) -> Any:
    """A PostgreSQL value as the suite reads the same column from SQLite."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_for(directory: Path, upstream: FakeOpenAI, extra: str = "", *,
               sqlite: bool = False) -> str:
    return textwrap.dedent(f"""\
        database: {database_for(directory, sqlite=sqlite)}
        admin_key: {ADMIN_KEY}
        server: {{max_request_bytes: 65536}}
        ledger: {{flush_interval_ms: 50}}
        # Many tests fail channels on purpose; a breaker opening would make the others' routing
        # depend on test order. The breaker's own tests run gateways of their own.
        routing: {{breaker: {{failures: 1000000}}}}
        providers:
          fake: {{kind: openai, base_url: "{upstream.base_url}", api_key: "${{FAKE_UPSTREAM_KEY}}"}}
          fake-quick: {{kind: openai, base_url: "{upstream.base_url}", api_key: "{UPSTREAM_KEY}",
                        timeout: 1.5}}
          dead: {{kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk-dead}}
        models:
          - name: fake-model
            aliases: [fake-model@2026-01-01, fake-alias]
            channels: [{{provider: fake, model: upstream-model-v1}}]
            price: {{input: 1.0, output: 2.0}}
          - name: quick-model
            channels: [{{provider: fake-quick, model: upstream-quick}}]
          - name: dead-model
            channels: [{{provider: dead, model: nothing}}]
          - name: failover-model
            channels:
              - {{provider: dead, model: nothing, priority: 0}}
              - {{provider: fake, model: upstream-b, priority: 1}}
          - name: refused-first
            channels:
              - {{provider: fake, model: refuses-credentials, priority: 0}}
              - {{provider: fake, model: upstream-b, priority: 1}}
          - name: weighted-model
            channels:
              - {{provider: fake, model: heavy, weight: 9}}
              - {{provider: fake, model: light, weight: 1}}
          - name: primary-down
            channels: [{{provider: dead, model: nothing}}]
            fallbacks: [fake-model]
        """) + extra


def started_gateway(directory: Path, config: str) -> Gateway:
    """A running gateway whose config is the suite's basics (database, admin key, a quick ledger)
    followed by CONFIG: its providers, models and routing."""
    basics = (f"database: {database_for(directory)}\nadmin_key: {ADMIN_KEY}\n"
              "ledger: {flush_interval_ms: 50}\n")
    return Gateway(directory, basics + textwrap.dedent(config)).start()


class Gateway:
    """A `tokenmux serve` process, and the CLI and database that go with its config."""

    def __init__(self, directory: Path, config_text: str | None, *, cwd: Path | None = None):
        self.directory = directory
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.config = directory / "tokenmux.yaml" if config_text is not None else None
        if self.config is not None:
            self.config.write_text(config_text or "")
        self.cwd = cwd or directory
        self.env = {**os.environ, "FAKE_UPSTREAM_KEY": UPSTREAM_KEY}
        for name in ("TOKENMUX_CONFIG", "TOKENMUX_ADMIN_KEY", *PROVIDER_KEYS):
            self.env.pop(name, None)
        self.process: Any = None
        self.output = ""
        named = re.search(r"^database: *(\S+)", config_text or "", re.MULTILINE)
        self.database = named.group(1) if named else None

    def _config_args(self) -> list[str]:
        return ["--config", str(self.config)] if self.config else []

    def start(self, timeout: float = 30, args: Sequence[str] = ()) -> Gateway:
        self.process = launcher.popen(
            ["serve", *self._config_args(), "--port", str(self.port), *args],
            cwd=self.cwd, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited at start:\n{self.process.stdout.read()}")
            try:
                if httpx.get(self.base_url + "/health/live", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("gateway did not come up in time")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.output += self.process.stdout.read() if self.process.stdout else ""
        return code

    def log_so_far(self) -> str:
        """What the running process has printed until now, without waiting for more."""
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        os.set_blocking(fd, False)
        try:
            while chunk := os.read(fd, 1 << 16):
                self.output += chunk.decode(errors="replace")
        except BlockingIOError:
            pass
        finally:
            os.set_blocking(fd, True)
        return self.output

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = launcher.run([*args, *self._config_args()], cwd=self.cwd, env=self.env,
                              timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"tokenmux {' '.join(args)} failed:\n{result.stderr}")
        return result

    def client(self, key: str = ADMIN_KEY, **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url + "/v1", api_key=key, max_retries=0,
                             **kwargs)

    def async_client(self, key: str = ADMIN_KEY, **kwargs: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url + "/v1", api_key=key, max_retries=0,
                                  **kwargs)

    def post(self, body: Any, key: str | None = ADMIN_KEY, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(kwargs.pop("headers", {}))
        content = body if isinstance(body, bytes | str) else None
        return httpx.post(self.base_url + "/v1/chat/completions", headers=headers,
                          content=content, json=None if content is not None else body,
                          timeout=30, **kwargs)

    @property
    def wal_dir(self) -> Path:
        """Where the ledger's write-ahead segments are, by default, for this gateway's
        database: beside a SQLite file, or in the config's folder for a database URL."""
        if self.database is not None and "://" in self.database:
            return (self.config or self.directory).parent / "tokenmux-ledger"
        return self.directory / "gateway.db.ledger"

    def sql(self, statement: str, *params: Any) -> list[dict[str, Any]]:
        """Runs STATEMENT (`?` for each of PARAMS) on the gateway's database, SQLite or
        PostgreSQL, and gives the rows it returns as SQLite would."""
        if self.database is not None and self.database.startswith("postgresql://"):
            with psycopg.connect(self.database) as conn, conn.cursor(
                    row_factory=psycopg.rows.dict_row) as cursor:
                cursor.execute(statement.replace("?", "%s").encode(), params)
                found = cursor.fetchall() if cursor.description else []
                return [{k: _as_sqlite_gives(v) for k, v in row.items()} for row in found]
        connection = sqlite3.connect(self.directory / "gateway.db")
        connection.row_factory = sqlite3.Row
        try:
            with connection:
                return [dict(r) for r in connection.execute(statement, params)]
        finally:
            connection.close()

    def rows(self, **where: Any) -> list[dict[str, Any]]:
        rows = self.sql("SELECT * FROM usage ORDER BY created_at")
        return [r for r in rows if all(r[k] == v for k, v in where.items())]

    def wait_row(self, request_id: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.rows(request_id=request_id)
            if found:
                assert len(found) == 1, f"request {request_id} has {len(found)} ledger rows"
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no ledger row for request {request_id}")


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


# The Anthropic and Gemini fakes, and an OpenAI fake apart from the session's: one per test
# module, as each module configures its own gateway around it and counts what it received.
@pytest.fixture(scope="module")
def module_upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def claude() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    fake = FakeGemini().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("gateway")
    running = Gateway(directory, config_for(directory, upstream)).start()
    yield running
    running.stop()


def gateway_of_its_own(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI,
                       name: str) -> Iterator[Gateway]:
    """A module's gateway on the suite's config, with a database of its own (exact counts)."""
    directory = tmp_path_factory.mktemp(name)
    running = Gateway(directory, config_for(directory, upstream)).start()
    yield running
    running.stop()


def wait_until(predicate: Any, timeout: float = 10, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
