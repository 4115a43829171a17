-- dagrs-postgres storage, schema version 2: a run may be queued (waiting for a slot) or
-- canceling (asked to stop by another process), and every event belongs to a known run.
--
-- The foreign key is NOT VALID: it holds for every event written from now on without
-- scanning (or rejecting) what older versions stored.

ALTER TABLE runs DROP CONSTRAINT runs_status_known;
ALTER TABLE runs ADD CONSTRAINT runs_status_known
    CHECK (status IN ('queued', 'running', 'canceling', 'succeeded', 'failed', 'cancelled'));

DROP INDEX runs_running;
CREATE INDEX runs_active ON runs (created) WHERE status IN ('running', 'canceling');

ALTER TABLE events ADD CONSTRAINT events_run_known
    FOREIGN KEY (run_id) REFERENCES runs (run_id) ON DELETE CASCADE NOT VALID;
