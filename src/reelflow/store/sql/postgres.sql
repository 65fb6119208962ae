-- The statements PostgreSQL runs its own way (see shared.sql for the format): batches as arrays (`unnest`), row
-- locks (`FOR UPDATE`, `SKIP LOCKED`), advisory locks and NOTIFY.

-- name: schema_table
CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at DOUBLE PRECISION)

-- name: advisory_lock
SELECT pg_advisory_xact_lock(%s)

-- name: advisory_locks
SELECT pg_advisory_xact_lock(k) FROM unnest(%b::bigint[]) AS k

-- name: notify
SELECT pg_notify(%s, '')

-- name: read_snapshot
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY

-- ---------------------------------------------------------------- claims
-- Statements that touch a batch of jobs find them one at a time, by id or by execution and key (a LATERAL lookup
-- each), and update them by those rows' addresses (the lease, whose rows this transaction holds locked) or ids
-- (`= ANY(ARRAY(SELECT ...))`). Joined to the batch as a whole instead, the planner reads every queued or waiting
-- job when the statistics are missing or old (a new database, a burst): a claim's lease took 38 ms with 10,000
-- queued, the count-down 15 ms; matched by `id = ANY(list)`, the lease walked a whole index per id.
-- The lease returns the results of each job's dependencies too (`dep_results`, in `depends_on`'s order, NULL
-- for one not found): no statement of their own.
-- What a lease writes besides the status (one assignment a line; parameters: the owner, the lease's expiry, the
-- start, the intent's time) and what it returns: `lease_jobs` and `count_down_lease` both use these.
-- fragment: lease_set
attempts = j.attempts + 1,
lease_owner = %s,
lease_expires_at = %s,
started_at = COALESCE(j.started_at, %s),
progress = 0,
queue_position = NULL,
lease_seq = j.lease_seq + 1,
intent_at = COALESCE(j.intent_at, %s),
intent_seq = COALESCE(j.intent_seq, j.lease_seq + 1)

-- fragment: lease_returning
j.id, j.execution_id, j.key, j.type, j.provider, j.model, j.params, j.depends_on, j.attempts,
j.max_attempts, j.provider_job_id, j.timeout_s, j.start_timeout_s, j.started_at, j.tenant,
j.use_cache, j.cost_estimated, e.deadline, j.lease_seq, j.intent_at, j.intent_seq, j.failover,
CASE WHEN j.depends_on <> '[]' THEN ARRAY(SELECT (SELECT r.result FROM jobs r
  WHERE r.execution_id = j.execution_id AND r.key = d.k) FROM json_array_elements_text(j.depends_on::json)
  WITH ORDINALITY AS d(k, i) ORDER BY d.i) END AS dep_results

-- name: lease_jobs
UPDATE jobs j SET status = 'running', {use lease_set}
FROM executions e WHERE e.id = j.execution_id AND {guard running on j.status}
AND j.ctid = ANY(ARRAY(SELECT x.ctid FROM unnest(%b::bigint[]) AS w(id)
  CROSS JOIN LATERAL (SELECT ctid FROM jobs WHERE id = w.id) x))
RETURNING {use lease_returning}

-- Whether a capped provider (`queued_provider`) or model family (`queued_model`) has ready jobs: one branch each,
-- joined by UNION ALL, sent unprepared so that each is planned for its own value (a provider's probe is one look
-- into jobs_queued_provider; a model family's stops at its first ready job).
-- name: queued_provider
SELECT %s::text AS provider, NULL::text AS base WHERE EXISTS (SELECT FROM jobs
WHERE status = 'queued' AND provider = %s AND run_after <= %s)

-- name: queued_model
SELECT NULL::text AS provider, %s::text AS base WHERE EXISTS (SELECT FROM jobs
WHERE status = 'queued' AND split_part(model, ':', 1) = %s AND run_after <= %s)

-- name: running_providers
SELECT 'p' AS kind, provider AS name, COUNT(*) AS n FROM jobs
WHERE status = 'running' AND provider = ANY(%b::text[]) GROUP BY provider

-- name: running_models
SELECT 'm' AS kind, split_part(model, ':', 1) AS name, COUNT(*) AS n FROM jobs
WHERE status = 'running' AND split_part(model, ':', 1) = ANY(%b::text[]) GROUP BY 2

-- One statement locks every candidate: each tenant's next ready jobs, as many as it has room for (a capped
-- tenant's running jobs are counted here, under its lock), skipping rows another claimer holds.
-- name: candidates
SELECT c.id, c.tenant, c.provider, c.model
FROM unnest(%b::text[], %b::int[]) WITH ORDINALITY AS t(name, cap, n)
CROSS JOIN LATERAL (SELECT j.id, j.tenant, j.provider, j.model, j.priority FROM jobs j
  WHERE j.status = 'queued' AND j.tenant = t.name AND j.run_after <= %s{only}
  AND (j.provider IS NULL OR j.provider <> ALL(%b::text[]))
  AND (j.model IS NULL OR split_part(j.model, ':', 1) <> ALL(%b::text[]))
  ORDER BY j.priority DESC, j.id
  LIMIT CASE WHEN t.cap IS NULL THEN %s ELSE LEAST(%s, GREATEST(0, t.cap
    - (SELECT COUNT(*) FROM jobs r WHERE r.status = 'running' AND r.tenant = t.name))) END
  FOR UPDATE OF j SKIP LOCKED) c
ORDER BY t.n, c.priority DESC, c.id

-- name: candidates_only
AND j.execution_id = ANY(%b::text[])

-- name: try_tenant_locks
SELECT t.name FROM unnest(%b::text[], %b::bigint[]) AS t(name, k) WHERE pg_try_advisory_xact_lock(t.k)

-- name: running_tenants
SELECT tenant, COUNT(*) AS n FROM jobs WHERE status = 'running' AND tenant = ANY(%b::text[])
GROUP BY tenant

-- ---------------------------------------------------------------- outcomes, a batch per statement
-- `n` (the outcome's place in the batch, from 1) says which outcome wrote each row returned: a stale attempt's
-- outcome beside the current one in a batch writes nothing, and must not be taken for it.
-- name: jobs_succeeded
UPDATE jobs j SET status = 'succeeded', result = w.result, cost_actual = w.cost, progress = 100,
finished_at = w.fin, lease_owner = NULL, lease_expires_at = NULL, queue_position = NULL,
error = NULL, cache_key = w.ck, cache_hit = w.hit, intent_at = NULL, intent_seq = NULL,
provider_job_id = COALESCE(w.pid, j.provider_job_id),
provider_submitted_at = CASE WHEN w.pid IS NULL THEN j.provider_submitted_at ELSE %s END
FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::float8[], %b::text[], %b::int[], %b::text[],
  %b::bigint[], %b::float8[]) WITH ORDINALITY AS w(id, owner, result, cost, ck, hit, pid, seq, fin, n)
WHERE j.id = w.id AND {guard succeeded on j.status} AND j.lease_owner = w.owner
AND (w.seq IS NULL OR j.lease_seq = w.seq)
RETURNING j.id, j.execution_id, j.key, j.dependents, w.n

-- name: jobs_retry
UPDATE jobs j SET status = 'queued', run_after = w.run_after, error = w.error, lease_owner = NULL,
lease_expires_at = NULL, progress = 0, queue_position = NULL,
provider_job_id = CASE WHEN w.keep THEN j.provider_job_id END, queued_at = %s,
intent_at = CASE WHEN w.settled THEN NULL ELSE j.intent_at END,
intent_seq = CASE WHEN w.settled THEN NULL ELSE j.intent_seq END
FROM unnest(%b::bigint[], %b::text[], %b::float8[], %b::text[], %b::bool[], %b::bool[], %b::bigint[])
  WITH ORDINALITY AS w(id, owner, run_after, error, keep, settled, seq, n)
WHERE j.id = w.id AND {guard queued on j.status from running} AND j.lease_owner = w.owner
AND (w.seq IS NULL OR j.lease_seq = w.seq)
RETURNING j.id, j.execution_id, j.key, j.attempts, w.n

-- name: jobs_ended
UPDATE jobs j SET status = w.status, error = w.error, cost_actual = w.cost, finished_at = w.fin,
lease_owner = NULL, lease_expires_at = NULL, queue_position = NULL, intent_at = NULL,
intent_seq = NULL
FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::float8[], %b::bigint[], %b::float8[])
  WITH ORDINALITY AS w(id, owner, status, error, cost, seq, fin, n)
WHERE j.id = w.id AND {guard failed on j.status} AND j.lease_owner = w.owner
AND (w.seq IS NULL OR j.lease_seq = w.seq)
RETURNING j.id, j.execution_id, j.key, j.attempts, w.n

-- Each waiting dependent loses as many dependencies as succeeded in the batch; queued when none are left.
-- name: count_down
WITH w AS (SELECT * FROM unnest(%b::text[], %b::text[], %b::int[]) AS w(eid, key, n))
UPDATE jobs j SET deps_left = j.deps_left - w.n,
status = CASE WHEN j.deps_left - w.n <= 0 THEN 'queued' ELSE j.status END,
queued_at = CASE WHEN j.deps_left - w.n <= 0 THEN %s ELSE j.queued_at END
FROM w WHERE j.id = ANY(ARRAY(SELECT x.id FROM w CROSS JOIN LATERAL (SELECT id FROM jobs
  WHERE execution_id = w.eid AND key = w.key LIMIT 1) x))
AND j.execution_id = w.eid AND j.key = w.key AND {guard queued on j.status from waiting}
RETURNING j.id, j.execution_id, j.key, j.status, j.provider, j.model, j.tenant

-- A batch of successes only (nothing to skip after a failure) counts its dependents down in two steps, so that
-- the dependents its worker takes at once are written once, not queued then leased: `lock_dependents` locks the
-- waiting dependents and reads how many dependencies each has left; then `count_down_lease` (when the finish
-- leases some of them) or `count_down_rows` counts them down, by the addresses of the rows this transaction holds
-- locked. A dependent leased here goes from waiting to running in one row version (the transaction that released
-- it leased it: nobody could ever see it queued; its events still say job.queued, then job.running).
-- name: lock_dependents
SELECT x.ctid::text AS t, x.id, x.execution_id, x.key, x.deps_left, x.provider, x.model, x.tenant
FROM unnest(%b::text[], %b::text[]) AS w(eid, key)
CROSS JOIN LATERAL (SELECT ctid, id, execution_id, key, deps_left, provider, model, tenant FROM jobs
  WHERE execution_id = w.eid AND key = w.key AND {guard queued on status from waiting}) x
ORDER BY x.id FOR UPDATE OF x

-- name: count_down_rows
UPDATE jobs j SET deps_left = j.deps_left - w.n,
status = CASE WHEN j.deps_left - w.n <= 0 THEN 'queued' ELSE j.status END,
queued_at = CASE WHEN j.deps_left - w.n <= 0 THEN %s ELSE j.queued_at END
FROM unnest(%b::tid[], %b::int[]) AS w(t, n) WHERE j.ctid = w.t AND {guard queued on j.status from waiting}

-- `w.go`: this dependent is ready and leased here (to the owner, until the expiry, started now); the others are
-- counted down, and queued when ready. Writes and returns the leased rows as `lease_jobs` does (its fragments).
-- name: count_down_lease
WITH c AS (UPDATE jobs j SET deps_left = j.deps_left - w.n,
status = CASE WHEN j.deps_left - w.n > 0 THEN j.status WHEN w.go THEN 'running' ELSE 'queued' END,
queued_at = CASE WHEN j.deps_left - w.n <= 0 THEN %s ELSE j.queued_at END,
{use lease_set if w.go}
FROM unnest(%b::tid[], %b::int[], %b::bool[]) AS w(t, n, go)
WHERE j.ctid = w.t AND {guard queued on j.status from waiting}
RETURNING j.*, w.go)
SELECT {use lease_returning}
FROM c AS j JOIN executions e ON e.id = j.execution_id WHERE j.go AND j.status = 'running'

-- name: insert_artifacts
INSERT INTO artifacts (tenant, key, execution_id, created_at)
SELECT e.tenant, w.key, e.id, %s FROM unnest(%b::text[], %b::text[]) AS w(eid, key)
JOIN executions e ON e.id = w.eid ON CONFLICT DO NOTHING

-- name: set_provider_ids
UPDATE jobs j SET provider_job_id = w.pid, provider_submitted_at = %s, provider_phase = NULL,
provider_started_at = NULL, provider_queued_s = NULL
FROM unnest(%b::bigint[], %b::text[], %b::text[])
AS w(id, owner, pid) WHERE j.id = w.id AND j.lease_owner = w.owner AND j.status = 'running'
RETURNING j.id, j.execution_id, j.key, j.provider_job_id

-- name: set_progress
UPDATE jobs j SET progress = w.progress, queue_position = w.qp,
provider_phase = COALESCE(w.phase, j.provider_phase),
provider_submitted_at = COALESCE(w.submitted, j.provider_submitted_at),
provider_started_at = COALESCE(j.provider_started_at, w.started),
provider_queued_s = COALESCE(j.provider_queued_s, w.queued)
FROM unnest(%b::bigint[], %b::text[], %b::float8[], %b::int[], %b::text[], %b::float8[],
  %b::float8[], %b::float8[]) AS w(id, owner, progress, qp, phase, submitted, started, queued)
WHERE j.id = w.id AND j.lease_owner = w.owner AND j.status = 'running'
RETURNING j.id, j.execution_id, j.key

-- What providers told about running attempts (their phase, when they started), a batch at once.
-- name: set_notes
UPDATE jobs j SET provider_phase = COALESCE(w.phase, j.provider_phase),
provider_submitted_at = COALESCE(w.submitted, j.provider_submitted_at),
provider_started_at = COALESCE(j.provider_started_at, w.started),
provider_queued_s = COALESCE(j.provider_queued_s, w.queued)
FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::float8[], %b::float8[], %b::float8[])
AS w(id, owner, phase, submitted, started, queued)
WHERE j.id = w.id AND j.lease_owner = w.owner AND j.status = 'running' RETURNING j.id

