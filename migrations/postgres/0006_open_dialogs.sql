-- Answered calls' dialogs (issue 14 step 3), as
-- migrations/sqlite/0011_open_dialogs.sql: another node relays the BYE of
-- a call whose node died, and closes its record, from this row.
ALTER TABLE open_calls ADD COLUMN answer_at BIGINT;
ALTER TABLE open_calls ADD COLUMN dialog TEXT;
