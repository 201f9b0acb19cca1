//! Leads, call records and the embedded CRM in SQLite. The lead
//! decision is made and recorded in one IMMEDIATE transaction on the
//! decision thread (`decide.rs`), so two leads of one client arriving
//! together cannot both create a deal (SPEC L-6), and a crash leaves
//! either the whole outcome or nothing. Lists and status callbacks are
//! read and written here.

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::decide::{Batch, Work};
use super::SqliteStore;
use crate::calls::Recording;
use crate::crm::outbox::Plan;
use crate::leads::dedup::{Group, Settings};
use crate::store::leads::{Job, NewDealStatus, Recorded};
use crate::store::query::LeadQuery;
use crate::store::rows::{CallRow, DealRow, LeadRow, NoteCall, NoteRow, PendingCrm};
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
            .send(Work::Decide(Batch {
                jobs,
                settings: s.clone(),
                status: status.clone(),
                plan: plan.clone(),
                reply,
            }))
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
        crm_only: bool,
    ) -> Result<Option<i64>, StoreError> {
        let (id, status) = (id.to_string(), status.to_string());
        let ours = if crm_only {
            -1
        } else {
            id.parse::<i64>().unwrap_or(-1)
        };
        // One statement: the lookup and the change cannot be split by
        // another writer.
        self.with(move |c| {
            let ids = c
                .prepare_cached(
                    "UPDATE deals SET status = ?1, grp = ?2
                      WHERE crm_id = ?3
                         OR (id = ?4 AND crm_id IS NULL
                             AND NOT EXISTS (SELECT 1 FROM deals WHERE crm_id = ?3))
                     RETURNING id",
                )?
                .query_map(params![status, group.as_str(), id, ours], |r| {
                    r.get::<_, i64>(0)
                })?
                .collect::<Result<Vec<i64>, _>>()?;
            Ok(crate::store::leads::newest_of(&id, ids))
        })
        .await
    }

    /// The lead log (L-7), newest first.
    pub async fn list_leads(&self, limit: i64, since: i64) -> Result<Vec<LeadRow>, StoreError> {
        self.lead_page(LeadQuery {
            appeared_since: Some(since),
            limit,
            ..Default::default()
        })
        .await
    }

    /// A page of the lead log, newest first (keyset on the id: no OFFSET,
    /// no COUNT).
    pub async fn lead_page(&self, q: LeadQuery) -> Result<Vec<LeadRow>, StoreError> {
        self.with(move |c| {
            let (clause, mut args) = q.sql();
            args.push(q.limit.into());
            let mut st = c.prepare_cached(&format!(
                "SELECT id, created_at, kind, form, dialed, title, name, phone, email, visit_id,
                        text, outcome, deal_id, {} AS channel,
                        (SELECT o.state FROM outbox o WHERE o.lead_id = l.id AND o.state != 'done'
                          ORDER BY o.id LIMIT 1) AS crm_state,
                        (SELECT o.attempts FROM outbox o WHERE o.lead_id = l.id AND o.state != 'done'
                          ORDER BY o.id LIMIT 1) AS crm_attempts,
                        (SELECT o.last_error FROM outbox o WHERE o.lead_id = l.id AND o.state != 'done'
                          ORDER BY o.id LIMIT 1) AS crm_error
                   FROM leads l WHERE {clause} ORDER BY l.id DESC LIMIT ?{}",
                crate::store::query::CHANNEL_OF_LEAD_ROW,
                args.len()
            ))?;
            let rows = st.query_map(rusqlite::params_from_iter(args), lead_row)?;
            rows.collect()
        })
        .await
    }

    /// The newest lead's id (0 when there is none): one probe of the
    /// rowid tree.
    pub async fn newest_lead_id(&self) -> Result<i64, StoreError> {
        self.with(|c| c.query_row("SELECT COALESCE(MAX(id), 0) FROM leads", [], |r| r.get(0)))
            .await
    }

    /// Leads per channel created since `since` (Unix seconds), most first;
    /// at most `limit` channels. See `query::CHANNEL_OF_LEAD`.
    pub async fn leads_per_channel(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {} AS channel, COUNT(*) AS n
                   FROM leads l LEFT JOIN calls c ON c.call_id = l.call_id
                  WHERE l.created_at >= ?1
                  GROUP BY channel ORDER BY n DESC, channel LIMIT ?2",
                crate::store::query::CHANNEL_OF_LEAD
            ))?;
            let rows = st.query_map(params![since, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// Calls started since `since_ms` per hour and status: (the hour's
    /// start in Unix ms, status, calls).
    pub async fn calls_per_hour(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(i64, String, i64)>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(
                "SELECT invite_at / 3600000 * 3600000 AS hour, status, COUNT(*) FROM calls
                  WHERE invite_at >= ?1 GROUP BY hour, status ORDER BY hour, status",
            )?;
            let rows =
                st.query_map(params![since_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
        .await
    }

    /// Call records by record order (the row id), newest first: those with
    /// a row id below `before` / above `after`. Each with its row id.
    pub async fn call_page(
        &self,
        before: Option<i64>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, CallRow)>, StoreError> {
        self.with(move |c| {
            let mut q = c.prepare_cached(
                "SELECT id, call_id, caller, caller_raw, callee, destination, visit_id, marker, source,
                        visit, invite_at, answer_at, end_at, duration, status, hangup, lead_id,
                        recording, recording_reason, dtmf, recording_base
                   FROM calls WHERE id < ?1 AND id > ?2 ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = q.query_map(
                params![before.unwrap_or(i64::MAX), after.unwrap_or(0), limit],
                |r| Ok((r.get("id")?, call_row(r)?)),
            )?;
            rows.collect()
        })
        .await
    }

    /// Call records (C-2a fields), newest first.
    pub async fn list_calls(&self, limit: i64, since_ms: i64) -> Result<Vec<CallRow>, StoreError> {
        self.with(move |c| {
            let mut q = c.prepare_cached(&format!(
                "SELECT {CALL_COLUMNS} FROM calls WHERE end_at >= ?1
                  ORDER BY invite_at DESC, id DESC LIMIT ?2"
            ))?;
            let rows = q.query_map(params![since_ms, limit], call_row)?;
            rows.collect()
        })
        .await
    }

    /// The record of one call, if it ended.
    pub async fn find_call(&self, call_id: &str) -> Result<Option<CallRow>, StoreError> {
        let call_id = call_id.to_string();
        self.with(move |c| {
            c.prepare_cached(&format!(
                "SELECT {CALL_COLUMNS} FROM calls WHERE call_id = ?1"
            ))?
            .query_row(params![call_id], call_row)
            .optional()
        })
        .await
    }

    /// Deals of the local CRM with their tasks and comments, newest first.
    pub async fn list_deals(&self, limit: i64, since: i64) -> Result<Vec<DealRow>, StoreError> {
        self.with(move |c| {
            let mut q = c.prepare_cached(
                "SELECT id, created_at, title, name, phone, email, visit_id, status, grp, crm_id
                   FROM deals WHERE created_at >= ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let deals = q
                .query_map(params![since, limit], |r| {
                    Ok(DealRow {
                        id: r.get("id")?,
                        created_at: r.get("created_at")?,
                        title: r.get("title")?,
                        name: r.get("name")?,
                        phone: r.get("phone")?,
                        email: r.get("email")?,
                        visit_id: r.get("visit_id")?,
                        status: r.get("status")?,
                        group: r.get("grp")?,
                        crm_id: r.get("crm_id")?,
                        tasks: Vec::new(),
                        comments: Vec::new(),
                    })
                })?
                .collect::<rusqlite::Result<Vec<DealRow>>>()?;
            let mut out = Vec::with_capacity(deals.len());
            for mut d in deals {
                d.tasks = notes(c, "tasks", d.id)?;
                d.comments = notes(c, "comments", d.id)?;
                out.push(d);
            }
            Ok(out)
        })
        .await
    }

    /// Leads without an outcome: none, ever (checked after crashes).
    pub async fn leads_without_outcome(&self) -> Result<i64, StoreError> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM leads WHERE outcome = ''", [], |r| {
                r.get(0)
            })
        })
        .await
    }
}

