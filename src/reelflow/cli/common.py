"""The `reelflow` command line's plumbing, without typer: the consoles, how a command body runs on a backend
and ends (a message and an exit status), reading a plan, the configuration check. The typer app and the
options the command groups share are in `options`.

Exit status: 0 ok, 1 failed or refused, 2 bad usage, 130 interrupted (Ctrl-C), 141 stdout closed early. An
exit is a `SystemExit` (click lets it through with its status, as it does its own `Exit`), so this module
needs no typer.

Start-up stays cheap (`reelflow --help`): rich, the engine, the settings (pydantic), the catalog, the metrics
(prometheus_client) and httpx are imported by the commands that use them, not here; help is plain text
(typer's rich help alone cost more than the rest of the start-up), and `reelflow --help` and `reelflow run
--help` do not even load typer (see `helptext`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Coroutine
from functools import cache, wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..client_errors import APIError
from ..errors import ErrorItem, PlanError, ReelflowError
from . import collect_from_now_on

if TYPE_CHECKING:
    from rich.console import Console

    from .backend import Backend, Local

T = TypeVar("T")
START_S = 0.5
"""A command body running this long has started: the cyclic collector goes back on (see `main`)."""


WIDE = 1000
"""The width of standard output when it is not a terminal: wide enough that no table is cut or wrapped (a
table takes the width it needs, not the console's), so `reelflow models | grep seedance` sees whole ids."""


@cache
def out() -> Console:
    """Standard output, for people (`WIDE` when it is not a terminal)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else WIDE)


@cache
def err() -> Console:
    """Standard error: messages, refusals."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


@cache
def live_console() -> Console:
    """Standard error, where `--wait` shows its live progress (stdout stays for the id, the result, the JSON)."""
    from rich.console import Console

    return Console(stderr=True)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def fail(message: str, status: int = 1) -> SystemExit:
    """Print `error: message` (the message is not markup) and return the exit to raise."""
    err().print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return SystemExit(status)


class Refused(Exception):
    """Ends a command with exit status 1 after the message was shown."""


class Interrupted(Exception):
    """Ends a command with exit status 130 after Ctrl-C, once where things stand was shown."""


def configuration_errors() -> tuple[type[Exception], ...]:
    """SettingsError, LimitsFileError and CatalogFileError: a bad configuration, bad usage (exit 2).

    Only those of modules already loaded: a module never imported cannot have raised its error, and is not
    imported just to say so (e.g. while `--help` exits)."""
    found: list[type[Exception]] = []
    for module, name in (
        ("reelflow.config", "SettingsError"),
        ("reelflow.limits", "LimitsFileError"),
        ("reelflow.providers.catalog", "CatalogFileError"),
    ):
        error = getattr(sys.modules.get(module), name, None)
        if isinstance(error, type) and issubclass(error, Exception):
            found.append(error)
    return tuple(found)


def configuration_problem() -> str | None:
    """What is wrong with the settings, the limits file or the catalog file (file:line), or None.

    Reads each once: the limits and the catalog stay loaded for the command that follows."""
    from ..config import SettingsError, get_settings
    from ..limits import LimitsFileError, get_limits
    from ..providers.catalog import CatalogFileError, load_extensions

    try:
        settings = get_settings()
        get_limits(settings)
        load_extensions(settings)
    except (SettingsError, LimitsFileError, CatalogFileError) as exc:
        return str(exc)
    return None


def refused(exc: APIError) -> None:
    """A problem answer: its detail, then each `loc: msg` the detail does not already say."""
    err().print(f"[red]refused:[/red] {exc.detail}", highlight=False)
    for item in exc.errors:
        loc = item.get("loc")
        line = str(ErrorItem(list(loc) if isinstance(loc, list) else [], str(item.get("msg", ""))))
        if line not in exc.detail:
            err().print(f"  {line}", highlight=False)


def command(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command body; turn every expected failure into a message and an exit status."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        import asyncio

        async def started() -> T:
            # a command still running after its start has made what it keeps: collect cycles from then on
            asyncio.get_running_loop().call_later(START_S, collect_from_now_on)
            return await fn(*args, **kwargs)

        try:
            return asyncio.run(started())
        except configuration_errors() as exc:  # bad configuration: bad usage
            raise fail(str(exc), 2) from None
        except PlanError as exc:
            err().print(f"[red]refused:[/red] {exc}", highlight=False)
        except APIError as exc:  # the server's refusal
            refused(exc)
        except BrokenPipeError:  # stdout closed early (`reelflow events ID | head`): stop quietly
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            raise SystemExit(141) from None
        except (ReelflowError, ValueError, OSError) as exc:  # a server that cannot be reached, a timeout too
            err().print(f"[red]error:[/red] {exc}", highlight=False)
        except Refused:
            pass
        except Interrupted:
            raise SystemExit(130) from None
        except (KeyboardInterrupt, asyncio.CancelledError):  # a Ctrl-C outside a wait
            err().print("interrupted")
            raise SystemExit(130) from None
        raise SystemExit(1)

    return wrapper


def on_backend(server: str | None, api_key: str | None, body: Callable[[Backend], Coroutine[Any, Any, T]]) -> T:
    """Run a command body on the local database, or on the server at `server` (a missing key or a malformed
    URL is bad usage, 2); failures become a message and an exit status (see `command`)."""
    from .backend import open_backend

    return _run_on(open_backend(server, api_key), body)


def on_local(body: Callable[[Local], Coroutine[Any, Any, T]]) -> T:
    """Run a command body on the local database only (keys, migrate, prune, worker, demo)."""
    from .backend import Local

    return _run_on(Local(), body)


B = TypeVar("B", bound="Backend")


def _run_on(backend: B, body: Callable[[B], Coroutine[Any, Any, T]]) -> T:
    @command
    async def run() -> T:
        try:
            return await body(backend)
        finally:
            await backend.aclose()

    return run()


def read_plan(path: Path) -> Any:
    """The plan's data; a missing file is bad usage (2), unparsable text a refusal (1)."""
    from ..plan import load_plan_text

    if str(path) != "-" and not path.is_file():
        err().print(f"[red]error:[/red] plan file {str(path)!r} not found")
        raise SystemExit(2)
    try:
        if str(path) == "-":
            return load_plan_text(sys.stdin.read(), filename="<stdin>")
        return load_plan_text(path.read_text(encoding="utf-8"), filename=str(path))
    except PlanError as exc:
        err().print(f"[red]refused:[/red] {exc}", highlight=False)
        raise SystemExit(1) from None
    except (OSError, UnicodeDecodeError) as exc:
        err().print(f"[red]error:[/red] cannot read {str(path)!r}: {exc}", highlight=False)
        raise SystemExit(2) from None


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def print_json_or(value: T, as_json: bool, show: Callable[[T], None]) -> None:
    """A command's answer: with --json `value` as JSON on stdout, else `show(value)` for a person (which imports
    rich itself, so that the JSON never loads it)."""
    if as_json:
        print_json(value)
    else:
        show(value)
