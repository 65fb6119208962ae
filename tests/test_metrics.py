"""Prometheus metrics, `GET /v1/stats` and `reelflow stats`, measured against real runs: executions that
succeed, fail for good, retry after a transient failure or are canceled; a webhook delivered to a local
receiver and one refused by it; provider HTTP requests to the fake Replicate (dropped, throttled, fine)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from apiserver import ApiServer, server_settings
from conftest import WorkerFactory, sim_job
from fakes.replicate import FakeReplicate
from reelflow import metrics
from reelflow.api.app import create_app
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.providers.registry import Providers
from reelflow.providers.replicate import ReplicateProvider
from reelflow.providers.sim import SimProvider
from reelflow.store.base import Store
from reelflow.store.stats import parse_since, percentile
from test_webhooks import Receiver

CLI = [sys.executable, "-m", "reelflow.cli"]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

STORE_GAUGES = {
    "reelflow_jobs", "reelflow_queue_depth", "reelflow_workers_live", "reelflow_worker_slots",
    "reelflow_worker_slots_in_use",
}  # fmt: skip


# ---------------------------------------------------------------------------------------- helpers
def parse(text: str) -> tuple[set[str], Samples]:
    """Family names and every sample of a text exposition, parsed by prometheus_client's own parser."""
    families: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return round(value(after, name, **labels) - value(before, name, **labels), 9)


def local_samples() -> Samples:
    """This process's metrics (the registry `/metrics` and `reelflow worker --metrics-port` serve)."""
    return parse(metrics.exposition().decode())[1]


