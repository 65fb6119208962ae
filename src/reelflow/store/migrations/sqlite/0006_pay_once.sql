-- reelflow schema v6: pay once.
-- lease_seq: incremented by every claim and never reset; an attempt's writes count only while it matches.
-- intent_at / intent_seq: set by the claim that starts the job's first unsettled attempt, cleared when the
-- job settles; a later attempt that finds them set asks the provider before it pays again.
-- possible_duplicates / _usd: retries that went ahead where the provider could not be asked.
ALTER TABLE jobs ADD COLUMN lease_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN intent_at REAL;
ALTER TABLE jobs ADD COLUMN intent_seq INTEGER;
ALTER TABLE jobs ADD COLUMN possible_duplicates INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN possible_duplicate_usd REAL NOT NULL DEFAULT 0;
-- A cancellation addressed to the worker that held the attempt, kept until that worker reads it, even if the
-- execution is resumed meanwhile (its provider work is cancelled then, never orphaned).
CREATE TABLE job_cancels (
    owner           TEXT NOT NULL,
    job_id          INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    provider        TEXT,
    model           TEXT,
    type            TEXT,
    provider_job_id TEXT,
    created_at      REAL NOT NULL,
    PRIMARY KEY (owner, job_id, seq)
);
