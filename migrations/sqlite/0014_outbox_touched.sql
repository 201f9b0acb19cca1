-- As migrations/postgres/0008_outbox_touched.sql: when an outbox item
-- was last claimed or rescheduled (Unix ms), to tell a next_at far ahead
-- that a backward clock step left from a real one.
ALTER TABLE outbox ADD COLUMN touched_at INTEGER;
