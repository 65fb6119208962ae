-- The statements SQLite runs its own way (see shared.sql for the format). One writer at a time holds the file's
-- write lock, so nothing here locks rows; lists arrive as `{cond}` (`column IN (...)`, at most 500 values).

-- name: schema_table
CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)

-- ---------------------------------------------------------------- claims
-- name: lease_jobs
UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = %s,
lease_expires_at = %s, started_at = COALESCE(started_at, %s), progress = 0, queue_position = NULL,
lease_seq = lease_seq + 1, intent_at = COALESCE(intent_at, %s),
intent_seq = COALESCE(intent_seq, lease_seq + 1)
WHERE {guard running} AND {cond}
RETURNING id, execution_id, key, type, provider, model, params, depends_on, attempts,
max_attempts, provider_job_id, timeout_s, start_timeout_s, started_at, tenant, use_cache,
cost_estimated, lease_seq, intent_at, intent_seq, failover

-- The leased jobs' executions' deadlines, once each (`deadline` follows `plan`, the whole plan's JSON, in the
-- row: read for each leased job, it walked the plan's overflow pages, ~2 us a job).
-- name: execution_deadlines
SELECT id, deadline FROM executions WHERE {cond}

-- name: dep_results
SELECT key, result FROM jobs WHERE execution_id = %s AND {cond}

-- name: running_providers
SELECT provider, COUNT(*) AS n FROM jobs WHERE status = 'running' AND {cond} GROUP BY provider

-- name: running_models
SELECT model, COUNT(*) AS n FROM jobs WHERE status = 'running' AND model IS NOT NULL GROUP BY model

-- name: tenant_queue
SELECT id, provider, model FROM jobs WHERE status = 'queued' AND tenant = %s AND run_after <= %s{only}
ORDER BY priority DESC, id LIMIT %s

-- ---------------------------------------------------------------- outcomes
-- A batch of successes in one statement, from `temp.succeeded` (filled by `succeeded_rows` just before, emptied
-- by `succeeded_done` after): [job row, owner, result, cost, cache key, cache hit, lease number, provider id, the
-- attempt's end] (each attempt's own; a job row at most once a batch). A JSON array read with json_extract cost
-- 8 parses of each row's element (its result's text unescaped each time): ~9 us a row, a third more than this.
-- The provider id, when the work's id arrives with its end (a quick job), is written by this same UPDATE: one
-- row version, not two.
-- name: succeeded_table
CREATE TEMP TABLE IF NOT EXISTS succeeded (id INTEGER PRIMARY KEY, owner TEXT, result TEXT, cost REAL, ck TEXT,
hit INTEGER, seq INTEGER, pid TEXT, fin REAL)

-- name: succeeded_rows
INSERT INTO temp.succeeded (id, owner, result, cost, ck, hit, seq, pid, fin)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)

-- name: succeeded_done
DELETE FROM temp.succeeded

-- name: jobs_succeeded
UPDATE jobs SET status = 'succeeded', result = w.result, cost_actual = w.cost, progress = 100,
finished_at = w.fin, lease_owner = NULL, lease_expires_at = NULL, queue_position = NULL,
error = NULL, cache_key = w.ck, cache_hit = w.hit, intent_at = NULL, intent_seq = NULL,
provider_job_id = COALESCE(w.pid, provider_job_id),
provider_submitted_at = CASE WHEN w.pid IS NULL THEN provider_submitted_at ELSE %s END
FROM temp.succeeded AS w
WHERE jobs.id = w.id AND {guard succeeded on jobs.status} AND jobs.lease_owner = w.owner
AND (w.seq IS NULL OR jobs.lease_seq = w.seq)
RETURNING jobs.id, jobs.execution_id, jobs.key, jobs.dependents

-- name: insert_artifact
INSERT OR IGNORE INTO artifacts (tenant, key, execution_id, created_at)
SELECT tenant, %s, id, %s FROM executions WHERE id = %s

-- Each waiting dependent loses as many dependencies as succeeded in the batch (`w`: a JSON array of [execution,
-- key, n]), and is queued when none is left: one write of each row.
-- name: count_down
UPDATE jobs SET deps_left = deps_left - w.n,
status = CASE WHEN deps_left - w.n <= 0 THEN 'queued' ELSE status END,
queued_at = CASE WHEN deps_left - w.n <= 0 THEN %s ELSE queued_at END
FROM (SELECT json_extract(value, '$[0]') AS eid, json_extract(value, '$[1]') AS key,
  json_extract(value, '$[2]') AS n FROM json_each(%s)) AS w
