"""The `sim` provider's prediction ids: any worker can resume waiting on one, and a damaged id fails the job."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reelflow.providers.base import PermanentError, ProgressUpdate, Task
from reelflow.providers.sim import SimProvider, _decode, _encode


def task(tmp_path: Path, **params: object) -> Task:
    return Task("ex_sim", "clip", "generate-video", "sim/video", dict(params), 1, tmp_path)


async def test_another_worker_resumes_waiting_on_an_id_until_its_schedule_ends(tmp_path: Path) -> None:
    updates: list[ProgressUpdate] = []
    t0 = time.time()
    pid = await SimProvider().submit(task(tmp_path, queue_s=0.2, latency_s=0.3))
    # a second provider object, as in a worker that took the job over after a crash: the id alone says when
    result = await SimProvider().wait(task(tmp_path, queue_s=0.2, latency_s=0.3), pid, updates.append)
    took = time.time() - t0
    assert 0.5 <= took < 1.5
    assert [u.phase for u in updates] == ["queued", "running"]
    assert result.fields["provider_id"] == pid
    assert result.fields["url"] == f"https://sim.invalid/outputs/{result.fields['sim_id']}.mp4"
    assert len(result.fields["sim_id"]) == 12 and int(result.fields["sim_id"], 16) >= 0


@pytest.mark.parametrize("when", [1796659200.1234567, 0.1 + 0.2, 1e308, 5e-324, float("inf")])
def test_an_id_keeps_its_schedule_exactly(when: float) -> None:
    pid = _encode("0123456789ab", when, when * 2)
    assert _decode(pid) == ("0123456789ab", when, when * 2)  # every digit of both times: no rounding


@pytest.mark.parametrize(
    ("pid", "message"),
    [
        ("replicate-abc", "not a sim prediction id: 'replicate-abc'"),
        ("sim-", "not a sim prediction id: 'sim-'"),
        ("sim-abc_1.0", "not a sim prediction id: 'sim-abc_1.0'"),
        ("sim-abc_1.0_2.0_3.0", "not a sim prediction id: 'sim-abc_1.0_2.0_3.0'"),
        ("sim-abc_soon_2.0", "corrupt sim prediction id: 'sim-abc_soon_2.0'"),
    ],
)
async def test_a_damaged_id_is_a_permanent_error_naming_it(tmp_path: Path, pid: str, message: str) -> None:
    with pytest.raises(PermanentError) as caught:
        await SimProvider().wait(task(tmp_path), pid, lambda _: None)
    assert caught.value.message == message
