-- reelflow schema v2: tenants and API keys, idempotent submissions, webhook deliveries, artifact ownership.
CREATE TABLE tenants (
    name           TEXT PRIMARY KEY,
    webhook_secret TEXT NOT NULL,
    created_at     REAL NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL REFERENCES tenants (name),
    key_hash     TEXT NOT NULL,
    created_at   REAL NOT NULL,
    revoked_at   REAL,
    last_used_at REAL
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);

ALTER TABLE executions ADD COLUMN request_hash TEXT;
ALTER TABLE executions ADD COLUMN webhook_events TEXT;
CREATE UNIQUE INDEX executions_idempotency ON executions (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    execution_id     TEXT NOT NULL,
    tenant           TEXT NOT NULL,
    url              TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    lease_owner      TEXT,
    lease_expires_at REAL,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       REAL NOT NULL,
    delivered_at     REAL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_execution ON webhook_deliveries (tenant, execution_id, created_at);

CREATE TABLE webhook_attempts (
    id           INTEGER PRIMARY KEY,
    delivery_id  TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    attempted_at REAL NOT NULL,
    status_code  INTEGER,
    latency_ms   REAL,
    error        TEXT
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, attempt);

CREATE TABLE artifacts (
    tenant       TEXT NOT NULL,
    key          TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (tenant, key)
);
