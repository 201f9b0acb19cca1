-- Call records (SPEC L-1), leads with their outcome (L-7), and the
-- embedded CRM (C-1 local): deals, comments, tasks. Times are Unix seconds
-- except the call timestamps (Unix milliseconds).
CREATE TABLE calls (
    id         INTEGER PRIMARY KEY,
    call_id    TEXT NOT NULL UNIQUE,
    caller_raw TEXT NOT NULL,
    caller     TEXT NOT NULL,
    callee     TEXT NOT NULL,
    destination TEXT NOT NULL,
    visit_id   TEXT,
    marker     TEXT,
    source     TEXT,
    visit      TEXT NOT NULL DEFAULT '{}',
    invite_at  INTEGER NOT NULL,
    answer_at  INTEGER,
    end_at     INTEGER NOT NULL,
    duration   INTEGER NOT NULL,
    status     TEXT NOT NULL,
    hangup     TEXT,
    lead_id    INTEGER
);
CREATE INDEX calls_invite_at ON calls (invite_at);

CREATE TABLE deals (
    id         INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    title      TEXT NOT NULL,
    name       TEXT NOT NULL,
    phone      TEXT NOT NULL,
    email      TEXT NOT NULL,
    visit_id   TEXT NOT NULL,
    status     TEXT NOT NULL,
    grp        TEXT NOT NULL,
    lead_id    INTEGER NOT NULL
);
CREATE INDEX deals_phone ON deals (phone, created_at);
CREATE INDEX deals_email ON deals (email, created_at);

CREATE TABLE leads (
    id         INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    title      TEXT NOT NULL,
    name       TEXT NOT NULL,
    phone      TEXT NOT NULL,
    email      TEXT NOT NULL,
    visit_id   TEXT NOT NULL,
    form       TEXT NOT NULL,
    dialed     TEXT NOT NULL,
    text       TEXT NOT NULL,
    fields     TEXT NOT NULL DEFAULT '{}',
    call_id    TEXT,
    -- 1 when the lead created a deal: the 12-hour check (L-3) looks at these.
    accepted   INTEGER NOT NULL,
    deal_id    INTEGER,
    outcome    TEXT NOT NULL
);
CREATE INDEX leads_phone ON leads (phone, created_at);
CREATE INDEX leads_email ON leads (email, created_at);
CREATE INDEX leads_created ON leads (created_at);

CREATE TABLE comments (
    id         INTEGER PRIMARY KEY,
    deal_id    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    text       TEXT NOT NULL
);
CREATE INDEX comments_deal ON comments (deal_id);

CREATE TABLE tasks (
    id         INTEGER PRIMARY KEY,
    deal_id    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    text       TEXT NOT NULL
);
CREATE INDEX tasks_deal ON tasks (deal_id);
