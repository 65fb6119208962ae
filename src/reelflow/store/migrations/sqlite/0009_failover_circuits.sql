-- Failover between models: a job's models in the order they are tried, when it has alternatives, and why each
-- one passed over was (JSON: {"models": [...], "on": "transient" | "any", "passed": [{"model", "reason"}]}).
ALTER TABLE jobs ADD COLUMN failover TEXT;

-- Circuits shared by every worker: one row per provider (model NULL) and per model. See reelflow.circuits.
CREATE TABLE circuits (
    key         TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    model       TEXT,
    state       TEXT NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half-open')),
    failures    INTEGER NOT NULL DEFAULT 0,
    pending     INTEGER NOT NULL DEFAULT 0,
    pending_at  REAL,
    until_at    REAL,
    probe_owner TEXT,
    ok_count    INTEGER NOT NULL DEFAULT 0,
    fail_count  INTEGER NOT NULL DEFAULT 0,
    window_at   REAL,
    failing     TEXT NOT NULL DEFAULT '[]',
    updated_at  REAL NOT NULL
);
