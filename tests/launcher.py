"""Runs `tokenmux` commands as real processes, forked from a server that has imported the gateway
once, so that the suite's few hundred gateways and CLI calls skip the second and a half of CPU
that each would spend importing the same modules.

A launched command is a process of its own, as `python -m tokenmux ARGS` would be: its own pid,
working directory, environment, argv, signals, stdout and exit status; it runs the same entry
point. The modules are imported by the fork server when the test session first launches a
command, after any change a mutation run has made to the source. With TOKENMUX_TEST_EXEC=1 every
command is started with `python -m tokenmux` instead, which shows the two ways give one result.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

_EXEC = os.environ.get("TOKENMUX_TEST_EXEC") == "1"
_PRELOAD = ["tokenmux.cli.main", "tokenmux.cli.serve", "tokenmux.cli.keys", "tokenmux.cli.usage",
            "tokenmux.gateway", "uvloop"]
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(_PRELOAD)


def _command(args: Sequence[str], cwd: str, env: Mapping[str, str], out: socket.socket,
             err: socket.socket) -> None:
    """In the forked process: become `python -m tokenmux ARGS`, then run it."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    out.close()
    err.close()
    # A fresh interpreter's streams on the new descriptors, unbuffered as PYTHONUNBUFFERED makes
    # them, so a test reading the log sees each line as it is written.
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True,
                                  line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True,
                                  line_buffering=True, errors="backslashreplace")
    sys.argv = [os.path.join(os.path.dirname(sys.executable), "tokenmux"), *args]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from tokenmux.cli.main import main

    main()


class Launched:
    """The part of `subprocess.Popen` the suite uses, for a process started by the fork server."""

    def __init__(self, args: Sequence[str], cwd: str, env: Mapping[str, str],
                 merge_stderr: bool = True):
        out_here, out_there = socket.socketpair()
        if merge_stderr:
            err_here, err_there = None, out_there
        else:
            err_here, err_there = socket.socketpair()
        self._process = _context.Process(target=_command,
                                         args=(list(args), cwd, dict(env), out_there, err_there))
        self._process.start()
        out_there.close()
        if err_here is not None:
            err_there.close()
        self.pid = self._process.pid
        self.args = list(args)
        self.stdout = out_here.makefile("r", encoding="utf-8", errors="replace", newline=None)
        self.stderr = (err_here.makefile("r", encoding="utf-8", errors="replace", newline=None)
                       if err_here is not None else None)
        self._sockets = [s for s in (out_here, err_here) if s is not None]

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(["tokenmux", *self.args], timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def read_all(self, deadline: float) -> tuple[str, str]:
        """Both streams to their end (the process and whatever it started have closed them)."""
        chunks: dict[int, list[bytes]] = {s.fileno(): [] for s in self._sockets}
        with selectors.DefaultSelector() as selector:
            for s in self._sockets:
                selector.register(s, selectors.EVENT_READ)
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    raise subprocess.TimeoutExpired(["tokenmux", *self.args], 0)
                for key, _ in selector.select(left):
                    data = key.fileobj.recv(1 << 16)  # type: ignore[union-attr]
                    if data:
                        chunks[key.fd].append(data)
                    else:
                        selector.unregister(key.fileobj)
        texts = [b"".join(chunks[s.fileno()]).decode("utf-8", "replace") for s in self._sockets]
        for s in self._sockets:
            s.close()
        return texts[0], texts[1] if len(texts) > 1 else ""


def popen(args: Sequence[str], *, cwd: str | os.PathLike[str], env: Mapping[str, str]) -> Any:
    """`tokenmux ARGS` started, stdout and stderr together on `.stdout`, in text."""
    if _EXEC:
        return subprocess.Popen([sys.executable, "-m", "tokenmux", *args], cwd=cwd, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return Launched(args, os.fspath(cwd), env)


def run(args: Sequence[str], *, cwd: str | os.PathLike[str], env: Mapping[str, str],
        timeout: float) -> subprocess.CompletedProcess[str]:
    """`tokenmux ARGS` run to its end, as `subprocess.run(..., capture_output=True, text=True)`."""
    if _EXEC:
        return subprocess.run([sys.executable, "-m", "tokenmux", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)
    launched = Launched(args, os.fspath(cwd), env, merge_stderr=False)
    deadline = time.monotonic() + timeout
    stdout, stderr = launched.read_all(deadline)
    code = launched.wait(max(0.1, deadline - time.monotonic()))
    return subprocess.CompletedProcess(["tokenmux", *args], code, stdout, stderr)
