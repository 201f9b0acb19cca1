-- The web console's lead filters (issue 17) without a scan of the table:
-- by channel (the visit column; the index's rowid order is the page's
-- order, so no sort) and by the start of a name.
CREATE INDEX leads_visit ON leads (visit_id);
CREATE INDEX leads_name ON leads (name);
