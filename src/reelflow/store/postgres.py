"""The Store on PostgreSQL: psycopg 3 (async) through a connection pool, shared by any number of workers.

Every method is one short transaction. Claims lock their candidate jobs with `FOR UPDATE SKIP LOCKED`;
tenants, providers and models under a concurrency cap are counted under a per-cap advisory lock, so two
claimers cannot both take the last slot. Transactions that make jobs claimable send `NOTIFY reelflow_jobs`, and
`wait_for_work` returns as soon as one arrives (a dedicated LISTEN connection, re-established if it drops).
The rules and the statements both databases share live in `manager.py` (`StoreManager`); this file holds the pool,
the retried transactions and what PostgreSQL does its own way: locked claims, batched outcome writes, settling
under row locks, the hand-off, the event log, the delivery claim, LISTEN/NOTIFY.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Sequence
from typing import Any, TypeVar, cast

import psycopg
from psycopg import AsyncConnection, AsyncCursor, errors
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .. import metrics
from ..errors import StoreBusy, StoreUnavailable
from ..states import (
    guard,
)
from .base import (
    ClaimedJob,
    Delivery,
    JobNote,
    JobOutcome,
    ProgressReport,
)
from .common import (
    artifact_keys,
    dumps,
    loads,
    merged_log,
    migration_scripts,
    month_start,
)
from .manager import (
    FAILOVER_SQL,
    UNCOUNT_SQL,
    EventRow,
    StoreManager,
    Tx,
    claimed_job,
    failover_update,
    model_family,
    outcome_events,
    progress_event,
    running_events,
    settle,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Cur = AsyncCursor[DictRow]

CHANNEL = "reelflow_jobs"
"""The NOTIFY channel: a transaction made jobs claimable."""

_RETRIED = (errors.DeadlockDetected, errors.SerializationFailure)


def disconnected(exc: BaseException) -> bool:
    """The error says the server is out of reach (down, restarting, connection dropped), not that the
    statement was wrong."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(
        exc, (errors.AdminShutdown, errors.CrashShutdown, errors.CannotConnectNow, errors.ConnectionException)
    ):
        return True
    return isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None


