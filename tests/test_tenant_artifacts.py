"""Tenants touch only their own artifacts (issue 12, item 3).

A job parameter that links to one of our artifacts must name one the submitting tenant produced: checked at
submission where the value is literal (API, CLI and SDK all pass through `Engine.submit`), and in the worker
after references are resolved, whichever provider runs the job. Another tenant's artifact and a made-up key
get exactly the same answer, and nothing is stored or sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

import test_storage_s3
from apiserver import ApiServer, module_database, server_settings
from conftest import WorkerFactory
from reelflow.config import Settings
from reelflow.engine.ownership import NOT_FOUND
from reelflow.engine.scheduler import Engine
from reelflow.engine.worker import Worker
from reelflow.errors import PlanError
from reelflow.providers.base import ProgressReporter, ProviderResult, Task
from reelflow.providers.local import LocalProvider
from reelflow.providers.registry import Providers
from reelflow.storage import LocalStorage, artifact_key
from reelflow.store.base import Store
from reelflow.store.sqlite import SQLiteStore, sqlite_path

MADE_UP_KEY = "00/" + "0" * 64 + ".png"
TERMINAL = {"succeeded", "failed", "canceled"}


def still(job_key: str = "still", prompt: str = "a red square") -> dict[str, Any]:
    return {
        "id": job_key, "type": "generate-image", "model": "local/image",
        "params": {"prompt": prompt, "width": 64, "height": 64},
    }


def spellings(url: str, key: str) -> dict[str, str]:
    """The ways to write one API artifact link that all reach the same stored file."""
    origin = url.split("/v1/artifacts/")[0]
    head, name = key.split("/")
    return {
        "plain": url,
        "signed": f"{url}?exp=4102444800&sig=0123abcd",
        "dot segment": f"{origin}/v1/artifacts/{head}/./{name}",
        "dot-dot": f"{origin}/v1/artifacts/{head}/x/../{name}",
        "encoded slash": f"{origin}/v1/artifacts/{head}%2F{name}",
        "encoded path": f"{origin}/v1%2Fartifacts%2F{head}%2F{name}",
        "user info, fragment": url.replace("://", "://user:pw@", 1) + "#t=1",
        "upper-case scheme": url.replace("http://", "HTTP://", 1),
    }


# --------------------------------------------------------------------------- recognising our links
def test_every_spelling_that_reaches_a_stored_key_is_recognised(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "artifacts", "http://127.0.0.1:8000")
    url = storage.url(MADE_UP_KEY)
    assert {name: artifact_key(storage, link) for name, link in spellings(url, MADE_UP_KEY).items()} == {
        name: MADE_UP_KEY for name in spellings(url, MADE_UP_KEY)
    }
    assert artifact_key(storage, f"http://127.0.0.1:80/v1/artifacts/{MADE_UP_KEY}") is None  # another port
    assert artifact_key(storage, "http://127.0.0.1:8000/v1/artifacts/../../etc/passwd") is None
    assert artifact_key(storage, f"https://elsewhere.example/v1/artifacts/{MADE_UP_KEY}") is None
    assert artifact_key(storage, f"$$http://127.0.0.1:8000/v1/artifacts/{MADE_UP_KEY}") is None  # an escaped '$'
    assert artifact_key(storage, "http://[::1/x") is None  # unparseable: not ours, no exception
    assert artifact_key(storage, 42) is None
    default_port = LocalStorage(tmp_path / "artifacts", "https://media.example")
    assert artifact_key(default_port, f"HTTPS://Media.Example.:443/v1/artifacts/{MADE_UP_KEY}") == MADE_UP_KEY


# --------------------------------------------------------------------------- through the API
@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("tenant-artifacts")
    with module_database(request.param, root) as url:
        with ApiServer(server_settings(root, database_url=url), workers=1) as server:
            yield server


def tenant(api: ApiServer) -> tuple[str, httpx.Client]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    return name, api.client(api.new_key(name).api_key)


def run_plan(http: httpx.Client, body: dict[str, Any], timeout_s: float = 60.0) -> dict[str, Any]:
    r = http.post("/v1/executions", json=body)
    assert r.status_code == 202, r.text
    execution_id = r.json()["id"]
    deadline = time.monotonic() + timeout_s
    while True:
        state: dict[str, Any] = http.get(f"/v1/executions/{execution_id}").json()
        if state["status"] in TERMINAL:
            return state
        assert time.monotonic() < deadline, f"{execution_id} still {state['status']}"
        time.sleep(0.05)


def made_artifact(http: httpx.Client, prompt: str = "a red square") -> tuple[str, str]:
    state = run_plan(http, {"jobs": [still(prompt=prompt)]})
    assert state["status"] == "succeeded", state["error"]
    result = state["jobs"][0]["result"]
    return result["url"], result["key"]


def executions_of(api: ApiServer, name: str) -> int:
    return int(api.query("SELECT count(*) FROM executions WHERE tenant = ?", name)[0][0])


def test_another_tenants_artifact_is_refused_exactly_like_a_made_up_one(api: ApiServer) -> None:
    _, a = tenant(api)
    b_name, b = tenant(api)
    with a, b:
        a_url, a_key = made_artifact(a)
        b_url, _ = made_artifact(b, prompt="a blue square")  # B has artifacts of its own
        made_up_url = a_url.replace(a_key, MADE_UP_KEY)
        before = executions_of(api, b_name)
        theirs = spellings(a_url, a_key)
        nobodys = spellings(made_up_url, MADE_UP_KEY)
        for name in theirs:
            plan = {"jobs": [{"id": "copy", "type": "transcode", "params": {"input": theirs[name]}}]}
            other = {"jobs": [{"id": "copy", "type": "transcode", "params": {"input": nobodys[name]}}]}
            refused, unknown = b.post("/v1/executions", json=plan), b.post("/v1/executions", json=other)
            assert refused.status_code == unknown.status_code == 422, (name, refused.text)
            assert refused.json() == unknown.json(), name
            assert refused.json()["detail"] == f"invalid plan: jobs[0].params.input: job 'copy': {NOT_FOUND}"
            loc, msg = ["jobs", 0, "params", "input"], f"job 'copy': {NOT_FOUND}"
            assert refused.json()["errors"] == [{"loc": loc, "msg": msg}]

        # overlay and a list parameter: only the foreign values are named, each with its job and place
        mixed = {"jobs": [
            {"id": "pip", "type": "overlay", "params": {"video": b_url, "overlay": a_url}},
            {"id": "join", "type": "concat", "params": {"videos": [b_url, theirs["signed"], made_up_url]}},
        ]}
        r = b.post("/v1/executions", json=mixed)
        assert r.status_code == 422, r.text
        assert [e["loc"] for e in r.json()["errors"]] == [
            ["jobs", 0, "params", "overlay"], ["jobs", 1, "params", "videos", 1], ["jobs", 1, "params", "videos", 2],
        ]
        assert "jobs[1].params.videos[1]: job 'join': artifact not found" in r.json()["detail"]
        assert executions_of(api, b_name) == before, "a refused plan stores nothing"

        # reading it directly: 404 for A's key as for a made-up one (the detail names the key asked for)
        for key in (a_key, MADE_UP_KEY):
            got = b.get(f"/v1/artifacts/{key}")
            assert got.status_code == 404 and got.json()["detail"] == f"artifact {key!r} not found"


def test_a_tenant_uses_its_own_artifact_in_any_spelling_and_through_references(api: ApiServer) -> None:
    _, a = tenant(api)
    with a:
        url, key = made_artifact(a)
        forms = spellings(url, key)
        plan = {"jobs": [
            {"id": "plain", "type": "transcode", "params": {"input": forms["plain"], "format": "mp4"}},
            {"id": "signed", "type": "transcode", "params": {"input": forms["signed"], "format": "mp4"}},
            {"id": "encoded", "type": "thumbnail", "params": {"video": forms["encoded slash"], "width": 32}},
            {"id": "ref", "type": "thumbnail", "params": {"video": "$plain", "width": 32}},  # checked at run time
        ]}
        state = run_plan(a, plan)
        assert state["status"] == "succeeded", state["error"]
        assert {j["id"]: j["attempts"] for j in state["jobs"]} == {"plain": 1, "signed": 1, "encoded": 1, "ref": 1}
        # the same bytes either way: the spelling changes nothing about the input
        assert state["jobs"][0]["result"]["key"] == state["jobs"][1]["result"]["key"]


def test_the_same_bytes_made_by_two_tenants_belong_to_both(api: ApiServer) -> None:
    """Keys are content addresses: when B makes the very bytes A made, B owns that key too (ownership is per
    tenant and key), and may use it."""
    _, a = tenant(api)
    _, b = tenant(api)
    with a, b:
        a_url, a_key = made_artifact(a, prompt="the same square")
        _, b_key = made_artifact(b, prompt="the same square")
        if a_key != b_key:
            pytest.skip("ffmpeg made different bytes for one prompt here")
        state = run_plan(b, {"jobs": [{"id": "copy", "type": "transcode", "params": {"input": a_url}}]})
        assert state["status"] == "succeeded", state["error"]


# --------------------------------------------------------------------------- the engine: CLI, SDK, workers
class FieldsProvider:
    """A remote model (registered as `replicate`) whose answer carries fields of our choosing: a `run` model
    is free to name any URL in its output. Records every task submitted to it."""

    name = "replicate"

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self.submitted: list[Task] = []

    async def submit(self, task: Task) -> str:
        self.submitted.append(task)
        return f"p-{len(self.submitted)}"

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        return ProviderResult(outputs=[], fields=dict(self.fields), cost_usd=0.0)

    async def cancel(self, task: Task, provider_id: str) -> None:
        return None


@pytest.fixture
def replicate_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_test")


async def own_artifact(engine: Engine, running_worker: WorkerFactory, tenant: str, prompt: str) -> dict[str, Any]:
    eid = await engine.submit({"jobs": [still(prompt=prompt)]}, tenant=tenant)
    async with running_worker(providers_={"local": LocalProvider()}):
        state = await engine.wait(eid, tenant=tenant, timeout=60)
    assert state["status"] == "succeeded", state["error"]
    result: dict[str, Any] = state["jobs"][0]["result"]
    return result


LEAK_PLAN = {"jobs": [
    {"id": "leak", "type": "run", "model": "replicate/acme/leaker", "params": {"input": {}}},
    {"id": "copy", "type": "transcode", "params": {"input": "$leak.link"}},
    {"id": "send", "type": "run", "model": "replicate/acme/user", "params": {"input": {"image": ["$leak.link"]}}},
], "options": {"on_failure": "continue", "cache": False}}


async def run_leak(
    engine: Engine, running_worker: WorkerFactory, tenant: str, link: str
) -> tuple[dict[str, Any], FieldsProvider]:
    fake = FieldsProvider({"link": link})
    eid = await engine.submit(LEAK_PLAN, tenant=tenant)
    async with running_worker(providers_={"local": LocalProvider(), "replicate": fake}):
        state = await engine.wait(eid, tenant=tenant, timeout=60)
    return {j["id"]: j for j in state["jobs"]}, fake


async def test_a_literal_link_is_refused_at_submission_on_every_path_and_nothing_is_stored(
    engine: Engine, running_worker: WorkerFactory, store: Store, replicate_token: None
) -> None:
    """`Engine.submit` is where the CLI, the SDK's local engine and the API all pass: a `run` job's nested
    input (sent to the provider as given) is checked like any parameter."""
    theirs = await own_artifact(engine, running_worker, "a", "a sunset")
    made_up = theirs["url"].replace(theirs["key"], MADE_UP_KEY)
    answers = []
    for link in (theirs["url"], made_up):
        plan = {"jobs": [{"id": "send", "type": "run", "model": "replicate/acme/user",
                          "params": {"input": {"images": [{"url": link}]}}}]}
        with pytest.raises(PlanError) as caught:
            await engine.submit(plan, tenant="b")
        answers.append(str(caught.value))
    assert answers[0] == answers[1] == f"invalid plan: jobs[0].params.input.images[0].url: job 'send': {NOT_FOUND}"
    page = await store.list_executions("b", status=None, created_after=None, limit=10, cursor=None)
    assert page.data == [] and page.next_cursor is None
    # the owner passes
    plan = {"jobs": [{"id": "send", "type": "run", "model": "replicate/acme/user",
                      "params": {"input": {"images": [{"url": theirs["url"]}]}}}]}
    assert await engine.submit(plan, tenant="a")


async def test_a_reference_naming_another_tenants_artifact_fails_permanently_before_anything_is_sent(
    engine: Engine, running_worker: WorkerFactory, store: Store, replicate_token: None
) -> None:
    """A model's output names A's artifact; B's jobs read it through references. Neither the local copy nor
    the remote model gets it: both jobs fail at once (one attempt), with the words of the submission refusal,
    and a made-up key gives the very same errors."""
    theirs = await own_artifact(engine, running_worker, "a", "a sunset")
    made_up = theirs["url"].replace(theirs["key"], MADE_UP_KEY)
    errors = []
    for link in (theirs["url"], made_up):
        jobs, fake = await run_leak(engine, running_worker, "b", link)
        assert jobs["leak"]["status"] == "succeeded"
        assert (jobs["copy"]["status"], jobs["copy"]["attempts"]) == ("failed", 1)
        assert (jobs["send"]["status"], jobs["send"]["attempts"]) == ("failed", 1)
        assert [t.job_id for t in fake.submitted] == ["leak"], "the link never reached the provider"
        errors.append((jobs["copy"]["error"], jobs["send"]["error"]))
    assert errors[0] == errors[1] == (
        f"params.input: job 'copy': {NOT_FOUND}",
        f"params.input.image[0]: job 'send': {NOT_FOUND}",
    )
    assert await store.owned_artifacts("b", {theirs["key"]}) == set()


async def test_a_reference_naming_the_tenants_own_artifact_runs(
    engine: Engine, running_worker: WorkerFactory, store: Store, replicate_token: None
) -> None:
    mine = await own_artifact(engine, running_worker, "a", "a sunset")
    for link in (mine["url"], mine["url"] + "?exp=1&sig=x"):
        jobs, fake = await run_leak(engine, running_worker, "a", link)
        assert {j: jobs[j]["status"] for j in jobs} == {"leak": "succeeded", "copy": "succeeded", "send": "succeeded"}
        assert fake.submitted[-1].params["input"] == {"image": [link]}
        assert await store.owned_artifacts("a", {mine["key"], jobs["copy"]["result"]["key"]}) == {
            mine["key"], jobs["copy"]["result"]["key"],
        }


async def test_a_job_row_naming_another_tenants_artifact_fails_at_run_time(
    engine: Engine, running_worker: WorkerFactory, settings: Settings
) -> None:
    """The worker checks literal values too: a job that reaches it with a foreign link some other way (a row
    rewritten behind the engine's back stands for any path we did not think of) fails there, permanently."""
    theirs = await own_artifact(engine, running_worker, "a", "a sunset")
    plan = {"jobs": [still("src"), {"id": "copy", "type": "transcode", "params": {"input": "$src"}}]}
    eid = await engine.submit(plan, tenant="b")
    forged = json.dumps({"input": theirs["url"]})
    if settings.database_url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(settings.database_url)) as conn:
            conn.execute("UPDATE jobs SET params = ? WHERE execution_id = ? AND key = 'copy'", (forged, eid))
    else:
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as pg:
            await pg.execute("UPDATE jobs SET params = %s WHERE execution_id = %s AND key = 'copy'", (forged, eid))
    async with running_worker(providers_={"local": LocalProvider()}):
        state = await engine.wait(eid, tenant="b", timeout=60)
    job = next(j for j in state["jobs"] if j["id"] == "copy")
    assert (job["status"], job["attempts"], job["error"]) == ("failed", 1, f"params.input: job 'copy': {NOT_FOUND}")


