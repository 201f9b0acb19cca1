-- What became of each call's recording (SPEC M-1, issue 13) and the key
-- presses seen in its media. Calls recorded before this migration had no
-- media handling: "not recorded, recording disabled".
ALTER TABLE calls ADD COLUMN recording TEXT NOT NULL DEFAULT 'not_recorded';
-- Why there is no recording (empty when there is one).
ALTER TABLE calls ADD COLUMN recording_reason TEXT NOT NULL DEFAULT 'recording disabled';
-- JSON list of {"side","digit","at_ms","duration_ms"}.
ALTER TABLE calls ADD COLUMN dtmf TEXT NOT NULL DEFAULT '[]';

-- The key that signs recording links (/recordings/...?exp=&sig=): random
-- per database, used for nothing else, so links survive restarts and are
-- the same on every node of one database.
INSERT INTO meta (key, value) VALUES ('recording_link_key', lower(hex(randomblob(32))));
