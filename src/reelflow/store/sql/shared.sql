-- The statements both databases run with the same text, in PostgreSQL's parameter style (%s; the SQLite driver
-- turns it into ?). Read once by `common.Statements`: each block is named by its `-- name:` line;
-- `{guard TO [from STATUS] [on COLUMN] [execution]}` is the condition of the legal moves to TO (`states.guard`);
-- other `{fields}` are filled in by the Python that runs the statement. A dialect's file may replace a block.

-- name: record_migration
INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)

-- name: applied_migrations
SELECT version FROM schema_migrations

-- ---------------------------------------------------------------- claims
-- name: any_ready
SELECT 1 FROM jobs WHERE status = 'queued' AND run_after <= %s LIMIT 1

-- The tenants with queued jobs (an index walk), with `{running}` their running jobs or 0.
-- name: queued_tenants
WITH RECURSIVE t(name) AS (
SELECT MIN(tenant) FROM jobs WHERE status = 'queued'
UNION ALL SELECT (SELECT MIN(tenant) FROM jobs WHERE status = 'queued' AND tenant > t.name)
FROM t WHERE t.name IS NOT NULL)
SELECT name, {running} AS running FROM t WHERE name IS NOT NULL

-- name: running_of_tenant
(SELECT COUNT(*) FROM jobs r WHERE r.status = 'running' AND r.tenant = t.name)

-- name: start_executions
UPDATE executions SET status = 'running', started_at = %s, updated_at = %s
WHERE {guard running execution from queued} AND {cond}
RETURNING id

-- name: month_spent
SELECT COALESCE(SUM(CASE WHEN j.status = 'running' THEN j.cost_estimated
  ELSE COALESCE(j.cost_actual, 0) END), 0) AS spent
FROM jobs j JOIN executions e ON e.id = j.execution_id
WHERE e.tenant = %s AND e.created_at >= %s
AND (j.status = 'running' OR j.cost_actual IS NOT NULL)

-- name: tenant_running
SELECT COUNT(*) AS n FROM jobs WHERE status = 'running' AND tenant = %s

-- ---------------------------------------------------------------- finishing and settling
-- name: on_failure
SELECT on_failure FROM executions WHERE id = %s

-- name: job_graph
SELECT key, dependents, status FROM jobs WHERE execution_id = %s ORDER BY id

-- name: skip_job
UPDATE jobs SET status = 'skipped', error = %s, finished_at = %s WHERE execution_id = %s AND key = %s

-- name: update_progress
UPDATE executions SET status = %s, progress = %s, updated_at = %s WHERE id = %s

-- name: sink_results
SELECT key, result FROM jobs WHERE execution_id = %s AND dependents = '[]' AND status = 'succeeded'
ORDER BY position

-- name: failed_jobs
SELECT key, error FROM jobs WHERE execution_id = %s AND status = 'failed' ORDER BY finished_at, position

-- name: execution_cost
SELECT COALESCE(SUM(cost_actual), 0) AS cost FROM jobs WHERE execution_id = %s

-- name: end_execution
UPDATE executions SET status = %s, progress = %s, result = %s, error = %s, cost_actual = %s,
finished_at = %s, updated_at = %s WHERE id = %s RETURNING created_at

-- name: execution
SELECT * FROM executions WHERE id = %s

-- name: execution_jobs
SELECT * FROM jobs WHERE execution_id = %s ORDER BY position

-- name: insert_deliveries
INSERT INTO webhook_deliveries (id, execution_id, tenant, url, event_type, payload, next_attempt_at, created_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)

-- ---------------------------------------------------------------- cancel and resume
-- name: lock_execution_jobs
SELECT id FROM jobs WHERE execution_id = %s ORDER BY id FOR UPDATE

-- name: execution_status
SELECT tenant, status FROM executions WHERE id = %s

-- name: request_cancel
UPDATE executions SET cancel_requested = 1 WHERE id = %s

