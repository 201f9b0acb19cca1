//! How a batch of call starts, calls and leads is decided and recorded,
//! once for every store (SPEC L-3 … L-6, C-5). A store provides a
//! `Ledger`: the reads and writes of one transaction (SQLite: an
//! IMMEDIATE transaction on the decision thread; memory: its maps under
//! one lock). The decision itself is the pure `leads::dedup::decide`.

use super::leads::{Job, NewDealStatus, NewLead, Recorded};
use crate::calls::CallRecord;
use crate::crm::local::{self, DealBook};
use crate::crm::outbox::{call_end_item, call_start_item, lead_items, CallStart, Item, Plan};
use crate::crm::payload::LeadView;
use crate::leads::dedup::{self, Deal, Decision, Lead, LeadKind, Original, PriorLead, Settings};

/// The lead a recorded call made: (lead, deal, outcome), and when the
/// call's INVITE came (Unix ms): a replay of the call has the same time,
/// another call that reused its Call-ID another.
pub(crate) type KnownCall = (i64, Option<i64>, String, i64);

/// The reads and writes of one recording transaction. Every method runs
/// inside it: a failure anywhere leaves nothing of the batch. The local
/// CRM's tables (`DealBook`) are part of it.
pub(crate) trait Ledger: DealBook {
    /// The lead a call already made: (lead, deal, outcome). A retry after
    /// a lost COMMIT answer must not record the call twice.
    fn recorded_call(&mut self, call_id: &str) -> Result<Option<KnownCall>, Self::Error>;
    /// The history `decide` needs for this lead: accepted leads since
    /// `leads_since` (with their deal's group now), the client's deals by
    /// phone and e-mail, and the same-lead deals since `deals_since`
    /// (`dedup::history_since`). More is harmless: `decide` applies the
    /// windows.
    fn history(
        &mut self,
        lead: &Lead,
        leads_since: i64,
        deals_since: i64,
    ) -> Result<(Vec<PriorLead>, Vec<Deal>), Self::Error>;
    fn insert_lead(
        &mut self,
        lead: &NewLead,
        kind: LeadKind,
        accepted: bool,
        deal_id: Option<i64>,
        outcome: &str,
    ) -> Result<i64, Self::Error>;
    /// The deal a lead created and the outcome naming it.
    fn set_lead_deal(&mut self, lead_id: i64, deal: i64, outcome: &str) -> Result<(), Self::Error>;
    /// A finished call and the lead it made (its open row is left to
    /// [`close_open_row`]).
    /// `recording_base`: the link base of the node that recorded the
    /// call, for a call with a WAV (empty on one node).
    fn insert_call(
        &mut self,
        r: &CallRecord,
        lead_id: i64,
        recording_base: &str,
    ) -> Result<(), Self::Error>;
    /// Remembers a call in progress (unless it is recorded already) for
    /// the run `run_id`.
    fn open_call(&mut self, run_id: &str, c: &CallStart) -> Result<(), Self::Error>;
    fn forget_call(&mut self, call_id: &str) -> Result<(), Self::Error>;
    /// A call recorded `interrupted` (its node crashed): an answered call's
    /// shared dialog stays, marked recorded at `now_ms`, for the BYE that
    /// may still come (to another node, or to this one started again at
    /// once); any other open row goes. `interrupted_calls` purges kept
    /// dialogs after `tracking.max_call_seconds`.
    fn keep_dialog(&mut self, call_id: &str, now_ms: i64) -> Result<(), Self::Error>;
    /// An open call was answered: when, and its dialog (JSON) for another
    /// node when dialogs are shared.
    fn answer_call(
        &mut self,
        call_id: &str,
        answer_at: i64,
        dialog: Option<&str>,
    ) -> Result<(), Self::Error>;
    /// A call started and answered within one batch: `open_call`, then
    /// `answer_call`. A store may do both in one write (issue 15: a PBX
    /// that answers with its menu at once sends both within the
    /// pipeline's linger).
    fn open_answered_call(
        &mut self,
        run_id: &str,
        c: &CallStart,
        answer_at: i64,
        dialog: Option<&str>,
    ) -> Result<(), Self::Error> {
        self.open_call(run_id, c)?;
        self.answer_call(&c.call_id, answer_at, dialog)
    }
    /// CRM requests (C-5); an idempotency key already queued is skipped.
    fn queue(&mut self, items: &[Item], now_ms: i64) -> Result<(), Self::Error>;
}