def seconds_between(start: str, end: str) -> float:
    return datetime.fromisoformat(end).timestamp() - datetime.fromisoformat(start).timestamp()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def until(check: Any, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The webhook receivers listen on loopback."""
    return settings.model_copy(update={"allow_private_urls": True})


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    """One receiver that accepts webhooks, one that answers 500 to each."""
    good, bad = Receiver(), Receiver()
    bad.always_status = 500
    good.start()
    bad.start()
    yield good, bad
    good.stop()
    bad.stop()


# ---------------------------------------------------------------------------------------- pure parts
def test_settling_counts_an_execution_only_when_its_transaction_commits() -> None:
    name = "reelflow_executions_total"
    before = local_samples()
    with pytest.raises(RuntimeError), metrics.settling():  # rolled back (or retried): not counted
        metrics.execution_finished("failed", 1.0)
        raise RuntimeError("rollback")
    assert delta(local_samples(), before, name, status="failed") == 0
    with metrics.settling():
        metrics.execution_finished("failed", 2.5)
        assert delta(local_samples(), before, name, status="failed") == 0  # not before the commit
    after = local_samples()
    assert delta(after, before, name, status="failed") == 1
    assert delta(after, before, "reelflow_execution_duration_seconds_count") == 1
    assert delta(after, before, "reelflow_execution_duration_seconds_sum") == 2.5
    assert delta(after, before, "reelflow_execution_duration_seconds_bucket", le="2.5") == 1
    assert delta(after, before, "reelflow_execution_duration_seconds_bucket", le="1.0") == 0


def test_provider_request_outcomes() -> None:
    assert [metrics.request_outcome(c) for c in (200, 201, 429, 404, 422, 500, 503, None)] == [
        "ok", "ok", "throttled", "rejected", "rejected", "error", "error", "error",
    ]  # fmt: skip


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert percentile([float(i) for i in range(1, 101)], 0.95) == pytest.approx(95.05)


def test_since_accepts_times_and_durations_and_says_what_is_wrong() -> None:
    now = 1_800_000_000.0
    assert parse_since(None, now) == now - 86400
    assert parse_since("", now) == now - 86400
    assert parse_since("24h", now) == now - 86400
    assert parse_since("90m", now) == now - 5400
    assert parse_since("2w", now) == now - 14 * 86400
    assert parse_since("1.5d", now) == now - 1.5 * 86400
    assert parse_since("2027-01-15T07:00:00Z", now) == now - 3600  # `now` is 2027-01-15T08:00:00Z
    assert parse_since("2027-01-15T07:00:00+00:00", now) == now - 3600
    assert parse_since("2027-01-15T07:00:00", now) == now - 3600  # UTC when it names no zone
    assert parse_since("2027-01-15T08:00:00 01:00", now) == now - 3600  # a "+" that arrived unencoded
    for bad, says in (
        ("yesterday", "since must be an ISO 8601 time (2026-01-31T12:00:00Z) or a duration (24h, 90m, 7d), got"),
        ("24x", "got '24x'"),
        ("-3h", "got '-3h'"),
        ("0h", "since must be a positive duration, got '0h'"),
        ("2099-01-01T00:00:00Z", "since is in the future: '2099-01-01T00:00:00Z'"),
    ):
        with pytest.raises(ValueError) as info:
            parse_since(bad, now)
        assert says in str(info.value), bad


# ---------------------------------------------------------------------------------------- on both stores
async def test_store_stats_gauges_and_counters_after_a_real_workload(
    engine: Engine,
    store: Store,
    running_worker: WorkerFactory,
    receivers: tuple[Receiver, Receiver],
) -> None:
    good, bad = receivers
    t0 = time.time()
    before = local_samples()
    canceled = await engine.submit({"jobs": [sim_job("slow", latency_s=30)]}, tenant="acme")
    await engine.cancel(canceled, "acme")  # queued, no worker yet: ends canceled at once, in this process
    ok = await engine.submit(
        {
            "jobs": [
                sim_job("a", "sim/image", latency_s=0.05, cost_usd=0.1),
                sim_job("b", image="$a", latency_s=0.05, cost_usd=0.2),
            ],
            "webhook": good.url,
        },
        tenant="acme",
    )
    retried = await engine.submit({"jobs": [sim_job("r", fail_times=1, cost_usd=0.3)]}, tenant="acme")
    failed = await engine.submit({"jobs": [sim_job("f", fail="permanent")], "webhook": bad.url}, tenant="acme")

    async with running_worker(concurrency=7):
        states = [await engine.wait(e, timeout=20, poll_s=0.05) for e in (ok, retried, failed, canceled)]
        assert [s["status"] for s in states] == ["succeeded", "succeeded", "failed", "canceled"]
        assert states[1]["jobs"][0]["attempts"] == 2

        async def attempted() -> bool:
            rows = (await store.list_deliveries("acme")).data
            return len(rows) == 2 and all(len(d.attempts) >= 1 for d in rows)

        await until(attempted, what="both webhooks attempted")
        acme = (await store.stats("acme", t0 - 1)).model_dump(mode="json")
        everyone = (await store.stats(None, t0 - 1)).model_dump(mode="json")
        other = (await store.stats("other", t0 - 1)).model_dump(mode="json")
        later = (await store.stats("acme", time.time())).model_dump(mode="json")
        gauges = await store.metric_gauges()
    after = local_samples()

    # counters and histograms of this process (worker and engine ran here)
    for status, n in (("succeeded", 2), ("failed", 1), ("canceled", 1)):
        assert delta(after, before, "reelflow_executions_total", status=status) == n, status
    durations = [seconds_between(s["created_at"], s["finished_at"]) for s in states]
    assert delta(after, before, "reelflow_execution_duration_seconds_count") == 4
    assert delta(after, before, "reelflow_execution_duration_seconds_sum") == pytest.approx(sum(durations), abs=0.02)
    assert delta(after, before, "reelflow_job_duration_seconds_count", type="generate-image", provider="sim") == 1
    assert delta(after, before, "reelflow_job_duration_seconds_count", type="generate-video", provider="sim") == 3
    assert delta(after, before, "reelflow_provider_cost_usd_total", provider="sim") == pytest.approx(0.6)
    assert delta(after, before, "reelflow_webhook_deliveries_total", outcome="delivered") == 1
    assert delta(after, before, "reelflow_webhook_deliveries_total", outcome="failed") == 1  # a retry follows
    assert delta(after, before, "reelflow_webhook_deliveries_total", outcome="gave_up") == 0
    assert len(good.hits) == 1 and len(bad.hits) == 1

    # the tenant's figures
    finished = durations[:3]  # canceled is left out of rates and times
    jobs = [j for s in states[:3] for j in s["jobs"]]
    job_seconds = [seconds_between(j["started_at"], j["finished_at"]) for j in jobs]
    assert acme["tenant"] == "acme"
    assert acme["executions"]["by_status"] == {"succeeded": 2, "failed": 1, "canceled": 1}
    assert acme["executions"]["success_rate"] == 0.6667
    assert acme["executions"]["p50_s"] == pytest.approx(percentile(finished, 0.5), abs=0.01)
    assert acme["executions"]["p95_s"] == pytest.approx(percentile(finished, 0.95), abs=0.01)
    assert acme["queue_depth"] == 0
    assert acme["jobs"] == {"by_status": {"succeeded": 3, "failed": 1, "canceled": 1}}
    [sim] = acme["providers"]
    assert {k: sim[k] for k in ("provider", "requests", "succeeded", "failed", "success_rate")} == {
        "provider": "sim", "requests": 4, "succeeded": 3, "failed": 1, "success_rate": 0.75,
    }  # fmt: skip
    assert sim["p50_s"] == pytest.approx(percentile(job_seconds, 0.5), abs=0.01)
    assert acme["webhooks"] == {"delivered": 1, "failed": 0, "pending": 1, "success_rate": 1.0}
    assert acme["spend_usd_month"] == pytest.approx(0.6)
    assert acme["workers"] == {"live": 1, "slots_in_use": 0}
    assert datetime.fromisoformat(acme["since"]).timestamp() == pytest.approx(t0 - 1, abs=0.001)
    assert everyone == {**acme, "tenant": None}  # the only tenant with work

    # another tenant sees nothing of it; a window starting now holds only what is still open
    assert other == {
        "tenant": "other",
        "since": acme["since"],
        "executions": {"by_status": {}, "success_rate": None, "p50_s": None, "p95_s": None},
        "queue_depth": 0,
        "jobs": {"by_status": {}},
        "providers": [],
        "webhooks": {"delivered": 0, "failed": 0, "pending": 0, "success_rate": None},
        "spend_usd_month": 0.0,
        "workers": {"live": 1, "slots_in_use": 0},  # workers are shared: the count is not the tenant's
    }
    assert later["executions"]["by_status"] == {} and later["jobs"]["by_status"] == {}
    assert later["providers"] == [] and later["webhooks"]["pending"] == 1

    # the gauges the API reads at scrape time
    assert gauges == {
        "jobs": {"succeeded": 3, "failed": 1, "canceled": 1},
        "circuits": [],  # sim is not a paid provider: no circuit
        "queue_depth": 0,
        "workers_live": 1,
        "worker_slots": 7,
        "slots_in_use": 0,
    }


async def test_queue_depth_counts_claimable_jobs_only(engine: Engine, store: Store) -> None:
    plan = {"jobs": [sim_job("a"), sim_job("b"), sim_job("c", depends_on=["a"])]}
    await engine.submit(plan, tenant="acme")
    stats = await store.stats("acme", time.time() - 60)
    assert stats.queue_depth == 2  # c waits on a
    assert stats.jobs.by_status == {"queued": 2, "waiting": 1}
    assert stats.executions.by_status == {"queued": 1}
    assert stats.executions.success_rate is None
    gauges = await store.metric_gauges()
    assert gauges["queue_depth"] == 2 and gauges["jobs"] == {"queued": 2, "waiting": 1}
    assert gauges["workers_live"] == 0 and gauges["worker_slots"] == 0
    assert (await store.stats("other", time.time() - 60)).queue_depth == 0


# ---------------------------------------------------------------------------------------- the API
def wait_done(http: httpx.Client, eid: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state: dict[str, Any] = http.get(f"/v1/executions/{eid}").json()
        if state["status"] in ("succeeded", "failed", "canceled"):
            return state
        assert time.monotonic() < deadline, f"execution {eid} still {state['status']}"
        time.sleep(0.05)


def replicate_outcomes(fake: FakeReplicate) -> dict[str, int]:
    """What the fake saw of our API requests, classified as the metrics classify them."""
    counts: dict[str, int] = {}
    for r in fake.requests:
        if r["path"].startswith("/v1/"):
            outcome = metrics.request_outcome(r.get("status"))  # a dropped connection has no status: error
            counts[outcome] = counts.get(outcome, 0) + 1
    return counts


@pytest.mark.sqlite_only
def test_metrics_endpoint_and_stats_after_a_workload_through_the_api(
    tmp_path: Path, receivers: tuple[Receiver, Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    good, _ = receivers
    with FakeReplicate(latency_s=0.2, queue_s=0.0) as fake:
        monkeypatch.setenv("REPLICATE_API_TOKEN", fake.token)
        fake.drop_connection_next(1)  # the first request gets no answer: a transport error, the job retries
        fake.fail_next_creates_with(429, 1, retry_after=0.05)  # then one throttled create, sent again in place
        settings = server_settings(tmp_path, allow_private_urls=True, callbacks=False)
        replicate = ReplicateProvider(fake.token, fake.base_url, poll_initial_s=0.05, poll_max_s=0.2)
        providers = Providers({"sim": SimProvider(), "replicate": replicate})
        app = create_app(settings, workers=1, deliver_webhooks=True, providers=providers)
        with ApiServer(settings, app=app) as api:
            acme, other = api.new_key("acme"), api.new_key("other")
            with api.client(acme.api_key) as http, api.client(other.api_key) as http_other:
                first = http.get("/metrics")
                assert first.status_code == 200
                assert first.headers["content-type"].startswith("text/plain; version=0.0.4")
                _, before = parse(first.text)

                plans = [
                    {
                        "jobs": [
                            sim_job("a", "sim/image", latency_s=0.05, cost_usd=0.1),
                            sim_job("b", image="$a", latency_s=0.05, cost_usd=0.2),
                        ],
                        "webhook": good.url,
                    },
                    {"jobs": [sim_job("r", fail_times=1, cost_usd=0.3)]},
                    {"jobs": [sim_job("f", fail="permanent")]},
                    {
                        "jobs": [
                            {"id": "clip", "type": "generate-video", "model": "replicate/bytedance/seedance-1-pro",
                             "params": {"prompt": "slow waves", "duration": 5}},
                        ]
                    },
                ]  # fmt: skip
                ids = [http.post("/v1/executions", json=p).json()["id"] for p in plans]
                states = [wait_done(http, e) for e in ids]
                assert [s["status"] for s in states] == ["succeeded", "succeeded", "failed", "succeeded"], [
                    s["error"] for s in states
                ]
                deadline = time.monotonic() + 20
                while [d["status"] for d in http.get("/v1/webhook-deliveries").json()["data"]] != ["delivered"]:
                    assert time.monotonic() < deadline, "the webhook was not delivered"
                    time.sleep(0.05)
                families, after = parse(http.get("/metrics").text)
                stats = http.get("/v1/stats").json()
                stats_other = http_other.get("/v1/stats", params={"since": "1h"}).json()
                bad = [http.get("/v1/stats", params={"since": s}) for s in ("soon", "2999-01-01T00:00:00Z", "0m")]
                unauthenticated = httpx.get(f"{api.url}/v1/stats")
                cli = subprocess.run(
                    [*CLI, "stats", "--server", api.url, "--json"],
                    env={**os.environ, "REELFLOW_API_KEY": acme.api_key},
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
        clip = states[3]["jobs"][0]

    # every family is exposed, the store's gauges included
    for name in (
        "reelflow_executions", "reelflow_execution_duration_seconds", "reelflow_job_duration_seconds",
        "reelflow_provider_requests", "reelflow_provider_latency_seconds", "reelflow_provider_cost_usd",
        "reelflow_webhook_deliveries", *STORE_GAUGES,
    ):  # fmt: skip
        assert name in families, name
    # executions, by how they ended, and their durations
    assert delta(after, before, "reelflow_executions_total", status="succeeded") == 3
    assert delta(after, before, "reelflow_executions_total", status="failed") == 1
    assert delta(after, before, "reelflow_executions_total", status="canceled") == 0
    durations = [seconds_between(s["created_at"], s["finished_at"]) for s in states]
    assert delta(after, before, "reelflow_execution_duration_seconds_count") == 4
    assert delta(after, before, "reelflow_execution_duration_seconds_sum") == pytest.approx(sum(durations), abs=0.02)
    assert delta(after, before, "reelflow_execution_duration_seconds_bucket", le="+Inf") == 4
    # jobs: one histogram entry per finished job, not per attempt; costs as the providers billed them
    for job_type, provider, n in (("generate-image", "sim", 1), ("generate-video", "sim", 3),
                                  ("generate-video", "replicate", 1)):  # fmt: skip
        assert delta(after, before, "reelflow_job_duration_seconds_count", type=job_type, provider=provider) == n
    assert clip["attempts"] == 2 and clip["cost"]["actual"] > 0
    assert delta(after, before, "reelflow_provider_cost_usd_total", provider="sim") == pytest.approx(0.6)
    assert delta(after, before, "reelflow_provider_cost_usd_total", provider="replicate") == pytest.approx(
        clip["cost"]["actual"]
    )
    # provider requests exactly as the fake Replicate saw them: one dropped, one throttled, the rest fine
    seen = replicate_outcomes(fake)
    assert seen["error"] == 1 and seen["throttled"] == 1 and seen["ok"] >= 2 and "rejected" not in seen
    for outcome in ("ok", "throttled", "error", "rejected"):
        got = delta(after, before, "reelflow_provider_requests_total", provider="replicate", outcome=outcome)
        assert got == seen.get(outcome, 0), outcome
    assert delta(after, before, "reelflow_provider_latency_seconds_count", provider="replicate") == sum(seen.values())
    assert delta(after, before, "reelflow_provider_requests_total", provider="sim", outcome="ok") == 0  # no HTTP
    # the webhook
    assert delta(after, before, "reelflow_webhook_deliveries_total", outcome="delivered") == 1
    assert delta(after, before, "reelflow_webhook_deliveries_total", outcome="failed") == 0
    assert len(good.hits) == 1
    # gauges from the database
    assert value(after, "reelflow_jobs", status="succeeded") == 4
    assert value(after, "reelflow_jobs", status="failed") == 1
    assert value(after, "reelflow_queue_depth") == 0
    assert value(after, "reelflow_workers_live") == 1
    assert value(after, "reelflow_worker_slots") == 1000  # the embedded worker's concurrency
    assert value(after, "reelflow_worker_slots_in_use") == 0

    # GET /v1/stats: the key's tenant, the last 24 h
    assert stats["tenant"] == "acme"
    assert stats["executions"]["by_status"] == {"succeeded": 3, "failed": 1}
    assert stats["executions"]["success_rate"] == 0.75
    assert stats["executions"]["p50_s"] == pytest.approx(percentile(durations, 0.5), abs=0.01)
    assert stats["executions"]["p95_s"] == pytest.approx(percentile(durations, 0.95), abs=0.01)
    assert stats["jobs"] == {"by_status": {"succeeded": 4, "failed": 1}}
    rows = [(p["provider"], p["requests"], p["succeeded"], p["failed"], p["success_rate"]) for p in stats["providers"]]
    assert rows == [("replicate", 1, 1, 0, 1.0), ("sim", 4, 3, 1, 0.75)]
    assert stats["webhooks"] == {"delivered": 1, "failed": 0, "pending": 0, "success_rate": 1.0}
    assert stats["spend_usd_month"] == pytest.approx(0.6 + clip["cost"]["actual"])
    assert stats["queue_depth"] == 0 and stats["workers"] == {"live": 1, "slots_in_use": 0}
    assert stats_other["tenant"] == "other" and stats_other["executions"]["by_status"] == {}
    assert stats_other["providers"] == [] and stats_other["spend_usd_month"] == 0
    assert stats_other["webhooks"] == {"delivered": 0, "failed": 0, "pending": 0, "success_rate": None}
    for response, says in zip(
        bad,
        ("got 'soon'", "since is in the future: '2999-01-01T00:00:00Z'", "since must be a positive duration"),
        strict=True,
    ):
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert says in problem["detail"]
        assert problem["errors"] == [{"loc": ["query", "since"], "msg": problem["detail"]}]
    assert unauthenticated.status_code == 401

    # `reelflow stats --server`: the same figures, next to the usage it always printed
    assert cli.returncode == 0, cli.stderr
    printed = json.loads(cli.stdout)
    assert printed["usage"][0]["tenant"] == "acme" and printed["usage"][0]["executions"] == 4
    assert {k: v for k, v in printed["stats"].items() if k != "since"} == {
        k: v for k, v in stats.items() if k != "since"
    }


# ---------------------------------------------------------------------------------------- the command line
@pytest.mark.sqlite_only
async def test_reelflow_stats_prints_the_figures_locally(
    engine: Engine, running_worker: WorkerFactory, worker_env: dict[str, str], tmp_path: Path
) -> None:
    ok = await engine.submit({"jobs": [sim_job("a", latency_s=0.05, cost_usd=0.25)]}, tenant="acme")
    bad = await engine.submit({"jobs": [sim_job("f", fail="permanent")]}, tenant="zed")
    async with running_worker():
        for e in (ok, bad):
            await engine.wait(e, timeout=20, poll_s=0.05)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "stats", *args], env=worker_env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    as_json, shown, refused = await asyncio.gather(
        asyncio.to_thread(cli, "--json"), asyncio.to_thread(cli), asyncio.to_thread(cli, "--since", "lately")
    )
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert {"usage", "queue", "limits", "stats"} <= set(data)  # the keys it always had, and the figures
    s = data["stats"]
    assert s["tenant"] is None  # locally: every tenant
    assert s["executions"]["by_status"] == {"succeeded": 1, "failed": 1}
    assert s["executions"]["success_rate"] == 0.5
    assert s["providers"][0]["provider"] == "sim" and s["providers"][0]["requests"] == 2
    assert s["spend_usd_month"] == 0.25 and s["queue_depth"] == 0

    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "success rate: 50.0%" in text
    assert f"p50 {s['executions']['p50_s']:.2f} s, p95 {s['executions']['p95_s']:.2f} s" in text
    assert "queue depth: 0" in text
    assert "webhooks: delivered 0, failed 0, pending 0 (delivery rate n/a)" in text
    assert "spend this month: $0.2500" in text
    assert "sim" in text and "50.0%" in text  # the providers table
    assert "usage" in text  # the usage table is still printed

    assert refused.returncode == 2
    assert "--since" in refused.stderr and "lately" in refused.stderr


@pytest.mark.sqlite_only
async def test_worker_serves_its_own_metrics_without_the_store_gauges(
    engine: Engine, worker_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    eid = await engine.submit({"jobs": [sim_job("a", latency_s=0.05, cost_usd=0.5)]})
    proc = subprocess.Popen(
        [*CLI, "worker", "--concurrency", "3"],
        env={**worker_env, "REELFLOW_METRICS_PORT": str(port), "REELFLOW_METRICS_HOST": "127.0.0.1"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        state = await engine.wait(eid, timeout=30, poll_s=0.05)
        assert state["status"] == "succeeded"
        async with httpx.AsyncClient() as http:
            text = ""
            for _ in range(100):  # the execution's counter lands once the worker's transaction commits
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                if 'reelflow_executions_total{status="succeeded"} 1.0' in text:
                    break
                await asyncio.sleep(0.05)
        families, samples = parse(text)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(proc.communicate, None, 30)
    assert proc.returncode == 0, stderr
    assert value(samples, "reelflow_executions_total", status="succeeded") == 1  # a fresh process: exact
    assert value(samples, "reelflow_job_duration_seconds_count", type="generate-video", provider="sim") == 1
    assert value(samples, "reelflow_provider_cost_usd_total", provider="sim") == 0.5
    assert "process_cpu_seconds_total" in {n for n, _ in samples}
    assert not families & STORE_GAUGES  # shared state is the API's to report, once


@pytest.mark.sqlite_only
def test_worker_refuses_a_metrics_port_in_use(worker_env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [*CLI, "worker", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
            env=worker_env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}: Address already in use" in proc.stderr
