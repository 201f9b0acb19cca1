-- Calls whose INVITE was seen and whose record is not written yet (SPEC
-- L-1 `interrupted`). A call's row goes in with its start and out in the
-- transaction that records its end, so after a crash (kill -9) the rows
-- of earlier runs are exactly the calls the crash cut short; the next
-- start records them as interrupted and sends their call-end webhooks.
CREATE TABLE open_calls (
    call_id   TEXT PRIMARY KEY,
    -- The run (process start) that saw the INVITE.
    run_id    TEXT NOT NULL,
    -- Unix milliseconds.
    invite_at INTEGER NOT NULL,
    -- The call's CallInfo as JSON.
    info      TEXT NOT NULL
);
