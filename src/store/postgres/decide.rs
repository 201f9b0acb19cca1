//! Lead decisions in PostgreSQL (SPEC L-3 … L-6, C-5) when several nodes
//! share the database. A batch is decided and recorded in one transaction
//! (`store/record.rs` over `PgLedger`). Before it reads any history, the
//! transaction takes `pg_advisory_xact_lock` on every client the batch
//! names (`lock_keys`: its normalised phone, its e-mail, and the lead
//! itself for the same-lead check), in one order, so two nodes deciding
//! leads of one client take turns and the second sees the first's deal
//! (READ COMMITTED: each statement reads what is committed when it runs).
//! The unique constraints on calls and leads by Call-ID are the backstop:
//! a call recorded twice fails, and the retry finds it recorded.
//! Serialization failures, deadlocks and unique violations are retried.

use postgres::error::SqlState;
use postgres::Transaction;
use sha2::{Digest, Sha256};

use super::pool::{Conn, Statements};
use super::PgStore;
use crate::calls::CallRecord;
use crate::crm::local::DealBook;
use crate::crm::outbox::{CallStart, Item, Plan};
use crate::leads::dedup::{
    self, same_lead_deals_needed, Action, Deal, Group, Identity, Lead, LeadKind, PriorLead,
    Settings,
};
use crate::store::leads::{Job, NewDealStatus, NewLead, Recorded};
use crate::store::record::{record_batch, Context, KnownCall, Ledger};
use crate::store::StoreError;

/// Attempts of one batch before its error is returned (the journal then
/// keeps it).
const ATTEMPTS: usize = 5;

/// The advisory lock keys of a batch, sorted and without repeats: one for
/// each phone, each e-mail and each lead identity it decides on. A key is
/// the first 8 bytes of a SHA-256 of what it names, the same on every
/// node.
pub(crate) fn lock_keys(jobs: &[Job]) -> Vec<i64> {
    let key = |what: &str, parts: &[&str]| {
        let mut h = Sha256::new();
        h.update(what.as_bytes());
        for p in parts {
            h.update([0u8]);
            h.update(p.as_bytes());
        }
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        i64::from_be_bytes(b)
    };
    let mut keys = Vec::new();
    for job in jobs {
        let Job::Lead(new, _) = job else { continue };
        let lead = Lead {
            kind: new.kind.unwrap_or(LeadKind::Form),
            who: new.who.clone(),
            at: new.at,
        };
        if !dedup::identifiable(&lead) {
            continue;
        }
        let w = &new.who;
        if !w.phone.is_empty() {
            keys.push(key("phone", &[&w.phone]));
        }
        if !w.email.is_empty() {
            keys.push(key("email", &[&w.email]));
        }
        keys.push(key("lead", &[&w.title, &w.name, &w.visit]));
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Errors worth running the batch again for.
fn retryable(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::UNIQUE_VIOLATION
    })
}

impl PgStore {
    /// Call starts and finished calls with their leads, decided one after
    /// the other in one transaction. One result per lead job, in order.
    pub async fn record_calls(
        &self,
        jobs: std::sync::Arc<Vec<Job>>,
        s: &Settings,
        status: &NewDealStatus,
        plan: &Plan,
    ) -> Result<Vec<Recorded>, StoreError> {
        let (s, status, plan) = (s.clone(), status.clone(), plan.clone());
        let (install_id, run_id, earlier_run_id, clock) = (
            self.install_id.clone(),
            self.run_id.clone(),
            self.earlier_run_id.clone(),
            self.clock.clone(),
        );
        let keys = lock_keys(&jobs);
        self.with(move |conn| {
            let mut tries = 0;
            loop {
                tries += 1;
                let cx = Context {
                    settings: &s,
                    status: &status,
                    plan: &plan,
                    install_id: &install_id,
                    run_id: &run_id,
                    earlier_run_id: &earlier_run_id,
                    now_ms: clock.unix_ms() as i64,
                };
                match record_once(conn, &jobs, &keys, &cx) {
                    Err(e) if tries < ATTEMPTS && retryable(&e) => {
                        tracing::debug!(error = %e, tries, "decision batch retried");
                        std::thread::sleep(std::time::Duration::from_millis(
                            5 * tries as u64 + fastrand::u64(..10),
                        ));
                    }
                    done => return done,
                }
            }
        })
        .await
    }
}

