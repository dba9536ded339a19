"""What one request costs the gateway, in CPU instructions, counted by callgrind.

Wall-clock figures on a shared machine move by a third between runs of the same code; an
instruction count barely moves (about 1% for JSON, a few % for streams, where the collector's
timing varies), so it is the figure that tells whether a change made the request path dearer.
It does not see system calls' kernel time: a change that saves a syscall shows in `bench/run`'s
CPU per request, not here.

The gateway runs under `valgrind --tool=callgrind` with instrumentation off while it starts and
warms up; then it is switched on, the counters are zeroed, N requests of one kind go through one
keep-alive connection, and the counters are dumped. Standard library only, like bench.py.

    .venv/bin/python bench/instructions.py [--requests 300] [--python .venv/bin/python]
                                           [--with-key]

`--keep DIR` keeps callgrind's dumps there (one per kind, in order), for `callgrind_annotate`.
`--with-key` also counts each kind with a fresh Idempotency-Key on every request, in the same run.
The bare pass-through (bare.py, the floor) is counted the same way after the gateway, unless
`--no-bare`: `gateway / bare` is what the gateway's features cost in instructions.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bench

KINDS = (("json", "bench-json", False), ("stream", "bench-sse", True))
COMPRESSION_KINDS = tuple((kind, "bench-json", False) for kind in bench.COMPRESSION_CASES)


def callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, check=True,
                   timeout=120)


def count(out: Path, before: set[Path]) -> int:
    """The instruction total of the dump written since `before` was listed."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = sorted(set(out.parent.glob(out.name + ".*")) - before)
        if new:
            text = new[-1].read_text(errors="replace")
            if match := re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M):
                return int(match.group(1))
        time.sleep(0.5)
    raise bench.BenchError("callgrind wrote no dump")


def ask(connection: http.client.HTTPConnection, body: str, kind: str,
        key: str | None = None, authorization: str | None = bench.AUTHORIZATION) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    if key is not None:
        headers["Idempotency-Key"] = key
    connection.request("POST", "/v1/chat/completions", body, headers)
    answer = connection.getresponse()
    data = answer.read()
    if answer.status != 200:
        raise bench.BenchError(f"{kind}: HTTP {answer.status}: {data[:300]!r}")


class Ledger:
    """Waits until the gateway's ledger holds a row for every request sent so far, so that the
    counted window starts with none of the writer's work for earlier requests (its first batch
    loads the price tables: millions of instructions that belong to no request). The window
    ends without waiting: a wait would count the writer's idle cycles, as many as the wait is
    long, and the count would move with the machine's load."""

    def __init__(self, database: Path | None):
        self.database = database
        self.sent = 0

    def settled(self) -> None:
        if self.database is None:
            return
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as db:
                    if db.execute("SELECT count(*) FROM usage").fetchone()[0] >= self.sent:
                        return
            except sqlite3.Error:
                pass
            time.sleep(0.2)
        raise bench.BenchError(f"the ledger did not reach {self.sent} rows")


def measure(service: bench.Service, port: int, out: Path, body: str, kind: str,
            requests: int, key: Callable[[], str | None], authorization: str | None,
            ledger: Ledger) -> float:
    """Instructions per request of KIND through SERVICE, after 50 not counted."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(50):
        ask(connection, body, kind, key(), authorization)
    ledger.sent += 50
    ledger.settled()
    callgrind(service.process.pid, "--instr=on")
    callgrind(service.process.pid, "--zero")
    for _ in range(requests):
        ask(connection, body, kind, key(), authorization)
    ledger.sent += requests
    before = set(out.parent.glob(out.name + ".*"))
    callgrind(service.process.pid, "--dump")
    callgrind(service.process.pid, "--instr=off")
    connection.close()
    return count(out, before) / requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--python", type=Path, default=Path(sys.executable))
    parser.add_argument("--with-key", action="store_true",
                        help="also count each kind with a fresh Idempotency-Key per request")
    parser.add_argument("--upstream-port", type=int, default=19111)
    parser.add_argument("--gateway-port", type=int, default=19112)
    parser.add_argument("--bare-port", type=int, default=19113)
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep callgrind's dumps here")
    parser.add_argument("--no-bare", action="store_true",
                        help="do not count the bare pass-through (it takes another minute)")
    parser.add_argument("--limits", action="store_true",
                        help="also count each kind for a key with rate limits (+limits)")
    parser.add_argument("--redis", default=None, metavar="URL",
                        help="the gateway keeps its shared state (rate limits) in this Redis")
    parser.add_argument("--compression", action="store_true",
                        help="also count requests that ask for context compression")
    args = parser.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        print("instructions.py: valgrind is not installed", file=sys.stderr)
        return 1
    if bench.port_taken("instructions.py", args.upstream_port, args.gateway_port, args.bare_port):
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="tokenmux-instructions-"))
    out = tmp / "callgrind.out"
    upstream = bench.start_upstream(tmp, args.upstream_port)
    gateway = bare = None
    valgrind = ("valgrind", "--tool=callgrind", "--instr-atstart=no")
    try:
        gateway = bench.start_gateway(
            tmp, args.python, args.upstream_port, args.gateway_port, start_timeout=600,
            launcher=(*valgrind, f"--callgrind-out-file={out}"), redis=args.redis)
        limited = bench.limited_authorization(tmp, args.python) if args.limits else None
        results = {}
        ledger = Ledger(tmp / "bench.db")
        keys = itertools.count()
        cases = [(kind, model, stream, keyed, auth)
                 for kind, model, stream in KINDS + (COMPRESSION_KINDS if args.compression else ())
                 for keyed in ((False, True) if args.with_key else (False,))
                 for auth in (bench.AUTHORIZATION, *([limited] if limited else []))]
        for kind, model, stream, keyed, auth in cases:
            label = kind + ("+key" if keyed else "") + ("+limits" if auth == limited else "")
            messages, extra = bench.COMPRESSION_CASES.get(kind, (bench.PROMPT, {}))
            body = json.dumps({"model": model, "messages": messages, "stream": stream, **extra})
            results[label] = measure(
                gateway, args.gateway_port, out, body, kind, args.requests,
                (lambda: f"k-{next(keys)}") if keyed else (lambda: None), auth, ledger)
            print(f"  {label:10} {results[label] / 1e6:7.3f} M instructions per request "
                  f"({args.requests} requests)", flush=True)
        gateway.stop(wait=60)
        if not args.no_bare:
            floor = tmp / "bare.callgrind.out"
            bare = bench.start_bare(tmp, args.python, args.upstream_port, args.bare_port,
                                    launcher=(*valgrind, f"--callgrind-out-file={floor}"),
                                    start_timeout=600)
            for kind, model, stream in KINDS:
                body = json.dumps({"model": model, "messages": bench.PROMPT, "stream": stream})
                label = f"bare {kind}"
                results[label] = measure(bare, args.bare_port, floor, body, kind, args.requests,
                                         lambda: None, None, Ledger(None))
                print(f"  {label:10} {results[label] / 1e6:7.3f} M instructions per request "
                      f"({args.requests} requests); gateway / bare "
                      f"{results[kind] / results[label]:.2f}", flush=True)
    except bench.BenchError as exc:
        print(f"instructions.py: {exc}", file=sys.stderr)
        return 1
    finally:
        for service in (gateway, bare):
            if service is not None:
                service.stop(wait=60)
        upstream.stop()
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for dump in tmp.glob("*callgrind.out.*"):
                shutil.copy(dump, args.keep / dump.name)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
