"""The `reelflow` command line, run as a user runs it: exit codes, messages, JSON output."""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

CLI = [sys.executable, "-m", "reelflow.cli"]


@pytest.fixture
def cli(worker_env: dict[str, str], tmp_path: Path) -> Any:
    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], env=worker_env, cwd=tmp_path, capture_output=True, text=True, input=stdin, timeout=120
        )

    return run


def write_plan(tmp_path: Path, plan: dict[str, Any], name: str = "plan.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(plan))
    return path


SIM_PLAN = {
    "jobs": [
        {"id": "a", "type": "generate-image", "model": "sim/image", "params": {"latency_s": 0.05}},
        {"id": "b", "type": "generate-video", "model": "sim/video", "params": {"image": "$a", "latency_s": 0.05}},
    ]
}


def test_run_wait_json_prints_the_final_state_and_exits_0(cli: Any, tmp_path: Path) -> None:
    proc = cli("run", str(write_plan(tmp_path, SIM_PLAN)), "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout)
    assert state["status"] == "succeeded"
    assert [j["status"] for j in state["jobs"]] == ["succeeded", "succeeded"]
    assert state["jobs"][1]["depends_on"] == ["a"]


def test_run_without_wait_enqueues_and_status_reports_it(cli: Any, tmp_path: Path) -> None:
    proc = cli("run", str(write_plan(tmp_path, SIM_PLAN)), "--json")
    assert proc.returncode == 0, proc.stderr
    accepted = json.loads(proc.stdout)
    assert accepted["status"] == "queued"
    status = cli("status", accepted["id"], "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout)["status"] == "queued"
    done = cli("status", accepted["id"], "--wait", "--json")  # no worker running: runs one embedded
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"


def test_a_failed_execution_exits_1_and_resume_and_retry_work(cli: Any, tmp_path: Path) -> None:
    plan = {"type": "generate-video", "model": "sim/video", "params": {"fail": "permanent"}}
    proc = cli("run", str(write_plan(tmp_path, plan)), "--wait", "--json")
    assert proc.returncode == 1
    state = json.loads(proc.stdout)
    assert state["status"] == "failed"
    assert "fail: permanent" in state["error"]
    retried = cli("retry", state["id"], "--json")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["retry_of"] == state["id"]
    resumed = cli("resume", state["id"], "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] in ("queued", "running")


def test_an_invalid_plan_is_refused_with_the_culprit_and_nothing_is_stored(cli: Any, tmp_path: Path) -> None:
    plan = {"jobs": [{"id": "clip", "type": "generate-video", "model": "local/video",
                      "params": {"prompt": "x", "duration": 90}}]}
    proc = cli("run", str(write_plan(tmp_path, plan)))
    assert proc.returncode == 1
    assert "job 'clip'" in proc.stderr and "duration must be at most 60 (got 90)" in proc.stderr
    assert "Traceback" not in proc.stderr
    db = tmp_path / "reelflow.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'executions'").fetchone()[0] in (0, 1)
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "executions" in tables:
                assert conn.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 0
                assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


def test_bad_yaml_names_the_line(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("jobs:\n  - id: a\n    type: [unclosed\n")
    proc = cli("run", str(path))
    assert proc.returncode == 1
    assert "line" in proc.stderr and "Traceback" not in proc.stderr


def test_usage_errors_exit_2(cli: Any, tmp_path: Path) -> None:
    assert cli("run", str(tmp_path / "missing.yaml")).returncode == 2
    assert cli("run").returncode == 2
    assert cli("no-such-command").returncode == 2


def test_unknown_execution_is_reported_without_a_traceback(cli: Any) -> None:
    for args in (("status", "ex_nope"), ("cancel", "ex_nope"), ("resume", "ex_nope"), ("retry", "ex_nope")):
        proc = cli(*args)
        assert proc.returncode == 1, args
        assert "not found" in proc.stderr and "Traceback" not in proc.stderr


def test_plan_from_stdin_and_events(cli: Any) -> None:
    proc = cli("run", "-", "--wait", "--json", stdin=json.dumps(SIM_PLAN))
    assert proc.returncode == 0, proc.stderr
    eid = json.loads(proc.stdout)["id"]
    events = [json.loads(line) for line in cli("events", eid).stdout.splitlines()]
    assert events[0]["type"] == "execution.created"
    assert events[-1]["type"] == "execution.succeeded"


def test_events_follow_prints_new_events_until_the_execution_ends(
    cli: Any, worker_env: dict[str, str], tmp_path: Path
) -> None:
    queued = cli("run", str(write_plan(tmp_path, SIM_PLAN)), "--json")
    assert queued.returncode == 0, queued.stderr
    eid = json.loads(queued.stdout)["id"]
    # without --follow: the events so far (nothing runs it yet), and the command ends at once
    so_far = cli("events", eid, "--json")
    assert so_far.returncode == 0, so_far.stderr
    assert [json.loads(line)["type"] for line in so_far.stdout.splitlines()] == ["execution.created"]

    follower = subprocess.Popen(
        [*CLI, "events", eid, "--follow"], env=worker_env, cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.0)
        assert follower.poll() is None, "the follower waits while the execution has not ended"
        done = cli("status", eid, "--wait", "--json")  # no worker running: runs one embedded
        assert done.returncode == 0, done.stderr
        out, errs = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, errs
    followed = [json.loads(line) for line in out.splitlines()]
    assert followed[0]["type"] == "execution.created" and followed[-1]["type"] == "execution.succeeded"
    assert {e["type"] for e in followed} >= {"job.running", "job.succeeded"}
    seqs = [e["seq"] for e in followed]
    assert seqs == sorted(set(seqs)), "each event once, in order"
    # the same events a later plain read gives, none missed
    assert [json.loads(line) for line in cli("events", eid).stdout.splitlines()] == followed


def test_models_lists_the_catalog(cli: Any) -> None:
    proc = cli("models", "--json")
    assert proc.returncode == 0
    ids = {m["id"] for m in json.loads(proc.stdout)}
    assert {"local/image", "local/video", "local/audio", "sim/video"} <= ids


def test_migrate_reports_the_schema_version(cli: Any) -> None:
    proc = cli("migrate")
    assert proc.returncode == 0
    migrations = resources.files("reelflow.store") / "migrations" / "sqlite"
    latest = max(int(f.name.split("_", 1)[0]) for f in migrations.iterdir() if f.name.endswith(".sql"))
    assert f"schema version {latest}\n" in proc.stdout and latest >= 4


# ------------------------------------------------------------------ configuration problems stop every command

BAD_CONFIG = {
    # a misspelled field of the limits file, an unknown price unit in the catalog file, a setting that is no number
    "limits": (
        "REELFLOW_LIMITS_FILE",
        "tenants:\n  default: {max_cocurrent: 10}\n",
        "{path}:2: tenants.default.max_cocurrent: unknown field 'max_cocurrent' (did you mean 'max_concurrent'?)",
    ),
    "catalog": (
        "REELFLOW_CATALOG_FILE",
        "models:\n  - id: replicate/acme/x\n    types: [generate-video]\n    price: {unit: minute}\n",
        "{path}:4: model 'replicate/acme/x': price.unit:",
    ),
    "setting": ("REELFLOW_LEASE_SECONDS", None, "REELFLOW_LEASE_SECONDS='abc': Input should be a valid number"),
}
COMMANDS = [
    ["serve", "--port", "1", "--workers", "1"],  # port 1: were it to start, it could not listen (exit 1, not 2)
    ["worker", "--concurrency", "4"],
    ["run", "plan.yaml"],
    ["keys", "create", "--tenant", "acme"],
    ["migrate"],
    ["stats"],
    ["models", "--json"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0] if c[0] != "keys" else "keys-create")
@pytest.mark.parametrize("problem", sorted(BAD_CONFIG))
def test_a_configuration_problem_stops_every_command_at_start_with_exit_2(
    worker_env: dict[str, str], tmp_path: Path, problem: str, command: list[str]
) -> None:
    variable, text, said = BAD_CONFIG[problem]
    value = "abc"
    if text is not None:
        path = tmp_path / f"{problem}.yaml"
        path.write_text(text)
        value, said = str(path), said.format(path=path)
    write_plan(tmp_path, SIM_PLAN)
    database = tmp_path / "fresh.db"
    env = worker_env | {variable: value, "REELFLOW_DATABASE_URL": f"sqlite:///{database}"}
    started = time.monotonic()
    proc = subprocess.run([*CLI, *command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert said in " ".join(proc.stderr.split()), proc.stderr
    assert proc.stderr.startswith("error: invalid") and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert not database.exists(), "the command did something before stopping"
    assert elapsed < 5, f"{command[0]} took {elapsed:.1f} s to stop"


def test_help_still_works_with_a_broken_configuration(worker_env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run([*CLI, "serve", "--help"], env=worker_env | {"REELFLOW_LEASE_SECONDS": "abc"},
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "--workers" in proc.stdout


def test_run_prints_only_the_id_so_a_script_can_capture_it(cli: Any, tmp_path: Path) -> None:
    """`EX=$(reelflow run plan.yaml); reelflow cancel $EX`; a second cancel says the execution is already
    canceled; `status` of a canceled execution exits 1 and shows the work done (none), not 100%."""
    proc = cli("run", str(write_plan(tmp_path, SIM_PLAN)))
    assert proc.returncode == 0, proc.stderr
    eid = proc.stdout.strip()
    assert eid.startswith("ex_") and "\n" not in eid
    assert f"accepted: execution {eid} (2 jobs queued)" in proc.stderr
    assert cli("cancel", eid).returncode == 0
    again = cli("cancel", eid)
    assert again.returncode == 1
    assert f"execution {eid} is already canceled; nothing to cancel" in again.stderr
    status = cli("status", eid)
    assert status.returncode == 1
    assert "canceled" in status.stdout and "  0.0%" in status.stdout and "100.0%" not in status.stdout
    assert cli("status", eid, "--json").returncode == 1


def test_list_and_event_times(cli: Any, tmp_path: Path) -> None:
    done = json.loads(cli("run", str(write_plan(tmp_path, SIM_PLAN)), "--wait", "--json").stdout)
    queued = cli("run", str(write_plan(tmp_path, SIM_PLAN))).stdout.strip()
    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [queued, done["id"]]
    only = json.loads(cli("list", "--status", "succeeded", "--json").stdout)
    assert [r["id"] for r in only] == [done["id"]]
    assert len(json.loads(cli("list", "--limit", "1", "--json").stdout)) == 1
    table = cli("list")
    assert queued in table.stdout and done["id"] in table.stdout
    assert cli("list", "--status", "nope").returncode == 2
    none = cli("list", "--status", "failed")
    assert (none.returncode, none.stdout) == (0, "no failed executions\n")
    assert cli("list", "--status", "failed", "--json").stdout.strip() == "[]"
    events = [json.loads(line) for line in cli("events", done["id"]).stdout.splitlines()]
    assert events and all(e["created_at"].endswith("Z") and "T" in e["created_at"] for e in events)


def test_every_leaf_output_is_printed(cli: Any, tmp_path: Path) -> None:
    plan = {"jobs": [*SIM_PLAN["jobs"], {"id": "voice", "type": "generate-audio", "model": "sim/audio",
                                         "params": {"latency_s": 0.05}}]}  # fmt: skip
    proc = cli("run", str(write_plan(tmp_path, plan)), "--wait")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ex_")  # the id first, then the timeline and the summary
    outputs = [ln for ln in lines if ln.startswith("  output: ")]
    assert len(outputs) == 2
    assert "(b, generate-video" in outputs[0] and "(voice, generate-audio" in outputs[1]


def test_models_off_a_terminal_shows_whole_ids_and_filters_by_provider(cli: Any) -> None:
    proc = cli("models", "--provider", "replicate")
    assert proc.returncode == 0, proc.stderr
    assert "replicate/bytedance/seedance-1-lite " in proc.stdout and "…" not in proc.stdout
    assert "local/video" not in proc.stdout
    listed = json.loads(cli("models", "--provider", "local", "--json").stdout)
    assert listed and {m["provider"] for m in listed} == {"local"}
    unknown = cli("models", "--provider", "nope")
    assert unknown.returncode == 1 and "providers: " in unknown.stderr


def test_models_says_which_prices_were_read_and_which_are_unconfirmed(cli: Any) -> None:
    proc = cli("models", "--provider", "replicate")
    assert proc.returncode == 0, proc.stderr
    rows = {ln.split()[1]: ln for ln in proc.stdout.splitlines() if ln.startswith("│ replicate/")}
    assert "$0.4 / second, read 2026-10-05" in rows["replicate/google/veo-3"]
    assert "$0.003 / image, read 2026-10-07" in rows["replicate/black-forest-labs/flux-schnell"]
    assert "$0.15 / second, unconfirmed" in rows["replicate/bytedance/seedance-1-pro"]
    assert "unconfirmed: the price was not read from the provider's pages" in proc.stdout
    listed = {m["id"]: m for m in json.loads(cli("models", "--provider", "replicate", "--json").stdout)}
    assert listed["replicate/minimax/hailuo-2.3"]["price_confirmed"] is False
    assert listed["replicate/minimax/hailuo-2.3"]["price_unconfirmed"]
    assert listed["replicate/google/veo-3.1"]["price_read"] == "2026-10-05"


def test_json_help_says_what_each_command_prints(cli: Any) -> None:
    for name in ("estimate", "models", "stats"):
        text = " ".join(cli(name, "--help").stdout.split())
        assert "execution state" not in text, name
    assert "--wait " in cli("run", "--help").stdout and "<bool>" not in cli("run", "--help").stdout
    for name in (("prune",), ("keys", "create"), ("keys", "list")):
        text = " ".join(cli(*name, "--help").stdout.split())
        assert "--json" in text and "execution state" not in text, name


def test_every_command_describes_its_arguments_and_options() -> None:
    import typer.main

    from reelflow.cli.commands import app

    def commands(group: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
        found = []
        for name, cmd in group.commands.items():
            found.append(((*path, name), cmd))
            if hasattr(cmd, "commands"):
                found += commands(cmd, (*path, name))
        return found

    every = commands(typer.main.get_command(app), ())
    assert len(every) >= 21  # 18 commands, keys create|list|revoke
    for path, cmd in every:
        assert cmd.help and "SPEC" not in cmd.help and "\u00a7" not in cmd.help, path
        for param in cmd.params:
            assert param.param_type_name in ("option", "argument"), (path, param.name)
            assert param.help and "SPEC" not in param.help, (path, param.name)
            if param.param_type_name == "argument":
                assert param.metavar and param.metavar.isupper(), (path, param.name)


def test_ops_lists_every_operation_with_its_parameters_as_the_plan_check_reads_them(cli: Any) -> None:
    from reelflow.providers.catalog import operations

    listed = json.loads(cli("ops", "--json").stdout)
    assert [o["type"] for o in listed] == [o.type for o in operations()]
    thumb = next(o for o in listed if o["type"] == "thumbnail")
    assert thumb["params"]["video"]["required"] is True
    assert thumb["params"]["format"]["choices"] == ["jpg", "jpeg", "png"]
    table = cli("ops", "transcode")
    assert table.returncode == 0 and "crf" in table.stdout and "0–63" in table.stdout
    box = next(line for line in cli("ops", "captions").stdout.splitlines() if line.startswith("│ box "))
    assert "│ true " in box and "True" not in box
    assert "thumbnail" not in table.stdout
    unknown = cli("ops", "nope")
    assert unknown.returncode == 2 and "no operation 'nope'" in unknown.stderr and "thumbnail" in unknown.stderr


def test_a_cached_rerun_says_so_in_the_timeline_and_the_summary(cli: Any, tmp_path: Path) -> None:
    plan = write_plan(tmp_path, SIM_PLAN)
    first = cli("run", str(plan), "--wait")
    assert first.returncode == 0, first.stderr
    assert "cache hit" not in first.stdout and "cache:" not in first.stdout
    again = cli("run", str(plan), "--wait")
    assert again.returncode == 0, again.stderr
    rows = [ln for ln in again.stdout.splitlines() if ln.startswith(("│ a ", "│ b "))]
    assert len(rows) == 2 and all("succeeded (cache hit)" in r and "cached" in r for r in rows), again.stdout
    assert "cache: 2 of 2 jobs reused an identical earlier result, nothing paid (a, b)" in again.stdout


def test_logs_says_why_nothing_was_logged(cli: Any, tmp_path: Path) -> None:
    done = json.loads(cli("run", str(write_plan(tmp_path, SIM_PLAN)), "--wait", "--json").stdout)
    ended = cli("logs", done["id"], "a")
    assert (ended.returncode, ended.stdout) == (0, "")
    assert ended.stderr.strip().endswith("(succeeded, sim, " + done["jobs"][0]["provider_job_id"]
                                         + "): the provider logged nothing")  # fmt: skip
    queued = cli("run", str(write_plan(tmp_path, SIM_PLAN))).stdout.strip()
    waiting = cli("logs", queued, "b")
    assert (waiting.returncode, waiting.stdout) == (0, "")
    assert waiting.stderr.strip() == "job b (waiting, sim): nothing logged yet"
    assert cli("logs", queued, "nope").returncode == 1


def test_the_cyclic_collector_is_off_while_a_command_starts_and_on_once_it_has(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reelflow.cli import common, main

    seen: list[bool] = []

    @common.command
    async def body() -> str:
        seen.append(gc.isenabled())
        await asyncio.sleep(common.START_S + 0.3)
        seen.append(gc.isenabled())
        return "done"

    gc.disable()  # as `main` leaves it while the command starts
    try:
        assert body() == "done"
        assert seen == [False, True]  # back on for a command still running after its start
        gc.disable()
        monkeypatch.setattr(sys, "argv", ["reelflow", "--help"])
        main()
        assert "Usage" in capsys.readouterr().out
        assert gc.isenabled()  # `main` returns with it on, for a caller in the same process
    finally:
        gc.unfreeze()
        gc.enable()


def test_the_last_collection_at_exit_has_nothing_to_walk() -> None:
    # what `main` leaves at exit is frozen before the interpreter's last collection: it examines and frees nothing
    # (without that, it walked every object of the start-up again, and freed the cycle made here)
    script = (
        "import gc, os, sys\n"
        "sys.argv = ['reelflow', '--help']\n"
        "from reelflow.cli import main\n"
        "main()\n"
        "class Held: pass\n"
        "h = Held(); h.me = h\n"
        "del h\n"
        "def seen(phase, info):\n"
        "    if phase == 'stop': os.write(2, b'collected %d\\n' % info['collected'])\n"
        "gc.callbacks.append(seen)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout
    collections = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("collected")]
    assert collections and set(collections) == {0}, done.stderr
