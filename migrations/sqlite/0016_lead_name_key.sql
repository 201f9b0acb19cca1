-- As migrations/postgres/0010_lead_name_key.sql: the console's name
-- search ignores case. `name_key` is the name in lower case (Rust's
-- Unicode lower case for new leads; SQLite's lower() for the leads of
-- before, which folds ASCII letters only), searched by prefix as bytes.
ALTER TABLE leads ADD COLUMN name_key TEXT NOT NULL DEFAULT '';
UPDATE leads SET name_key = lower(name);
DROP INDEX leads_name;
CREATE INDEX leads_name_key ON leads (name_key) WHERE name_key <> '';
