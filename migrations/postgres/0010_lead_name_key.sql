-- The console's name search ignores case (a sales manager typed "иван"
-- and found nobody named "Иван"). `name_key` is the name in lower case
-- (Rust's Unicode lower case for new leads; lower() for the leads of
-- before), searched by prefix as bytes like the name was (0005).
ALTER TABLE leads ADD COLUMN name_key TEXT NOT NULL DEFAULT '';
UPDATE leads SET name_key = lower(name);
DROP INDEX leads_name;
CREATE INDEX leads_name_key ON leads ((name_key COLLATE "C"));
