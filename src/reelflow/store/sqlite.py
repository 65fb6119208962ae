"""The embedded default Store: one SQLite file in WAL mode, shared safely by many processes.

Every write is a short `BEGIN IMMEDIATE` transaction, so claims are exclusive across processes.
All database work runs on one dedicated thread per Store, so the event loop never blocks on it.
The rules and the statements both databases share live in `manager.py` (`StoreManager`); this file holds the
connection, the transactions (`_SQLiteTx` runs the shared statements on the thread) and what SQLite does its own
way: the claim's pick and lease, writing outcomes row by row, settling, the event log, the delivery claim.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, cast

from .. import metrics
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
    outcome_events,
    progress_event,
    running_events,
    settle,
)

T = TypeVar("T")


def sqlite_path(url: str) -> str:
    """`sqlite:///relative/or/absolute/path.db` (or `sqlite://:memory:`) to a filename."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    rest = url[len("sqlite://") :]
    if rest in ("", "/:memory:", ":memory:"):
        return ":memory:"
    return rest[1:] if rest.startswith("/") else rest


def _qs(n: int) -> str:
    return ",".join("?" * n)


def _chunks(items: Sequence[T], size: int = 500) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class _SQLiteTx:
    """The shared statements (`manager.Tx`) on one SQLite connection: `%s` parameters become `?`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.conn.execute(_sqlite_sql(sql), args).fetchone()

    async def all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self.conn.execute(_sqlite_sql(sql), args).fetchall()

    async def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self.conn.execute(_sqlite_sql(sql), args).rowcount

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(_sqlite_sql(sql), rows)

    for_update = ""

    def in_(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


@cache
def _sqlite_sql(sql: str) -> str:
    return sql.replace("%s", "?")


def _drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine of `_SQLiteTx` statements to its end, here and now: they never wait on anything."""
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coro.close()
    raise RuntimeError("a SQLite statement awaited something")


