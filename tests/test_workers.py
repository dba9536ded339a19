"""`tokenmux serve --workers N`: N processes on one port, restarted when one dies, stopped as one.

Requests here go on a fresh connection each (`Connection: close`): the kernel spreads
connections, not requests, over the workers, and a pooled client would stay on one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import ADMIN_KEY, Gateway, config_for, wait_until
from tests.fakes.openai_upstream import FakeOpenAI

FRESH = {"Connection": "close"}
HOST = socket.gethostname()


def health(gateway: Gateway) -> dict[str, Any]:
    response = httpx.get(gateway.base_url + "/health", headers=FRESH, timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def pids_seen(gateway: Gateway, tries: int = 60) -> set[int]:
    return {health(gateway)["pid"] for _ in range(tries)}


def ask(gateway: Gateway, request_id: str, key: str = ADMIN_KEY) -> httpx.Response:
    return gateway.post({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]},
                        key=key, headers={**FRESH, "X-Request-Id": request_id})


def gone(pid: int) -> bool:
    """Exited (a zombie has closed its sockets already) or reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


@pytest.fixture
def two_workers(tmp_path: Path, upstream: FakeOpenAI) -> Any:
    gateway = Gateway(tmp_path, config_for(tmp_path, upstream)).start(args=["--workers", "2"])
    yield gateway
    gateway.stop()


def test_two_workers_serve_one_port_and_the_ledger_names_each(two_workers: Gateway) -> None:
    gateway = two_workers
    # Both listen once both have started; until then the one up answers everything.
    assert wait_until(lambda: len(pids_seen(gateway, 20)) == 2, timeout=60), pids_seen(gateway)
    first = health(gateway)
    assert first["workers"] == 2
    assert first["limits"] == first["budgets"] == "split 1/2"
    assert first["instance"] in (f"{HOST}:{gateway.port}/0", f"{HOST}:{gateway.port}/1")
    for n in range(40):
        assert ask(gateway, f"spread-{n}").status_code == 200
    assert wait_until(lambda: len(gateway.rows(status=200)) >= 40, timeout=20)
    served = {row["instance"] for row in gateway.rows() if row["request_id"].startswith("spread-")}
    assert served == {f"{HOST}:{gateway.port}/0", f"{HOST}:{gateway.port}/1"}
    assert "with 2 workers" in gateway.log_so_far()


def test_a_killed_worker_is_started_again_and_the_other_serves_meanwhile(
        two_workers: Gateway) -> None:
    gateway = two_workers
    assert wait_until(lambda: len(pids_seen(gateway, 20)) == 2, timeout=60)
    before = pids_seen(gateway)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: gone(victim), timeout=10)
    # The survivor takes every new connection until the victim's successor listens.
    answers = [ask(gateway, f"after-kill-{n}").status_code for n in range(20)]
    assert answers == [200] * 20
    assert wait_until(lambda: len(pids_seen(gateway, 20) - before) == 1, timeout=60)
    assert len(pids_seen(gateway)) == 2
    assert victim not in pids_seen(gateway)
    assert wait_until(lambda: "ended with signal SIGKILL; starting it again"
                      in gateway.log_so_far(), timeout=10)


def test_sigterm_stops_every_worker_and_keeps_every_row(two_workers: Gateway) -> None:
    gateway = two_workers
    assert wait_until(lambda: len(pids_seen(gateway, 20)) == 2, timeout=60)
    workers = pids_seen(gateway)
    for n in range(10):
        assert ask(gateway, f"before-stop-{n}").status_code == 200
    assert gateway.stop() == 0
    assert all(gone(pid) for pid in workers)
    assert len([r for r in gateway.rows() if r["request_id"].startswith("before-stop-")]) == 10


def test_each_worker_holds_its_share_of_a_keys_limit(tmp_path: Path,
                                                     upstream: FakeOpenAI) -> None:
    gateway = Gateway(tmp_path, config_for(tmp_path, upstream))
    # Made before the start, so that both workers know the key from their first request.
    secret = gateway.cli("keys", "create", "--name", "shared-rpm", "--rpm", "4"
                         ).stdout.strip().splitlines()[-1]
    gateway.start(args=["--workers", "2"])
    try:
        assert wait_until(lambda: len(pids_seen(gateway, 20)) == 2, timeout=60)
        answers = [ask(gateway, f"limited-{n}", secret) for n in range(30)]
        assert {a.status_code for a in answers} == {200, 429}
        assert {a.headers["x-ratelimit-limit-requests"] for a in answers} == {"2"}
        refused = next(a for a in answers if a.status_code == 429)
        assert "this worker holds 1/2 of it" in refused.json()["error"]["message"]
        assert wait_until(lambda: len(gateway.rows(key_name="shared-rpm")) == 30, timeout=20)
        admitted: dict[str, int] = {}
        for row in gateway.rows(key_name="shared-rpm", status=200):
            admitted[row["instance"]] = admitted.get(row["instance"], 0) + 1
        # 4 // 2 = 2 a worker, within the few seconds the requests take (a refill of one
        # takes 30 s at 2 a minute): the key's 4 a minute is never exceeded.
        assert admitted and all(count <= 2 for count in admitted.values()), admitted
    finally:
        gateway.stop()


@pytest.mark.parametrize("value", ["0", "many", "-1", "257"])
def test_a_bad_worker_count_is_refused(tmp_path: Path, value: str) -> None:
    result = subprocess.run([sys.executable, "-m", "tokenmux", "serve", "--workers", value],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "is not a number of workers" in result.stderr


def test_workers_need_a_fixed_port(tmp_path: Path, upstream: FakeOpenAI) -> None:
    gateway = Gateway(tmp_path, config_for(tmp_path, upstream))
    result = subprocess.run(
        [sys.executable, "-m", "tokenmux", "serve", "--config", str(gateway.config),
         "--port", "0", "--workers", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=gateway.env)
    assert result.returncode == 2
    assert "--workers needs a fixed --port" in result.stderr


def test_workers_stop_when_their_supervisor_is_killed(two_workers: Gateway) -> None:
    gateway = two_workers
    assert wait_until(lambda: len(pids_seen(gateway, 20)) == 2, timeout=60)
    workers = pids_seen(gateway)
    assert gateway.process is not None
    gateway.process.kill()
    gateway.process.wait(10)
    # Each worker is told to stop as on SIGTERM: none is left serving the port unwatched.
    assert wait_until(lambda: all(gone(pid) for pid in workers), timeout=40)