/// A deal's tasks or comments, oldest first.
fn notes(c: &Connection, table: &'static str, deal: i64) -> rusqlite::Result<Vec<NoteRow>> {
    // The call a note names, with its recording as it stands now (the
    // call's row is written in the same transaction as the note).
    let mut q = c.prepare_cached(&format!(
        "SELECT n.created_at, n.text, n.call_id, c.recording, c.recording_reason, c.end_at,
                c.recording_base
           FROM {table} n LEFT JOIN calls c ON c.call_id = n.call_id
          WHERE n.deal_id = ?1 ORDER BY n.id"
    ))?;
    let rows = q.query_map(params![deal], |r| {
        let call: Option<String> = r.get(2)?;
        let state: Option<String> = r.get(3)?;
        Ok(NoteRow {
            created_at: r.get(0)?,
            text: r.get(1)?,
            call: match (call, state) {
                (Some(call_id), Some(state)) => Some(NoteCall {
                    call_id,
                    recording: Recording::from_columns(&state, &r.get::<_, String>(4)?),
                    end_at: r.get(5)?,
                    // NULL only with no call row, which `state` rules out.
                    recording_base: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                }),
                _ => None,
            },
        })
    })?;
    rows.collect()
}

const CALL_COLUMNS: &str = "call_id, caller, caller_raw, callee, destination, visit_id, marker,
    source, visit, invite_at, answer_at, end_at, duration, status, hangup, lead_id, recording,
    recording_reason, dtmf, recording_base";

