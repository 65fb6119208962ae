-- reelflow schema v7: every status column holds only a status reelflow knows (src/reelflow/states.py lists
-- them, with the legal transitions between them; tests/test_states.py checks that this file agrees).
-- SQLite cannot add a CHECK constraint to an existing table; rebuilding `jobs` (15 columns added by later
-- migrations, its indexes, the foreign keys of others) is riskier than these triggers, which refuse the same
-- writes with the same effect: the statement is aborted.
CREATE TRIGGER executions_status_check_insert BEFORE INSERT ON executions
FOR EACH ROW WHEN NOT (NEW.status IN ('queued', 'running', 'succeeded', 'failed', 'canceled'))
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: executions_status_check');
END;
CREATE TRIGGER executions_status_check_update BEFORE UPDATE OF status ON executions
FOR EACH ROW WHEN NOT (NEW.status IN ('queued', 'running', 'succeeded', 'failed', 'canceled'))
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: executions_status_check');
END;
CREATE TRIGGER jobs_status_check_insert BEFORE INSERT ON jobs
FOR EACH ROW WHEN NOT (NEW.status IN ('waiting', 'queued', 'running', 'succeeded', 'failed', 'canceled', 'skipped'))
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: jobs_status_check');
END;
CREATE TRIGGER jobs_status_check_update BEFORE UPDATE OF status ON jobs
FOR EACH ROW WHEN NOT (NEW.status IN ('waiting', 'queued', 'running', 'succeeded', 'failed', 'canceled', 'skipped'))
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: jobs_status_check');
END;
CREATE TRIGGER webhook_deliveries_status_check_insert BEFORE INSERT ON webhook_deliveries
FOR EACH ROW WHEN NOT (NEW.status IN ('pending', 'delivered', 'failed'))
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: webhook_deliveries_status_check');
END;
CREATE TRIGGER webhook_deliveries_status_check_update BEFORE UPDATE OF status ON webhook_deliveries
FOR EACH ROW WHEN NOT (NEW.status IN ('pending', 'delivered', 'failed'))
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: webhook_deliveries_status_check');
END;
