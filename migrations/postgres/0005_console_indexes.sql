-- The web console's lead filters (issue 17) without a scan of the table,
-- as migrations/sqlite/0009_console_indexes.sql. PostgreSQL's index
-- entries are not in id order as SQLite's rowid-suffixed ones are, so the
-- channel index names the id: a channel's page is an index range read
-- backwards, no sort.
CREATE INDEX leads_visit ON leads (visit_id, id);
-- The start of a name, compared as bytes (query.rs `pg_sql`): the
-- database's own collation may order case and punctuation loosely, which
-- would make a prefix not a range.
CREATE INDEX leads_name ON leads ((name COLLATE "C"));