-- name: record_cancels
INSERT INTO job_cancels (owner, job_id, seq, provider, model, type, provider_job_id, created_at)
SELECT COALESCE(lease_owner, ''), id, lease_seq, provider, model, type, provider_job_id, %s
FROM jobs WHERE execution_id = %s AND ((status = 'running' AND lease_owner IS NOT NULL)
OR (status = 'queued' AND provider_job_id IS NOT NULL)) ON CONFLICT DO NOTHING

-- name: cancel_jobs
UPDATE jobs SET status = 'canceled', finished_at = %s, error = 'canceled by request'
WHERE execution_id = %s AND {guard canceled} RETURNING id, key

-- name: resumable_jobs
SELECT id, key, status, depends_on, failover FROM jobs WHERE execution_id = %s ORDER BY id

-- name: resume_job
UPDATE jobs SET status = %s, deps_left = %s, attempts = 0, error = NULL, result = NULL,
provider_job_id = NULL, progress = 0, queue_position = NULL, started_at = NULL,
finished_at = NULL, run_after = 0, lease_owner = NULL, lease_expires_at = NULL,
cost_actual = NULL, intent_at = NULL, intent_seq = NULL, queued_at = %s
WHERE execution_id = %s AND key = %s

-- name: resume_execution
UPDATE executions SET status = 'running', cancel_requested = 0, finished_at = NULL,
error = NULL, result = NULL, updated_at = %s WHERE id = %s

-- ---------------------------------------------------------------- leases
-- name: note_attempt
UPDATE jobs SET possible_duplicates = possible_duplicates + %s,
possible_duplicate_usd = possible_duplicate_usd + %s
WHERE id = %s AND lease_owner = %s AND lease_seq = %s AND status = 'running'
RETURNING execution_id, key

-- name: any_canceled_for
SELECT 1 FROM jobs WHERE lease_owner = %s AND status <> 'running' LIMIT 1

-- name: unlease_canceled
UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL
WHERE lease_owner = %s AND status <> 'running' RETURNING id

-- name: any_cancel_for
SELECT 1 FROM job_cancels WHERE owner = %s LIMIT 1

-- name: take_cancels
DELETE FROM job_cancels WHERE owner = %s RETURNING job_id, seq

-- name: unlease_canceled_ids
UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = %s
AND status <> 'running' AND {cond}

-- name: release_jobs
UPDATE jobs SET status = 'queued', attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0
END, lease_owner = NULL, lease_expires_at = NULL, queued_at = %s, run_after = %s, progress = 0
WHERE lease_owner = %s AND {guard queued from running} AND {cond}
RETURNING id, execution_id, key

-- Leases expired (a running job's lease is always held: `jobs_lease`; the others' by `jobs_lease_held`), or
-- cancellations left for a dead worker: three index probes.
-- name: any_expired
SELECT 1 FROM jobs WHERE status = 'running' AND lease_expires_at < %s
UNION ALL SELECT 1 FROM jobs WHERE lease_owner IS NOT NULL AND status <> 'running' AND lease_expires_at < %s
UNION ALL SELECT 1 FROM job_cancels WHERE owner = '' OR created_at < %s LIMIT 1

-- name: requeue_expired
UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,
queued_at = %s, run_after = %s, progress = 0
WHERE {guard queued from running} AND lease_expires_at < %s
AND attempts < max_attempts RETURNING id, execution_id, key, attempts

-- name: exhausted_leases
SELECT id, lease_owner, attempts FROM jobs WHERE status = 'running' AND lease_expires_at < %s ORDER BY id

-- name: orphaned_leases
UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE status <> 'running'
AND lease_owner IS NOT NULL AND lease_expires_at < %s
RETURNING id, provider, model, type, provider_job_id

-- name: orphaned_cancels
DELETE FROM job_cancels WHERE owner = '' OR (created_at < %s AND owner NOT IN
(SELECT id FROM workers WHERE last_seen >= %s))
RETURNING job_id AS id, provider, model, type, provider_job_id

-- name: finished_before
SELECT id FROM executions WHERE finished_at IS NOT NULL AND finished_at < %s

-- name: prune
DELETE FROM {table} WHERE {cond}

