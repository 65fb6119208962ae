"""The embedded default Store: one SQLite file in WAL mode, shared safely by many processes.

Every write is a short `BEGIN IMMEDIATE` transaction, so claims are exclusive across processes.
All database work runs on one dedicated thread per Store, so the event loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .. import metrics
from ..errors import Conflict, IdempotencyConflict, NotFound
from ..states import (
    RESUMABLE_JOB,
    TERMINAL_EXECUTION,
    guard,
)
from .base import (
    ApiKey,
    ClaimedJob,
    Delivery,
    Event,
    JobOutcome,
    NewExecution,
    OrphanedCancel,
    ProgressReport,
)
from .common import (
    IDEMPOTENCY_WINDOW_S,
    ORPHAN_CANCEL_S,
    artifact_keys,
    callback_matches,
    decode_cursor,
    delivery_view,
    dumps,
    encode_cursor,
    execution_summary,
    execution_view,
    loads,
    migration_scripts,
    month_start,
    new_webhook_secret,
    serves,
    unique_orphans,
    usage_refusal,
)
from .manager import (
    EventRow,
    StoreRules,
    claimed_job,
    end_event,
    ending,
    outcome_events,
    progress_event,
    running_events,
    settle,
    skips,
    webhook_executions,
    webhook_rows,
)
from .stats import Query, assemble_gauges, assemble_stats, gauge_queries, stats_queries

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


class SQLiteStore(StoreRules):
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
    async def create_execution(self, execution: NewExecution) -> str:
        execution_id = await self._run(self._create_execution, execution)
        self._work.set()
        return execution_id

    def _create_execution(self, ex: NewExecution) -> str:
        now = time.time()
        deadline = now + ex.timeout_s if ex.timeout_s else None
        with self._write() as conn:
            if ex.idempotency_key is not None:
                earlier = conn.execute(
                    "SELECT id, request_hash, created_at FROM executions WHERE tenant = ? AND idempotency_key = ?",
                    (ex.tenant, ex.idempotency_key),
                ).fetchone()
                if earlier is not None and earlier["created_at"] > now - IDEMPOTENCY_WINDOW_S:
                    if earlier["request_hash"] != ex.request_hash:
                        raise IdempotencyConflict(
                            f"Idempotency-Key {ex.idempotency_key!r} was already used for a different request"
                            f" (execution {earlier['id']}); use a new key for a new request"
                        )
                    return str(earlier["id"])
                if earlier is not None:  # older than the window: the key is free again
                    conn.execute("UPDATE executions SET idempotency_key = NULL WHERE id = ?", (earlier["id"],))
            self._ensure_tenant(conn, ex.tenant, now)
            if ex.usage_limit is not None:
                count, used = self._month_usage(conn, ex.tenant, now)
                refusal = usage_refusal(ex.tenant, ex.usage_limit, count, used, ex.cost_estimated)
                if refusal is not None:
                    raise refusal
            conn.execute(
                "INSERT INTO executions (id, tenant, status, plan, metadata, webhook, on_failure, priority,"
                " cost_estimated, deadline, retry_of, idempotency_key, request_hash, webhook_events,"
                " created_at, updated_at)"
                " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ex.id, ex.tenant, dumps(ex.plan), dumps(ex.metadata), ex.webhook, ex.on_failure,
                    ex.priority, ex.cost_estimated, deadline, ex.retry_of, ex.idempotency_key, ex.request_hash,
                    dumps(ex.webhook_events) if ex.webhook else None, now, now,
                ),
            )
            conn.executemany(
                "INSERT INTO jobs (execution_id, key, position, type, provider, model, params, depends_on,"
                " dependents, deps_left, status, priority, max_attempts, timeout_s, start_timeout_s,"
                " cost_estimated, created_at, queued_at, tenant, use_cache)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        ex.id, j.key, j.position, j.type, j.provider, j.model, dumps(j.params),
                        dumps(j.depends_on), dumps(j.dependents), len(j.depends_on),
                        "waiting" if j.depends_on else "queued", ex.priority, j.max_attempts,
                        j.timeout_s, j.start_timeout_s, j.cost_estimated, now,
                        None if j.depends_on else now, ex.tenant, int(j.cache),
                    )
                    for j in ex.jobs
                ],
            )
            self._insert_events(
                conn, [(ex.id, None, "execution.created", dumps({"status": "queued", "jobs": len(ex.jobs)}), now)]
            )
        return ex.id

    @staticmethod
    def _ensure_tenant(conn: sqlite3.Connection, tenant: str, now: float) -> str:
        row = conn.execute("SELECT webhook_secret FROM tenants WHERE name = ?", (tenant,)).fetchone()
        if row is not None:
            return str(row[0])
        secret = new_webhook_secret()
        conn.execute("INSERT INTO tenants (name, webhook_secret, created_at) VALUES (?, ?, ?)", (tenant, secret, now))
        return secret

    # ------------------------------------------------------------------ reading
    async def get_execution(self, execution_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        return await self._run(self._get_execution, execution_id, tenant)

    def _get_execution(self, execution_id: str, tenant: str | None) -> dict[str, Any] | None:
        with self._read() as conn:
            row = self._execution_row(conn, execution_id, tenant)
            if row is None:
                return None
            jobs = conn.execute(
                "SELECT * FROM jobs WHERE execution_id = ? ORDER BY position", (execution_id,)
            ).fetchall()
        return execution_view(dict(row), [dict(j) for j in jobs])

    async def execution_plan(self, execution_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        return await self._run(self._execution_plan, execution_id, tenant)

    def _execution_plan(self, execution_id: str, tenant: str | None) -> dict[str, Any] | None:
        row = self._execution_row(self._connect(), execution_id, tenant)
        return None if row is None else dict(loads(row["plan"]))

    @staticmethod
    def _execution_row(conn: sqlite3.Connection, execution_id: str, tenant: str | None) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM executions WHERE id = ?", (execution_id,)
        ).fetchone()
        if row is None or (tenant is not None and row["tenant"] != tenant):
            return None
        return row

    async def list_executions(
        self,
        tenant: str | None = None,
        *,
        status: str | None = None,
        created_after: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        return await self._run(self._list_executions, tenant, status, created_after, limit, cursor)

    def _list_executions(
        self, tenant: str | None, status: str | None, created_after: float | None, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        where, args = _equal_filters(tenant=tenant, status=status)
        if created_after is not None:
            where.append("created_at > ?")
            args.append(created_after)
        if cursor:
            ts, eid = decode_cursor(cursor)
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args += [ts, ts, eid]
        sql = "SELECT * FROM executions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        conn = self._connect()
        rows = conn.execute(sql, (*args, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None
        return [execution_summary(r) for r in rows], nxt

    async def events(self, execution_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        return await self._run(self._events, execution_id, after, limit)

    def _events(self, execution_id: str, after: int, limit: int) -> list[Event]:
        rows = self._connect().execute(
            "SELECT * FROM events WHERE execution_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (execution_id, after, limit),
        ).fetchall()
        return [
            Event(r["seq"], r["execution_id"], r["job_key"], r["type"], loads(r["data"]), r["created_at"])
            for r in rows
        ]

    # ------------------------------------------------------------------ cancel / resume
    async def cancel_execution(self, execution_id: str, tenant: str | None = None) -> dict[str, Any]:
        await self._run(self._cancel_execution, execution_id, tenant)
        state = await self.get_execution(execution_id, tenant)
        assert state is not None
        return state

    def _cancel_execution(self, execution_id: str, tenant: str | None) -> None:
        now = time.time()
        with self._write() as conn:
            row = self._execution_row(conn, execution_id, tenant)
            if row is None:
                raise NotFound(f"execution {execution_id!r} not found")
            if row["status"] in TERMINAL_EXECUTION:
                raise Conflict(f"execution {execution_id!r} has already {row['status']}; nothing to cancel")
            conn.execute("UPDATE executions SET cancel_requested = 1 WHERE id = ?", (execution_id,))
            conn.execute(
                "INSERT OR IGNORE INTO job_cancels (owner, job_id, seq, provider, model, type, provider_job_id,"
                " created_at) SELECT COALESCE(lease_owner, ''), id, lease_seq, provider, model, type,"
                " provider_job_id, ? FROM jobs WHERE execution_id = ? AND ((status = 'running' AND lease_owner IS"
                " NOT NULL) OR (status = 'queued' AND provider_job_id IS NOT NULL))",
                (now, execution_id),
            )
            keys = conn.execute(
                "UPDATE jobs SET status = 'canceled', finished_at = ?, error = 'canceled by request'"
                f" WHERE execution_id = ? AND {guard('canceled')} RETURNING id, key",
                (now, execution_id),
            ).fetchall()
            events: list[EventRow] = [
                (execution_id, k[1], "job.canceled", dumps({"reason": "canceled by request"}), now)
                for k in sorted(keys, key=lambda k: int(k[0]))
            ]
            self._settle(conn, {execution_id}, now, events)
            self._insert_events(conn, events)

    async def resume_execution(self, execution_id: str, tenant: str | None = None) -> dict[str, Any]:
        await self._run(self._resume_execution, execution_id, tenant)
        self._work.set()
        state = await self.get_execution(execution_id, tenant)
        assert state is not None
        return state

    def _resume_execution(self, execution_id: str, tenant: str | None) -> None:
        now = time.time()
        with self._write() as conn:
            row = self._execution_row(conn, execution_id, tenant)
            if row is None:
                raise NotFound(f"execution {execution_id!r} not found")
            if row["status"] not in TERMINAL_EXECUTION:
                raise Conflict(
                    f"execution {execution_id!r} is {row['status']}; only a finished execution can be resumed"
                )
            if row["status"] == "succeeded":
                raise Conflict(f"execution {execution_id!r} succeeded; there is nothing to resume")
            jobs = conn.execute(
                "SELECT key, status, depends_on FROM jobs WHERE execution_id = ?", (execution_id,)
            ).fetchall()
            done = {j["key"] for j in jobs if j["status"] == "succeeded"}
            events: list[EventRow] = []
            rerun = []
            for j in jobs:
                if j["status"] not in RESUMABLE_JOB:
                    continue
                left = sum(1 for d in loads(j["depends_on"]) if d not in done)
                status = "waiting" if left else "queued"
                rerun.append(j["key"])
                conn.execute(
                    "UPDATE jobs SET status = ?, deps_left = ?, attempts = 0, error = NULL, result = NULL,"
                    " provider_job_id = NULL, progress = 0, queue_position = NULL, started_at = NULL,"
                    " finished_at = NULL, run_after = 0, lease_owner = NULL, lease_expires_at = NULL,"
                    " cost_actual = NULL, intent_at = NULL, intent_seq = NULL, queued_at = ?"
                    " WHERE execution_id = ? AND key = ?",
                    (status, left, now if status == "queued" else None, execution_id, j["key"]),
                )
                events.append((execution_id, j["key"], f"job.{status}", dumps({"reason": "resume"}), now))
            conn.execute(
                "UPDATE executions SET status = 'running', cancel_requested = 0, finished_at = NULL,"
                " error = NULL, result = NULL, updated_at = ? WHERE id = ?",
                (now, execution_id),
            )
            events.insert(0, (execution_id, None, "execution.resumed", dumps({"jobs": rerun}), now))
            self._settle(conn, {execution_id}, now, events)
            self._insert_events(conn, events)

    # ------------------------------------------------------------------ workers
    async def register_worker(self, worker_id: str, info: dict[str, Any]) -> None:
        await self._run(self._register_worker, worker_id, info)

    def _register_worker(self, worker_id: str, info: dict[str, Any]) -> None:
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO workers (id, info, started_at, last_seen) VALUES (?, ?, ?, ?)",
                (worker_id, dumps(info), now, now),
            )

    async def unregister_worker(self, worker_id: str) -> None:
        await self._run(self._unregister_worker, worker_id)

    def _unregister_worker(self, worker_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    async def live_workers(self, within_s: float, *, serving: str | None = None) -> int:
        return await self._run(self._live_workers, within_s, serving)

    def _live_workers(self, within_s: float, serving: str | None = None) -> int:
        rows = self._connect().execute(
            "SELECT info FROM workers WHERE last_seen > ?", (time.time() - within_s,)
        ).fetchall()
        return sum(1 for r in rows if serves(loads(r[0]), serving))

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
                " cost_estimated, lease_seq, intent_at, intent_seq",
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
    @staticmethod
    def _month_usage(conn: sqlite3.Connection, tenant: str, now: float) -> tuple[int, float]:
        """Executions created this month, and their cost: actual once finished, else the larger of the
        estimate (the reservation) and what has been spent so far."""
        row = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN finished_at IS NOT NULL THEN COALESCE(cost_actual, 0)"
            " ELSE MAX(cost_estimated, COALESCE(cost_actual, 0)) END), 0)"
            " FROM executions WHERE tenant = ? AND created_at >= ?",
            (tenant, month_start(now)),
        ).fetchone()
        return int(row[0]), float(row[1])

    async def usage(self, tenant: str, now: float | None = None) -> dict[str, Any]:
        return await self._run(self._usage, tenant, now)

    def _usage(self, tenant: str, now: float | None) -> dict[str, Any]:
        now = time.time() if now is None else now
        since = month_start(now)
        conn = self._connect()
        row = conn.execute(
            "SELECT COUNT(*),"
            " COALESCE(SUM(CASE WHEN finished_at IS NOT NULL THEN COALESCE(cost_actual, 0) ELSE 0 END), 0),"
            " COALESCE(SUM(CASE WHEN finished_at IS NULL"
            "   THEN MAX(cost_estimated, COALESCE(cost_actual, 0)) ELSE 0 END), 0),"
            " COALESCE(SUM(CASE WHEN finished_at IS NULL THEN 1 ELSE 0 END), 0)"
            " FROM executions WHERE tenant = ? AND created_at >= ?",
            (tenant, since),
        ).fetchone()
        jobs = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(cache_hit), 0) FROM jobs j JOIN executions e ON e.id = j.execution_id"
            " WHERE e.tenant = ? AND e.created_at >= ? AND j.status = 'succeeded'",
            (tenant, since),
        ).fetchone()
        running = conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND tenant = ?", (tenant,)
        ).fetchone()
        return {
            "tenant": tenant,
            "month": datetime.fromtimestamp(since, tz=UTC).strftime("%Y-%m"),
            "executions": int(row[0]),
            "executions_unfinished": int(row[3]),
            "cost_usd": round(float(row[1]), 6),
            "reserved_usd": round(float(row[2]), 6),
            "jobs_succeeded": int(jobs[0]),
            "cache_hits": int(jobs[1]),
            "jobs_running": int(running[0]),
        }

    async def queue_stats(self) -> dict[str, Any]:
        return await self._run(self._queue_stats)

    def _queue_stats(self) -> dict[str, Any]:
        conn = self._connect()
        by_status = dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
        running = conn.execute(
            "SELECT COALESCE(provider, 'local'), COUNT(*) FROM jobs WHERE status = 'running' GROUP BY 1"
        ).fetchall()
        queued = conn.execute(
            "SELECT COALESCE(provider, 'local'), COUNT(*) FROM jobs WHERE status = 'queued' GROUP BY 1"
        ).fetchall()
        tenants = conn.execute(
            "SELECT tenant, COUNT(*) FROM jobs WHERE status IN ('queued', 'running') GROUP BY tenant"
        ).fetchall()
        return {
            "jobs": {k: int(v) for k, v in by_status.items()},
            "running_by_provider": {k: int(v) for k, v in running},
            "queued_by_provider": {k: int(v) for k, v in queued},
            "active_by_tenant": {k: int(v) for k, v in tenants},
        }

    async def stats(self, tenant: str | None, since: float) -> dict[str, Any]:
        rows = await self._run(self._fetch, stats_queries(tenant, since, time.time()))
        return assemble_stats(rows, tenant, since)

    async def metric_gauges(self) -> dict[str, Any]:
        return assemble_gauges(await self._run(self._fetch, gauge_queries(time.time())))

    def _fetch(self, queries: list[Query]) -> dict[str, list[Any]]:
        """The rows of named read queries, in one read transaction."""
        with self._read() as conn:
            return {name: conn.execute(sql, args).fetchall() for name, sql, args in queries}

    async def cache_lookup(self, tenant: str, cache_key: str) -> dict[str, Any] | None:
        return (await self.cache_lookup_many([(tenant, cache_key)])).get((tenant, cache_key))

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

    async def take_tokens(self, provider: str, want: int, per_minute: float | None) -> tuple[int, float]:
        return await self._run(self._take_tokens, provider, want, per_minute)

    def _take_tokens(self, provider: str, want: int, per_minute: float | None) -> tuple[int, float]:
        """Up to `want` request tokens of `provider`'s shared bucket, and the seconds until the next one.

        The bucket refills at `per_minute` / 61 a second times the pace factor (halved by each 429, back
        to 1 over about a minute) and holds at most one second's worth, so no 60 s window ever sees more
        than `per_minute` requests across all workers. Without `per_minute` only a 429's hold applies."""
        now = time.time()
        with self._write() as conn:
            row = conn.execute(
                "SELECT tokens, updated_at, factor, hold_until, throttled_at FROM provider_pace WHERE provider = ?",
                (provider,),
            ).fetchone()
            tokens, updated, factor, hold_until, throttled_at = row if row is not None else (0.0, now, 1.0, 0.0, 0.0)
            factor = min(1.0, factor * 2 ** (max(0.0, now - max(updated, throttled_at)) / 20.0))
            if now < hold_until:
                granted, wait = 0, hold_until - now
            elif per_minute is None:
                granted, wait = want, 0.0
            else:
                rate = per_minute / 61.0 * factor
                capacity = max(1.0, rate)
                tokens = min(capacity, tokens + max(0.0, now - updated) * rate)
                granted = min(want, int(tokens))
                tokens -= granted
                wait = 0.0 if granted else (1.0 - tokens) / rate
            conn.execute(
                "INSERT INTO provider_pace (provider, tokens, updated_at, factor, hold_until, throttled_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (provider) DO UPDATE SET tokens = excluded.tokens,"
                " updated_at = excluded.updated_at, factor = excluded.factor",
                (provider, tokens, now, factor, hold_until, throttled_at),
            )
        return granted, wait

    async def report_throttle(self, provider: str, retry_after_s: float | None) -> None:
        await self._run(self._report_throttle, provider, retry_after_s)

    def _report_throttle(self, provider: str, retry_after_s: float | None) -> None:
        """A 429 from `provider`: every worker holds for Retry-After and the shared pace halves (once a second)."""
        now = time.time()
        hold = now + (retry_after_s if retry_after_s is not None else 1.0)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO provider_pace (provider, updated_at, factor, hold_until, throttled_at)"
                " VALUES (?, ?, 0.5, ?, ?) ON CONFLICT (provider) DO UPDATE SET"
                " hold_until = MAX(hold_until, excluded.hold_until),"
                " factor = CASE WHEN excluded.throttled_at - throttled_at >= 1.0 THEN MAX(factor * 0.5, 0.02)"
                "   ELSE factor END,"
                " throttled_at = CASE WHEN excluded.throttled_at - throttled_at >= 1.0 THEN excluded.throttled_at"
                "   ELSE throttled_at END",
                (provider, now, hold, now),
            )

    async def provider_paces(self) -> dict[str, tuple[float, float]]:
        return await self._run(self._provider_paces)

    def _provider_paces(self) -> dict[str, tuple[float, float]]:
        """provider -> (hold_until, throttled_at) for providers throttled in the last minute."""
        rows = self._connect().execute(
            "SELECT provider, hold_until, throttled_at FROM provider_pace WHERE throttled_at > ?", (time.time() - 60,)
        ).fetchall()
        return {r[0]: (float(r[1]), float(r[2])) for r in rows}

    async def heartbeat(self, owner: str, lease_s: float) -> set[int]:
        return await self._run(self._heartbeat, owner, lease_s)

    def _heartbeat(self, owner: str, lease_s: float) -> set[int]:
        now = time.time()
        with self._write() as conn:
            held = conn.execute(
                "UPDATE jobs SET lease_expires_at = ? WHERE lease_owner = ? AND status = 'running' RETURNING id",
                (now + lease_s, owner),
            ).fetchall()
            conn.execute("UPDATE workers SET last_seen = ? WHERE id = ?", (now, owner))
        return {r[0] for r in held}

    async def canceled_for(self, owner: str) -> list[int]:
        return await self._run(self._canceled_for, owner)

    def _canceled_for(self, owner: str) -> list[int]:
        conn = self._connect()
        if conn.execute(
            "SELECT 1 FROM jobs WHERE lease_owner = ? AND status != 'running' LIMIT 1", (owner,)
        ).fetchone() is None:
            return []
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL"
                " WHERE lease_owner = ? AND status != 'running' RETURNING id",
                (owner,),
            ).fetchall()
        return [r[0] for r in rows]

    async def canceled_attempts(self, owner: str) -> list[tuple[int, int]]:
        return await self._run(self._canceled_attempts, owner)

    def _canceled_attempts(self, owner: str) -> list[tuple[int, int]]:
        conn = self._connect()
        if conn.execute("SELECT 1 FROM job_cancels WHERE owner = ? LIMIT 1", (owner,)).fetchone() is None:
            return []
        with self._write() as conn:
            rows = conn.execute("DELETE FROM job_cancels WHERE owner = ? RETURNING job_id, seq", (owner,)).fetchall()
            for chunk in _chunks([r[0] for r in rows]):
                conn.execute(
                    "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ?"
                    f" AND status != 'running' AND id IN ({_qs(len(chunk))})",
                    (owner, *chunk),
                )
        return [(r[0], r[1]) for r in rows]

    async def adopted(self, provider: str, provider_job_ids: Collection[str]) -> set[str]:
        ids = sorted(set(provider_job_ids))
        if not ids:
            return set()

        def read() -> set[str]:
            found: set[str] = set()
            for chunk in _chunks(ids):
                found.update(
                    r[0]
                    for r in self._connect().execute(
                        "SELECT provider_job_id FROM jobs WHERE provider = ?"
                        f" AND provider_job_id IN ({_qs(len(chunk))})",
                        (provider, *chunk),
                    )
                )
            return found

        return await self._run(read)

    async def note_attempt(
        self,
        job_id: int,
        owner: str,
        seq: int,
        event: str,
        data: dict[str, Any],
        *,
        possible_duplicate_usd: float | None = None,
    ) -> bool:
        return await self._run(self._note_attempt, job_id, owner, seq, event, data, possible_duplicate_usd)

    def _note_attempt(
        self, job_id: int, owner: str, seq: int, event: str, data: dict[str, Any], usd: float | None
    ) -> bool:
        now = time.time()
        with self._write() as conn:
            row = conn.execute(
                "UPDATE jobs SET possible_duplicates = possible_duplicates + ?,"
                " possible_duplicate_usd = possible_duplicate_usd + ?"
                " WHERE id = ? AND lease_owner = ? AND lease_seq = ? AND status = 'running'"
                " RETURNING execution_id, key",
                (1 if usd is not None else 0, usd or 0.0, job_id, owner, seq),
            ).fetchone()
            if row is None:
                return False
            self._insert_events(conn, [(row[0], row[1], event, dumps(data), now)])
        return True

    async def wake_job(
        self, provider: str, remote_id: str, execution_id: str | None = None, job_key: str | None = None
    ) -> str:
        return await self._run(self._wake_job, provider, remote_id, execution_id, job_key)

    def _wake_job(self, provider: str, remote_id: str, execution_id: str | None, job_key: str | None) -> str:
        with self._write() as conn:
            if execution_id is not None and job_key is not None:
                row = conn.execute(
                    "SELECT id, status, provider_job_id FROM jobs WHERE execution_id = ? AND key = ? AND provider = ?",
                    (execution_id, job_key, provider),
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT id, status, provider_job_id FROM jobs WHERE provider = ? AND provider_job_id = ?"
                    " ORDER BY id DESC LIMIT 1",
                    (provider, remote_id),
                ).fetchone()
            if row is None:
                return "unknown"
            job_id, status, stored = row
            if not callback_matches(stored, remote_id):
                return "mismatch"
            if status != "running":
                return "ignored"
            conn.execute("UPDATE jobs SET woken_at = ? WHERE id = ?", (time.time(), job_id))
            return "woken"

    async def woken_for(self, owner: str) -> list[int]:
        return await self._run(self._woken_for, owner)

    def _woken_for(self, owner: str) -> list[int]:
        conn = self._connect()
        if conn.execute(
            "SELECT 1 FROM jobs WHERE lease_owner = ? AND woken_at IS NOT NULL LIMIT 1", (owner,)
        ).fetchone() is None:
            return []
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE jobs SET woken_at = NULL WHERE lease_owner = ? AND woken_at IS NOT NULL RETURNING id", (owner,)
            ).fetchall()
        return [r[0] for r in rows]

    async def set_provider_ids(self, items: list[tuple[int, str, str]]) -> None:
        await self._run(self._set_provider_ids, items)

    def _set_provider_ids(self, items: list[tuple[int, str, str]]) -> None:
        with self._write() as conn:
            self._write_provider_ids(conn, items, time.time())

    def _write_provider_ids(self, conn: sqlite3.Connection, items: list[tuple[int, str, str]], now: float) -> None:
        events: list[EventRow] = []
        for job_id, owner, pid in sorted(items, key=lambda item: item[0]):  # events by job id, as on PostgreSQL
            row = conn.execute(
                "UPDATE jobs SET provider_job_id = ? WHERE id = ? AND lease_owner = ? AND status = 'running'"
                " RETURNING execution_id, key",
                (pid, job_id, owner),
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
                row = conn.execute(
                    "UPDATE jobs SET progress = ?, queue_position = ? WHERE id = ? AND lease_owner = ?"
                    " AND status = 'running' RETURNING execution_id, key",
                    (r.progress, r.queue_position, r.job_id, r.owner),
                ).fetchone()
                if row is None:
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
            self._skip_after_failure(conn, eid, keys, now, events)
        self._settle(conn, touched, now, events)
        self._insert_events(conn, events)
        return promoted

    def _skip_after_failure(
        self, conn: sqlite3.Connection, eid: str, keys: list[str], now: float, events: list[EventRow]
    ) -> None:
        on_failure = conn.execute("SELECT on_failure FROM executions WHERE id = ?", (eid,)).fetchone()[0]
        graph = {
            r[0]: (loads(r[1]), r[2])
            for r in conn.execute("SELECT key, dependents, status FROM jobs WHERE execution_id = ? ORDER BY id", (eid,))
        }
        for key, reason in skips(graph, keys, on_failure):
            conn.execute(
                "UPDATE jobs SET status = 'skipped', error = ?, finished_at = ? WHERE execution_id = ? AND key = ?",
                (reason, now, eid, key),
            )
            events.append((eid, key, "job.skipped", dumps({"reason": reason}), now))

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
                    self._finish_execution(conn, eid, status, progress, now, events)
                elif action == "update":
                    conn.execute(
                        "UPDATE executions SET status = ?, progress = ?, updated_at = ? WHERE id = ?",
                        (status, progress, now, eid),
                    )
                    events += progress_event(eid, ex["progress"], progress, now)

    def _finish_execution(
        self, conn: sqlite3.Connection, eid: str, status: str, progress: float, now: float, events: list[EventRow]
    ) -> None:
        sinks = conn.execute(
            "SELECT key, result FROM jobs WHERE execution_id = ? AND dependents = '[]' AND status = 'succeeded'"
            " ORDER BY position",
            (eid,),
        ).fetchall()
        failed = conn.execute(
            "SELECT key, error FROM jobs WHERE execution_id = ? AND status = 'failed' ORDER BY finished_at, position",
            (eid,),
        ).fetchall()
        cost = conn.execute(
            "SELECT COALESCE(SUM(cost_actual), 0) FROM jobs WHERE execution_id = ?", (eid,)
        ).fetchone()[0]
        progress, result, error = ending(
            status, progress, [(s[0], s[1]) for s in sinks], [(f[0], f[1]) for f in failed]
        )
        created = conn.execute(
            "UPDATE executions SET status = ?, progress = ?, result = ?, error = ?, cost_actual = ?,"
            " finished_at = ?, updated_at = ? WHERE id = ? RETURNING created_at",
            (status, progress, result, error, cost, now, now, eid),
        ).fetchone()[0]
        metrics.execution_finished(status, now - created)
        events.append(end_event(eid, status, error, now))

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
        if not subscribed:
            return
        states: dict[str, dict[str, Any]] = {}
        for eid in webhook_executions(events, subscribed):
            row = conn.execute("SELECT * FROM executions WHERE id = ?", (eid,)).fetchone()
            jobs = conn.execute("SELECT * FROM jobs WHERE execution_id = ? ORDER BY position", (eid,)).fetchall()
            states[eid] = execution_view(dict(row), [dict(j) for j in jobs])
        if rows := webhook_rows(events, subscribed, states):
            conn.executemany(
                "INSERT INTO webhook_deliveries (id, execution_id, tenant, url, event_type, payload,"
                " next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    # ------------------------------------------------------------------ leases
    async def release_jobs(self, owner: str, job_ids: list[int], *, reason: str = "worker shutting down") -> None:
        await self._run(self._release_jobs, owner, job_ids, reason)
        if job_ids:
            self._work.set()

    def _release_jobs(self, owner: str, job_ids: list[int], reason: str = "worker shutting down") -> None:
        now = time.time()
        with self._write() as conn:
            events: list[EventRow] = []
            touched: set[str] = set()
            for chunk in _chunks(sorted(job_ids)):  # events by job id, as on PostgreSQL
                for eid, key in conn.execute(
                    "UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0), lease_owner = NULL,"
                    " lease_expires_at = NULL, queued_at = ?, run_after = ?, progress = 0"
                    f" WHERE lease_owner = ? AND {guard('queued', frm='running')} AND id IN ({_qs(len(chunk))})"
                    " RETURNING execution_id, key",
                    (now, now, owner, *chunk),
                ).fetchall():
                    touched.add(eid)
                    events.append((eid, key, "job.released", dumps({"reason": reason}), now))
            self._settle(conn, touched, now, events)
            self._insert_events(conn, events)

    async def recover_expired(self) -> list[OrphanedCancel]:
        return await self._run(self._recover_expired)

    def _recover_expired(self) -> list[OrphanedCancel]:
        now = time.time()
        conn = self._connect()
        if conn.execute(
            "SELECT 1 FROM jobs WHERE lease_owner IS NOT NULL AND lease_expires_at < ?"
            " UNION ALL SELECT 1 FROM job_cancels WHERE owner = '' OR created_at < ? LIMIT 1",
            (now, now - ORPHAN_CANCEL_S),
        ).fetchone() is None:
            return []
        with self._write() as conn:
            events: list[EventRow] = []
            touched: set[str] = set()
            for _, eid, key, attempts in sorted(
                conn.execute(
                    "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, queued_at = ?,"
                    f" run_after = ?, progress = 0 WHERE {guard('queued', frm='running')} AND lease_expires_at < ?"
                    " AND attempts < max_attempts RETURNING id, execution_id, key, attempts",
                    (now, now, now),
                ).fetchall(),
                key=lambda r: int(r[0]),
            ):
                touched.add(eid)
                events.append(
                    (eid, key, "job.requeued", dumps({"reason": "lease expired", "attempts": attempts}), now)
                )
            self._settle(conn, touched, now, events)
            self._insert_events(conn, events)
            exhausted = conn.execute(
                "SELECT id, lease_owner, attempts FROM jobs WHERE status = 'running' AND lease_expires_at < ?",
                (now,),
            ).fetchall()
            self._apply_outcomes(
                conn,
                [
                    JobOutcome(
                        job_id=r[0],
                        owner=r[1],
                        status="failed",
                        error=f"the worker running it stopped responding (lease expired) after {r[2]} attempts",
                    )
                    for r in exhausted
                ],
                now,
            )
            orphans = conn.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE status != 'running'"
                " AND lease_owner IS NOT NULL AND lease_expires_at < ?"
                " RETURNING id, provider, model, type, provider_job_id",
                (now,),
            ).fetchall()
            # cancellations addressed to a worker that stopped beating before it read them (the job may have
            # been resumed since): their provider work is cancelled here
            orphans += conn.execute(
                "DELETE FROM job_cancels WHERE owner = '' OR (created_at < ? AND owner NOT IN"
                " (SELECT id FROM workers WHERE last_seen >= ?))"
                " RETURNING job_id, provider, model, type, provider_job_id",
                (now - ORPHAN_CANCEL_S, now - ORPHAN_CANCEL_S),
            ).fetchall()
        return unique_orphans([OrphanedCancel(r[0], r[1], r[2], r[3], r[4]) for r in orphans])

    # ------------------------------------------------------------------ tenants and keys
    async def ensure_tenant(self, tenant: str) -> str:
        return await self._run(self._ensure_tenant_tx, tenant)

    def _ensure_tenant_tx(self, tenant: str) -> str:
        with self._write() as conn:
            return self._ensure_tenant(conn, tenant, time.time())

    async def add_api_key(self, key: ApiKey) -> None:
        await self._run(self._add_api_key, key)

    def _add_api_key(self, key: ApiKey) -> None:
        with self._write() as conn:
            self._ensure_tenant(conn, key.tenant, key.created_at)
            conn.execute(
                "INSERT INTO api_keys (id, tenant, key_hash, created_at) VALUES (?, ?, ?, ?)",
                (key.id, key.tenant, key.key_hash, key.created_at),
            )

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        return await self._run(self._get_api_key, key_id)

    def _get_api_key(self, key_id: str) -> ApiKey | None:
        row = self._connect().execute(
            "SELECT id, tenant, key_hash, created_at, revoked_at FROM api_keys WHERE id = ?", (key_id,)
        ).fetchone()
        return ApiKey(*row) if row else None

    async def list_api_keys(self, tenant: str | None = None) -> list[ApiKey]:
        return await self._run(self._list_api_keys, tenant)

    def _list_api_keys(self, tenant: str | None) -> list[ApiKey]:
        sql = "SELECT id, tenant, key_hash, created_at, revoked_at FROM api_keys"
        args: tuple[Any, ...] = ()
        if tenant is not None:
            sql += " WHERE tenant = ?"
            args = (tenant,)
        return [ApiKey(*r) for r in self._connect().execute(sql + " ORDER BY created_at", args)]

    async def revoke_api_key(self, key_id: str) -> bool:
        return await self._run(self._revoke_api_key, key_id)

    def _revoke_api_key(self, key_id: str) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), key_id)
            )
            return cur.rowcount > 0

    async def owns_artifact(self, tenant: str, key: str) -> bool:
        return await self._run(self._owns_artifact, tenant, key)

    def _owns_artifact(self, tenant: str, key: str) -> bool:
        row = self._connect().execute(
            "SELECT 1 FROM artifacts WHERE tenant = ? AND key = ?", (tenant, key)
        ).fetchone()
        return row is not None

    async def owned_artifacts(self, tenant: str, keys: Collection[str]) -> set[str]:
        if not keys:
            return set()
        return await self._run(self._owned_artifacts, tenant, list(keys))

    def _owned_artifacts(self, tenant: str, keys: list[str]) -> set[str]:
        conn = self._connect()
        owned: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            rows = conn.execute(
                f"SELECT key FROM artifacts WHERE tenant = ? AND key IN ({_qs(len(chunk))})", (tenant, *chunk)
            ).fetchall()
            owned.update(r[0] for r in rows)
        return owned

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
                " RETURNING id, execution_id, tenant, url, event_type, payload, attempts, created_at",
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
                created_at=r[7], secret=secrets.get(r[2], ""),
            )
            for r in rows
        ]

    async def record_delivery_attempt(
        self,
        delivery_id: str,
        owner: str,
        *,
        delivered: bool,
        status_code: int | None,
        latency_ms: float | None,
        error: str | None,
        next_attempt_at: float | None,
    ) -> None:
        await self._run(
            self._record_delivery_attempt, delivery_id, owner, delivered, status_code, latency_ms, error,
            next_attempt_at,
        )

    def _record_delivery_attempt(
        self,
        delivery_id: str,
        owner: str,
        delivered: bool,
        status_code: int | None,
        latency_ms: float | None,
        error: str | None,
        next_attempt_at: float | None,
    ) -> None:
        now = time.time()
        status = "delivered" if delivered else ("pending" if next_attempt_at is not None else "failed")
        with self._write() as conn:
            row = conn.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, status = ?, next_attempt_at = ?,"
                " last_status_code = ?, last_error = ?, delivered_at = ?, lease_owner = NULL,"
                " lease_expires_at = NULL WHERE id = ? AND lease_owner = ? RETURNING attempts",
                (status, next_attempt_at if next_attempt_at is not None else now, status_code, error,
                 now if delivered else None, delivery_id, owner),
            ).fetchone()
            if row is None:
                return
            conn.execute(
                "INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, status_code, latency_ms, error)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (delivery_id, row[0], now, status_code, latency_ms, error),
            )

    async def list_deliveries(
        self, tenant: str | None, execution_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return await self._run(self._list_deliveries, tenant, execution_id, limit)

    def _list_deliveries(
        self, tenant: str | None, execution_id: str | None, limit: int, delivery_id: str | None = None
    ) -> list[dict[str, Any]]:
        where, args = _equal_filters(id=delivery_id, tenant=tenant, execution_id=execution_id)
        sql = "SELECT * FROM webhook_deliveries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY created_at DESC, id LIMIT ?", (*args, limit)).fetchall()
            out = []
            for r in rows:
                attempts = conn.execute(
                    "SELECT attempt, attempted_at, status_code, latency_ms, error FROM webhook_attempts"
                    " WHERE delivery_id = ? ORDER BY attempt",
                    (r["id"],),
                ).fetchall()
                out.append(delivery_view(dict(r), [dict(a) for a in attempts]))
        return out

    async def redeliver(self, delivery_id: str, tenant: str | None) -> dict[str, Any]:
        await self._run(self._redeliver, delivery_id, tenant)
        found = await self._run(self._list_deliveries, tenant, None, 1, delivery_id)
        return found[0]

    def _redeliver(self, delivery_id: str, tenant: str | None) -> None:
        with self._write() as conn:
            row = conn.execute("SELECT tenant FROM webhook_deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None or (tenant is not None and row[0] != tenant):
                raise NotFound(f"webhook delivery {delivery_id!r} not found")
            conn.execute(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?, lease_owner = NULL,"
                " lease_expires_at = NULL WHERE id = ?",
                (time.time(), delivery_id),
            )

    async def prune(self, older_than: float) -> dict[str, int]:
        return await self._run(self._prune, older_than)

    def _prune(self, older_than: float) -> dict[str, int]:
        """Delete executions that ended before `older_than` (unix time), with their jobs, events and webhook
        deliveries. Artifacts stay: their files are content-addressed and may serve newer executions."""
        removed = {"executions": 0, "jobs": 0, "events": 0, "webhook_deliveries": 0}
        with self._write() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM executions WHERE finished_at IS NOT NULL AND finished_at < ?", (older_than,)
                )
            ]
            for chunk in _chunks(ids):
                qs = _qs(len(chunk))
                for table in ("events", "jobs", "webhook_deliveries"):
                    removed[table] += conn.execute(f"DELETE FROM {table} WHERE execution_id IN ({qs})", chunk).rowcount
                removed["executions"] += conn.execute(f"DELETE FROM executions WHERE id IN ({qs})", chunk).rowcount
        return removed

    async def next_wakeup(self) -> float | None:
        return await self._run(self._next_wakeup)

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

    def _next_wakeup(self) -> float | None:
        row = self._connect().execute("SELECT MIN(run_after) FROM jobs WHERE status = 'queued'").fetchone()
        return None if row[0] is None else float(row[0])


def _equal_filters(**columns: Any) -> tuple[list[str], list[Any]]:
    """`column = ?` conditions (and their arguments) for every filter that is set."""
    given = [(name, value) for name, value in columns.items() if value is not None]
    return [f"{name} = ?" for name, _ in given], [value for _, value in given]


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
