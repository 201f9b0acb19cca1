//! Leads, call records and the embedded CRM in SQLite. The lead
//! decision is made and recorded in one IMMEDIATE transaction on the
//! decision thread (`decide.rs`), so two leads of one client arriving
//! together cannot both create a deal (SPEC L-6), and a crash leaves
//! either the whole outcome or nothing. Lists and status callbacks are
//! read and written here.

use std::sync::Arc;

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::decide::Batch;
use super::SqliteStore;
use crate::crm::outbox::Plan;
use crate::leads::dedup::{Group, Settings};
use crate::store::leads::{Job, NewDealStatus, Recorded};
use crate::store::rows::{CallRow, DealRow, LeadRow, NoteRow, PendingCrm};
use crate::store::StoreError;

impl SqliteStore {
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
        answer.await.map_err(|_| stopped())?
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
    pub async fn list_leads(&self, limit: i64, since: i64) -> Result<Vec<LeadRow>, StoreError> {
        let rows = self
            .page(
                "SELECT id, created_at, kind, form, dialed, title, name, phone, email, visit_id,
                        text, outcome, deal_id,
                        (SELECT o.state FROM outbox o WHERE o.lead_id = l.id AND o.state != 'done'
                          ORDER BY o.id LIMIT 1) AS crm_state,
                        (SELECT o.attempts FROM outbox o WHERE o.lead_id = l.id AND o.state != 'done'
                          ORDER BY o.id LIMIT 1) AS crm_attempts,
                        (SELECT o.last_error FROM outbox o WHERE o.lead_id = l.id AND o.state != 'done'
                          ORDER BY o.id LIMIT 1) AS crm_error
                   FROM leads l WHERE created_at >= ?1 ORDER BY id DESC LIMIT ?2",
                since,
                limit,
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let pending = match r.try_get::<Option<String>, _>("crm_state")? {
                None => None,
                Some(state) => Some(PendingCrm {
                    state,
                    attempts: r.try_get("crm_attempts")?,
                    error: r.try_get("crm_error")?,
                }),
            };
            out.push(LeadRow {
                id: r.try_get("id")?,
                created_at: r.try_get("created_at")?,
                kind: r.try_get("kind")?,
                form: r.try_get("form")?,
                dialed: r.try_get("dialed")?,
                title: r.try_get("title")?,
                name: r.try_get("name")?,
                phone: r.try_get("phone")?,
                email: r.try_get("email")?,
                visit_id: r.try_get("visit_id")?,
                text: r.try_get("text")?,
                decision: r.try_get("outcome")?,
                deal_id: r.try_get("deal_id")?,
                pending,
            });
        }
        Ok(out)
    }

    /// Call records (C-2a fields), newest first.
    pub async fn list_calls(&self, limit: i64, since_ms: i64) -> Result<Vec<CallRow>, StoreError> {
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
            out.push(CallRow {
                call_id: r.try_get("call_id")?,
                caller: r.try_get("caller")?,
                caller_raw: r.try_get("caller_raw")?,
                callee: r.try_get("callee")?,
                destination: r.try_get("destination")?,
                visit_id: r.try_get("visit_id")?,
                marker: r.try_get("marker")?,
                source: r.try_get("source")?,
                // A row this build cannot read is a call without visit data.
                visit: serde_json::from_str(r.try_get::<&str, _>("visit")?).unwrap_or_default(),
                invite_at: r.try_get("invite_at")?,
                answer_at: r.try_get("answer_at")?,
                end_at: r.try_get("end_at")?,
                duration: r.try_get("duration")?,
                status: r.try_get("status")?,
                hangup: r.try_get("hangup")?,
                lead_id: r.try_get("lead_id")?,
            });
        }
        Ok(out)
    }

    /// Deals of the local CRM with their tasks and comments, newest first.
    pub async fn list_deals(&self, limit: i64, since: i64) -> Result<Vec<DealRow>, StoreError> {
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
            out.push(DealRow {
                id,
                created_at: r.try_get("created_at")?,
                title: r.try_get("title")?,
                name: r.try_get("name")?,
                phone: r.try_get("phone")?,
                email: r.try_get("email")?,
                visit_id: r.try_get("visit_id")?,
                status: r.try_get("status")?,
                group: r.try_get("grp")?,
                crm_id: r.try_get("crm_id")?,
                tasks: self.notes("tasks", id).await?,
                comments: self.notes("comments", id).await?,
            });
        }
        Ok(out)
    }

    /// A deal's tasks or comments, oldest first.
    async fn notes(&self, table: &'static str, deal: i64) -> Result<Vec<NoteRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT created_at, text FROM {table} WHERE deal_id = ?1 ORDER BY id"
        ))
        .bind(deal)
        .fetch_all(&self.db)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for n in rows {
            out.push(NoteRow {
                created_at: n.try_get("created_at")?,
                text: n.try_get("text")?,
            });
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
