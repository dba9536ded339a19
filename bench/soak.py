"""The soak: mixed load at about half of the gateway's capacity for a long while, watching its
memory.

The upstream is the paced one (bench/paced.py: a JSON answer at once, or a stream of N chunks M
ms apart). First wrk finds the gateway's JSON capacity at 32 connections (5 s); then the soak
sends, open loop, half that many requests a second, mixed:

    json        70 %   a chat completion, answered whole
    stream      15 %   a stream read to `data: [DONE]`
    disconnect   5 %   a stream the client drops after its third chunk
    4xx         10 %   a bad body (400), an unknown model (404), a wrong key (401), in turn

Every 10 s it samples the gateway's resident memory (each process's, summed when it runs
workers), writes the samples to a CSV and, at the end, a PNG plot. After the warm-up (default a
fifth of the run, at most 2 minutes), the last three samples' mean is compared with the first
three's: a growth of more than 10 % fails the soak. Idle memory is sampled before the load and
again after it.

    bench/soak [--duration 10m] [--warmup 2m] [--workers 1] [--rate N]

Exit status: 0 flat; 1 could not run; 2 answers that were not the expected ones; 3 memory grew.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import itertools
import json
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import bench
import orjson
import uvloop

SAMPLE_EVERY = 10.0
MAX_GROWTH = 0.10
# The load generator's own bound: a slow gateway gets skips, not a pile. It is the gateway's
# default cap of requests in flight per key (server.max_concurrent_per_key), as the soak's
# requests all come with one key: beyond it they would be refused with 429, which is shedding,
# not the steady load the soak is about.
MAX_IN_FLIGHT = 256
MIX = (("json", 70), ("stream", 15), ("disconnect", 5), ("4xx", 10))


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (10m, 90s, 1h)")
    return float(match.group(1)) * {"ms": 1e-3, "s": 1, "m": 60, "h": 3600, None: 1}[
        match.group(2)]


def rss_bytes(pid: int) -> dict[int, int]:
    """Resident memory of PID and of its live children (the workers under a supervisor)."""
    found: dict[int, int] = {}
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return found
    if match := re.search(r"^VmRSS:\s+(\d+) kB", status, re.M):
        found[pid] = int(match.group(1)) * 1024
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children = [int(child) for child in task.read_text().split()]
        except OSError:
            continue
        for child in children:
            found.update(rss_bytes(child))
    return found


def workers_rss(pid: int) -> list[int]:
    """The serving processes' memory: the children when there is a supervisor, else PID's."""
    every = rss_bytes(pid)
    children = [size for child, size in every.items() if child != pid]
    return children or list(every.values())


@dataclass
class Counts:
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(dict(MIX), 0))
    ok: dict[str, int] = field(default_factory=lambda: dict.fromkeys(dict(MIX), 0))
    unexpected: dict[str, int] = field(default_factory=dict)
    skipped: int = 0

    def wrong(self, what: str) -> None:
        self.unexpected[what] = self.unexpected.get(what, 0) + 1


class Load:
    def __init__(self, url: str, chunks: int, counts: Counts):
        self.url = url
        self.chunks = chunks
        self.counts = counts
        self.bad = itertools.cycle((
            (b"{not json", bench.AUTHORIZATION, 400),
            (orjson.dumps({"model": "no-such-model", "messages": bench.PROMPT}),
             bench.AUTHORIZATION, 404),
            (orjson.dumps({"model": "bench-json", "messages": bench.PROMPT}),
             "Bearer tm-wrong-key-0000000000000", 401)))

    async def one(self, session: aiohttp.ClientSession, kind: str) -> None:
        headers = {"Content-Type": "application/json", "Authorization": bench.AUTHORIZATION}
        body = orjson.dumps({"model": "bench-json" if kind == "json" else "bench-sse",
                             "messages": bench.PROMPT, "stream": kind != "json"})
        expected = 200
        if kind == "4xx":
            body, headers["Authorization"], expected = next(self.bad)
        try:
            async with session.post(self.url, data=body, headers=headers) as answer:
                if answer.status != expected:
                    self.counts.wrong(f"{kind}: HTTP {answer.status}, expected {expected}")
                    return
                if kind in ("json", "4xx"):
                    data = orjson.loads(await answer.read())
                    if kind == "json" and not data.get("choices"):
                        self.counts.wrong("json: no choices")
                        return
                    if kind == "4xx" and "error" not in data:
                        self.counts.wrong("4xx: no error object")
                        return
                else:
                    chunks, done = 0, False
                    async for line in answer.content:
                        if line.startswith(b"data: [DONE]"):
                            done = True
                            break
                        if line.startswith(b"data: ") and b'"content":"c' in line:
                            chunks += 1
                            if kind == "disconnect" and chunks == 3:
                                answer.close()  # the client walks away mid-stream
                                break
                    if kind == "stream" and (not done or chunks != self.chunks):
                        self.counts.wrong(f"stream: {chunks} chunks, [DONE] {done}")
                        return
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.counts.wrong(f"{kind}: {type(exc).__name__}")
            return
        self.counts.ok[kind] += 1

    async def run(self, rate: float, until: float) -> None:
        order = itertools.cycle(interleaved())
        pending: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=timeout) as session:
            start = loop.time()
            for n in itertools.count():
                due = start + n / rate
                if due >= until:
                    break
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if len(pending) >= MAX_IN_FLIGHT:
                    self.counts.skipped += 1
                    continue
                kind = next(order)
                self.counts.sent[kind] += 1
                task = loop.create_task(self.one(session, kind))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.wait(pending, timeout=90)


def interleaved() -> list[str]:
    """The mix as a repeating order of 100 requests, each kind spread evenly through it
    (smooth weighted round robin), so that no second is all streams."""
    credit = dict.fromkeys(dict(MIX), 0)
    order = []
    for _ in range(100):
        for kind, share in MIX:
            credit[kind] += share
        kind = max(credit, key=credit.__getitem__)
        credit[kind] -= 100
        order.append(kind)
    return order


def capacity(url: str, tmp: Path) -> float:
    body = tmp / "capacity.json"
    body.write_text(json.dumps({"model": "bench-json", "messages": bench.PROMPT}))
    bench.wrk(url, body, bench.AUTHORIZATION, 1, 32, "2s")  # warm-up
    run = bench.parse_wrk(bench.wrk(url, body, bench.AUTHORIZATION, 1, 32, "5s"),
                          bench.Run("json", "gateway", "c32", 1, 32, "5s"))
    return run.rps


def plot(rows: list[dict[str, float]], warmup: float, baseline: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4.5))
    minutes = [row["elapsed_s"] / 60 for row in rows]
    axis.plot(minutes, [row["rss_mb"] for row in rows], marker=".", label="gateway RSS (MB)")
    axis.axvspan(0, warmup / 60, color="0.9", label="warm-up")
    axis.axhline(baseline * (1 + MAX_GROWTH), color="tab:red", linestyle="--",
                 label=f"after warm-up +{MAX_GROWTH:.0%}")
    axis.set_xlabel("minutes")
    axis.set_ylabel("MB")
    axis.set_ylim(bottom=0)
    rate = axis.twinx()
    rate.plot(minutes, [row["req_per_s"] for row in rows], color="tab:green", alpha=0.5,
              label="requests/s")
    rate.set_ylabel("requests/s")
    rate.set_ylim(bottom=0)
    lines = axis.get_legend_handles_labels()
    more = rate.get_legend_handles_labels()
    axis.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right")
    axis.set_title("tokenmux soak: resident memory under mixed load")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


async def soak(args: argparse.Namespace, gateway: bench.Service, url: str, rate: float,
               writer: csv.DictWriter, rows: list[dict[str, float]], counts: Counts) -> None:
    load = Load(url, args.chunks, counts)
    loop = asyncio.get_running_loop()
    start = loop.time()
    task = loop.create_task(load.run(rate, start + args.duration))
    done_before = 0
    while True:
        finished = task.done()
        elapsed = loop.time() - start
        sizes = workers_rss(gateway.process.pid)
        done = sum(counts.ok.values()) + sum(counts.unexpected.values())
        row = {"elapsed_s": round(elapsed, 1), "rss_mb": round(sum(sizes) / 2**20, 2),
               "workers_mb": " ".join(f"{size / 2**20:.1f}" for size in sizes),
               "req_per_s": round((done - done_before) / SAMPLE_EVERY, 1) if rows else 0.0,
               "done": done, "unexpected": sum(counts.unexpected.values()),
               "skipped": counts.skipped}
        done_before = done
        rows.append(row)
        writer.writerow(row)
        print(f"  {elapsed:6.0f} s  rss {row['rss_mb']:7.1f} MB ({row['workers_mb']})  "
              f"{row['req_per_s']:7.1f} req/s  unexpected {row['unexpected']}  "
              f"skipped {row['skipped']}", flush=True)
        if finished or not gateway.alive():
            break
        await asyncio.wait([task], timeout=max(0.0, start + len(rows) * SAMPLE_EVERY
                                              - loop.time()))
    if not gateway.alive():
        task.cancel()
        raise bench.BenchError(f"the gateway died during the soak:\n{gateway.log_tail()}")
    await task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=seconds, default=600.0,
                        help="how long the load runs (10m, 90s, 1h; default 10m)")
    parser.add_argument("--warmup", type=seconds, default=None,
                        help="first part of the run not judged (default: a fifth, at most 2m)")
    parser.add_argument("--rate", type=float, default=None,
                        help="requests per second (default: half the measured JSON capacity)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--chunks", type=int, default=33)
    parser.add_argument("--gap-ms", type=float, default=20.0)
    parser.add_argument("--python", type=Path, default=Path(sys.executable))
    parser.add_argument("--upstream-port", type=int, default=19131)
    parser.add_argument("--gateway-port", type=int, default=19132)
    parser.add_argument("--results", type=Path, default=bench.BENCH_DIR / "results")
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else min(120.0, args.duration / 5)
    if bench.port_taken("soak", args.upstream_port, args.gateway_port):
        return 1
    if not shutil.which("wrk") and args.rate is None:
        print("soak: wrk is not installed (bench/run installs it); or give --rate", file=sys.stderr)
        return 1

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, interrupted)

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.results.mkdir(parents=True, exist_ok=True)
    csv_path = args.results / f"soak-{stamp}.csv"
    png_path = args.results / f"soak-{stamp}.png"
    tmp = Path(tempfile.mkdtemp(prefix="tokenmux-soak-"))
    services: list[bench.Service] = []
    rows: list[dict[str, float]] = []
    counts = Counts()
    url = f"http://127.0.0.1:{args.gateway_port}/v1/chat/completions"
    loop = uvloop.new_event_loop()
    try:
        services.append(bench.start_paced(tmp, args.python, args.upstream_port, args.chunks,
                                          args.gap_ms))
        gateway = bench.start_gateway(tmp, args.python, args.upstream_port, args.gateway_port,
                                      workers=args.workers)
        services.append(gateway)
        for model, stream in (("bench-json", False), ("bench-sse", True)):
            # One of each first, so that idle means idle after serving.
            status, _, raw = bench.post(url, {"model": model, "messages": bench.PROMPT,
                                              "stream": stream}, bench.AUTHORIZATION)
            if status != 200:
                raise bench.BenchError(f"{model}: HTTP {status}: {raw[:300]!r}")
        time.sleep(2)
        idle_before = workers_rss(gateway.process.pid)
        rate = args.rate
        if rate is None:
            full = capacity(url, tmp)
            rate = full / 2
            print(f"soak: JSON capacity {full:,.0f} req/s at 32 connections; the soak sends "
                  f"{rate:,.0f} req/s", flush=True)
        print(f"soak: {args.duration:g} s of mixed load, warm-up {warmup:g} s; idle RSS per "
              f"worker {' '.join(f'{s / 2**20:.1f}' for s in idle_before)} MB; {csv_path}",
              flush=True)
        with csv_path.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=["elapsed_s", "rss_mb", "workers_mb",
                                                     "req_per_s", "done", "unexpected",
                                                     "skipped"])
            writer.writeheader()
            loop.run_until_complete(soak(args, gateway, url, rate, writer, rows, counts))
        time.sleep(SAMPLE_EVERY)
        idle_after = workers_rss(gateway.process.pid)
    except bench.BenchError as exc:
        print(f"soak: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"soak: interrupted ({exc or 'SIGINT'})", file=sys.stderr)
        return 1
    finally:
        for service in reversed(services):
            service.stop()
        loop.close()
        shutil.rmtree(tmp, ignore_errors=True)

    # Samples taken while the load ran; the ones after it (its last requests draining) are
    # plotted but not judged.
    judged = [row for row in rows if warmup <= row["elapsed_s"] <= args.duration + 1]
    if len(judged) < 6:
        print(f"soak: only {len(judged)} samples after the warm-up; run longer", file=sys.stderr)
        return 1
    baseline = sum(row["rss_mb"] for row in judged[:3]) / 3
    final = sum(row["rss_mb"] for row in judged[-3:]) / 3
    growth = final / baseline - 1
    plot(rows, warmup, baseline, png_path)
    flat = growth <= MAX_GROWTH
    total = sum(counts.sent.values())
    mix = ", ".join(f"{kind} {n:,}" for kind, n in counts.sent.items())
    print(f"\nsoak: {total:,} requests ({mix}); "
          f"{counts.skipped:,} skipped; {sum(counts.unexpected.values()):,} unexpected answers")
    for what, n in sorted(counts.unexpected.items(), key=lambda item: -item[1])[:10]:
        print(f"  {n:6} x {what}")
    print(f"soak: RSS after warm-up {baseline:.1f} MB, at the end {final:.1f} MB: "
          f"{growth:+.1%} ({'flat' if flat else 'GREW'}; limit +{MAX_GROWTH:.0%}); peak "
          f"{max(row['rss_mb'] for row in rows):.1f} MB")
    print(f"soak: idle RSS per worker before {' '.join(f'{s / 2**20:.1f}' for s in idle_before)}"
          f" MB, after {' '.join(f'{s / 2**20:.1f}' for s in idle_after)} MB")
    print(f"soak: {csv_path}, {png_path}")
    summary = {"started": stamp, "revision": bench.git_revision(), "duration_s": args.duration,
               "warmup_s": warmup, "rate": rate, "workers": args.workers, "sent": counts.sent,
               "ok": counts.ok, "unexpected": counts.unexpected, "skipped": counts.skipped,
               "rss_after_warmup_mb": baseline, "rss_end_mb": final, "growth": growth,
               "idle_rss_before_mb": [s / 2**20 for s in idle_before],
               "idle_rss_after_mb": [s / 2**20 for s in idle_after]}
    (args.results / f"soak-{stamp}.json").write_text(json.dumps(summary, indent=2) + "\n")
    if counts.unexpected:
        return 2
    return 0 if flat else 3


if __name__ == "__main__":
    sys.exit(main())
