-- As migrations/postgres/0007_kept_dialogs.sql: when an interrupted
-- call was recorded (Unix ms) while its answered dialog is kept for a BYE
-- still to come. NULL: the call is open.
ALTER TABLE open_calls ADD COLUMN recorded_at INTEGER;
