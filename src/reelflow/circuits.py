"""Circuits: per provider and per model, shared by every worker through the store (pure rules, no I/O).

A model's circuit opens after `failures` consecutive transient failures and stays open `cooldown_s`: no
create goes to it. After the cool-down one probe is let through (half-open): its success closes the circuit,
its failure opens it again. While a circuit is not known clean, creates are admitted one reservation at a
time (`pending`: every create out counts), so once a model has failed, the creates sent at it never pass
`failures` however many workers ask (the creates already out when the first failure comes back excepted).
A circuit also opens when, over the last `WINDOW_S` seconds and at least `min_calls` creates, fewer than
`min_success_rate` of them succeeded (a model failing every other time never fails `failures` times in a row).
A provider's circuit opens the same way, but only on failures of two models or more: one model down does
not take its provider's other models with it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .limits import Limits

CircuitState = Literal["closed", "open", "half-open"]

DEFAULT_FAILURES = 5
DEFAULT_COOLDOWN_S = 60.0
DEFAULT_MIN_SUCCESS_RATE = 0.5
DEFAULT_MIN_CALLS = 20
PENDING_STALE_S = 120.0
"""A reservation older than this is forgotten (its worker died between admission and report)."""
WINDOW_S = 300.0
"""The window of the recent success rate."""


@dataclass(frozen=True)
class CircuitConfig:
    failures: int = DEFAULT_FAILURES
    cooldown_s: float = DEFAULT_COOLDOWN_S
    min_success_rate: float = DEFAULT_MIN_SUCCESS_RATE
    """Below this share of successes over the window (0 turns the rule off) the circuit opens..."""
    min_calls: int = DEFAULT_MIN_CALLS
    """...once the window holds at least this many creates."""


@dataclass
class Circuit:
    """One circuit's row."""

    key: str
    provider: str
    model: str | None
    state: CircuitState = "closed"
    failures: int = 0
    pending: int = 0
    pending_at: float | None = None
    until_at: float | None = None
    probe_owner: str | None = None
    ok_count: int = 0
    fail_count: int = 0
    window_at: float | None = None
    failing: list[str] = field(default_factory=list)
    """The models that failed since the last success (a provider's circuit)."""

    @property
    def clean(self) -> bool:
        return self.state == "closed" and self.failures == 0 and self.pending == 0

    def success_rate(self) -> float | None:
        total = self.ok_count + self.fail_count
        return round(self.ok_count / total, 4) if total else None

    @classmethod
    def of_row(cls, r: Any) -> Circuit:
        return cls(
            key=r["key"], provider=r["provider"], model=r["model"], state=r["state"], failures=r["failures"],
            pending=r["pending"], pending_at=r["pending_at"], until_at=r["until_at"], probe_owner=r["probe_owner"],
            ok_count=r["ok_count"], fail_count=r["fail_count"], window_at=r["window_at"],
            failing=json.loads(r["failing"] or "[]"),
        )  # fmt: skip


def circuit_keys(provider: str, model: str | None) -> list[tuple[str, str, str | None]]:
    """(key, provider, model) of the circuits a create to `model` goes through: its provider's, its model's."""
    keys: list[tuple[str, str, str | None]] = [(provider, provider, None)]
    if model:
        keys.append((model, provider, model))
    return keys


@dataclass(frozen=True)
class Admission:
    """Whether a create may go out now; when not, why (`open`: the circuit is open or its probe is out;
    `busy`: enough creates are out at a failing model to open it, wait for their answers) and until when."""

    allowed: bool
    until: float | None = None
    why: Literal["open", "busy"] | None = None
    reserved: tuple[str, ...] = ()
    """The circuits this create holds a reservation on (given back when its outcome is recorded)."""
    probe: bool = False
    """This create is a half-open circuit's probe."""


CircuitKeys = Sequence[tuple[str, str, str | None, CircuitConfig]]
"""The circuits one create goes through: (key, provider, model, settings) each (see `circuit_keys`)."""


@dataclass(frozen=True)
class Admit:
    """Ask whether one create may go through `keys` now (answered by an `Admission`)."""

    keys: CircuitKeys
    owner: str


