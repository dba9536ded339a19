"""Streaming latency: what the gateway adds to the first token and to the gaps between chunks.

A paced upstream (bench/paced.py: N content chunks M ms apart) is streamed from by K clients at
once, straight and through a one-worker gateway, in one run: K = 1, 16, 64, 256, with arrivals
spread evenly over one second and in one burst. For each it reports, gateway minus direct, the
added time to the first content chunk (TTFT) at p50 and p99, the added inter-chunk gap at p50 and
p99, and the chunks lost (expected K * N, minus those that arrived, in order, in a stream that
ended with `data: [DONE]`). Loopback only; every stream has a 60 s limit.

    .venv/bin/python bench/streams.py [--chunks 33] [--gap-ms 20] [--streams 1,16,64,256]

The clients share one process (uvloop), the upstream another, the gateway a third. At K = 256
the client process itself is busy (about 13,000 chunks a second to parse) and its delay is part
of both paths' figures alike; the difference is the gateway's.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import bench
import orjson
import uvloop

TARGETS = {"ttft_p99_ms": 2.0, "gap_p99_ms": 1.0}  # the issue's, at K = 64 spread


@dataclass
class Stream:
    ttft: float | None = None  # seconds from sending the request to the first content chunk
    gaps: list[float] = field(default_factory=list)  # seconds between content chunks
    chunks: int = 0  # content chunks that arrived in order
    done: bool = False
    error: str | None = None


@dataclass
class Result:
    path: str
    arrivals: str  # spread | burst
    streams: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    gap_p50_ms: float
    gap_p99_ms: float
    chunks_lost: int
    failed: int
    errors: list[str]


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


async def one(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
              start_at: float) -> Stream:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    stream = Stream()
    sent = time.perf_counter()
    last = None
    try:
        async with session.post(url, data=body, headers=headers) as answer:
            if answer.status != 200:
                stream.error = f"HTTP {answer.status}"
                return stream
            async for line in answer.content:
                if not line.startswith(b"data: "):
                    continue
                if line.startswith(b"data: [DONE]"):
                    stream.done = True
                    break
                now = time.perf_counter()
                choices = orjson.loads(line[6:]).get("choices") or ()
                content = choices[0].get("delta", {}).get("content") if choices else None
                if not content:
                    continue
                if content != f"c{stream.chunks} ":
                    stream.error = f"chunk {stream.chunks} is {content!r}"
                    return stream
                stream.chunks += 1
                if last is None:
                    stream.ttft = now - sent
                else:
                    stream.gaps.append(now - last)
                last = now
    except (aiohttp.ClientError, TimeoutError) as exc:
        stream.error = f"{type(exc).__name__}: {exc}"
    return stream


async def load(url: str, body: bytes, headers: dict[str, str], streams: int,
               spread: bool) -> list[Stream]:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=timeout) as session:
        start = asyncio.get_running_loop().time() + 0.05
        return await asyncio.gather(*(
            one(session, url, body, headers, start + (i / streams if spread else 0.0))
            for i in range(streams)))


def summarise(path: str, arrivals: str, streams: int, chunks: int,
              results: list[Stream]) -> Result:
    ttfts = [s.ttft for s in results if s.ttft is not None]
    gaps = [g for s in results for g in s.gaps]
    failed = [s for s in results if s.error or not s.done]
    return Result(
        path, arrivals, streams,
        1e3 * percentile(ttfts, 50), 1e3 * percentile(ttfts, 99),
        1e3 * percentile(gaps, 50), 1e3 * percentile(gaps, 99),
        len(results) * chunks - sum(s.chunks for s in results if s.done and not s.error),
        len(failed), sorted({s.error or "no [DONE]" for s in failed})[:5])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=33)
    parser.add_argument("--gap-ms", type=float, default=20.0)
    parser.add_argument("--streams", default="1,16,64,256",
                        help="comma-separated numbers of concurrent streams")
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs of each case per path, alternating direct and gateway")
    parser.add_argument("--min-samples", type=int, default=16,
                        help="at least this many streams per case and path (more rounds)")
    parser.add_argument("--python", type=Path, default=Path(sys.executable))
    parser.add_argument("--upstream-port", type=int, default=19121)
    parser.add_argument("--gateway-port", type=int, default=19122)
    parser.add_argument("--results", type=Path, default=bench.BENCH_DIR / "results")
    args = parser.parse_args()
    counts = [int(k) for k in args.streams.split(",")]
    if bench.port_taken("streams.py", args.upstream_port, args.gateway_port):
        return 1

    tmp = Path(tempfile.mkdtemp(prefix="tokenmux-streams-"))
    services: list[bench.Service] = []
    rows: list[Result] = []
    direct_url = f"http://127.0.0.1:{args.upstream_port}/sse/v1/chat/completions"
    through_url = f"http://127.0.0.1:{args.gateway_port}/v1/chat/completions"
    paths = {
        "direct": (direct_url, {"Content-Type": "application/json"}, "static-model"),
        "gateway": (through_url, {"Content-Type": "application/json",
                                  "Authorization": bench.AUTHORIZATION}, "bench-sse"),
    }
    loop = uvloop.new_event_loop()
    try:
        services.append(bench.start_paced(tmp, args.python, args.upstream_port, args.chunks,
                                          args.gap_ms))
        services.append(bench.start_gateway(tmp, args.python, args.upstream_port,
                                            args.gateway_port))

        def run(path: str, streams: int, spread: bool) -> list[Stream]:
            url, headers, model = paths[path]
            body = orjson.dumps({"model": model, "stream": True, "messages": bench.PROMPT})
            return loop.run_until_complete(load(url, body, headers, streams, spread))

        for path in paths:  # warm-up, not counted: connections, caches
            run(path, 16, False)
        for streams in counts:
            for arrivals in ("spread", "burst"):
                # Rounds alternate the paths, so that a change in the machine's other load
                # falls on both; a small K gets more rounds, for percentiles worth the name.
                samples: dict[str, list[Stream]] = {path: [] for path in paths}
                for _ in range(max(args.rounds, -(-args.min_samples // streams))):
                    for path in paths:
                        samples[path] += run(path, streams, arrivals == "spread")
                for path, results in samples.items():
                    rows.append(summarise(path, arrivals, streams, args.chunks, results))
                    r = rows[-1]
                    print(f"  {path:7} {arrivals:6} K={streams:<4} ttft p50 {r.ttft_p50_ms:7.2f} "
                          f"p99 {r.ttft_p99_ms:7.2f}  gap p50 {r.gap_p50_ms:6.2f} "
                          f"p99 {r.gap_p99_ms:6.2f} ms  lost {r.chunks_lost}  "
                          f"failed {r.failed} {' '.join(r.errors)}", flush=True)
    except bench.BenchError as exc:
        print(f"streams.py: {exc}", file=sys.stderr)
        return 1
    finally:
        for service in reversed(services):
            service.stop()
        loop.close()
        shutil.rmtree(tmp, ignore_errors=True)

    by = {(r.path, r.arrivals, r.streams): r for r in rows}
    print("\n| arrivals | K | added TTFT p50 ms | added TTFT p99 ms | added gap p50 ms "
          "| added gap p99 ms | chunks lost (direct / gateway) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    summary = []
    for arrivals in ("spread", "burst"):
        for streams in counts:
            d, g = by[("direct", arrivals, streams)], by[("gateway", arrivals, streams)]
            added = {"arrivals": arrivals, "streams": streams,
                     "ttft_p50_ms": g.ttft_p50_ms - d.ttft_p50_ms,
                     "ttft_p99_ms": g.ttft_p99_ms - d.ttft_p99_ms,
                     "gap_p50_ms": g.gap_p50_ms - d.gap_p50_ms,
                     "gap_p99_ms": g.gap_p99_ms - d.gap_p99_ms,
                     "lost_direct": d.chunks_lost, "lost_gateway": g.chunks_lost}
            summary.append(added)
            print(f"| {arrivals} | {streams} | {added['ttft_p50_ms']:.2f} "
                  f"| {added['ttft_p99_ms']:.2f} | {added['gap_p50_ms']:.2f} "
                  f"| {added['gap_p99_ms']:.2f} | {d.chunks_lost} / {g.chunks_lost} |")
    target = next((s for s in summary if s["arrivals"] == "spread" and s["streams"] == 64), None)
    if target is not None:
        ok = (target["ttft_p99_ms"] <= TARGETS["ttft_p99_ms"]
              and target["gap_p99_ms"] <= TARGETS["gap_p99_ms"])
        print(f"\ntarget at K=64 spread: added TTFT p99 ≤ {TARGETS['ttft_p99_ms']:g} ms and added "
              f"gap p99 ≤ {TARGETS['gap_p99_ms']:g} ms: {'PASS' if ok else 'FAIL'}")
    lost = sum(s["lost_gateway"] for s in summary)
    print(f"chunks lost through the gateway: {lost}")

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.results.mkdir(parents=True, exist_ok=True)
    report = {"started": stamp, "revision": bench.git_revision(),
              "settings": {"chunks": args.chunks, "gap_ms": args.gap_ms, "streams": counts,
                           "rounds": args.rounds, "min_samples": args.min_samples},
              "targets": TARGETS, "summary": summary, "runs": [asdict(r) for r in rows]}
    text = json.dumps(report, indent=2) + "\n"
    (args.results / f"streams-{stamp}.json").write_text(text)
    (args.results / "streams-latest.json").write_text(text)
    print(f"Results: {args.results / f'streams-{stamp}.json'}")
    return 0 if lost == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
