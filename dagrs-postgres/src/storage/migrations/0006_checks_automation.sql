-- dagrs-postgres storage, schema version 6: asset checks and automation.
--
-- Every check evaluation event gets a row in `check_records`, written in the statement that
-- appends the event; it goes when its run is pruned. `id` is the order of appending: an
-- asset's newest evaluation is the one recorded last. `automation_records` holds the
-- daemon's evaluations of automation conditions, newest first by `evaluated_at` (ties:
-- newest written first, by `id`), pruned by age like ticks. Materializations are also read
-- in timestamp order (`materializations_since`), by the daemon following what changed.

CREATE TABLE check_records (
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    asset       text        NOT NULL,
    check_name  text        NOT NULL,
    run_id      text        NOT NULL,
    seq         bigint      NOT NULL,
    ts          timestamptz NOT NULL,
    passed      boolean     NOT NULL,
    severity    text        NOT NULL
        CONSTRAINT check_records_severity_known CHECK (severity IN ('warn', 'error')),
    blocking    boolean     NOT NULL,
    description text,
    metadata    json        NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX check_records_newest ON check_records (asset, id DESC);

CREATE TABLE automation_records (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    asset        text        NOT NULL,
    evaluated_at timestamptz NOT NULL,
    requested    boolean     NOT NULL,
    reason       text        NOT NULL,
    run_ids      jsonb       NOT NULL
);
CREATE INDEX automation_records_by_asset
    ON automation_records (asset, evaluated_at DESC, id DESC);
CREATE INDEX automation_records_newest ON automation_records (evaluated_at DESC, id DESC);

CREATE INDEX materializations_since ON materializations (ts, id);
