-- reelflow schema v12: fewer index entries and cheaper status checks for each job write.
-- `jobs_claim` served no statement (the claim walks `jobs_tenant_queue`, the look for ready jobs `jobs_run_after`),
-- yet every job entering or leaving 'queued' wrote it.
DROP INDEX IF EXISTS jobs_claim;
-- The jobs' status check on UPDATE runs AFTER the row is written instead of BEFORE: it refuses the same writes
-- the same way (RAISE(ABORT) undoes the whole statement), without SQLite reading each row back after a BEFORE
-- trigger (which may have changed it). About a third of a lease's cost went to that.
DROP TRIGGER IF EXISTS jobs_status_check_update;
CREATE TRIGGER jobs_status_check_update AFTER UPDATE OF status ON jobs
FOR EACH ROW WHEN NOT (NEW.status IN ('waiting', 'queued', 'running', 'succeeded', 'failed', 'canceled', 'skipped'))
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: jobs_status_check');
END;
