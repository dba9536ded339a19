"""Mutation testing of the gateway's core with cosmic-ray: how many small, meaningful changes to
the code the test suite notices.

cosmic-ray rewrites a source file in place, runs a test command, and puts the file back. The
package is installed editable, so the `tokenmux serve` processes that the tests start import the
mutated file too: a mutant is judged by the same real-process tests as the code itself. Bytecode
caching is off for the test runs, so a mutant can never be served from a stale cache.

Each module is mutated against the tests that exercise it (MODULES below), stopping at the first
failure. Only operators that make a meaningful change are used (SKIPPED_OPERATORS): swapping `+`
for `<<` or `==` for `is` mostly makes code that crashes at once, which says little of the tests.

    scripts/mutation                      every core module, every mutant (hours)
    scripts/mutation --sample 40          a random 40 mutants over the core (seeded)
    scripts/mutation --since origin/main  only mutants on lines changed since a revision
    scripts/mutation src/tokenmux/limits/memory.py --sample 10
    scripts/mutation ... --min-score 85   exit 1 unless the kill rate can still be 85% or more

Mutants argued to be equivalent (EQUIVALENT) are left out. Survivors are printed with their
diff, and the whole result is kept as JSON in mutation/results.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"

# Module (file or folder under src/tokenmux) → the tests that show its rules. A file named here
# takes its own tests, not those of its folder further down.
_MESSAGES = ["tests/test_messages_door.py", "tests/test_client_libraries.py",
             "tests/test_doors_property.py"]
_RESPONSES = ["tests/test_responses.py", "tests/test_responses_rules.py",
              "tests/test_response_store.py", "tests/test_doors_property.py"]
MODULES: dict[str, list[str]] = {
    "api/anthropic_messages.py": _MESSAGES,
    "api/anthropic_answers.py": _MESSAGES,
    "api/anthropic_wire.py": _MESSAGES,
    "api/responses.py": _RESPONSES,
    "api/response_object.py": _RESPONSES,
    "api/response_store.py": _RESPONSES,
    "api/embeddings.py": ["tests/test_embeddings.py"],
    "limits": ["tests/limits", "tests/test_ratelimit_headers.py", "tests/test_keys_rules.py",
               "tests/test_errors.py", "tests/server/test_client_limits.py",
               "tests/test_shared_limits.py", "tests/test_workers.py", "tests/test_budgets.py"],
    "routing": ["tests/test_channel_health.py", "tests/test_admission.py", "tests/test_routing.py",
                "tests/test_retry_rules.py", "tests/test_breaker_rules.py",
                "tests/test_tiers.py", "tests/test_fallback_fields.py",
                "tests/test_param_policy.py", "tests/test_max_output.py",
                "tests/test_catalog_data.py", "tests/test_catalog_api.py",
                "tests/test_catalog_config.py", "tests/test_catalog_shipped.py",
                "tests/test_config_rules.py", "tests/test_channel_quotas.py"],
    "ledger": ["tests/test_row_cost.py", "tests/test_ledger.py", "tests/test_row_figures.py",
               "tests/test_config_rules.py", "tests/test_ledger_crash.py", "tests/test_shutdown.py",
               "tests/test_streams.py", "tests/test_chat_completions.py",
               "tests/test_equivalence.py", "tests/test_metrics.py",
               "tests/test_usage_rollup.py", "tests/test_ledger_store.py",
               "tests/test_wal_sync.py"],
    "api": ["tests/test_validation.py", "tests/test_api_rules.py", "tests/test_errors.py",
            "tests/test_chat_completions.py", "tests/test_fallback_fields.py",
            "tests/test_stream_clients.py", "tests/test_validation_property.py"],
    "auth": ["tests/test_key_watch.py", "tests/test_keys_rules.py", "tests/test_errors.py",
             "tests/test_cli_and_config.py", "tests/server/test_refusals.py",
             "tests/test_fallback_fields.py", "tests/test_key_expiry.py",
             "tests/test_admin_api.py"],
    "pipeline.py": ["tests/test_chat_completions.py", "tests/test_row_figures.py",
                    "tests/test_streams.py", "tests/test_stream_clients.py", "tests/test_errors.py",
                    "tests/test_routing.py", "tests/test_fallback_fields.py",
                    "tests/test_param_policy.py", "tests/limits", "tests/test_ledger_crash.py",
                    "tests/test_shutdown.py", "tests/test_upstream_limits.py",
                    "tests/test_idempotency.py", "tests/test_budgets.py",
                    "tests/test_compression.py"],
    "providers/translate.py": ["tests/test_anthropic.py", "tests/test_gemini.py",
                               "tests/providers_rules", "tests/test_equivalence.py",
                               "tests/test_param_policy.py", "tests/test_validation.py"],
}

# Replacements that mostly make code crash at once rather than change what it means.
_ODD_BINARY = "Pow|RShift|LShift|BitOr|BitAnd|BitXor|Mod|FloorDiv"
SKIPPED_OPERATORS = [
    rf"core/ReplaceBinaryOperator_\w+_({_ODD_BINARY})$",
    rf"core/ReplaceBinaryOperator_({_ODD_BINARY})_\w+$",
    r"core/ReplaceComparisonOperator_\w+_(Is|IsNot|In|NotIn)$",
    r"core/ReplaceComparisonOperator_(Is|IsNot|In|NotIn)_\w+$",
    r"core/RemoveDecorator$",
]


# Mutants that change nothing a user, an operator or the database could ever see: (module, or
# "*" for any; the piece of the line that holds the mutated token; operator; why). Each is
# argued here, one by one, and left out of the score; a mutant is never put here only because
# no test kills it.
EQUIVALENT: list[tuple[str, str, str, str]] = [
    ("*", "slots=True", "core/ReplaceTrueWithFalse",
     "slots only change a dataclass's memory layout and forbid attributes it does not declare, "
     "which no code sets (mypy checks it)"),
    ("*", "frozen=True", "core/ReplaceTrueWithFalse",
     "frozen forbids assigning a field, which mypy refuses anywhere, and makes instances "
     "hashable: a class hashed somewhere fails at once without it, so one that survives is "
     "never hashed, and nothing changes"),
    ("ledger/report.py", "prompt_tokens), 0)", "core/NumberReplacer",
     "each group of the totals has a row at least, and the summed column is NOT NULL: the sum "
     "is never NULL, so coalesce's default is never read"),
    ("ledger/report.py", "completion_tokens), 0)", "core/NumberReplacer", "as above"),
    ("ledger/store.py", "new.usage_source != CHECKPOINT_SOURCE",
     "core/ReplaceComparisonOperator_NotEq_Gt",
     "every usage source but 'checkpoint' ('counted', 'none', 'upstream') sorts after it, so "
     "'!=' and '>' agree on every value a row can hold"),
    ("ledger/store.py", "_MOST_VALUES = 999", "core/NumberReplacer",
     "a statement holds (999 - 2) // 32 = 31 rows (32 columns, 2 constants), and so it does for "
     "every limit from 994 to 1,025: one more or one less writes the same statements"),
    ("routing/tiers.py", "tier <= cap", "core/ReplaceComparisonOperator_LtE_Lt",
     "a tier equal to its cap is the cap: either branch gives the same tier"),
]


@dataclass
class Outcome:
    module: str
    killed: int = 0
    survived: int = 0
    incompetent: int = 0  # the mutant could not be made: left out of the score
    survivors: list[dict[str, str]] | None = None

    @property
    def judged(self) -> int:
        return self.killed + self.survived


def main() -> int:
    args = _arguments()
    files = _files(args.modules)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="tokenmux-mutation-"))
    # The budget bounds the whole step, listing the mutants included (a minute or two for the
    # core's files, two at a time), so that CI knows what the step costs.
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        sessions = dict(zip(files, pool.map(lambda f: _init(f, work, args.timeout), files),
                            strict=True))
    _choose(sessions, args.sample, args.since, rng)
    outcomes = []
    # In a random order, so that a run the budget cuts short is still a fair sample.
    for path in rng.sample(list(sessions), len(sessions)):
        session = sessions[path]
        remaining = None if args.budget is None else args.budget - (time.monotonic() - started)
        if remaining is not None and remaining <= 0:
            _skip_all(session, "out of time")
        else:
            _exec(path, session, work, remaining)
        outcomes.append(_read(path, session))
    return _report(outcomes, args.min_score)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="files or folders under src/tokenmux")
    parser.add_argument("--sample", type=int, help="run this many mutants, chosen at random")
    parser.add_argument("--seed", default="tokenmux", help="the sample's seed")
    parser.add_argument("--since", help="only mutants on lines changed since this revision")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant")
    parser.add_argument("--budget", type=float, help="seconds for the whole run")
    parser.add_argument("--min-score", type=float, help="percent of mutants that must be killed")
    return parser.parse_args()


def _files(modules: list[str]) -> list[Path]:
    chosen = modules or [f"src/tokenmux/{name}" for name in MODULES]
    files: list[Path] = []
    for name in chosen:
        path = Path(name)
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    # A file named in MODULES is also in its folder: once is enough.
    return [f for f in dict.fromkeys(files) if f.name != "__init__.py"]


def _tests_for(path: Path) -> list[str]:
    relative = path.relative_to("src/tokenmux").as_posix()
    for name, tests in MODULES.items():
        if relative == name or relative.startswith(name.rstrip("/") + "/"):
            return [t for t in tests if (ROOT / t).exists()]
    raise SystemExit(f"no tests are mapped for {path}; add it to MODULES in {__file__}")


def _init(path: Path, work: Path, timeout: float) -> Path:
    name = path.as_posix().replace("/", "_")
    config, session = work / f"{name}.toml", work / f"{name}.sqlite"
    tests = " ".join(_tests_for(path))
    config.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{path.as_posix()}"\n'
        f"timeout = {timeout}\n"
        "excluded-modules = []\n"
        f'test-command = "{PYTHON} -m pytest -x -q -p no:cacheprovider {tests}"\n'
        '[cosmic-ray.distributor]\nname = "local"\n'
        "[cosmic-ray.filters.operators-filter]\n"
        f"exclude-operators = {json.dumps(SKIPPED_OPERATORS)}\n")
    _run("cosmic-ray", "init", str(config), str(session))
    _run("cr-filter-operators", str(session), str(config))
    return session


def _choose(sessions: dict[Path, Path], sample: int | None, since: str | None,
            rng: random.Random) -> None:
    changed = _changed_lines(since) if since else None
    pending: list[tuple[Path, str]] = []
    for path, session in sessions.items():
        source = path.read_text().splitlines()
        with use_db(str(session), WorkDB.Mode.open) as db:
            for item in db.pending_work_items:
                mutation = item.mutations[0]
                lines = set(range(mutation.start_pos[0], mutation.end_pos[0] + 1))
                if changed is not None and not lines & changed.get(path, set()):
                    db.set_result(item.job_id, _skipped("not changed"))
                elif _equivalent(path, source[mutation.start_pos[0] - 1],
                                 mutation.start_pos[1], mutation.operator_name):
                    db.set_result(item.job_id, _skipped("equivalent"))
                else:
                    pending.append((session, item.job_id))
    if sample is not None and sample < len(pending):
        keep = set(rng.sample(range(len(pending)), sample))
        for i, (session, job) in enumerate(pending):
            if i not in keep:
                with use_db(str(session), WorkDB.Mode.open) as db:
                    db.set_result(job, _skipped("not in the sample"))


def _equivalent(path: Path, line: str, column: int, operator: str) -> bool:
    """Whether the mutant at COLUMN of LINE is one of EQUIVALENT: the mutated token lies
    inside that entry's piece of the line."""
    relative = path.relative_to("src/tokenmux").as_posix()
    for module, piece, name, _ in EQUIVALENT:
        if operator != name or module not in ("*", relative):
            continue
        at = line.find(piece)
        while at != -1:
            if at <= column < at + len(piece):
                return True
            at = line.find(piece, at + 1)
    return False


