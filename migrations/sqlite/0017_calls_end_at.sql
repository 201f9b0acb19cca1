-- As migrations/postgres/0011_calls_end_at.sql: `GET /api/v1/calls?since=`
-- lists the calls that ended since (a call is recorded when it ends: one
-- that began before a poll and ended after it was in no poll's answer).
CREATE INDEX calls_end_at ON calls (end_at);
