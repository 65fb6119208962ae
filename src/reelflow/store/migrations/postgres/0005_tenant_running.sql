-- reelflow schema v5: the claim counts each tenant's running jobs (tenants.<name>.max_concurrent).
CREATE INDEX jobs_running_tenant ON jobs (tenant) WHERE status = 'running';
