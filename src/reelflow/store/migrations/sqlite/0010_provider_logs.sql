-- Each job's provider log and its time in the provider's queue. The log lives in a table of its own, one row
-- per job, so the jobs rows the queue scans stay small: `earlier` holds what earlier attempts logged (bounded),
-- `current` the latest attempt's log (its end, bounded); the *_dropped columns count characters left out.
-- Written with the writes that already happen (a progress report, the job's outcome), only when it changed.
CREATE TABLE job_logs (
    job_id          INTEGER PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,
    earlier         TEXT NOT NULL DEFAULT '',
    earlier_dropped INTEGER NOT NULL DEFAULT 0,
    current         TEXT NOT NULL DEFAULT '',
    current_dropped INTEGER NOT NULL DEFAULT 0,
    updated_at      REAL NOT NULL
);
-- When the worker handed the work to its provider, what the provider says it is doing (queued | running),
-- when it started the work, and how long the work waited in the provider's queue.
ALTER TABLE jobs ADD COLUMN provider_submitted_at REAL;
ALTER TABLE jobs ADD COLUMN provider_phase TEXT;
ALTER TABLE jobs ADD COLUMN provider_started_at REAL;
ALTER TABLE jobs ADD COLUMN provider_queued_s REAL;