/// What a batch is recorded with besides its jobs.
pub(crate) struct Context<'a> {
    pub settings: &'a Settings,
    pub status: &'a NewDealStatus,
    pub plan: &'a Plan,
    pub install_id: &'a str,
    /// This process's run: its open calls are not interrupted ones.
    pub run_id: &'a str,
    /// The run calls replayed from this node's journal are filed under
    /// (`runs::earlier_run`).
    pub earlier_run_id: &'a str,
    pub now_ms: i64,
}

/// Records a batch in order; one `Recorded` per `Job::Lead`.
pub(crate) fn record_batch<L: Ledger>(
    l: &mut L,
    jobs: &[Job],
    cx: &Context,
) -> Result<Vec<Recorded>, L::Error> {
    let mut out = Vec::with_capacity(jobs.len());
    let ended = ended_later(jobs);
    let answers = answers_of_starts(jobs, &ended);
    // Answers written with their starts.
    let mut written: Vec<bool> = vec![false; jobs.len()];
    for (i, (job, ended)) in jobs.iter().zip(ended).enumerate() {
        match job {
            Job::Lead(lead, call) => out.push(decide_and_record(l, lead, call.as_ref(), cx)?),
            Job::Abandoned(call_id) => l.forget_call(call_id)?,
            Job::Answered(_) | Job::Start(..) if ended => {}
            Job::Answered(_) if written[i] => {}
            Job::Answered(a) => {
                l.answer_call(&a.call_id, a.answer_at as i64, dialog_json(a).as_deref())?
            }
            Job::Start(c, earlier_run) => {
                let run = if *earlier_run {
                    cx.earlier_run_id
                } else {
                    cx.run_id
                };
                match answers[i].map(|j| (j, &jobs[j])) {
                    Some((j, Job::Answered(a))) => {
                        written[j] = true;
                        let dialog = dialog_json(a);
                        l.open_answered_call(run, c, a.answer_at as i64, dialog.as_deref())?;
                    }
                    _ => l.open_call(run, c)?,
                }
            }
        }
        // The call-start webhook goes whether or not the open row was
        // written.
        if let Job::Start(c, _) = job {
            if let Some(item) = call_start_item(cx.plan, cx.install_id, c) {
                l.queue(std::slice::from_ref(&item), cx.now_ms)?;
            }
        }
    }
    Ok(out)
}

/// An answered call's dialog as the open row keeps it (JSON).
fn dialog_json(a: &crate::calls::AnsweredCall) -> Option<String> {
    a.dialog.as_ref().map(crate::proxy::handoff::to_json)
}

/// For each call start the batch writes (not `ended`), the index of its
/// call's next answer in the batch, if any, so that both go in one write
/// (`Ledger::open_answered_call`). A second start of the call before the
/// answer takes it (the first is written alone, the second with it: the
/// row the first wrote takes the answer, as the answer's UPDATE gave it
/// after both).
fn answers_of_starts(jobs: &[Job], ended: &[bool]) -> Vec<Option<usize>> {
    let mut out = vec![None; jobs.len()];
    let mut waiting: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        match job {
            Job::Start(c, _) if !ended.get(i).copied().unwrap_or(false) => {
                waiting.insert(&c.call_id, i);
            }
            Job::Answered(a) => {
                if let Some(start) = waiting.remove(a.call_id.as_str()) {
                    out[start] = Some(i);
                }
            }
            _ => {}
        }
    }
    out
}

/// For each job, whether it is a call's start or answer whose end (its
/// record, or its abandonment) comes later in the same batch. Such a
/// start's open row need not be written, nor its answer: the end deletes
/// the row in the same transaction, so no reader, on this node or another
/// (PostgreSQL), can see it, and a crash loses the batch whole. A row an
/// earlier batch wrote (a replay after a lost COMMIT answer) is deleted
/// by the end all the same; where the end finds the call recorded
/// already, an open row could not have been written (`open_call` skips
/// recorded calls). Issue 15: two statements and a row written and
/// deleted less per short call (a refused or unanswered INVITE ends
/// within the batch of its start).
fn ended_later(jobs: &[Job]) -> Vec<bool> {
    let mut ends: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut out = vec![false; jobs.len()];
    for (i, job) in jobs.iter().enumerate().rev() {
        match job {
            Job::Lead(_, Some(r)) => {
                ends.insert(&r.call_id);
            }
            Job::Abandoned(id) => {
                ends.insert(id);
            }
            Job::Start(c, _) => out[i] = ends.contains(c.call_id.as_str()),
            Job::Answered(a) => out[i] = ends.contains(a.call_id.as_str()),
            Job::Lead(_, None) => {}
        }
    }
    out
}

