-- A local CRM comment or task made by a recorded call names that call, so
-- the deals API can show a fresh link to its recording (SPEC C-1 local,
-- M-2), as migrations/sqlite/0008_note_recordings.sql. NULL: a note about
-- no recording.
ALTER TABLE comments ADD COLUMN call_id TEXT;
ALTER TABLE tasks ADD COLUMN call_id TEXT;
