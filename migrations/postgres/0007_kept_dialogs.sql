-- When an interrupted call was recorded (Unix ms) while its answered
-- dialog is kept for a BYE still to come: a node started again at once
-- after a crash records its live calls, and their BYEs must still reach
-- the PBX (`store::record::close_open_row`). NULL: the call is open.
ALTER TABLE open_calls ADD COLUMN recorded_at BIGINT;
