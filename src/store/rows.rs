//! What the store hands out: typed rows, one struct per list. The store
//! knows columns, not JSON; `http::json` shapes these for the API (and
//! `siptrack leads`), so a second store only has to fill the same structs.

use std::collections::BTreeMap;

use crate::calls::Recording;
use crate::media::recorder::Dtmf;

/// A lead of the lead log (SPEC L-7). Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeadRow {
    pub id: i64,
    pub created_at: i64,
    /// `call` or `form`.
    pub kind: String,
    pub form: String,
    /// For calls: the tracking number dialed.
    pub dialed: String,
    pub title: String,
    pub name: String,
    pub phone: String,
    pub email: String,
    pub visit_id: String,
    /// The channel it counts for on the overview (`query::CHANNEL_OF_LEAD`):
    /// the console shows and filters by the same word its chart counts.
    pub channel: String,
    pub text: String,
    /// What the decision made of it (`deal 3 created`, `duplicate of …`).
    pub decision: String,
    pub deal_id: Option<i64>,
    /// The lead's first unsettled CRM request, if any.
    pub pending: Option<PendingCrm>,
}

/// An outbox item of a lead that is not delivered yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCrm {
    /// `pending` or `failed` (parked).
    pub state: String,
    pub attempts: i64,
    /// The last attempt's error, empty before the first attempt.
    pub error: String,
}

impl LeadRow {
    /// SPEC L-7: while a lead's CRM request fails, its outcome is the
    /// error (`crm error: …`); the decision stays in `decision`. The
    /// second value is the request's state as the lead log names it.
    pub fn outcome(&self) -> (String, Option<&'static str>) {
        crm_outcome(&self.decision, self.pending.as_ref())
    }
}

/// The rule behind `LeadRow::outcome`, on its own for the table test.
pub fn crm_outcome(decision: &str, pending: Option<&PendingCrm>) -> (String, Option<&'static str>) {
    let Some(p) = pending else {
        return (decision.to_string(), None);
    };
    match (p.state.as_str(), p.error.is_empty()) {
        ("failed", _) => (
            format!(
                "crm error: {} (gave up after {} attempt{})",
                p.error,
                p.attempts,
                if p.attempts == 1 { "" } else { "s" }
            ),
            Some("failed"),
        ),
        (_, true) => (decision.to_string(), Some("queued")),
        (_, false) => (
            format!("crm error: {} (attempt {}, retrying)", p.error, p.attempts),
            Some("retrying"),
        ),
    }
}

/// A call record (SPEC C-2a fields). Times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRow {
    pub call_id: String,
    pub caller: String,
    pub caller_raw: String,
    pub callee: String,
    pub destination: String,
    pub visit_id: Option<String>,
    pub marker: Option<String>,
    pub source: Option<String>,
    /// The visit's data (page, domain, city, utm_*), by the visit's keys.
    pub visit: BTreeMap<String, String>,
    pub invite_at: i64,
    pub answer_at: Option<i64>,
    pub end_at: i64,
    pub duration: i64,
    pub status: String,
    pub hangup: Option<String>,
    pub lead_id: Option<i64>,
    /// Recorded, partial, or not and why (SPEC M-1).
    pub recording: Recording,
    /// The link base of the node holding the WAV (several nodes on one
    /// database); empty: the node answering.
    pub recording_base: String,
    /// Key presses seen in the call's media, in order.
    pub dtmf: Vec<Dtmf>,
}

/// A deal of the local CRM with its tasks and comments. Times are Unix
/// seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DealRow {
    pub id: i64,
    pub created_at: i64,
    pub title: String,
    pub name: String,
    pub phone: String,
    pub email: String,
    pub visit_id: String,
    pub status: String,
    pub group: String,
    /// The CRM's own id, from its answer to deal.create (None with
    /// crm.kind = "local", or until the CRM answered).
    pub crm_id: Option<String>,
    pub tasks: Vec<NoteRow>,
    pub comments: Vec<NoteRow>,
}

/// A task or a comment on a deal, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteRow {
    pub created_at: i64,
    pub text: String,
    /// The recorded call the note is about (its recording is linked).
    pub call: Option<NoteCall>,
}

/// A note's call and its recording, as stored now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteCall {
    pub call_id: String,
    pub recording: Recording,
    /// Unix milliseconds.
    pub end_at: i64,
    /// As [`CallRow::recording_base`].
    pub recording_base: String,
}

/// A CRM request of the outbox (SPEC C-5). Times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub created_at: i64,
    pub target: String,
    pub idempotency_key: String,
    pub event: String,
    pub lead_id: Option<i64>,
    pub deal_ref: Option<i64>,
    pub state: String,
    pub attempts: i64,
    pub next_at: i64,
    pub last_error: String,
    pub done_at: Option<i64>,
    /// As queued: JSON text.
    pub body: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_crm_request_is_the_leads_outcome() {
        let p = |state: &str, attempts, error: &str| PendingCrm {
            state: state.into(),
            attempts,
            error: error.into(),
        };
        for (pending, outcome, crm) in [
            (None, "deal 1 created", None),
            (Some(p("pending", 0, "")), "deal 1 created", Some("queued")),
            (
                Some(p("pending", 2, "timeout")),
                "crm error: timeout (attempt 2, retrying)",
                Some("retrying"),
            ),
            (
                Some(p("failed", 5, "HTTP 500")),
                "crm error: HTTP 500 (gave up after 5 attempts)",
                Some("failed"),
            ),
            (
                Some(p("failed", 1, "HTTP 400")),
                "crm error: HTTP 400 (gave up after 1 attempt)",
                Some("failed"),
            ),
        ] {
            assert_eq!(
                crm_outcome("deal 1 created", pending.as_ref()),
                (outcome.to_string(), crm)
            );
        }
    }
}
