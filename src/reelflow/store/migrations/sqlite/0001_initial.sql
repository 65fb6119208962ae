-- reelflow schema v1: executions, their jobs, and the append-only event log.
CREATE TABLE executions (
    id               TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL DEFAULT 'default',
    status           TEXT NOT NULL,
    plan             TEXT NOT NULL,
    metadata         TEXT NOT NULL DEFAULT '{}',
    webhook          TEXT,
    on_failure       TEXT NOT NULL DEFAULT 'stop',
    priority         INTEGER NOT NULL DEFAULT 0,
    progress         REAL NOT NULL DEFAULT 0,
    result           TEXT,
    error            TEXT,
    cost_estimated   REAL NOT NULL DEFAULT 0,
    cost_actual      REAL NOT NULL DEFAULT 0,
    deadline         REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    retry_of         TEXT,
    idempotency_key  TEXT,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    updated_at       REAL NOT NULL
);
CREATE INDEX executions_tenant_created ON executions (tenant, created_at DESC, id DESC);
CREATE INDEX executions_status ON executions (status);

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    execution_id     TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    key              TEXT NOT NULL,
    position         INTEGER NOT NULL,
    type             TEXT NOT NULL,
    provider         TEXT,
    model            TEXT,
    params           TEXT NOT NULL,
    depends_on       TEXT NOT NULL DEFAULT '[]',
    dependents       TEXT NOT NULL DEFAULT '[]',
    deps_left        INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 3,
    run_after        REAL NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at REAL,
    provider_job_id  TEXT,
    progress         REAL NOT NULL DEFAULT 0,
    queue_position   INTEGER,
    result           TEXT,
    error            TEXT,
    cost_estimated   REAL NOT NULL DEFAULT 0,
    cost_actual      REAL,
    timeout_s        REAL,
    start_timeout_s  REAL,
    created_at       REAL NOT NULL,
    queued_at        REAL,
    started_at       REAL,
    finished_at      REAL,
    UNIQUE (execution_id, key)
);
CREATE INDEX jobs_claim ON jobs (priority DESC, id) WHERE status = 'queued';
CREATE INDEX jobs_run_after ON jobs (run_after) WHERE status = 'queued';
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_owner ON jobs (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX jobs_execution ON jobs (execution_id, status);

CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    job_key      TEXT,
    type         TEXT NOT NULL,
    data         TEXT NOT NULL DEFAULT '{}',
    created_at   REAL NOT NULL
);
CREATE INDEX events_execution ON events (execution_id, seq);

CREATE TABLE workers (
    id          TEXT PRIMARY KEY,
    info        TEXT NOT NULL DEFAULT '{}',
    started_at  REAL NOT NULL,
    last_seen   REAL NOT NULL
);
