-- The standard duplicate check (L-3) also looks deals up by title when a
-- lead has neither phone nor e-mail.
CREATE INDEX deals_title ON deals (title, created_at);
