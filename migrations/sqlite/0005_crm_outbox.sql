-- The CRM outbox (SPEC C-5): every request to the CRM is written here in
-- the transaction of the decision that causes it, then delivered by the
-- worker. Items with one order_key go out in id order (a deal's tasks
-- never before the deal). Times are Unix milliseconds.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    created_at      INTEGER NOT NULL,
    -- lead | call_start | call_end: which URL it goes to.
    target          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    order_key       TEXT NOT NULL,
    -- deal.create, deal.task, deal.comment; empty for call webhooks.
    event           TEXT NOT NULL DEFAULT '',
    lead_id         INTEGER,
    -- siptrack's deal that the item creates or acts on.
    deal_ref        INTEGER,
    body            TEXT NOT NULL,
    -- pending | done | failed (parked after crm.retry.max_age_hours).
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_at         INTEGER NOT NULL,
    last_error      TEXT NOT NULL DEFAULT '',
    done_at         INTEGER
);
CREATE INDEX outbox_due ON outbox (state, next_at);
CREATE INDEX outbox_order ON outbox (order_key, id);
CREATE INDEX outbox_lead ON outbox (lead_id);

-- The CRM's id of a deal, from its answer to deal.create.
ALTER TABLE deals ADD COLUMN crm_id TEXT;
CREATE INDEX deals_crm_id ON deals (crm_id);

-- Idempotency keys start with this installation's id, so a fresh database
-- never reuses keys a CRM has already seen.
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('install_id', lower(hex(randomblob(6))));
