-- Answered calls' dialogs (issue 14 step 3): when the node that set a
-- call up dies, another node of the same database relays its BYE and
-- closes its record from this row. Both NULL until the call is answered.
-- Unix milliseconds.
ALTER TABLE open_calls ADD COLUMN answer_at INTEGER;
-- proxy::handoff::DialogHandoff as JSON.
ALTER TABLE open_calls ADD COLUMN dialog TEXT;
