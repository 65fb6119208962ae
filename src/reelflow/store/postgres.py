"""The Store on PostgreSQL: psycopg 3 (async) through a connection pool, shared by any number of workers.

Every method is one short transaction. Claims lock their candidate jobs with `FOR UPDATE SKIP LOCKED`;
tenants, providers and models under a concurrency cap are counted under a per-cap advisory lock, so two
claimers cannot both take the last slot. Transactions that make jobs claimable send `NOTIFY reelflow_jobs`, and
`wait_for_work` returns as soon as one arrives (a dedicated LISTEN connection, re-established if it drops).
The rules live in `manager.py` (`StoreManager`); this file holds the pool, the retried transactions and the steps
PostgreSQL takes its own way (locked claims, batched outcome writes, settling under row locks, the hand-off's
count-down that leases, its second transaction, LISTEN/NOTIFY), whose statements are in `sql/postgres.sql`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from typing import Any, TypeVar, cast

import psycopg
from psycopg import AsyncConnection, AsyncCursor, errors
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .. import metrics
from ..errors import StoreBusy, StoreUnavailable
from .base import ClaimedJob, JobOutcome, ProgressReport
from .common import Statements, artifact_keys, loads, migration_scripts
from .manager import NO_NOTE, EventRow, Note, Released, StoreManager, Tx, Written

log = logging.getLogger(__name__)

T = TypeVar("T")
Cur = AsyncCursor[DictRow]
SQL = Statements("postgres")

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


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for `name` (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


MIGRATION_LOCK = lock_key("reelflow:migrate")


def _tenant_lock(tenant: str) -> int:
    return lock_key(f"reelflow:cap:t:{tenant}")


class _PgTx:
    """The shared statements (`manager.Tx`) on one cursor of a transaction."""

    def __init__(self, cur: Cur) -> None:
        self.cur = cur
        self.locked: dict[str, Any] = {}
        """Executions this transaction holds locked (FOR UPDATE), by id: their rows (id, tenant, webhook,
        webhook_events), which stay as they are while the lock is held."""
        self.count_down: dict[int, tuple[str, int, bool]] = {}
        """Dependents this transaction locked and has yet to count down (`_count_down`): job row -> (address,
        successes to count, whether it becomes ready)."""
        self.count_down_at = 0.0

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


async def _unprepared(tx: Tx, sql: str, args: Sequence[Any]) -> list[Any]:
    """The rows of `sql` planned for these very arguments (never a prepared statement's generic plan)."""
    assert isinstance(tx, _PgTx)
    await tx.cur.execute(sql, args, prepare=False)
    return await tx.cur.fetchall()


class _PgReads(_PgTx):
    """The shared reads (`manager.Tx`), each statement on its own pooled connection (autocommit)."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return await self.store._read(sql, args, one=True)

    async def all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return cast(list[Any], await self.store._read(sql, args, one=False))

    async def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        raise TypeError("reads only here: writes go through _in_tx")

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise TypeError("reads only here: writes go through _in_tx")

    for_update = ""


class PostgresStore(StoreManager):
    """Store on PostgreSQL. One instance per process; its pool is shared by every task of the process."""

    sql = SQL

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
        """How often the idle LISTEN connection is checked with `SELECT 1`."""
        self.outage_s = outage_s
        """How long a statement is retried while the database cannot be reached (restart, failover)."""
        self.pool_wait_s = pool_wait_s
        """How long a statement waits for a pooled connection; past it, a full pool answers StoreBusy."""
        self._pool: AsyncConnectionPool[AsyncConnection[DictRow]] | None = None
        self._ready = asyncio.Lock()
        self._migrated = False
        self._closed = False
        self.configure_limits()
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
                            await cur.execute(SQL.read_snapshot)
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
        async def run(cur: Cur) -> T:
            tx = _PgTx(cur)
            result = await fn(tx)
            await self._count_down(tx)  # whatever no lease or append counted down yet
            return result

        return await self._tx(run)

    async def _in_read(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        return await fn(_PgReads(self))

    async def _in_snapshot(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        return await self._tx(lambda cur: fn(_PgTx(cur)), read_only=True)

    async def _in_tx_if(
        self, probe: str, args: Sequence[Any], fn: Callable[[Tx], Coroutine[Any, Any, T]], default: T
    ) -> T:
        return default if await self._read(probe, args, one=True) is None else await self._in_tx(fn)

    async def _lock_in(self, tx: Tx, name: str) -> None:
        await tx.all(SQL.advisory_lock, (lock_key(name),))

    def _unsubscribed(self, tx: Tx, execution_ids: Collection[str]) -> bool:
        assert isinstance(tx, _PgTx)
        return all(i in tx.locked and tx.locked[i]["webhook"] is None for i in execution_ids)

    async def _notify_in(self, tx: Tx) -> None:
        """Delivered to every listening worker when the transaction commits."""
        await tx.all(SQL.notify, (CHANNEL,))

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
            await cur.execute(SQL.advisory_lock, (MIGRATION_LOCK,))
            await cur.execute(SQL.schema_table)
            await cur.execute(SQL.applied_migrations)
            done = {r["version"] for r in await cur.fetchall()}
            version = max(done, default=0)
            for v, name, sql in migration_scripts("postgres"):
                if v in done:
                    continue
                await cur.execute(sql.encode())
                await cur.execute(SQL.record_migration, (v, name, time.time()))
                version = max(version, v)
        return version

    # ------------------------------------------------------------------ claiming
    async def _pick(self, tx: Tx, limit: int, now: float, executions: list[str] | None) -> list[int]:
        """Also locks the jobs picked, for this transaction. Caps are counted under an advisory lock per capped
        tenant, provider and model that has ready jobs, held to the end of the transaction, so concurrent
        claimers count one after the other and never overshoot."""
        caps_p, caps_m = self._provider_caps, self._model_caps
        capped = bool(self._tenant_caps) or self._default_tenant_cap is not None
        # The tenants with queued jobs and, when tenants have caps, a first count of their running jobs (without
        # locks: it only passes over the full ones, so that they do not take the places of this round robin).
        caps_t: dict[str, int] = {}
        tenants: list[str] = []
        for r in await tx.all(SQL.queued_tenants.format(running=SQL.running_of_tenant if capped else "0")):
            if (cap := self._tenant_cap(r["name"])) is not None:
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
            probes = [(SQL.queued_provider, (p, p, now)) for p in sorted(caps_p)]
            probes += [(SQL.queued_model, (m, m, now)) for m in sorted(caps_m)]
            for r in await _unprepared(tx, " UNION ALL ".join(p[0] for p in probes), [a for p in probes for a in p[1]]):
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
            await tx.all(SQL.advisory_locks, (keys,))
        running_p: dict[str, int] = {}
        running_m: dict[str, int] = {}
        counts = [(sql, sorted(names)) for sql, names in ((SQL.running_providers, locked_p),
                                                          (SQL.running_models, locked_m)) if names]  # fmt: skip
        if counts:  # under the locks: exact
            for r in await tx.all(" UNION ALL ".join(c[0] for c in counts), [c[1] for c in counts]):
                (running_p if r["kind"] == "p" else running_m)[r["name"]] = int(r["n"])
        # Capped providers and models that are full, or that this claim holds no lock for, are left alone.
        skip_p = [p for p, cap in caps_p.items() if p not in locked_p or running_p.get(p, 0) >= cap]
        skip_m = [m for m, cap in caps_m.items() if m not in locked_m or running_m.get(m, 0) >= cap]
        only = [executions] if executions is not None else []
        rows = await tx.all(
            SQL.candidates.format(only=" " + SQL.candidates_only if only else ""),
            (tenants, [caps_t[t] if t in locked_t else None for t in tenants], now, *only, skip_p, skip_m, limit,
             limit),
        )  # fmt: skip
        queues: dict[str, list[tuple[int, str | None, str | None]]] = {name: [] for name in tenants}
        for r in rows:
            queues[r["tenant"]].append((r["id"], r["provider"], r["model"]))
        return self._round_robin(tenants, list(queues.values()), limit, running_p, running_m)

    async def _lease_rows(self, tx: Tx, owner: str, picked: list[int], lease_s: float, now: float) -> list[Any]:
        """Dependents this transaction released and has yet to count down are leased by the count-down itself."""
        assert isinstance(tx, _PgTx)
        rest = [i for i in picked if i not in tx.count_down]
        rows = await self._count_down(tx, {i for i in picked if i in tx.count_down}, owner, now + lease_s, now)
        if rest:
            rows += await tx.all(SQL.lease_jobs, (owner, now + lease_s, now, now, rest))
        return sorted(rows, key=lambda r: r["id"])

    async def _count_down(
        self, tx: _PgTx, lease: Collection[int] = (), owner: str = "", expires: float = 0.0, now: float = 0.0
    ) -> list[Any]:
        """Count down the dependents `_write_outcomes` locked, leasing those of `lease` to `owner` (their rows)."""
        if not tx.count_down:
            return []
        items = sorted(tx.count_down.items())
        tids, ns = [v[0] for _, v in items], [v[1] for _, v in items]
        tx.count_down = {}
        if not lease:
            await tx.run(SQL.count_down_rows, (tx.count_down_at, tids, ns))
            return []
        go = [job_row in lease and ready for job_row, (_, _, ready) in items]
        return await tx.all(SQL.count_down_lease, (tx.count_down_at, owner, expires, now, now, tids, ns, go))

    async def _dep_results(self, tx: Tx, rows: list[Any]) -> dict[tuple[str, str], dict[str, Any]]:
        """Read by the lease itself (`dep_results`, aligned with `depends_on`): no round trip."""
        return {
            (r["execution_id"], k): loads(result) or {}
            for r in rows
            if r["dep_results"] is not None
            for k, result in zip(loads(r["depends_on"]), r["dep_results"], strict=True)
        }

    async def _tenant_room(self, tx: Tx, caps: dict[str, int]) -> dict[str, int | None]:
        """The hand-off already holds row locks a claimer may be waiting for, so it only tries the tenants' locks
        and never waits on one here: a tenant whose lock another transaction holds gets None."""
        if not caps:
            return {}
        names = sorted(caps)
        locked = [r["name"] for r in await tx.all(SQL.try_tenant_locks, (names, [_tenant_lock(t) for t in names]))]
        room: dict[str, int | None] = dict.fromkeys(names)
        if locked:
            running = {r["tenant"]: int(r["n"]) for r in await tx.all(SQL.running_tenants, (locked,))}
            room.update({t: caps[t] - running.get(t, 0) for t in locked})
        return room

    async def _hand_off_rest(self, owner: str, jobs: list[tuple[int, str]], lease_s: float) -> list[ClaimedJob]:
        """The outcomes are written: a failure here leaves these jobs queued for the claims, no more. The first
        statement waits for the tenants' locks, holding no row yet (as a claim does); jobs another worker took
        meanwhile are passed over."""

        async def write(tx: Tx) -> list[ClaimedJob]:
            tenants = sorted({t for _, t in jobs})
            await tx.all(SQL.advisory_locks, (sorted(_tenant_lock(t) for t in tenants),))
            running = {r["tenant"]: int(r["n"]) for r in await tx.all(SQL.running_tenants, (tenants,))}
            room = {t: (self._tenant_cap(t) or 0) - running.get(t, 0) for t in tenants}
            mine: list[int] = []
            for job_row, tenant in jobs:
                if room[tenant] > 0:
                    room[tenant] -= 1
                    mine.append(job_row)
            claimed = await self._lease(tx, owner, mine, lease_s, time.time()) if mine else []
            if len(claimed) < len(jobs):
                await self._notify_in(tx)
            return claimed

        try:
            return await self._in_tx(write)
        except (psycopg.Error, StoreUnavailable) as exc:
            log.warning("hand-off of %d ready jobs failed (%s); they wait for a claim", len(jobs), exc)
            return []

    # ------------------------------------------------------------------ finishing
    async def _write_outcomes(
        self, tx: Tx, outcomes: list[JobOutcome], now: float, provider_ids: list[tuple[int, str, str]],
        results: Mapping[int, str],
    ) -> Written:  # fmt: skip
        """A batch in a fixed number of statements, whatever its size: one UPDATE per kind of outcome (succeeded,
        retry, failed or canceled), one for the dependents they release, one for the artifacts."""
        done = [o for o in outcomes if o.status == "succeeded"]
        # Provider ids of jobs succeeding here are written by the same UPDATE (one row version, not two); the
        # others first, on their own.
        succeeding = {o.job_row for o in done}
        inline = {job_row: pid for job_row, _, pid in provider_ids if job_row in succeeding}
        if rest := [item for item in provider_ids if item[0] not in inline]:
            await self._write_provider_ids(tx, rest, now)
        await self._write_notes(tx, [(o.job_row, o.owner, o.note) for o in outcomes if o.note is not None], now)
        retry = [o for o in outcomes if o.status == "retry"]
        ended = [o for o in outcomes if o.status not in ("succeeded", "retry")]
        rows: dict[int, Any] = {}  # by id(outcome): each statement says which of its outcomes wrote a row (`n`)
        if done:
            rows.update((id(done[r["n"] - 1]), r) for r in await tx.all(SQL.jobs_succeeded, (
                now, [o.job_row for o in done], [o.owner for o in done], [results[id(o)] for o in done],
                [float(o.cost_usd or 0.0) for o in done], [o.cache_key for o in done],
                [int(o.cache_hit) for o in done], [inline.get(o.job_row) for o in done], [o.seq for o in done],
                [o.finished_at(now) for o in done],
            )))  # fmt: skip
        if retry:
            rows.update((id(retry[r["n"] - 1]), r) for r in await tx.all(SQL.jobs_retry, (
                now, [o.job_row for o in retry], [o.owner for o in retry], [o.retry_at or now for o in retry],
                [o.error for o in retry], [bool(o.keep_provider_id) for o in retry],
                [bool(o.settled) for o in retry], [o.seq for o in retry],
            )))  # fmt: skip
        if ended:
            rows.update((id(ended[r["n"] - 1]), r) for r in await tx.all(SQL.jobs_ended, (
                [o.job_row for o in ended], [o.owner for o in ended], [o.status for o in ended],
                [o.error for o in ended], [o.cost_usd for o in ended], [o.seq for o in ended],
                [o.finished_at(now) for o in ended],
            )))  # fmt: skip
        # Each waiting dependent loses as many dependencies as succeeded here; `released_by` remembers which
        # finished job released it last, for its event.
        succeeded = [(o, rows[id(o)]) for o in done if id(o) in rows]
        released_by: dict[tuple[str, str], str] = {}
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for _, row in succeeded:
            for dep in loads(row["dependents"]) or []:
                released_by[(row["execution_id"], dep)] = row["key"]
                counts[(row["execution_id"], dep)] += 1
        released: dict[tuple[str, str], Released] = defaultdict(list)
        if counts and len(done) < len(outcomes):  # a failure may skip dependents: counted down at once
            pairs = sorted(counts)
            for r in await tx.all(
                SQL.count_down, ([p[0] for p in pairs], [p[1] for p in pairs], [counts[p] for p in pairs], now)
            ):
                if r["status"] == "queued":
                    by = (r["execution_id"], released_by[(r["execution_id"], r["key"])])
                    released[by].append((r["id"], r["key"], r["provider"], r["model"], r["tenant"]))
        elif counts:  # locked and read now, counted down with the hand-off's lease (`_count_down`)
            assert isinstance(tx, _PgTx)
            pairs = sorted(counts)
            tx.count_down_at = now
            for r in await tx.all(SQL.lock_dependents, ([p[0] for p in pairs], [p[1] for p in pairs])):
                n = counts[(r["execution_id"], r["key"])]
                tx.count_down[r["id"]] = (r["t"], n, r["deps_left"] - n <= 0)
                if r["deps_left"] - n <= 0:
                    by = (r["execution_id"], released_by[(r["execution_id"], r["key"])])
                    released[by].append((r["id"], r["key"], r["provider"], r["model"], r["tenant"]))
        if art := [(row["execution_id"], k) for o, row in succeeded for k in artifact_keys(o.result)]:
            await tx.run(SQL.insert_artifacts, (now, [a[0] for a in art], [a[1] for a in art]))
        return rows, {k: sorted(v) for k, v in released.items()}, inline

    async def _settling(
        self, tx: Tx, ids: list[str]
    ) -> tuple[list[Any], dict[str, dict[str, int]], dict[str, list[float]]]:
        """Under READ COMMITTED the counts, taken after the executions' locks, see the others' committed jobs."""
        assert isinstance(tx, _PgTx)
        executions = await tx.all(SQL.lock_settling, (ids,))
        tx.locked.update((r["id"], r) for r in executions)
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        running: dict[str, list[float]] = defaultdict(list)
        for r in await tx.all(SQL.settle_counts, (ids,)):
            counts[r["execution_id"]][r["status"]] = int(r["n"])
            if r["progress"]:
                running[r["execution_id"]] = list(r["progress"])
        return executions, counts, running

    async def _write_events(self, tx: Tx, events: list[EventRow]) -> list[Any]:
        """The executions are locked first (their appends one transaction at a time), unless this transaction
        holds them already (settled or appended to before): then their rows are known and no statement is sent."""
        assert isinstance(tx, _PgTx)
        await self._count_down(tx)  # the states webhooks carry show the dependents queued
        ids = sorted({e[0] for e in events})
        if missing := [i for i in ids if i not in tx.locked]:
            tx.locked.update((r["id"], r) for r in await tx.all(SQL.lock_subscribed, (missing,)))
        await tx.run(SQL.insert_events, tuple(list(col) for col in zip(*events, strict=True)))
        return [tx.locked[i] for i in ids if i in tx.locked]

    async def _set_provider_ids(self, tx: Tx, items: list[tuple[int, str, str]], now: float) -> list[Any]:
        job_rows, owners, pids = ([i[k] for i in items] for k in range(3))
        rows = await tx.all(SQL.set_provider_ids, (now, job_rows, owners, pids))
        return sorted(rows, key=lambda r: r["id"])

    async def _set_progress(self, tx: Tx, reports: list[ProgressReport]) -> dict[int, Any]:
        notes = [r.note or NO_NOTE for r in reports]
        rows = await tx.all(SQL.set_progress, (
            [r.job_row for r in reports], [r.owner for r in reports], [float(r.progress) for r in reports],
            [r.queue_position for r in reports], [n.phase for n in notes], [n.submitted_at for n in notes],
            [n.started_at for n in notes], [n.queued_s for n in notes],
        ))  # fmt: skip
        return {row["id"]: row for row in rows}

    async def _set_notes(self, tx: Tx, notes: list[Note]) -> set[int]:
        rows = await tx.all(SQL.set_notes, (
            [n[0] for n in notes], [n[1] for n in notes], [n[2].phase for n in notes],
            [n[2].submitted_at for n in notes], [n[2].started_at for n in notes], [n[2].queued_s for n in notes],
        ))  # fmt: skip
        return {r["id"] for r in rows}

    # ------------------------------------------------------------------ cache, deliveries
    async def _cache_hits(self, tx: Tx, wanted: list[tuple[str, str]]) -> list[tuple[tuple[str, str], Any]]:
        rows = await tx.all(SQL.cache_hits, ([t for t, _ in wanted], [k for _, k in wanted]))
        return [((r["tenant"], r["cache_key"]), r) for r in rows]

    async def _lease_deliveries(
        self, tx: Tx, owner: str, limit: int, lease_s: float, now: float, executions: list[str] | None
    ) -> list[Any]:
        only = [executions] if executions is not None else []
        sql = SQL.lease_deliveries.format(only=" AND execution_id = ANY(%s::text[])" if only else "")
        return await tx.all(sql, (owner, now + lease_s, now, now, *only, limit))

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