WHERE jobs.execution_id = w.eid AND jobs.key = w.key AND {guard queued on jobs.status from waiting}
RETURNING jobs.id, jobs.execution_id, jobs.key, jobs.provider, jobs.model, jobs.tenant, jobs.status

-- Retries and failures, rarer, one row at a time.
-- name: job_retry
UPDATE jobs SET status = 'queued', run_after = %s, error = %s, lease_owner = NULL,
lease_expires_at = NULL, progress = 0, queue_position = NULL,
provider_job_id = CASE WHEN %s THEN provider_job_id END,
intent_at = CASE WHEN %s THEN NULL ELSE intent_at END,
intent_seq = CASE WHEN %s THEN NULL ELSE intent_seq END,
queued_at = %s WHERE id = %s AND {guard queued from running} AND lease_owner = %s
AND (%s IS NULL OR lease_seq = %s) RETURNING execution_id, key, attempts

-- A failed or canceled attempt: either move is legal only from running (the guards are the same text).
-- name: job_ended
UPDATE jobs SET status = %s, error = %s, cost_actual = %s, finished_at = %s, lease_owner = NULL,
lease_expires_at = NULL, queue_position = NULL, intent_at = NULL, intent_seq = NULL
WHERE id = %s AND {guard failed from running} AND lease_owner = %s
AND (%s IS NULL OR lease_seq = %s) RETURNING execution_id, key, attempts

-- Provider ids of running jobs in one statement: `w` is a JSON array of [job row, lease owner, provider id] (a job
-- row and owner at most once).
-- name: set_provider_ids
UPDATE jobs SET provider_job_id = w.pid, provider_submitted_at = %s, provider_phase = NULL,
provider_started_at = NULL, provider_queued_s = NULL
FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS owner,
  json_extract(value, '$[2]') AS pid FROM json_each(%s)) AS w
WHERE jobs.id = w.id AND jobs.lease_owner = w.owner AND jobs.status = 'running'
RETURNING jobs.id, jobs.execution_id, jobs.key, jobs.provider_job_id

-- name: set_progress
UPDATE jobs SET progress = %s, queue_position = %s, provider_phase = COALESCE(%s, provider_phase),
provider_submitted_at = COALESCE(%s, provider_submitted_at),
provider_started_at = COALESCE(provider_started_at, %s),
provider_queued_s = COALESCE(provider_queued_s, %s) WHERE id = %s AND lease_owner = %s
AND status = 'running' RETURNING id, execution_id, key

-- What a provider told about a running attempt (its phase, when it started), one job at a time.
-- name: set_note
UPDATE jobs SET provider_phase = COALESCE(%s, provider_phase),
provider_submitted_at = COALESCE(%s, provider_submitted_at),
provider_started_at = COALESCE(provider_started_at, %s),
provider_queued_s = COALESCE(provider_queued_s, %s)
WHERE id = %s AND lease_owner = %s AND status = 'running' RETURNING id

-- ---------------------------------------------------------------- settling and the event log
-- name: job_counts
SELECT execution_id, status, COUNT(*) AS n FROM jobs WHERE {cond} GROUP BY execution_id, status

-- name: running_progress
SELECT execution_id, progress FROM jobs WHERE {cond} AND status = 'running'

-- name: settling
SELECT id, status, progress, started_at, cancel_requested FROM executions WHERE {cond}

-- name: insert_events
INSERT INTO events (execution_id, job_key, type, data, created_at) VALUES (%s, %s, %s, %s, %s)

-- name: subscribed
SELECT id, tenant, webhook, webhook_events FROM executions WHERE {cond} AND webhook IS NOT NULL

-- ---------------------------------------------------------------- cache and deliveries
-- The latest succeeded job of each (tenant, cache key) in `w` (a JSON array of [tenant, cache key]) that has one.
-- name: cache_hits
SELECT w.tenant, w.ck, j.result, j.execution_id, j.key
FROM (SELECT json_extract(value, '$[0]') AS tenant, json_extract(value, '$[1]') AS ck FROM json_each(%s)) AS w
JOIN jobs j ON j.id = (SELECT c.id FROM jobs c WHERE c.tenant = w.tenant AND c.cache_key = w.ck
  AND c.status = 'succeeded' ORDER BY c.finished_at DESC LIMIT 1)

-- name: lease_deliveries
UPDATE webhook_deliveries SET lease_owner = %s, lease_expires_at = %s
WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= %s
  AND (lease_expires_at IS NULL OR lease_expires_at < %s){only} ORDER BY next_attempt_at LIMIT %s)
RETURNING id, execution_id, tenant, url, event_type, payload, attempts, created_at, retry_from

-- name: tenant_secrets
SELECT name, webhook_secret FROM tenants WHERE {cond}
