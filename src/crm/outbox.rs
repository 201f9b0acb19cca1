//! What goes into the CRM outbox (SPEC C-5), decided as pure functions:
//! which requests a lead decision or a call causes, their idempotency and
//! ordering keys, and when a failed attempt is tried again. The store
//! writes the items in the decision's transaction; `worker` delivers them.

use serde_json::Value;

use super::payload::{call_payload, call_start_payload, lead_payload, Event, Format, LeadView};
use crate::calls::{CallInfo, CallRecord};
use crate::leads::dedup::{Action, Decision};
use crate::recording::links::{pending_link, PENDING_FIELD};

/// Which CRM requests siptrack makes (from `[crm]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// `crm.kind = "webhook"`: deals, tasks and comments go to `crm.url`.
    pub lead_hooks: bool,
    /// `crm.call_start_url` / `crm.call_end_url` are set.
    pub call_start: bool,
    pub call_end: bool,
    /// A call's end is recorded on its lead's deal (Bitrix24 binds the
    /// call to it): it waits for that deal's create and names it.
    pub calls_on_deals: bool,
    pub format: Format,
    /// The base of this node's recording links (`LinkSettings::base_url`,
    /// set once the HTTP listener is bound): a request about a call this
    /// node recorded names it, so that its link leads to the WAV whichever
    /// node of a cluster sends it. Empty: the sender's base.
    pub recording_base: String,
}

impl Plan {
    pub fn sends_anything(&self) -> bool {
        self.lead_hooks || self.call_start || self.call_end
    }
}

/// Where an item is posted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Lead,
    CallStart,
    CallEnd,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Lead => "lead",
            Target::CallStart => "call_start",
            Target::CallEnd => "call_end",
        }
    }
    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "lead" => Some(Target::Lead),
            "call_start" => Some(Target::CallStart),
            "call_end" => Some(Target::CallEnd),
            _ => None,
        }
    }
}

/// One CRM request, before it is written.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub target: Target,
    pub key: String,
    /// Items sharing it are delivered one after another, in order.
    pub order_key: String,
    pub event: Option<Event>,
    pub lead_id: Option<i64>,
    /// siptrack's deal this creates or acts on; the CRM's id for it is
    /// put into `deal_id` when the item is sent.
    pub deal_ref: Option<i64>,
    pub body: Value,
}

/// A new call, as the call-start webhook reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallStart {
    pub call_id: String,
    pub info: CallInfo,
    /// Unix milliseconds.
    pub invite_at: u64,
}

fn deal_order(deal: i64) -> String {
    format!("deal-{deal}")
}

fn lead_item(
    plan: &Plan,
    install: &str,
    lead: &LeadView,
    event: Event,
    deal: i64,
    call: Option<&CallRecord>,
) -> Item {
    let (f, base) = (&plan.format, plan.recording_base.as_str());
    Item {
        target: Target::Lead,
        key: format!("{install}-lead-{}-{}", lead.id, event.as_str()),
        order_key: deal_order(deal),
        event: Some(event),
        lead_id: Some(lead.id),
        deal_ref: Some(deal),
        body: with_pending_link(lead_payload(lead, event, None, call, None, f), call, base),
    }
}

/// A request about a recorded call names the recording; its link is made
/// when the request is sent (`recording::links::fill_crm_link`).
fn with_pending_link(mut body: Value, call: Option<&CallRecord>, base: &str) -> Value {
    if let Some(p) = call.and_then(|c| pending_link(&c.call_id, &c.recording, c.end_at, base)) {
        body[PENDING_FIELD] = p;
    }
    body
}

/// SPEC C-2, L-3..L-5: the requests a recorded lead causes. A new deal is
/// `deal.create` (and, for an appended duplicate, a `deal.comment` naming
/// the original); a lead attached to a deal is that deal's task or
/// comment; a duplicate or a call that makes no deal sends nothing.
/// `deal` is the deal the decision created (for CreateDeal).
pub fn lead_items(
    plan: &Plan,
    install: &str,
    lead: &LeadView,
    decision: &Decision,
    deal: Option<i64>,
    call: Option<&CallRecord>,
) -> Vec<Item> {
    if !plan.lead_hooks {
        return Vec::new();
    }
    match decision {
        Decision::CreateDeal { duplicate_of } => {
            let Some(deal) = deal else {
                return Vec::new();
            };
            let mut items = vec![lead_item(
                plan,
                install,
                lead,
                Event::DealCreate,
                deal,
                call,
            )];
            if let Some(o) = duplicate_of {
                let note = LeadView {
                    text: format!("Duplicate: {}", o.describe()),
                    ..lead.clone()
                };
                items.push(lead_item(
                    plan,
                    install,
                    &note,
                    Event::DealComment,
                    deal,
                    call,
                ));
            }
            items
        }
        Decision::Attach { deal, action } => {
            let event = match action {
                Action::Task => Event::DealTask,
                Action::Comment => Event::DealComment,
            };
            vec![lead_item(plan, install, lead, event, *deal, call)]
        }
        Decision::Duplicate(_) | Decision::NoDealFromCalls => Vec::new(),
    }
}

