"""`reelflow keys`: API keys on the local database (each belongs to one tenant)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from .common import Refused, err, on_local, out, print_json
from .options import typer_app

if TYPE_CHECKING:
    from ..keys import NewKey
    from .backend import Local

keys_app = typer_app(help="Manage API keys (each belongs to one tenant).")

KEY_FIELDS = ("key_id", "tenant", "created_at", "revoked_at")


@keys_app.command("create")
def keys_create(
    tenant_name: Annotated[str, typer.Option("--tenant", help="The tenant the key acts for (created if new).")],
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print machine-readable JSON ({api_key, webhook_secret, tenant, key_id})."),
    ] = False,
) -> None:
    """Create an API key; prints it once, with the tenant's webhook secret."""
    from ..keys import create_key

    async def body(local: Local) -> NewKey:
        return await create_key(local.runtime.store, tenant_name)

    new = on_local(body)
    if as_json:
        print_json(
            {"api_key": new.api_key, "webhook_secret": new.webhook_secret, "tenant": new.tenant, "key_id": new.key_id}
        )
    else:
        out().print(f"tenant:         {new.tenant}", highlight=False)
        out().print(f"api_key:        {new.api_key}", highlight=False, soft_wrap=True)
        out().print(f"webhook_secret: {new.webhook_secret}", highlight=False, soft_wrap=True)
        out().print("[dim]The key is shown only now; it is stored as a hash.[/dim]")


@keys_app.command("list")
def keys_list(
    tenant_name: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's keys.")] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print machine-readable JSON ([{key_id, tenant, created_at, revoked_at}])."),
    ] = False,
) -> None:
    """List API keys (ids and tenants; the keys themselves are never stored)."""
    from ..store.common import iso

    async def body(local: Local) -> list[dict[str, str | None]]:
        keys = await local.runtime.store.list_api_keys(tenant_name)
        return [
            {"key_id": k.id, "tenant": k.tenant, "created_at": iso(k.created_at), "revoked_at": iso(k.revoked_at)}
            for k in keys
        ]

    rows = on_local(body)
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title="API keys")
    for col in KEY_FIELDS:
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(r[c] or "") for c in KEY_FIELDS))
    out().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="The key id (the part after rf_), or the key.")],
) -> None:
    """Revoke an API key at once."""
    from ..keys import KEY_RE

    m = KEY_RE.match(key_id)

    async def body(local: Local) -> None:
        if not await local.runtime.store.revoke_api_key(m.group(1) if m else key_id):
            err().print(f"[red]error:[/red] no active key {key_id!r}", highlight=False)
            raise Refused
        out().print(f"revoked {key_id}")

    on_local(body)
