"""The parts of the Store interface the worker calls without asking whether they exist: `finish_and_claim`
(the hand-off from a job to the dependents it releases) and `wait_for_work`, the same on both stores."""

from __future__ import annotations

import asyncio
import json
import time

from conftest import sim_job
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.store import open_store
from reelflow.store.base import JobOutcome
from reelflow.store.sqlite import SQLiteStore


async def test_finish_and_claim_hands_off_only_the_dependents_it_released(engine: Engine, store: SQLiteStore) -> None:
    store.configure_limits(provider_caps={"capped": 5})
    plan = {"jobs": [sim_job("root"), *(sim_job(f"d{i}", depends_on=["root"]) for i in range(4))]}
    eid = await engine.submit(plan)
    other = await engine.submit({"jobs": [sim_job("x")]})
    [root] = await store.claim("w", 1, 30)
    assert root.key == "root" and root.execution_id == eid

    promoted, claimed = await store.finish_and_claim(
        [JobOutcome(root.id, "w", "succeeded", result={"url": "r"})], None, "w", 3, 30
    )
    assert sorted(promoted) == ["d0", "d1", "d2", "d3"]
    assert len(claimed) == 3 and all(c.execution_id == eid and c.key.startswith("d") for c in claimed)
    assert all(c.dep_results == {"root": {"url": "r"}} and c.attempts == 1 for c in claimed)
    state = await engine.get(eid)
    assert sorted(j.status for j in state.jobs) == ["queued", "running", "running", "running", "succeeded"]
    assert [j.status for j in (await engine.get(other)).jobs] == ["queued"]  # not the hand-off's to take

    # nothing to finish: nothing written, nothing claimed
    assert await store.finish_and_claim([], None, "w", 5, 30) == ([], [])
    # an outcome for a lease this worker no longer holds changes nothing
    stale = JobOutcome(root.id, "w", "failed", error="late")
    assert await store.finish_and_claim([stale], None, "w", 5, 30) == ([], [])


async def test_finish_and_claim_stays_within_the_tenant_cap(engine: Engine, store: SQLiteStore) -> None:
    store.configure_limits(tenant_caps={"t": 2})
    plan = {"jobs": [sim_job("root"), *(sim_job(f"d{i}", depends_on=["root"]) for i in range(4))]}
    eid = await engine.submit(plan, tenant="t")
    await engine.submit({"jobs": [sim_job("x")]}, tenant="t")
    held = {c.key: c for c in await store.claim("w", 5, 30)}
    assert sorted(held) == ["root", "x"]  # 2 of 2
    promoted, claimed = await store.finish_and_claim(
        [JobOutcome(held["root"].id, "w", "succeeded", result={})], None, "w", 5, 30
    )
    assert len(promoted) == 4 and len(claimed) == 1  # the root's place only: x still runs
    assert (await store.usage("t"))["jobs_running"] == 2
    assert sum(j.status == "queued" for j in (await engine.get(eid)).jobs) == 3


async def test_wait_for_work_answers_a_submission_of_this_process_at_once(engine: Engine, store: SQLiteStore) -> None:
    await store.wait_for_work(0.05)  # whatever earlier writes announced
    assert await store.wait_for_work(0.1) is False  # nothing happened
    waiter = asyncio.create_task(store.wait_for_work(5))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await engine.submit({"jobs": [sim_job("a")]})
    assert await asyncio.wait_for(waiter, 5) is True
    assert time.monotonic() - started < 1.0


async def test_the_shared_token_bucket_paces_and_a_429_holds_everyone(settings: Settings) -> None:
    """Two stores on one database share each provider's bucket (the pacing rules are written once)."""
    a, b = open_store(settings.database_url), open_store(settings.database_url)
    try:
        await a.migrate()
        assert await a.take_tokens("free", 7, None) == (7, 0.0)
        granted, wait = await a.take_tokens("p", 10, 6100.0)  # 100 a second, a bucket of 100
        t_first = time.monotonic()
        assert granted == 0 and 0 < wait <= 0.011
        await asyncio.sleep(0.2)
        totals = await asyncio.gather(*(s.take_tokens("p", 100, 6100.0) for s in (a, b, a, b)))
        got = sum(g for g, _ in totals)
        assert 15 <= got <= (time.monotonic() - t_first) * 100 + 1, totals  # never more than was refilled
        await b.report_throttle("p", 0.3)
        await b.report_throttle("p", 0.1)  # a shorter hold never shortens a longer one
        granted, wait = await a.take_tokens("p", 5, 6100.0)
        assert granted == 0 and 0.2 < wait <= 0.3
        paces = await a.provider_paces()
        assert set(paces) == {"p"} and paces["p"][0] > time.time()
    finally:
        await a.close()
        await b.close()


async def test_the_hand_off_logs_its_events_after_the_outcome_and_webhooks_see_it_in_that_order(
    store: SQLiteStore, settings: Settings
) -> None:
    """PostgreSQL leases the dependents right after the outcome is written when no webhook is watching; the log is
    the same either way, and a delivery for the outcome shows the dependents still queued."""
    plan: dict[str, object] = {"jobs": [sim_job("root"), sim_job("d0", depends_on=["root"]),
                                        sim_job("d1", depends_on=["root"])]}  # fmt: skip
    engine = Engine(store, settings.model_copy(update={"allow_private_urls": True}))
    quiet = await engine.submit(plan)
    watched = await engine.submit({**plan, "options": {"webhook_events": ["job.*"]}}, webhook="http://127.0.0.1:9/hook")
    for eid in (quiet, watched):
        [root] = await store.claim("w", 1, 30, executions=[eid])
        promoted, claimed = await store.finish_and_claim(
            [JobOutcome(root.id, "w", "succeeded", result={"url": "r"})], None, "w", 5, 30
        )
        assert sorted(promoted) == ["d0", "d1"] and sorted(c.key for c in claimed) == ["d0", "d1"]
        tail = [(e.type, e.job_key) for e in await store.events(eid)][-6:]
        assert tail == [("job.succeeded", "root"), ("job.queued", "d0"), ("job.queued", "d1"),
                        ("execution.progress", None), ("job.running", "d0"), ("job.running", "d1")]  # fmt: skip
    sent = {d.event_type: d.payload for d in await store.claim_deliveries("w", 100, 30, executions=[watched])}
    payload = json.loads(sent["job.succeeded"])
    assert {j["id"]: j["status"] for j in payload["data"]["jobs"]} == {"root": "succeeded", "d0": "queued",
                                                                       "d1": "queued"}  # fmt: skip
