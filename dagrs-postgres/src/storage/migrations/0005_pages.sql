-- dagrs-postgres storage, schema version 4: pages of runs (newest first, by status, by job,
-- by tag) and of event logs (by step, and without log lines) read from indexes, for the
-- web UI.

CREATE INDEX runs_page ON runs (started_at DESC, run_id DESC);
CREATE INDEX runs_page_by_status ON runs (status, started_at DESC, run_id DESC);
CREATE INDEX runs_page_by_job ON runs ((tags ->> 'dagrs/job'), started_at DESC, run_id DESC);
CREATE INDEX runs_by_tags ON runs USING gin (tags jsonb_path_ops);

CREATE INDEX events_by_asset ON events (run_id, asset, seq);
-- On the kind's text, not its parsed JSON: `kind` is json so that log lines may hold
-- "\u0000", which `->>` refuses to turn into text (and an index on it would refuse the row).
-- serde_json writes an event kind's tag first: {"type":"log","level":...}.
CREATE INDEX events_without_logs ON events (run_id, seq)
    WHERE NOT starts_with(kind::text, '{"type":"log",');
