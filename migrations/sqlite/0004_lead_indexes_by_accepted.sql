-- The 12-hour check (L-3) only looks at accepted leads. Indexes that put
-- `accepted` before the time keep it one probe even when one number has
-- called thousands of times (the duplicates are never read).
DROP INDEX leads_phone;
DROP INDEX leads_email;
CREATE INDEX leads_phone ON leads (phone, accepted, created_at);
CREATE INDEX leads_email ON leads (email, accepted, created_at);
