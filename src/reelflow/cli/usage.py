"""What there is and what was used: the model catalog, usage against the limits, the window's figures."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import fail, on_backend, out, print_json, print_json_or
from .options import ApiKeyOpt, ServerOpt

if TYPE_CHECKING:
    from .backend import Backend

SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="Window of the figures: an ISO 8601 time or a duration back (24h, 90m, 7d)."),
]

ModelsJsonOpt = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON (the catalog: one object per model).")
]
StatsJsonOpt = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON ({usage, stats}; locally also queue, limits).")
]
ProviderOpt = Annotated[
    str | None, typer.Option("--provider", help="Only this provider's models (local, replicate, fal, ...).")
]


def models(
    server: ServerOpt = None, api_key: ApiKeyOpt = None, as_json: ModelsJsonOpt = False, provider: ProviderOpt = None
) -> None:
    """List the model catalog."""

    async def body(backend: Backend) -> list[dict[str, Any]]:
        return await backend.models()

    specs = everything = on_backend(server, api_key, body)
    if provider is not None:
        specs = [m for m in everything if _provider_of(m) == provider]
        if not specs:
            known = sorted({_provider_of(m) for m in everything})
            raise fail(f"no model of provider {provider!r}; providers: {', '.join(known)}")
    print_json_or(specs, as_json, _show_models)


def _show_models(specs: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="models")
    table.add_column("model", no_wrap=True)
    for col in ("types", "parameters", "price"):
        table.add_column(col)
    for m in specs:
        table.add_row(m["id"], ", ".join(m["types"]), ", ".join(m["params"]), price_words(m))
    out().print(table)
    if any(_unconfirmed(m) for m in specs):
        out().print(
            "unconfirmed: the price was not read from the provider's pages (an estimate; `--json` says where it"
            " comes from in price_unconfirmed)"
        )


def _unconfirmed(model: dict[str, Any]) -> bool:
    price = model["price"]
    return not model.get("price_read") and price["unit"] != "free" and price.get("usd", 0) != 0


def price_words(model: dict[str, Any]) -> str:
    """`$0.4 / second, read 2026-10-05`, `$0.15 / second, unconfirmed`, `free`."""
    price = model["price"]
    if price["unit"] == "free":
        return "free"
    words = f"${price.get('usd', 0):g} / {price['unit']}"
    if model.get("price_read"):
        return f"{words}, read {model['price_read']}"
    return f"{words}, unconfirmed" if _unconfirmed(model) else words


OpsJsonOpt = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON (one object per operation, its parameters).")
]
def shown_default(value: Any) -> str:
    """A default as a plan writes it: `true`, not Python's `True`."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


OpTypeArg = Annotated[
    str | None, typer.Argument(metavar="TYPE", help="Only this operation (its job type, e.g. thumbnail).")
]


def ops(op_type: OpTypeArg = None, as_json: OpsJsonOpt = False) -> None:
    """List the local operations (ffmpeg in the worker: merge, concat, overlay, captions, thumbnail,
    transcode) with every parameter: type, allowed values, default, meaning."""
    from ..providers.catalog import operations
    from ..providers.catalog.docs import allowed, type_words

    specs = operations()
    if op_type is not None:
        specs = [s for s in specs if s.type == op_type]
        if not specs:
            raise fail(f"no operation {op_type!r}; operations: {', '.join(s.type for s in operations())}", 2)
    if as_json:
        print_json([s.model_dump(mode="json", exclude_none=True) for s in specs])
        return
    from rich.table import Table

    for spec in specs:
        needed = {n for rule in spec.rules if rule.kind != "increasing" for n in rule.params}
        table = Table(title=f"{spec.type}: {spec.description}", title_justify="left")
        for col in ("parameter", "type", "required", "allowed values", "default", "meaning"):
            table.add_column(col, no_wrap=col == "parameter")
        for name, p in spec.params.items():
            required = "yes" if p.required else ("one of" if name in needed else "")
            default = "" if p.default is None else shown_default(p.default)
            table.add_row(name, type_words(p), required, allowed(p).replace("`", ""), default, p.description)
        out().print(table)


def _provider_of(model: dict[str, Any]) -> str:
    return str(model.get("provider") or str(model["id"]).split("/", 1)[0])


