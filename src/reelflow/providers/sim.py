"""`sim/*`: a simulated remote provider for tests and benchmarks.

It behaves like a remote API: `submit` returns an id, `wait` waits on it. The id itself carries
the schedule (when the work starts and ends, and how it ends), so any worker process can resume
waiting on it after a crash, exactly as with a real provider. A waiting job is one sleeping
coroutine: no thread, a few hundred bytes, no timer of its own (`sleeps.sleep`).
"""

from __future__ import annotations

import random
import time
from typing import Any

from . import sleeps
from .base import (
    Output,
    PermanentError,
    ProgressReporter,
    ProgressUpdate,
    ProviderResult,
    Task,
    TransientError,
)
from .base import (
    report_progress as _report,
)
from .info import BUILTIN_INFO

SUFFIX = {"sim/image": ".png", "sim/video": ".mp4", "sim/audio": ".m4a"}


def _encode(sim_id: str, starts: float, ends: float) -> str:
    """The prediction id: `sim-<id>_<start>_<end>`, the schedule's times as `repr` writes them (exact both ways).
    Plain text: a JSON document in base64 cost about 12 us a job to write and read back (this, 4 us), all of it
    the stand-in's own cost, yet counted in the engine's benchmarks as the worker's."""
    return f"sim-{sim_id}_{starts!r}_{ends!r}"


def _decode(provider_id: str) -> tuple[str, float, float]:
    """The id, start and end of a prediction id made by `_encode`."""
    parts = provider_id[4:].split("_") if provider_id.startswith("sim-") else []
    if len(parts) != 3:
        raise PermanentError(f"not a sim prediction id: {provider_id!r}")
    try:
        return parts[0], float(parts[1]), float(parts[2])
    except ValueError as exc:
        raise PermanentError(f"corrupt sim prediction id: {provider_id!r}") from exc


class SimProvider:
    """The simulated provider. Parameters: latency_s, queue_s, fail_times, fail, cost_usd, media."""

    info = BUILTIN_INFO["sim"]
    name = info.name

    def __init__(self) -> None:
        self.submitted = 0
        self.canceled: list[str] = []

    async def submit(self, task: Task) -> str:
        p = task.params
        fail_times = int(p.get("fail_times") or 0)
        if p.get("fail") == "permanent":
            raise PermanentError(f"sim: job '{task.job_id}' asked to fail (fail: permanent)")
        if task.attempt <= fail_times:
            raise TransientError(
                f"sim: transient failure {task.attempt} of {fail_times} (fail_times)",
                retry_after=p.get("retry_after_s"),
            )
        self.submitted += 1
        now = time.time()
        queue_s = float(p.get("queue_s") or 0)
        latency_s = float(p.get("latency_s") or 0)
        # a random 12-hex-digit id, as uuid4().hex[:12] was (its first 6 bytes are random), from `random` (seeded
        # from the system's entropy, and again in a forked child): os.urandom was a system call per job, which
        # handed the GIL to the store's thread and left the event loop waiting to get it back
        return _encode(f"{random.getrandbits(48):012x}", now + queue_s, now + queue_s + latency_s)

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        sim_id, starts, ends = _decode(provider_id)
        now = time.time()
        if now < starts:
            await _report(report, ProgressUpdate(phase="queued", queue_position=1))
            await sleeps.sleep(starts - now)
            await _report(report, ProgressUpdate(phase="running", percent=0))
        remaining = ends - time.time()
        if remaining > 0:
            await sleeps.sleep(remaining)
        outputs: list[Output] = []
        fields: dict[str, Any] = {"sim_id": sim_id, "provider_id": provider_id}
        if "echo" in task.params:  # hand back (resolved) parameters: lets tests see references resolved
            fields["echo"] = task.params["echo"]
        if task.params.get("media"):
            outputs.append(await self._make_media(task))
        else:
            fields["url"] = f"https://sim.invalid/outputs/{sim_id}{SUFFIX.get(task.model or '', '')}"
        cost = task.params.get("billed_usd", task.params.get("cost_usd"))
        return ProviderResult(outputs=outputs, fields=fields, cost_usd=float(cost) if cost is not None else 0.0)

    async def _make_media(self, task: Task) -> Output:
        from .. import media

        prompt = str(task.params.get("prompt") or task.job_id)
        kind = (task.model or "sim/video").split("/", 1)[-1]
        out = task.workdir / f"{kind}{SUFFIX.get(task.model or '', '.mp4')}"
        if kind == "image":
            await media.make_image(out, prompt=prompt, width=320, height=180)
        elif kind == "audio":
            await media.make_audio(out, text=prompt, duration=float(task.params.get("duration") or 2.0))
        else:
            await media.make_video(
                out, prompt=prompt, duration=float(task.params.get("duration") or 2.0), width=320, height=180
            )
        return Output(path=out)

    async def cancel(self, task: Task, provider_id: str) -> None:
        self.canceled.append(provider_id)