def _changed_lines(since: str) -> dict[Path, set[int]]:
    diff = subprocess.run(["git", "diff", "-U0", since, "--", "src/tokenmux"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    changed: dict[Path, set[int]] = {}
    current: Path | None = None
    for line in diff.splitlines():
        if line.startswith("+++ b/"):
            current = Path(line[6:])
        elif line.startswith("@@") and current is not None:
            match = re.match(r"@@ -\S+ \+(\d+)(?:,(\d+))? @@", line)
            if match:
                start, count = int(match[1]), int(match[2] or 1)
                changed.setdefault(current, set()).update(range(start, start + count))
    return changed


def _skipped(why: str) -> WorkResult:
    return WorkResult(output=why, worker_outcome=WorkerOutcome.SKIPPED)


def _skip_all(session: Path, why: str) -> None:
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in list(db.pending_work_items):
            db.set_result(item.job_id, _skipped(why))


def _exec(path: Path, session: Path, work: Path, budget: float | None) -> None:
    with use_db(str(session), WorkDB.Mode.open) as db:
        count = db.num_work_items - db.num_results
    if not count:
        return
    print(f"mutation: {path}: {count} mutants", flush=True)
    config = work / f"{path.as_posix().replace('/', '_')}.toml"
    try:
        _run("cosmic-ray", "exec", str(config), str(session), timeout=budget)
    except subprocess.TimeoutExpired:
        _skip_all(session, "out of time")
    finally:
        # cosmic-ray puts each file back after its mutant; a run cut short must too.
        subprocess.run(["git", "checkout", "--", str(path)], cwd=ROOT, check=True)


def _run(*command: str, timeout: float | None = None) -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    executable = str(ROOT / ".venv" / "bin" / command[0])
    # A session of its own, so that running out of time stops the tests and the gateways they
    # started along with cosmic-ray.
    process = subprocess.Popen([executable, *command[1:]], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    if code != 0:
        raise subprocess.CalledProcessError(code, command)


def _read(path: Path, session: Path) -> Outcome:
    outcome = Outcome(path.as_posix(), survivors=[])
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            if result.test_outcome == TestOutcome.SURVIVED:
                outcome.survived += 1
                mutation = item.mutations[0]
                assert outcome.survivors is not None
                outcome.survivors.append({"operator": mutation.operator_name,
                                          "line": str(mutation.start_pos[0]),
                                          "diff": result.diff or ""})
            elif result.test_outcome == TestOutcome.INCOMPETENT:
                outcome.incompetent += 1
            else:  # killed, or the worker died or timed out under the mutant
                outcome.killed += 1
    return outcome


def _report(outcomes: list[Outcome], min_score: float | None) -> int:
    killed = sum(o.killed for o in outcomes)
    judged = sum(o.judged for o in outcomes)
    print(f"\n{'module':48} {'mutants':>7} {'killed':>7} {'score':>6}")
    for o in outcomes:
        if o.judged:
            score = 100 * o.killed / o.judged
            print(f"{o.module:48} {o.judged:7} {o.killed:7} {score:5.1f}%")
    for o in outcomes:
        for survivor in o.survivors or ():
            print(f"\nsurvived: {o.module}:{survivor['line']} {survivor['operator']}\n"
                  f"{survivor['diff']}")
    results = ROOT / "mutation" / "results.json"
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))
    if not judged:
        print("mutation: no mutant was run")
        return 0
    score = 100 * killed / judged
    low, high = _interval(killed, judged)
    print(f"\nmutation score: {score:.1f}% of {judged} mutants killed "
          f"(95% interval {low:.1f} to {high:.1f}%)")
    if min_score is not None and high < min_score:
        print(f"mutation: the score is below {min_score}% even at the top of its interval")
        return 1
    return 0


def _interval(killed: int, judged: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's interval for the kill rate, so that a small sample is judged fairly."""
    p = killed / judged
    centre = (p + z * z / (2 * judged)) / (1 + z * z / judged)
    half = z * math.sqrt(p * (1 - p) / judged + z * z / (4 * judged * judged)) / (
        1 + z * z / judged)
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


if __name__ == "__main__":
    sys.exit(main())
