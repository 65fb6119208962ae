"""Hand-made one-line mutations, applied one at a time to a copy of the repository, each checked against the tests
that should catch it (issue 14). A mutation the tests let through is a bug they would let through.

    .venv/bin/python bench/mutate.py            # every mutation; prints caught/survived and the score
    .venv/bin/python bench/mutate.py -j 4       # four copies, four mutations at a time
    .venv/bin/python bench/mutate.py --only fan-in-pg --show
    .venv/bin/python bench/mutate.py --only cache-tenant-sqlite --against tests/test_limits.py   # without ours?

The repository is copied (without .git and .venv) into a temporary directory per parallel slot; the copy's
`src` comes first on PYTHONPATH, so the working tree is never touched. Before any mutation the listed tests are
run once unmutated: they must pass, or "caught" would mean nothing. Grow the list when a bug is found.
Exit status 0 only when every mutation is caught.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".ci")


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    """File inside the repository."""
    original: str
    """An exact substring of one line; it must occur exactly once in the file unless `nth` picks one."""
    replacement: str
    tests: tuple[str, ...]
    """pytest arguments, relative to the repository: node ids, files, or "-k" and an expression."""
    nth: int | None = None
    """When `original` occurs more than once: which occurrence (1-based) to mutate."""


MUT = "tests/test_mutants.py"
PG = "src/reelflow/store/postgres.py"
MANAGER = "src/reelflow/store/manager.py"
"""The rules both stores share: a mutation there is tested on SQLite and on PostgreSQL."""
SQLITE_SQL = "src/reelflow/store/sql/sqlite.sql"
PG_SQL = "src/reelflow/store/sql/postgres.sql"
SHARED_SQL = "src/reelflow/store/sql/shared.sql"
"""The statements both stores run (tests/test_mutants.py runs on both)."""
STATES = "src/reelflow/states.py"
HTTP = "src/reelflow/providers/http.py"
FAN_IN = (f"{MUT}", "-k", "fan_in or two_way_join")
BUDGET = (f"{MUT}", "-k", "budget")
CACHE = (f"{MUT}", "-k", "cache or tenant_b")
EXPIRY = (MUT, "-k", "expired_lease")
INTENT = (MUT, "-k", "unsettled_retry")

MUTATIONS: list[Mutation] = [
    # The four that survived every test before tests/test_mutants.py, and their twins in the other store.
    Mutation(
        "fan-in-pg",
        PG_SQL,
        "status = CASE WHEN j.deps_left - w.n <= 0 THEN",
        "status = CASE WHEN j.deps_left - w.n <= 1 THEN",
        FAN_IN,
    ),
    Mutation(
        "fan-in-sqlite",
        SQLITE_SQL,
        "AND deps_left <= 0",
        "AND deps_left <= 1",
        FAN_IN,
    ),
    Mutation(
        "fan-in-pg-count",
        PG,
        'counts[(row["execution_id"], dep)] += 1',
        'counts[(row["execution_id"], dep)] = 1',
        FAN_IN,
    ),
    Mutation("budget-batch", MANAGER, "spent[tenant] += cost", "spent[tenant] += 0.0", BUDGET),
    Mutation(
        "cache-tenant-sqlite",
        SQLITE_SQL,
        "FROM jobs WHERE tenant = %s AND cache_key = %s",
        "FROM jobs WHERE (tenant = %s OR 1) AND cache_key = %s",
        CACHE,
    ),
    Mutation(
        "cache-tenant-pg",
        PG_SQL,
        "WHERE j.tenant = w.tenant AND j.cache_key",
        "WHERE (j.tenant = w.tenant OR true) AND j.cache_key",
        CACHE,
    ),
    Mutation(
        "rate-gate-hold",
        HTTP,
        "now + (retry_after_s if retry_after_s is not None else 1.0)",
        "now + 1.0",
        (f"{MUT}::test_a_ten_second_retry_after_holds_every_request_for_ten_seconds",),
    ),
    Mutation(
        "retry-after-cap",
        HTTP,
        "min(seconds, MAX_RETRY_AFTER_S)",
        "min(seconds, 1.0)",
        (f"{MUT}::test_retry_after_reads_ten_seconds_as_ten",),
    ),
    # Other dangerous one-liners.
    Mutation(
        "lease-seq-succeeded-sqlite",
        SQLITE_SQL,
        "lease_owner = %s AND (%s IS NULL OR lease_seq = %s)",
        "lease_owner = %s AND (%s IS NULL OR lease_seq = %s OR 1)",
        (MUT, "-k", "earlier_attempt"),
    ),
    Mutation(
        "lease-seq-pg",
        PG_SQL,
        "AND (w.seq IS NULL OR j.lease_seq = w.seq)",
        "AND (w.seq IS NULL OR j.lease_seq = w.seq OR true)",
        (MUT, "-k", "earlier_attempt"),
        nth=1,
    ),
    Mutation(
        "lease-expiry",
        SHARED_SQL,
        "from running} AND lease_expires_at < %s",
        "from running} AND lease_expires_at > %s",
        EXPIRY,
    ),
    Mutation(
        "attempts-recovery",
        SHARED_SQL,
        "AND attempts < max_attempts RETURNING",
        "AND attempts <= max_attempts RETURNING",
        EXPIRY,
    ),
    Mutation(
        "attempts-worker",
        "src/reelflow/engine/worker.py",
        "if c.attempts >= c.max_attempts:",
        "if c.attempts > c.max_attempts:",
        ("tests/test_engine.py::test_transient_failures_give_up_after_max_attempts",),
    ),
    Mutation(
        "webhook-signature",
        "src/reelflow/webhooks.py",
        "_utc(timestamp), body)",
        '_utc(timestamp), body + " ")',
        (
            "tests/test_webhooks.py::test_a_succeeded_execution_sends_one_signed_event",
            "tests/test_webhooks.py::test_verify_webhook_round_trip_and_tampering",
        ),
    ),
    Mutation(
        "egress-non-public",
        "src/reelflow/net.py",
        '("non-public", not ip.is_global),',
        '("non-public", False),',
        (
            "tests/test_egress.py::test_a_download_is_refused_before_any_connection",
            "tests/test_egress.py::test_a_webhook_is_refused_before_any_connection",
        ),
    ),
    Mutation(
        "tenant-get-execution",
        MANAGER,
        'if row is None or (tenant is not None and row["tenant"] != tenant):',
        "if row is None:",
        ("tests/test_api.py::test_tenants_are_isolated_on_every_endpoint",),
        nth=2,  # get_execution's (after the one cancel and resume share)
    ),
    Mutation(
        "intent-settled-sqlite",
        SQLITE_SQL,
        "intent_at = CASE WHEN %s THEN NULL ELSE intent_at END",
        "intent_at = CASE WHEN %s OR 1 THEN NULL ELSE intent_at END",
        INTENT,
    ),
    Mutation(
        "intent-settled-pg",
        PG_SQL,
        "intent_at = CASE WHEN w.settled THEN NULL ELSE j.intent_at END",
        "intent_at = CASE WHEN true THEN NULL ELSE j.intent_at END",
        INTENT,
    ),
    # The transition table and the rules written once (each one was two mutations, one per store, before).
    Mutation(
        "transition-cancel-running",
        STATES,
        '"running": frozenset({"succeeded", "failed", "canceled", "queued"}),',
        '"running": frozenset({"succeeded", "failed", "queued"}),',
        ("tests/test_engine.py::test_cancel_stops_queued_and_running_jobs",),
    ),
    Mutation(
        "transition-skip-waiting",
        STATES,
        '"waiting": frozenset({"queued", "canceled", "skipped"}),',
        '"waiting": frozenset({"queued", "canceled"}),',
        ("tests/test_engine.py::test_permanent_failure_fails_at_once_and_skips_dependents",),
    ),
    Mutation(
        "hand-off-tenant-cap",
        MANAGER,
        "                if n <= 0:",
        "                if n < 0:",
        ("tests/test_store_interface.py", "-k", "tenant_cap"),
    ),
]


@dataclass
class Outcome:
    mutation: Mutation
    verdict: str
    """caught, survived, or error (the tests could not run: collection failed, nothing selected, timeout)."""
    seconds: float
    line: int
    output: str
    by: str = ""
    """The test that failed first."""


def apply(text: str, m: Mutation) -> tuple[str, int]:
    """The mutated text and the 1-based line changed; raises when `original` is missing or ambiguous."""
    count = text.count(m.original)
    if count == 0 or (m.nth is None and count != 1) or (m.nth is not None and m.nth > count):
        raise ValueError(f"{m.name}: {m.original!r} occurs {count} times in {m.path}")
    at = -1
    for _ in range(m.nth or 1):
        at = text.index(m.original, at + 1)
    return text[:at] + m.replacement + text[at + len(m.original) :], text.count("\n", 0, at) + 1


def pytest(copy: Path, args: tuple[str, ...], timeout: float) -> tuple[int, str]:
    """Run pytest in `copy` against the copy's sources; return its exit status (-1 on timeout) and output."""
    env = dict(os.environ, PYTHONPATH=str(copy / "src") + os.pathsep + str(copy / "tests"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:randomly", *args]
    try:
        p = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return -1, str(e.stdout or "")
    return p.returncode, p.stdout + p.stderr


def paths(args: tuple[str, ...]) -> list[str]:
    """The node ids and files among pytest arguments (what follows "-k" is an expression, not a path)."""
    return [a for i, a in enumerate(args) if a != "-k" and (i == 0 or args[i - 1] != "-k")]


def run_one(copy: Path, m: Mutation, timeout: float) -> Outcome:
    target = copy / m.path
    original = target.read_text()
    mutated, line = apply(original, m)
    started = time.monotonic()
    target.write_text(mutated)
    try:
        code, output = pytest(copy, m.tests, timeout)
    finally:
        target.write_text(original)
    verdict = "survived" if code == 0 else "caught" if code == 1 else "error"
    return Outcome(m, verdict, time.monotonic() - started, line, output, killer(output) if code == 1 else "")


def killer(output: str) -> str:
    """The first failing test named in pytest's short summary."""
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split()[1]
    return ""


def make_copy(into: Path) -> Path:
    copy = into / "repo"
    shutil.copytree(ROOT, copy, ignore=SKIP, symlinks=True)
    return copy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-j", "--jobs", type=int, default=1, help="mutations run at once (one copy each)")
    parser.add_argument("--only", nargs="*", help="names of the mutations to run")
    parser.add_argument("--show", action="store_true", help="print the test output of survivors and errors")
    parser.add_argument(
        "--against", nargs="+", help="pytest arguments to run instead of each mutation's own (does a file catch it?)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run (when exploring)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one mutation's tests may take")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.against:
        chosen = [dataclasses.replace(m, tests=tuple(args.against)) for m in chosen]
    for m in chosen:  # every mutation applies cleanly before anything runs
        apply((ROOT / m.path).read_text(), m)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="reelflow-mutate-") as tmp:
        slots = max(1, min(args.jobs, len(chosen)))
        copies: Queue[Path] = Queue()
        for i in range(slots):
            (Path(tmp) / str(i)).mkdir()
            copies.put(make_copy(Path(tmp) / str(i)))
        first = copies.get()
        probe = subprocess.run(
            [sys.executable, "-c", "import reelflow; print(reelflow.__file__)"],
            env=dict(os.environ, PYTHONPATH=str(first / "src")),
            capture_output=True,
            text=True,
            check=True,
        )
        if not probe.stdout.startswith(str(first)):
            print(f"the copy's sources are not the ones imported: {probe.stdout.strip()}", file=sys.stderr)
            return 2
        baseline = sorted({t for m in chosen for t in paths(m.tests)})
        code, output = (0, "") if args.no_baseline else pytest(first, tuple(baseline), args.timeout * 2)
        copies.put(first)
        if code != 0:
            print(output[-4000:])
            print("the listed tests fail without any mutation: fix that first", file=sys.stderr)
            return 2
        print(f"baseline: {len(baseline)} test paths pass unmutated ({time.monotonic() - started:.0f} s)\n")

        def task(m: Mutation) -> Outcome:
            copy = copies.get()
            try:
                return run_one(copy, m, args.timeout)
            finally:
                copies.put(copy)

        with ThreadPoolExecutor(slots) as pool:
            outcomes = list(pool.map(task, chosen))

    width = max(len(m.name) for m in chosen)
    print(f"{'mutation':<{width}}  {'verdict':<8}  {'secs':>5}  where / first failing test")
    for o in outcomes:
        print(f"{o.mutation.name:<{width}}  {o.verdict:<8}  {o.seconds:5.1f}  {o.mutation.path}:{o.line}")
        if o.by:
            print(f"{'':<{width}}  {'':<8}  {'':>5}  {o.by}")
        if args.show and o.verdict != "caught":
            print("\n".join("    " + line for line in o.output.strip().splitlines()[-30:]))
    caught = sum(o.verdict == "caught" for o in outcomes)
    took = time.monotonic() - started
    print(f"\nscore: {caught}/{len(outcomes)} caught ({100 * caught / len(outcomes):.0f}%) in {took:.0f} s")
    return 0 if caught == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
