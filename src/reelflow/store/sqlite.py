"""The embedded default Store: one SQLite file in WAL mode, shared safely by many processes.

Every write is a short `BEGIN IMMEDIATE` transaction, so claims are exclusive across processes.
All database work runs on one dedicated thread per Store, so the event loop never blocks on it: the manager's
coroutines are driven to their end there (`_drive`), each statement running at once. The rules live in
`manager.py`; this file holds the connection, the transactions and the steps SQLite takes its own way (the claim's
pick, a batch of successes as one JSON array (`json_each`), lists as `IN (...)`), whose statements are in
`sql/sqlite.sql`.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, cast

from .. import metrics
from .base import JobOutcome, ProgressReport
from .common import Statements, artifact_keys, dumps, loads, migration_scripts
from .manager import NO_NOTE, EventRow, Note, Released, StoreManager, Tx, Written, chunks

T = TypeVar("T")
SQL = Statements("sqlite")


def sqlite_path(url: str) -> str:
    """`sqlite:///relative/or/absolute/path.db` (or `sqlite://:memory:`) to a filename."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    rest = url[len("sqlite://") :]
    if rest in ("", "/:memory:", ":memory:"):
        return ":memory:"
    return rest[1:] if rest.startswith("/") else rest


class _SQLiteTx:
    """The driver's statements (`manager.Tx`) on one SQLite connection: `%s` parameters become `?`."""

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

    def dicts(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows as dicts: for rows whose many columns are each read by name (a claimed job's ~25), where
        `sqlite3.Row` compares the name with every column before it, case-insensitively, at each read."""
        cur = self.conn.cursor()
        cur.row_factory = None  # plain tuples, zipped with the names once
        cur.execute(_sqlite_sql(sql), args)
        rows = cur.fetchall()
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in rows]

    for_update = ""

    def in_(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


BUSY_S = 30
"""How long a statement waits for another process's lock before it fails with "database is locked"."""


def _into_wal(conn: sqlite3.Connection, within_s: float) -> None:
    """Put the file in WAL mode. The switch needs the file to itself, and SQLite refuses it at once ("database is
    locked") instead of waiting while another connection holds a lock: several processes opening a new file
    together (a server and its workers started at once, each migrating) would fail. So it is retried, with a
    growing pause, for up to `within_s` seconds. Once the file is in WAL mode the pragma asks for nothing."""
    deadline = time.monotonic() + within_s
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


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

    sql = SQL

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_path(url)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reelflow-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._migrated = False
        self.configure_limits()
        self._work = asyncio.Event()
        """Set when a write of this process made jobs claimable (`wait_for_work`); other processes are polled."""

    # ------------------------------------------------------------------ plumbing
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_S)
            conn.row_factory = sqlite3.Row
            _into_wal(conn, BUSY_S)
            for pragma in ("synchronous=NORMAL", f"busy_timeout={BUSY_S * 1000}", "foreign_keys=ON",
                           "temp_store=MEMORY", "cache_size=-65536"):  # fmt: skip
                conn.execute(f"PRAGMA {pragma}")
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

    def _written(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        with self._write() as conn:
            return _drive(fn(_SQLiteTx(conn)))

    async def _in_tx(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        return await self._run(self._written, fn)

    async def _in_read(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        return await self._run(lambda: _drive(fn(_SQLiteTx(self._connect()))))

    async def _in_snapshot(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        def read() -> T:
            conn = self._connect()
            conn.execute("BEGIN")
            try:
                return _drive(fn(_SQLiteTx(conn)))
            finally:
                conn.execute("COMMIT")

        return await self._run(read)

    async def _in_tx_if(
        self, probe: str, args: Sequence[Any], fn: Callable[[Tx], Coroutine[Any, Any, T]], default: T
    ) -> T:
        def work() -> T:  # the look and the write in one trip to the thread
            if self._connect().execute(_sqlite_sql(probe), args).fetchone() is None:
                return default
            return self._written(fn)

        return await self._run(work)

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

    # ------------------------------------------------------------------ schema
    async def migrate(self) -> int:
        loop = asyncio.get_running_loop()
        version = await loop.run_in_executor(self._executor, self._migrate)
        self._migrated = True
        return version

    def _migrate(self) -> int:
        with self._write() as conn:
            conn.execute(SQL.schema_table)
            done = {r[0] for r in conn.execute(SQL.applied_migrations)}
            version = max(done, default=0)
            for v, name, sql in migration_scripts("sqlite"):
                if v in done:
                    continue
                for statement in _split_sql(sql):
                    conn.execute(statement)
                conn.execute(_sqlite_sql(SQL.record_migration), (v, name, time.time()))
                version = v
        return version

    # ------------------------------------------------------------------ claiming
    async def _pick(self, tx: Tx, limit: int, now: float, executions: list[str] | None) -> list[int]:
        caps_p, caps_m = self._provider_caps, self._model_caps
        running_p: dict[str, int] = {}
        running_m: dict[str, int] = {}
        if caps_p:
            cond, args = tx.in_("provider", list(caps_p))
            running_p = {r[0]: r[1] for r in await tx.all(SQL.running_providers.format(cond=cond), args)}
        if caps_m:
            for model, n in await tx.all(SQL.running_models):
                base = model.split(":", 1)[0]
                running_m[base] = running_m.get(base, 0) + n
        full_p = [p for p, cap in caps_p.items() if running_p.get(p, 0) >= cap]
        full_m = [m for m, cap in caps_m.items() if running_m.get(m, 0) >= cap]
        capped = bool(self._tenant_caps) or self._default_tenant_cap is not None
        room_t: dict[str, int] = {}
        tenants: list[str] = []
        for name, running in await tx.all(SQL.queued_tenants.format(running=SQL.running_of_tenant if capped else "0")):
            if (cap := self._tenant_cap(name)) is not None:
                room_t[name] = min(limit, cap - running)
                if room_t[name] <= 0:
                    continue  # a tenant at its cap waits its turn
            tenants.append(name)
        if not tenants:
            return []
        tenants = self._rotate(tenants, limit)
        only = ""
        extra: list[Any] = []
        if executions is not None:  # a wait's own worker: only the executions it waits for
            cond, extra = tx.in_("execution_id", executions)
            only = f" AND {cond}"
        if full_p:
            only += f" AND (provider IS NULL OR provider NOT IN ({', '.join(['%s'] * len(full_p))}))"
            extra += full_p
        if full_m:
            only += f" AND (model IS NULL OR model NOT IN ({', '.join(['%s'] * len(full_m))}))"
            extra += full_m
        sql = SQL.tenant_queue.format(only=only)
        queues = [await tx.all(sql, (t, now, *extra, room_t.get(t, limit))) for t in tenants]
        return self._round_robin(tenants, queues, limit, running_p, running_m)

    async def _lease_rows(self, tx: Tx, owner: str, picked: list[int], lease_s: float, now: float) -> list[Any]:
        rows: list[dict[str, Any]] = []  # dicts: each of their ~25 columns is read by name (`claimed_job`)
        for chunk in chunks(picked):
            cond, args = tx.in_("id", chunk)
            rows += cast(_SQLiteTx, tx).dicts(SQL.lease_jobs.format(cond=cond), (owner, now + lease_s, now, now, *args))
        deadlines: dict[str, float | None] = {}
        for chunk in chunks(sorted({r["execution_id"] for r in rows})):
            cond, args = tx.in_("id", chunk)
            deadlines.update(await tx.all(SQL.execution_deadlines.format(cond=cond), args))
        for r in rows:
            r["deadline"] = deadlines.get(r["execution_id"])
        return sorted(rows, key=_dict_id)

    async def _dep_results(self, tx: Tx, rows: list[Any]) -> dict[tuple[str, str], dict[str, Any]]:
        needs: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            needs[r["execution_id"]].update(loads(r["depends_on"]))
        results: dict[tuple[str, str], dict[str, Any]] = {}
        for eid, keys in needs.items():
            if keys:
                cond, args = tx.in_("key", list(keys))
                for key, res in await tx.all(SQL.dep_results.format(cond=cond), (eid, *args)):
                    results[(eid, key)] = loads(res) or {}
        return results

    async def _tenant_room(self, tx: Tx, caps: dict[str, int]) -> dict[str, int | None]:
        # the write lock is exclusive: no claim is counting at the same time
        return {t: cap - int((await tx.one(SQL.tenant_running, (t,)))["n"]) for t, cap in caps.items()}

    # ------------------------------------------------------------------ finishing
    async def _write_outcomes(
        self, tx: Tx, outcomes: list[JobOutcome], now: float, provider_ids: list[tuple[int, str, str]],
        results: Mapping[int, str],
    ) -> Written:  # fmt: skip
        # Provider ids of jobs succeeding here are written by the success's UPDATE; the others first, on their own.
        succeeding = {o.job_row for o in outcomes if o.status == "succeeded"}
        inline = {job_row: pid for job_row, _, pid in provider_ids if job_row in succeeding}
        if rest := [item for item in provider_ids if item[0] not in inline]:
            await self._write_provider_ids(tx, rest, now)
        await self._write_notes(tx, [(o.job_row, o.owner, o.note) for o in outcomes if o.note is not None], now)
        rows: dict[int, Any] = {}  # by id(outcome): the row each outcome wrote
        taken: set[int] = set()  # the job rows written (by one outcome each)
        done = [o for o in outcomes if o.status == "succeeded"]
        succeeded: list[tuple[JobOutcome, Any]] = []
        waves = 0
        while done:  # one statement a batch; a job row twice (a stale attempt's outcome too) waits for the next one
            waves += 1
            batch: dict[int, JobOutcome] = {}
            later: list[JobOutcome] = []
            for o in done:
                if o.job_row in batch:
                    later.append(o)
                else:
                    batch[o.job_row] = o
            await tx.run(SQL.succeeded_table)
            await tx.many(SQL.succeeded_rows, [
                (o.job_row, o.owner, results[id(o)], _real(o.cost_usd), o.cache_key, int(o.cache_hit), o.seq,
                 inline.get(o.job_row), o.finished_at(now)) for o in batch.values()
            ])  # fmt: skip
            written = {r["id"]: r for r in await tx.all(SQL.jobs_succeeded, (now,))}
            await tx.run(SQL.succeeded_done)
            for o in batch.values():
                if (row := written.get(o.job_row)) is not None and o.job_row not in taken:
                    taken.add(o.job_row)
                    rows[id(o)] = row
                    succeeded.append((o, row))
            done = later
        if waves > 1:
            position = {id(o): i for i, o in enumerate(outcomes)}
            succeeded.sort(key=lambda item: position[id(item[0])])
        for o in outcomes:
            if o.status == "retry":
                row = await tx.one(
                    SQL.job_retry,
                    (o.retry_at or now, o.error, o.keep_provider_id, o.settled, o.settled, now, o.job_row, o.owner,
                     o.seq, o.seq),
                )  # fmt: skip
            elif o.status != "succeeded":  # failed or canceled
                ended = (o.status, o.error, o.cost_usd, o.finished_at(now), o.job_row, o.owner, o.seq, o.seq)
                row = await tx.one(SQL.job_ended, ended)
            else:
                continue
            if row is not None and o.job_row not in taken:
                taken.add(o.job_row)
                rows[id(o)] = row
        # Each waiting dependent loses as many dependencies as succeeded here; the last of them to succeed (in the
        # outcomes' order) is the one that released it, for its event.
        released_by: dict[tuple[str, str], str] = {}
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for o, row in succeeded:
            eid = row["execution_id"]
            if keys := artifact_keys(o.result):
                await tx.many(SQL.insert_artifact, [(k, now, eid) for k in keys])
            for dep in loads(row["dependents"]) or ():
                released_by[(eid, dep)] = row["key"]
                counts[(eid, dep)] += 1
        released: dict[tuple[str, str], Released] = {}
        if counts:
            w = dumps([[eid, key, n] for (eid, key), n in counts.items()])
            for r in await tx.all(SQL.count_down, (now, w)):
                if r["status"] == "queued":
                    by = (r["execution_id"], released_by[(r["execution_id"], r["key"])])
                    released.setdefault(by, []).append((r["id"], r["key"], r["provider"], r["model"], r["tenant"]))
        return rows, {k: sorted(v) for k, v in released.items()}, inline

    async def _settling(
        self, tx: Tx, ids: list[str]
    ) -> tuple[list[Any], dict[str, dict[str, int]], dict[str, list[float]]]:
        executions: list[Any] = []
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        running: dict[str, list[float]] = defaultdict(list)
        for chunk in chunks(ids):
            cond, args = tx.in_("execution_id", chunk)
            for eid, status, n in await tx.all(SQL.job_counts.format(cond=cond), args):
                counts[eid][status] = n
            for eid, p in await tx.all(SQL.running_progress.format(cond=cond), args):
                running[eid].append(p)
            cond, args = tx.in_("id", chunk)
            executions += await tx.all(SQL.settling.format(cond=cond), args)
        return executions, counts, running

    async def _write_events(self, tx: Tx, events: list[EventRow]) -> list[Any]:
        await tx.many(SQL.insert_events, events)
        subscribed: list[Any] = []
        for chunk in chunks(sorted({e[0] for e in events})):
            cond, args = tx.in_("id", chunk)
            subscribed += await tx.all(SQL.subscribed.format(cond=cond), args)
        return subscribed

    async def _set_provider_ids(self, tx: Tx, items: list[tuple[int, str, str]], now: float) -> list[Any]:
        w = dumps([[job_row, owner, pid] for job_row, owner, pid in items])
        return sorted(await tx.all(SQL.set_provider_ids, (now, w)), key=_row_id)

    async def _set_progress(self, tx: Tx, reports: list[ProgressReport]) -> dict[int, Any]:
        updated: dict[int, Any] = {}
        for r in reports:
            n = r.note or NO_NOTE
            note = (n.phase, n.submitted_at, n.started_at, n.queued_s)
            row = await tx.one(SQL.set_progress, (r.progress, r.queue_position, *note, r.job_row, r.owner))
            if row is not None:
                updated[r.job_row] = row
        return updated

    async def _set_notes(self, tx: Tx, notes: list[Note]) -> set[int]:
        held: set[int] = set()
        for job_row, owner, n in notes:
            if await tx.one(SQL.set_note, (n.phase, n.submitted_at, n.started_at, n.queued_s, job_row, owner)):
                held.add(job_row)
        return held

    # ------------------------------------------------------------------ cache, deliveries
    async def _cache_hits(self, tx: Tx, wanted: list[tuple[str, str]]) -> list[tuple[tuple[str, str], Any]]:
        rows = await tx.all(SQL.cache_hits, (dumps([list(pair) for pair in wanted]),))
        return [((r["tenant"], r["ck"]), r) for r in rows]

    async def _lease_deliveries(
        self, tx: Tx, owner: str, limit: int, lease_s: float, now: float, executions: list[str] | None
    ) -> list[Any]:
        only = ""
        extra: list[Any] = []
        if executions is not None:
            cond, extra = tx.in_("execution_id", executions)
            only = f" AND {cond}"
        sql = SQL.lease_deliveries.format(only=only)
        rows = [dict(r) for r in await tx.all(sql, (owner, now + lease_s, now, now, *extra, limit))]
        secrets: dict[str, str] = {}
        if rows:
            cond, args = tx.in_("name", sorted({r["tenant"] for r in rows}))
            secrets = {r[0]: r[1] for r in await tx.all(SQL.tenant_secrets.format(cond=cond), args)}
        for r in rows:
            r["webhook_secret"] = secrets.get(r["tenant"], "")
        return rows


def _row_id(row: sqlite3.Row) -> int:
    return int(row[0])


def _dict_id(row: dict[str, Any]) -> int:
    return int(row["id"])


def _real(value: float | None) -> float | None:
    """A cost as JSON can carry it: SQLite's JSON has no NaN or infinity (stored as NULL, as binding NaN does)."""
    cost = float(value or 0.0)
    return cost if math.isfinite(cost) else None


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
