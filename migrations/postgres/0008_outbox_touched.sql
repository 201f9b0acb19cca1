-- When an outbox item was last claimed or rescheduled (Unix ms; NULL:
-- never since it was queued). A row touched well after "now" was touched
-- before the clock was stepped back (a VM that booted with its clock
-- ahead, then NTP): its next_at is that far off too, and it is due now
-- instead of hours later (`store::outbox::CLOCK_STEP_MS`).
ALTER TABLE outbox ADD COLUMN touched_at BIGINT;
