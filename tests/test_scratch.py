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


def test_folders_attempts_did_not_touch_are_looked_at_together_with_one_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = ScratchPool(tmp_path / "w1", look_every=3)
    looked: list[str] = []
    real_scandir, real_listdir = os.scandir, os.listdir

    def scandir(p: Any) -> Any:
        looked.append(f"scandir {Path(p).name}")
        return real_scandir(p)

    def listdir(p: Any) -> Any:
        looked.append("listdir")
        return real_listdir(p)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", listdir)
    a, b, c = pool.take(), pool.take(), pool.take()
    b.mkdir(parents=True)  # a provider writing into Task.scratch without asking for its workdir
    (b / "left").write_bytes(b"x")
    pool.give_back(a, reuse=True, touched=False)
    pool.give_back(b, reuse=True, touched=False)
    assert looked == [] and pool.take() not in (a, b)  # no system call per job; not handed out unlooked
    pool.give_back(c, reuse=True, touched=False)  # the third: one listing for the three
    assert looked == ["listdir", f"scandir {b.name}"]  # and a look of its own for the one that is there
    again = {pool.take() for _ in range(3)}
    assert again == {a, b, c} and list(b.iterdir()) == []  # b emptied before it is handed out again


def test_folders_not_touched_before_any_folder_was_made_are_as_good_as_new(tmp_path: Path) -> None:
    pool = ScratchPool(tmp_path / "w1", look_every=2)
    names = [pool.take(), pool.take()]
    for name in names:
        pool.give_back(name, reuse=True, touched=False)
    assert not (tmp_path / "w1").exists() and sorted([pool.take(), pool.take()]) == sorted(names)


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
