//! A store in memory: the same rows and the same recording code
//! (`record.rs`) as SQLite, over plain maps under one lock. Replay and
//! tests use it so they run without a disk; nothing survives the process.
//! Every change of a batch happens under the lock and none can fail, so
//! a batch is recorded whole, as in a transaction.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use super::leads::{Job, NewDealStatus, NewLead, Recorded};
use super::outbox::{DueItem, Settle, CLOCK_STEP_MS, KEEP_DONE_MS};
use super::query::LeadQuery;
use super::record::{record_batch, Context, KnownCall, Ledger};
use super::rows::{CallRow, DealRow, LeadRow, NoteCall, NoteRow, OutboxRow, PendingCrm};
use super::StoreError;
use crate::calls::{AdoptedCall, CallInfo, CallRecord};
use crate::clock::Clock;
use crate::crm::local::DealBook;
use crate::crm::metrics::Depth;
use crate::crm::outbox::{CallStart, Item, Plan, Target};
use crate::leads::dedup::{Action, Deal, Group, Identity, Lead, LeadKind, PriorLead, Settings};
use crate::tracking::pools::AssignmentRow;

/// This process's run; calls of `Job::Start(_, true)` are an earlier one's.
const RUN_ID: &str = "this-run";

#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    install_id: Arc<str>,
    /// Random per store: links die with it, as its calls do.
    link_key: Arc<[u8]>,
    clock: Clock,
}

struct StoredLead {
    row: LeadRow,
    /// `NewLead::channel`.
    channel: String,
    /// It created a deal: the 12-hour check (L-3) looks at these.
    accepted: bool,
}

struct StoredItem {
    row: OutboxRow,
    order_key: String,
    /// In flight: (the node holding it, until when in Unix ms).
    claim: Option<(String, i64)>,
    /// Queued, last claimed or rescheduled (Unix ms; `CLOCK_STEP_MS`).
    touched_at: i64,
}

#[derive(Default)]
struct State {
    /// Ids are positions + 1, as SQLite's rowids would be.
    leads: Vec<StoredLead>,
    deals: Vec<DealRow>,
    calls: Vec<CallRow>,
    /// call id -> (run, invite_at in ms, what the call is).
    open_calls: BTreeMap<String, (String, i64, CallInfo)>,
    /// Open calls that were answered: (answer_at, dialog JSON when
    /// dialogs are shared).
    answered: BTreeMap<String, (i64, Option<String>)>,
    /// Recorded interrupted calls whose dialog is kept: when recorded.
    kept: BTreeMap<String, i64>,
    outbox: BTreeMap<i64, StoredItem>,
    next_item: i64,
    keys: HashSet<String>,
    assignments: BTreeMap<String, AssignmentRow>,
}

fn group_of(s: &str) -> Group {
    Group::parse(s).unwrap_or(Group::NotCounted)
}

fn identity_of_deal(d: &DealRow) -> Identity {
    Identity {
        title: d.title.clone(),
        name: d.name.clone(),
        phone: d.phone.clone(),
        email: d.email.clone(),
        visit: d.visit_id.clone(),
    }
}

fn identity_of_lead(l: &LeadRow) -> Identity {
    Identity {
        title: l.title.clone(),
        name: l.name.clone(),
        phone: l.phone.clone(),
        email: l.email.clone(),
        visit: l.visit_id.clone(),
    }
}

/// Newest first, at most `limit`.
fn page<T>(it: impl DoubleEndedIterator<Item = T>, limit: i64) -> Vec<T> {
    it.rev().take(limit.max(0) as usize).collect()
}

/// Each lead's call, by lead id.
fn calls_by_lead(calls: &[CallRow]) -> std::collections::HashMap<i64, &CallRow> {
    calls.iter().filter_map(|c| Some((c.lead_id?, c))).collect()
}

/// The channel `l` counts for, as `query::CHANNEL_OF_LEAD` says: its
/// own, else its call's marker, else its call's source, else its visit
/// column.
fn channel_of<'a>(
    l: &'a StoredLead,
    calls: &std::collections::HashMap<i64, &'a CallRow>,
) -> &'a str {
    let own = Some(l.channel.as_str()).filter(|c| !c.is_empty());
    own.or_else(|| {
        calls.get(&l.row.id).and_then(|c| {
            c.marker
                .as_deref()
                .filter(|m| !m.is_empty())
                .or(c.source.as_deref().filter(|s| !s.is_empty()))
        })
    })
    .unwrap_or(&l.row.visit_id)
}

