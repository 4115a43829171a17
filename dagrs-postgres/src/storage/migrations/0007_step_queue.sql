-- dagrs-postgres storage, schema version 7: the step queue of scale-out workers.
--
-- A run on the queue is a `runs` row (owner 'queue') with a counter of the next event seq
-- and of its steps still to end, and one `steps` row per step. Workers claim ready steps
-- with FOR UPDATE SKIP LOCKED; a claim has a fencing token (from `step_tokens`) and a lease
-- deadline, and every write of the step checks both. A step's output waits in
-- `step_outputs` (chunked) for the steps downstream. `workers` lists the workers, `pools`
-- the slots of concurrency pools: a slot is a claimed step of the pool whose lease holds.

ALTER TABLE runs
    ADD COLUMN next_seq   bigint,
    ADD COLUMN steps_left integer;

CREATE SEQUENCE step_tokens;

CREATE TABLE steps (
    -- Claim order: the order steps were queued in.
    id           bigint      GENERATED ALWAYS AS IDENTITY,
    run_id       text        NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    asset        text        NOT NULL,
    status       text        NOT NULL
        CONSTRAINT steps_status_known CHECK (status IN
            ('waiting', 'ready', 'claimed', 'succeeded', 'failed', 'skipped', 'cancelled')),
    -- Upstream steps of the run not yet succeeded.
    waiting      integer     NOT NULL CONSTRAINT steps_waiting_not_negative CHECK (waiting >= 0),
    downstream   text[]      NOT NULL,
    pool         text,
    attempts     integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL CONSTRAINT steps_max_attempts_positive CHECK (max_attempts > 0),
    not_before   timestamptz NOT NULL DEFAULT now(),
    worker       text,
    token        bigint,
    lease_until  timestamptz,
    PRIMARY KEY (run_id, asset)
);
CREATE INDEX steps_ready ON steps (id) WHERE status = 'ready';
CREATE INDEX steps_ready_pooled ON steps (pool) WHERE status = 'ready' AND pool IS NOT NULL;
CREATE INDEX steps_claimed ON steps (lease_until) WHERE status = 'claimed';
CREATE INDEX steps_claimed_token ON steps (token) WHERE status = 'claimed';

CREATE TABLE step_outputs (
    run_id text    NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    asset  text    NOT NULL,
    chunk  integer NOT NULL,
    data   bytea   NOT NULL,
    PRIMARY KEY (run_id, asset, chunk)
);

CREATE TABLE workers (
    id           text        PRIMARY KEY,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);

CREATE TABLE pools (
    name       text        PRIMARY KEY,
    slots      integer     NOT NULL CONSTRAINT pools_slots_not_negative CHECK (slots >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
