"""The gateway benchmark: what tokenmux adds on top of an upstream that costs next to nothing.

A static nginx plays the upstream, so that the difference between hitting it directly and hitting
it through the gateway is the gateway's own cost. A bare aiohttp pass-through (bench/bare.py) on
the same upstream is the floor a Python proxy cannot go under: `gateway / bare` is what the
features cost. For a plain JSON completion and for a stream, wrk measures the three paths at
concurrency 1 (median latency) and at concurrency 32 (throughput).

Standard library only: it runs with whatever Python the project's venv has, before anything else
is installed into it. `bench/run` installs nginx and wrk and then calls this file.

Exit status: 0 when every run completed cleanly, whether or not the targets were met; 1 when the
benchmark could not run (setup, startup or a wrong answer); 2 when a measured run saw errors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
UPSTREAM_DIR = BENCH_DIR / "upstream"
LUA_SCRIPT = BENCH_DIR / "post.lua"
KEYED_SCRIPT = BENCH_DIR / "post_keyed.lua"  # a fresh Idempotency-Key on every request

ADMIN_KEY = "tm-bench-admin-key-0123456789"
AUTHORIZATION = f"Bearer {ADMIN_KEY}"
PROMPT = [{"role": "user", "content": "Say hello"}]
# A conversation of twelve turns, about 1,500 tokens, for the compression cases.
LONG = [{"role": "system", "content": "You are a careful planner."}] + [
    {"role": role, "content": f"{role} turn {i}: " + "the plan covers budgets, vendors, hiring "
     "and the open questions of the billing migration " * 6}
    for i in range(12) for role in ("user", "assistant")] + [
    {"role": "user", "content": "What is still open?"}]
# With --compression: the same JSON request asking for compression it does not need (the
# conversation is far below the threshold), and a long conversation sent as it is and with
# compression whose summary (written once, by the static upstream) is reused on every request.
COMPRESSION_CASES = {
    "json+compression-idle": (PROMPT, {"compression": {"enabled": True}}),
    "json-long": (LONG, {}),
    "json-long+compression-cached": (LONG, {"compression": {
        "enabled": True, "threshold": 500, "keep_turns": 2, "model": "bench-json"}}),
}

# The targets.
MAX_ADDED_P50_MS = 0.3  # gateway p50 - direct p50 at c=1
MIN_GATEWAY_RPS = 2000.0
MIN_OVER_BARE = 0.9  # gateway req/s ÷ bare pass-through req/s at c=32

# Load points: (name, wrk threads, connections). One thread per core at most: the machine also
# runs nginx and the gateway, and wrk stealing their CPU would be measured as their slowness.
LOW = ("c1", 1, 1)
HIGH = ("c32", 2, 32)


class BenchError(Exception):
    """The benchmark could not run; the message says why."""


# --------------------------------------------------------------------------------------------
# Processes


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, wait: float = 15.0) -> None:
        if not self.alive():
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start(name: str, argv: list[str], log: Path) -> Service:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    return Service(name, process, log)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_taken(who: str, *ports: int) -> bool:
    """Whether one of PORTS is in use (said on stderr as WHO): another run there would answer
    this one's requests and spoil both."""
    for port in ports:
        if not port_free(port):
            print(f"{who}: port {port} is already in use", file=sys.stderr)
            return True
    return False


