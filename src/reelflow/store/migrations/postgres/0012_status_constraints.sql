-- reelflow schema v12: on SQLite the status checks became CHECK constraints (they were row triggers, which made
-- every status change load the whole row). PostgreSQL has had the constraints since v7; this step documents them.
-- `jobs_claim` served no statement (the claim walks `jobs_tenant_queue`, the look for ready jobs `jobs_run_after`),
-- yet every job entering or leaving 'queued' wrote it.
DROP INDEX IF EXISTS jobs_claim;
COMMENT ON CONSTRAINT jobs_status_check ON jobs IS 'every job status reelflow knows: src/reelflow/states.py';
COMMENT ON CONSTRAINT executions_status_check ON executions IS 'every execution status reelflow knows: src/reelflow/states.py';
