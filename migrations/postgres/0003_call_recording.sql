-- What became of each call's recording (SPEC M-1, issue 13) and the key
-- presses seen in its media, as migrations/sqlite/0007_call_recording.sql.
ALTER TABLE calls ADD COLUMN recording TEXT NOT NULL DEFAULT 'not_recorded';
-- Why there is no recording (empty when there is one).
ALTER TABLE calls ADD COLUMN recording_reason TEXT NOT NULL DEFAULT 'recording disabled';
-- JSON list of {"side","digit","at_ms","duration_ms"}.
ALTER TABLE calls ADD COLUMN dtmf TEXT NOT NULL DEFAULT '[]';

-- The key that signs recording links: random per database, so links are
-- the same on every node of one database. 64 hex digits as SQLite's, from
-- gen_random_uuid() (the server's strong random source; random() is not
-- one): two version-4 UUIDs without their dashes, 244 random bits.
INSERT INTO meta (key, value)
VALUES ('recording_link_key',
        replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', ''));
