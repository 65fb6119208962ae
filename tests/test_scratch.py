"""The worker's scratch folders (engine/scratch.py): private and empty for each attempt, reused only after an
attempt that ended well, all gone when the worker stops."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from conftest import WorkerFactory, sim_job
from reelflow.engine.scheduler import Engine
from reelflow.engine.scratch import ScratchPool
from reelflow.providers.base import ProgressReporter, ProviderResult, Task
from reelflow.providers.sim import SimProvider


def test_a_folder_is_emptied_and_handed_out_again_after_an_attempt_that_ended_well(tmp_path: Path) -> None:
    pool = ScratchPool(tmp_path / "w1")
    first = pool.take()
    first.mkdir(parents=True)
    (first / "output-0.mp4").write_bytes(b"video")
    (first / "inputs").mkdir()
    (first / "inputs" / "a.png").write_bytes(b"png")
    other = pool.take()
    assert other != first  # in use at once: two folders
    pool.give_back(first, reuse=True)
    assert first.is_dir() and not any(first.iterdir())
    assert pool.take() == first  # the next attempt gets it, empty


def test_a_folder_of_an_attempt_that_failed_is_removed_and_never_handed_out_again(tmp_path: Path) -> None:
    pool = ScratchPool(tmp_path / "w1")
    failed = pool.take()
    failed.mkdir(parents=True)
    (failed / "output-0.mp4").write_bytes(b"half a video")
    pool.give_back(failed, reuse=False)
    assert not failed.exists()
    assert pool.take() != failed


def test_a_folder_never_made_is_reused_without_touching_the_disk(tmp_path: Path) -> None:
    pool = ScratchPool(tmp_path / "w1")
    unused = pool.take()
    pool.give_back(unused, reuse=True)
    assert not unused.exists() and pool.take() == unused


def test_a_folder_that_cannot_be_emptied_is_not_handed_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = ScratchPool(tmp_path / "w1")
    path = pool.take()
    path.mkdir(parents=True)
    (path / "stuck").write_bytes(b"x")
    real_unlink = os.unlink

    def refuse(p: str | os.PathLike[str], *a: object, **k: object) -> None:
        if str(p).endswith("stuck"):
            raise PermissionError(p)
        real_unlink(p)

    monkeypatch.setattr(os, "unlink", refuse)
    pool.give_back(path, reuse=True)
    monkeypatch.undo()
    assert pool.take() != path


def test_only_so_many_folders_are_kept_and_close_removes_them_all(tmp_path: Path) -> None:
    pool = ScratchPool(tmp_path / "w1", keep=2)
    paths = [pool.take() for _ in range(3)]
    for p in paths:
        p.mkdir(parents=True)
        (p / "f").write_bytes(b"x")
    for p in paths:
        pool.give_back(p, reuse=True)
    assert sum(p.exists() for p in paths) == 2  # the third was removed
    pool.close()
    assert not (tmp_path / "w1").exists()


class _Scribbler(SimProvider):
    """The simulated provider, noting what each attempt's folder held when it began, and leaving a file there."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[Path, list[str]]] = []

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        self.seen.append((task.workdir, sorted(os.listdir(task.workdir))))
        (task.workdir / "notes.txt").write_text(task.job_id)
        (task.workdir / "inputs").mkdir()
        (task.workdir / "inputs" / "a.png").write_bytes(b"png")
        return await super().wait(task, provider_id, report)


async def test_a_worker_s_attempts_each_find_an_empty_folder_and_it_leaves_none_behind(
    engine: Engine, running_worker: WorkerFactory
) -> None:
    sim = _Scribbler()
    plan = {"jobs": [sim_job("a", n=1), sim_job("b", n=2, depends_on=["a"]), sim_job("c", n=3, depends_on=["b"])]}
    eid = await engine.submit(plan)
    async with running_worker(providers_={"sim": sim}) as worker:
        state = await engine.wait(eid, timeout=20)
        assert state["status"] == "succeeded"
    assert [held for _, held in sim.seen] == [[], [], []]  # nothing of an earlier job visible
    assert len({folder for folder, _ in sim.seen}) == 1  # one after the other: the same folder, emptied
    assert not worker.workroot.exists() or list(worker.workroot.iterdir()) == []


def test_a_tasks_workdir_is_made_on_first_use_and_not_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = Task("e", "j", "generate-video", None, {}, 1, tmp_path / "a1")
    assert not (tmp_path / "a1").exists()
    assert task.workdir == tmp_path / "a1" and (tmp_path / "a1").is_dir()
    made: list[Path] = []
    real = Path.mkdir

    def counting(self: Path, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", counting)
    assert task.workdir / "output-0" == tmp_path / "a1" / "output-0"
    assert made == []  # each later use: no mkdir (it raised and caught FileExistsError every time)


def test_a_folder_the_attempt_never_used_is_kept_without_a_look_at_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = ScratchPool(tmp_path / "w1", keep=2)
    emptied = pool.take()
    emptied.mkdir(parents=True)
    (emptied / "f").write_bytes(b"x")
    pool.give_back(emptied, reuse=True)  # on disk, emptied, in the pool
    assert pool.take() == emptied
    others = [pool.take() for _ in range(3)]  # names never made

    def no_look(*a: object, **k: object) -> Any:
        raise AssertionError("the disk was looked at")

    monkeypatch.setattr(os, "scandir", no_look)
    monkeypatch.setattr(os, "lstat", no_look)  # shutil.rmtree's first look
    for p in [*others, emptied][:2]:
        pool.give_back(p, reuse=True, used=False)
    pool.give_back(others[2], reuse=True, used=False)  # the pool is full: a name never made is just dropped
    monkeypatch.undo()
    pool.give_back(emptied, reuse=True, used=False)  # on disk, the pool full: removed
    assert not emptied.exists()
    assert {pool.take(), pool.take()} == set(others[:2])