def wait_until(ready, service: Service, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise BenchError(f"{service.name} exited (status {service.process.returncode}) "
                             f"before {what}:\n{service.log_tail()}")
        try:
            if ready():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise BenchError(f"{service.name} was not {what} after {timeout:g}s:\n{service.log_tail()}")


def start_upstream(tmp: Path, port: int) -> Service:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise BenchError("nginx is not installed (bench/run installs it)")
    template = (UPSTREAM_DIR / "nginx.conf.template").read_text()
    config = tmp / "nginx.conf"
    config.write_text(template.replace("{{tmp}}", str(tmp)).replace("{{port}}", str(port))
                      .replace("{{upstream}}", str(UPSTREAM_DIR)))
    # -p and -e keep nginx away from its compiled-in prefix and log under /var.
    service = start("nginx", [nginx, "-c", str(config), "-p", str(tmp),
                              "-e", str(tmp / "nginx-error.log")], tmp / "nginx.out")
    url = f"http://127.0.0.1:{port}/json/v1/chat/completions"
    wait_until(lambda: post(url, {"model": "static-model"})[0] == 200, service, "serving")
    return service


def start_gateway(tmp: Path, python: Path, upstream_port: int, port: int,
                  launcher: tuple[str, ...] = (), start_timeout: float = 60,
                  redis: str | None = None, workers: int = 1) -> Service:
    """The gateway on the bench's config; `launcher` runs it under another program (valgrind);
    REDIS: the Redis its shared state lives in; WORKERS: processes on its port."""
    config = tmp / "tokenmux.yaml"
    base = f"http://127.0.0.1:{upstream_port}"
    shared = {} if redis is None else {"redis": redis,
                                       "redis_prefix": f"bench-{os.getpid()}-{time.time_ns()}:"}
    # JSON is a subset of YAML, so the config is written without needing PyYAML here.
    config.write_text(json.dumps({
        **shared,
        "database": str(tmp / "bench.db"),
        "admin_key": ADMIN_KEY,
        "log_level": "WARNING",  # one log line per request would be part of what we measure
        "providers": {
            "static-json": {"kind": "openai", "base_url": f"{base}/json/v1",
                            "api_key": "sk-static"},
            "static-sse": {"kind": "openai", "base_url": f"{base}/sse/v1",
                           "api_key": "sk-static"},
        },
        "models": [
            {"name": "bench-json", "channels": [{"provider": "static-json",
                                                 "model": "static-model"}]},
            {"name": "bench-sse", "channels": [{"provider": "static-sse",
                                                "model": "static-model"}]},
        ],
    }, indent=2) + "\n")
    argv = [*launcher, str(python), "-m", "tokenmux", "serve", "--config", str(config),
            "--port", str(port), "--workers", str(workers)]
    service = start("gateway", argv, tmp / "gateway.log")
    url = f"http://127.0.0.1:{port}/health/live"
    wait_until(lambda: get(url) == 200, service, "live", timeout=start_timeout)
    return service


def start_bare(tmp: Path, python: Path, upstream_port: int, port: int,
               launcher: tuple[str, ...] = (), start_timeout: float = 60) -> Service:
    """The floor: bench/bare.py, a pass-through with nothing but a pooled client."""
    argv = [*launcher, str(python), str(BENCH_DIR / "bare.py"), "--port", str(port),
            "--upstream", f"http://127.0.0.1:{upstream_port}"]
    service = start("bare", argv, tmp / "bare.log")
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    wait_until(lambda: post(url, {"model": "bench-json", "messages": PROMPT})[0] == 200, service,
               "serving", timeout=start_timeout)
    return service


def start_paced(tmp: Path, python: Path, port: int, chunks: int, gap_ms: float) -> Service:
    """bench/paced.py: streams of CHUNKS content chunks GAP_MS apart (JSON at once)."""
    service = start("paced", [str(python), str(BENCH_DIR / "paced.py"), "--port", str(port),
                              "--chunks", str(chunks), "--gap-ms", str(gap_ms)],
                    tmp / "paced.log")
    wait_until(lambda: not port_free(port), service, "listening")
    return service


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and of its live children (the workers under a
    supervisor), from /proc (Linux only; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return own + sum(cpu_seconds(child) for child in children)


def limited_authorization(tmp: Path, python: Path) -> str:
    """A key with rate limits no run reaches, so every request pays for the limiter."""
    created = subprocess.run(
        [str(python), "-m", "tokenmux", "keys", "create", "--config", str(tmp / "tokenmux.yaml"),
         "--name", "bench-limited", "--rpm", "1000000000", "--tpm", "1000000000000"],
        capture_output=True, text=True, check=True, timeout=60)
    return "Bearer " + created.stdout.strip().splitlines()[-1]


# --------------------------------------------------------------------------------------------
# One-off requests, to check the answers before measuring how fast they come


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status


def post(url: str, body: dict, authorization: str | None = None) -> tuple[int, str, bytes]:
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def sse_events(raw: bytes) -> list[str]:
    return [line[len("data: "):] for line in raw.decode().split("\n")
            if line.startswith("data: ")]


def expected_content() -> str:
    body = json.loads((UPSTREAM_DIR / "completion.json").read_text())
    return body["choices"][0]["message"]["content"]


def verify(kind: str, url: str, body: dict, authorization: str | None, model: str) -> None:
    """Fails loudly unless the answer is the fixture's, renamed to `model`."""
    where = f"{kind} answer from {url}"
    status, content_type, raw = post(url, body, authorization)
    if status != 200:
        raise BenchError(f"{where}: HTTP {status}: {raw[:500]!r}")
    want = expected_content()
    if kind == "json":
        answer = json.loads(raw)
        if answer.get("model") != model:
            raise BenchError(f"{where}: model is {answer.get('model')!r}, expected {model!r}")
        got = answer["choices"][0]["message"]["content"]
        if got != want:
            raise BenchError(f"{where}: content {got!r} is not the fixture's {want!r}")
        if not answer.get("usage", {}).get("total_tokens"):
            raise BenchError(f"{where}: no usage in {answer!r}")
        return
    if not content_type.startswith("text/event-stream"):
        raise BenchError(f"{where}: content type is {content_type!r}, not text/event-stream")
    events = sse_events(raw)
    if not events or events[-1] != "[DONE]":
        raise BenchError(f"{where}: the stream does not end with 'data: [DONE]': {raw[-300:]!r}")
    chunks = [json.loads(event) for event in events[:-1]]
    if any(chunk.get("model") != model for chunk in chunks):
        raise BenchError(f"{where}: a chunk does not name model {model!r}")
    text = "".join(choice.get("delta", {}).get("content") or ""
                   for chunk in chunks for choice in chunk.get("choices", []))
    if text != want:
        raise BenchError(f"{where}: streamed content {text!r} is not the fixture's {want!r}")


# --------------------------------------------------------------------------------------------
# wrk


@dataclass
class Run:
    kind: str  # json | stream
    path: str  # direct | bare | gateway (+key, +limits)
    load: str  # c1 | c32
    threads: int
    connections: int
    duration: str
    requests: int = 0
    rps: float = 0.0
    p50_ms: float | None = None
    p75_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    # The CPU of the server on the path (nginx for direct, bare.py, the gateway) during the run.
    server_cpu_percent: float | None = None
    # Its CPU time per request served: unlike req/s, it barely moves when other work shares the
    # machine, so it is the figure to compare before and after a change.
    server_cpu_us_per_request: float | None = None

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(text: str, run: Run) -> Run:
    if match := re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M):
        run.rps = float(match.group(1))
    else:
        raise BenchError(f"wrk printed no Requests/sec:\n{text}")
    if match := re.search(r"^\s*(\d+) requests in", text, re.M):
        run.requests = int(match.group(1))
    for pct in (50, 75, 90, 99):
        if match := re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M):
            setattr(run, f"p{pct}_ms", _ms(match.group(1), match.group(2)))
    if match := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text):
        run.non_2xx = int(match.group(1))
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                          text):
        run.socket_errors = dict(zip(("connect", "read", "write", "timeout"),
                                     map(int, match.groups()), strict=True))
    return run


