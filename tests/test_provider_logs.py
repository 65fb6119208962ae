"""Each job's provider log and its time in the provider's queue: captured from the fakes of Replicate and fal
and from the local ffmpeg provider, stored per job, and shown by the API, the CLI and the SDK."""

from __future__ import annotations

import io
import itertools
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from apiserver import ApiServer
from conftest import WorkerFactory
from fakes.fal import FakeFal
from fakes.replicate import FakeReplicate
from providerfakes import fal_fixture, replicate_fixture
from reelflow import media
from reelflow.client import Client
from reelflow.config import Settings
from reelflow.display import ProgressView, progress_view, timeline_table
from reelflow.engine.scheduler import Engine
from reelflow.providers import catalog
from reelflow.providers.base import LOG_LIMIT_CHARS, ProviderLog
from reelflow.providers.catalog import register_model
from reelflow.providers.catalog.fal import MODELS as FAL_MODELS
from reelflow.providers.catalog.replicate import MODELS as REPLICATE_MODELS
from reelflow.providers.fal import FalProvider
from reelflow.providers.local import LocalProvider
from reelflow.providers.replicate import ReplicateProvider
from reelflow.store.base import ProgressReport
from reelflow.store.common import log_view, merged_log

SEEDANCE = "replicate/bytedance/seedance-1-pro"
SCHNELL = "fal/fal-ai/flux/schnell"
CLI = [sys.executable, "-m", "reelflow"]


