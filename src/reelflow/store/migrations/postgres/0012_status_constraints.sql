-- reelflow schema v12 (PostgreSQL): fewer index entries per job row version, an index for the claim's look at
-- capped providers, and comments on the status constraints (on SQLite, v12 turned its status triggers into
-- CHECK constraints; PostgreSQL has had the constraints since v7). Every claim, finish and count-down writes a new
-- version of each job row it changes, with an entry in each index whose condition the version meets.
-- jobs_claim goes: no statement reads it (the claim walks jobs_tenant_queue, in the same order per tenant).
-- jobs_execution goes: the unique (execution_id, key) index finds an execution's jobs as well.
DROP INDEX IF EXISTS jobs_claim;
DROP INDEX IF EXISTS jobs_execution;
-- The claim asks, capped provider by capped provider, whether it has ready jobs: one probe each into
-- jobs_queued_provider, instead of reading every queued job (20 ms per claim with 10,000 queued).
CREATE INDEX jobs_queued_provider ON jobs (provider, run_after) WHERE status = 'queued';
COMMENT ON CONSTRAINT jobs_status_check ON jobs IS 'every job status reelflow knows: src/reelflow/states.py';
COMMENT ON CONSTRAINT executions_status_check ON executions IS 'every execution status reelflow knows: src/reelflow/states.py';