def stats(
    server: ServerOpt = None, api_key: ApiKeyOpt = None, as_json: StatsJsonOpt = False, since: SinceOpt = None
) -> None:
    """Usage this month (executions, cost, cache hits) against the limits, the queue by provider, and the
    figures of the window (24 h unless --since): success rate, p50/p95 execution time, queue depth,
    per-provider success and latency, webhook deliveries, spend this month. Locally: every tenant."""
    from ..store.stats import parse_since

    try:
        start = parse_since(since, time.time())
    except ValueError as exc:
        raise fail(f"--since: {exc}", 2) from None

    async def body(backend: Backend) -> dict[str, Any]:
        return await backend.stats(since, start)

    print_json_or(on_backend(server, api_key, body), as_json, _show_usage)


def _show_usage(data: dict[str, Any]) -> None:
    """Usage against the limits, the queue, the window's figures and the circuits, for a person."""
    from rich.table import Table

    table = Table(title=f"usage, {data['usage'][0]['month']}" if data["usage"] else "usage")
    for col in ("tenant", "executions", "cost (settled)", "reserved", "cache hits", "running", "limits"):
        table.add_column(col)
    for u in data["usage"]:
        limits = u.get("limits") or {}
        shown = ", ".join(f"{k} {v:g}" for k, v in limits.items() if v is not None) or "none"
        cap = limits.get("max_concurrent")
        running = str(u.get("jobs_running", "?")) + (f" of {cap}" if cap is not None else "")
        table.add_row(
            u["tenant"],
            str(u["executions"]),
            f"${u['cost_usd']:.4f}",
            f"${u['reserved_usd']:.4f}",
            str(u["cache_hits"]),
            running,
            shown,
        )
    out().print(table)
    if "queue" in data:
        q = data["queue"]
        jobs = ", ".join(f"{k} {v}" for k, v in sorted(q["jobs"].items())) or "none"
        out().print(f"jobs: {jobs}")
        for label, key in (("running", "running_by_provider"), ("queued", "queued_by_provider")):
            if q[key]:
                out().print(f"{label} by provider: " + ", ".join(f"{k} {v}" for k, v in sorted(q[key].items())))
        caps = data["limits"]["providers"]
        lines = [
            f"{p}: {', '.join(f'{k} {v:g}' for k, v in lim.items() if isinstance(v, int | float))}"
            for p, lim in caps.items()
        ]
        out().print("provider limits: " + ("; ".join(ln for ln in lines if not ln.endswith(": ")) or "none"))
    _show_stats(data["stats"])
    _show_circuits(data.get("circuits") or [])


def _show_circuits(providers: list[dict[str, Any]]) -> None:
    """The circuits not closed (open or half-open), or a line saying all are closed."""
    shown = []
    for p in providers:
        for name, c in [(p["provider"], p["circuit"]), *((m["model"], m["circuit"]) for m in p["models"])]:
            if c["state"] != "closed":
                until = f" until {c['open_until']}" if c.get("open_until") else ""
                shown.append(f"{name} {c['state']}{until} ({c['consecutive_failures']} failures in a row)")
    out().print("circuits: " + ("; ".join(shown) if shown else "all closed"), highlight=False)


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _show_stats(s: dict[str, Any]) -> None:
    """The window's figures for a person (the same as `GET /v1/stats`)."""
    from rich.table import Table

    ex = s["executions"]
    who = "every tenant" if s["tenant"] is None else f"tenant {s['tenant']}"
    out().print(f"since {s['since']} ({who}):", highlight=False)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(ex["by_status"].items())) or "none"
    out().print(f"executions: {counts}", highlight=False)
    out().print(
        f"success rate: {_pct(ex['success_rate'])}, execution time p50 {_secs(ex['p50_s'])}, p95 {_secs(ex['p95_s'])}",
        highlight=False,
    )
    w = s["workers"]
    out().print(
        f"queue depth: {s['queue_depth']}; workers live {w['live']}, slots in use {w['slots_in_use']}", highlight=False
    )
    if s["providers"]:
        table = Table(title="providers")
        for col in ("provider", "jobs", "succeeded", "failed", "success rate", "p50"):
            table.add_column(col)
        for p in s["providers"]:
            table.add_row(
                p["provider"], str(p["requests"]), str(p["succeeded"]), str(p["failed"]),
                _pct(p["success_rate"]), _secs(p["p50_s"]),
            )  # fmt: skip
        out().print(table)
    h = s["webhooks"]
    out().print(
        f"webhooks: delivered {h['delivered']}, failed {h['failed']}, pending {h['pending']}"
        f" (delivery rate {_pct(h['success_rate'])})",
        highlight=False,
    )
    out().print(f"spend this month: ${s['spend_usd_month']:.4f}", highlight=False)
