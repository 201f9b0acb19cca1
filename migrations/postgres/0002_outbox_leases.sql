-- Outbox claims (several nodes, one database): a node takes due items
-- for `lease_until` (Unix ms); another node takes them over only once the
-- lease has run out (the node died). Only the holder settles them.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN lease_until BIGINT;
