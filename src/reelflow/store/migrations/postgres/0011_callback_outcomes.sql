-- reelflow schema v11 (PostgreSQL): a verified provider callback that tells how the work ended leaves that
-- outcome (compact JSON, bounded) with the wake-up mark, so the job's worker, in whatever process, finishes from
-- it without asking the provider. Cleared when the worker reads the mark.
ALTER TABLE jobs ADD COLUMN woken_outcome TEXT;
