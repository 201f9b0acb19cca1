-- As migrations/postgres/0012_leads_call_id.sql: `GET /api/v1/leads?since=`
-- also lists a call's lead whose call ended since (its date is the call's
-- start): the leads of the calls that ended since, found by their Call-ID.
CREATE INDEX leads_call ON leads (call_id);