_NO_NOTE = JobNote(attempt=0)
"""What a progress report without a note writes: nothing more."""


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for `name` (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


MIGRATION_LOCK = lock_key("reelflow:migrate")


class _PgTx:
    """The shared statements (`manager.Tx`) on one cursor of a transaction."""

    def __init__(self, cur: Cur) -> None:
        self.cur = cur

    async def one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        await self.cur.execute(sql, args)
        return await self.cur.fetchone()

    async def all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        await self.cur.execute(sql, args)
        return await self.cur.fetchall()

    async def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        await self.cur.execute(sql, args)
        return self.cur.rowcount

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.cur.executemany(sql, rows)

    for_update = " FOR UPDATE"

    def in_(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(%s)", [list(values)]


class _PgReads:
    """The shared reads (`manager.Tx`), each statement on its own pooled connection (autocommit)."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return await self.store._one(sql, args)

    async def all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return await self.store._all(sql, args)

    async def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        raise TypeError("reads only here: writes go through _in_tx")

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise TypeError("reads only here: writes go through _in_tx")

    for_update = ""

    def in_(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(%s)", [list(values)]


class PostgresStore(StoreManager):
    """Store on PostgreSQL. One instance per process; its pool is shared by every task of the process."""

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        listen_check_s: float = 5.0,
        outage_s: float = 30.0,
        pool_wait_s: float = 5.0,
    ) -> None:
        if not url.startswith(("postgresql:", "postgres:")):
            raise ValueError(f"not a PostgreSQL URL: {url!r}")
        if min_connections < 1 or max_connections < min_connections:
            raise ValueError(
                f"need 1 <= min_connections <= max_connections, got {min_connections} and {max_connections}"
            )
        self.url = url
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.listen_check_s = listen_check_s
        self.outage_s = outage_s
        """How long a statement is retried while the database cannot be reached (restart, failover)."""
        self.pool_wait_s = pool_wait_s
        """How long a statement waits for a pooled connection; past it, a full pool answers StoreBusy."""
        """How often the idle LISTEN connection is checked with `SELECT 1`."""
        self._pool: AsyncConnectionPool[AsyncConnection[DictRow]] | None = None
        self._ready = asyncio.Lock()
        self._migrated = False
        self._closed = False
        self.configure_limits()
        self._claims_full = False
        """The last claim filled its batch: the next one skips the look for ready jobs."""
        self._rr_after = ""
        """The tenant served first by the last claim: the next claim starts after it (round robin)."""
        self._work = asyncio.Event()
        self._listening = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self.listen_pid: int | None = None
        """Backend pid of the LISTEN connection while it is up (tests terminate it)."""
        self.listen_connects = 0

    # ------------------------------------------------------------------ plumbing
    async def _open_pool(self) -> AsyncConnectionPool[AsyncConnection[DictRow]]:
        if self._closed:
            raise RuntimeError("this PostgresStore is closed")
        if self._pool is None:
            pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
                self.url,
                min_size=self.min_connections,
                max_size=self.max_connections,
                kwargs={"autocommit": True, "row_factory": dict_row},
                connection_class=AsyncConnection[DictRow],
                open=False,
                name="reelflow",
                timeout=self.pool_wait_s,  # waiting longer: PoolTimeout, then `_busy` or `_outage` takes over
            )
            try:
                await pool.open(wait=True, timeout=min(10.0, self.outage_s))
            except BaseException:
                await pool.close()
                raise
            self._pool = pool
        return self._pool

    async def _ensure(self) -> AsyncConnectionPool[AsyncConnection[DictRow]]:
        if self._pool is not None and self._migrated:
            return self._pool
        async with self._ready:
            pool = await self._open_pool()
            if not self._migrated:
                await self._migrate(pool)
                self._migrated = True
            return pool

    async def _tx(self, fn: Callable[[Cur], Awaitable[T]], *, read_only: bool = False) -> T:
        """Run `fn` in one transaction. Retried on deadlock or serialization failure, and while the database
        cannot be reached (a restart, a failover) for up to `outage_s`; after that, StoreUnavailable."""
        attempt = 0
        lost_since: float | None = None
        while True:
            try:
                pool = await self._ensure()
                with metrics.settling():  # executions ended here are counted once the transaction commits
                    async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                        if read_only:
                            await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                        return await fn(cur)
            except _RETRIED:
                attempt += 1
                if attempt >= 8:
                    raise
                await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
            except (psycopg.Error, PoolTimeout) as exc:
                self._busy(exc)
                lost_since = await self._outage(exc, lost_since)

    async def _in_tx(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        return await self._tx(lambda cur: fn(_PgTx(cur)))

    async def _in_read(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        return await fn(_PgReads(self))

    async def _in_snapshot(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        return await self._tx(lambda cur: fn(_PgTx(cur)), read_only=True)

    async def _settle_in(self, tx: Tx, exec_ids: set[str], now: float, events: list[EventRow]) -> None:
        await self._settle(cast(_PgTx, tx).cur, exec_ids, now, events)

    async def _append_in(self, tx: Tx, events: list[EventRow]) -> None:
        await self._insert_events(cast(_PgTx, tx).cur, events)

    async def _apply_in(self, tx: Tx, outcomes: list[JobOutcome], now: float) -> list[str]:
        return await self._apply_outcomes(cast(_PgTx, tx).cur, outcomes, now)

    async def _lock_in(self, tx: Tx, name: str) -> None:
        await cast(_PgTx, tx).cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(name),))

    async def _notify_in(self, tx: Tx) -> None:
        await self._notify(cast(_PgTx, tx).cur)

    async def _read(self, sql: str, args: Sequence[Any], *, one: bool) -> Any:
        """A single read statement (autocommit), retried like `_tx` while the database is unreachable."""
        lost_since: float | None = None
        while True:
            try:
                pool = await self._ensure()
                async with pool.connection() as conn, conn.cursor() as cur:
                    await cur.execute(sql, args)
                    return await (cur.fetchone() if one else cur.fetchall())
            except (psycopg.Error, PoolTimeout) as exc:
                self._busy(exc)
                lost_since = await self._outage(exc, lost_since)

    async def _one(self, sql: str, args: Sequence[Any] = ()) -> DictRow | None:
        """One row of a single read statement (autocommit)."""
        row: DictRow | None = await self._read(sql, args, one=True)
        return row

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[DictRow]:
        rows: list[DictRow] = await self._read(sql, args, one=False)
        return rows

    def _busy(self, exc: BaseException) -> None:
        """A wait for a pooled connection that timed out while the pool holds all its connections, each in use:
        the database is up and busy, not away. StoreBusy at once (503 "busy"), never logged as an outage. (In an
        outage the pool's connections break and are dropped, so the pool is not full.)"""
        if not isinstance(exc, PoolTimeout) or self._pool is None:
            return
        stats = self._pool.get_stats()
        if stats.get("pool_size", 0) >= self.max_connections and stats.get("pool_available", 0) == 0:
            raise StoreBusy(
                f"the database is busy: all {self.max_connections} pooled connections stayed in use while this"
                " waited for one"
            ) from None

    async def _outage(self, exc: BaseException, since: float | None) -> float:
        """Re-raise `exc` unless it says the database is out of reach; then drop the pool's dead connections,
        wait a little and return when the outage began, or raise StoreUnavailable once it lasted `outage_s`.

        A statement that failed with its connection may have committed (the connection died during the
        COMMIT). Running it again is harmless for the worker's writes, which only apply to the attempt and state
        they expect; a claim that committed unseen is handed back by the worker's next heartbeat; a submission
        finds itself stored (its id is chosen before the transaction) and answers it."""
        if not disconnected(exc):
            raise exc
        now = time.monotonic()
        if since is None:
            since = now
            log.warning("PostgreSQL unreachable (%s); retrying for up to %.0f s", str(exc).strip(), self.outage_s)
        if now - since >= self.outage_s:
            raise StoreUnavailable(
                f"the database has been unreachable for {now - since:.0f} s: {str(exc).strip()}"
            ) from exc
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.check()  # broken idle connections are replaced, not handed out again
        await asyncio.sleep(min(1.0, max(0.05, (now - since) / 2)))  # waits grow with the outage, up to 1 s
        return since

    async def close(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @staticmethod
    async def _notify(cur: Cur) -> None:
        """Tell every listening worker that jobs became claimable (delivered when the transaction commits)."""
        await cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))

    # ------------------------------------------------------------------ schema
    async def migrate(self) -> int:
        async with self._ready:
            pool = await self._open_pool()
            version = await self._migrate(pool)
            self._migrated = True
            return version

    @staticmethod
    async def _migrate(pool: AsyncConnectionPool[AsyncConnection[DictRow]]) -> int:
        """Apply pending migrations under a transaction-scoped advisory lock: processes starting together
        wait for the first one and then find nothing left to do."""
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, name TEXT, applied_at DOUBLE PRECISION)"
            )
            await cur.execute("SELECT version FROM schema_migrations")
            done = {r["version"] for r in await cur.fetchall()}
            version = max(done, default=0)
            for v, name, sql in migration_scripts("postgres"):
                if v in done:
                    continue
                await cur.execute(sql.encode())
                await cur.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                    (v, name, time.time()),
                )
                version = max(version, v)
        return version

    # ------------------------------------------------------------------ claiming
    async def claim(
        self, owner: str, limit: int, lease_s: float, *, executions: Collection[str] | None = None
    ) -> list[ClaimedJob]:
        if limit <= 0 or (executions is not None and not executions):
            return []
        only = sorted(executions) if executions is not None else None
        # A cheap read first: an idle worker polls often and must not open a write transaction for nothing.
        # Skipped while claims come back full: there is surely more.
        if not self._claims_full and (
            await self._one("SELECT 1 FROM jobs WHERE status = 'queued' AND run_after <= %s LIMIT 1", (time.time(),))
            is None
        ):
            return []
        claimed = await self._tx(lambda cur: self._claim(cur, owner, limit, lease_s, executions=only))
        self._claims_full = len(claimed) >= limit and only is None
        return claimed

    async def _claim(
        self,
        cur: Cur,
        owner: str,
        limit: int,
        lease_s: float,
        picked: list[int] | None = None,
        executions: list[str] | None = None,
    ) -> list[ClaimedJob]:
        """Lease `picked` (chosen by `_pick` when not given, among `executions` when given) to `owner`."""
        now = time.time()
        if picked is None:
            picked = await self._pick(cur, limit, now, executions)
        if not picked:
            return []
        await cur.execute(
            "UPDATE jobs j SET status = 'running', attempts = j.attempts + 1, lease_owner = %s,"
            " lease_expires_at = %s, started_at = COALESCE(j.started_at, %s), progress = 0, queue_position = NULL,"
            " lease_seq = j.lease_seq + 1, intent_at = COALESCE(j.intent_at, %s),"
            " intent_seq = COALESCE(j.intent_seq, j.lease_seq + 1)"
            f" FROM executions e WHERE e.id = j.execution_id AND {guard('running', 'j.status')}"
            " AND j.id = ANY(%b::bigint[])"
            " RETURNING j.id, j.execution_id, j.key, j.type, j.provider, j.model, j.params, j.depends_on, j.attempts,"
            " j.max_attempts, j.provider_job_id, j.timeout_s, j.start_timeout_s, j.started_at, j.tenant,"
            " j.use_cache, j.cost_estimated, e.deadline, j.lease_seq, j.intent_at, j.intent_seq, j.failover",
            (owner, now + lease_s, now, now, picked),
        )
        rows = sorted(await cur.fetchall(), key=lambda r: r["id"])
        if not rows:
            return []
        refusals = self._budget_refusals(rows, await self._spent(cur, rows, now))
        exec_ids = sorted({r["execution_id"] for r in rows})
        events = running_events(rows, owner, now)
        await cur.execute(
            "WITH s AS (UPDATE executions SET status = 'running', started_at = %s, updated_at = %s"
            f" WHERE {guard('running', execution=True, frm='queued')} AND id = ANY(%b::text[]) RETURNING id)"
            " SELECT id FROM s ORDER BY id",
            (now, now, exec_ids),
        )
        events += [
            (s["id"], None, "execution.running", dumps({"status": "running"}), now) for s in await cur.fetchall()
        ]
        deps_of = {r["id"]: loads(r["depends_on"]) for r in rows}
        pairs = sorted({(r["execution_id"], k) for r in rows for k in deps_of[r["id"]]})
        results: dict[tuple[str, str], dict[str, Any]] = {}
        if pairs:
            await cur.execute(
                "SELECT j.execution_id, j.key, j.result FROM jobs j"
                " JOIN unnest(%b::text[], %b::text[]) AS w(eid, k) ON j.execution_id = w.eid AND j.key = w.k",
                ([p[0] for p in pairs], [p[1] for p in pairs]),
            )
            for d in await cur.fetchall():
                results[(d["execution_id"], d["key"])] = loads(d["result"]) or {}
        await self._insert_events(cur, events)
        return [claimed_job(r, r["deadline"], results, refusals.get(r["id"])) for r in rows]

    async def _pick(self, cur: Cur, limit: int, now: float, executions: list[str] | None = None) -> list[int]:
        """Up to `limit` ready jobs to start, locked for this transaction: tenants in turn (round robin, so one
        tenant's big batch cannot starve another's single job), within a tenant by priority then age, skipping
        any job whose tenant, provider or model is at its concurrency cap (those stay queued; nothing spins on
        them).

        Caps are counted under an advisory lock per capped tenant, provider and model that has ready jobs, held
        to the end of the transaction, so concurrent claimers count one after the other and never overshoot."""
        caps_p, caps_m = self._provider_caps, self._model_caps
        tenant_capped = bool(self._tenant_caps) or self._default_tenant_cap is not None
        # The tenants with queued jobs and, when tenants have caps, a first count of their running jobs (without
        # locks: it only passes over the full ones, so that they do not take the places of this round robin).
        await cur.execute(
            "WITH RECURSIVE t(name) AS ("
            " SELECT MIN(tenant) FROM jobs WHERE status = 'queued'"
            " UNION ALL SELECT (SELECT MIN(tenant) FROM jobs WHERE status = 'queued' AND tenant > t.name)"
            " FROM t WHERE t.name IS NOT NULL)"
            " SELECT name, "
            + (
                "(SELECT COUNT(*) FROM jobs r WHERE r.status = 'running' AND r.tenant = t.name)"
                if tenant_capped
                else "0"
            )
            + " AS running FROM t WHERE name IS NOT NULL"
        )
        caps_t: dict[str, int] = {}
        tenants: list[str] = []
        for r in await cur.fetchall():
            cap = self._tenant_cap(r["name"])
            if cap is not None:
                if int(r["running"]) >= cap:
                    continue  # at its cap: waits its turn
                caps_t[r["name"]] = cap
            tenants.append(r["name"])
        if not tenants:
            return []
        tenants = self._rotate(tenants, limit)
        locked_t = {t for t in tenants if t in caps_t}
        locked_p: set[str] = set()
        locked_m: set[str] = set()
        if caps_p or caps_m:
            await cur.execute(
                "SELECT DISTINCT provider, split_part(model, ':', 1) AS base FROM jobs"
                " WHERE status = 'queued' AND run_after <= %s"
                " AND (provider = ANY(%b::text[]) OR split_part(model, ':', 1) = ANY(%b::text[]))",
                (now, list(caps_p), list(caps_m)),
            )
            for r in await cur.fetchall():
                if r["provider"] in caps_p:
                    locked_p.add(r["provider"])
                if r["base"] in caps_m:
                    locked_m.add(r["base"])
        keys = sorted(
            {lock_key(f"reelflow:cap:p:{p}") for p in locked_p}
            | {lock_key(f"reelflow:cap:m:{m}") for m in locked_m}
            | {lock_key(f"reelflow:cap:t:{t}") for t in locked_t}
        )
        if keys:  # in one order for every claimer (the array's): two claims never wait on each other in a circle
            await cur.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%b::bigint[]) AS k", (keys,))
        running_p: dict[str, int] = {}
        running_m: dict[str, int] = {}
        counts: list[str] = []
        args: list[Any] = []
        if locked_p:
            counts.append(
                "SELECT 'p' AS kind, provider AS name, COUNT(*) AS n FROM jobs"
                " WHERE status = 'running' AND provider = ANY(%b::text[]) GROUP BY provider"
            )
            args.append(sorted(locked_p))
        if locked_m:
            counts.append(
                "SELECT 'm' AS kind, split_part(model, ':', 1) AS name, COUNT(*) AS n FROM jobs"
                " WHERE status = 'running' AND split_part(model, ':', 1) = ANY(%b::text[]) GROUP BY 2"
            )
            args.append(sorted(locked_m))
        if counts:  # under the locks: exact
            await cur.execute(" UNION ALL ".join(counts), args)
            for r in await cur.fetchall():
                (running_p if r["kind"] == "p" else running_m)[r["name"]] = int(r["n"])
        # Capped providers and models that are full, or that this claim holds no lock for, are left alone.
        skip_p = [p for p, cap in caps_p.items() if p not in locked_p or running_p.get(p, 0) >= cap]
        skip_m = [m for m, cap in caps_m.items() if m not in locked_m or running_m.get(m, 0) >= cap]
        # One statement locks every candidate: each tenant's next ready jobs, as many as it has room for (a capped
        # tenant's running jobs are counted here, under its lock taken by the statement before), skipping rows
        # another claimer holds.
        await cur.execute(
            "SELECT c.id, c.tenant, c.provider, c.model"
            " FROM unnest(%b::text[], %b::int[]) WITH ORDINALITY AS t(name, cap, n)"
            " CROSS JOIN LATERAL (SELECT j.id, j.tenant, j.provider, j.model, j.priority FROM jobs j"
            "   WHERE j.status = 'queued' AND j.tenant = t.name AND j.run_after <= %s"
            + ("   AND j.execution_id = ANY(%b::text[])" if executions is not None else "")
            + "   AND (j.provider IS NULL OR j.provider <> ALL(%b::text[]))"
            "   AND (j.model IS NULL OR split_part(j.model, ':', 1) <> ALL(%b::text[]))"
            "   ORDER BY j.priority DESC, j.id"
            "   LIMIT CASE WHEN t.cap IS NULL THEN %s ELSE LEAST(%s, GREATEST(0, t.cap"
            "     - (SELECT COUNT(*) FROM jobs r WHERE r.status = 'running' AND r.tenant = t.name))) END"
            "   FOR UPDATE OF j SKIP LOCKED) c"
            " ORDER BY t.n, c.priority DESC, c.id",
            (
                tenants, [caps_t[t] if t in locked_t else None for t in tenants], now,
                *([executions] if executions is not None else []), skip_p, skip_m, limit, limit,
            ),
        )
        queues: dict[str, list[tuple[int, str | None, str | None]]] = {name: [] for name in tenants}
        for r in await cur.fetchall():
            queues[r["tenant"]].append((r["id"], r["provider"], r["model"]))
        return self._round_robin(tenants, list(queues.values()), limit, running_p, running_m)

    async def _spent(self, cur: Cur, rows: list[DictRow], now: float) -> dict[str, float]:
        """For the budget check: each tenant's spending this month, its running jobs' estimates included."""
        spent: dict[str, float] = {}
        for tenant in self._budget_tenants(rows):
            await cur.execute(
                "SELECT COALESCE(SUM(CASE WHEN j.status = 'running' THEN j.cost_estimated"
                " ELSE COALESCE(j.cost_actual, 0) END), 0) AS spent"
                " FROM jobs j JOIN executions e ON e.id = j.execution_id"
                " WHERE e.tenant = %s AND e.created_at >= %s"
                " AND (j.status = 'running' OR j.cost_actual IS NOT NULL)",
                (tenant, month_start(now)),
            )
            row = await cur.fetchone()
            spent[tenant] = float(row["spent"] if row else 0.0)
        return spent

    # ------------------------------------------------------------------ limits, usage, cache, pace
    async def cache_lookup_many(self, items: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        wanted = list(dict.fromkeys(items))
        if not wanted:
            return {}
        rows = await self._all(
            "SELECT w.tenant, w.cache_key, c.result, c.execution_id, c.key"
            " FROM unnest(%b::text[], %b::text[]) AS w(tenant, cache_key)"
            " CROSS JOIN LATERAL (SELECT j.result, j.execution_id, j.key FROM jobs j"
            "   WHERE j.tenant = w.tenant AND j.cache_key = w.cache_key AND j.status = 'succeeded'"
            "   ORDER BY j.finished_at DESC LIMIT 1) c",
            ([t for t, _ in wanted], [k for _, k in wanted]),
        )
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for r in rows:
            result = loads(r["result"]) or {}
            result["cached_from"] = {"execution_id": r["execution_id"], "job": r["key"]}
            found[(r["tenant"], r["cache_key"])] = dict(result)
        return found

    async def set_provider_ids(self, items: list[tuple[int, str, str]]) -> None:
        if not items:
            return

        await self._tx(lambda cur: self._write_provider_ids(cur, items, time.time()))

    async def _write_provider_ids(self, cur: Cur, items: list[tuple[int, str, str]], now: float) -> None:
        await cur.execute(
            "UPDATE jobs j SET provider_job_id = w.pid, provider_submitted_at = %s, provider_phase = NULL,"
            " provider_started_at = NULL, provider_queued_s = NULL"
            " FROM unnest(%b::bigint[], %b::text[], %b::text[])"
            " AS w(id, owner, pid) WHERE j.id = w.id AND j.lease_owner = w.owner AND j.status = 'running'"
            " RETURNING j.id, j.execution_id, j.key, j.provider_job_id",
            (now, [i[0] for i in items], [i[1] for i in items], [i[2] for i in items]),
        )
        rows = sorted(await cur.fetchall(), key=lambda r: r["id"])
        events: list[EventRow] = [
            (r["execution_id"], r["key"], "job.submitted", dumps({"provider_job_id": r["provider_job_id"]}), now)
            for r in rows
        ]
        await self._insert_events(cur, events)

    async def report_progress(self, reports: list[ProgressReport]) -> None:
        if not reports:
            return

        async def write(cur: Cur) -> None:
            now = time.time()
            events: list[EventRow] = []
            touched: set[str] = set()
            notes = [r.note or _NO_NOTE for r in reports]
            await cur.execute(
                "UPDATE jobs j SET progress = w.progress, queue_position = w.qp,"
                " provider_phase = COALESCE(w.phase, j.provider_phase),"
                " provider_submitted_at = COALESCE(w.submitted, j.provider_submitted_at),"
                " provider_started_at = COALESCE(j.provider_started_at, w.started),"
                " provider_queued_s = COALESCE(j.provider_queued_s, w.queued)"
                " FROM unnest(%b::bigint[], %b::text[], %b::float8[], %b::int[], %b::text[], %b::float8[],"
                "   %b::float8[], %b::float8[]) AS w(id, owner, progress, qp, phase, submitted, started, queued)"
                " WHERE j.id = w.id AND j.lease_owner = w.owner AND j.status = 'running'"
                " RETURNING j.id, j.execution_id, j.key",
                (
                    [r.job_id for r in reports], [r.owner for r in reports], [float(r.progress) for r in reports],
                    [r.queue_position for r in reports], [n.phase for n in notes], [n.submitted_at for n in notes],
                    [n.started_at for n in notes], [n.queued_s for n in notes],
                ),
            )  # fmt: skip
            updated = {row["id"]: row for row in await cur.fetchall()}
            await self._write_logs(cur, [(r.job_id, r.note) for r in reports if r.note and r.job_id in updated], now)
            for r in reports:
                if (row := updated.get(r.job_id)) is None or not r.event:
                    continue
                touched.add(row["execution_id"])
                data: dict[str, Any] = {"progress": r.progress}
                if r.queue_position is not None:
                    data["queue_position"] = r.queue_position
                if r.message:
                    data["message"] = r.message
                events.append((row["execution_id"], row["key"], "job.progress", dumps(data), now))
            await self._settle(cur, touched, now, events)
            await self._insert_events(cur, events)

        await self._tx(write)

    async def _write_notes(self, cur: Cur, notes: list[tuple[int, str, JobNote]], now: float) -> None:
        """What providers told about running attempts (phase, start, log), for the attempts that still hold
        their jobs. Called inside a progress or outcome write: never a transaction of its own."""
        if not notes:
            return
        await cur.execute(
            "UPDATE jobs j SET provider_phase = COALESCE(w.phase, j.provider_phase),"
            " provider_submitted_at = COALESCE(w.submitted, j.provider_submitted_at),"
            " provider_started_at = COALESCE(j.provider_started_at, w.started),"
            " provider_queued_s = COALESCE(j.provider_queued_s, w.queued)"
            " FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::float8[], %b::float8[], %b::float8[])"
            " AS w(id, owner, phase, submitted, started, queued)"
            " WHERE j.id = w.id AND j.lease_owner = w.owner AND j.status = 'running' RETURNING j.id",
            (
                [n[0] for n in notes], [n[1] for n in notes], [n[2].phase for n in notes],
                [n[2].submitted_at for n in notes], [n[2].started_at for n in notes], [n[2].queued_s for n in notes],
            ),
        )  # fmt: skip
        held = {r["id"] for r in await cur.fetchall()}
        await self._write_logs(cur, [(job_id, note) for job_id, _, note in notes if job_id in held], now)

    async def _write_logs(self, cur: Cur, notes: list[tuple[int, JobNote]], now: float) -> None:
        """The attempts' logs (the notes whose `log` is set) into their jobs' job_logs rows."""
        logged = [(job_id, note) for job_id, note in notes if note.log is not None]
        if not logged:
            return
        await cur.execute(
            "SELECT * FROM job_logs WHERE job_id = ANY(%b::bigint[]) FOR UPDATE", ([j for j, _ in logged],)
        )
        old = {r["job_id"]: r for r in await cur.fetchall()}
        for job_id, note in logged:
            assert note.log is not None
            m = merged_log(old.get(job_id), note.attempt, note.log, note.log_dropped)
            await cur.execute(
                "INSERT INTO job_logs (job_id, attempt, earlier, earlier_dropped, current, current_dropped,"
                " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (job_id) DO UPDATE SET"
                " attempt = excluded.attempt, earlier = excluded.earlier, earlier_dropped = excluded.earlier_dropped,"
                " current = excluded.current, current_dropped = excluded.current_dropped,"
                " updated_at = excluded.updated_at",
                (
                    job_id, m["attempt"], m["earlier"], m["earlier_dropped"], m["current"], m["current_dropped"], now,
                ),
            )  # fmt: skip

    # ------------------------------------------------------------------ finishing
    async def finish_jobs(
        self, outcomes: list[JobOutcome], provider_ids: list[tuple[int, str, str]] | None = None
    ) -> list[str]:
        if not outcomes and not provider_ids:
            return []

        async def write(cur: Cur) -> list[str]:
            now = time.time()
            if not outcomes:
                await self._write_provider_ids(cur, provider_ids or [], now)
                return []
            return await self._apply_outcomes(cur, outcomes, now, provider_ids=provider_ids)

        return await self._tx(write)

    async def _apply_outcomes(
        self,
        cur: Cur,
        outcomes: Iterable[JobOutcome],
        now: float,
        ready: list[tuple[int, str | None, str | None, str]] | None = None,
        provider_ids: list[tuple[int, str, str]] | None = None,
    ) -> list[str]:
        """Write a batch of outcomes in a fixed number of statements, whatever its size: one UPDATE per kind
        of outcome (succeeded, retry, failed or canceled), one for the dependents they release, one for the
        artifacts. Events keep the order of the outcomes."""
        outcomes = list(outcomes)
        done = [o for o in outcomes if o.status == "succeeded"]
        # Provider ids of jobs succeeding here are written by the same UPDATE (one row version, not two); the
        # others first, on their own.
        succeeding = {o.job_id for o in done}
        inline = {job_id: pid for job_id, _, pid in provider_ids or [] if job_id in succeeding}
        if rest := [item for item in provider_ids or [] if item[0] not in inline]:
            await self._write_provider_ids(cur, rest, now)
        await self._write_notes(cur, [(o.job_id, o.owner, o.note) for o in outcomes if o.note is not None], now)
        retry = [o for o in outcomes if o.status == "retry"]
        ended = [o for o in outcomes if o.status not in ("succeeded", "retry")]
        rows: dict[int, DictRow] = {}
        if done:
            await cur.execute(
                "UPDATE jobs j SET status = 'succeeded', result = w.result, cost_actual = w.cost, progress = 100,"
                " finished_at = %s, lease_owner = NULL, lease_expires_at = NULL, queue_position = NULL,"
                " error = NULL, cache_key = w.ck, cache_hit = w.hit, intent_at = NULL, intent_seq = NULL,"
                " provider_job_id = COALESCE(w.pid, j.provider_job_id),"
                " provider_submitted_at = CASE WHEN w.pid IS NULL THEN j.provider_submitted_at ELSE %s END"
                " FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::float8[], %b::text[], %b::int[], %b::text[],"
                "   %b::bigint[]) AS w(id, owner, result, cost, ck, hit, pid, seq)"
                f" WHERE j.id = w.id AND {guard('succeeded', 'j.status')} AND j.lease_owner = w.owner"
                " AND (w.seq IS NULL OR j.lease_seq = w.seq)"
                " RETURNING j.id, j.execution_id, j.key, j.dependents",
                (
                    now, now, [o.job_id for o in done], [o.owner for o in done], [dumps(o.result or {}) for o in done],
                    [float(o.cost_usd or 0.0) for o in done], [o.cache_key for o in done],
                    [int(o.cache_hit) for o in done], [inline.get(o.job_id) for o in done], [o.seq for o in done],
                ),
            )  # fmt: skip
            rows.update((r["id"], r) for r in await cur.fetchall())
        if retry:
            await cur.execute(
                "UPDATE jobs j SET status = 'queued', run_after = w.run_after, error = w.error, lease_owner = NULL,"
                " lease_expires_at = NULL, progress = 0, queue_position = NULL,"
                " provider_job_id = CASE WHEN w.keep THEN j.provider_job_id END, queued_at = %s,"
                " intent_at = CASE WHEN w.settled THEN NULL ELSE j.intent_at END,"
                " intent_seq = CASE WHEN w.settled THEN NULL ELSE j.intent_seq END"
                " FROM unnest(%b::bigint[], %b::text[], %b::float8[], %b::text[], %b::bool[], %b::bool[], %b::bigint[])"
                "   AS w(id, owner, run_after, error, keep, settled, seq)"
                f" WHERE j.id = w.id AND {guard('queued', 'j.status', frm='running')} AND j.lease_owner = w.owner"
                " AND (w.seq IS NULL OR j.lease_seq = w.seq)"
                " RETURNING j.id, j.execution_id, j.key, j.attempts",
                (
                    now, [o.job_id for o in retry], [o.owner for o in retry], [o.retry_at or now for o in retry],
                    [o.error for o in retry], [bool(o.keep_provider_id) for o in retry],
                    [bool(o.settled) for o in retry], [o.seq for o in retry],
                ),
            )  # fmt: skip
            rows.update((r["id"], r) for r in await cur.fetchall())
            moves = [u for o in retry if o.job_id in rows and (u := failover_update(o)) is not None]
            if moves:
                await cur.executemany(FAILOVER_SQL, moves)
            if waits := [(o.job_id,) for o in retry if o.job_id in rows and o.uncount]:
                await cur.executemany(UNCOUNT_SQL, waits)
        if ended:
            await cur.execute(
                "UPDATE jobs j SET status = w.status, error = w.error, cost_actual = w.cost, finished_at = %s,"
                " lease_owner = NULL, lease_expires_at = NULL, queue_position = NULL, intent_at = NULL,"
                " intent_seq = NULL"
                " FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::float8[], %b::bigint[])"
                "   AS w(id, owner, status, error, cost, seq)"
                f" WHERE j.id = w.id AND {guard('failed', 'j.status')} AND j.lease_owner = w.owner"
                " AND (w.seq IS NULL OR j.lease_seq = w.seq)"
                " RETURNING j.id, j.execution_id, j.key, j.attempts",
                (
                    now, [o.job_id for o in ended], [o.owner for o in ended], [o.status for o in ended],
                    [o.error for o in ended], [o.cost_usd for o in ended], [o.seq for o in ended],
                ),
            )  # fmt: skip
            rows.update((r["id"], r) for r in await cur.fetchall())

        # Dependents: each waiting one loses as many dependencies as succeeded in this batch, and is queued
        # when none are left. `released_by` remembers which finished job released it last, for its event.
        succeeded = [(o, rows[o.job_id]) for o in done if o.job_id in rows]
        released_by: dict[tuple[str, str], str] = {}
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for _, row in succeeded:
            for dep in loads(row["dependents"]) or []:
                released_by[(row["execution_id"], dep)] = row["key"]
                counts[(row["execution_id"], dep)] += 1
        queued: dict[tuple[str, str], int] = {}
        if counts:
            pairs = sorted(counts)
            await cur.execute(
                "UPDATE jobs j SET deps_left = j.deps_left - w.n,"
                " status = CASE WHEN j.deps_left - w.n <= 0 THEN 'queued' ELSE j.status END,"
                " queued_at = CASE WHEN j.deps_left - w.n <= 0 THEN %s ELSE j.queued_at END"
                " FROM unnest(%b::text[], %b::text[], %b::int[]) AS w(eid, key, n)"
                f" WHERE j.execution_id = w.eid AND j.key = w.key AND {guard('queued', 'j.status', frm='waiting')}"
                " RETURNING j.id, j.execution_id, j.key, j.status, j.provider, j.model, j.tenant",
                (now, [p[0] for p in pairs], [p[1] for p in pairs], [counts[p] for p in pairs]),
            )
            for r in await cur.fetchall():
                if r["status"] == "queued":
                    queued[(r["execution_id"], r["key"])] = r["id"]
                    if ready is not None:
                        ready.append((r["id"], r["provider"], model_family(r["model"]), r["tenant"]))
        art = [(row["execution_id"], k) for o, row in succeeded for k in artifact_keys(o.result)]
        if art:
            await cur.execute(
                "INSERT INTO artifacts (tenant, key, execution_id, created_at)"
                " SELECT e.tenant, w.key, e.id, %s FROM unnest(%b::text[], %b::text[]) AS w(eid, key)"
                " JOIN executions e ON e.id = w.eid ON CONFLICT DO NOTHING",
                (now, [a[0] for a in art], [a[1] for a in art]),
            )

        events: list[EventRow] = []
        touched: set[str] = set()
        promoted: list[str] = []
        failed: dict[str, list[str]] = defaultdict(list)
        release_order: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
        for (eid, dep), job_id in queued.items():
            release_order[(eid, released_by[(eid, dep)])].append((job_id, dep))
        for o in outcomes:
            found = rows.get(o.job_id)
            if found is None:
                continue
            eid, key = found["execution_id"], found["key"]
            touched.add(eid)
            if o.status == "succeeded":
                if (pid := inline.get(o.job_id)) is not None:
                    events.append((eid, key, "job.submitted", dumps({"provider_job_id": pid}), now))
                events += outcome_events(o, eid, key, 0, now)
                for _, dep in sorted(release_order.pop((eid, key), [])):
                    promoted.append(dep)
                    events.append((eid, dep, "job.queued", dumps({"after": key}), now))
            else:
                events += outcome_events(o, eid, key, found["attempts"], now)
                if o.status != "retry":
                    failed[eid].append(key)
        for eid, keys in failed.items():
            await self._skip_after_failure(_PgTx(cur), eid, keys, now, events)
        await self._settle(cur, touched, now, events)
        await self._insert_events(cur, events)
        if (promoted and ready is None) or any(o.job_id in rows for o in retry):
            await self._notify(cur)
        return promoted

    async def finish_and_claim(
        self,
        outcomes: list[JobOutcome],
        provider_ids: list[tuple[int, str, str]] | None,
        owner: str,
        limit: int,
        lease_s: float,
    ) -> tuple[list[str], list[ClaimedJob]]:
        """`finish_jobs`, and in the same transaction lease to `owner` up to `limit` of the jobs it made ready:
        the hand-off from a job to its dependent costs no notification and no separate claim. Jobs of a capped
        provider or model are left to the regular claim, which counts caps under their locks; the others skip
        the tenants' round robin (a pipeline under way goes on), within their tenant's cap (`_tenant_room`).
        A capped tenant whose lock a claim holds at that moment gets its jobs leased in a second, short
        transaction that waits for the lock before it touches any row (`_hand_off_busy`). Returns the promoted
        keys (those left queued were announced to the other workers) and the jobs claimed."""
        busy: list[tuple[int, str]] = []
        """Ready jobs of capped tenants whose lock was taken: for the second transaction."""

        async def write(cur: Cur) -> tuple[list[str], list[ClaimedJob]]:
            busy.clear()  # a retried transaction starts again
            now = time.time()
            ready: list[tuple[int, str | None, str | None, str]] = []
            if outcomes:
                promoted = await self._apply_outcomes(cur, outcomes, now, ready, provider_ids)
            else:
                await self._write_provider_ids(cur, provider_ids or [], now)
                promoted = []
            room = await self._tenant_room(cur, self._capped_tenants(ready)) if limit > 0 else {}
            mine, later = self._hand_off(ready, limit, room)
            busy.extend(later)
            claimed = await self._claim(cur, owner, limit, lease_s, picked=mine) if mine else []
            if len(claimed) + len(busy) < len(ready):  # the rest are for anyone
                await self._notify(cur)
            return promoted, claimed

        if not outcomes and not provider_ids:
            return [], []
        promoted, claimed = await self._tx(write)
        if busy:  # the outcomes are written: a failure here leaves these jobs queued for the claims, no more
            jobs = list(busy)
            try:
                claimed += await self._tx(lambda cur: self._hand_off_busy(cur, owner, jobs, lease_s))
            except (psycopg.Error, StoreUnavailable) as exc:
                log.warning("hand-off of %d ready jobs failed (%s); they wait for a claim", len(jobs), exc)
        return promoted, claimed

    async def _tenant_room(self, cur: Cur, caps: dict[str, int]) -> dict[str, int | None]:
        """For the hand-off: how many more jobs each capped tenant (tenant -> cap) may start now, or None for a
        tenant whose lock another transaction holds. The hand-off already holds row locks a claimer may be
        waiting for, so it only tries the tenants' locks and never waits on one here."""
        if not caps:
            return {}
        names = sorted(caps)
        await cur.execute(
            "SELECT t.name FROM unnest(%b::text[], %b::bigint[]) AS t(name, k) WHERE pg_try_advisory_xact_lock(t.k)",
            (names, [lock_key(f"reelflow:cap:t:{t}") for t in names]),
        )
        locked = [r["name"] for r in await cur.fetchall()]
        room: dict[str, int | None] = dict.fromkeys(names)
        if locked:
            await cur.execute(
                "SELECT tenant, COUNT(*) AS n FROM jobs WHERE status = 'running' AND tenant = ANY(%b::text[])"
                " GROUP BY tenant",
                (locked,),
            )
            running = {r["tenant"]: int(r["n"]) for r in await cur.fetchall()}
            room.update({t: caps[t] - running.get(t, 0) for t in locked})
        return room

    async def _hand_off_busy(
        self, cur: Cur, owner: str, jobs: list[tuple[int, str]], lease_s: float
    ) -> list[ClaimedJob]:
        """The rest of a hand-off: lease to `owner` the `jobs` (id, tenant) made ready by the transaction before,
        within their tenants' caps. The first statement waits for the tenants' locks, holding no row yet (as a
        claim does); jobs another worker took meanwhile are passed over."""
        tenants = sorted({t for _, t in jobs})
        keys = sorted(lock_key(f"reelflow:cap:t:{t}") for t in tenants)
        await cur.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%b::bigint[]) AS k", (keys,))
        await cur.execute(
            "SELECT tenant, COUNT(*) AS n FROM jobs WHERE status = 'running' AND tenant = ANY(%b::text[])"
            " GROUP BY tenant",
            (tenants,),
        )
        running = {r["tenant"]: int(r["n"]) for r in await cur.fetchall()}
        room = {t: (self._tenant_cap(t) or 0) - running.get(t, 0) for t in tenants}
        mine: list[int] = []
        for job_id, tenant in jobs:
            if room[tenant] > 0:
                room[tenant] -= 1
                mine.append(job_id)
        claimed = await self._claim(cur, owner, len(mine), lease_s, picked=mine) if mine else []
        if len(claimed) < len(jobs):
            await self._notify(cur)
        return claimed

    async def _settle(self, cur: Cur, exec_ids: set[str], now: float, events: list[EventRow]) -> None:
        """Re-derive each touched execution's status and progress from its jobs."""
        if not exec_ids:
            return
        ids = sorted(exec_ids)
        # Lock the executions before counting their jobs: two workers finishing the last two jobs of one
        # execution at once would each count the other's job as still running, and neither would end it.
        # Under READ COMMITTED the counts below, taken after the lock, see the other's committed jobs.
        await cur.execute(
            "SELECT id, status, progress, started_at, cancel_requested FROM executions WHERE id = ANY(%b::text[])"
            " ORDER BY id FOR UPDATE",
            (ids,),
        )
        executions = await cur.fetchall()
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        running: dict[str, list[float]] = defaultdict(list)
        await cur.execute(
            "SELECT execution_id, status, COUNT(*) AS n,"
            " array_agg(progress ORDER BY id) FILTER (WHERE status = 'running') AS progress"
            " FROM jobs WHERE execution_id = ANY(%b::text[]) GROUP BY execution_id, status",
            (ids,),
        )
        for r in await cur.fetchall():
            counts[r["execution_id"]][r["status"]] = int(r["n"])
            if r["progress"]:
                running[r["execution_id"]] = list(r["progress"])
        for ex in executions:
            eid = ex["id"]
            action, status, progress = settle(ex, counts[eid], running[eid])
            if action == "end":
                await self._finish_execution(_PgTx(cur), eid, status, progress, now, events)
            elif action == "update":
                await cur.execute(
                    "UPDATE executions SET status = %s, progress = %s, updated_at = %s WHERE id = %s",
                    (status, progress, now, eid),
                )
                events += progress_event(eid, ex["progress"], progress, now)

    async def _insert_events(self, cur: Cur, events: list[EventRow]) -> None:
        if not events:
            return
        # Lock the executions first: a reader paging by `seq` must never see a later event of an execution
        # commit before an earlier one, so appends to one execution's log happen one transaction at a time.
        # The same statement reads who subscribed to webhooks.
        await cur.execute(
            "SELECT id, tenant, webhook, webhook_events FROM executions WHERE id = ANY(%b::text[])"
            " ORDER BY id FOR UPDATE",
            (sorted({e[0] for e in events}),),
        )
        subscribed = {
            r["id"]: (r["tenant"], r["webhook"], loads(r["webhook_events"]) or [])
            for r in await cur.fetchall()
            if r["webhook"] is not None
        }
        await cur.execute(
            "INSERT INTO events (execution_id, job_key, type, data, created_at)"
            " SELECT e.execution_id, e.job_key, e.type, e.data, e.created_at"
            " FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::float8[]) WITH ORDINALITY"
            "   AS e(execution_id, job_key, type, data, created_at, n) ORDER BY n",
            tuple(list(col) for col in zip(*events, strict=True)),
        )
        if subscribed:
            await self._webhook_deliveries(_PgTx(cur), events, subscribed)

    # ------------------------------------------------------------------ webhook deliveries
    async def claim_deliveries(
        self, owner: str, limit: int, lease_s: float, *, executions: Collection[str] | None = None
    ) -> list[Delivery]:
        due = "status = 'pending' AND next_attempt_at <= %s AND (lease_expires_at IS NULL OR lease_expires_at < %s)"
        if executions is not None:
            if not executions:
                return []
            due += " AND execution_id = ANY(%s::text[])"
        extra: tuple[Any, ...] = (sorted(executions),) if executions is not None else ()
        now = time.time()
        if await self._one(f"SELECT 1 FROM webhook_deliveries WHERE {due} LIMIT 1", (now, now, *extra)) is None:
            return []

        async def write(cur: Cur) -> list[Delivery]:
            now = time.time()
            await cur.execute(
                "WITH d AS (UPDATE webhook_deliveries SET lease_owner = %s, lease_expires_at = %s"
                f" WHERE id IN (SELECT id FROM webhook_deliveries WHERE {due}"
                "   ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING id, execution_id, tenant, url, event_type, payload, attempts, created_at, next_attempt_at,"
                " retry_from)"
                " SELECT d.*, t.webhook_secret FROM d LEFT JOIN tenants t ON t.name = d.tenant"
                " ORDER BY d.next_attempt_at, d.id",
                (owner, now + lease_s, now, now, *extra, limit),
            )
            return [
                Delivery(
                    id=r["id"], execution_id=r["execution_id"], tenant=r["tenant"], url=r["url"],
                    event_type=r["event_type"], payload=r["payload"], attempts=r["attempts"],
                    created_at=r["created_at"], secret=r["webhook_secret"] or "", retry_from=r["retry_from"],
                )
                for r in await cur.fetchall()
            ]  # fmt: skip

        return await self._tx(write)

    # ------------------------------------------------------------------ LISTEN / NOTIFY
    async def wait_for_work(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a transaction that made jobs claimable (any process's); True as
        soon as one commits, or when one may have been missed (the LISTEN connection came back after a drop)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        if self._listener is None or self._listener.done():
            if self._closed:
                raise RuntimeError("this PostgresStore is closed")
            self._listener = asyncio.create_task(self._listen(), name="reelflow-pg-listen")
        if not self._listening.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._listening.wait(), max(0.0, deadline - loop.time()))
        if not self._work.is_set():
            try:
                await asyncio.wait_for(self._work.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return False
        self._work.clear()
        return True

    async def _listen(self) -> None:
        """Hold a LISTEN connection; check it with `SELECT 1` while idle; reconnect (backing off) when it drops."""
        backoff = 0.05
        first = True
        while True:
            conn: AsyncConnection[Any] | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                await conn.execute(f"LISTEN {CHANNEL}")
                self.listen_pid = conn.info.backend_pid
                self.listen_connects += 1
                self._listening.set()
                if not first:
                    self._work.set()  # something may have been notified while we were away: look once
                first = False
                backoff = 0.05
                while True:
                    async for _ in conn.notifies(timeout=self.listen_check_s):
                        self._work.set()
                    await conn.execute("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection dropped (or could not be made): try again shortly
                log.warning("reelflow LISTEN connection lost (%s); reconnecting in %.2f s", exc, backoff)
                self._listening.clear()
                self.listen_pid = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()


