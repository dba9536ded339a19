"""PostgreSQL going away under load: the gateway serves on the keys it holds, its ledger rows
wait on local disk, and when the database is back every row lands, each exactly once."""

from __future__ import annotations

import itertools
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, Gateway, wait_until
from tests.fakes.cuttable import CuttableProxy
from tests.fakes.openai_upstream import FakeOpenAI
from tests.test_shared_limits import FRESH, database, rows

__all__ = ["database"]  # the fixture


@pytest.fixture
def proxy(database: str) -> Iterator[CuttableProxy]:
    port = int(database.rsplit(":", 1)[1].split("/")[0])
    cuttable = CuttableProxy(port).start()
    yield cuttable
    cuttable.stop()


class Load:
    """Requests sent one after another from a few threads until stopped, with their answers."""

    def __init__(self, gateway: Gateway, key: str, threads: int = 3):
        self.gateway, self.key = gateway, key
        self.answers: dict[str, int] = {}  # request id → status
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            rid = f"pg-outage-{next(self._ids)}"
            body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
            answer = self.gateway.post(body, key=self.key,
                                       headers={**FRESH, "X-Request-Id": rid})
            self.answers[rid] = answer.status_code

    def wait_for(self, more: int, timeout: float = 60) -> None:
        target = len(self.answers) + more
        assert wait_until(lambda: len(self.answers) >= target, timeout=timeout)


def test_postgresql_cut_mid_load_spools_rows_and_replays_each_once(
        tmp_path: Path, upstream: FakeOpenAI, database: str, proxy: CuttableProxy) -> None:
    through_proxy = database.replace(database.rsplit("@", 1)[1].split("/")[0],
                                     f"127.0.0.1:{proxy.port}")
    gateway = Gateway(tmp_path, textwrap.dedent(f"""\
        database: {through_proxy}
        admin_key: {ADMIN_KEY}
        ledger: {{flush_interval_ms: 50, retry_max_ms: 500, wal_dir: {tmp_path}/wal}}
        providers:
          fake: {{kind: openai, base_url: "{upstream.base_url}", api_key: "{UPSTREAM_KEY}"}}
        models:
          - name: fake-model
            channels: [{{provider: fake, model: upstream-model-v1}}]
            price: {{input: 1.0, output: 2.0}}
        """)).start()

    def health() -> dict[str, Any]:
        return dict(httpx.get(gateway.base_url + "/health", timeout=30).json())

    try:
        key = gateway.cli("keys", "create", "--name", "outage").stdout.strip().splitlines()[-1]
        with Load(gateway, key) as load:
            load.wait_for(20)
            proxy.cut()
            # The database is gone: the gateway says so and keeps its rows on disk meanwhile.
            assert wait_until(lambda: health()["ledger"] == "spooling", timeout=60)
            assert health()["database"].startswith("unreachable")
            load.wait_for(40)
            proxy.mend()
            assert wait_until(lambda: health()["ledger"] == "ok", timeout=60)
            load.wait_for(20)
        answers = load.answers
        # No request failed for the database being away: every one was served.
        assert set(answers.values()) == {200}, {s for s in answers.values() if s != 200}
        assert len(answers) >= 80
        # Every answered request has its row, exactly once, the spooled ones replayed.
        assert wait_until(lambda: len(rows(database, "outage")) >= len(answers), timeout=60)
        time.sleep(0.5)  # a duplicate would show up with the last batches
        landed = [r["request_id"] for r in rows(database, "outage")]
        assert sorted(landed) == sorted(answers)
        assert wait_until(lambda: not list((tmp_path / "wal").glob("*/seg-*.jsonl"))
                          or all(not p.read_text().strip()
                                 for p in (tmp_path / "wal").glob("*/seg-*.jsonl")))
    finally:
        gateway.stop()
