-- Tasks, sessions and call outcomes. Records are MessagePack blobs; the
-- facts the queries filter and order by are columns beside them. Times are
-- epoch milliseconds. Blobs come last in each row, so reading the columns
-- before them never reads a blob's overflow pages.

CREATE TABLE tasks (
    tenant           TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'final')),
    status           TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    deadline         INTEGER,
    seq              INTEGER NOT NULL,
    owner            TEXT,
    lease_until      INTEGER,
    runs             INTEGER NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    finished_at      INTEGER,
    -- The task as accepted and its deadline; NULL once final.
    task             BLOB,
    -- The last snapshot, or the final result.
    snapshot         BLOB    NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- Claims: unfinished tasks in the order they are taken.
CREATE INDEX tasks_unfinished ON tasks (priority DESC, deadline, seq) WHERE state <> 'final';
-- Renewals and releases: a replica's unfinished tasks.
CREATE INDEX tasks_owner ON tasks (owner) WHERE state <> 'final';
-- Pruning: final tasks by when they ended.
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE state = 'final';
-- The next arrival number.
CREATE INDEX tasks_seq ON tasks (seq);

CREATE TABLE sessions (
    tenant  TEXT NOT NULL,
    id      TEXT NOT NULL,
    context BLOB NOT NULL,
    PRIMARY KEY (tenant, id)
);

CREATE TABLE session_entries (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant  TEXT NOT NULL,
    session TEXT NOT NULL,
    kind    TEXT NOT NULL,
    entry   BLOB NOT NULL
);

CREATE INDEX session_entries_by_session ON session_entries (tenant, session, seq);

CREATE TABLE outcomes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    replica TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    outcome BLOB    NOT NULL
);

CREATE INDEX outcomes_at ON outcomes (at);
