-- dagrs-postgres storage, schema version 6: asset checks and automation.
--
-- Every check evaluation event gets a row in `check_records`, written in the statement that
-- appends the event; it goes when its run is pruned. `id` is the order of appending: an
-- asset's newest evaluation is the one recorded last. `automation_records` holds the
-- daemon's evaluations of automation conditions, newest first by `evaluated_at` (ties:
-- newest written first, by `id`), pruned by age like ticks.
--
-- The daemon follows new materializations by position, `(tx, id)`: `tx` is the id of the
-- transaction that wrote the row (the default, so every insert gets it). Ids from the
-- identity sequence can commit out of order; transaction ids cannot be older than the oldest
-- transaction still running (`pg_snapshot_xmin`), so a reader takes only rows whose `tx` is
-- below it, in `(tx, id)` order: once read, nothing can appear before them (a transactional
-- outbox). Rows present before this migration get the migrating transaction's id.

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

ALTER TABLE materializations ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX materializations_in_order ON materializations (tx, id);
