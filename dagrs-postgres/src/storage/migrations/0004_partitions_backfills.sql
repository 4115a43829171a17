-- dagrs-postgres storage, schema version 4: partitions and backfills.
--
-- A materialization records the partitions it covers (all four columns NULL for an
-- unpartitioned asset), found by `partition_materialization` through an index.
-- An asset's partition status is kept as one row per range, never per partition: the ranges
-- of one (asset, status, dims) are disjoint and never adjacent (a write merges them), so a
-- million contiguous partitions are one row. Dynamic partitions definitions keep their keys
-- in the order they were added. A backfill is one JSON record, updated by compare-and-set on
-- `version`.
--
-- The new CHECK on materializations is NOT VALID: rows written before it have no partition
-- columns, so there is nothing to check, and the table is not scanned.

ALTER TABLE materializations
    ADD COLUMN partition_key   text,
    ADD COLUMN partition_dims  text,
    ADD COLUMN partition_start bigint,
    ADD COLUMN partition_end   bigint,
    ADD CONSTRAINT materializations_partition_whole CHECK (
        (partition_key IS NULL AND partition_dims IS NULL
            AND partition_start IS NULL AND partition_end IS NULL)
        OR (partition_key IS NOT NULL AND partition_dims IS NOT NULL
            AND partition_start IS NOT NULL AND partition_end IS NOT NULL)
    ) NOT VALID;
CREATE INDEX materializations_partition
    ON materializations (asset, partition_dims, partition_start, partition_end)
    WHERE partition_dims IS NOT NULL;

CREATE TABLE partition_ranges (
    asset    text   NOT NULL,
    -- PartitionOutcome as serde writes it.
    status   text   NOT NULL
        CONSTRAINT partition_ranges_status_known CHECK (status IN ('materialized', 'failed')),
    -- The discrete keys joined by '|', '' when there are none.
    dims     text   NOT NULL,
    -- Seconds since the Unix epoch ([0, 1) for partitions without time).
    start_at bigint NOT NULL,
    end_at   bigint NOT NULL CONSTRAINT partition_ranges_not_empty CHECK (end_at > start_at),
    PRIMARY KEY (asset, status, dims, start_at)
);

CREATE TABLE dynamic_partitions (
    name     text        NOT NULL,
    key      text        NOT NULL,
    -- The order of adding, across every definition.
    position bigint      GENERATED ALWAYS AS IDENTITY,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, key)
);
CREATE INDEX dynamic_partitions_in_order ON dynamic_partitions (name, position);

CREATE TABLE backfills (
    id         text        PRIMARY KEY,
    -- BackfillStatus as serde writes it; also in `body`, here to filter by.
    status     text        NOT NULL
        CONSTRAINT backfills_status_known
        CHECK (status IN ('requested', 'canceling', 'completed', 'failed', 'cancelled')),
    created_at timestamptz NOT NULL,
    version    bigint      NOT NULL CONSTRAINT backfills_version_not_negative CHECK (version >= 0),
    -- The whole BackfillRecord as serde writes it (its version is the column's).
    body       jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX backfills_newest ON backfills (created_at DESC, id DESC);
