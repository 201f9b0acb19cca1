//! Leads, call records and the embedded CRM in the store. The lead
//! decision is made and recorded in one IMMEDIATE transaction, so two
//! leads of one client arriving together cannot both create a deal
//! (SPEC L-6), and a crash leaves either the whole outcome or nothing.

use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::Row;

use super::outbox::insert_items;
use super::{Store, StoreError};
use crate::calls::{CallRecord, VISIT_COLUMNS};
use crate::crm::outbox::{call_end_item, call_start_item, lead_items, CallStart, Plan};
use crate::crm::payload::LeadView;
use crate::leads::dedup::{
    self, Action, Deal, Decision, Group, Identity, Lead, LeadKind, PriorLead, Settings,
};

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

const DAY: i64 = 24 * 3600;

fn group_of(s: &str) -> Group {
    Group::parse(s).unwrap_or(Group::NotCounted)
}

fn kind_str(k: LeadKind) -> &'static str {
    match k {
        LeadKind::Call => "call",
        LeadKind::Form => "form",
    }
}

/// id, title, name, phone, email, visit, time, group: the columns both
/// history queries select.
fn history_row(r: &SqliteRow) -> Result<(i64, Identity, i64, Group), sqlx::Error> {
    Ok((
        r.try_get(0)?,
        Identity {
            title: r.try_get(1)?,
            name: r.try_get(2)?,
            phone: r.try_get(3)?,
            email: r.try_get(4)?,
            visit: r.try_get(5)?,
        },
        r.try_get(6)?,
        group_of(r.try_get::<&str, _>(7)?),
    ))
}

async fn candidates(
    conn: &mut SqliteConnection,
    lead: &Lead,
    s: &Settings,
) -> Result<(Vec<PriorLead>, Vec<Deal>), StoreError> {
    let w = &lead.who;
    // The most selective index for this lead: without statistics SQLite
    // may pick the e-mail index, and most calls have no e-mail.
    let index = if !w.phone.is_empty() {
        "leads_phone"
    } else if !w.email.is_empty() {
        "leads_email"
    } else {
        "leads_created"
    };
    let rows = sqlx::query(&format!(
        "SELECT l.id, l.title, l.name, l.phone, l.email, l.visit_id, l.created_at, d.grp
           FROM leads l INDEXED BY {index} JOIN deals d ON d.id = l.deal_id
          WHERE l.accepted = 1 AND l.phone = ?1 AND l.email = ?2 AND l.title = ?3
            AND l.name = ?4 AND l.visit_id = ?5 AND l.created_at >= ?6"
    ))
    .bind(&w.phone)
    .bind(&w.email)
    .bind(&w.title)
    .bind(&w.name)
    .bind(&w.visit)
    .bind(lead.at - 12 * 3600)
    .fetch_all(&mut *conn)
    .await?;
    let mut leads = Vec::with_capacity(rows.len());
    for r in rows {
        let (id, who, at, group) = history_row(&r)?;
        leads.push(PriorLead {
            id,
            who,
            accepted_at: at,
            deal_group: group,
        });
    }
    // The client's deals (by phone, by email) and the same-lead deals,
    // each through its own index; the most recent are enough for every
    // rule, whatever the window.
    let period = if s.client.period_days == 0 {
        90
    } else {
        s.client.period_days
    };
    const COLS: &str = "SELECT id, title, name, phone, email, visit_id, created_at, grp FROM deals";
    let mut rows = Vec::new();
    if !w.phone.is_empty() {
        rows.extend(
            sqlx::query(&format!(
                "{COLS} WHERE phone = ?1 ORDER BY created_at DESC LIMIT 100"
            ))
            .bind(&w.phone)
            .fetch_all(&mut *conn)
            .await?,
        );
    }
    if !w.email.is_empty() {
        rows.extend(
            sqlx::query(&format!(
                "{COLS} WHERE email = ?1 ORDER BY created_at DESC LIMIT 100"
            ))
            .bind(&w.email)
            .fetch_all(&mut *conn)
            .await?,
        );
    }
    rows.extend(
        sqlx::query(&format!(
            "{COLS} WHERE title = ?1 AND created_at >= ?2 AND name = ?3 AND visit_id = ?4
              ORDER BY created_at DESC LIMIT 100"
        ))
        .bind(&w.title)
        .bind(lead.at - period.max(30) * DAY)
        .bind(&w.name)
        .bind(&w.visit)
        .fetch_all(&mut *conn)
        .await?,
    );
    let mut deals: Vec<Deal> = Vec::with_capacity(rows.len());
    for r in rows {
        let (id, who, created_at, group) = history_row(&r)?;
        if deals.iter().any(|d| d.id == id) {
            continue;
        }
        deals.push(Deal {
            id,
            who,
            created_at,
            group,
        });
    }
    Ok((leads, deals))
}