@dataclass(frozen=True)
class Outcome:
    """Count one create's outcome in `keys` (answered by the circuits as they now are); `held`: the circuits
    its admission reserved."""

    keys: CircuitKeys
    ok: bool
    held: Sequence[str]


CircuitOp = Admit | Outcome
"""One step of `Store.circuit_steps`: steps written together apply in their order, as one after another."""


def admit(c: Circuit, owner: str, now: float, cfg: CircuitConfig) -> Admission:
    """May one create go through `c` now? Updates `c` (a reservation, the probe)."""
    if c.pending and c.pending_at is not None and now - c.pending_at > PENDING_STALE_S:
        c.pending = 0
    if c.state == "open":
        if c.until_at is not None and now < c.until_at:
            return Admission(False, c.until_at, "open")
        c.state, c.probe_owner, c.pending, c.pending_at = "half-open", owner, 1, now
        return Admission(True, reserved=(c.key,), probe=True)
    if c.state == "half-open":
        if c.pending:  # the probe is out
            return Admission(False, now + min(cfg.cooldown_s, 5.0), "open")
        c.probe_owner, c.pending, c.pending_at = owner, 1, now
        return Admission(True, reserved=(c.key,), probe=True)
    if c.model is not None and c.failures and c.failures + c.pending >= cfg.failures:
        return Admission(False, now + 0.5, "busy")
    c.pending, c.pending_at = c.pending + 1, now
    return Admission(True, reserved=(c.key,))


def record(c: Circuit, ok: bool, reserved: bool, model: str | None, now: float, cfg: CircuitConfig) -> None:
    """Count one create's outcome (`ok`: it reached the model; else a transient failure) in `c`."""
    if reserved and c.pending:
        c.pending -= 1
    if c.window_at is None or now - c.window_at > WINDOW_S:
        c.window_at, c.ok_count, c.fail_count = now, 0, 0
    if ok:
        c.ok_count += 1
        c.failures, c.failing = 0, []
        if c.state != "closed":
            c.state, c.until_at, c.probe_owner, c.pending = "closed", None, None, 0
        return
    c.fail_count += 1
    c.failures += 1
    if model and model not in c.failing:
        c.failing = [*c.failing, model][-10:]
    total = c.ok_count + c.fail_count
    poor = cfg.min_success_rate > 0 and total >= cfg.min_calls and c.ok_count / total < cfg.min_success_rate
    trips = (c.failures >= cfg.failures or poor) and (c.model is not None or len(c.failing) >= 2)
    if c.state == "half-open" or (c.state == "closed" and trips):
        c.state, c.until_at, c.probe_owner, c.pending = "open", now + cfg.cooldown_s, None, 0


def _view(c: Circuit | None, cfg: CircuitConfig, now: float) -> dict[str, Any]:
    from .store.common import iso

    if c is None:
        c = Circuit(key="", provider="", model=None)
    return {
        "state": c.state,
        "consecutive_failures": c.failures,
        "open_until": iso(c.until_at) if c.state == "open" else None,
        "success_rate": c.success_rate() if c.window_at is not None and now - c.window_at <= WINDOW_S else None,
        "failures_to_open": cfg.failures,
        "cooldown_s": cfg.cooldown_s,
    }


def provider_circuits(circuits: list[Circuit], limits: Limits, now: float) -> list[dict[str, Any]]:
    """`GET /v1/providers`: every provider with limits or a circuit, each with its models'."""
    by_key = {c.key: c for c in circuits}
    names = sorted(set(limits.provider_names()) | {c.provider for c in circuits})
    out = []
    for name in names:
        models = sorted(
            {c.model for c in circuits if c.provider == name and c.model}
            | {m for m in limits.models if m.split("/", 1)[0] == name}
        )
        lim = limits.provider(name)
        out.append(
            {
                "provider": name,
                "circuit": _view(by_key.get(name), limits.circuit(name), now),
                "max_concurrent": lim.max_concurrent,
                "requests_per_minute": lim.requests_per_minute,
                "models": [
                    {
                        "model": m,
                        "circuit": _view(by_key.get(m), limits.circuit(name, m), now),
                        "max_concurrent": limits.model(m).max_concurrent,
                    }
                    for m in models
                ],
            }
        )
    return out

