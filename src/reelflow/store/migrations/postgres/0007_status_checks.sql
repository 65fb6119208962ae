-- reelflow schema v7: every status column holds only a status reelflow knows (src/reelflow/states.py lists
-- them, with the legal transitions between them; tests/test_states.py checks that this file agrees).
ALTER TABLE executions ADD CONSTRAINT executions_status_check CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled'));
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check CHECK (status IN ('waiting', 'queued', 'running', 'succeeded', 'failed', 'canceled', 'skipped'));
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_status_check CHECK (status IN ('pending', 'delivered', 'failed'));
