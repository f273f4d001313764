-- When each session was last put or added to (epoch ms, the database's
-- clock): sessions unused for longer than session_ttl are pruned.
ALTER TABLE sessions ADD COLUMN used_at bigint NOT NULL DEFAULT 0;