def wrk(url: str, body_file: Path, authorization: str | None, threads: int, connections: int,
        duration: str, keyed: bool = False) -> str:
    script = [str(KEYED_SCRIPT)] if keyed else [str(LUA_SCRIPT)]
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}", "--latency",
            "-s", *script, url, "--", str(body_file), authorization or ""]
    if keyed:
        argv.append(f"k{time.monotonic_ns()}")  # keys never seen before, run after run
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


# --------------------------------------------------------------------------------------------
# Report


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def summarise(runs: list[Run]) -> dict:
    by = {(r.kind, r.path, r.load): r for r in runs}
    summary: dict = {}
    for kind in ("json", "stream"):
        direct, through = by[(kind, "direct", "c1")], by[(kind, "gateway", "c1")]
        added = (None if direct.p50_ms is None or through.p50_ms is None
                 else through.p50_ms - direct.p50_ms)
        rps = by[(kind, "gateway", "c32")].rps
        bare = by[(kind, "bare", "c32")]
        ratio = rps / bare.rps if bare.rps else None
        cpu, bare_cpu = (by[(kind, "gateway", "c32")].server_cpu_us_per_request,
                         bare.server_cpu_us_per_request)
        errors = sum(r.errors for r in runs if r.kind == kind)
        summary[kind] = {
            "added_p50_ms": added,
            "gateway_rps_c32": rps,
            "bare_rps_c32": bare.rps,
            # The figure: the gateway's throughput as a share of the floor's, same run.
            "gateway_over_bare_rps_c32": ratio,
            # The steady one: how many times the floor's CPU a request costs the gateway.
            "gateway_over_bare_cpu_c32": (cpu / bare_cpu if cpu and bare_cpu else None),
            "errors": errors,
            "pass": {
                "added_p50": added is not None and added <= MAX_ADDED_P50_MS,
                "gateway_rps": rps >= MIN_GATEWAY_RPS,
                "over_bare": ratio is not None and ratio >= MIN_OVER_BARE,
                "errors": errors == 0,
            },
        }
    return summary


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def table(runs: list[Run], summary: dict) -> str:
    lines = [
        "| kind | path | load | req/s | p50 ms | p90 ms | p99 ms | server CPU | CPU µs/req "
        "| errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        cpu = "" if r.server_cpu_percent is None else f"{r.server_cpu_percent:.0f}%"
        lines.append(f"| {r.kind} | {r.path} | {r.load} | {fmt(r.rps, 0)} | {fmt(r.p50_ms, 3)} "
                     f"| {fmt(r.p90_ms, 3)} | {fmt(r.p99_ms, 3)} | {cpu} "
                     f"| {fmt(r.server_cpu_us_per_request, 0)} | {r.errors} |")
    lines += [
        "",
        "| target | json | stream |",
        "|---|---|---|",
    ]
    rows = (
        (f"added p50 latency at c=1 ≤ {MAX_ADDED_P50_MS:g} ms", "added_p50",
         lambda s: f"{fmt(s['added_p50_ms'], 3)} ms"),
        (f"gateway req/s at c=32 ≥ {MIN_GATEWAY_RPS:,.0f}", "gateway_rps",
         lambda s: f"{fmt(s['gateway_rps_c32'], 0)}"),
        (f"gateway / bare req/s at c=32 ≥ {MIN_OVER_BARE:g}", "over_bare",
         lambda s: f"{fmt(s['gateway_over_bare_rps_c32'], 2)} (CPU/req "
                   f"{fmt(s['gateway_over_bare_cpu_c32'], 2)}x)"),
        ("errors (non-2xx + socket) = 0", "errors", lambda s: str(s["errors"])),
    )
    for label, key, show in rows:
        cells = [f"{show(summary[k])} {verdict(summary[k]['pass'][key])}"
                 for k in ("json", "stream")]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def ledger_rows(database: Path) -> list[dict]:
    """The gateway's own account of the run, read after it stopped (it flushes on SIGTERM).

    Every request the gateway saw, warm-ups and the cut-off ones at the end of each wrk run
    included, should be here with a status that tells how it ended.
    """
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT stream, status, error_code, usage_source, count(*) "
                              "FROM usage GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4").fetchall()
    except sqlite3.Error as exc:
        return [{"error": f"ledger unreadable: {exc}"}]
    return [{"kind": "stream" if stream else "json", "status": status, "error_code": code,
             "usage_source": source, "rows": count}
            for stream, status, code, source, count in rows]