-- ---------------------------------------------------------------- settling and the event log
-- Executions are locked before their jobs are counted: two workers finishing the last two jobs of one execution
-- at once would each count the other's job as still running, and neither would end it.
-- name: lock_settling
SELECT id, status, progress, started_at, cancel_requested, tenant, webhook, webhook_events FROM executions
WHERE id = ANY(%b::text[]) ORDER BY id FOR UPDATE

-- name: settle_counts
SELECT execution_id, status, COUNT(*) AS n,
array_agg(progress ORDER BY id) FILTER (WHERE status = 'running') AS progress
FROM jobs WHERE execution_id = ANY(%b::text[]) GROUP BY execution_id, status

-- Appends to one execution's log happen one transaction at a time (a reader paging by seq never sees a later
-- event commit before an earlier one); the same statement reads who subscribed to webhooks.
-- name: lock_subscribed
SELECT id, tenant, webhook, webhook_events FROM executions WHERE id = ANY(%b::text[])
ORDER BY id FOR UPDATE

-- name: insert_events
INSERT INTO events (execution_id, job_key, type, data, created_at)
SELECT e.execution_id, e.job_key, e.type, e.data, e.created_at
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::float8[]) WITH ORDINALITY
  AS e(execution_id, job_key, type, data, created_at, n) ORDER BY n

-- ---------------------------------------------------------------- cache and deliveries
-- name: cache_hits
SELECT w.tenant, w.cache_key, c.result, c.execution_id, c.key
FROM unnest(%b::text[], %b::text[]) AS w(tenant, cache_key)
CROSS JOIN LATERAL (SELECT j.result, j.execution_id, j.key FROM jobs j
  WHERE j.tenant = w.tenant AND j.cache_key = w.cache_key AND j.status = 'succeeded'
  ORDER BY j.finished_at DESC LIMIT 1) c

-- name: lease_deliveries
WITH d AS (UPDATE webhook_deliveries SET lease_owner = %s, lease_expires_at = %s
WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= %s
  AND (lease_expires_at IS NULL OR lease_expires_at < %s){only}
  ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id, execution_id, tenant, url, event_type, payload, attempts, created_at, next_attempt_at,
retry_from)
SELECT d.*, t.webhook_secret FROM d LEFT JOIN tenants t ON t.name = d.tenant
ORDER BY d.next_attempt_at, d.id
