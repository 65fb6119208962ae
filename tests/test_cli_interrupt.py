"""Ctrl-C on a waiting command (`run --wait`, `status --wait`, `cancel|resume|retry --wait`) on the local
database: the first hands the embedded worker's jobs back to the queue with their provider ids and returns at
once, saying where the execution stands; a later wait resumes the same provider work; a second Ctrl-C exits at
once. Each command runs as a user runs it, in its own process."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

CLI = [sys.executable, "-m", "reelflow.cli"]
LATENCY_S = 6.0
"""Long enough that the jobs are still running at the provider when the test presses Ctrl-C."""


Job = tuple[str, int, str | None, str | None]  # status, attempts, provider_job_id, lease_owner


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "reelflow.db"  # where conftest's SQLite URL points


@pytest.fixture
def start(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def spawn(*args: str, sigint_ignored: bool = False) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*CLI, *args],
            env=worker_env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Ctrl-C's default made explicit: a suite started in the background of a shell without job control
            # inherits SIGINT ignored, and the command would rightly keep ignoring it
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN if sigint_ignored else signal.SIG_DFL),
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture
def cli(worker_env: dict[str, str], tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], env=worker_env, cwd=tmp_path, capture_output=True, text=True, timeout=30)

    return run


def plan_file(tmp_path: Path, parallel: int = 3, *, dependent: bool = True) -> Path:
    """`parallel` sim jobs of LATENCY_S at once, and (with `dependent`) one more waiting for the first."""
    jobs: list[dict[str, Any]] = [
        {"id": f"p{i}", "type": "generate-video", "model": "sim/video", "params": {"latency_s": LATENCY_S}}
        for i in range(parallel)
    ]
    if dependent:
        after = {"image": "$p0", "latency_s": 0.1}
        jobs.append({"id": "after", "type": "generate-video", "model": "sim/video", "params": after})
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"jobs": jobs}))
    return path


def jobs_of(db: Path) -> dict[str, Job]:
    with sqlite3.connect(db, timeout=10) as conn:
        rows = conn.execute("SELECT key, status, attempts, provider_job_id, lease_owner FROM jobs").fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def only_execution(db: Path) -> str:
    with sqlite3.connect(db, timeout=10) as conn:
        (eid,) = [r[0] for r in conn.execute("SELECT id FROM executions")]
    return str(eid)


def submitted_events(db: Path, key: str) -> int:
    with sqlite3.connect(db, timeout=10) as conn:
        sql = "SELECT COUNT(*) FROM events WHERE job_key = ? AND type = 'job.submitted'"
        return int(conn.execute(sql, (key,)).fetchone()[0])


def until(check: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except sqlite3.OperationalError:  # the database not made yet, or busy for a moment
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


def running_at_provider(db: Path, keys: list[str]) -> bool:
    jobs = jobs_of(db)
    return all(k in jobs and jobs[k][0] == "running" and jobs[k][2] for k in keys)


def interrupt(proc: subprocess.Popen[str], limit_s: float) -> tuple[float, str, str]:
    """Ctrl-C once; the seconds until the process exited (it must within `limit_s`), its stdout and stderr."""
    pressed = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=limit_s + 10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still running {limit_s + 10:.0f} s after Ctrl-C; stderr: {err}") from None
    return time.monotonic() - pressed, out, err


PARALLEL = ["p0", "p1", "p2"]


def test_ctrl_c_on_run_wait_hands_the_jobs_back_and_a_later_wait_finishes_the_same_provider_work(
    start: Callable[..., subprocess.Popen[str]], cli: Callable[..., Any], tmp_path: Path, db: Path
) -> None:
    proc = start("run", str(plan_file(tmp_path)), "--wait", "--json")
    until(lambda: running_at_provider(db, PARALLEL), what="three jobs running at the provider")
    before = jobs_of(db)
    eid = only_execution(db)

    took, out, err = interrupt(proc, 2.0)

    assert took < 2.0, f"{took:.2f} s to exit after Ctrl-C"
    assert proc.returncode == 130, err
    assert out == ""  # no final state: the execution did not end
    assert f"execution {eid} continues: 1 queued, 3 running at the provider." in err, err
    assert f"Follow: reelflow status {eid} --wait. Stop: reelflow cancel {eid}" in err, err
    assert "Traceback" not in err and "interrupted" not in err
    after = jobs_of(db)
    for key in PARALLEL:  # back in the queue, nobody's, attempt not counted, the provider's id kept
        assert after[key] == ("queued", 0, before[key][2], None), (key, before[key], after[key])
    assert after["after"][0] == "waiting"

    done = cli("status", eid, "--wait", "--json")

    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["status"] == "succeeded"
    jobs = {j["id"]: j for j in state["jobs"]}
    for key in PARALLEL:  # the same provider work waited on again, not submitted anew
        assert jobs[key]["provider_job_id"] == before[key][2]
        assert jobs[key]["result"]["provider_id"] == before[key][2]
        assert jobs[key]["attempts"] == 1
        assert submitted_events(db, key) == 1


def test_a_second_ctrl_c_exits_at_once_while_the_first_is_still_handing_back(
    start: Callable[..., subprocess.Popen[str]], cli: Callable[..., Any], tmp_path: Path, db: Path
) -> None:
    """The database is locked by someone else, so the first Ctrl-C cannot hand the jobs back quickly: the second
    ends the process at once all the same (its jobs then return to the queue when their leases end)."""
    accepted = cli("run", str(plan_file(tmp_path, 2, dependent=False)), "--json")
    eid = json.loads(accepted.stdout)["id"]
    proc = start("status", eid, "--wait", "--json")
    until(lambda: running_at_provider(db, ["p0", "p1"]), what="two jobs running at the provider")
    lock = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None, "the first Ctrl-C returned although the database was locked"
        took, _, err = interrupt(proc, 0.5)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert took < 0.5, f"{took:.2f} s to exit after the second Ctrl-C"
    assert proc.returncode == 130
    assert "interrupted again: exiting now" in err, err


def test_a_wait_started_with_sigint_ignored_keeps_ignoring_it(
    start: Callable[..., subprocess.Popen[str]], tmp_path: Path, db: Path
) -> None:
    """A command started in the background (`cmd &` in a script: SIGINT ignored) is not stopped by it."""
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump({"type": "generate-video", "model": "sim/video", "params": {"latency_s": 1.5}}))
    proc = start("run", str(path), "--wait", "--json", sigint_ignored=True)
    until(lambda: running_at_provider(db, ["job"]), what="the job running at the provider")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out)["status"] == "succeeded"


def test_cancel_wait_ends_with_the_final_state(
    start: Callable[..., subprocess.Popen[str]], cli: Callable[..., Any], tmp_path: Path, db: Path
) -> None:
    proc = start("run", str(plan_file(tmp_path)), "--wait", "--json")
    until(lambda: running_at_provider(db, PARALLEL), what="three jobs running at the provider")
    eid = only_execution(db)
    interrupt(proc, 2.0)
    assert proc.returncode == 130

    canceled = cli("cancel", eid, "--wait", "--json")

    assert canceled.returncode == 1, canceled.stderr  # as `status --wait`: 0 only when the execution succeeded
    state = json.loads(canceled.stdout)
    assert state["id"] == eid and state["status"] == "canceled"
    assert {j["status"] for j in state["jobs"]} == {"canceled"}
    assert {v[0] for v in jobs_of(db).values()} == {"canceled"}


def test_resume_wait_and_retry_wait_follow_to_the_end(cli: Callable[..., Any], tmp_path: Path, db: Path) -> None:
    """A canceled execution resumes to success; `retry --wait` follows the new execution, not the old one."""
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump({"type": "generate-video", "model": "sim/video", "params": {"latency_s": 0.3}}))
    eid = json.loads(cli("run", str(path), "--json").stdout)["id"]
    assert json.loads(cli("cancel", eid, "--json").stdout)["status"] == "canceled"

    resumed = cli("resume", eid, "--wait")  # the human output: the progress view, then the summary line

    assert resumed.returncode == 0, resumed.stderr
    assert f"execution {eid} succeeded" in resumed.stdout, resumed.stdout

    retried = cli("retry", eid, "--wait", "--json")

    assert retried.returncode == 0, retried.stderr
    new = json.loads(retried.stdout)
    assert new["retry_of"] == eid and new["id"] != eid and new["status"] == "succeeded"
    assert [j["status"] for j in new["jobs"]] == ["succeeded"]


def test_the_interrupt_line_counts_local_work_as_queued_since_it_stopped_with_the_process() -> None:
    from reelflow.cli.follow import where_it_stands

    def job(status: str, model: str, pid: str | None) -> dict[str, Any]:
        return {"status": status, "model": model, "provider_job_id": pid}

    state = {
        "id": "ex_1",
        "status": "running",
        "jobs": [
            job("succeeded", "sim/video", "sim-1"),
            job("queued", "sim/video", "sim-2"),  # released with its id: the provider goes on
            job("queued", "local/video", "local-3"),  # ffmpeg ran here: it runs again
            job("waiting", "sim/video", None),
            job("running", "replicate/x", "r-4"),  # another worker's, at the provider
            job("running", "local/merge", "local-5"),  # another worker's, running there
        ],
    }
    assert where_it_stands(state) == (
        "execution ex_1 continues: 2 queued, 2 running at the provider, 1 running in a worker. "
        "Follow: reelflow status ex_1 --wait. Stop: reelflow cancel ex_1"
    )
