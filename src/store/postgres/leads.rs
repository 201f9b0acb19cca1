//! Lists and status callbacks in PostgreSQL: the same rows as SQLite's
//! (`store/sqlite/leads.rs`).

use super::PgStore;
use crate::calls::Recording;
use crate::leads::dedup::Group;
use crate::store::rows::{CallRow, DealRow, LeadRow, NoteRow, PendingCrm};
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
            let row = c.client.query_opt(
                "UPDATE deals SET status = $1, grp = $2
                  WHERE id = (SELECT id FROM deals WHERE crm_id = $3
                              UNION ALL SELECT id FROM deals WHERE id = $4 AND crm_id IS NULL
                              LIMIT 1)
                 RETURNING id",
                &[&status, &group.as_str(), &id, &ours],
            )?;
            Ok(row.map(|r| r.get(0)))
        })
        .await
    }

    /// The lead log (L-7), newest first.
    pub async fn list_leads(&self, limit: i64, since: i64) -> Result<Vec<LeadRow>, StoreError> {
        self.with(move |c| {
            let rows = c.client.query(
                "SELECT id, created_at, kind, form, dialed, title, name, phone, email, visit_id,
                        text, outcome, deal_id, p.state, p.attempts, p.last_error
                   FROM leads l
                   LEFT JOIN LATERAL (SELECT o.state, o.attempts, o.last_error FROM outbox o
                                       WHERE o.lead_id = l.id AND o.state <> 'done'
                                       ORDER BY o.id LIMIT 1) p ON true
                  WHERE created_at >= $1 ORDER BY id DESC LIMIT $2",
                &[&since, &limit],
            )?;
            Ok(rows
                .iter()
                .map(|r| LeadRow {
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
                    text: r.get(10),
                    decision: r.get(11),
                    deal_id: r.get(12),
                    pending: r.get::<_, Option<String>>(13).map(|state| PendingCrm {
                        state,
                        attempts: r.get(14),
                        error: r.get(15),
                    }),
                })
                .collect())
        })
        .await
    }

    /// Call records (C-2a fields), newest first.
    pub async fn list_calls(&self, limit: i64, since_ms: i64) -> Result<Vec<CallRow>, StoreError> {
        self.with(move |c| {
            let rows = c.client.query(
                "SELECT call_id, caller, caller_raw, callee, destination, visit_id, marker, source,
                        visit, invite_at, answer_at, end_at, duration, status, hangup, lead_id,
                        recording, recording_reason, dtmf
                   FROM calls WHERE invite_at >= $1 ORDER BY invite_at DESC, id DESC LIMIT $2",
                &[&since_ms, &limit],
            )?;
            Ok(rows
                .iter()
                .map(|r| CallRow {
                    call_id: r.get(0),
                    caller: r.get(1),
                    caller_raw: r.get(2),
                    callee: r.get(3),
                    destination: r.get(4),
                    visit_id: r.get(5),
                    marker: r.get(6),
                    source: r.get(7),
                    // A row this build cannot read is a call without
                    // visit data.
                    visit: serde_json::from_str(r.get(8)).unwrap_or_default(),
                    invite_at: r.get(9),
                    answer_at: r.get(10),
                    end_at: r.get(11),
                    duration: r.get(12),
                    status: r.get(13),
                    hangup: r.get(14),
                    lead_id: r.get(15),
                    recording: Recording::from_columns(r.get(16), r.get(17)),
                    // Like visit: an unreadable list is no key presses.
                    dtmf: serde_json::from_str(r.get(18)).unwrap_or_default(),
                })
                .collect())
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
                let sql = format!(
                    "SELECT deal_id, created_at, text FROM {table}
                      WHERE deal_id = ANY($1) ORDER BY id"
                );
                for r in c.client.query(&sql, &[&ids])? {
                    let deal: i64 = r.get(0);
                    let note = NoteRow {
                        created_at: r.get(1),
                        text: r.get(2),
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