impl DealBook for State {
    type Error = Infallible;

    fn insert_deal(
        &mut self,
        lead: &NewLead,
        status: &NewDealStatus,
        _lead_id: i64,
    ) -> Result<i64, Infallible> {
        let id = self.deals.len() as i64 + 1;
        let w = &lead.who;
        self.deals.push(DealRow {
            id,
            created_at: lead.at,
            title: w.title.clone(),
            name: w.name.clone(),
            phone: w.phone.clone(),
            email: w.email.clone(),
            visit_id: w.visit.clone(),
            status: status.status.clone(),
            group: status.group.as_str().into(),
            crm_id: None,
            tasks: Vec::new(),
            comments: Vec::new(),
        });
        Ok(id)
    }

    fn add_note(
        &mut self,
        deal: i64,
        action: Action,
        at: i64,
        text: &str,
        call: Option<&str>,
    ) -> Result<(), Infallible> {
        if let Some(d) = self.deals.get_mut((deal - 1) as usize) {
            // The call's recording is read when the deal is listed.
            let note = NoteRow {
                created_at: at,
                text: text.into(),
                call: call.map(|c| NoteCall {
                    call_id: c.into(),
                    recording: Default::default(),
                    end_at: 0,
                    recording_base: String::new(),
                }),
            };
            match action {
                Action::Comment => d.comments.push(note),
                Action::Task => d.tasks.push(note),
            }
        }
        Ok(())
    }
}

impl Ledger for State {
    fn recorded_call(&mut self, call_id: &str) -> Result<Option<KnownCall>, Infallible> {
        let Some(call) = self.calls.iter().find(|c| c.call_id == call_id) else {
            return Ok(None);
        };
        let lead = call
            .lead_id
            .and_then(|id| self.leads.get((id - 1) as usize));
        Ok(lead.map(|l| {
            (
                l.row.id,
                l.row.deal_id,
                l.row.decision.clone(),
                call.invite_at,
            )
        }))
    }

    fn history(
        &mut self,
        lead: &Lead,
        leads_since: i64,
        deals_since: i64,
    ) -> Result<(Vec<PriorLead>, Vec<Deal>), Infallible> {
        let w = &lead.who;
        let deal_group = |id: i64| {
            self.deals
                .get((id - 1) as usize)
                .map(|d| group_of(&d.group))
        };
        let leads = self
            .leads
            .iter()
            .filter(|l| l.accepted && l.row.created_at >= leads_since)
            .filter(|l| identity_of_lead(&l.row) == *w)
            .filter_map(|l| {
                let deal = l.row.deal_id?;
                Some(PriorLead {
                    id: l.row.id,
                    who: identity_of_lead(&l.row),
                    accepted_at: l.row.created_at,
                    deal_group: deal_group(deal)?,
                    deal,
                })
            })
            .collect();
        let deals = self
            .deals
            .iter()
            .filter(|d| {
                (!w.phone.is_empty() && d.phone == w.phone)
                    || (!w.email.is_empty() && d.email == w.email)
                    || (d.title == w.title
                        && d.name == w.name
                        && d.visit_id == w.visit
                        && d.created_at >= deals_since)
            })
            .map(|d| Deal {
                id: d.id,
                who: identity_of_deal(d),
                created_at: d.created_at,
                group: group_of(&d.group),
            })
            .collect();
        Ok((leads, deals))
    }

    fn insert_lead(
        &mut self,
        lead: &NewLead,
        kind: LeadKind,
        accepted: bool,
        deal_id: Option<i64>,
        outcome: &str,
    ) -> Result<i64, Infallible> {
        let id = self.leads.len() as i64 + 1;
        let w = &lead.who;
        self.leads.push(StoredLead {
            row: LeadRow {
                id,
                created_at: lead.at,
                kind: match kind {
                    LeadKind::Call => "call",
                    LeadKind::Form => "form",
                }
                .into(),
                form: lead.form.clone(),
                dialed: lead.dialed.clone(),
                title: w.title.clone(),
                name: w.name.clone(),
                phone: w.phone.clone(),
                email: w.email.clone(),
                visit_id: w.visit.clone(),
                // Worked out when read: the call's row may come later.
                channel: String::new(),
                text: lead.text.clone(),
                decision: outcome.into(),
                deal_id,
                pending: None,
            },
            channel: lead.channel().to_string(),
            accepted,
        });
        Ok(id)
    }

