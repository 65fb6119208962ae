-- reelflow schema v12: the status checks of `executions` and `jobs` become CHECK constraints (PostgreSQL has had
-- them since v7). The row triggers of v7 refused the same writes, but any row trigger on these tables makes
-- SQLite load the whole row for every UPDATE of it: measured on this schema, 41 µs per job status change with
-- the trigger, 11 µs without it, and 56 against 28 µs per execution progress write. A CHECK constraint costs
-- a few µs. SQLite cannot add a constraint to a table, so both tables are rebuilt, in this one transaction:
-- `job_logs` (which refers to `jobs`) is set aside and put back, the tables are renamed, recreated with the
-- same columns in the same order, copied, and their indexes made again. No row changes; every id stays.
-- One index is not made again: `jobs_claim` served no statement (the claim walks `jobs_tenant_queue`, the look
-- for ready jobs `jobs_run_after`), yet every job entering or leaving 'queued' wrote it.
CREATE TABLE job_logs_v12 AS SELECT * FROM job_logs;
DROP TABLE job_logs;
ALTER TABLE jobs RENAME TO jobs_v11;
ALTER TABLE executions RENAME TO executions_v11;

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
    updated_at       REAL NOT NULL,
    request_hash     TEXT,
    webhook_events   TEXT,
    CONSTRAINT executions_status_check CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled'))
);
INSERT INTO executions SELECT * FROM executions_v11;

CREATE TABLE jobs (
    id                     INTEGER PRIMARY KEY,
    execution_id           TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    key                    TEXT NOT NULL,
    position               INTEGER NOT NULL,
    type                   TEXT NOT NULL,
    provider               TEXT,
    model                  TEXT,
    params                 TEXT NOT NULL,
    depends_on             TEXT NOT NULL DEFAULT '[]',
    dependents             TEXT NOT NULL DEFAULT '[]',
    deps_left              INTEGER NOT NULL DEFAULT 0,
    status                 TEXT NOT NULL,
    priority               INTEGER NOT NULL DEFAULT 0,
    attempts               INTEGER NOT NULL DEFAULT 0,
    max_attempts           INTEGER NOT NULL DEFAULT 3,
    run_after              REAL NOT NULL DEFAULT 0,
    lease_owner            TEXT,
    lease_expires_at       REAL,
    provider_job_id        TEXT,
    progress               REAL NOT NULL DEFAULT 0,
    queue_position         INTEGER,
    result                 TEXT,
    error                  TEXT,
    cost_estimated         REAL NOT NULL DEFAULT 0,
    cost_actual            REAL,
    timeout_s              REAL,
    start_timeout_s        REAL,
    created_at             REAL NOT NULL,
    queued_at              REAL,
    started_at             REAL,
    finished_at            REAL,
    woken_at               REAL,
    tenant                 TEXT NOT NULL DEFAULT 'default',
    use_cache              INTEGER NOT NULL DEFAULT 1,
    cache_key              TEXT,
    cache_hit              INTEGER NOT NULL DEFAULT 0,
    lease_seq              INTEGER NOT NULL DEFAULT 0,
    intent_at              REAL,
    intent_seq             INTEGER,
    possible_duplicates    INTEGER NOT NULL DEFAULT 0,
    possible_duplicate_usd REAL NOT NULL DEFAULT 0,
    failover               TEXT,
    provider_submitted_at  REAL,
    provider_phase         TEXT,
    provider_started_at    REAL,
    provider_queued_s      REAL,
    woken_outcome          TEXT,
    UNIQUE (execution_id, key),
    CONSTRAINT jobs_status_check
        CHECK (status IN ('waiting', 'queued', 'running', 'succeeded', 'failed', 'canceled', 'skipped'))
);
INSERT INTO jobs SELECT * FROM jobs_v11;

-- the old tables' indexes and triggers go with them
DROP TABLE jobs_v11;
DROP TABLE executions_v11;

CREATE INDEX executions_tenant_created ON executions (tenant, created_at DESC, id DESC);
CREATE INDEX executions_status ON executions (status);
CREATE UNIQUE INDEX executions_idempotency ON executions (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX executions_tenant_month ON executions (tenant, created_at);
CREATE INDEX jobs_run_after ON jobs (run_after) WHERE status = 'queued';
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_owner ON jobs (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX jobs_execution ON jobs (execution_id, status);
CREATE INDEX jobs_woken ON jobs (lease_owner) WHERE woken_at IS NOT NULL;
CREATE INDEX jobs_provider_job ON jobs (provider, provider_job_id) WHERE provider_job_id IS NOT NULL;
CREATE INDEX jobs_tenant_queue ON jobs (tenant, priority DESC, id) WHERE status = 'queued';
CREATE INDEX jobs_running_provider ON jobs (provider, model) WHERE status = 'running';
CREATE INDEX jobs_cache ON jobs (tenant, cache_key, finished_at) WHERE cache_key IS NOT NULL AND status = 'succeeded';
CREATE INDEX jobs_running_tenant ON jobs (tenant) WHERE status = 'running';

CREATE TABLE job_logs (
    job_id          INTEGER PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,
    earlier         TEXT NOT NULL DEFAULT '',
    earlier_dropped INTEGER NOT NULL DEFAULT 0,
    current         TEXT NOT NULL DEFAULT '',
    current_dropped INTEGER NOT NULL DEFAULT 0,
    updated_at      REAL NOT NULL
);
INSERT INTO job_logs SELECT * FROM job_logs_v12;
DROP TABLE job_logs_v12;
