"""Provider pace shared by every worker through the store.

`requests_per_minute` is a token bucket in the store (keyed by the provider's name): each worker takes a
batch of tokens at a time (about a quarter second's worth) and spends them locally, so all workers together
stay under the limit with a store write per batch, not per request. `creates_per_minute`, when set, is a
bucket of its own (keyed `<provider>:create`) that only the requests starting paid work spend.

A 429 seen by any worker is written to the store (hold until Retry-After, halve the pace of the provider's
requests bucket); the others read it within a control tick and their gates hold and slow down every request,
creates included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ..errors import StoreBusy
from ..providers.http import RateGate
from ..store.base import Store

log = logging.getLogger("reelflow.pace")

MAX_WAIT_S = 5.0
BUSY_TRIES = 30
"""Store-busy answers a request waits through (about 30 s) before its job's attempt fails."""


class SharedTokens:
    """A worker's share of one of the store's request buckets (`bucket`: the provider's name, or
    `<provider>:create`), refilled a batch at a time."""

    def __init__(self, store: Store, bucket: str, per_minute: float) -> None:
        self.store = store
        self.provider = bucket
        self.per_minute = per_minute
        self.batch = max(1, int(per_minute / 61.0 / 4))  # about a quarter second's worth per trip
        self._rate = per_minute / 61.0
        """Tokens the bucket gains a second at full pace."""
        self._next_trip = 0.0
        """No trip to the store before this (monotonic): after a short grant, the rest of a batch builds up."""
        self._tokens = 0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for one token. One trip to the store at a time: the requests that find the local tokens
        spent wait for that trip (and its sleep when the bucket is empty) instead of each asking in turn,
        which would cost a store write per request whenever the limit is what bounds the run."""
        busy = 0
        while self._tokens <= 0:
            async with self._lock:
                if self._tokens > 0:
                    break
                if (early := self._next_trip - time.monotonic()) > 0:
                    await asyncio.sleep(early)
                try:
                    granted, wait = await self.store.take_tokens(self.provider, self.batch, self.per_minute)
                except StoreBusy:  # every pooled connection in use (a burst, the minutes after an outage): the
                    busy += 1  # request waits for the store rather than fail the job it serves
                    if busy > BUSY_TRIES:
                        raise
                    await asyncio.sleep(min(0.05 * 2**busy, 1.0))
                    continue
                self._tokens += granted
                if not granted:  # come back when a whole batch is there, not at its next token
                    await asyncio.sleep(min(max(wait + (self.batch - 1) / self._rate, 0.01), MAX_WAIT_S))
                elif granted < self.batch:
                    self._next_trip = time.monotonic() + (self.batch - granted) / self._rate
        self._tokens -= 1


class SharedPace:
    """Connects the worker's providers' rate gates to the store."""

    def __init__(self, store: Store, rpm: dict[str, float], cpm: dict[str, float] | None = None) -> None:
        self.store = store
        self.rpm = rpm
        self.cpm = cpm or {}
        self._seen: dict[str, float] = {}
        self._pending: set[asyncio.Task[None]] = set()

    def attach(self, name: str, gate: RateGate) -> None:
        """Give `gate` the store-wide buckets (when the provider has requests_per_minute, creates_per_minute)
        and report its 429s."""
        if name in self.rpm:
            gate.shared = SharedTokens(self.store, name, self.rpm[name])
        if name in self.cpm:
            gate.shared_creates = SharedTokens(self.store, f"{name}:create", self.cpm[name])

        def report(retry_after_s: float | None) -> None:
            task = asyncio.ensure_future(self.store.report_throttle(name, retry_after_s))
            self._pending.add(task)
            task.add_done_callback(self._done)

        gate.report = report

    def _done(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not record a provider's 429 in the store: %s", task.exception())

    async def refresh(self, gates: dict[str, RateGate]) -> None:
        """Apply holds and slow-downs other workers recorded (called from the worker's control loop)."""
        paces = await self.store.provider_paces()
        now_wall, now_mono = time.time(), time.monotonic()
        for name, (hold_until, throttled_at) in paces.items():
            gate = gates.get(name)
            if gate is None:
                continue
            if hold_until > now_wall:
                gate.hold_until = max(gate.hold_until, now_mono + (hold_until - now_wall))
            if throttled_at > self._seen.get(name, 0.0):
                self._seen[name] = throttled_at
                gate.slow_down()

    async def close(self) -> None:
        for task in list(self._pending):
            with contextlib.suppress(Exception):
                await task


def gates_of(providers: Any) -> dict[str, RateGate]:
    """The rate gates of a worker's providers (those built on HttpAdapter)."""
    found: dict[str, RateGate] = {}
    for name in providers.names():
        gate = getattr(providers.get(name), "gate", None)
        if isinstance(gate, RateGate):
            found[name] = gate
    return found