    fn set_lead_deal(&mut self, lead_id: i64, deal: i64, outcome: &str) -> Result<(), Infallible> {
        if let Some(l) = self.leads.get_mut((lead_id - 1) as usize) {
            l.row.deal_id = Some(deal);
            l.row.decision = outcome.into();
        }
        Ok(())
    }

    fn insert_call(
        &mut self,
        r: &CallRecord,
        lead_id: i64,
        recording_base: &str,
    ) -> Result<(), Infallible> {
        let i = &r.info;
        self.calls.push(CallRow {
            call_id: r.call_id.clone(),
            caller: i.caller.to_string(),
            caller_raw: i.caller_raw.to_string(),
            callee: i.dialed.to_string(),
            destination: i.destination.to_string(),
            visit_id: i.visit_id.as_deref().map(str::to_string),
            marker: i.marker.as_deref().map(str::to_string),
            source: i.source.as_deref().map(str::to_string),
            visit: i.visit.to_map(),
            invite_at: r.invite_at as i64,
            answer_at: r.answer_at.map(|a| a as i64),
            end_at: r.end_at as i64,
            duration: r.duration as i64,
            status: r.status.as_str().into(),
            hangup: r.hangup.map(|h| h.as_str().into()),
            lead_id: Some(lead_id),
            recording: r.recording.clone(),
            recording_base: recording_base.into(),
            dtmf: r.dtmf.clone(),
        });
        Ok(())
    }

    fn open_call(&mut self, run_id: &str, c: &CallStart) -> Result<(), Infallible> {
        if !self.calls.iter().any(|r| r.call_id == c.call_id) {
            self.open_calls
                .entry(c.call_id.clone())
                .or_insert_with(|| (run_id.to_string(), c.invite_at as i64, c.info.clone()));
        }
        Ok(())
    }

    fn answer_call(
        &mut self,
        call_id: &str,
        answer_at: i64,
        dialog: Option<&str>,
    ) -> Result<(), Infallible> {
        if self.open_calls.contains_key(call_id) {
            self.answered
                .insert(call_id.to_string(), (answer_at, dialog.map(String::from)));
        }
        Ok(())
    }

    fn forget_call(&mut self, call_id: &str) -> Result<(), Infallible> {
        self.open_calls.remove(call_id);
        self.answered.remove(call_id);
        self.kept.remove(call_id);
        Ok(())
    }

    fn keep_dialog(&mut self, call_id: &str, now_ms: i64) -> Result<(), Infallible> {
        if matches!(self.answered.get(call_id), Some((_, Some(_)))) {
            self.kept.insert(call_id.to_string(), now_ms);
            Ok(())
        } else {
            self.forget_call(call_id)
        }
    }

    fn queue(&mut self, items: &[Item], now_ms: i64) -> Result<(), Infallible> {
        for i in items {
            // As SQLite's OR IGNORE: a key queued once is never queued again.
            if !self.keys.insert(i.key.clone()) {
                continue;
            }
            self.next_item += 1;
            let id = self.next_item;
            self.outbox.insert(
                id,
                StoredItem {
                    row: OutboxRow {
                        id,
                        created_at: now_ms,
                        target: i.target.as_str().into(),
                        idempotency_key: i.key.clone(),
                        event: i.event.map(|e| e.as_str()).unwrap_or("").into(),
                        lead_id: i.lead_id,
                        deal_ref: i.deal_ref,
                        state: "pending".into(),
                        attempts: 0,
                        next_at: now_ms,
                        last_error: String::new(),
                        done_at: None,
                        body: i.body.to_string(),
                    },
                    order_key: i.order_key.clone(),
                    claim: None,
                    touched_at: now_ms,
                },
            );
        }
        Ok(())
    }
}

impl MemoryStore {
    pub fn new(clock: Clock) -> MemoryStore {
        let install_id: String = (0..12)
            .map(|_| char::from(b"0123456789abcdef"[fastrand::usize(..16)]))
            .collect();
        MemoryStore {
            state: Default::default(),
            install_id: install_id.into(),
            link_key: (0..32)
                .map(|_| fastrand::u8(..))
                .collect::<Vec<u8>>()
                .into(),
            clock,
        }
    }

    pub fn install_id(&self) -> &Arc<str> {
        &self.install_id
    }

    pub fn link_key(&self) -> &Arc<[u8]> {
        &self.link_key
    }

