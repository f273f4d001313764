-- The replicas sharing the database, each present until its last renewal's
-- lease runs out: they split every model's concurrency limit between them.

CREATE TABLE replicas (
    owner      text   PRIMARY KEY,
    seen_until bigint NOT NULL
);