def test_the_cli_refuses_such_a_link_without_a_traceback(worker_env: dict[str, str], tmp_path: Path) -> None:
    """`reelflow run` on the local database passes through the same check (as the `default` tenant)."""
    link = f"http://127.0.0.1:8000/v1/artifacts/{MADE_UP_KEY}?exp=1&sig=x"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"jobs": [{"id": "copy", "type": "transcode", "params": {"input": link}}]}))
    proc = subprocess.run(
        [sys.executable, "-m", "reelflow.cli", "run", str(plan)],
        env={**worker_env, "REELFLOW_PUBLIC_URL": "http://127.0.0.1:8000"}, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert f"jobs[0].params.input: job 'copy': {NOT_FOUND}" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- object storage
endpoint = test_storage_s3.endpoint  # the moto S3 server on 127.0.0.1 and its AWS environment: fixtures shared
aws_env = test_storage_s3.aws_env


@pytest.fixture
def s3_settings(tmp_path: Path, aws_env: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with artifacts in a bucket of the moto S3 server on 127.0.0.1 (SQLite for the database)."""
    import boto3

    monkeypatch.setenv("REELFLOW_S3_ENDPOINT_URL", aws_env)
    boto3.client("s3", endpoint_url=aws_env).create_bucket(Bucket="media")
    return Settings(
        database_url=f"sqlite:///{tmp_path}/reelflow.db",
        storage_url="s3://media/out",
        poll_interval_s=0.05,
        _env_file=None,  # type: ignore[call-arg]
    )


async def test_on_object_storage_presigned_and_s3_links_of_another_tenant_are_refused(
    s3_settings: Settings, replicate_token: None
) -> None:
    """A presigned URL is a capability: a remote model handed one fetches the bytes. So B may not pass A's,
    in any spelling, not even to a `run` model (checked at submission), nor through a reference (in the worker,
    whose storage is S3 here): same answers as for a made-up key, and the model never sees it."""
    store = SQLiteStore(s3_settings.database_url)
    await store.migrate()
    engine = Engine(store, s3_settings)

    @contextlib.asynccontextmanager
    async def worker(**providers: Any) -> AsyncIterator[None]:
        w = Worker(store, settings=s3_settings, providers=Providers({"local": LocalProvider(), **providers}))
        task = asyncio.create_task(w.run())
        try:
            yield
        finally:
            w.stop()
            await task

    try:
        eid = await engine.submit({"jobs": [still()]}, tenant="a")
        async with worker():
            state = await engine.wait(eid, tenant="a", timeout=60)
        assert state["status"] == "succeeded", state["error"]
        url, key = state["jobs"][0]["result"]["url"], state["jobs"][0]["result"]["key"]
        storage = await engine.storage()
        made_up_url = await asyncio.to_thread(storage.url, MADE_UP_KEY)
        parsed = urlsplit(url)
        head, name = key.split("/")

        def forms(link: str, k: str) -> dict[str, str]:
            p = urlsplit(link)
            h, n = k.split("/")
            return {
                "presigned": link,
                "unsigned, path style": f"{p.scheme}://{p.netloc}/media/out/{k}",
                "encoded slash": link.replace(f"/{h}/{n}", f"/{h}%2F{n}"),
                "dot segment": link.replace(f"/{h}/{n}", f"/{h}/./{n}"),
                "s3 URL": f"s3://media/out/{k}",
                "API route": f"{s3_settings.public_url}/v1/artifacts/{k}",
            }

        assert parsed.query and f"/media/out/{head}/{name}" in parsed.path, url  # a signed URL of the bucket
        theirs, nobodys = forms(url, key), forms(made_up_url, MADE_UP_KEY)
        for form in theirs:
            answers = []
            for link in (theirs[form], nobodys[form]):
                plan = {"jobs": [{"id": "send", "type": "run", "model": "replicate/acme/user",
                                  "params": {"input": {"image": link}}}]}
                with pytest.raises(PlanError) as caught:
                    await engine.submit(plan, tenant="b")
                answers.append(str(caught.value))
            expected = f"invalid plan: jobs[0].params.input.image: job 'send': {NOT_FOUND}"
            assert answers[0] == answers[1] == expected, form
        assert (await store.list_executions("b", status=None, created_after=None, limit=10, cursor=None)).data == []

        # through a reference, checked by the worker: refused for B, handed on as it is for A
        for tenant_name, expected in (("b", "failed"), ("a", "succeeded")):
            fake = FieldsProvider({"link": url})
            eid = await engine.submit(LEAK_PLAN, tenant=tenant_name)
            async with worker(replicate=fake):
                state = await engine.wait(eid, tenant=tenant_name, timeout=60)
            jobs = {j["id"]: j for j in state["jobs"]}
            assert (jobs["send"]["status"], jobs["copy"]["status"]) == (expected, expected), tenant_name
            if expected == "failed":
                assert jobs["send"]["error"] == f"params.input.image[0]: job 'send': {NOT_FOUND}"
                assert [t.job_id for t in fake.submitted] == ["leak"]
            else:
                assert fake.submitted[-1].params["input"] == {"image": [url]}
    finally:
        await store.close()
