"""The benchmark scripts still run: a small `bench/overhead.py` end to end, with the machine's yardstick first.

The figures themselves are not checked here (they depend on the machine); that every job ran, and that each
line the README quotes is printed in its documented shape, is.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg

from pgutil import PG_URL, requires_postgres

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(*args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELFLOW_")}
    done = subprocess.run(
        [sys.executable, *args], cwd=BENCH.parent, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


MACHINE = re.compile(
    r"machine: \d+ CPUs \(.+\), Python loop (\d+) ms, SQLite inserts (\d+) ms, load \d+\.\d \(lower is faster\)"
)


def test_the_yardstick_times_both_workloads() -> None:
    (line,) = run_bench("bench/machine.py")
    found = MACHINE.fullmatch(line)
    assert found, line
    assert int(found[1]) > 0 and int(found[2]) >= 0, line


def test_overhead_runs_every_job_and_prints_its_figures_after_the_yardstick() -> None:
    lines = run_bench("bench/overhead.py", "--jobs", "400")
    assert MACHINE.fullmatch(lines[0]), lines
    assert lines[1].startswith("store: sqlite  jobs: 400  plans: 2 x 200"), lines
    figures = "\n".join(lines[2:])
    assert re.search(r"^throughput: [\d,]+ jobs/s \(first start to last finish: \d+\.\d\d s\)$", figures, re.M)
    assert re.search(r"^worker CPU: \d+\.\d\d s, \d+ us per job", figures, re.M)
    assert re.search(r"^hand-off \(dependency done -> dependent started\): p50 [\d.]+ ms, p99 [\d.]+ ms", figures, re.M)


def databases_made_by_benchmarks() -> set[str]:
    with psycopg.connect(PG_URL) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'reelflow\\_overhead\\_%'"
                            " OR datname LIKE 'reelflow\\_scale\\_%'").fetchall()  # fmt: skip
    return {r[0] for r in rows}


def tables_of_the_given_database() -> list[tuple[str, int]]:
    """Each table of PG_URL's database with its rows written so far (inserts, updates, deletes)."""
    with psycopg.connect(PG_URL) as conn:
        rows = conn.execute("SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables"
                            " ORDER BY relname").fetchall()  # fmt: skip
    return [(str(r[0]), int(r[1])) for r in rows]


@requires_postgres
def test_the_postgresql_benchmarks_run_on_a_database_of_their_own_and_print_the_servers_cpu() -> None:
    """Each run makes its own database through the URL given (a database earlier runs filled costs the server
    twice the CPU), drops it, and prints the server's CPU per job beside the worker's."""
    before = databases_made_by_benchmarks()
    given = tables_of_the_given_database()
    lines = run_bench("bench/overhead.py", "--jobs", "400", "--database-url", PG_URL)
    assert lines[1].startswith("store: postgresql  jobs: 400"), lines
    figures = "\n".join(lines[2:])
    assert re.search(r"^throughput: [\d,]+ jobs/s", figures, re.M), figures
    assert re.search(r"^PostgreSQL CPU: \d+\.\d\d s, \d+ us per job", figures, re.M), figures
    lines = run_bench("bench/scale.py", "--jobs", "400", "--workers", "1", "--database-url", PG_URL)
    assert re.fullmatch(
        r"workers 1: [\d,]+ jobs/s \(400 jobs in [\d.]+ s\); hand-off p50 [\d.]+ ms, p99 [\d.]+ ms;"
        r" PostgreSQL CPU \d+ us per job",
        lines[2],
    ), lines
    assert databases_made_by_benchmarks() == before
    assert tables_of_the_given_database() == given  # nothing made or written there