fn record_once(
    conn: &mut Conn,
    jobs: &[Job],
    keys: &[i64],
    cx: &Context,
) -> Result<Vec<Recorded>, postgres::Error> {
    let Conn { client, statements } = conn;
    let mut tx = client.transaction()?;
    if !keys.is_empty() {
        // In key order (every node sorts alike), so two batches cannot
        // wait for each other.
        tx.execute(
            "SELECT count(pg_advisory_xact_lock(k))
               FROM (SELECT k FROM unnest($1::bigint[]) AS k ORDER BY k) AS keys",
            &[&keys],
        )?;
    }
    let out = record_batch(
        &mut PgLedger {
            tx: &mut tx,
            st: statements,
        },
        jobs,
        cx,
    )?;
    tx.commit()?;
    Ok(out)
}

/// The decision's reads and writes in the batch's transaction.
struct PgLedger<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    st: &'a mut Statements,
}

impl PgLedger<'_, '_> {
    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let s = self.st.get(self.tx, sql)?;
        self.tx.execute(&s, params)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, postgres::Error> {
        let s = self.st.get(self.tx, sql)?;
        self.tx.query(&s, params)
    }

    fn insert_returning_id(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<i64, postgres::Error> {
        let s = self.st.get(self.tx, sql)?;
        Ok(self.tx.query_one(&s, params)?.get(0))
    }
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
fn history_row(r: &postgres::Row) -> (i64, Identity, i64, Group) {
    (
        r.get(0),
        Identity {
            title: r.get(1),
            name: r.get(2),
            phone: r.get(3),
            email: r.get(4),
            visit: r.get(5),
        },
        r.get(6),
        group_of(r.get(7)),
    )
}

impl DealBook for PgLedger<'_, '_> {
    type Error = postgres::Error;

    fn insert_deal(
        &mut self,
        new: &NewLead,
        status: &NewDealStatus,
        lead_id: i64,
    ) -> Result<i64, postgres::Error> {
        let w = &new.who;
        self.insert_returning_id(
            "INSERT INTO deals (created_at, title, name, phone, email, visit_id, status, grp, lead_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            &[
                &new.at,
                &w.title,
                &w.name,
                &w.phone,
                &w.email,
                &w.visit,
                &status.status,
                &status.group.as_str(),
                &lead_id,
            ],
        )
    }

    fn add_note(
        &mut self,
        deal: i64,
        action: Action,
        at: i64,
        text: &str,
        call: Option<&str>,
    ) -> Result<(), postgres::Error> {
        let sql = match action {
            Action::Comment => {
                "INSERT INTO comments (deal_id, created_at, text, call_id) VALUES ($1, $2, $3, $4)"
            }
            Action::Task => {
                "INSERT INTO tasks (deal_id, created_at, text, call_id) VALUES ($1, $2, $3, $4)"
            }
        };
        self.execute(sql, &[&deal, &at, &text, &call])?;
        Ok(())
    }
}

impl Ledger for PgLedger<'_, '_> {
    fn recorded_call(&mut self, call_id: &str) -> Result<Option<KnownCall>, postgres::Error> {
        let rows = self.query(
            "SELECT l.id, l.deal_id, l.outcome, c.invite_at FROM calls c
                JOIN leads l ON l.id = c.lead_id
              WHERE c.call_id = $1",
            &[&call_id],
        )?;
        Ok(rows
            .first()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))))
    }

    fn history(
        &mut self,
        lead: &Lead,
        leads_since: i64,
        deals_since: i64,
    ) -> Result<(Vec<PriorLead>, Vec<Deal>), postgres::Error> {
        let w = &lead.who;
        let leads = self
            .query(
                "SELECT l.id, l.title, l.name, l.phone, l.email, l.visit_id, l.created_at, d.grp, d.id
                   FROM leads l JOIN deals d ON d.id = l.deal_id
                  WHERE l.accepted AND l.phone = $1 AND l.email = $2 AND l.title = $3
                    AND l.name = $4 AND l.visit_id = $5 AND l.created_at >= $6",
                &[
                    &w.phone,
                    &w.email,
                    &w.title,
                    &w.name,
                    &w.visit,
                    &leads_since,
                ],
            )?
            .iter()
            .map(|r| (history_row(r), r.get(8)))
            .map(|((id, who, at, group), deal)| PriorLead {
                id,
                who,
                accepted_at: at,
                deal_group: group,
                deal,
            })
            .collect();
        // The client's deals (by phone, by e-mail) and the same-lead
        // deals, each through its own index; the most recent are enough
        // for every rule, whatever the window.
        let mut rows = Vec::new();
        let (mut by_phone, mut by_email) = (0, 0);
        if !w.phone.is_empty() {
            let found = self.query(
                "SELECT id, title, name, phone, email, visit_id, created_at, grp FROM deals
                  WHERE phone = $1 ORDER BY created_at DESC LIMIT 100",
                &[&w.phone],
            )?;
            by_phone = found.len();
            rows.extend(found);
        }
        if !w.email.is_empty() {
            let found = self.query(
                "SELECT id, title, name, phone, email, visit_id, created_at, grp FROM deals
                  WHERE email = $1 ORDER BY created_at DESC LIMIT 100",
                &[&w.email],
            )?;
            by_email = found.len();
            rows.extend(found);
        }
        // A round trip less per lead with a phone or an e-mail.
        if same_lead_deals_needed(&w.phone, &w.email, by_phone, by_email) {
            rows.extend(self.query(
                "SELECT id, title, name, phone, email, visit_id, created_at, grp FROM deals
                  WHERE title = $1 AND created_at >= $2 AND name = $3 AND visit_id = $4
                  ORDER BY created_at DESC LIMIT 100",
                &[&w.title, &deals_since, &w.name, &w.visit],
            )?);
        }
        let mut deals: Vec<Deal> = Vec::with_capacity(rows.len());
        for r in &rows {
            let (id, who, created_at, group) = history_row(r);
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

    fn insert_lead(
        &mut self,
        lead: &NewLead,
        kind: LeadKind,
        accepted: bool,
        deal_id: Option<i64>,
        outcome: &str,
    ) -> Result<i64, postgres::Error> {
        let w = &lead.who;
        let fields = if lead.fields.is_empty() {
            "{}"
        } else {
            lead.fields.as_str()
        };
        self.insert_returning_id(
            "INSERT INTO leads (created_at, kind, title, name, phone, email, visit_id, form, dialed,
                                text, fields, call_id, accepted, deal_id, outcome, visit_channel,
                                name_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
             RETURNING id",
            &[
                &lead.at,
                &kind_str(kind),
                &w.title,
                &w.name,
                &w.phone,
                &w.email,
                &w.visit,
                &lead.form,
                &lead.dialed,
                &lead.text,
                &fields,
                &lead.call_id,
                &accepted,
                &deal_id,
                &outcome,
                &lead.channel(),
                &crate::store::query::name_key(&w.name),
            ],
        )
    }

    fn set_lead_deal(
        &mut self,
        lead_id: i64,
        deal: i64,
        outcome: &str,
    ) -> Result<(), postgres::Error> {
        self.execute(
            "UPDATE leads SET deal_id = $1, outcome = $2 WHERE id = $3",
            &[&deal, &outcome, &lead_id],
        )?;
        Ok(())
    }

    fn insert_call(
        &mut self,
        r: &CallRecord,
        lead_id: i64,
        recording_base: &str,
    ) -> Result<(), postgres::Error> {
        let i = &r.info;
        let visit = serde_json::to_string(&i.visit).unwrap_or_else(|_| "{}".into());
        let dtmf = serde_json::to_string(&r.dtmf).unwrap_or_else(|_| "[]".into());
        self.execute(
            "INSERT INTO calls (call_id, caller_raw, caller, callee, destination, visit_id, marker,
                                source, visit, invite_at, answer_at, end_at, duration, status,
                                hangup, lead_id, recording, recording_reason, dtmf,
                                recording_base)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                     $17, $18, $19, $20)",
            &[
                &r.call_id,
                &i.caller_raw.as_str(),
                &i.caller.as_str(),
                &i.dialed.as_str(),
                &i.destination.as_str(),
                &i.visit_id.as_deref(),
                &i.marker.as_deref(),
                &i.source.as_deref(),
                &visit,
                &(r.invite_at as i64),
                &r.answer_at.map(|a| a as i64),
                &(r.end_at as i64),
                &(r.duration as i64),
                &r.status.as_str(),
                &r.hangup.map(|h| h.as_str()),
                &lead_id,
                &r.recording.state(),
                &r.recording.reason().unwrap_or(""),
                &dtmf,
                &recording_base,
            ],
        )?;
        Ok(())
    }

    fn open_call(&mut self, run_id: &str, c: &CallStart) -> Result<(), postgres::Error> {
        let info = serde_json::to_string(&c.info).unwrap_or_else(|_| "{}".into());
        self.execute(
            "INSERT INTO open_calls (call_id, run_id, invite_at, info)
             SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM calls WHERE call_id = $1)
             ON CONFLICT (call_id) DO NOTHING",
            &[&c.call_id, &run_id, &(c.invite_at as i64), &info],
        )?;
        Ok(())
    }

    fn answer_call(
        &mut self,
        call_id: &str,
        answer_at: i64,
        dialog: Option<&str>,
    ) -> Result<(), postgres::Error> {
        self.execute(
            "UPDATE open_calls SET answer_at = $2, dialog = $3 WHERE call_id = $1",
            &[&call_id, &answer_at, &dialog],
        )?;
        Ok(())
    }

    fn forget_call(&mut self, call_id: &str) -> Result<(), postgres::Error> {
        self.execute("DELETE FROM open_calls WHERE call_id = $1", &[&call_id])?;
        Ok(())
    }

    fn keep_dialog(&mut self, call_id: &str, now_ms: i64) -> Result<(), postgres::Error> {
        self.execute(
            "UPDATE open_calls SET recorded_at = $2
              WHERE call_id = $1 AND dialog IS NOT NULL AND answer_at IS NOT NULL",
            &[&call_id, &now_ms],
        )?;
        self.execute(
            "DELETE FROM open_calls WHERE call_id = $1 AND recorded_at IS NULL",
            &[&call_id],
        )?;
        Ok(())
    }

    fn queue(&mut self, items: &[Item], now_ms: i64) -> Result<(), postgres::Error> {
        for i in items {
            // A call recorded again after a lost COMMIT answer must not
            // queue its webhook twice.
            self.execute(
                "INSERT INTO outbox (created_at, target, idempotency_key, order_key, event,
                                     lead_id, deal_ref, body, next_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $1)
                 ON CONFLICT (idempotency_key) DO NOTHING",
                &[
                    &now_ms,
                    &i.target.as_str(),
                    &i.key,
                    &i.order_key,
                    &i.event.map(|e| e.as_str()).unwrap_or(""),
                    &i.lead_id,
                    &i.deal_ref,
                    &i.body.to_string(),
                ],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(kind: LeadKind, phone: &str, email: &str, visit: &str) -> Job {
        Job::Lead(
            NewLead {
                kind: Some(kind),
                who: Identity {
                    title: "t".into(),
                    name: "n".into(),
                    phone: phone.into(),
                    email: email.into(),
                    visit: visit.into(),
                },
                ..NewLead::default()
            },
            None,
        )
    }

    #[test]
    fn a_batch_locks_each_client_once_in_one_order() {
        use LeadKind::*;
        for (jobs, n) in [
            (vec![lead(Call, "7916", "", "")], 2),
            (vec![lead(Form, "7916", "a@b", "")], 3),
            // A withheld caller names nobody: nothing to lock.
            (vec![lead(Call, "", "", "")], 0),
            (vec![lead(Form, "", "", "v1")], 1),
            (
                vec![
                    lead(Call, "7916", "", ""),
                    lead(Call, "7916", "", ""),
                    Job::Abandoned("x".into()),
                ],
                2,
            ),
        ] {
            let keys = lock_keys(&jobs);
            assert_eq!(keys.len(), n, "{jobs:?}");
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
        }
        // The phone's key does not depend on the rest of the lead: two
        // leads of one caller from different forms wait for each other.
        let a = lock_keys(&[lead(Form, "7916", "", "v1")]);
        let b = lock_keys(&[lead(Form, "7916", "x@y", "v2")]);
        assert!(a.iter().any(|k| b.contains(k)));
    }
}
