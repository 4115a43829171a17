-- dagrs-postgres storage, schema version 1: runs, their event logs, asset
-- materializations, schedule/sensor ticks and sensor cursors.
--
-- Applied by PgStorage::migrate inside one transaction, with search_path set
-- to the store's schema only, so every name below lands in that schema.
--
-- Run columns given up front (assets, config, tags) are jsonb, so they can be
-- filtered and indexed. Payloads written while a run goes on (event kinds,
-- materialization metadata and values) are json: it keeps serde_json's text
-- exactly and accepts "\u0000" in strings, which jsonb rejects; a log line
-- holding a NUL must not stop a run's log from being recorded.

CREATE TABLE runs (
    run_id        text        PRIMARY KEY,
    -- RunStatus as serde writes it (snake_case).
    status        text        NOT NULL
        CONSTRAINT runs_status_known
        CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    selection     text        NOT NULL,
    assets        jsonb       NOT NULL,
    config        jsonb       NOT NULL,
    tags          jsonb       NOT NULL,
    started_at    timestamptz NOT NULL,
    ended_at      timestamptz,
    owner         text        NOT NULL,
    heartbeat_at  timestamptz NOT NULL,
    parent_run_id text,
    failure       text,
    -- Creation order: breaks ties between runs started at the same instant.
    created       bigint      GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX runs_newest ON runs (started_at DESC, created DESC);
CREATE INDEX runs_running ON runs (created) WHERE status = 'running';

CREATE TABLE events (
    run_id text        NOT NULL,
    seq    bigint      NOT NULL CONSTRAINT events_seq_not_negative CHECK (seq >= 0),
    ts     timestamptz NOT NULL,
    asset  text,
    -- EventKind as serde writes it: {"type": "materialization", ...}.
    kind   json        NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE materializations (
    -- Recording order: an asset's latest materialization is the one recorded
    -- last (as in every dagrs store), whatever its event's timestamp says.
    id           bigint      GENERATED ALWAYS AS IDENTITY,
    asset        text        NOT NULL,
    run_id       text        NOT NULL,
    seq          bigint      NOT NULL,
    ts           timestamptz NOT NULL,
    metadata     json        NOT NULL,
    value        json        NOT NULL,
    code_version text,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX materializations_latest ON materializations (asset, id DESC);

CREATE TABLE ticks (
    name       text        NOT NULL,
    tick       timestamptz NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, tick)
);

CREATE TABLE cursors (
    name       text        PRIMARY KEY,
    value      text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