@pytest.fixture
def paid_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replicate's and fal's models in the catalog for this test only."""
    monkeypatch.setattr(catalog.registry, "_DEFAULT", catalog.default_catalog().copy())
    for m in (*REPLICATE_MODELS, *FAL_MODELS):
        register_model(m, replace=True)


replicate_env = replicate_fixture(latency_s=0.4, queue_s=0.0)


def video_job(job_key: str = "clip") -> dict[str, Any]:
    params = {"prompt": "slow waves", "duration": 5}
    return {"id": job_key, "type": "generate-video", "model": SEEDANCE, "params": params}


async def run_replicate(engine: Engine, running_worker: WorkerFactory, **opts: Any) -> tuple[str, dict[str, Any]]:
    provider = ReplicateProvider(poll_initial_s=0.05, poll_max_s=0.1)
    eid = await engine.submit({"jobs": [video_job()]})
    async with running_worker(providers_={"replicate": provider}, **opts):
        state = await engine.wait(eid, timeout=30)
    await provider.aclose()
    assert state["status"] == "succeeded", state["jobs"][0]["error"]
    return eid, state


# ----------------------------------------------------------------------------------------- Replicate


async def test_replicate_logs_reach_the_api_the_cli_and_the_sdk(
    engine: Engine,
    running_worker: WorkerFactory,
    replicate_env: FakeReplicate,
    paid_models: None,
    settings: Settings,
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    eid, state = await run_replicate(engine, running_worker)
    pid = state["jobs"][0]["provider_job_id"]
    final = replicate_env._view(replicate_env.predictions[pid])["logs"]  # what Replicate shows at the end
    assert final and "100%|##########| 100/100" in final

    stored = await engine.job_logs(eid, "clip")
    assert stored.text == final  # the provider's whole log, as it gave it
    assert (stored.attempt, stored.truncated, stored.dropped_chars) == (1, False, 0)
    assert (stored.provider, stored.provider_job_id, stored.status) == ("replicate", pid, "succeeded")

    with ApiServer(settings) as api:
        key = api.new_key("default").api_key
        with api.client(key) as http:
            r = http.get(f"/v1/executions/{eid}/jobs/clip/logs")
            assert r.status_code == 200, r.text
            assert r.json() == stored.model_dump(mode="json")
            state_api = http.get(f"/v1/executions/{eid}").json()
        assert state_api["jobs"][0]["provider_queued_s"] is not None

        # the SDK: a client's handle, and the client itself
        with Client(api.url, key) as client:
            assert client.execution(eid).logs("clip") == stored.model_dump(mode="json")
            assert client.job_logs(eid, "clip")["text"] == final

        # the CLI against the server, and on the local database
        remote = subprocess.run(
            [*CLI, "logs", eid, "clip", "--server", api.url, "--api-key", key], env=worker_env, cwd=tmp_path,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == final
    assert f"job clip (succeeded, replicate, {pid}), attempt 1" in remote.stderr
    local = subprocess.run(
        [*CLI, "logs", eid, "clip", "--json"], env=worker_env, cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert local.returncode == 0, local.stderr
    assert json.loads(local.stdout) == stored.model_dump(mode="json")


async def test_another_tenant_and_unknown_jobs_get_404(
    engine: Engine, running_worker: WorkerFactory, replicate_env: FakeReplicate, paid_models: None,
    settings: Settings,
) -> None:  # fmt: skip
    eid, _ = await run_replicate(engine, running_worker)
    with ApiServer(settings) as api:
        mine, theirs = api.new_key("default").api_key, api.new_key("rival").api_key
        with api.client(theirs) as http:
            r = http.get(f"/v1/executions/{eid}/jobs/clip/logs")
            assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
            assert "clip" not in r.json()["detail"]  # says the execution is unknown, nothing about its jobs
            assert r.json()["detail"] == f"execution {eid!r} not found"
        with api.client(mine) as http:
            assert http.get(f"/v1/executions/{eid}/jobs/clip/logs").status_code == 200
            r = http.get(f"/v1/executions/{eid}/jobs/nope/logs")
            assert r.status_code == 404 and r.json()["detail"] == f"job 'nope' not found in execution {eid!r}"
            r = http.get(f"/v1/executions/{eid}/jobs/Not%20A%20Job/logs")
            assert r.status_code == 404
            assert http.get("/v1/executions/ex_missing/jobs/clip/logs").status_code == 404
        with Client(api.url, theirs) as client, pytest.raises(Exception, match="not found"):
            client.job_logs(eid, "clip")


async def test_a_long_log_keeps_its_end_and_says_how_much_was_left_out(
    engine: Engine, running_worker: WorkerFactory, replicate_env: FakeReplicate, paid_models: None
) -> None:
    replicate_env.log_preamble = "".join(f"loading weights shard {i:06d}\n" for i in range(4000))  # ~116 KB
    eid, state = await run_replicate(engine, running_worker)
    final = replicate_env._view(replicate_env.predictions[state["jobs"][0]["provider_job_id"]])["logs"]
    assert len(final) > LOG_LIMIT_CHARS
    logs = await engine.job_logs(eid, "clip")
    marker, _, kept = logs.text.partition("\n")
    dropped = len(final) - len(kept)
    assert logs.truncated is True and logs.dropped_chars == dropped
    assert marker == f"[... {dropped} earlier characters of this log were not kept ...]"
    assert LOG_LIMIT_CHARS - 40 < len(kept) <= LOG_LIMIT_CHARS  # the last 64 KiB, from the first whole line
    assert kept == final[dropped:] and final[dropped - 1] == "\n" and kept.startswith("loading weights shard ")
    assert kept.endswith("100%|##########| 100/100\n")


async def test_a_failed_prediction_keeps_its_log_and_its_queue_time(
    engine: Engine, running_worker: WorkerFactory, replicate_env: FakeReplicate, paid_models: None
) -> None:
    replicate_env.queue_s = 0.5
    replicate_env.prediction_fails("CUDA out of memory")
    provider = ReplicateProvider(poll_initial_s=0.05, poll_max_s=0.1)
    eid = await engine.submit({"jobs": [{**video_job(), "max_attempts": 1}]})
    async with running_worker(providers_={"replicate": provider}):
        state = await engine.wait(eid, timeout=30)
    await provider.aclose()
    job = state["jobs"][0]
    assert job["status"] == "failed" and "CUDA out of memory" in job["error"]
    logs = await engine.job_logs(eid, "clip")
    assert logs.status == "failed" and logs.text.endswith("100%|##########| 100/100\n")
    assert 0.45 <= job["provider_queued_s"] <= 0.6, job


async def test_logs_are_written_only_when_they_change(
    engine: Engine, running_worker: WorkerFactory, replicate_env: FakeReplicate, paid_models: None,
    monkeypatch: pytest.MonkeyPatch, store: Any,
) -> None:  # fmt: skip
    replicate_env.queue_s, replicate_env.latency_s = 1.5, 0.3  # polled ~20 times while `starting` (no logs)
    written: list[ProgressReport] = []
    report = store.report_progress

    async def recording(reports: list[ProgressReport]) -> None:
        written.extend(r for r in reports if r.note is not None and r.note.log is not None)
        await report(reports)

    monkeypatch.setattr(store, "report_progress", recording)
    polls_before = replicate_env.gets
    eid, _ = await run_replicate(engine, running_worker)
    polls = replicate_env.gets - polls_before
    assert polls >= 10
    texts = [r.note.log for r in written if r.note is not None]
    assert len(texts) <= 3, texts  # the log changed a few times while processing; never while starting
    assert all(a != b for a, b in itertools.pairwise(texts))  # never the same log twice
    assert all(t and "Generating" in t for t in texts)
    assert "100/100" in (await engine.job_logs(eid, "clip")).text  # the last one came with the outcome


# ----------------------------------------------------------------------------------------- queue time


@pytest.mark.parametrize(("queue_s", "low", "high"), [(1.2, 1.15, 1.3), (0.0, 0.0, 0.08)])
async def test_the_time_in_replicates_queue_is_what_it_held_the_prediction_starting(
    engine: Engine, running_worker: WorkerFactory, replicate_env: FakeReplicate, paid_models: None,
    queue_s: float, low: float, high: float,
) -> None:  # fmt: skip
    replicate_env.queue_s = queue_s
    _, state = await run_replicate(engine, running_worker)
    job = state["jobs"][0]
    assert low <= job["provider_queued_s"] <= high, job
    assert job["provider_phase"] is None  # ended: no phase shown
    assert job["provider_submitted_at"] is not None and job["provider_started_at"] is not None
    assert job["provider_submitted_at"] <= job["provider_started_at"] <= job["finished_at"]


async def test_while_queued_at_the_provider_the_state_and_the_live_view_say_so(
    engine: Engine, running_worker: WorkerFactory, replicate_env: FakeReplicate, paid_models: None
) -> None:
    replicate_env.queue_s, replicate_env.latency_s = 2.0, 1.5
    provider = ReplicateProvider(poll_initial_s=0.05, poll_max_s=0.1)
    eid = await engine.submit({"jobs": [video_job()]})
    seen: dict[str, dict[str, Any]] = {}

    def watch(state: dict[str, Any]) -> None:
        job = state["jobs"][0]
        if job["status"] == "running" and job["provider_phase"] and job["provider_phase"] not in seen:
            seen[job["provider_phase"]] = state

    async with running_worker(providers_={"replicate": provider}):
        final = await engine.wait(eid, timeout=30, on_update=watch, poll_s=0.1)
    await provider.aclose()
    assert final["status"] == "succeeded"
    queued, running = seen["queued"]["jobs"][0], seen["running"]["jobs"][0]
    assert 0 < queued["provider_queued_s"] < 2.0 and queued["provider_started_at"] is None
    assert running["provider_started_at"] is not None and 1.9 <= running["provider_queued_s"] <= 2.1

    def shown(state: dict[str, Any]) -> str:
        out = io.StringIO()
        Console(file=out, width=200).print(progress_view(state))
        return out.getvalue()

    assert f"queued at provider {queued['provider_queued_s']:.0f}s" in shown(seen["queued"])
    live = shown(seen["running"])
    assert "running " in live and "(queued at provider 2s)" in live
    out = io.StringIO()
    Console(file=out, width=200).print(timeline_table(final))
    assert "queued at provider" in out.getvalue() and f"{final['jobs'][0]['provider_queued_s']:.2f}s" in out.getvalue()


def test_the_live_view_keeps_counting_between_two_reads_of_the_state() -> None:
    now = datetime.now(UTC)

    def job(job_key: str, **fields: Any) -> dict[str, Any]:
        base = {"id": job_key, "type": "generate-video", "status": "running", "progress": 0.0, "attempts": 1,
                "queue_position": None, "error": None, "started_at": iso(now - timedelta(seconds=20)),
                "finished_at": None, "provider_phase": None, "provider_queued_s": None, "provider_started_at": None}
        return {**base, **fields}  # fmt: skip

    state = {"id": "ex_1", "status": "running", "progress": 0.0, "jobs": [
        job("waiting", provider_phase="queued", provider_queued_s=5.0, queue_position=3),
        job("working", provider_phase="running", provider_queued_s=4.0,
            provider_started_at=iso(now - timedelta(seconds=10))),
    ]}  # fmt: skip
    view = ProgressView(state, read_at=now - timedelta(seconds=3))  # read 3 s ago: 5 s queued then, 8 s now
    out = io.StringIO()
    Console(file=out, width=200).print(view)
    text = out.getvalue()
    assert "queued at provider 8s, position 3" in text
    assert re.search(r"running 1[01]s \(queued at provider 4s\)", text), text
    assert re.search(r"\b2[01]s\b", text)  # each running job's time since its attempt started


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ----------------------------------------------------------------------------------------- fal


fal_env = fal_fixture(queue_s=1.0, latency_s=0.6)


async def test_fal_logs_asked_with_logs_1_are_stored_once_each_and_the_queue_time_measured(
    engine: Engine, running_worker: WorkerFactory, fal_env: FakeFal, paid_models: None
) -> None:
    provider = FalProvider(poll_initial_s=0.05, poll_max_s=0.1)
    job = {"id": "still", "type": "generate-image", "model": SCHNELL, "params": {"prompt": "fox", "seed": 3}}
    eid = await engine.submit({"jobs": [job]})
    async with running_worker(providers_={"fal": provider}):
        state = await engine.wait(eid, timeout=30)
    assert state["status"] == "succeeded", state
    polls = [e for e in fal_env.log if e.route == "status"]
    assert polls and all(e.query.get("logs") == "1" for e in polls)
    [req] = fal_env.requests.values()
    logs = await engine.job_logs(eid, "still")
    lines = logs.text.splitlines()
    # every entry fal logged, once, in order, as "<timestamp> <level> <message>"
    assert lines == [f"{e['timestamp']} INFO {e['message']}" for e in req.logs]
    assert lines[0].endswith("INFO Loading model") and lines[-1].endswith("INFO Generating: 100%")
    assert len(lines) >= 3
    queued = state["jobs"][0]["provider_queued_s"]
    assert 0.95 <= queued <= 1.25, queued  # IN_QUEUE for 1.0 s, seen leaving it within a poll (0.1 s)


def test_provider_log_takes_entries_given_again_or_only_new_ones() -> None:
    cumulative, incremental = ProviderLog(), ProviderLog()
    entries = [{"timestamp": f"2026-01-01T00:00:0{i}", "message": f"step {i}", "level": "INFO"} for i in range(4)]
    for n in range(1, 5):
        cumulative.merge_entries(entries[:n])  # every entry so far, each time
        incremental.merge_entries(entries[n - 1 : n])  # only the new one
    assert cumulative.text == incremental.text == "".join(f"2026-01-01T00:00:0{i} INFO step {i}\n" for i in range(4))
    version = cumulative.version
    cumulative.merge_entries(entries)  # nothing new: no change, nothing to write
    cumulative.merge_entries("not a list")
    assert cumulative.version == version


def test_provider_log_bounds_its_text_and_counts_what_it_dropped() -> None:
    log = ProviderLog(limit=10)
    log.replace("abcdefghijklmnop")
    assert (log.text, log.dropped) == ("ghijklmnop", 6)
    version = log.version
    log.replace("abcdefghijklmnop")
    assert log.version == version  # the same whole log again: unchanged
    own = ProviderLog(limit=10)
    for i in range(5):
        own.add(f"l{i}")
    assert (own.text, own.dropped) == ("\nl2\nl3\nl4\n", 5)  # the last 10 characters, 5 counted as dropped
    assert own.version == 5


def test_attempts_follow_each_other_in_the_stored_log() -> None:
    first = merged_log(None, 1, "boot\nfailed: out of memory\n", 0)
    again = merged_log(first, 1, "boot\nfailed: out of memory\nretrying\n", 0)  # the same attempt, grown
    assert again["earlier"] == "" and again["current"].endswith("retrying\n")
    second = merged_log(again, 2, "boot\ndone\n", 5)
    view = log_view("ex_1", {"key": "j", "status": "succeeded", "provider": "replicate", "provider_job_id": "p"},
                    {**second, "updated_at": 1.0})  # fmt: skip
    assert view["text"].splitlines() == [
        "[... 5 earlier characters of this log were not kept ...]",
        "boot", "failed: out of memory", "retrying", "--- attempt 2 ---", "boot", "done",
    ]  # fmt: skip
    assert (view["attempt"], view["truncated"], view["dropped_chars"]) == (2, True, 5)
    big = merged_log(second, 3, "x" * (LOG_LIMIT_CHARS + 7), 0)
    view = log_view("ex_1", {"key": "j", "status": "running", "provider": None, "provider_job_id": None},
                    {**big, "updated_at": 2.0})  # fmt: skip
    assert view["dropped_chars"] == 5 + 7 + len(second["earlier"]) + len(second["current"]) + len(
        "--- attempt 3 ---\n"
    )
    assert view["text"].split("\n", 1)[1] == "x" * LOG_LIMIT_CHARS  # one long line: kept as cut


# ----------------------------------------------------------------------------------------- local (ffmpeg)


async def test_the_local_provider_logs_its_ffmpeg_commands(
    engine: Engine, running_worker: WorkerFactory
) -> None:
    job = {"id": "still", "type": "generate-image", "model": "local/image",
           "params": {"prompt": "sunset", "width": 64, "height": 48}}  # fmt: skip
    eid = await engine.submit({"jobs": [job]})
    async with running_worker(providers_={"local": LocalProvider()}):
        state = await engine.wait(eid, timeout=60)
    assert state["status"] == "succeeded", state["jobs"][0]["error"]
    text = (await engine.job_logs(eid, "still")).text
    lines = text.splitlines()
    assert lines[0].startswith("$ ffmpeg ") and "-loglevel error" in lines[0]
    assert any(ln.startswith("ffmpeg done in ") for ln in lines), text
    assert state["jobs"][0]["provider_queued_s"] == 0.0  # ffmpeg starts at once: no queue at the provider


async def test_a_job_served_from_the_cache_shows_the_log_of_the_run_that_made_its_output(
    engine: Engine, running_worker: WorkerFactory
) -> None:
    job = {"id": "still", "type": "generate-image", "model": "local/image",
           "params": {"prompt": "sunset", "width": 64, "height": 48}}  # fmt: skip
    plan = {"jobs": [job], "options": {"cache": True}}
    first = await engine.submit(plan)
    async with running_worker(providers_={"local": LocalProvider()}):
        assert (await engine.wait(first, timeout=60))["status"] == "succeeded"
        again = await engine.submit({**plan, "jobs": [{**job, "id": "same"}]})
        state = await engine.wait(again, timeout=60)
        third = await engine.submit({**plan, "jobs": [{**job, "id": "thrice"}]})  # a hit of the hit
        third_state = await engine.wait(third, timeout=60)
    assert state["status"] == "succeeded" and state["jobs"][0]["cache_hit"] is True
    assert third_state["jobs"][0]["cache_hit"] is True
    assert third_state["jobs"][0]["result"]["cached_from"] == {"execution_id": again, "job": "same"}
    made = (await engine.job_logs(first, "still")).text
    origin = f"job 'still' of execution {first}"
    for eid, key in ((again, "same"), (third, "thrice")):
        served = await engine.job_logs(eid, key)
        assert served.text == f"[served from the cache: the output and this log are those of {origin}]\n" + made
        assert served.job_id == key and served.execution_id == eid
        assert served.truncated is False and served.dropped_chars == 0
    assert made.startswith("$ ffmpeg ")


async def test_a_failed_ffmpeg_run_logs_its_exit_and_the_end_of_its_stderr(tmp_path: Path) -> None:
    log = ProviderLog()
    token = media.tool_log.set(log.add)
    try:
        with pytest.raises(media.MediaError):
            await media.runner._exec(
                "test", [media.ffmpeg_exe(), "-hide_banner", "-i", str(tmp_path / "missing.mp4"), "-f", "null", "-"]
            )
    finally:
        media.tool_log.reset(token)
    lines = log.text.splitlines()
    assert lines[0] == "$ ffmpeg -hide_banner -i missing.mp4 -f null -"
    assert re.fullmatch(r"ffmpeg exited with \d+ after \d+\.\d\d s; stderr:", lines[1]), lines[1]
    assert any("missing.mp4" in ln for ln in lines[2:]) and "No such file" in lines[-1], lines


def test_jobs_run_in_the_worker_show_no_provider_queue() -> None:
    from reelflow.display import _job_note, provider_queued

    def job(job_key: str, model: str | None, queued: float | None) -> dict[str, Any]:
        return {"id": job_key, "type": "generate-image", "model": model, "status": "succeeded", "attempts": 1,
                "started_at": "2026-12-06T10:00:00.100Z", "finished_at": "2026-12-06T10:00:01.000Z",
                "provider_queued_s": queued, "cache_hit": False, "error": None}  # fmt: skip

    def table(*jobs: dict[str, Any]) -> str:
        state = {"id": "ex_1", "status": "succeeded", "created_at": "2026-12-06T10:00:00.000Z",
                 "finished_at": "2026-12-06T10:00:01.000Z", "jobs": list(jobs)}  # fmt: skip
        out = io.StringIO()
        Console(file=out, width=200).print(timeline_table(state))
        return out.getvalue()

    local, op = job("still", "local/image", 0.0), job("merged", None, 0.0)
    assert provider_queued(local) is None and provider_queued(op) is None and _job_note(local) == ""
    assert "queued at provider" not in table(local, op)
    remote = job("clip", "replicate/google/veo-3", 0.0)
    assert provider_queued(remote) == 0.0 and _job_note(remote) == "queued at provider 0s"
    shown = table(local, remote)
    assert "queued at provider" in shown and "0.00s" in shown
    assert re.search(r"still .*│\s+-\s+│", shown), shown  # the local job's cell is a dash