/// A finished call, with the lead it made.
async fn insert_call(
    conn: &mut SqliteConnection,
    r: &CallRecord,
    lead_id: i64,
) -> Result<(), StoreError> {
    let i = &r.info;
    sqlx::query(
        "INSERT INTO calls (call_id, caller_raw, caller, callee, destination, visit_id, marker,
                            source, visit, invite_at, answer_at, end_at, duration, status,
                            hangup, lead_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )
    .bind(&r.call_id)
    .bind(&i.caller_raw)
    .bind(&i.caller)
    .bind(&i.dialed)
    .bind(&i.destination)
    .bind(&i.visit_id)
    .bind(&i.marker)
    .bind(&i.source)
    .bind(serde_json::to_string(&i.visit).unwrap_or_else(|_| "{}".into()))
    .bind(r.invite_at as i64)
    .bind(r.answer_at.map(|a| a as i64))
    .bind(r.end_at as i64)
    .bind(r.duration as i64)
    .bind(r.status.as_str())
    .bind(r.hangup.map(|h| h.as_str()))
    .bind(lead_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The text a comment or task on an existing deal carries.
fn note(lead: &NewLead) -> String {
    let mut t = lead.who.title.clone();
    if !lead.text.is_empty() {
        t.push_str(": ");
        t.push_str(&lead.text);
    }
    t
}

async fn insert_lead(
    conn: &mut SqliteConnection,
    lead: &NewLead,
    kind: LeadKind,
    accepted: bool,
    deal_id: Option<i64>,
    outcome: &str,
) -> Result<i64, StoreError> {
    let w = &lead.who;
    let id = sqlx::query(
        "INSERT INTO leads (created_at, kind, title, name, phone, email, visit_id, form, dialed,
                            text, fields, call_id, accepted, deal_id, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )
    .bind(lead.at)
    .bind(kind_str(kind))
    .bind(&w.title)
    .bind(&w.name)
    .bind(&w.phone)
    .bind(&w.email)
    .bind(&w.visit)
    .bind(&lead.form)
    .bind(&lead.dialed)
    .bind(&lead.text)
    .bind(if lead.fields.is_empty() {
        "{}"
    } else {
        &lead.fields
    })
    .bind(&lead.call_id)
    .bind(accepted)
    .bind(deal_id)
    .bind(outcome)
    .execute(&mut *conn)
    .await?
    .last_insert_rowid();
    Ok(id)
}

async fn add_note(
    conn: &mut SqliteConnection,
    deal: i64,
    action: Action,
    at: i64,
    text: &str,
) -> Result<(), StoreError> {
    let sql = match action {
        Action::Comment => "INSERT INTO comments (deal_id, created_at, text) VALUES (?1, ?2, ?3)",
        Action::Task => "INSERT INTO tasks (deal_id, created_at, text) VALUES (?1, ?2, ?3)",
    };
    sqlx::query(sql)
        .bind(deal)
        .bind(at)
        .bind(text)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What the CRM sees of a lead: for calls, the visit of the call (its
/// marker, source, page, utm); for forms, the form and its fields.
fn lead_view(id: i64, new: &NewLead, call: Option<&CallRecord>) -> LeadView {
    let mut visit = std::collections::BTreeMap::new();
    let visit_id = match call {
        Some(c) => {
            let i = &c.info;
            for (k, v) in [("marker", &i.marker), ("source", &i.source)] {
                if let Some(v) = v {
                    visit.insert(k.to_string(), v.clone());
                }
            }
            visit.extend(i.visit.iter().map(|(k, v)| (k.clone(), v.clone())));
            i.visit_id.clone().unwrap_or_default()
        }
        None => {
            if !new.form.is_empty() {
                visit.insert("form".to_string(), new.form.clone());
            }
            if let Ok(serde_json::Value::Object(fields)) =
                serde_json::from_str::<serde_json::Value>(&new.fields)
            {
                for (k, v) in fields {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    visit.entry(k).or_insert(v);
                }
            }
            new.who.visit.clone()
        }
    };
    LeadView {
        id,
        title: new.who.title.clone(),
        text: new.text.clone(),
        name: new.who.name.clone(),
        phone: new.who.phone.clone(),
        email: new.who.email.clone(),
        visit_id,
        visit,
        created_at: new.at,
    }
}

fn now_ms() -> i64 {
    crate::http::unix_ms() as i64
}

/// A finished call's part of a batch: its lead, or only its start.
// Jobs live for one transaction in one Vec; boxing leads would only add
// an allocation per call.
#[allow(clippy::large_enum_variant)]
pub enum CallJob<'a> {
    Start(&'a CallStart),
    End(NewLead, &'a CallRecord),
}

async fn decide_and_record(
    conn: &mut SqliteConnection,
    new: &NewLead,
    s: &Settings,
    status: &NewDealStatus,
    call: Option<&CallRecord>,
    crm: (&Plan, &str),
) -> Result<Recorded, StoreError> {
    if let Some(r) = call {
        // Already recorded (a retry after a lost COMMIT answer): done.
        let known: Option<(i64, Option<i64>, String)> = sqlx::query_as(
            "SELECT l.id, l.deal_id, l.outcome FROM calls c JOIN leads l ON l.id = c.lead_id
              WHERE c.call_id = ?1",
        )
        .bind(&r.call_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((lead_id, deal_id, outcome)) = known {
            return Ok(Recorded {
                lead_id,
                deal_id,
                outcome,
                decision: Decision::NoDealFromCalls,
            });
        }
    }
    let kind = new.kind.unwrap_or(LeadKind::Form);
    let lead = Lead {
        kind,
        who: new.who.clone(),
        at: new.at,
    };
    let (leads, deals) = candidates(conn, &lead, s).await?;
    let decision = dedup::decide(&lead, &leads, &deals, s);
    let (lead_id, deal_id, outcome) = match &decision {
        Decision::CreateDeal { duplicate_of } => {
            let lead_id = insert_lead(conn, new, kind, true, None, "").await?;
            let w = &new.who;
            let deal_id = sqlx::query(
                "INSERT INTO deals (created_at, title, name, phone, email, visit_id, status, grp, lead_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .bind(new.at)
            .bind(&w.title)
            .bind(&w.name)
            .bind(&w.phone)
            .bind(&w.email)
            .bind(&w.visit)
            .bind(&status.status)
            .bind(status.group.as_str())
            .bind(lead_id)
            .execute(&mut *conn)
            .await?
            .last_insert_rowid();
            let mut outcome = format!("deal {deal_id} created");
            if let Some(o) = duplicate_of {
                let dup = o.describe();
                add_note(
                    conn,
                    deal_id,
                    Action::Comment,
                    new.at,
                    &format!("Duplicate: {dup}"),
                )
                .await?;
                outcome = format!("{outcome} ({dup})");
            }
            sqlx::query("UPDATE leads SET deal_id = ?1, outcome = ?2 WHERE id = ?3")
                .bind(deal_id)
                .bind(&outcome)
                .bind(lead_id)
                .execute(&mut *conn)
                .await?;
            (lead_id, Some(deal_id), outcome)
        }
        Decision::Duplicate(o) => {
            let outcome = o.describe();
            (
                insert_lead(conn, new, kind, false, None, &outcome).await?,
                None,
                outcome,
            )
        }
        Decision::Attach { deal, action } => {
            let outcome = format!("duplicate of deal {deal}");
            let id = insert_lead(conn, new, kind, false, Some(*deal), &outcome).await?;
            add_note(conn, *deal, *action, new.at, &note(new)).await?;
            (id, Some(*deal), outcome)
        }
        Decision::NoDealFromCalls => {
            let outcome = "no deal: calls create no deals".to_string();
            (
                insert_lead(conn, new, kind, false, None, &outcome).await?,
                None,
                outcome,
            )
        }
    };
    if let Some(r) = call {
        insert_call(conn, r, lead_id).await?;
    }
    let (plan, install) = crm;
    if plan.sends_anything() {
        let view = lead_view(lead_id, new, call);
        let mut items = lead_items(plan, install, &view, &decision, deal_id, call);
        items.extend(call.and_then(|c| call_end_item(plan, install, c)));
        insert_items(conn, &items, now_ms()).await?;
    }
    Ok(Recorded {
        lead_id,
        deal_id,
        outcome,
        decision,
    })
}

impl Store {
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
        let _one_at_a_time = self.decide.lock().await;
        let mut conn = self.db.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let crm = (plan, &*self.install_id);
        match decide_and_record(&mut conn, new, s, status, call, crm).await {
            Ok(r) => {
                sqlx::query("COMMIT").execute(&mut *conn).await?;
                if plan.sends_anything() {
                    self.outbox_ready.notify_one();
                }
                Ok(r)
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(e)
            }
        }
    }

    /// Call starts and finished calls with their leads, decided one after
    /// the other in one transaction: at high call rates one commit per
    /// call is the limit. One result per finished call, in order.
    pub async fn record_calls(
        &self,
        jobs: &[CallJob<'_>],
        s: &Settings,
        status: &NewDealStatus,
        plan: &Plan,
    ) -> Result<Vec<Recorded>, StoreError> {
        let _one_at_a_time = self.decide.lock().await;
        let mut conn = self.db.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let crm = (plan, &*self.install_id);
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            let done = match job {
                CallJob::End(lead, call) => {
                    decide_and_record(&mut conn, lead, s, status, Some(call), crm)
                        .await
                        .map(|r| out.push(r))
                }
                CallJob::Start(c) => {
                    let items: Vec<_> = call_start_item(plan, crm.1, c).into_iter().collect();
                    insert_items(&mut conn, &items, now_ms()).await
                }
            };
            if let Err(e) = done {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(e);
            }
        }
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        if plan.sends_anything() {
            self.outbox_ready.notify_one();
        }
        Ok(out)
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
        let _one_at_a_time = self.decide.lock().await;
        let local = id.parse::<i64>().unwrap_or(-1);
        let deal: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM deals WHERE crm_id = ?1
             UNION ALL SELECT id FROM deals WHERE id = ?2 AND crm_id IS NULL
             LIMIT 1",
        )
        .bind(id)
        .bind(local)
        .fetch_optional(&self.db)
        .await?;
        let Some(deal) = deal else {
            return Ok(None);
        };
        sqlx::query("UPDATE deals SET status = ?1, grp = ?2 WHERE id = ?3")
            .bind(status)
            .bind(group.as_str())
            .bind(deal)
            .execute(&self.db)
            .await?;
        Ok(Some(deal))
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
                "SELECT id, created_at, title, name, phone, email, visit_id, status, grp
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