def log_problems(text: str) -> dict[str, int]:
    """The gateway's ERROR lines, each counted under the exception that ended its traceback."""
    problems: dict[str, int] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not re.search(r"\b(ERROR|CRITICAL)\b", line):
            continue
        message = line.split(": ", 1)[-1]
        # A traceback follows its log line; its last unindented line names the exception.
        j = i + 1
        if j < len(lines) and lines[j].startswith("Traceback"):
            while j + 1 < len(lines) and (lines[j + 1].startswith((" ", "Traceback"))
                                          or not lines[j + 1].strip()):
                j += 1
            if j + 1 < len(lines) and not re.match(r"\d{4}-\d\d-\d\d ", lines[j + 1]):
                message += " <- " + lines[j + 1].strip()
        problems[message] = problems.get(message, 0) + 1
    return problems


def git_revision() -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


# --------------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, tmp: Path, servers: dict[str, Service]) -> list[Run]:
    """SERVERS: the process behind each path (direct: nginx; bare; gateway), whose CPU counts."""
    upstream = f"http://127.0.0.1:{args.upstream_port}"
    through = f"http://127.0.0.1:{args.gateway_port}/v1/chat/completions"
    floor = f"http://127.0.0.1:{args.bare_port}/v1/chat/completions"
    limited = limited_authorization(tmp, args.python) if args.limits else None
    json_url = f"{upstream}/json/v1/chat/completions"
    cases: dict[str, tuple[str, str, bool, list[dict], dict]] = {
        "json": (json_url, "bench-json", False, PROMPT, {}),
        "stream": (f"{upstream}/sse/v1/chat/completions", "bench-sse", True, PROMPT, {}),
    }
    if args.compression:
        cases.update({kind: (json_url, "bench-json", False, messages, extra)
                      for kind, (messages, extra) in COMPRESSION_CASES.items()})
    runs: list[Run] = []
    for kind, (direct_url, model, stream, messages, extra) in cases.items():
        body: dict = {"model": model, "messages": messages, **extra}
        if stream:
            body["stream"] = True
        body_file = tmp / f"{kind}-body.json"
        body_file.write_text(json.dumps(body, separators=(",", ":")))

        shape = "stream" if stream else "json"
        verify(shape, direct_url, {**body, "model": "static-model"}, None, "static-model")
        verify(shape, through, body, AUTHORIZATION, model)
        # The floor renames the model in a JSON answer only: it relays a stream's bytes as
        # they come.
        verify(shape, floor, body, None, "static-model" if stream else model)

        paths = [("direct", direct_url, None), ("bare", floor, None),
                 ("gateway", through, AUTHORIZATION)]
        if args.with_key:
            paths.append(("gateway+key", through, AUTHORIZATION))
        if limited is not None:
            verify(shape, through, body, limited, model)
            paths.append(("gateway+limits", through, limited))
        for path, url, auth in paths:
            if path in ("direct", "bare") and kind not in ("json", "stream"):
                continue  # the static upstream answers every body alike: measured once
            server = servers[path.split("+")[0]]
            keyed = path == "gateway+key"
            for load, threads, connections in (LOW, HIGH):
                if args.warmup:
                    # Fills the gateway's upstream connection pool and warms caches at this
                    # concurrency; done for the direct path too, so both sides start alike.
                    wrk(url, body_file, auth, threads, connections, args.warmup, keyed)
                run = Run(kind, path, load, threads, connections, args.duration)
                cpu_before = cpu_seconds(server.process.pid)
                wall_before = time.monotonic()
                parse_wrk(wrk(url, body_file, auth, threads, connections, args.duration, keyed),
                          run)
                used = cpu_seconds(server.process.pid) - cpu_before
                run.server_cpu_percent = 100 * used / (time.monotonic() - wall_before)
                if run.requests:
                    run.server_cpu_us_per_request = 1e6 * used / run.requests
                if not server.alive():
                    raise BenchError(f"{server.name} died during {kind} {path} {load}:\n"
                                     f"{server.log_tail()}")
                print(f"  {kind:6} {path:7} {load:3}  {run.rps:10,.0f} req/s  "
                      f"p50 {fmt(run.p50_ms, 3)} ms  "
                      f"cpu {fmt(run.server_cpu_us_per_request, 0)} us/req  "
                      f"errors {run.errors}", flush=True)
                runs.append(run)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default=os.environ.get("BENCH_DURATION", "10s"),
                        help="length of each measured wrk run (env BENCH_DURATION; default 10s)")
    parser.add_argument("--warmup", default=os.environ.get("BENCH_WARMUP", "2s"),
                        help="wrk run before each measurement, not counted "
                             "(env BENCH_WARMUP; default 2s; empty or 0 for none)")
    parser.add_argument("--with-key", action="store_true",
                        default=bool(os.environ.get("BENCH_WITH_KEY")),
                        help="also run the gateway with a fresh Idempotency-Key on every request "
                             "(path gateway+key), in the same run")
    parser.add_argument("--limits", action="store_true",
                        help="also run a key with rate limits (path gateway+limits): in process, "
                             "or in Redis with --redis")
    parser.add_argument("--redis", default=None, metavar="URL",
                        help="the gateway keeps its shared state (rate limits) in this Redis")
    parser.add_argument("--workers", type=int, default=1,
                        help="gateway processes on the port (tokenmux serve --workers)")
    parser.add_argument("--upstream-port", type=int, default=19101)
    parser.add_argument("--gateway-port", type=int, default=19102)
    parser.add_argument("--bare-port", type=int, default=19103)
    parser.add_argument("--python", type=Path, default=Path(sys.executable),
                        help="the venv's python, whose bin/ has the tokenmux command")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--compression", action="store_true",
                        help="also measure requests that ask for context compression")
    parser.add_argument("--keep", action="store_true", default=bool(os.environ.get("BENCH_KEEP")),
                        help="keep the temp dir (configs, logs, database) for inspection")
    args = parser.parse_args()
    if args.warmup in ("0", "0s"):
        args.warmup = ""

    if not shutil.which("wrk"):
        print("bench: wrk is not installed (bench/run installs it)", file=sys.stderr)
        return 1
    if port_taken("bench", args.upstream_port, args.gateway_port, args.bare_port):
        return 1

    # SIGTERM (from bench/run's trap, or anyone) unwinds through the finally below.
    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, interrupted)

    tmp = Path(tempfile.mkdtemp(prefix="tokenmux-bench-"))
    services: list[Service] = []
    gateway: Service | None = None
    started = dt.datetime.now(dt.UTC)
    runs: list[Run] = []
    failure: str | None = None
    try:
        print(f"bench: temp dir {tmp}", flush=True)
        services.append(start_upstream(tmp, args.upstream_port))
        services.append(start_bare(tmp, args.python, args.upstream_port, args.bare_port))
        gateway = start_gateway(tmp, args.python, args.upstream_port, args.gateway_port,
                                redis=args.redis, workers=args.workers)
        services.append(gateway)
        print(f"bench: upstream on :{args.upstream_port}, bare on :{args.bare_port}, "
              f"gateway on :{args.gateway_port}; "
              f"{args.duration} per run, {args.warmup or 'no'} warm-up", flush=True)
        runs = measure(args, tmp, {service.name: service for service in services}
                       | {"direct": services[0]})
    except BenchError as exc:
        failure = str(exc)
    except KeyboardInterrupt as exc:
        failure = f"interrupted ({exc or 'SIGINT'})"
    finally:
        # The gateway first, on SIGTERM, so that it flushes its ledger; then its upstream.
        for service in reversed(services):
            service.stop()

    problems: dict[str, int] = {}
    ledger: list[dict] = []
    if gateway is not None:
        problems = log_problems(gateway.log_tail(1_000_000))
        ledger = ledger_rows(tmp / "bench.db")
        if gateway.process.returncode not in (0, None, -signal.SIGTERM):
            problems[f"gateway exited with status {gateway.process.returncode}"] = 1
    if args.keep or failure:
        print(f"bench: kept {tmp} (configs and logs)", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)

    if failure:
        print(f"bench: FAILED: {failure}", file=sys.stderr)
        return 1

    summary = summarise(runs)
    print()
    print(table(runs, summary))
    if problems:
        print(f"\nThe gateway logged {sum(problems.values())} error(s):")
        for message, count in sorted(problems.items(), key=lambda item: -item[1]):
            print(f"  {count:6} x {message}")
    print("\nLedger rows (every request the gateway saw, warm-ups and cut-off ones included):")
    for row in ledger:
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))

    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    report = {
        "started": started.isoformat(timespec="seconds"),
        "revision": git_revision(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "settings": {"duration": args.duration, "warmup": args.warmup or None,
                     "redis": args.redis is not None, "workers": args.workers,
                     "loads": {name: {"threads": t, "connections": c}
                               for name, t, c in (LOW, HIGH)}},
        "targets": {"max_added_p50_ms": MAX_ADDED_P50_MS, "min_gateway_rps_c32": MIN_GATEWAY_RPS,
                    "min_gateway_over_bare_c32": MIN_OVER_BARE,
                    "errors": 0},
        "summary": summary,
        "runs": [asdict(r) for r in runs],
        "gateway_log_errors": problems,
        "ledger": ledger,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    (args.results / f"{stamp}.json").write_text(text)
    (args.results / "latest.json").write_text(text)
    print(f"Results: {args.results / (stamp + '.json')} (and latest.json)")

    return 2 if any(r.errors for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
