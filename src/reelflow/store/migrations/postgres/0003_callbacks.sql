-- reelflow schema v3 (PostgreSQL): provider callbacks wake the job's waiting worker.
ALTER TABLE jobs ADD COLUMN woken_at DOUBLE PRECISION;
CREATE INDEX jobs_woken ON jobs (lease_owner) WHERE woken_at IS NOT NULL;
CREATE INDEX jobs_provider_job ON jobs (provider, provider_job_id) WHERE provider_job_id IS NOT NULL;
