-- reelflow schema v4 (PostgreSQL): fair claims under provider and model limits, a shared provider pace,
-- the result cache.
ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
UPDATE jobs SET tenant = e.tenant FROM executions e WHERE e.id = jobs.execution_id;
ALTER TABLE jobs ADD COLUMN use_cache INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN cache_key TEXT;
ALTER TABLE jobs ADD COLUMN cache_hit INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_tenant_queue ON jobs (tenant, priority DESC, id) WHERE status = 'queued';
CREATE INDEX jobs_running_provider ON jobs (provider, model) WHERE status = 'running';
CREATE INDEX jobs_cache ON jobs (tenant, cache_key, finished_at) WHERE cache_key IS NOT NULL AND status = 'succeeded';
CREATE INDEX executions_tenant_month ON executions (tenant, created_at);

CREATE TABLE provider_pace (
    provider     TEXT PRIMARY KEY,
    tokens       DOUBLE PRECISION NOT NULL DEFAULT 0,
    updated_at   DOUBLE PRECISION NOT NULL DEFAULT 0,
    factor       DOUBLE PRECISION NOT NULL DEFAULT 1,
    hold_until   DOUBLE PRECISION NOT NULL DEFAULT 0,
    throttled_at DOUBLE PRECISION NOT NULL DEFAULT 0
);