-- ---------------------------------------------------------------- workers and callbacks
-- name: register_worker
INSERT INTO workers (id, info, started_at, last_seen) VALUES (%s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET info = excluded.info, started_at = excluded.started_at,
last_seen = excluded.last_seen

-- name: unregister_worker
DELETE FROM workers WHERE id = %s

-- name: live_workers
SELECT info FROM workers WHERE last_seen > %s

-- name: extend_leases
UPDATE jobs SET lease_expires_at = %s WHERE lease_owner = %s AND status = 'running' AND lease_expires_at < %s

-- name: held_leases
SELECT id FROM jobs WHERE lease_owner = %s AND status = 'running'

-- name: worker_seen
UPDATE workers SET last_seen = %s WHERE id = %s

-- name: job_by_key
SELECT id, status, provider_job_id FROM jobs WHERE execution_id = %s AND key = %s
AND provider = %s

-- name: job_by_remote_id
SELECT id, status, provider_job_id FROM jobs WHERE provider = %s AND provider_job_id = %s
ORDER BY id DESC LIMIT 1

-- name: wake
UPDATE jobs SET woken_at = %s WHERE id = %s

-- name: any_woken_for
SELECT 1 FROM jobs WHERE lease_owner = %s AND woken_at IS NOT NULL LIMIT 1

-- name: wake_with_outcome
UPDATE jobs SET woken_at = %s, woken_outcome = %s WHERE id = %s

-- name: woken_rows
SELECT id, woken_outcome FROM jobs WHERE lease_owner = %s AND woken_at IS NOT NULL ORDER BY id

-- name: clear_woken
UPDATE jobs SET woken_at = NULL, woken_outcome = NULL WHERE id = %s

-- ---------------------------------------------------------------- submission and reading
-- name: idempotent_earlier
SELECT id, request_hash, created_at FROM executions WHERE tenant = %s AND idempotency_key = %s

-- name: free_idempotency_key
UPDATE executions SET idempotency_key = NULL WHERE id = %s

-- name: insert_execution
INSERT INTO executions (id, tenant, status, plan, metadata, webhook, on_failure, priority,
cost_estimated, deadline, retry_of, idempotency_key, request_hash, webhook_events,
created_at, updated_at)
VALUES (%s, %s, 'queued', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO NOTHING RETURNING id

-- name: stored_request_hash
SELECT request_hash FROM executions WHERE id = %s

-- name: insert_jobs
INSERT INTO jobs (execution_id, key, position, type, provider, model, params, depends_on,
dependents, deps_left, status, priority, max_attempts, timeout_s, start_timeout_s,
cost_estimated, created_at, queued_at, tenant, use_cache, failover)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)

-- name: list_executions
SELECT * FROM executions{where} ORDER BY created_at DESC, id DESC LIMIT %s

-- name: execution_plan
SELECT tenant, plan FROM executions WHERE id = %s

-- name: events
SELECT * FROM events WHERE execution_id = %s AND seq > %s ORDER BY seq LIMIT %s

-- name: next_wakeup
SELECT MIN(run_after) AS t FROM jobs WHERE status = 'queued'

-- ---------------------------------------------------------------- usage and statistics
-- An unfinished execution reserves the larger of its estimate and what it has spent.
-- name: month_usage
SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN finished_at IS NOT NULL THEN COALESCE(cost_actual, 0)
ELSE CASE WHEN cost_estimated > COALESCE(cost_actual, 0) THEN cost_estimated ELSE COALESCE(cost_actual, 0) END
END), 0) AS used FROM executions WHERE tenant = %s AND created_at >= %s

-- name: usage
SELECT COUNT(*) AS n,
COALESCE(SUM(CASE WHEN finished_at IS NOT NULL THEN COALESCE(cost_actual, 0) ELSE 0 END), 0) AS cost,
COALESCE(SUM(CASE WHEN finished_at IS NULL THEN
  CASE WHEN cost_estimated > COALESCE(cost_actual, 0) THEN cost_estimated ELSE COALESCE(cost_actual, 0) END
  ELSE 0 END), 0) AS reserved,
COALESCE(SUM(CASE WHEN finished_at IS NULL THEN 1 ELSE 0 END), 0) AS unfinished
FROM executions WHERE tenant = %s AND created_at >= %s

