-- When each session was last put or added to (epoch ms): sessions unused
-- for longer than session_ttl are pruned.
ALTER TABLE sessions ADD COLUMN used_at INTEGER NOT NULL DEFAULT 0;