/// A call record from a row of `calls`.
fn call_row(r: &rusqlite::Row) -> rusqlite::Result<CallRow> {
    Ok(CallRow {
        call_id: r.get("call_id")?,
        caller: r.get("caller")?,
        caller_raw: r.get("caller_raw")?,
        callee: r.get("callee")?,
        destination: r.get("destination")?,
        visit_id: r.get("visit_id")?,
        marker: r.get("marker")?,
        source: r.get("source")?,
        // A row this build cannot read is a call without visit data.
        visit: serde_json::from_str(&r.get::<_, String>("visit")?).unwrap_or_default(),
        invite_at: r.get("invite_at")?,
        answer_at: r.get("answer_at")?,
        end_at: r.get("end_at")?,
        duration: r.get("duration")?,
        status: r.get("status")?,
        hangup: r.get("hangup")?,
        lead_id: r.get("lead_id")?,
        recording: Recording::from_columns(
            &r.get::<_, String>("recording")?,
            &r.get::<_, String>("recording_reason")?,
        ),
        // Like visit: an unreadable list is no key presses.
        dtmf: serde_json::from_str(&r.get::<_, String>("dtmf")?).unwrap_or_default(),
        recording_base: r.get("recording_base")?,
    })
}

/// A lead from a row of the lead page's SELECT.
fn lead_row(r: &rusqlite::Row) -> rusqlite::Result<LeadRow> {
    let pending = match r.get::<_, Option<String>>("crm_state")? {
        None => None,
        Some(state) => Some(PendingCrm {
            state,
            attempts: r.get("crm_attempts")?,
            error: r.get("crm_error")?,
        }),
    };
    Ok(LeadRow {
        id: r.get("id")?,
        created_at: r.get("created_at")?,
        kind: r.get("kind")?,
        form: r.get("form")?,
        dialed: r.get("dialed")?,
        title: r.get("title")?,
        name: r.get("name")?,
        phone: r.get("phone")?,
        email: r.get("email")?,
        visit_id: r.get("visit_id")?,
        channel: r.get("channel")?,
        text: r.get("text")?,
        decision: r.get("outcome")?,
        deal_id: r.get("deal_id")?,
        pending,
    })
}