-- name: usage_jobs
SELECT COUNT(*) AS n, COALESCE(SUM(cache_hit), 0) AS hits FROM jobs j
JOIN executions e ON e.id = j.execution_id
WHERE e.tenant = %s AND e.created_at >= %s AND j.status = 'succeeded'

-- name: jobs_by_status
SELECT status AS k, COUNT(*) AS n FROM jobs GROUP BY status

-- name: running_by_provider
SELECT COALESCE(provider, 'local') AS k, COUNT(*) AS n FROM jobs WHERE status = 'running' GROUP BY 1

-- name: queued_by_provider
SELECT COALESCE(provider, 'local') AS k, COUNT(*) AS n FROM jobs WHERE status = 'queued' GROUP BY 1

-- name: active_by_tenant
SELECT tenant AS k, COUNT(*) AS n FROM jobs WHERE status IN ('queued', 'running') GROUP BY tenant

-- ---------------------------------------------------------------- provider pacing
-- name: pace_row
INSERT INTO provider_pace (provider, tokens, updated_at, factor, hold_until, throttled_at)
VALUES (%s, 0, %s, 1, 0, 0) ON CONFLICT (provider) DO NOTHING

-- name: pace
SELECT tokens, updated_at, factor, hold_until, throttled_at FROM provider_pace WHERE provider = %s

-- name: take_tokens
UPDATE provider_pace SET tokens = %s, updated_at = %s, factor = %s WHERE provider = %s

-- A 429 holds every worker until Retry-After and halves the pace, at most once a second.
-- name: throttle
INSERT INTO provider_pace AS p (provider, updated_at, factor, hold_until, throttled_at)
VALUES (%s, %s, 0.5, %s, %s) ON CONFLICT (provider) DO UPDATE SET
hold_until = CASE WHEN excluded.hold_until > p.hold_until THEN excluded.hold_until
  ELSE p.hold_until END,
factor = CASE WHEN excluded.throttled_at - p.throttled_at >= 1.0
  THEN CASE WHEN p.factor * 0.5 > 0.02 THEN p.factor * 0.5 ELSE 0.02 END
  ELSE p.factor END,
throttled_at = CASE WHEN excluded.throttled_at - p.throttled_at >= 1.0
  THEN excluded.throttled_at ELSE p.throttled_at END

-- name: provider_paces
SELECT provider, hold_until, throttled_at FROM provider_pace WHERE throttled_at > %s

-- ---------------------------------------------------------------- tenants, keys, artifacts
-- name: tenant_secret
SELECT webhook_secret FROM tenants WHERE name = %s

-- name: insert_tenant
INSERT INTO tenants (name, webhook_secret, created_at) VALUES (%s, %s, %s)
ON CONFLICT (name) DO NOTHING

-- name: insert_api_key
INSERT INTO api_keys (id, tenant, key_hash, created_at) VALUES (%s, %s, %s, %s)

-- name: api_key
SELECT id, tenant, key_hash, created_at, revoked_at FROM api_keys WHERE id = %s

-- name: api_keys
SELECT id, tenant, key_hash, created_at, revoked_at FROM api_keys{where} ORDER BY created_at

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL

-- name: owned_artifacts
SELECT key FROM artifacts WHERE tenant = %s AND {cond}

-- name: adopted
SELECT provider_job_id AS key FROM jobs WHERE provider = %s AND {cond}

-- name: owns_artifact
SELECT 1 FROM artifacts WHERE tenant = %s AND key = %s

-- ---------------------------------------------------------------- webhook deliveries
-- name: any_delivery_due
SELECT 1 FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= %s
AND (lease_expires_at IS NULL OR lease_expires_at < %s) LIMIT 1

-- name: delivery_attempted
UPDATE webhook_deliveries SET attempts = attempts + 1, status = %s, next_attempt_at = %s,
last_status_code = %s, last_error = %s, delivered_at = %s, lease_owner = NULL,
lease_expires_at = NULL WHERE id = %s AND lease_owner = %s RETURNING attempts

