-- As migrations/sqlite/0019_calls_recording_base.sql: the link base of the
-- node that recorded a call (it holds the WAV), for links built on any node.
ALTER TABLE calls ADD COLUMN recording_base TEXT NOT NULL DEFAULT '';
