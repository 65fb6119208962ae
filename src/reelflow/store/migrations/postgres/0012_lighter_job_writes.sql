-- reelflow schema v12 (PostgreSQL): `jobs_claim` served no statement (the claim walks `jobs_tenant_queue`, the
-- look for ready jobs `jobs_run_after`), yet every job entering or leaving 'queued' wrote it.
DROP INDEX IF EXISTS jobs_claim;