-- name: insert_attempt
INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, status_code, latency_ms, error,
request_body, response_body) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)

-- name: deliveries
SELECT * FROM webhook_deliveries{where} ORDER BY created_at DESC, id LIMIT %s

-- name: delivery_attempts
SELECT delivery_id, attempt, attempted_at, status_code, latency_ms, error, request_body, response_body
FROM webhook_attempts WHERE {cond} ORDER BY delivery_id, attempt

-- name: delivery_tenant
SELECT tenant FROM webhook_deliveries WHERE id = %s

-- name: redeliver
UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = %s, retry_from = %s,
lease_owner = NULL, lease_expires_at = NULL WHERE id = %s

-- ---------------------------------------------------------------- operational figures (store/stats.py)
-- Each with `{t}`: nothing, or one tenant's rows. Their columns have distinct names (PostgreSQL's rows are dicts).
-- name: stats_executions
SELECT status, COUNT(*) FROM executions WHERE (status IN ('queued', 'running') OR finished_at >= %s){t}
GROUP BY status

-- name: stats_execution_seconds
SELECT finished_at - created_at FROM executions WHERE finished_at >= %s AND status IN ('succeeded', 'failed'){t}

-- name: stats_jobs
SELECT status, COUNT(*) FROM jobs WHERE (status IN ('waiting', 'queued', 'running') OR finished_at >= %s){t}
GROUP BY status

-- name: stats_queue_depth
SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND run_after <= %s{t}

-- name: stats_provider_jobs
SELECT COALESCE(provider, 'local'), status, finished_at - started_at FROM jobs WHERE finished_at >= %s
AND status IN ('succeeded', 'failed') AND cache_hit = 0{t}

-- A delivery given up on has its next_attempt_at set to the moment it was given up.
-- name: stats_webhooks
SELECT status, COUNT(*) FROM webhook_deliveries WHERE (status = 'pending'
OR (status = 'delivered' AND delivered_at >= %s) OR (status = 'failed' AND next_attempt_at >= %s)){t}
GROUP BY status

-- name: stats_spend_month
SELECT COALESCE(SUM(cost_actual), 0) FROM jobs WHERE finished_at >= %s{t}

-- name: stats_workers
SELECT COUNT(*) FROM workers WHERE last_seen > %s

-- ---------------------------------------------------------------- failover and circuits
-- A retry that fails over: the job runs on its next model, with fresh attempts.
-- name: failover_move
UPDATE jobs SET model = %s, provider = %s, failover = %s, attempts = 0 WHERE id = %s

-- A retry whose attempt did not count (it waited on an open circuit; nothing was sent).
-- name: uncount_attempt
UPDATE jobs SET attempts = attempts - 1 WHERE id = %s AND attempts > 0

-- name: circuits
SELECT * FROM circuits ORDER BY key

-- name: circuit
SELECT * FROM circuits WHERE key = %s

-- name: insert_circuit
INSERT INTO circuits (key, provider, model, updated_at) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING

-- name: update_circuit
UPDATE circuits SET state = %s, failures = %s, pending = %s, pending_at = %s, until_at = %s,
probe_owner = %s, ok_count = %s, fail_count = %s, window_at = %s, failing = %s, updated_at = %s
WHERE key = %s

-- ---------------------------------------------------------------- provider logs and times
-- name: job_of_execution
SELECT j.id, j.key, j.status, j.provider, j.provider_job_id, j.cache_hit, j.result, e.tenant FROM jobs j
JOIN executions e ON e.id = j.execution_id WHERE j.execution_id = %s AND j.key = %s

-- name: job_log
SELECT * FROM job_logs WHERE job_id = %s

-- name: job_logs_of
SELECT * FROM job_logs WHERE {cond}

-- name: save_job_log
INSERT INTO job_logs (job_id, attempt, earlier, earlier_dropped, current, current_dropped, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (job_id) DO UPDATE SET
attempt = excluded.attempt, earlier = excluded.earlier, earlier_dropped = excluded.earlier_dropped,
current = excluded.current, current_dropped = excluded.current_dropped, updated_at = excluded.updated_at
