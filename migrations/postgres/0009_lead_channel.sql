-- The channel a form lead came through: its visit's marker, else its
-- source ('' for a call lead, whose call row has them, and for leads
-- recorded before). The console's leads per channel counted a form lead
-- under its visit id, so one channel showed split into a row per visit.
ALTER TABLE leads ADD COLUMN visit_channel TEXT NOT NULL DEFAULT '';
