//! Lists and status callbacks in PostgreSQL: the same rows as SQLite's
//! (`store/sqlite/leads.rs`).

use postgres::types::ToSql;
use postgres::Row;

use super::PgStore;
use crate::calls::Recording;
use crate::leads::dedup::Group;
use crate::store::query::{Arg, LeadQuery};
use crate::store::rows::{CallRow, DealRow, LeadRow, NoteCall, NoteRow, PendingCrm};
use crate::store::StoreError;

impl PgStore {
    /// SPEC L-2: the CRM reports a deal's status, by the CRM's id or by
    /// siptrack's (unless `crm_only`). Returns siptrack's deal id, None if no such deal.
    pub async fn set_deal_status(
        &self,
        id: &str,
        status: &str,
        group: Group,
        crm_only: bool,
    ) -> Result<Option<i64>, StoreError> {
        let (id, status) = (id.to_string(), status.to_string());
        self.with(move |c| {
            // A CRM's own status webhook names only its ids.
            let ours = if crm_only {
                -1
            } else {
                id.parse::<i64>().unwrap_or(-1)
            };
            // One statement: the lookup and the change cannot be split by
            // another writer.
            let rows = c.client.query(
                "UPDATE deals SET status = $1, grp = $2
                  WHERE crm_id = $3
                     OR (id = $4 AND crm_id IS NULL
                         AND NOT EXISTS (SELECT 1 FROM deals WHERE crm_id = $3))
                 RETURNING id",
                &[&status, &group.as_str(), &id, &ours],
            )?;
            let ids = rows.iter().map(|r| r.get::<_, i64>(0)).collect();
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
    /// no COUNT), with each lead's first CRM request not yet delivered.
    pub async fn lead_page(&self, q: LeadQuery) -> Result<Vec<LeadRow>, StoreError> {
        self.with(move |c| {
            let (clause, args) = q.pg_sql();
            let mut params: Vec<Box<dyn ToSql + Sync + Send>> = args
                .into_iter()
                .map(|a| -> Box<dyn ToSql + Sync + Send> {
                    match a {
                        Arg::Int(i) => Box::new(i),
                        Arg::Text(s) => Box::new(s),
                    }
                })
                .collect();
            params.push(Box::new(q.limit));
            let sql = format!(
                "SELECT l.id, l.created_at, l.kind, l.form, l.dialed, l.title, l.name, l.phone,
                        l.email, l.visit_id, l.text, l.outcome, l.deal_id,
                        p.state, p.attempts, p.last_error, {} AS channel
                   FROM leads l
                   LEFT JOIN LATERAL (SELECT o.state, o.attempts, o.last_error FROM outbox o
                                       WHERE o.lead_id = l.id AND o.state <> 'done'
                                       ORDER BY o.id LIMIT 1) p ON true
                  WHERE {clause} ORDER BY l.id DESC LIMIT ${}",
                crate::store::query::CHANNEL_OF_LEAD_ROW,
                params.len()
            );
            let refs: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            Ok(c.client.query(&sql, &refs)?.iter().map(lead_row).collect())
        })
        .await
    }

    /// The newest lead's id (0 when there is none): one probe of the
    /// primary key.
    pub async fn newest_lead_id(&self) -> Result<i64, StoreError> {
        self.with(|c| {
            Ok(c.client
                .query_one("SELECT COALESCE(MAX(id), 0) FROM leads", &[])?
                .get(0))
        })
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
            // Ties in byte order, as SQLite and the memory store break them.
            let rows = c.client.query(
                &format!(
                    // An output name takes no COLLATE: the expression does.
                    "SELECT {ch} AS channel, COUNT(*) AS n
                       FROM leads l LEFT JOIN calls c ON c.call_id = l.call_id
                      WHERE l.created_at >= $1
                      GROUP BY channel ORDER BY n DESC, {ch} COLLATE \"C\" LIMIT $2",
                    ch = crate::store::query::CHANNEL_OF_LEAD
                ),
                &[&since, &limit],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
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
            let rows = c.client.query(
                "SELECT invite_at / 3600000 * 3600000 AS hour, status, COUNT(*) FROM calls
                  WHERE invite_at >= $1 GROUP BY hour, status
                  ORDER BY hour, status COLLATE \"C\"",
                &[&since_ms],
            )?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
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
            let rows = c.client.query(
                &format!(
                    "SELECT id, {CALL_COLUMNS} FROM calls WHERE id < $1 AND id > $2
                      ORDER BY id DESC LIMIT $3"
                ),
                &[&before.unwrap_or(i64::MAX), &after.unwrap_or(0), &limit],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), call_row(r, 1))).collect())
        })
        .await
    }

    /// Call records (C-2a fields), newest first.
    pub async fn list_calls(&self, limit: i64, since_ms: i64) -> Result<Vec<CallRow>, StoreError> {
        self.with(move |c| {
            let rows = c.client.query(
                &format!(
                    "SELECT {CALL_COLUMNS} FROM calls WHERE end_at >= $1
                      ORDER BY invite_at DESC, id DESC LIMIT $2"
                ),
                &[&since_ms, &limit],
            )?;
            Ok(rows.iter().map(|r| call_row(r, 0)).collect())
        })
        .await
    }

    /// The record of one call, if it ended.
    pub async fn find_call(&self, call_id: &str) -> Result<Option<CallRow>, StoreError> {
        let call_id = call_id.to_string();
        self.with(move |c| {
            let row = c.client.query_opt(
                &format!("SELECT {CALL_COLUMNS} FROM calls WHERE call_id = $1"),
                &[&call_id],
            )?;
            Ok(row.map(|r| call_row(&r, 0)))
        })
        .await
    }

    /// Deals of the local CRM with their tasks and comments, newest first.
    pub async fn list_deals(&self, limit: i64, since: i64) -> Result<Vec<DealRow>, StoreError> {
        self.with(move |c| {
            let rows = c.client.query(
                "SELECT id, created_at, title, name, phone, email, visit_id, status, grp, crm_id
                   FROM deals WHERE created_at >= $1 ORDER BY id DESC LIMIT $2",
                &[&since, &limit],
            )?;
            let mut deals: Vec<DealRow> = rows
                .iter()
                .map(|r| DealRow {
                    id: r.get(0),
                    created_at: r.get(1),
                    title: r.get(2),
                    name: r.get(3),
                    phone: r.get(4),
                    email: r.get(5),
                    visit_id: r.get(6),
                    status: r.get(7),
                    group: r.get(8),
                    crm_id: r.get(9),
                    tasks: Vec::new(),
                    comments: Vec::new(),
                })
                .collect();
            // The notes of the page's deals in two queries, not two per deal.
            let ids: Vec<i64> = deals.iter().map(|d| d.id).collect();
            for table in ["tasks", "comments"] {
                // The call a note names, with its recording as it stands
                // now (the call's row is written in the same transaction
                // as the note).
                let sql = format!(
                    "SELECT n.deal_id, n.created_at, n.text, n.call_id, c.recording,
                            c.recording_reason, c.end_at, c.recording_base
                       FROM {table} n LEFT JOIN calls c ON c.call_id = n.call_id
                      WHERE n.deal_id = ANY($1) ORDER BY n.id"
                );
                for r in c.client.query(&sql, &[&ids])? {
                    let deal: i64 = r.get(0);
                    let call: Option<String> = r.get(3);
                    let state: Option<String> = r.get(4);
                    let note = NoteRow {
                        created_at: r.get(1),
                        text: r.get(2),
                        call: match (call, state) {
                            (Some(call_id), Some(state)) => Some(NoteCall {
                                call_id,
                                recording: Recording::from_columns(&state, r.get(5)),
                                end_at: r.get(6),
                                recording_base: r.get::<_, Option<String>>(7).unwrap_or_default(),
                            }),
                            _ => None,
                        },
                    };
                    if let Some(d) = deals.iter_mut().find(|d| d.id == deal) {
                        match table {
                            "tasks" => d.tasks.push(note),
                            _ => d.comments.push(note),
                        }
                    }
                }
            }
            Ok(deals)
        })
        .await
    }

    /// Leads without an outcome: none, ever (checked after crashes).
    pub async fn leads_without_outcome(&self) -> Result<i64, StoreError> {
        self.with(|c| {
            Ok(c.client
                .query_one("SELECT COUNT(*) FROM leads WHERE outcome = ''", &[])?
                .get(0))
        })
        .await
    }
}

