-- Dynamic pool numbers and the visits holding them (SPEC T-1).
CREATE TABLE IF NOT EXISTS pool_assignments (
    number     TEXT PRIMARY KEY,
    pool       TEXT NOT NULL,
    visit_id   TEXT,
    visit      TEXT,
    touched_at INTEGER NOT NULL,
    version    INTEGER NOT NULL
);