    /// The record of one call, if it ended.
    pub async fn find_call(&self, call_id: &str) -> Result<Option<CallRow>, StoreError> {
        Ok(self
            .state()?
            .calls
            .iter()
            .find(|c| c.call_id == call_id)
            .cloned())
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::Thread("the memory store's lock is poisoned".into()))
    }

    pub async fn record_calls(
        &self,
        jobs: Arc<Vec<Job>>,
        s: &Settings,
        status: &NewDealStatus,
        plan: &Plan,
    ) -> Result<Vec<Recorded>, StoreError> {
        let cx = Context {
            settings: s,
            status,
            plan,
            install_id: &self.install_id,
            run_id: RUN_ID,
            earlier_run_id: "earlier",
            now_ms: self.clock.unix_ms() as i64,
        };
        let mut state = self.state()?;
        match record_batch(&mut *state, &jobs, &cx) {
            Ok(done) => Ok(done),
            Err(never) => match never {},
        }
    }

    pub async fn interrupted_calls(
        &self,
        keep_dialogs_ms: u64,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let kept_since = self.clock.unix_ms().saturating_sub(keep_dialogs_ms) as i64;
        let mut state = self.state()?;
        let expired: Vec<String> = state
            .kept
            .iter()
            .filter(|(_, at)| **at < kept_since)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let _ = state.forget_call(&id);
        }
        let mut open: Vec<_> = state
            .open_calls
            .iter()
            .filter(|(id, (run, _, _))| run != RUN_ID && !state.kept.contains_key(*id))
            .map(|(id, (_, at, info))| {
                let answer_at = state.answered.get(id).map(|&(a, _)| a.max(0) as u64);
                (*at, id.clone(), info.clone(), answer_at)
            })
            .collect();
        open.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Ok(open
            .into_iter()
            .map(|(at, id, info, answer_at)| {
                CallRecord::interrupted(id, info, at.max(0) as u64, answer_at)
            })
            .collect())
    }

    /// An answered call still open, with its dialog.
    pub async fn open_dialog(&self, call_id: &str) -> Result<Option<AdoptedCall>, StoreError> {
        let state = self.state()?;
        let (Some((_, invite_at, info)), Some((answer_at, Some(dialog)))) =
            (state.open_calls.get(call_id), state.answered.get(call_id))
        else {
            return Ok(None);
        };
        let info = serde_json::to_string(info).unwrap_or_default();
        Ok(crate::store::adopted(&info, *invite_at, *answer_at, dialog))
    }

    pub async fn set_deal_status(
        &self,
        id: &str,
        status: &str,
        group: Group,
        crm_only: bool,
    ) -> Result<Option<i64>, StoreError> {
        let mut state = self.state()?;
        let ours = if crm_only {
            -1
        } else {
            id.parse::<i64>().unwrap_or(-1)
        };
        // As SQLite's: every deal of that CRM id, else ours without one.
        let by_crm = state.deals.iter().any(|d| d.crm_id.as_deref() == Some(id));
        let mut ids = Vec::new();
        for d in state.deals.iter_mut() {
            let named = if by_crm {
                d.crm_id.as_deref() == Some(id)
            } else {
                d.id == ours && d.crm_id.is_none()
            };
            if named {
                d.status = status.into();
                d.group = group.as_str().into();
                ids.push(d.id);
            }
        }
        Ok(crate::store::leads::newest_of(id, ids))
    }

    pub async fn list_leads(&self, limit: i64, since: i64) -> Result<Vec<LeadRow>, StoreError> {
        self.lead_page(LeadQuery {
            appeared_since: Some(since),
            limit,
            ..Default::default()
        })
        .await
    }

    pub async fn lead_page(&self, q: LeadQuery) -> Result<Vec<LeadRow>, StoreError> {
        let state = self.state()?;
        let pending = |lead: i64| {
            state
                .outbox
                .values()
                .find(|o| o.row.lead_id == Some(lead) && o.row.state != "done")
                .map(|o| PendingCrm {
                    state: o.row.state.clone(),
                    attempts: o.row.attempts,
                    error: o.row.last_error.clone(),
                })
        };
        let calls = calls_by_lead(&state.calls);
        // As the SQL readings' term (see `LeadQuery::appeared_since`).
        let appeared = |l: &StoredLead| {
            q.appeared_since.is_none_or(|s| {
                l.row.created_at >= s
                    || calls
                        .get(&l.row.id)
                        .is_some_and(|c| c.end_at >= s.saturating_mul(1000))
            })
        };
        let rows = state.leads.iter().filter(|l| appeared(l)).map(|l| LeadRow {
            channel: channel_of(l, &calls).to_string(),
            ..l.row.clone()
        });
        Ok(page(rows.filter(|r| q.matches(r)), q.limit)
            .into_iter()
            .map(|r| LeadRow {
                pending: pending(r.id),
                ..r
            })
            .collect())
    }

    pub async fn newest_lead_id(&self) -> Result<i64, StoreError> {
        Ok(self.state()?.leads.len() as i64)
    }

    pub async fn leads_per_channel(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let state = self.state()?;
        let calls = calls_by_lead(&state.calls);
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for l in state.leads.iter().filter(|l| l.row.created_at >= since) {
            *counts.entry(channel_of(l, &calls)).or_default() += 1;
        }
        let mut out: Vec<(String, i64)> = counts
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out.truncate(limit.max(0) as usize);
        Ok(out)
    }

    pub async fn calls_per_hour(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(i64, String, i64)>, StoreError> {
        let state = self.state()?;
        let mut counts: BTreeMap<(i64, &str), i64> = BTreeMap::new();
        for c in state.calls.iter().filter(|c| c.invite_at >= since_ms) {
            *counts
                .entry((c.invite_at / 3_600_000 * 3_600_000, &c.status))
                .or_default() += 1;
        }
        Ok(counts
            .into_iter()
            .map(|((h, st), n)| (h, st.to_string(), n))
            .collect())
    }

    /// Row ids are positions + 1, as in SQLite.
    pub async fn call_page(
        &self,
        before: Option<i64>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, CallRow)>, StoreError> {
        let state = self.state()?;
        Ok(page(
            state
                .calls
                .iter()
                .enumerate()
                .map(|(i, c)| (i as i64 + 1, c))
                .filter(|(id, _)| before.is_none_or(|b| *id < b) && after.is_none_or(|a| *id > a))
                .map(|(id, c)| (id, c.clone())),
            limit,
        ))
    }

    pub async fn list_calls(&self, limit: i64, since_ms: i64) -> Result<Vec<CallRow>, StoreError> {
        let state = self.state()?;
        let mut calls: Vec<(usize, &CallRow)> = state
            .calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.end_at >= since_ms)
            .collect();
        calls.sort_by_key(|(i, c)| (c.invite_at, *i));
        Ok(page(calls.into_iter().map(|(_, c)| c.clone()), limit))
    }

    pub async fn list_deals(&self, limit: i64, since: i64) -> Result<Vec<DealRow>, StoreError> {
        let state = self.state()?;
        // As SQLite's join: a note's call as recorded now, if it is.
        let with_calls = |mut d: DealRow| {
            for n in d.comments.iter_mut().chain(d.tasks.iter_mut()) {
                n.call = n.call.take().and_then(|nc| {
                    let c = state.calls.iter().find(|c| c.call_id == nc.call_id)?;
                    Some(NoteCall {
                        recording: c.recording.clone(),
                        end_at: c.end_at,
                        recording_base: c.recording_base.clone(),
                        ..nc
                    })
                });
            }
            d
        };
        Ok(page(
            state
                .deals
                .iter()
                .filter(|d| d.created_at >= since)
                .cloned()
                .map(with_calls),
            limit,
        ))
    }

    pub async fn leads_without_outcome(&self) -> Result<i64, StoreError> {
        let state = self.state()?;
        Ok(state
            .leads
            .iter()
            .filter(|l| l.row.decision.is_empty())
            .count() as i64)
    }

    pub async fn outbox_claim(
        &self,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<DueItem>, StoreError> {
        let mut state = self.state()?;
        let pending = |o: &&StoredItem| o.row.state == "pending";
        let leased = |o: &StoredItem| {
            o.claim
                .as_ref()
                .is_some_and(|(by, until)| *until > now_ms && by != node)
        };
        let mut out = Vec::new();
        for o in state.outbox.values().filter(pending) {
            if out.len() as i64 >= limit {
                break;
            }
            let earlier_pending = state
                .outbox
                .range(..o.row.id)
                .any(|(_, p)| p.order_key == o.order_key && p.row.state == "pending");
            let stepped_back = o.touched_at > now_ms + CLOCK_STEP_MS;
            if (o.row.next_at > now_ms && !stepped_back) || earlier_pending || leased(o) {
                continue;
            }
            let Some(target) = Target::parse(&o.row.target) else {
                continue;
            };
            let deal = o
                .row
                .deal_ref
                .and_then(|d| state.deals.get((d - 1) as usize));
            out.push(DueItem {
                id: o.row.id,
                target,
                key: o.row.idempotency_key.clone(),
                event: o.row.event.clone(),
                body: o.row.body.clone(),
                attempts: o.row.attempts.max(0) as u32,
                created_at: o.row.created_at,
                deal_ref: o.row.deal_ref,
                crm_deal_id: deal.and_then(|d| d.crm_id.clone()),
                deal_created_here: state
                    .outbox
                    .values()
                    .any(|c| c.order_key == o.order_key && c.row.event == "deal.create"),
            });
        }
        for d in &out {
            if let Some(o) = state.outbox.get_mut(&d.id) {
                o.claim = Some((node.to_string(), now_ms + lease_ms));
                o.touched_at = now_ms;
            }
        }
        Ok(out)
    }

    pub async fn outbox_next_due(&self) -> Result<Option<i64>, StoreError> {
        let state = self.state()?;
        Ok(state
            .outbox
            .values()
            .filter(|o| o.row.state == "pending")
            .map(|o| o.row.next_at.max(o.claim.as_ref().map_or(0, |c| c.1)))
            .min())
    }

    pub async fn outbox_settle(
        &self,
        node: &str,
        results: &[(i64, Settle)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut state = self.state()?;
        for (id, s) in results {
            let mut crm_deal = None;
            let held = |o: &&mut StoredItem| o.claim.as_ref().is_some_and(|(n, _)| n == node);
            if let Some(o) = state.outbox.get_mut(id).filter(held) {
                o.claim = None;
                let r = &mut o.row;
                r.attempts += 1;
                crm_deal = s.crm_deal().cloned();
                match s {
                    Settle::Done { .. } => {
                        r.state = "done".into();
                        r.done_at = Some(now_ms);
                        r.last_error.clear();
                    }
                    Settle::Retry { error, next_at, .. } => {
                        r.last_error = error.clone();
                        r.next_at = *next_at;
                        o.touched_at = now_ms;
                    }
                    Settle::Park { error, .. } => {
                        r.state = "failed".into();
                        r.last_error = error.clone();
                        r.done_at = Some(now_ms);
                    }
                }
            }
            if let Some((deal, crm_id)) = crm_deal {
                if let Some(d) = state.deals.get_mut((deal - 1) as usize) {
                    d.crm_id = Some(crm_id);
                }
            }
        }
        Ok(())
    }

    pub async fn outbox_purge(&self, now_ms: i64) -> Result<u64, StoreError> {
        let mut state = self.state()?;
        let before = state.outbox.len();
        state.outbox.retain(|_, o| {
            !(o.row.state == "done" && o.row.done_at.unwrap_or(i64::MAX) < now_ms - KEEP_DONE_MS)
        });
        Ok((before - state.outbox.len()) as u64)
    }

    pub async fn outbox_depth(&self) -> Result<Depth, StoreError> {
        let state = self.state()?;
        let count = |s: &str| state.outbox.values().filter(|o| o.row.state == s).count() as i64;
        Ok(Depth {
            pending: count("pending"),
            failed: count("failed"),
        })
    }

    pub async fn list_outbox(
        &self,
        state_is: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let state = self.state()?;
        Ok(page(
            state
                .outbox
                .values()
                .filter(|o| state_is.is_none_or(|s| o.row.state == s))
                .map(|o| o.row.clone()),
            limit,
        ))
    }

    pub async fn outbox_requeue(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let mut state = self.state()?;
        match state.outbox.get_mut(&id) {
            Some(o) if o.row.state == "failed" => {
                o.row.state = "pending".into();
                o.claim = None;
                o.row.next_at = now_ms;
                o.row.created_at = now_ms;
                Ok(true)
            }
            // One waiting out its backoff, not in flight: due now.
            Some(o)
                if o.row.state == "pending"
                    && o.row.next_at > now_ms
                    && o.claim.as_ref().is_none_or(|(_, until)| *until <= now_ms) =>
            {
                o.row.next_at = now_ms;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub async fn save_assignment(&self, row: &AssignmentRow) -> Result<(), StoreError> {
        let mut state = self.state()?;
        let newer = state
            .assignments
            .get(&row.number)
            .is_none_or(|old| row.version > old.version);
        if newer {
            state.assignments.insert(row.number.clone(), row.clone());
        }
        Ok(())
    }

    pub async fn load_assignments(&self) -> Result<Vec<AssignmentRow>, StoreError> {
        Ok(self.state()?.assignments.values().cloned().collect())
    }
}
