-- Issue 15: fewer B-tree writes per call on the decision thread.
--
-- A call's lead has no e-mail and no name, and often no visit: every such
-- lead went into three indexes under the empty key, which no query reads
-- (the duplicate check looks up an e-mail only when there is one; the
-- console filters by a channel and by the start of a name only when one
-- is given). Partial indexes leave those rows out. The queries that use
-- them repeat the index's WHERE term (`email <> ''` …) so that SQLite
-- may: `src/store/sqlite/decide.rs` (history by e-mail) and
-- `src/store/query.rs` (channel, name).
DROP INDEX leads_email;
CREATE INDEX leads_email ON leads (email, accepted, created_at) WHERE email <> '';
DROP INDEX leads_visit;
CREATE INDEX leads_visit ON leads (visit_id) WHERE visit_id <> '';
DROP INDEX leads_name;
CREATE INDEX leads_name ON leads (name) WHERE name <> '';
