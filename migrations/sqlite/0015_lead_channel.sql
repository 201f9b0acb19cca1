-- As migrations/postgres/0009_lead_channel.sql: the channel a form lead
-- came through (its visit's marker, else its source; '' for a call lead,
-- whose call row has them), for the console's leads per channel.
ALTER TABLE leads ADD COLUMN visit_channel TEXT NOT NULL DEFAULT '';