/// The id a call is recorded under when an earlier call with its Call-ID
/// is recorded already: the Call-ID, `#` and the INVITE's time (Unix ms),
/// the same for every replay of this call.
fn reused_call_id(call_id: &str, invite_at_ms: u64) -> String {
    format!("{call_id}#{invite_at_ms}")
}

/// Whether `id` is one `reused_call_id` made (a Call-ID has no `#`: RFC
/// 3261's `word` does not allow it).
fn is_reused_call_id(id: &str) -> bool {
    id.rsplit_once('#')
        .is_some_and(|(_, t)| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
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
                    visit.insert(k.to_string(), v.to_string());
                }
            }
            visit.extend(i.visit.iter().map(|(k, v)| (k.clone(), v.clone())));
            // The lead's own visit, as stored and listed: for a static
            // number the channel's marker (`call_lead`), which X-Roistat
            // carries too (T-2). The call's `visit_id` is empty then, and
            // the CRM got "" for a lead siptrack lists with a visit.
            new.who.visit.clone()
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

fn decide_and_record<L: Ledger>(
    l: &mut L,
    new: &NewLead,
    call: Option<&CallRecord>,
    cx: &Context,
) -> Result<Recorded, L::Error> {
    if let Some(r) = call {
        match l.recorded_call(&r.call_id)? {
            // This call, recorded already: a replay after a lost COMMIT
            // answer, or the real end of a call recorded `interrupted` at
            // a restart, through the dialog kept for it (which goes now).
            // (An id made by `reused_call_id` is taken for this call
            // whatever its time: it is never renamed twice.)
            Some((lead_id, deal_id, outcome, invite_at))
                if invite_at == r.invite_at as i64 || is_reused_call_id(&r.call_id) =>
            {
                if !was_interrupted(r) {
                    l.forget_call(&r.call_id)?;
                }
                return Ok(Recorded {
                    lead_id,
                    deal_id,
                    outcome,
                    decision: Decision::NoDealFromCalls,
                    earlier: true,
                });
            }
            // Another call with this Call-ID: a trunk that counts its
            // Call-IDs from 1 again after a restart (a trial, 2026-12-03:
            // such calls made no record and no lead).
            Some(_) => {
                let again = CallRecord {
                    call_id: reused_call_id(&r.call_id, r.invite_at),
                    ..r.clone()
                };
                let lead = NewLead {
                    call_id: Some(again.call_id.clone()),
                    ..new.clone()
                };
                return decide_and_record(l, &lead, Some(&again), cx);
            }
            None => {}
        }
    }
    let kind = new.kind.unwrap_or(LeadKind::Form);
    let lead = Lead {
        kind,
        who: new.who.clone(),
        at: new.at,
    };
    // Nobody to match (a withheld caller): no history to fetch.
    let (leads, deals) = if dedup::identifiable(&lead) {
        let (leads_since, deals_since) = dedup::history_since(&lead, cx.settings);
        l.history(&lead, leads_since, deals_since)?
    } else {
        (Vec::new(), Vec::new())
    };
    let decision = dedup::decide(&lead, &leads, &deals, cx.settings);
    // A recorded call's notes name it, for the deals API's link.
    let recorded_call = call
        .filter(|c| c.recording.has_file())
        .map(|c| c.call_id.as_str());
    let (lead_id, deal_id, outcome) = match &decision {
        Decision::CreateDeal { duplicate_of } => {
            let lead_id = l.insert_lead(new, kind, true, None, "")?;
            let (deal_id, outcome) =
                local::create_deal(l, new, cx.status, lead_id, *duplicate_of, recorded_call)?;
            l.set_lead_deal(lead_id, deal_id, &outcome)?;
            (lead_id, Some(deal_id), outcome)
        }
        Decision::Duplicate(o) => {
            let outcome = o.describe();
            (
                l.insert_lead(new, kind, false, None, &outcome)?,
                None,
                outcome,
            )
        }
        Decision::Attach { deal, action } => {
            let outcome = local::attached(*deal);
            let id = l.insert_lead(new, kind, false, Some(*deal), &outcome)?;
            local::attach(l, *deal, *action, new, recorded_call)?;
            (id, Some(*deal), outcome)
        }
        Decision::NoDealFromCalls => {
            let outcome = "no deal: calls create no deals".to_string();
            (
                l.insert_lead(new, kind, false, None, &outcome)?,
                None,
                outcome,
            )
        }
    };
    if let Some(r) = call {
        let base = if r.recording.has_file() {
            cx.plan.recording_base.as_str()
        } else {
            ""
        };
        l.insert_call(r, lead_id, base)?;
        close_open_row(l, r, cx.now_ms)?;
    }
    if cx.plan.sends_anything() {
        let view = lead_view(lead_id, new, call);
        let mut items = lead_items(cx.plan, cx.install_id, &view, &decision, deal_id, call);
        // A duplicate's call belongs to the deal of the lead it repeats:
        // it waits for that deal's create as a lead's own call does
        // (trial, 2026-12-03: amoCRM refused a repeat call sent while the
        // first call's create was being retried, "Contact not found", and
        // it stayed parked), and Bitrix24 files it on that deal.
        let deal = items
            .first()
            .and_then(|i| i.deal_ref)
            .or_else(|| repeated_deal(&decision, &leads));
        items.extend(call.and_then(|c| call_end_item(cx.plan, cx.install_id, c, deal)));
        l.queue(&items, cx.now_ms)?;
    }
    Ok(Recorded {
        lead_id,
        deal_id,
        outcome,
        decision,
        earlier: false,
    })
}