class SQLiteStore(StoreManager):
    """Store on SQLite. Safe to share one file between processes; use one instance per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_path(url)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reelflow-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._migrated = False
        self.configure_limits()
        self._rr_after = ""
        """The tenant served first by the last claim: the next claim starts after it (round robin)."""
        self._work = asyncio.Event()
        """Set when a write of this process made jobs claimable (`wait_for_work`); other processes are polled."""

    # ------------------------------------------------------------------ plumbing
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute("PRAGMA cache_size=-65536")
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if not self._migrated:
            await self.migrate()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        with metrics.settling():  # executions ended here are counted once the transaction commits
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    async def _in_tx(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        def write() -> T:
            with self._write() as conn:
                return _drive(fn(_SQLiteTx(conn)))

        return await self._run(write)

    async def _in_read(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        return await self._run(lambda: _drive(fn(_SQLiteTx(self._connect()))))

    async def _in_snapshot(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        def read() -> T:
            with self._read() as conn:
                return _drive(fn(_SQLiteTx(conn)))

        return await self._run(read)

    async def _settle_in(self, tx: Tx, exec_ids: set[str], now: float, events: list[EventRow]) -> None:
        self._settle(cast(_SQLiteTx, tx).conn, exec_ids, now, events)

    async def _append_in(self, tx: Tx, events: list[EventRow]) -> None:
        self._insert_events(cast(_SQLiteTx, tx).conn, events)

    async def _apply_in(self, tx: Tx, outcomes: list[JobOutcome], now: float) -> list[str]:
        return self._apply_outcomes(cast(_SQLiteTx, tx).conn, outcomes, now)

    def _announce(self) -> None:
        self._work.set()

    async def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, _close)
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ schema
    async def migrate(self) -> int:
        loop = asyncio.get_running_loop()
        version = await loop.run_in_executor(self._executor, self._migrate)
        self._migrated = True
        return version

    def _migrate(self) -> int:
        conn = self._connect()
        with self._write():
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            version = max(done, default=0)
            for v, name, sql in migration_scripts("sqlite"):
                if v in done:
                    continue
                for statement in _split_sql(sql):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (v, name, time.time()))
                version = v
        return version

    # ------------------------------------------------------------------ submission
    # ------------------------------------------------------------------ claiming
    async def claim(
        self, owner: str, limit: int, lease_s: float, *, executions: Collection[str] | None = None
    ) -> list[ClaimedJob]:
        only = sorted(executions) if executions is not None else None
        return await self._run(self._claim, owner, limit, lease_s, only)

    def _claim(self, owner: str, limit: int, lease_s: float, executions: list[str] | None = None) -> list[ClaimedJob]:
        now = time.time()
        conn = self._connect()
        # A cheap read first: an idle worker polls often and must not take the write lock for nothing.
        if conn.execute(
            "SELECT 1 FROM jobs WHERE status = 'queued' AND run_after <= ? LIMIT 1", (now,)
        ).fetchone() is None:
            return []
        if executions is not None and not executions:
            return []
        with self._write() as conn:
            picked = self._pick(conn, limit, now, executions)
            return self._lease(conn, owner, picked, lease_s, now) if picked else []

    def _lease(
        self, conn: sqlite3.Connection, owner: str, picked: list[int], lease_s: float, now: float
    ) -> list[ClaimedJob]:
        """Lease the jobs `picked` (those still queued) to `owner`, in the caller's write transaction."""
        rows = []
        for chunk in _chunks(picked):
            rows += conn.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?,"
                " lease_expires_at = ?, started_at = COALESCE(started_at, ?), progress = 0, queue_position = NULL,"
                " lease_seq = lease_seq + 1, intent_at = COALESCE(intent_at, ?),"
                " intent_seq = COALESCE(intent_seq, lease_seq + 1)"
                f" WHERE {guard('running')} AND id IN ({_qs(len(chunk))})"
                " RETURNING id, execution_id, key, type, provider, model, params, depends_on, attempts,"
                " max_attempts, provider_job_id, timeout_s, start_timeout_s, started_at, tenant, use_cache,"
                " cost_estimated, lease_seq, intent_at, intent_seq, failover",
                (owner, now + lease_s, now, now, *chunk),
            ).fetchall()
        if not rows:
            return []
        refusals = self._budget_refusals(rows, self._spent(conn, rows, now))
        exec_ids = sorted({r["execution_id"] for r in rows})
        events = running_events(rows, owner, now)
        deadlines: dict[str, float | None] = {}
        for chunk in _chunks(exec_ids):
            started = conn.execute(
                f"UPDATE executions SET status = 'running', started_at = ?, updated_at = ?"
                f" WHERE {guard('running', execution=True, frm='queued')} AND id IN ({_qs(len(chunk))})"
                " RETURNING id",
                (now, now, *chunk),
            ).fetchall()
            events += [(s[0], None, "execution.running", dumps({"status": "running"}), now) for s in started]
            for d in conn.execute(
                f"SELECT id, deadline FROM executions WHERE id IN ({_qs(len(chunk))})", chunk
            ):
                deadlines[d[0]] = d[1]
        needs: dict[str, set[str]] = defaultdict(set)
        deps_of = {r["id"]: loads(r["depends_on"]) for r in rows}
        for r in rows:
            needs[r["execution_id"]].update(deps_of[r["id"]])
        results: dict[tuple[str, str], dict[str, Any]] = {}
        for eid, keys in needs.items():
            if not keys:
                continue
            for key, res in conn.execute(
                f"SELECT key, result FROM jobs WHERE execution_id = ? AND key IN ({_qs(len(keys))})",
                (eid, *keys),
            ):
                results[(eid, key)] = loads(res) or {}
        self._insert_events(conn, events)
        return [
            claimed_job(r, deadlines.get(r["execution_id"]), results, refusals.get(r["id"]))
            for r in sorted(rows, key=lambda r: r["id"])
        ]

    def _pick(
        self, conn: sqlite3.Connection, limit: int, now: float, executions: list[str] | None = None
    ) -> list[int]:
        """Up to `limit` ready jobs to start: tenants in turn (round robin, so one tenant's big batch cannot
        starve another's single job), within a tenant by priority then age, skipping any job whose tenant,
        provider or model is at its concurrency cap (those stay queued; nothing spins on them)."""
        caps_p, caps_m = self._provider_caps, self._model_caps
        running_p: dict[str, int] = {}
        running_m: dict[str, int] = {}
        if caps_p:
            running_p = dict(
                conn.execute(
                    f"SELECT provider, COUNT(*) FROM jobs WHERE status = 'running' AND provider IN ({_qs(len(caps_p))})"
                    " GROUP BY provider",
                    list(caps_p),
                ).fetchall()
            )
        if caps_m:
            for model, n in conn.execute(
                "SELECT model, COUNT(*) FROM jobs WHERE status = 'running' AND model IS NOT NULL GROUP BY model"
            ):
                base = model.split(":", 1)[0]
                running_m[base] = running_m.get(base, 0) + n
        full_p = [p for p, cap in caps_p.items() if running_p.get(p, 0) >= cap]
        full_m = [m for m, cap in caps_m.items() if running_m.get(m, 0) >= cap]
        tenants = [
            r[0]
            for r in conn.execute(
                "WITH RECURSIVE t(name) AS ("
                " SELECT MIN(tenant) FROM jobs WHERE status = 'queued'"
                " UNION ALL SELECT (SELECT MIN(tenant) FROM jobs WHERE status = 'queued' AND tenant > t.name)"
                " FROM t WHERE t.name IS NOT NULL)"
                " SELECT name FROM t WHERE name IS NOT NULL"
            )
        ]
        caps_t = {t: cap for t in tenants if (cap := self._tenant_cap(t)) is not None}
        running_t: dict[str, int] = {}
        for chunk in _chunks(list(caps_t)):
            running_t.update(
                conn.execute(
                    f"SELECT tenant, COUNT(*) FROM jobs WHERE status = 'running' AND tenant IN ({_qs(len(chunk))})"
                    " GROUP BY tenant",
                    chunk,
                ).fetchall()
            )
        room_t = {t: min(limit, cap - running_t.get(t, 0)) for t, cap in caps_t.items()}
        tenants = [t for t in tenants if room_t.get(t, limit) > 0]  # a tenant at its cap waits its turn
        if not tenants:
            return []
        tenants = self._rotate(tenants, limit)
        where = "status = 'queued' AND tenant = ? AND run_after <= ?"
        extra: list[Any] = []
        if executions is not None:  # a wait's own worker: only the executions it waits for
            where += f" AND execution_id IN ({_qs(len(executions))})"
            extra += executions
        if full_p:
            where += f" AND (provider IS NULL OR provider NOT IN ({_qs(len(full_p))}))"
            extra += full_p
        if full_m:
            where += f" AND (model IS NULL OR model NOT IN ({_qs(len(full_m))}))"
            extra += full_m
        queues = [
            conn.execute(
                f"SELECT id, provider, model FROM jobs WHERE {where} ORDER BY priority DESC, id LIMIT ?",
                (tenant, now, *extra, room_t.get(tenant, limit)),
            ).fetchall()
            for tenant in tenants
        ]
        return self._round_robin(tenants, queues, limit, running_p, running_m)

    def _spent(self, conn: sqlite3.Connection, rows: list[sqlite3.Row], now: float) -> dict[str, float]:
        """For the budget check: each tenant's spending this month, its running jobs' estimates included."""
        return {
            tenant: float(
                conn.execute(
                    "SELECT COALESCE(SUM(CASE WHEN j.status = 'running' THEN j.cost_estimated"
                    " ELSE COALESCE(j.cost_actual, 0) END), 0)"
                    " FROM jobs j JOIN executions e ON e.id = j.execution_id"
                    " WHERE e.tenant = ? AND e.created_at >= ?"
                    " AND (j.status = 'running' OR j.cost_actual IS NOT NULL)",
                    (tenant, month_start(now)),
                ).fetchone()[0]
            )
            for tenant in self._budget_tenants(rows)
        }

    # ------------------------------------------------------------------ limits, usage, cache, pace
    async def cache_lookup_many(self, items: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        return await self._run(self._cache_lookup_many, items)

    def _cache_lookup_many(self, items: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        conn = self._connect()
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for tenant, cache_key in dict.fromkeys(items):
            row = conn.execute(
                "SELECT result, execution_id, key FROM jobs WHERE tenant = ? AND cache_key = ?"
                " AND status = 'succeeded' ORDER BY finished_at DESC LIMIT 1",
                (tenant, cache_key),
            ).fetchone()
            if row is not None:
                result = loads(row[0]) or {}
                result["cached_from"] = {"execution_id": row[1], "job": row[2]}
                found[(tenant, cache_key)] = dict(result)
        return found

    async def set_provider_ids(self, items: list[tuple[int, str, str]]) -> None:
        await self._run(self._set_provider_ids, items)

    def _set_provider_ids(self, items: list[tuple[int, str, str]]) -> None:
        with self._write() as conn:
            self._write_provider_ids(conn, items, time.time())

    def _write_provider_ids(self, conn: sqlite3.Connection, items: list[tuple[int, str, str]], now: float) -> None:
        events: list[EventRow] = []
        for job_id, owner, pid in sorted(items, key=lambda item: item[0]):  # events by job id, as on PostgreSQL
            row = conn.execute(
                "UPDATE jobs SET provider_job_id = ?, provider_submitted_at = ?, provider_phase = NULL,"
                " provider_started_at = NULL, provider_queued_s = NULL"
                " WHERE id = ? AND lease_owner = ? AND status = 'running' RETURNING execution_id, key",
                (pid, now, job_id, owner),
            ).fetchone()
            if row is not None:
                events.append((row[0], row[1], "job.submitted", dumps({"provider_job_id": pid}), now))
        self._insert_events(conn, events)

    async def report_progress(self, reports: list[ProgressReport]) -> None:
        await self._run(self._report_progress, reports)

    def _report_progress(self, reports: list[ProgressReport]) -> None:
        now = time.time()
        with self._write() as conn:
            events: list[EventRow] = []
            touched: set[str] = set()
            for r in reports:
                n = r.note or _NO_NOTE
                row = conn.execute(
                    "UPDATE jobs SET progress = ?, queue_position = ?, provider_phase = COALESCE(?, provider_phase),"
                    " provider_submitted_at = COALESCE(?, provider_submitted_at),"
                    " provider_started_at = COALESCE(provider_started_at, ?),"
                    " provider_queued_s = COALESCE(provider_queued_s, ?) WHERE id = ? AND lease_owner = ?"
                    " AND status = 'running' RETURNING execution_id, key",
                    (
                        r.progress, r.queue_position, n.phase, n.submitted_at, n.started_at, n.queued_s, r.job_id,
                        r.owner,
                    ),
                ).fetchone()
                if row is None:
                    continue
                if n.log is not None:
                    self._write_log(conn, r.job_id, n, now)
                if not r.event:
                    continue
                touched.add(row[0])
                data: dict[str, Any] = {"progress": r.progress}
                if r.queue_position is not None:
                    data["queue_position"] = r.queue_position
                if r.message:
                    data["message"] = r.message
                events.append((row[0], row[1], "job.progress", dumps(data), now))
            self._settle(conn, touched, now, events)
            self._insert_events(conn, events)

    def _write_notes(self, conn: sqlite3.Connection, notes: list[tuple[int, str, JobNote]], now: float) -> None:
        """What providers told about running attempts (phase, start, log), for the attempts that still hold
        their jobs. Called inside a progress or outcome write: never a transaction of its own."""
        for job_id, owner, note in notes:
            row = conn.execute(
                "UPDATE jobs SET provider_phase = COALESCE(?, provider_phase),"
                " provider_submitted_at = COALESCE(?, provider_submitted_at),"
                " provider_started_at = COALESCE(provider_started_at, ?),"
                " provider_queued_s = COALESCE(provider_queued_s, ?)"
                " WHERE id = ? AND lease_owner = ? AND status = 'running' RETURNING id",
                (note.phase, note.submitted_at, note.started_at, note.queued_s, job_id, owner),
            ).fetchone()
            if row is not None and note.log is not None:
                self._write_log(conn, job_id, note, now)

    def _write_log(self, conn: sqlite3.Connection, job_id: int, note: JobNote, now: float) -> None:
        """The attempt's log (`note.log`, not None) into the job's job_logs row."""
        if note.log is not None:
            old = conn.execute("SELECT * FROM job_logs WHERE job_id = ?", (job_id,)).fetchone()
            m = merged_log(None if old is None else dict(old), note.attempt, note.log, note.log_dropped)
            conn.execute(
                "INSERT INTO job_logs (job_id, attempt, earlier, earlier_dropped, current, current_dropped,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET"
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
        promoted = await self._run(self._finish_jobs, outcomes, provider_ids or [])
        if promoted:
            self._work.set()
        return promoted

    def _finish_jobs(self, outcomes: list[JobOutcome], provider_ids: list[tuple[int, str, str]]) -> list[str]:
        now = time.time()
        with self._write() as conn:
            if provider_ids:
                self._write_provider_ids(conn, provider_ids, now)
            self._write_notes(conn, [(o.job_id, o.owner, o.note) for o in outcomes if o.note is not None], now)
            return self._apply_outcomes(conn, outcomes, now)

    async def finish_and_claim(
        self,
        outcomes: list[JobOutcome],
        provider_ids: list[tuple[int, str, str]] | None,
        owner: str,
        limit: int,
        lease_s: float,
    ) -> tuple[list[str], list[ClaimedJob]]:
        """`finish_jobs`, and in the same transaction lease to `owner` up to `limit` of the jobs it made ready,
        as PostgreSQL does: jobs of a capped provider or model are left to the claim; the others skip the
        tenants' round robin, within their tenant's cap (the write lock is exclusive: no other claim counts)."""
        if not outcomes and not provider_ids:
            return [], []
        promoted, claimed = await self._run(self._finish_and_claim, outcomes, provider_ids or [], owner, limit, lease_s)
        if len(claimed) < len(promoted):  # the rest are for anyone
            self._work.set()
        return promoted, claimed

    def _finish_and_claim(
        self, outcomes: list[JobOutcome], provider_ids: list[tuple[int, str, str]], owner: str, limit: int,
        lease_s: float,
    ) -> tuple[list[str], list[ClaimedJob]]:
        now = time.time()
        ready: list[tuple[int, str | None, str | None, str]] = []
        with self._write() as conn:
            if provider_ids:
                self._write_provider_ids(conn, provider_ids, now)
            self._write_notes(conn, [(o.job_id, o.owner, o.note) for o in outcomes if o.note is not None], now)
            promoted = self._apply_outcomes(conn, outcomes, now, ready)
            room: dict[str, int | None] = {}
            for tenant, cap in self._capped_tenants(ready).items():
                running = conn.execute(
                    "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND tenant = ?", (tenant,)
                ).fetchone()[0]
                room[tenant] = cap - int(running)
            mine, _ = self._hand_off(ready, limit, room)  # the write lock is exclusive: no tenant is busy
            claimed = self._lease(conn, owner, mine, lease_s, now) if mine else []
        return promoted, claimed

    def _apply_outcomes(
        self,
        conn: sqlite3.Connection,
        outcomes: Iterable[JobOutcome],
        now: float,
        ready: list[tuple[int, str | None, str | None, str]] | None = None,
    ) -> list[str]:
        """Write the outcomes; return the keys of the dependents they made ready (and, when `ready` is given,
        add those jobs to it: id, provider, model family, tenant)."""
        events: list[EventRow] = []
        touched: set[str] = set()
        promoted: list[str] = []
        failed: dict[str, list[str]] = defaultdict(list)
        for o in outcomes:
            if o.status == "succeeded":
                row = conn.execute(
                    "UPDATE jobs SET status = 'succeeded', result = ?, cost_actual = ?, progress = 100,"
                    " finished_at = ?, lease_owner = NULL, lease_expires_at = NULL, queue_position = NULL,"
                    " error = NULL, cache_key = ?, cache_hit = ?, intent_at = NULL, intent_seq = NULL"
                    f" WHERE id = ? AND {guard('succeeded')} AND lease_owner = ? AND (? IS NULL OR lease_seq = ?)"
                    " RETURNING execution_id, key, dependents",
                    (
                        dumps(o.result or {}), o.cost_usd or 0.0, now, o.cache_key, int(o.cache_hit), o.job_id,
                        o.owner, o.seq, o.seq,
                    ),
                ).fetchone()
                if row is None:
                    continue
                eid, key = row[0], row[1]
                events += outcome_events(o, eid, key, 0, now)
                if keys := artifact_keys(o.result):
                    conn.executemany(
                        "INSERT OR IGNORE INTO artifacts (tenant, key, execution_id, created_at)"
                        " SELECT tenant, ?, id, ? FROM executions WHERE id = ?",
                        [(k, now, eid) for k in keys],
                    )
                dependents = loads(row[2])
                if dependents:
                    qs = _qs(len(dependents))
                    conn.execute(
                        f"UPDATE jobs SET deps_left = deps_left - 1 WHERE execution_id = ? AND key IN ({qs})"
                        f" AND {guard('queued', frm='waiting')}",
                        (eid, *dependents),
                    )
                    for job_id, k, provider, model, tenant in conn.execute(
                        f"UPDATE jobs SET status = 'queued', queued_at = ? WHERE execution_id = ?"
                        f" AND key IN ({qs}) AND {guard('queued', frm='waiting')} AND deps_left <= 0"
                        " RETURNING id, key, provider, model, tenant",
                        (now, eid, *dependents),
                    ).fetchall():
                        promoted.append(k)
                        if ready is not None:
                            ready.append((job_id, provider, model.split(":", 1)[0] if model else None, tenant))
                        events.append((eid, k, "job.queued", dumps({"after": key}), now))
            elif o.status == "retry":
                row = conn.execute(
                    "UPDATE jobs SET status = 'queued', run_after = ?, error = ?, lease_owner = NULL,"
                    " lease_expires_at = NULL, progress = 0, queue_position = NULL,"
                    " provider_job_id = CASE WHEN ? THEN provider_job_id END,"
                    " intent_at = CASE WHEN ? THEN NULL ELSE intent_at END,"
                    " intent_seq = CASE WHEN ? THEN NULL ELSE intent_seq END,"
                    f" queued_at = ? WHERE id = ? AND {guard('queued', frm='running')} AND lease_owner = ?"
                    " AND (? IS NULL OR lease_seq = ?) RETURNING execution_id, key, attempts",
                    (
                        o.retry_at or now, o.error, o.keep_provider_id, o.settled, o.settled, now, o.job_id, o.owner,
                        o.seq, o.seq,
                    ),
                ).fetchone()
                if row is None:
                    continue
                eid, key = row[0], row[1]
                if (move := failover_update(o)) is not None:
                    conn.execute(_sqlite_sql(FAILOVER_SQL), move)
                if o.uncount:
                    conn.execute(_sqlite_sql(UNCOUNT_SQL), (o.job_id,))
                events += outcome_events(o, eid, key, row[2], now)
            else:  # failed or canceled
                row = conn.execute(
                    "UPDATE jobs SET status = ?, error = ?, cost_actual = ?, finished_at = ?, lease_owner = NULL,"
                    " lease_expires_at = NULL, queue_position = NULL, intent_at = NULL, intent_seq = NULL"
                    f" WHERE id = ? AND {guard(o.status, frm='running')} AND lease_owner = ?"
                    " AND (? IS NULL OR lease_seq = ?) RETURNING execution_id, key, attempts",
                    (o.status, o.error, o.cost_usd, now, o.job_id, o.owner, o.seq, o.seq),
                ).fetchone()
                if row is None:
                    continue
                eid, key = row[0], row[1]
                events += outcome_events(o, eid, key, row[2], now)
                failed[eid].append(key)
            touched.add(eid)
        for eid, keys in failed.items():
            _drive(self._skip_after_failure(_SQLiteTx(conn), eid, keys, now, events))
        self._settle(conn, touched, now, events)
        self._insert_events(conn, events)
        return promoted

    def _settle(self, conn: sqlite3.Connection, exec_ids: set[str], now: float, events: list[EventRow]) -> None:
        """Re-derive each touched execution's status and progress from its jobs."""
        for chunk in _chunks(sorted(exec_ids)):
            qs = _qs(len(chunk))
            counts: dict[str, dict[str, int]] = defaultdict(dict)
            for eid, status, n in conn.execute(
                f"SELECT execution_id, status, COUNT(*) FROM jobs WHERE execution_id IN ({qs})"
                " GROUP BY execution_id, status",
                chunk,
            ):
                counts[eid][status] = n
            running: dict[str, list[float]] = defaultdict(list)
            for eid, p in conn.execute(
                f"SELECT execution_id, progress FROM jobs WHERE execution_id IN ({qs}) AND status = 'running'",
                chunk,
            ):
                running[eid].append(p)
            for ex in conn.execute(
                "SELECT id, status, progress, started_at, cancel_requested FROM executions"
                f" WHERE id IN ({qs})",
                chunk,
            ).fetchall():
                eid = ex["id"]
                action, status, progress = settle(ex, counts[eid], running[eid])
                if action == "end":
                    _drive(self._finish_execution(_SQLiteTx(conn), eid, status, progress, now, events))
                elif action == "update":
                    conn.execute(
                        "UPDATE executions SET status = ?, progress = ?, updated_at = ? WHERE id = ?",
                        (status, progress, now, eid),
                    )
                    events += progress_event(eid, ex["progress"], progress, now)

    def _insert_events(self, conn: sqlite3.Connection, events: list[EventRow]) -> None:
        if not events:
            return
        conn.executemany(
            "INSERT INTO events (execution_id, job_key, type, data, created_at) VALUES (?, ?, ?, ?, ?)", events
        )
        self._queue_webhooks(conn, events)

    def _queue_webhooks(self, conn: sqlite3.Connection, events: list[EventRow]) -> None:
        """Record the webhook deliveries these events call for, in the transaction that made them."""
        exec_ids = sorted({e[0] for e in events})
        subscribed: dict[str, tuple[str, str, list[str]]] = {}
        for chunk in _chunks(exec_ids):
            for eid, tenant, url, wanted in conn.execute(
                f"SELECT id, tenant, webhook, webhook_events FROM executions WHERE id IN ({_qs(len(chunk))})"
                " AND webhook IS NOT NULL",
                chunk,
            ):
                subscribed[eid] = (tenant, url, loads(wanted) or [])
        if subscribed:
            _drive(self._webhook_deliveries(_SQLiteTx(conn), events, subscribed))

    # ------------------------------------------------------------------ webhook deliveries
    async def claim_deliveries(
        self, owner: str, limit: int, lease_s: float, *, executions: Collection[str] | None = None
    ) -> list[Delivery]:
        only = sorted(executions) if executions is not None else None
        return await self._run(self._claim_deliveries, owner, limit, lease_s, only)

    def _claim_deliveries(
        self, owner: str, limit: int, lease_s: float, executions: list[str] | None = None
    ) -> list[Delivery]:
        now = time.time()
        only, only_args = "", []
        if executions is not None:
            if not executions:
                return []
            only, only_args = f" AND execution_id IN ({_qs(len(executions))})", list(executions)
        conn = self._connect()
        if conn.execute(
            "SELECT 1 FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= ?"
            " AND (lease_expires_at IS NULL OR lease_expires_at < ?) LIMIT 1",
            (now, now),
        ).fetchone() is None:
            return []
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE webhook_deliveries SET lease_owner = ?, lease_expires_at = ?"
                " WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= ?"
                f"   AND (lease_expires_at IS NULL OR lease_expires_at < ?){only} ORDER BY next_attempt_at LIMIT ?)"
                " RETURNING id, execution_id, tenant, url, event_type, payload, attempts, created_at, retry_from",
                (owner, now + lease_s, now, now, *only_args, limit),
            ).fetchall()
            secrets = {
                r[0]: r[1]
                for r in conn.execute(
                    f"SELECT name, webhook_secret FROM tenants WHERE name IN ({_qs(len({x[2] for x in rows}))})",
                    sorted({x[2] for x in rows}),
                )
            } if rows else {}
        return [
            Delivery(
                id=r[0], execution_id=r[1], tenant=r[2], url=r[3], event_type=r[4], payload=r[5], attempts=r[6],
                created_at=r[7], secret=secrets.get(r[2], ""), retry_from=r[8],
            )
            for r in rows
        ]

    async def wait_for_work(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a write of this process that made jobs claimable (a submission,
        a resume, released or promoted jobs); True as soon as one happened. Other processes' writes are seen by
        the worker's next poll."""
        if not self._work.is_set():
            try:
                await asyncio.wait_for(self._work.wait(), max(0.0, timeout))
            except TimeoutError:
                return False
        self._work.clear()
        return True

_NO_NOTE = JobNote(attempt=0)
"""What a progress report without a note writes: nothing more."""


def _split_sql(sql: str) -> list[str]:
    """Split a migration file into statements (a trigger's BEGIN … END is one, semicolons inside and all)."""
    statements: list[str] = []
    pending = ""
    for line in sql.splitlines():
        if line.strip().startswith("--"):
            continue
        pending += line + "\n"
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip().removesuffix(";").strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())
    return [st for st in statements if st]
