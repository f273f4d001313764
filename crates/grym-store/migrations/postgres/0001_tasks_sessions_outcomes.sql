-- Tasks, sessions and call outcomes, shared by every replica. Records are
-- MessagePack blobs; the facts the queries filter and order by are columns
-- beside them. Times are epoch milliseconds, and leases are measured on the
-- database's clock (grym_now_ms), never a replica's.

CREATE FUNCTION grym_now_ms() RETURNS bigint
    LANGUAGE sql STABLE
    AS $$ SELECT (extract(epoch FROM now()) * 1000)::bigint $$;

CREATE SEQUENCE tasks_seq;

CREATE TABLE tasks (
    tenant           text     NOT NULL,
    id               text     NOT NULL,
    state            text     NOT NULL CHECK (state IN ('queued', 'running', 'final')),
    status           text     NOT NULL,
    priority         smallint NOT NULL,
    deadline         bigint,
    seq              bigint   NOT NULL DEFAULT nextval('tasks_seq'),
    owner            text,
    lease_until      bigint,
    runs             bigint   NOT NULL,
    cancel_requested boolean  NOT NULL DEFAULT false,
    finished_at      bigint,
    -- The task as accepted and its deadline; NULL once final.
    task             bytea,
    -- The last snapshot, or the final result.
    snapshot         bytea    NOT NULL,
    PRIMARY KEY (tenant, id)
);

ALTER SEQUENCE tasks_seq OWNED BY tasks.seq;

-- Claims: unfinished tasks in the order they are taken.
CREATE INDEX tasks_unfinished ON tasks (priority DESC, deadline ASC NULLS LAST, seq)
    WHERE state <> 'final';
-- Renewals and releases: a replica's unfinished tasks.
CREATE INDEX tasks_owner ON tasks (owner) WHERE state <> 'final';
-- Pruning: final tasks by when they ended.
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE state = 'final';

CREATE TABLE sessions (
    tenant  text  NOT NULL,
    id      text  NOT NULL,
    context bytea NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- One sequence for every session's entries: replicas appending to the same
-- session at once never collide.
CREATE TABLE session_entries (
    seq     bigserial PRIMARY KEY,
    tenant  text  NOT NULL,
    session text  NOT NULL,
    kind    text  NOT NULL,
    entry   bytea NOT NULL
);

CREATE INDEX session_entries_by_session ON session_entries (tenant, session, seq);

CREATE TABLE outcomes (
    seq     bigserial PRIMARY KEY,
    replica text   NOT NULL,
    at      bigint NOT NULL,
    outcome bytea  NOT NULL
);

CREATE INDEX outcomes_at ON outcomes (at);