/// The deal a duplicate repeats: the original deal, or the deal the
/// original lead created.
fn repeated_deal(decision: &Decision, leads: &[PriorLead]) -> Option<i64> {
    match decision {
        Decision::Duplicate(Original::Deal(d)) => Some(*d),
        Decision::Duplicate(Original::Lead(n)) => leads.iter().find(|p| p.id == *n).map(|p| p.deal),
        _ => None,
    }
}

fn was_interrupted(r: &CallRecord) -> bool {
    r.hangup == Some(crate::calls::Party::Interrupted)
}

/// A recorded call is no longer open, except that an interrupted one's
/// dialog is kept: its node crashed and was started again within the
/// call (trial, 2026-12-01: a restart half a second after a kill -9
/// recorded ten live calls and deleted their dialogs, so their BYEs got
/// 481 everywhere and the PBX's legs stayed up).
fn close_open_row<L: Ledger>(l: &mut L, r: &CallRecord, now_ms: i64) -> Result<(), L::Error> {
    if was_interrupted(r) {
        l.keep_dialog(&r.call_id, now_ms)
    } else {
        l.forget_call(&r.call_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::{AnsweredCall, CallInfo};
    use crate::leads::dedup::{Action, Group};
    use crate::proxy::handoff::{DialogHandoff, HandoffSide, HandoffTransport};

    /// The CRM gets the visit siptrack stores for the lead: a pool call's
    /// visit id, a static number's marker (the trial of 2026-12-01 found
    /// `visit_id: ""` in the webhook of a lead listed with its marker).
    #[test]
    fn a_call_leads_view_has_the_leads_own_visit() {
        for (visit_id, marker, want) in [
            (None, Some("google_cpc"), "google_cpc"),
            (Some("v-1"), Some("google_cpc"), "v-1"),
            (None, None, ""),
        ] {
            let info = CallInfo {
                caller: "79161234567".into(),
                dialed: "74951111111".into(),
                visit_id: visit_id.map(Into::into),
                marker: marker.map(Into::into),
                ..CallInfo::default()
            };
            let record = CallRecord::interrupted("c".into(), info, 1_000, None);
            let new = crate::leads::pipeline::call_lead(&record);
            assert_eq!(new.who.visit, want);
            let view = lead_view(1, &new, Some(&record));
            assert_eq!(view.visit_id, want, "{visit_id:?} {marker:?}");
            let data = crate::crm::payload::lead_data(&view);
            assert_eq!(data["visit"], want);
            assert_eq!(
                data.get("marker").and_then(|m| m.as_str()),
                marker,
                "the marker stays in data"
            );
        }
    }

    fn start(id: &str) -> Job {
        Job::Start(
            CallStart {
                call_id: id.into(),
                info: CallInfo::default(),
                invite_at: 1,
            },
            false,
        )
    }

    fn answered(id: &str) -> Job {
        let side = HandoffSide {
            transport: HandoffTransport::Udp,
            source: ([127, 0, 0, 1], 5060).into(),
            contact: None,
        };
        Job::Answered(AnsweredCall {
            call_id: id.into(),
            answer_at: 2,
            dialog: Some(DialogHandoff {
                call_id: id.into(),
                caller_tag: "a".into(),
                callee_tag: "b".into(),
                caller: side,
                callee: side,
            }),
        })
    }

    fn ended(id: &str) -> Job {
        let r = CallRecord {
            call_id: id.into(),
            info: CallInfo::default(),
            invite_at: 1,
            answer_at: Some(2),
            end_at: 3,
            duration: 0,
            status: crate::calls::CallStatus::Answered,
            hangup: None,
            recording: Default::default(),
            dtmf: Vec::new(),
        };
        Job::Lead(crate::leads::pipeline::call_lead(&r), Some(r))
    }

    fn form() -> Job {
        Job::Lead(NewLead::default(), None)
    }

    #[test]
    fn starts_and_answers_of_calls_ending_later_in_the_batch() {
        let abandoned = |id: &str| Job::Abandoned(id.into());
        let cases: Vec<(&str, Vec<Job>, Vec<bool>)> = vec![
            ("empty", vec![], vec![]),
            (
                "start, answer, end",
                vec![start("a"), answered("a"), ended("a")],
                vec![true, true, false],
            ),
            (
                "the end in a later batch",
                vec![start("a"), answered("a")],
                vec![false, false],
            ),
            (
                "another call's end",
                vec![start("a"), answered("a"), ended("b")],
                vec![false, false, false],
            ),
            (
                "an end before the start (a replay) does not count",
                vec![ended("a"), start("a"), answered("a")],
                vec![false, false, false],
            ),
            (
                "abandoned",
                vec![start("a"), abandoned("a"), start("b")],
                vec![true, false, false],
            ),
            (
                "a form lead ends no call",
                vec![start("a"), form()],
                vec![false, false],
            ),
            (
                "interleaved",
                vec![
                    start("a"),
                    start("b"),
                    answered("a"),
                    ended("a"),
                    answered("b"),
                ],
                vec![true, false, true, false, false],
            ),
        ];
        for (name, jobs, want) in cases {
            assert_eq!(ended_later(&jobs), want, "{name}");
        }
    }

    /// A case of `answers_of_starts`: its name, the batch, the answer
    /// index wanted for each job.
    type PairingCase = (&'static str, Vec<Job>, Vec<Option<usize>>);

    #[test]
    fn starts_written_with_their_answers() {
        let cases: Vec<PairingCase> = vec![
            ("empty", vec![], vec![]),
            (
                "start, answer",
                vec![start("a"), answered("a")],
                vec![Some(1), None],
            ),
            ("a start alone", vec![start("a")], vec![None]),
            (
                "an answer alone (its start in an earlier batch)",
                vec![answered("a")],
                vec![None],
            ),
            (
                "interleaved calls",
                vec![start("a"), start("b"), form(), answered("b"), answered("a")],
                vec![Some(4), Some(3), None, None, None],
            ),
            (
                "the second of two starts takes the answer",
                vec![start("a"), start("a"), answered("a")],
                vec![None, Some(2), None],
            ),
            (
                "a second answer stays an update",
                vec![start("a"), answered("a"), answered("a")],
                vec![Some(1), None, None],
            ),
            (
                "a call ending in the batch writes neither",
                vec![start("a"), answered("a"), ended("a")],
                vec![None, None, None],
            ),
            (
                "an answer before its start is not taken back",
                vec![answered("a"), start("a")],
                vec![None, None],
            ),
        ];
        for (name, jobs, want) in cases {
            let ended = ended_later(&jobs);
            assert_eq!(answers_of_starts(&jobs, &ended), want, "{name}");
        }
    }

    /// Logs what a batch asks of its store.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl DealBook for Log {
        type Error = std::convert::Infallible;
        fn insert_deal(
            &mut self,
            _: &NewLead,
            _: &NewDealStatus,
            _: i64,
        ) -> Result<i64, Self::Error> {
            self.0.push("insert_deal".into());
            Ok(1)
        }
        fn add_note(
            &mut self,
            _: i64,
            _: Action,
            _: i64,
            _: &str,
            _: Option<&str>,
        ) -> Result<(), Self::Error> {
            self.0.push("add_note".into());
            Ok(())
        }
    }

    impl Ledger for Log {
        fn recorded_call(&mut self, id: &str) -> Result<Option<KnownCall>, Self::Error> {
            self.0.push(format!("recorded_call {id}"));
            Ok(None)
        }
        fn history(
            &mut self,
            _: &Lead,
            _: i64,
            _: i64,
        ) -> Result<(Vec<PriorLead>, Vec<Deal>), Self::Error> {
            self.0.push("history".into());
            Ok((Vec::new(), Vec::new()))
        }
        fn insert_lead(
            &mut self,
            _: &NewLead,
            _: LeadKind,
            _: bool,
            _: Option<i64>,
            _: &str,
        ) -> Result<i64, Self::Error> {
            self.0.push("insert_lead".into());
            Ok(1)
        }
        fn set_lead_deal(&mut self, _: i64, _: i64, _: &str) -> Result<(), Self::Error> {
            self.0.push("set_lead_deal".into());
            Ok(())
        }
        fn insert_call(&mut self, r: &CallRecord, _: i64, _: &str) -> Result<(), Self::Error> {
            self.0.push(format!("insert_call {}", r.call_id));
            Ok(())
        }
        fn keep_dialog(&mut self, id: &str, _: i64) -> Result<(), Self::Error> {
            self.0.push(format!("keep_dialog {id}"));
            Ok(())
        }
        fn open_call(&mut self, _: &str, c: &CallStart) -> Result<(), Self::Error> {
            self.0.push(format!("open_call {}", c.call_id));
            Ok(())
        }
        fn forget_call(&mut self, id: &str) -> Result<(), Self::Error> {
            self.0.push(format!("forget_call {id}"));
            Ok(())
        }
        fn answer_call(&mut self, id: &str, _: i64, _: Option<&str>) -> Result<(), Self::Error> {
            self.0.push(format!("answer_call {id}"));
            Ok(())
        }
        fn open_answered_call(
            &mut self,
            _: &str,
            c: &CallStart,
            _: i64,
            dialog: Option<&str>,
        ) -> Result<(), Self::Error> {
            let with = if dialog.is_some() { " with dialog" } else { "" };
            self.0
                .push(format!("open_answered_call {}{with}", c.call_id));
            Ok(())
        }
        fn queue(&mut self, items: &[Item], _: i64) -> Result<(), Self::Error> {
            for i in items {
                self.0.push(format!("queue {}", i.key));
            }
            Ok(())
        }
    }

    /// Issue 15: a call that starts and ends within one batch costs no
    /// open row (written, then deleted in the same transaction); its
    /// record still clears a row an earlier batch wrote, and its
    /// call-start webhook is still queued.
    #[test]
    fn a_call_ending_in_the_batch_of_its_start_writes_no_open_row() {
        let plan = Plan {
            call_start: true,
            ..Plan::default()
        };
        let cx = Context {
            settings: &Settings::default(),
            status: &NewDealStatus {
                status: "new".into(),
                group: Group::NotCounted,
            },
            plan: &plan,
            install_id: "i",
            run_id: "r",
            earlier_run_id: "e",
            now_ms: 0,
        };
        let mut log = Log::default();
        let jobs = [
            start("a"),
            start("b"),
            answered("a"),
            answered("b"),
            ended("a"),
        ];
        let out = record_batch(&mut log, &jobs, &cx).expect("recorded");
        assert_eq!(out.len(), 1);
        let asked: Vec<&str> = log.0.iter().map(String::as_str).collect();
        assert_eq!(
            asked,
            [
                "queue i-call-a-start",
                "open_answered_call b with dialog",
                "queue i-call-b-start",
                "recorded_call a",
                "insert_lead",
                "insert_deal",
                "set_lead_deal",
                "insert_call a",
                "forget_call a",
            ]
        );
    }
}