fn call_order(call_id: &str) -> String {
    format!("call-{call_id}")
}

/// SPEC C-2a: the webhook when the INVITE arrives.
pub fn call_start_item(plan: &Plan, install: &str, c: &CallStart) -> Option<Item> {
    plan.call_start.then(|| Item {
        target: Target::CallStart,
        key: format!("{install}-call-{}-start", c.call_id),
        order_key: call_order(&c.call_id),
        event: None,
        lead_id: None,
        deal_ref: None,
        body: call_start_payload(c, &plan.format),
    })
}

/// SPEC C-2a: the webhook when the call ends (after its start, if any).
/// `deal`: the deal the call's lead made or joined; with
/// `plan.calls_on_deals` the end goes in that deal's order and names it.
pub fn call_end_item(
    plan: &Plan,
    install: &str,
    c: &CallRecord,
    deal: Option<i64>,
) -> Option<Item> {
    let deal = deal.filter(|_| plan.calls_on_deals);
    plan.call_end.then(|| Item {
        target: Target::CallEnd,
        key: format!("{install}-call-{}-end", c.call_id),
        order_key: deal.map_or_else(|| call_order(&c.call_id), deal_order),
        event: None,
        lead_id: None,
        deal_ref: deal,
        body: with_pending_link(
            call_payload(c, None, &plan.format),
            Some(c),
            &plan.recording_base,
        ),
    })
}

/// `crm.retry`: exponential backoff with jitter, and the age after which
/// an item is parked as failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub max_age_hours: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            initial_ms: 1_000,
            max_ms: 300_000,
            max_age_hours: 72,
        }
    }
}

/// The longest a CRM's Retry-After is honoured.
const MAX_RETRY_AFTER_MS: u64 = 3_600_000;

impl Retry {
    /// Milliseconds until the next attempt after `attempts` failed ones
    /// (1 = the first failed). "Equal jitter": half the exponential step
    /// fixed, half random (`unit` in [0, 1)), so a CRM coming back is not
    /// hit by every item at once, yet no retry comes sooner than half the
    /// step. A CRM's Retry-After replaces the step.
    pub fn delay_ms(&self, attempts: u32, retry_after_ms: Option<u64>, unit: f64) -> u64 {
        if let Some(ms) = retry_after_ms {
            return ms.min(MAX_RETRY_AFTER_MS);
        }
        let shift = attempts.saturating_sub(1).min(40);
        let step = self
            .initial_ms
            .saturating_mul(1u64 << shift)
            .min(self.max_ms)
            .max(1);
        let half = step / 2;
        half + ((step - half) as f64 * unit.clamp(0.0, 1.0)) as u64
    }

    /// An item this old (Unix ms) that fails again is parked.
    pub fn expired(&self, created_at_ms: i64, now_ms: i64) -> bool {
        now_ms.saturating_sub(created_at_ms) >= (self.max_age_hours as i64) * 3_600_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::CallStatus;
    use crate::leads::dedup::Original;

    fn plan() -> Plan {
        Plan {
            lead_hooks: true,
            call_start: true,
            call_end: true,
            calls_on_deals: false,
            format: Format::default(),
            recording_base: String::new(),
        }
    }

    fn lead() -> LeadView {
        LeadView {
            id: 7,
            title: "Incoming call from 74991234567".into(),
            phone: "74991234567".into(),
            ..LeadView::default()
        }
    }

    #[test]
    fn a_new_deal_is_one_create_keyed_by_lead_and_action() {
        let d = Decision::CreateDeal { duplicate_of: None };
        let items = lead_items(&plan(), "i1", &lead(), &d, Some(3), None);
        assert_eq!(items.len(), 1);
        let i = &items[0];
        assert_eq!(i.key, "i1-lead-7-deal.create");
        assert_eq!(i.order_key, "deal-3");
        assert_eq!(i.deal_ref, Some(3));
        assert_eq!(i.body["event"], "deal.create");
        assert!(i.body.get("deal_id").is_none(), "filled in when sent");
    }

    #[test]
    fn an_appended_duplicate_is_a_create_then_a_comment_on_the_same_deal() {
        let d = Decision::CreateDeal {
            duplicate_of: Some(Original::Lead(2)),
        };
        let items = lead_items(&plan(), "i1", &lead(), &d, Some(3), None);
        let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["i1-lead-7-deal.create", "i1-lead-7-deal.comment"]);
        assert!(items.iter().all(|i| i.order_key == "deal-3"));
        assert_eq!(items[1].body["text"], "Duplicate: duplicate of lead 2");
    }

