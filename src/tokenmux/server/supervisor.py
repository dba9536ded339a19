"""`tokenmux serve --workers N`: N gateway processes on one port, and the process that keeps them.

Each worker is a whole `tokenmux serve` of its own, listening with SO_REUSEPORT, so the kernel
spreads new connections over them and no request passes through the supervisor. The supervisor
only starts workers, starts again one that dies, and on SIGTERM or SIGINT asks each to stop the
way a single gateway stops (finish what is in flight, flush the ledger), then waits for them.

The workers' metrics meet in one fresh directory the supervisor makes (PROMETHEUS_MULTIPROC_DIR,
see telemetry/metrics.py): a scrape of any worker sums them all. A dead worker's live states are
taken out of it, its counts stay; the directory goes when the supervisor ends.

Workers run in a session of their own, so a terminal's Ctrl-C reaches the supervisor alone and
each worker is asked once; and on Linux a worker is sent SIGTERM if the supervisor itself dies,
so no worker outlives it to serve on unwatched.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from tokenmux.settings import METRICS_DIR_ENV

log = logging.getLogger("tokenmux.supervisor")

POLL_S = 0.2
STOP_MARGIN_S = 10.0  # past the grace, for the ledger's last flush, before a worker is killed
# A worker that dies this soon after its start is failing at start: its next start waits,
# doubling up to a ceiling, so a broken config does not spin the machine.
QUICK_DEATH_S = 5.0
MAX_RESTART_DELAY_S = 10.0


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a worker then outlives a killed supervisor
        pass


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0
    not_before: float = 0.0  # a restart after a quick death waits until then


@dataclass
class Supervisor:
    command: Sequence[str]  # a worker's `tokenmux serve` arguments, without its index
    workers: int
    grace_s: float
    slots: list[_Slot] = field(init=False)
    stopping: bool = False
    metrics_dir: str = ""

    def __post_init__(self) -> None:
        self.slots = [_Slot(index) for index in range(self.workers)]

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        self.metrics_dir = tempfile.mkdtemp(prefix="tokenmux-metrics-")
        try:
            for slot in self.slots:
                self._start(slot)
            while not self.stopping:
                now = time.monotonic()
                for slot in self.slots:
                    self._watch(slot, now)
                time.sleep(POLL_S)
            return self._drain()
        finally:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _start(self, slot: _Slot) -> None:
        slot.process = subprocess.Popen(
            [*self.command, "--workers", str(self.workers), "--worker-index", str(slot.index)],
            start_new_session=True, preexec_fn=_die_with_parent,
            env={**os.environ, METRICS_DIR_ENV: self.metrics_dir})
        slot.started = time.monotonic()

    def _watch(self, slot: _Slot, now: float) -> None:
        process = slot.process
        if process is not None:
            code = process.poll()
            if code is None:
                return
            slot.process = None
            mark_process_dead(process.pid, self.metrics_dir)
            quick = now - slot.started < QUICK_DEATH_S
            slot.quick_deaths = slot.quick_deaths + 1 if quick else 0
            delay = min(MAX_RESTART_DELAY_S, 0.5 * 2 ** slot.quick_deaths) if quick else 0.0
            slot.not_before = now + delay
            log.warning("worker %d (pid %d) ended with %s; starting it again%s", slot.index,
                        process.pid, _how(code), f" in {delay:g} s" if delay else "")
        if now >= slot.not_before and not self.stopping:
            self._start(slot)

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping:
            return
        self.stopping = True
        log.info("%s: stopping %d workers", signal.Signals(signum).name, self.workers)
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signal.SIGTERM)

    def _drain(self) -> int:
        deadline = time.monotonic() + self.grace_s + STOP_MARGIN_S
        for slot in self.slots:
            process = slot.process
            if process is None:
                continue
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) did not stop in time; killing it", slot.index,
                          process.pid)
                process.kill()
                process.wait()
        return 0


def _how(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


def worker_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "tokenmux", "serve", *args]