const CALL_COLUMNS: &str = "call_id, caller, caller_raw, callee, destination, visit_id, marker,
    source, visit, invite_at, answer_at, end_at, duration, status, hangup, lead_id, recording,
    recording_reason, dtmf, recording_base";

/// A call record from `CALL_COLUMNS`, starting at column `at`.
fn call_row(r: &Row, at: usize) -> CallRow {
    CallRow {
        call_id: r.get(at),
        caller: r.get(at + 1),
        caller_raw: r.get(at + 2),
        callee: r.get(at + 3),
        destination: r.get(at + 4),
        visit_id: r.get(at + 5),
        marker: r.get(at + 6),
        source: r.get(at + 7),
        // A row this build cannot read is a call without visit data.
        visit: serde_json::from_str(r.get(at + 8)).unwrap_or_default(),
        invite_at: r.get(at + 9),
        answer_at: r.get(at + 10),
        end_at: r.get(at + 11),
        duration: r.get(at + 12),
        status: r.get(at + 13),
        hangup: r.get(at + 14),
        lead_id: r.get(at + 15),
        recording: Recording::from_columns(r.get(at + 16), r.get(at + 17)),
        // Like visit: an unreadable list is no key presses.
        dtmf: serde_json::from_str(r.get(at + 18)).unwrap_or_default(),
        recording_base: r.get(at + 19),
    }
}

/// A lead from a row of the lead page's SELECT.
fn lead_row(r: &Row) -> LeadRow {
    LeadRow {
        id: r.get(0),
        created_at: r.get(1),
        kind: r.get(2),
        form: r.get(3),
        dialed: r.get(4),
        title: r.get(5),
        name: r.get(6),
        phone: r.get(7),
        email: r.get(8),
        visit_id: r.get(9),
        channel: r.get(16),
        text: r.get(10),
        decision: r.get(11),
        deal_id: r.get(12),
        pending: r.get::<_, Option<String>>(13).map(|state| PendingCrm {
            state,
            attempts: r.get(14),
            error: r.get(15),
        }),
    }
}
