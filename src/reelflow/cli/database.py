"""The local database's upkeep: its schema, and deleting finished executions."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from .common import err, on_local, out, print_json

if TYPE_CHECKING:
    from .backend import Local

_AGE = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def migrate() -> None:
    """Create or upgrade the database schema."""

    async def body(local: Local) -> None:
        version = await local.runtime.store.migrate()
        out().print(f"database {local.runtime.settings.database_url} at schema version {version}")

    on_local(body)


def age_seconds(text: str) -> float:
    """`30d`, `12h`, `90m`, `45s`, `2w` (or plain seconds) as seconds; bad usage otherwise."""
    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in _AGE else "s"
    number = value[:-1] if value[-1:] in _AGE else value
    try:
        seconds = float(number) * _AGE[unit]
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        err().print(f"[red]error:[/red] --older-than: not an age like 30d, 12h or 90m: {text!r}", highlight=False)
        raise typer.Exit(2)
    return seconds


def prune(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age of finished executions to delete: 30d, 12h, 90m, 2w.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print machine-readable JSON (how many rows of each kind were deleted).")
    ] = False,
) -> None:
    """Delete executions that ended longer ago than --older-than, with their jobs, events and deliveries
    (stored artifacts stay)."""
    cutoff = time.time() - age_seconds(older_than)

    async def body(local: Local) -> dict[str, int]:
        await local.runtime.store.migrate()
        return await local.runtime.store.prune(cutoff)

    removed = on_local(body)
    if as_json:
        print_json(removed)
    else:
        out().print(", ".join(f"{v} {k.replace('_', ' ')}" for k, v in removed.items()) + " deleted")
