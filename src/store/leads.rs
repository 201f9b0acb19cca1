//! Leads, call records and the embedded CRM in the store. The lead
//! decision is made and recorded in one IMMEDIATE transaction on the
//! decision thread (`decide.rs`), so two leads of one client arriving
//! together cannot both create a deal (SPEC L-6), and a crash leaves
//! either the whole outcome or nothing. Lists and status callbacks are
//! read and written here.

use std::sync::Arc;

use serde_json::{json, Value};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::decide::Batch;
pub use super::decide::Job;
use super::{Store, StoreError};
use crate::calls::{CallRecord, VISIT_COLUMNS};
use crate::crm::outbox::Plan;
use crate::leads::dedup::{Decision, Group, Identity, LeadKind, Settings};

/// A lead as the pipeline receives it (phone normalised, email lowercased).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewLead {
    pub kind: Option<LeadKind>,
    pub who: Identity,
    pub form: String,
    /// For calls: the tracking number dialed.
    pub dialed: String,
    pub text: String,
    /// Extra form fields, as JSON text.
    pub fields: String,
    /// For form leads: what the visits API knows of `who.visit` (marker,
    /// source, utm_*, page, city, domain), for the CRM's `data`.
    pub visit_data: std::collections::BTreeMap<String, String>,
    pub call_id: Option<String>,
    /// Unix seconds.
    pub at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub lead_id: i64,
    pub deal_id: Option<i64>,
    pub outcome: String,
    pub decision: Decision,
}

/// What a new deal's status is, and its group (SPEC L-2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDealStatus {
    pub status: String,
    pub group: Group,
}

impl Store {
    /// Call starts and finished calls with their leads, sent to the
    /// decision thread as one batch and decided one after the other in one
    /// transaction: at high call rates one commit per call is the limit.
    /// One result per lead job, in order.
    pub async fn record_calls(
        &self,
        jobs: Arc<Vec<Job>>,
        s: &Settings,
        status: &NewDealStatus,
        plan: &Plan,
    ) -> Result<Vec<Recorded>, StoreError> {
        let stopped = || StoreError::Thread("the decision thread has stopped".into());
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.decider
            .send(Batch {
                jobs,
                settings: s.clone(),
                status: status.clone(),
                plan: plan.clone(),
                reply,
            })
            .map_err(|_| stopped())?;
        let done = answer.await.map_err(|_| stopped())??;
        if plan.sends_anything() {
            self.outbox_ready.notify_one();
        }
        Ok(done)
    }