    #[test]
    fn attached_leads_act_on_their_deal_and_duplicates_send_nothing() {
        for (action, event) in [
            (Action::Task, "deal.task"),
            (Action::Comment, "deal.comment"),
        ] {
            let d = Decision::Attach { deal: 9, action };
            let items = lead_items(&plan(), "i1", &lead(), &d, None, None);
            assert_eq!(items.len(), 1);
            assert_eq!(items[0].body["event"], event);
            assert_eq!(items[0].order_key, "deal-9");
            assert_eq!(items[0].key, format!("i1-lead-7-{event}"));
        }
        for d in [
            Decision::Duplicate(Original::Lead(1)),
            Decision::NoDealFromCalls,
        ] {
            assert!(lead_items(&plan(), "i1", &lead(), &d, None, None).is_empty());
        }
        let local = Plan {
            lead_hooks: false,
            ..plan()
        };
        let d = Decision::CreateDeal { duplicate_of: None };
        assert!(lead_items(&local, "i1", &lead(), &d, Some(1), None).is_empty());
    }

    #[test]
    fn call_webhooks_share_one_order_key() {
        let start = CallStart {
            call_id: "c1@h".into(),
            info: CallInfo::default(),
            invite_at: 1_000,
        };
        let end = CallRecord {
            call_id: "c1@h".into(),
            info: CallInfo::default(),
            invite_at: 1_000,
            answer_at: None,
            end_at: 2_000,
            duration: 0,
            status: CallStatus::Missed,
            hangup: None,
            recording: Default::default(),
            dtmf: Vec::new(),
        };
        let s = call_start_item(&plan(), "i1", &start).expect("start on");
        let e = call_end_item(&plan(), "i1", &end, Some(4)).expect("end on");
        // Not recorded: nothing for the sender to link.
        assert!(e.body.get(PENDING_FIELD).is_none());
        let recorded = CallRecord {
            recording: crate::calls::Recording::Recorded,
            ..end.clone()
        };
        let r = call_end_item(&plan(), "i1", &recorded, Some(4)).expect("end on");
        assert_eq!(
            r.body[PENDING_FIELD],
            serde_json::json!({"call_id": "c1@h", "state": "recorded", "end_at_ms": 2000})
        );
        // Nodes sharing a database: the request names the node that holds
        // the WAV, for its lead's requests too.
        let clustered = Plan {
            recording_base: "http://node-a:8080".into(),
            ..plan()
        };
        let r = call_end_item(&clustered, "i1", &recorded, Some(4)).expect("end on");
        assert_eq!(r.body[PENDING_FIELD]["base"], "http://node-a:8080");
        let d = Decision::CreateDeal { duplicate_of: None };
        let lead = lead_items(&clustered, "i1", &lead(), &d, Some(3), Some(&recorded));
        assert_eq!(lead[0].body[PENDING_FIELD]["base"], "http://node-a:8080");
        assert_eq!(
            (s.key.as_str(), e.key.as_str()),
            ("i1-call-c1@h-start", "i1-call-c1@h-end")
        );
        assert_eq!(s.order_key, e.order_key);
        assert_eq!(s.body["status"], "");
        assert_eq!(e.body["status"], "NOANSWER");
        let off = Plan::default();
        assert!(call_start_item(&off, "i1", &start).is_none());
        assert!(call_end_item(&off, "i1", &end, None).is_none());
        // Bitrix24: the end waits for its deal and names it.
        let on_deals = Plan {
            calls_on_deals: true,
            ..plan()
        };
        let e = call_end_item(&on_deals, "i1", &end, Some(4)).expect("end on");
        assert_eq!((e.order_key.as_str(), e.deal_ref), ("deal-4", Some(4)));
        let e = call_end_item(&on_deals, "i1", &end, None).expect("end on");
        assert_eq!((e.order_key.as_str(), e.deal_ref), ("call-c1@h", None));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let r = Retry {
            initial_ms: 1_000,
            max_ms: 8_000,
            max_age_hours: 1,
        };
        for (attempts, step) in [
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (4, 8_000),
            (9, 8_000),
            (200, 8_000),
        ] {
            assert_eq!(
                r.delay_ms(attempts, None, 0.0),
                step / 2,
                "attempt {attempts}"
            );
            assert_eq!(
                r.delay_ms(attempts, None, 0.999_999),
                step - 1,
                "attempt {attempts}"
            );
        }
        assert_eq!(r.delay_ms(1, Some(30_000), 0.5), 30_000, "Retry-After wins");
        assert_eq!(r.delay_ms(1, Some(u64::MAX), 0.5), 3_600_000);
        assert!(!r.expired(0, 3_599_999));
        assert!(r.expired(0, 3_600_000));
    }
}
