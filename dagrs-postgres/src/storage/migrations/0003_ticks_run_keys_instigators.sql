-- dagrs-postgres storage, schema version 3: ticks record what they did (status, runs,
-- reason), sensors' run keys are claimed once, schedules and sensors keep their on/off
-- state, and queued runs are found by an index.

ALTER TABLE ticks
    ADD COLUMN kind    text  NOT NULL DEFAULT 'schedule'
        CONSTRAINT ticks_kind_known CHECK (kind IN ('schedule', 'sensor')),
    ADD COLUMN status  text  NOT NULL DEFAULT 'fired'
        CONSTRAINT ticks_status_known CHECK (status IN ('started', 'fired', 'skipped', 'failed')),
    ADD COLUMN run_ids jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN reason  text;
CREATE INDEX ticks_newest ON ticks (tick DESC);

CREATE TABLE run_keys (
    instigator text        NOT NULL,
    run_key    text        NOT NULL,
    run_id     text        NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instigator, run_key)
);

CREATE TABLE instigators (
    name       text        PRIMARY KEY,
    status     text        NOT NULL
        CONSTRAINT instigators_status_known CHECK (status IN ('running', 'stopped')),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX runs_queued ON runs (started_at, created) WHERE status = 'queued';