    /// SPEC L-3 to L-6: decides what the lead becomes and records the lead,
    /// its outcome, any deal, comment or task, the call that made it (if
    /// any), and the CRM requests it causes (C-5) in one transaction.
    pub async fn record_lead(
        &self,
        new: &NewLead,
        s: &Settings,
        status: &NewDealStatus,
        call: Option<&CallRecord>,
        plan: &Plan,
    ) -> Result<Recorded, StoreError> {
        let job = Job::Lead(new.clone(), call.cloned());
        self.record_calls(Arc::new(vec![job]), s, status, plan)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Thread("no decision came back".into()))
    }

    /// SPEC L-2: the CRM reports a deal's status. `id` is the CRM's id
    /// of the deal (from its answer to deal.create) or, for deals the CRM
    /// never named, siptrack's. Returns siptrack's deal id, None if no
    /// such deal.
    pub async fn set_deal_status(
        &self,
        id: &str,
        status: &str,
        group: Group,
    ) -> Result<Option<i64>, StoreError> {
        // One statement: the lookup and the change cannot be split by
        // another writer.
        Ok(sqlx::query_scalar(
            "UPDATE deals SET status = ?1, grp = ?2
              WHERE id = (SELECT id FROM deals WHERE crm_id = ?3
                          UNION ALL SELECT id FROM deals WHERE id = ?4 AND crm_id IS NULL
                          LIMIT 1)
             RETURNING id",
        )
        .bind(status)
        .bind(group.as_str())
        .bind(id)
        .bind(id.parse::<i64>().unwrap_or(-1))
        .fetch_optional(&self.db)
        .await?)
    }

    /// One page of a list: `?1` is the lower time bound, `?2` the limit.
    async fn page(&self, sql: &str, since: i64, limit: i64) -> Result<Vec<SqliteRow>, StoreError> {
        Ok(sqlx::query(sql)
            .bind(since)
            .bind(limit)
            .fetch_all(&self.db)
            .await?)
    }

    /// The lead log (L-7), newest first.
    pub async fn list_leads(&self, limit: i64, since: i64) -> Result<Vec<Value>, StoreError> {
        let rows = self
            .page(
                "SELECT id, created_at, kind, form, dialed, title, name, phone, email, visit_id,
                        text, outcome, deal_id,
                        (SELECT o.state || char(9) || o.attempts || char(9) || o.last_error
                           FROM outbox o WHERE o.lead_id = l.id AND o.state != 'done'
                          ORDER BY o.id LIMIT 1) AS crm
                   FROM leads l WHERE created_at >= ?1 ORDER BY id DESC LIMIT ?2",
                since,
                limit,
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let kind: String = r.try_get("kind")?;
            let form: String = r.try_get("form")?;
            let dialed: String = r.try_get("dialed")?;
            let decision: String = r.try_get("outcome")?;
            let (outcome, crm) = crm_outcome(&decision, r.try_get("crm")?);
            out.push(json!({
                "id": r.try_get::<i64, _>("id")?,
                "date": date(r.try_get("created_at")?),
                "type": kind,
                "form_or_number": if kind == "call" { dialed } else { form },
                "title": r.try_get::<String, _>("title")?,
                "name": r.try_get::<String, _>("name")?,
                "phone": r.try_get::<String, _>("phone")?,
                "email": r.try_get::<String, _>("email")?,
                "visit": r.try_get::<String, _>("visit_id")?,
                "comment": r.try_get::<String, _>("text")?,
                "outcome": outcome,
                "decision": decision,
                "crm": crm,
                "deal_id": r.try_get::<Option<i64>, _>("deal_id")?,
            }));
        }
        Ok(out)
    }

    /// Call records (C-2a fields), newest first.
    pub async fn list_calls(&self, limit: i64, since_ms: i64) -> Result<Vec<Value>, StoreError> {
        let rows = self
            .page(
                "SELECT call_id, caller, caller_raw, callee, destination, visit_id, marker, source,
                        visit, invite_at, answer_at, end_at, duration, status, hangup, lead_id
                   FROM calls WHERE invite_at >= ?1 ORDER BY invite_at DESC, id DESC LIMIT ?2",
                since_ms,
                limit,
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let visit: Value =
                serde_json::from_str(r.try_get::<&str, _>("visit")?).unwrap_or_else(|_| json!({}));
            let mut call = json!({
                "id": r.try_get::<String, _>("call_id")?,
                "caller": r.try_get::<String, _>("caller")?,
                "caller_raw": r.try_get::<String, _>("caller_raw")?,
                "callee": r.try_get::<String, _>("callee")?,
                "destination": r.try_get::<String, _>("destination")?,
                "visit_id": r.try_get::<Option<String>, _>("visit_id")?,
                "marker": r.try_get::<Option<String>, _>("marker")?,
                "source": r.try_get::<Option<String>, _>("source")?,
                "date": date(r.try_get::<i64, _>("invite_at")? / 1000),
                "invite_at_ms": r.try_get::<i64, _>("invite_at")?,
                "answer_at_ms": r.try_get::<Option<i64>, _>("answer_at")?,
                "end_at_ms": r.try_get::<i64, _>("end_at")?,
                "duration": r.try_get::<i64, _>("duration")?,
                "status": r.try_get::<String, _>("status")?,
                "hangup": r.try_get::<Option<String>, _>("hangup")?,
                "lead_id": r.try_get::<Option<i64>, _>("lead_id")?,
            });
            for (name, key) in VISIT_COLUMNS {
                call[*name] = visit.get(*key).cloned().unwrap_or(Value::Null);
            }
            out.push(call);
        }
        Ok(out)
    }

    /// Deals of the local CRM with their tasks and comments, newest first.
    pub async fn list_deals(&self, limit: i64, since: i64) -> Result<Vec<Value>, StoreError> {
        let rows = self
            .page(
                "SELECT id, created_at, title, name, phone, email, visit_id, status, grp, crm_id
                   FROM deals WHERE created_at >= ?1 ORDER BY id DESC LIMIT ?2",
                since,
                limit,
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.try_get("id")?;
            let notes = |table: &'static str| {
                let db = &self.db;
                async move {
                    let rows = sqlx::query(&format!(
                        "SELECT created_at, text FROM {table} WHERE deal_id = ?1 ORDER BY id"
                    ))
                    .bind(id)
                    .fetch_all(db)
                    .await?;
                    rows.iter()
                        .map(|n| {
                            Ok(json!({
                                "date": date(n.try_get("created_at")?),
                                "text": n.try_get::<String, _>("text")?,
                            }))
                        })
                        .collect::<Result<Vec<Value>, sqlx::Error>>()
                }
            };
            out.push(json!({
                "id": id,
                "title": r.try_get::<String, _>("title")?,
                "name": r.try_get::<String, _>("name")?,
                "phone": r.try_get::<String, _>("phone")?,
                "email": r.try_get::<String, _>("email")?,
                "visit_id": r.try_get::<String, _>("visit_id")?,
                "status": r.try_get::<String, _>("status")?,
                "group": r.try_get::<String, _>("grp")?,
                // The CRM's own id, from its answer to deal.create (null
                // with crm.kind = "local", or until the CRM answered).
                "crm_deal_id": r.try_get::<Option<String>, _>("crm_id")?,
                "created_at": date(r.try_get("created_at")?),
                "tasks": notes("tasks").await?,
                "comments": notes("comments").await?,
            }));
        }
        Ok(out)
    }

    /// Leads without an outcome: none, ever (checked after crashes).
    pub async fn leads_without_outcome(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM leads WHERE outcome = ''")
                .fetch_one(&self.db)
                .await?,
        )
    }
}

/// SPEC L-7: while a lead's CRM request fails, its outcome is the error
/// (`crm error: …`); the decision stays in `decision`. `pending` is the
/// lead's first unsettled outbox item as `state\tattempts\terror`.
fn crm_outcome(decision: &str, pending: Option<String>) -> (String, Option<&'static str>) {
    let Some(p) = pending else {
        return (decision.to_string(), None);
    };
    let mut parts = p.splitn(3, '\t');
    let (state, attempts, error) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("0"),
        parts.next().unwrap_or(""),
    );
    match (state, error.is_empty()) {
        ("failed", _) => (
            format!("crm error: {error} (gave up after {attempts} attempts)"),
            Some("failed"),
        ),
        (_, true) => (decision.to_string(), Some("queued")),
        (_, false) => (
            format!("crm error: {error} (attempt {attempts}, retrying)"),
            Some("retrying"),
        ),
    }
}

/// `YYYY-MM-DD HH:MM:SS` UTC.
pub fn date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}
