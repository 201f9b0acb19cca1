-- Numbered 0010 to follow main's 0007-0009 (recordings, console
-- indexes) when the branches meet; it is applied in list order.
-- Outbox claims: a process takes due items for `lease_until` (Unix ms);
-- another one takes them over only once the lease has run out (the
-- process died). Only the holder settles them. The same columns as
-- PostgreSQL's (migrations/postgres/0002), where several nodes share one
-- database.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN lease_until INTEGER;
