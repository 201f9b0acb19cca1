//! The CRM outbox (SPEC C-5), whichever store holds it: items are queued
//! inside the decision's transaction (`record.rs`); the worker takes the
//! due ones (`DueItem`) and settles each attempt (`Settle`).

use serde_json::{json, Value};

use crate::crm::outbox::Target;

/// Delivered items are kept this long (for the lead log), then deleted.
pub const KEEP_DONE_MS: i64 = 7 * 24 * 3_600_000;

/// An item queued, claimed or rescheduled more than this after "now" was
/// stamped before the clock was stepped back (a VM that booted with its
/// clock hours ahead, then NTP): its due time is that far off too, so it
/// is due at once rather than hours late (trial, 2026-12-02: a one-hour
/// step held every CRM retry for the hour). Larger than any skew between
/// NTP-synced nodes, so another node's ordinary items are never hurried;
/// leases are left alone (hurrying another node's claim would deliver it
/// twice).
pub const CLOCK_STEP_MS: i64 = 60_000;

/// Whether a claim at `now_ms` should first make items stamped past the
/// step due (`CLOCK_STEP_MS`): once a minute, and at once when the clock
/// went back since the last time. A full scan of the pending items, kept
/// out of every claim: the claim's own look-up stays on the
/// `(state, next_at)` index (a CRM down for hours queues 100,000s).
pub fn unstep_due(last_ms: &std::sync::atomic::AtomicI64, now_ms: i64) -> bool {
    use std::sync::atomic::Ordering;
    let last = last_ms.load(Ordering::Relaxed);
    if last == 0 || now_ms < last || now_ms - last >= CLOCK_STEP_MS {
        last_ms.store(now_ms, Ordering::Relaxed);
        true
    } else {
        false
    }
}

/// The un-step: items queued, claimed or rescheduled more than the step
/// after now are made due now (`?1` now, `?2` the step; the same text for
/// SQLite and PostgreSQL's `$1`, `$2` after `replace`).
pub const UNSTEP_SQL: &str = "UPDATE outbox SET next_at = ?1, touched_at = ?1
     WHERE state = 'pending' AND next_at > ?1
       AND COALESCE(touched_at, created_at) > ?1 + ?2";

/// An item ready to be attempted.
#[derive(Clone, Debug)]
pub struct DueItem {
    pub id: i64,
    pub target: Target,
    pub key: String,
    pub event: String,
    pub body: String,
    pub attempts: u32,
    pub created_at: i64,
    pub deal_ref: Option<i64>,
    /// The CRM's id of `deal_ref`, once its deal.create was answered.
    pub crm_deal_id: Option<String>,
    /// Whether `deal_ref`'s deal was (or is being) created through the
    /// outbox; deals made before the webhook was configured were not, and
    /// are named by siptrack's id.
    pub deal_created_here: bool,
}

impl DueItem {
    pub fn is_deal_create(&self) -> bool {
        self.event == "deal.create"
    }

    /// The body as sent: actions on a deal carry the CRM's `deal_id`.
    /// None while that id is not known.
    pub fn body_to_send(&self) -> Option<String> {
        let (Some(deal), false) = (self.deal_ref, self.is_deal_create()) else {
            return Some(self.body.clone());
        };
        let id = match (&self.crm_deal_id, self.deal_created_here) {
            (Some(id), _) => id.clone(),
            (None, false) => deal.to_string(),
            (None, true) => return None,
        };
        let mut v: Value = serde_json::from_str(&self.body).ok()?;
        v["deal_id"] = json!(id);
        Some(v.to_string())
    }
}

/// How an attempt is settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settle {
    Done {
        /// For a deal.create: (siptrack's deal, the CRM's id).
        crm_deal: Option<(i64, String)>,
    },
    Retry {
        error: String,
        next_at: i64,
        /// For a deal.create whose deal the CRM made though the rest
        /// failed (`Outcome::Partly`): (siptrack's deal, the CRM's id).
        crm_deal: Option<(i64, String)>,
    },
    Park {
        error: String,
        crm_deal: Option<(i64, String)>,
    },
}

impl Settle {
    /// The CRM's id of a deal this result learnt: (siptrack's deal, it).
    pub fn crm_deal(&self) -> Option<&(i64, String)> {
        match self {
            Settle::Done { crm_deal }
            | Settle::Retry { crm_deal, .. }
            | Settle::Park { crm_deal, .. } => crm_deal.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_is_unstepped_once_a_minute_and_when_the_clock_went_back() {
        let last = std::sync::atomic::AtomicI64::new(0);
        for (now, want) in [
            (1_000_000, true),
            (1_000_001, false),
            (1_059_999, false),
            (1_060_000, true),
            (1_060_500, false),
            (1_000_000, true),
            (1_000_100, false),
        ] {
            assert_eq!(unstep_due(&last, now), want, "{now}");
        }
    }

    fn due(event: &str, crm: Option<&str>, created_here: bool) -> DueItem {
        DueItem {
            id: 1,
            target: Target::Lead,
            key: "k".into(),
            event: event.into(),
            body: r#"{"event":"x","id":"5"}"#.into(),
            attempts: 0,
            created_at: 0,
            deal_ref: Some(12),
            crm_deal_id: crm.map(str::to_string),
            deal_created_here: created_here,
        }
    }

    #[test]
    fn actions_carry_the_crms_deal_id_once_known() {
        let sent = |d: DueItem| {
            d.body_to_send()
                .map(|b| serde_json::from_str::<Value>(&b).expect("json"))
        };
        assert!(sent(due("deal.create", None, true))
            .expect("create")
            .get("deal_id")
            .is_none());
        assert_eq!(
            sent(due("deal.task", Some("CRM-9"), true)).expect("known")["deal_id"],
            "CRM-9"
        );
        assert_eq!(
            sent(due("deal.comment", None, false)).expect("older deal")["deal_id"],
            "12"
        );
        assert!(
            sent(due("deal.task", None, true)).is_none(),
            "waits for the create's answer"
        );
    }
}
