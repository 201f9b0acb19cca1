//! Lead decisions on a thread of their own (SPEC L-3 … L-6, C-5). One
//! synchronous SQLite connection (rusqlite, cached statements) takes each
//! batch of leads, calls and CRM requests and decides and records them in
//! one IMMEDIATE transaction. Async callers send a batch and await one
//! answer: one thread hop per batch, where a statement-by-statement async
//! driver made two per statement and the SIP thread paid for the context
//! switches. The thread also serialises decisions within the process; the
//! IMMEDIATE transaction extends that to processes sharing the file.

use std::path::Path;
use std::sync::mpsc;

use rusqlite::{params, Connection, OptionalExtension, Row};
use tokio::sync::oneshot;

use super::leads::{NewDealStatus, NewLead, Recorded};
use super::StoreError;
use crate::calls::CallRecord;
use crate::clock::Clock;
use crate::crm::outbox::{call_end_item, call_start_item, lead_items, CallStart, Item, Plan};
use crate::crm::payload::LeadView;
use crate::leads::dedup::{
    self, Action, Deal, Decision, Group, Identity, Lead, LeadKind, PriorLead, Settings,
};

/// One piece of a batch.
// Jobs live in one Vec per batch; boxing leads would add an allocation
// per call for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Job {
    /// A lead: a form post, or a finished call with its record.
    Lead(NewLead, Option<CallRecord>),
    /// A call's start: remembered until its record is written, and its
    /// CRM webhook if configured. `true`: seen by an earlier run (replayed
    /// from the journal), so still open means that run died during it.
    Start(CallStart, bool),
    /// A started call that turned out not to be one (challenged INVITE).
    Abandoned(String),
}

pub(super) struct Batch {
    pub jobs: std::sync::Arc<Vec<Job>>,
    pub settings: Settings,
    pub status: NewDealStatus,
    pub plan: Plan,
    /// One `Recorded` per `Job::Lead`, in order.
    pub reply: oneshot::Sender<Result<Vec<Recorded>, StoreError>>,
}

/// Opens the decision connection and starts its thread.
pub(super) fn start(
    path: &Path,
    install_id: String,
    run_id: String,
    clock: Clock,
) -> Result<mpsc::Sender<Batch>, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL is the file's mode already; NORMAL as for the pool: a commit
    // survives the process dying.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let (tx, rx) = mpsc::channel::<Batch>();
    std::thread::Builder::new()
        .name("siptrack-decide".into())
        .spawn(move || {
            let mut d = Decider {
                conn,
                install_id,
                run_id,
                clock,
            };
            while let Ok(b) = rx.recv() {
                let result = d.batch(&b.jobs, &b.settings, &b.status, &b.plan);
                // The caller may have gone (shutdown); the work is done.
                let _ = b.reply.send(result);
            }
        })
        .map_err(|e| StoreError::Thread(e.to_string()))?;
    Ok(tx)
}

struct Decider {
    conn: Connection,
    install_id: String,
    /// This process's run: its open calls are not interrupted ones.
    run_id: String,
    clock: Clock,
}

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
fn history_row(r: &Row) -> rusqlite::Result<(i64, Identity, i64, Group)> {
    Ok((
        r.get(0)?,
        Identity {
            title: r.get(1)?,
            name: r.get(2)?,
            phone: r.get(3)?,
            email: r.get(4)?,
            visit: r.get(5)?,
        },
        r.get(6)?,
        group_of(&r.get::<_, String>(7)?),
    ))
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

/// What the CRM sees of a lead: for calls, the visit of the call (its
/// marker, source, page, utm); for forms, the form and its fields.
fn lead_view(id: i64, new: &NewLead, call: Option<&CallRecord>) -> LeadView {
    let mut visit = std::collections::BTreeMap::new();
    let mut fields = std::collections::BTreeMap::new();
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
            // The visit's own data first: a form cannot overwrite where
            // the visitor came from.
            visit.extend(new.visit_data.iter().map(|(k, v)| (k.clone(), v.clone())));
            if !new.form.is_empty() {
                visit.insert("form".to_string(), new.form.clone());
            }
            if let Ok(serde_json::Value::Object(given)) =
                serde_json::from_str::<serde_json::Value>(&new.fields)
            {
                for (k, v) in given {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    fields.insert(k, v);
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
        fields,
        created_at: new.at,
    }
}

/// Remembers a call in progress until its record is written.
fn note_open_call(conn: &Connection, run_id: &str, c: &CallStart) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO open_calls (call_id, run_id, invite_at, info)
         SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM calls WHERE call_id = ?1)",
    )?
    .execute(params![
        c.call_id,
        run_id,
        c.invite_at as i64,
        serde_json::to_string(&c.info).unwrap_or_else(|_| "{}".into()),
    ])?;
    Ok(())
}

