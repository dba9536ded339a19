"""Where one request's Python work goes: function calls per request on the event loop's thread,
by package, for the gateway and the bare pass-through, counted by cProfile.

A call count does not move with the machine's load (only the times beside it do), so it shows
what the gateway does beyond the floor and whose code does it: tokenmux's own functions, aiohttp
(server and client), the standard library, and C functions. The ledger writer and the counting
thread are not counted: they are off the request path (`bench/instructions.py` counts them).

Each target runs under a small wrapper that switches cProfile on with SIGUSR1 and dumps it with
SIGUSR2; N requests of one kind go through one keep-alive connection in between, after 100 that
warm up. Standard library only, like bench.py.

    .venv/bin/python bench/calls.py [--requests 2000] [--functions 30]

`--functions N` also lists the gateway's N most called functions of each kind, per request.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import pstats
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import bench
from instructions import ask

KINDS = (("json", "bench-json", False), ("stream", "bench-sse", True))

# Run as `python calls.py --wrap PYTHON ARGS...`: the target under a profiler the signals drive.
WRAPPER = """
import cProfile, os, runpy, signal, sys
profile, out = cProfile.Profile(), os.environ["TOKENMUX_BENCH_PROFILE"]
def on(*_):
    profile.clear()
    profile.enable()
def off(*_):
    profile.disable()
    profile.dump_stats(out + ".part")
    os.replace(out + ".part", out)
signal.signal(signal.SIGUSR1, on)
signal.signal(signal.SIGUSR2, off)
args = sys.argv[2:]  # after the wrapper and the Python that runs it
if args[0] == "-m":
    sys.argv = args[1:]
    runpy.run_module(args[1], run_name="__main__", alter_sys=True)
else:
    sys.argv = args
    runpy.run_path(args[0], run_name="__main__")
"""


def profiled(service: bench.Service, port: int, out: Path, body: str, kind: str,
             requests: int, authorization: str | None) -> pstats.Stats:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(100):
        ask(connection, body, kind, None, authorization)
    out.unlink(missing_ok=True)
    os.kill(service.process.pid, signal.SIGUSR1)
    time.sleep(0.5)  # the handler runs between two of the loop's callbacks
    for _ in range(requests):
        ask(connection, body, kind, None, authorization)
    os.kill(service.process.pid, signal.SIGUSR2)
    deadline = time.monotonic() + 60
    while not out.exists():
        if time.monotonic() > deadline:
            raise bench.BenchError(f"{service.name} wrote no profile")
        time.sleep(0.1)
    connection.close()
    return pstats.Stats(str(out))


def owner(filename: str, function: str) -> str:
    """The package a function belongs to, as the report groups them."""
    if filename == "~":
        return "C functions"
    if "/site-packages/" in filename:
        return filename.split("/site-packages/")[1].split("/")[0]
    if "/src/tokenmux/" in filename:
        return "tokenmux"
    if filename.endswith("bare.py"):
        return "bare.py"
    return "stdlib"


def breakdown(stats: pstats.Stats, requests: int) -> dict[str, float]:
    calls: collections.Counter[str] = collections.Counter()
    for (filename, _, function), (_, count, *_rest) in stats.stats.items():  # type: ignore[attr-defined]
        calls[owner(filename, function)] += count
    return {name: count / requests for name, count in calls.most_common()}


def top_functions(stats: pstats.Stats, requests: int, count: int) -> list[str]:
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][1])  # type: ignore[attr-defined]
    lines = []
    for (filename, line, function), (_, calls, *_rest) in rows[:count]:
        where = filename.split("/site-packages/")[-1].split("/src/")[-1]
        lines.append(f"  {calls / requests:7.1f}  {where}:{line} {function}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--functions", type=int, default=0)
    parser.add_argument("--python", type=Path, default=Path(sys.executable))
    parser.add_argument("--upstream-port", type=int, default=19121)
    parser.add_argument("--gateway-port", type=int, default=19122)
    parser.add_argument("--bare-port", type=int, default=19123)
    args = parser.parse_args()
    if bench.port_taken("calls.py", args.upstream_port, args.gateway_port, args.bare_port):
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="tokenmux-calls-"))
    wrapper = tmp / "profiled.py"
    wrapper.write_text(WRAPPER)
    launcher = (str(args.python), str(wrapper))
    upstream = bench.start_upstream(tmp, args.upstream_port)
    results: dict[str, dict[str, float]] = {}
    top: dict[str, list[str]] = {}
    try:
        for target in ("gateway", "bare"):
            folder = tmp / target
            folder.mkdir()
            for kind, model, stream in KINDS:
                out = folder / f"{kind}.prof"
                os.environ["TOKENMUX_BENCH_PROFILE"] = str(out)
                if target == "gateway":
                    service = bench.start_gateway(folder, args.python, args.upstream_port,
                                                  args.gateway_port, launcher=launcher)
                    port, authorization = args.gateway_port, bench.AUTHORIZATION
                else:
                    service = bench.start_bare(folder, args.python, args.upstream_port,
                                               args.bare_port, launcher=launcher)
                    port, authorization = args.bare_port, None
                try:
                    body = json.dumps({"model": model, "messages": bench.PROMPT,
                                       "stream": stream})
                    stats = profiled(service, port, out, body, kind, args.requests,
                                     authorization)
                finally:
                    service.stop(wait=60)
                results[f"{target} {kind}"] = breakdown(stats, args.requests)
                if target == "gateway":
                    top[kind] = top_functions(stats, args.requests, args.functions)
    except bench.BenchError as exc:
        print(f"calls.py: {exc}", file=sys.stderr)
        return 1
    finally:
        upstream.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for kind, _, _ in KINDS:
        gateway, bare = results[f"gateway {kind}"], results[f"bare {kind}"]
        total_gateway, total_bare = sum(gateway.values()), sum(bare.values())
        print(f"{kind}: {total_gateway:.0f} Python-level calls per request through the gateway, "
              f"{total_bare:.0f} through the bare pass-through ({total_bare / total_gateway:.2f}"
              f" of the gateway's)")
        print(f"  {'':14}{'gateway':>9}{'bare':>9}")
        for name in sorted(set(gateway) | set(bare), key=lambda n: -gateway.get(n, 0)):
            print(f"  {name:14}{gateway.get(name, 0):9.1f}{bare.get(name, 0):9.1f}")
        if args.functions:
            print(f"  the gateway's {args.functions} most called functions, calls per request:")
            print("\n".join(top[kind]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
