"""Following an execution to its end: the live per-job view, and Ctrl-C on the local database, which leaves
the execution running and says where it stands."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..states import ACTIVE_JOB, TERMINAL_EXECUTION
from .common import Interrupted, err, live_console

if TYPE_CHECKING:
    from .backend import Backend

STATE_READ_S = 0.5
"""How long Ctrl-C waits to read the execution's state for the line it prints."""


class CtrlC:
    """SIGINT while a command waits on the local database. The first cancels the wait (the runtime then hands
    its embedded worker's jobs back to the queue within about a second, provider ids kept); a second one
    exits at once, whatever the first is still doing."""

    def __init__(self) -> None:
        self.count = 0
        self.task = asyncio.current_task()
        self.loop = asyncio.get_running_loop()

    def __call__(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.count == 1:
            if self.task is not None:
                self.loop.call_soon_threadsafe(self.task.cancel)
            return
        # no rich here: the first interrupt may be printing; one write of plain bytes is safe in a handler
        os.write(2, b"interrupted again: exiting now (jobs still held return to the queue when their leases end)\n")
        os._exit(130)

    @classmethod
    @contextlib.contextmanager
    def installed(cls) -> Iterator[CtrlC]:
        handler = cls()
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background: SIGINT stays ignored
            yield handler
            return
        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: Ctrl-C stays asyncio's
            yield handler
            return
        try:
            yield handler
        finally:
            if not handler.count:  # after an interrupt the handler stays: a second Ctrl-C exits at once
                signal.signal(signal.SIGINT, previous)


def where_it_stands(state: dict[str, Any]) -> str:
    """The line printed when Ctrl-C ends a wait: what still runs, how to follow it, how to stop it."""
    eid = state["id"]
    if state["status"] in TERMINAL_EXECUTION:
        return f"execution {eid} {state['status']}. Show it: reelflow status {eid}"
    active = [j for j in state["jobs"] if j["status"] in ACTIVE_JOB]
    # the local provider's work ran in this process: it stopped with it and runs again from the queue
    remote = [j for j in active if j.get("provider_job_id") and not str(j.get("model") or "").startswith("local/")]
    at_provider = len(remote)
    in_worker = sum(1 for j in active if j["status"] == "running" and j not in remote)
    parts = [f"{len(active) - at_provider - in_worker} queued", f"{at_provider} running at the provider"]
    if in_worker:
        parts.append(f"{in_worker} running in a worker")
    return (
        f"execution {eid} continues: {', '.join(parts)}. "
        f"Follow: reelflow status {eid} --wait. Stop: reelflow cancel {eid}"
    )


async def follow(backend: Backend, execution_id: str, *, as_json: bool) -> dict[str, Any]:
    """Wait for the execution, with a live per-job display on stderr when it is a terminal (stdout stays for the
    result, JSON or not). On the local database
    Ctrl-C leaves the execution running (see `CtrlC`) and ends the command with 130 and a line saying where
    things stand; on a server it ends the command (130)."""
    with backend.interruptible() as ctrl_c:
        try:
            if not live_console().is_terminal:
                return await backend.wait(execution_id)
            from rich.live import Live

            from ..display import progress_view

            with Live(console=live_console(), refresh_per_second=8, transient=False) as live:

                def show(state: dict[str, Any]) -> None:
                    live.update(progress_view(state))

                return await backend.wait(execution_id, on_update=show)
        except asyncio.CancelledError:
            if ctrl_c is None or not ctrl_c.count:
                raise
            if (task := asyncio.current_task()) is not None:
                task.uncancel()  # the cancel was ours and is handled: later timeouts in this task work as usual
            try:
                line = where_it_stands(await asyncio.wait_for(backend.get(execution_id), STATE_READ_S))
            except Exception:  # the database is busy or away: say what to do without the counts
                line = (
                    f"execution {execution_id} continues (its state could not be read just now). "
                    f"Follow: reelflow status {execution_id} --wait. Stop: reelflow cancel {execution_id}"
                )
            err().print(line, highlight=False, soft_wrap=True)  # now, before the database is closed
            raise Interrupted from None
