"""Pay once (issue 13): a create whose answer was lost is found again at the provider, not paid for twice.

Replicate: the fake takes a create and then drops or delays its answer; `find_submitted` must find exactly that
prediction in `GET /v1/predictions` (model, input and webhook compared, `next` pages followed only on our own
host). fal: no lookup by input exists, so `find_submitted` says CannotReconcile; its fake loses answers too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.fal import FakeFal
from fakes.replicate import FakeReplicate
from reelflow.providers.base import CannotReconcile, Reconciling, Task, TransientError
from reelflow.providers.fal import FalProvider
from reelflow.providers.replicate import LIST_CLOCK_SKEW_S, ReplicateProvider, same_json

SEEDANCE = "replicate/bytedance/seedance-1-pro"
KLING = "replicate/kwaivgi/kling-v2.1"
HOOK = "https://reelflow.example.com/v1/providers/replicate/callback?execution=ex1&job=clip"


@pytest.fixture
def fake() -> Iterator[FakeReplicate]:
    with FakeReplicate(latency_s=0.3, queue_s=0.05) as f:
        yield f


def make_provider(fake: FakeReplicate, **kw: Any) -> ReplicateProvider:
    return ReplicateProvider(fake.token, fake.base_url, poll_initial_s=0.05, poll_max_s=0.1, **kw)


def task(tmp_path: Path, model: str = SEEDANCE, *, callback_url: str | None = None, **params: Any) -> Task:
    params.setdefault("prompt", "slow waves")
    return Task("ex1", "clip", "generate-video", model, params, 2, tmp_path / "scratch", callback_url=callback_url)


def list_requests(fake: FakeReplicate) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r["method"] == "GET" and r["path"] == "/v1/predictions"]


async def lose_a_create(provider: ReplicateProvider, fake: FakeReplicate, t: Task) -> str:
    """Submit `t` with its answer dropped; the id of the prediction the fake made anyway."""
    before = set(fake.predictions)
    fake.accept_then_drop()
    with pytest.raises(TransientError) as caught:
        await provider.submit(t)
    assert caught.value.not_sent is False  # the request went out: it may have started work
    [pid] = set(fake.predictions) - before
    return pid


# --- Replicate: the fake's list --------------------------------------------------------------------


async def test_the_list_is_newest_first_paged_by_next_and_previous_urls_with_replicates_fields(
    fake: FakeReplicate, tmp_path: Path
) -> None:
    provider = make_provider(fake)
    ids = [await provider.submit(task(tmp_path, prompt=f"p{i}")) for i in range(5)]
    base = float(int(time.time()) - 100)
    for i, pid in enumerate(ids):  # whole seconds apart, so the ISO 8601 bounds below are exact
        fake.predictions[pid].created = base + i
    fake.list_page_size = 2
    url = f"{fake.base_url}/predictions"
    middle = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + 2))
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {fake.token}"}) as http:
        pages = [(await http.get(url)).json()]
        while pages[-1]["next"] is not None:
            assert pages[-1]["next"].startswith(f"{url}?cursor=")
            pages.append((await http.get(pages[-1]["next"])).json())
        back = (await http.get(pages[-1]["previous"])).json()
        after = [(await http.get(url, params={"created_after": middle})).json()]
        after.append((await http.get(after[0]["next"])).json())
        before = (await http.get(url, params={"created_before": middle})).json()
        bad = await http.get(url, params={"created_after": "yesterday"})
        anonymous = await http.get(url, headers={"Authorization": "Bearer r8_wrong"})
    listed = [p for page in pages for p in page["results"]]
    assert [p["id"] for p in listed] == list(reversed(ids)) and len(pages) == 3
    assert pages[0]["previous"] is None
    assert all(set(p) == set(FakeReplicate.LISTED) for p in listed)  # no logs, no webhook in the list
    assert listed[0]["input"] == fake.predictions[ids[4]].input and listed[0]["source"] == "api"
    assert [p["id"] for p in back["results"]] == [ids[2], ids[1]]
    # created_after is "at or after" and stays on the next page; created_before is "before"
    assert "created_after=" in after[0]["next"]
    assert [p["id"] for page in after for p in page["results"]] == [ids[4], ids[3], ids[2]]
    assert [p["id"] for p in before["results"]] == [ids[1], ids[0]] and before["next"] is None
    assert bad.status_code == 400 and anonymous.status_code == 401
    await provider.aclose()


# --- Replicate: lost answers are found -------------------------------------------------------------


async def test_a_dropped_create_is_billed_once_and_found_exactly(fake: FakeReplicate, tmp_path: Path) -> None:
    provider = make_provider(fake)
    assert isinstance(provider, Reconciling)
    since = time.time()
    t = task(tmp_path, duration=5)
    lost = await lose_a_create(provider, fake, t)
    assert fake.creates == 1 and fake.requests_to("/v1/models/")[0].get("status") is None  # taken, not answered
    # neighbours that must not be taken for it: another input, another model, an identical one from long ago
    await provider.submit(task(tmp_path, duration=10))
    await provider.submit(task(tmp_path, KLING, duration=5))
    old = await provider.submit(task(tmp_path, duration=5))
    fake.predictions[old].created -= LIST_CLOCK_SKEW_S + 600
    assert fake.creates == 4
    assert await provider.find_submitted(t, since) == [lost]
    [listing] = list_requests(fake)
    assert listing["authorization"] == f"Bearer {fake.token}"
    assert fake.gets == 0  # the list carries the input; without a callback URL nothing more is read
    fake.predictions[lost].created = since - LIST_CLOCK_SKEW_S + 5  # Replicate's clock behind ours: still found
    assert await provider.find_submitted(t, since) == [lost]
    # the lost prediction runs to the end and the job adopts it
    t.resumed = True
    result = await provider.wait(t, lost, lambda u: None)
    assert result.fields["provider_id"] == lost and fake.creates == 4
    await provider.aclose()


async def test_two_lost_creates_come_back_oldest_first(fake: FakeReplicate, tmp_path: Path) -> None:
    provider = make_provider(fake)
    since = time.time()
    t = task(tmp_path)
    first = await lose_a_create(provider, fake, t)
    second = await lose_a_create(provider, fake, t)
    assert fake.predictions[first].created < fake.predictions[second].created
    assert await provider.find_submitted(t, since) == [first, second]
    await provider.aclose()


async def test_nothing_lost_finds_nothing(fake: FakeReplicate, tmp_path: Path) -> None:
    provider = make_provider(fake)
    since = time.time()
    await provider.submit(task(tmp_path, prompt="someone else's"))
    assert await provider.find_submitted(task(tmp_path), since) == []
    assert len(list_requests(fake)) == 1
    await provider.aclose()


async def test_the_webhook_must_match_and_is_read_from_the_prediction(fake: FakeReplicate, tmp_path: Path) -> None:
    provider = make_provider(fake)
    since = time.time()
    fake.drop_webhooks = True
    t = task(tmp_path, callback_url=HOOK)
    lost = await lose_a_create(provider, fake, t)
    await provider.submit(task(tmp_path, callback_url=HOOK.replace("job=clip", "job=other")))
    await provider.submit(task(tmp_path))  # same input, no webhook
    assert await provider.find_submitted(t, since) == [lost]
    assert fake.gets == 3  # each same-model, same-input candidate is read once for its webhook
    await provider.aclose()


async def test_a_pinned_version_matches_on_the_version(fake: FakeReplicate, tmp_path: Path) -> None:
    provider = make_provider(fake)
    since = time.time()
    t = task(tmp_path, "replicate/bytedance/seedance-1-pro:abc123")
    lost = await lose_a_create(provider, fake, t)
    await provider.submit(task(tmp_path, "replicate/bytedance/seedance-1-pro:def456"))
    await provider.submit(task(tmp_path))  # the official model, same input: not a pinned version
    assert await provider.find_submitted(t, since) == [lost]
    await provider.aclose()


async def test_a_delayed_answer_past_the_read_timeout_is_found_the_same(fake: FakeReplicate, tmp_path: Path) -> None:
    client = httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.3))
    provider = make_provider(fake, client=client)
    since = time.time()
    t = task(tmp_path)
    fake.accept_then_delay(1, delay_s=1.0)
    started = time.monotonic()
    with pytest.raises(TransientError, match="timed out") as caught:
        await provider.submit(t)
    assert caught.value.not_sent is False and time.monotonic() - started < 0.9
    assert fake.creates == 1
    [lost] = fake.predictions
    assert await provider.find_submitted(t, since) == [lost]
    await client.aclose()


async def test_next_pages_are_followed_on_our_own_host(fake: FakeReplicate, tmp_path: Path) -> None:
    provider = make_provider(fake)
    since = time.time()
    t = task(tmp_path)
    lost = await lose_a_create(provider, fake, t)  # the oldest: on the last page
    for i in range(5):
        await provider.submit(task(tmp_path, prompt=f"other {i}"))
    fake.list_page_size = 2
    assert await provider.find_submitted(t, since) == [lost]
    pages = list_requests(fake)
    assert len(pages) == 3 and all(p["authorization"] == f"Bearer {fake.token}" for p in pages)
    await provider.aclose()


async def test_a_next_url_on_another_host_is_never_followed(fake: FakeReplicate, tmp_path: Path) -> None:
    with FakeReplicate() as elsewhere:
        provider = make_provider(fake)
        since = time.time()
        t = task(tmp_path)
        await lose_a_create(provider, fake, t)
        for i in range(3):
            await provider.submit(task(tmp_path, prompt=f"other {i}"))
        fake.list_page_size = 2
        fake.forge_list_next(elsewhere.base_url)
        with pytest.raises(TransientError, match="not followed"):
            await provider.find_submitted(t, since)
        assert elsewhere.requests == [] and len(list_requests(fake)) == 1
        await provider.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:{port}/v1/predictions?cursor=x",  # another scheme
        "http://127.0.0.1:{other}/v1/predictions?cursor=x",  # another port
        "http://localhost:{port}/v1/predictions?cursor=x",  # another name
        "http://127.0.0.1:{port}/v1/models?cursor=x",  # another path
        "http://u:p@127.0.0.1:{port}/v1/predictions?cursor=x",  # credentials
        "//127.0.0.1:{port}/v1/predictions",
        "/v1/predictions?cursor=x",
    ],
)
def test_only_our_own_list_url_is_ever_followed(fake: FakeReplicate, url: str) -> None:
    provider = make_provider(fake)
    assert provider._own_list_path(url.format(port=fake.port, other=fake.port + 1)) is None
    own = f"{fake.base_url}/predictions?cursor=abc&created_after=2025-01-01T00%3A00%3A00Z"
    assert provider._own_list_path(own) == "/predictions?cursor=abc&created_after=2025-01-01T00%3A00%3A00Z"


async def test_too_many_pages_cannot_tell(fake: FakeReplicate, tmp_path: Path) -> None:
    provider = make_provider(fake)
    provider.list_max_pages = 2
    since = time.time()
    t = task(tmp_path)
    await lose_a_create(provider, fake, t)
    for i in range(4):
        await provider.submit(task(tmp_path, prompt=f"other {i}"))
    fake.list_page_size = 2
    with pytest.raises(TransientError, match="more than 2 pages"):
        await provider.find_submitted(t, since)
    assert len(list_requests(fake)) == 2
    await provider.aclose()


async def test_a_candidate_whose_input_was_removed_cannot_be_told(fake: FakeReplicate, tmp_path: Path) -> None:
    provider = make_provider(fake)
    since = time.time()
    t = task(tmp_path)
    await lose_a_create(provider, fake, t)
    fake.remove_data()
    with pytest.raises(CannotReconcile, match="data_removed"):
        await provider.find_submitted(t, since)
    other_model = task(tmp_path, KLING)  # a removed prediction of another model is simply not ours
    assert await provider.find_submitted(other_model, since) == []
    await provider.aclose()


async def test_a_throttled_create_started_nothing(fake: FakeReplicate, tmp_path: Path) -> None:
    fake.fail_next_creates_with(429, 1, retry_after=0.05)
    provider = make_provider(fake)
    provider.create_retries_on_429 = 0
    with pytest.raises(TransientError) as caught:
        await provider.submit(task(tmp_path))
    assert caught.value.not_sent is True and fake.creates == 0
    fake.fail_next_creates_with(503, 1)
    with pytest.raises(TransientError) as caught:
        await provider.submit(task(tmp_path))
    assert caught.value.not_sent is False  # a 5xx proves nothing
    await provider.aclose()


def test_inputs_compare_as_json_values() -> None:
    assert same_json({"a": 1, "b": [1.0, "x"]}, {"b": [1, "x"], "a": 1.0})
    assert not same_json({"a": 1}, {"a": True})
    assert not same_json({"a": 0}, {"a": None})
    assert not same_json({"a": "1"}, {"a": 1})
    assert not same_json({"a": [1, 2]}, {"a": [2, 1]})
    assert not same_json({"a": 1}, {"a": 1, "b": None})


# --- fal ------------------------------------------------------------------------------------------


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal(latency_s=0.2) as f:
        yield f


def fal_task(tmp_path: Path) -> Task:
    return Task("ex1", "img", "generate-image", "fal/fal-ai/flux/schnell", {"prompt": "a fox"}, 2, tmp_path / "s")


async def test_fal_cannot_reconcile(fal: FakeFal, tmp_path: Path) -> None:
    provider = FalProvider(fal.key, fal.base_url)
    assert isinstance(provider, Reconciling)
    with pytest.raises(CannotReconcile, match="cannot look up requests"):
        await provider.find_submitted(fal_task(tmp_path), time.time())
    assert sum(fal.hits.values()) == 0  # nothing asked of fal
    await provider.aclose()


async def test_fal_a_dropped_submit_still_queues_one_request(fal: FakeFal, tmp_path: Path) -> None:
    provider = FalProvider(fal.key, fal.base_url)
    fal.accept_then_drop()
    with pytest.raises(TransientError) as caught:
        await provider.submit(fal_task(tmp_path))
    assert caught.value.not_sent is False
    assert fal.creates == 1 and fal.count("submit") == 1 and len(fal.requests) == 1
    assert (await provider.submit(fal_task(tmp_path))).startswith("fal-ai/flux/")  # the next one is answered
    assert fal.creates == 2
    await provider.aclose()


async def test_fal_a_delayed_submit_times_out_but_runs(fal: FakeFal, tmp_path: Path) -> None:
    client = httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.3))
    provider = FalProvider(fal.key, fal.base_url, client=client)
    fal.accept_then_delay(1, delay_s=1.0)
    with pytest.raises(TransientError, match="timed out") as caught:
        await provider.submit(fal_task(tmp_path))
    assert caught.value.not_sent is False and fal.creates == 1
    await client.aclose()


async def test_fal_a_throttled_submit_started_nothing(fal: FakeFal, tmp_path: Path) -> None:
    provider = FalProvider(fal.key, fal.base_url)
    fal.fail_next("submit", 1, 429, detail="Too many requests", retry_after=0.05)
    with pytest.raises(TransientError) as caught:
        await provider.submit(fal_task(tmp_path))
    assert caught.value.not_sent is True and fal.creates == 0
    fal.fail_next("submit", 1, 500)
    with pytest.raises(TransientError) as caught:
        await provider.submit(fal_task(tmp_path))
    assert caught.value.not_sent is False
    await provider.aclose()


async def test_lookups_that_start_together_share_one_walk_of_the_list(fake: FakeReplicate, tmp_path: Path) -> None:
    """Six answers lost at once (a network blip): six lookups, one walk of the list, each finds its own."""
    provider = make_provider(fake)
    fake.list_page_size = 4
    tasks = [
        Task(f"ex{i}", "clip", "generate-video", SEEDANCE, {"prompt": f"wave {i}"}, 2, tmp_path / f"s{i}")
        for i in range(6)
    ]
    lost = [await lose_a_create(provider, fake, t) for t in tasks]
    for i in range(5):  # and others' predictions around them
        await provider.submit(task(tmp_path, prompt=f"other {i}"))
    since = time.time() - 5
    before = len(list_requests(fake))
    found = await asyncio.gather(*(provider.find_submitted(t, since) for t in tasks))
    assert found == [[pid] for pid in lost]
    assert len(list_requests(fake)) - before == 3  # 11 predictions, 4 a page: one walk of 3 pages
    later = await provider.find_submitted(tasks[0], since)  # a lookup after the walk began walks again
    assert later == [lost[0]] and len(list_requests(fake)) - before == 6
