-- reelflow schema v13: the leases still held on jobs that are no longer running (a job canceled while a worker held
-- it, until that worker lets go), by expiry. With `jobs_lease` (the running jobs' leases), the once-a-second look
-- for expired leases (`any_expired`) is two index probes; it walked every held lease (10,000 in one worker: 1.5 ms
-- of CPU a second).
CREATE INDEX jobs_lease_held ON jobs (lease_expires_at) WHERE lease_owner IS NOT NULL AND status <> 'running';