impl Decider {
    fn batch(
        &mut self,
        jobs: &[Job],
        s: &Settings,
        status: &NewDealStatus,
        plan: &Plan,
    ) -> Result<Vec<Recorded>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(jobs.len());
        let now = self.clock.unix_ms() as i64;
        for job in jobs {
            match job {
                Job::Lead(lead, call) => out.push(decide_and_record(
                    &tx,
                    lead,
                    s,
                    status,
                    call.as_ref(),
                    (plan, &self.install_id, now),
                )?),
                Job::Abandoned(call_id) => {
                    tx.prepare_cached("DELETE FROM open_calls WHERE call_id = ?1")?
                        .execute(params![call_id])?;
                }
                Job::Start(c, earlier_run) => {
                    let run = if *earlier_run {
                        "earlier"
                    } else {
                        &self.run_id
                    };
                    note_open_call(&tx, run, c)?;
                    let items: Vec<Item> = call_start_item(plan, &self.install_id, c)
                        .into_iter()
                        .collect();
                    insert_items(&tx, &items, now)?;
                }
            }
        }
        // Dropping an uncommitted transaction rolls it back (the `?`s).
        tx.commit()?;
        Ok(out)
    }
}

fn candidates(
    conn: &Connection,
    lead: &Lead,
    s: &Settings,
) -> rusqlite::Result<(Vec<PriorLead>, Vec<Deal>)> {
    let w = &lead.who;
    // Nobody to match (a withheld caller): no L-3 history to fetch, and no
    // client deals (those need a phone or an e-mail, below).
    if !dedup::identifiable(lead) {
        return Ok((Vec::new(), Vec::new()));
    }
    // The most selective index for this lead: without statistics SQLite
    // may pick the e-mail index, and most calls have no e-mail.
    let index = if !w.phone.is_empty() {
        "leads_phone"
    } else if !w.email.is_empty() {
        "leads_email"
    } else {
        "leads_created"
    };
    let (leads_since, deals_since) = dedup::history_since(lead, s);
    let mut q = conn.prepare_cached(&format!(
        "SELECT l.id, l.title, l.name, l.phone, l.email, l.visit_id, l.created_at, d.grp
           FROM leads l INDEXED BY {index} JOIN deals d ON d.id = l.deal_id
          WHERE l.accepted = 1 AND l.phone = ?1 AND l.email = ?2 AND l.title = ?3
            AND l.name = ?4 AND l.visit_id = ?5 AND l.created_at >= ?6"
    ))?;
    let leads = q
        .query_map(
            params![w.phone, w.email, w.title, w.name, w.visit, leads_since],
            history_row,
        )?
        .map(|r| {
            r.map(|(id, who, at, group)| PriorLead {
                id,
                who,
                accepted_at: at,
                deal_group: group,
            })
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // The client's deals (by phone, by email) and the same-lead deals,
    // each through its own index; the most recent are enough for every
    // rule, whatever the window.
    const COLS: &str = "SELECT id, title, name, phone, email, visit_id, created_at, grp FROM deals";
    let mut rows = Vec::new();
    if !w.phone.is_empty() {
        let mut q = conn.prepare_cached(&format!(
            "{COLS} WHERE phone = ?1 ORDER BY created_at DESC LIMIT 100"
        ))?;
        rows.extend(q.query_map(params![w.phone], history_row)?);
    }
    if !w.email.is_empty() {
        let mut q = conn.prepare_cached(&format!(
            "{COLS} WHERE email = ?1 ORDER BY created_at DESC LIMIT 100"
        ))?;
        rows.extend(q.query_map(params![w.email], history_row)?);
    }
    let mut q = conn.prepare_cached(&format!(
        "{COLS} WHERE title = ?1 AND created_at >= ?2 AND name = ?3 AND visit_id = ?4
          ORDER BY created_at DESC LIMIT 100"
    ))?;
    rows.extend(q.query_map(params![w.title, deals_since, w.name, w.visit], history_row)?);
    let mut deals: Vec<Deal> = Vec::with_capacity(rows.len());
    for r in rows {
        let (id, who, created_at, group) = r?;
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
fn insert_call(conn: &Connection, r: &CallRecord, lead_id: i64) -> rusqlite::Result<()> {
    let i = &r.info;
    conn.prepare_cached(
        "INSERT INTO calls (call_id, caller_raw, caller, callee, destination, visit_id, marker,
                            source, visit, invite_at, answer_at, end_at, duration, status,
                            hangup, lead_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        r.call_id,
        i.caller_raw,
        i.caller,
        i.dialed,
        i.destination,
        i.visit_id,
        i.marker,
        i.source,
        serde_json::to_string(&i.visit).unwrap_or_else(|_| "{}".into()),
        r.invite_at as i64,
        r.answer_at.map(|a| a as i64),
        r.end_at as i64,
        r.duration as i64,
        r.status.as_str(),
        r.hangup.map(|h| h.as_str()),
        lead_id,
    ])?;
    Ok(())
}

fn insert_lead(
    conn: &Connection,
    lead: &NewLead,
    kind: LeadKind,
    accepted: bool,
    deal_id: Option<i64>,
    outcome: &str,
) -> rusqlite::Result<i64> {
    let w = &lead.who;
    conn.prepare_cached(
        "INSERT INTO leads (created_at, kind, title, name, phone, email, visit_id, form, dialed,
                            text, fields, call_id, accepted, deal_id, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        lead.at,
        kind_str(kind),
        w.title,
        w.name,
        w.phone,
        w.email,
        w.visit,
        lead.form,
        lead.dialed,
        lead.text,
        if lead.fields.is_empty() {
            "{}"
        } else {
            &lead.fields
        },
        lead.call_id,
        accepted,
        deal_id,
        outcome,
    ])?;
    Ok(conn.last_insert_rowid())
}

fn add_note(
    conn: &Connection,
    deal: i64,
    action: Action,
    at: i64,
    text: &str,
) -> rusqlite::Result<()> {
    let sql = match action {
        Action::Comment => "INSERT INTO comments (deal_id, created_at, text) VALUES (?1, ?2, ?3)",
        Action::Task => "INSERT INTO tasks (deal_id, created_at, text) VALUES (?1, ?2, ?3)",
    };
    conn.prepare_cached(sql)?.execute(params![deal, at, text])?;
    Ok(())
}

/// Writes CRM requests (C-5) in the caller's transaction.
fn insert_items(conn: &Connection, items: &[Item], now_ms: i64) -> rusqlite::Result<()> {
    for i in items {
        // OR IGNORE: a call recorded again after a lost COMMIT answer
        // must not queue its webhook twice.
        conn.prepare_cached(
            "INSERT OR IGNORE INTO outbox (created_at, target, idempotency_key, order_key, event,
                                           lead_id, deal_ref, body, next_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?1)",
        )?
        .execute(params![
            now_ms,
            i.target.as_str(),
            i.key,
            i.order_key,
            i.event.map(|e| e.as_str()).unwrap_or(""),
            i.lead_id,
            i.deal_ref,
            i.body.to_string(),
        ])?;
    }
    Ok(())
}

fn decide_and_record(
    conn: &Connection,
    new: &NewLead,
    s: &Settings,
    status: &NewDealStatus,
    call: Option<&CallRecord>,
    crm: (&Plan, &str, i64),
) -> rusqlite::Result<Recorded> {
    if let Some(r) = call {
        // Already recorded (a retry after a lost COMMIT answer): done.
        let known: Option<(i64, Option<i64>, String)> = conn
            .prepare_cached(
                "SELECT l.id, l.deal_id, l.outcome FROM calls c JOIN leads l ON l.id = c.lead_id
                  WHERE c.call_id = ?1",
            )?
            .query_row(params![r.call_id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
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
    let (leads, deals) = candidates(conn, &lead, s)?;
    let decision = dedup::decide(&lead, &leads, &deals, s);
    let (lead_id, deal_id, outcome) = match &decision {
        Decision::CreateDeal { duplicate_of } => {
            let lead_id = insert_lead(conn, new, kind, true, None, "")?;
            let w = &new.who;
            conn.prepare_cached(
                "INSERT INTO deals (created_at, title, name, phone, email, visit_id, status, grp, lead_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                new.at,
                w.title,
                w.name,
                w.phone,
                w.email,
                w.visit,
                status.status,
                status.group.as_str(),
                lead_id,
            ])?;
            let deal_id = conn.last_insert_rowid();
            let mut outcome = format!("deal {deal_id} created");
            if let Some(o) = duplicate_of {
                let dup = o.describe();
                add_note(
                    conn,
                    deal_id,
                    Action::Comment,
                    new.at,
                    &format!("Duplicate: {dup}"),
                )?;
                outcome = format!("{outcome} ({dup})");
            }
            conn.prepare_cached("UPDATE leads SET deal_id = ?1, outcome = ?2 WHERE id = ?3")?
                .execute(params![deal_id, outcome, lead_id])?;
            (lead_id, Some(deal_id), outcome)
        }
        Decision::Duplicate(o) => {
            let outcome = o.describe();
            (
                insert_lead(conn, new, kind, false, None, &outcome)?,
                None,
                outcome,
            )
        }
        Decision::Attach { deal, action } => {
            let outcome = format!("duplicate of deal {deal}");
            let id = insert_lead(conn, new, kind, false, Some(*deal), &outcome)?;
            add_note(conn, *deal, *action, new.at, &note(new))?;
            (id, Some(*deal), outcome)
        }
        Decision::NoDealFromCalls => {
            let outcome = "no deal: calls create no deals".to_string();
            (
                insert_lead(conn, new, kind, false, None, &outcome)?,
                None,
                outcome,
            )
        }
    };
    if let Some(r) = call {
        insert_call(conn, r, lead_id)?;
        conn.prepare_cached("DELETE FROM open_calls WHERE call_id = ?1")?
            .execute(params![r.call_id])?;
    }
    let (plan, install, now) = crm;
    if plan.sends_anything() {
        let view = lead_view(lead_id, new, call);
        let mut items = lead_items(plan, install, &view, &decision, deal_id, call);
        items.extend(call.and_then(|c| call_end_item(plan, install, c)));
        insert_items(conn, &items, now)?;
    }
    Ok(Recorded {
        lead_id,
        deal_id,
        outcome,
        decision,
    })
}
