//! What goes into the store for leads, whichever store it is: a lead as
//! the pipeline builds it, the jobs of a recording batch, and what a
//! recorded lead became. How a batch is recorded: `record.rs`.

use crate::calls::CallRecord;
use crate::crm::outbox::CallStart;
use crate::leads::dedup::{Decision, Group, Identity, LeadKind};

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
    /// A call's answer and dialog, kept with its start until its record
    /// is written (another node may close it).
    Answered(crate::calls::AnsweredCall),
}

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
    /// For form leads: what the visits API knows of `who.visit` (marker,
    /// source, utm_*, page, city, domain), for the CRM's `data`.
    pub visit_data: std::collections::BTreeMap<String, String>,
    pub call_id: Option<String>,
    /// Unix seconds.
    pub at: i64,
}

impl NewLead {
    /// The channel a form lead came through, as stored with it: its
    /// visit's marker, else its source; "" when the visit told neither
    /// (and for a call lead, whose call row has them; see
    /// `query::CHANNEL_OF_LEAD`).
    pub fn channel(&self) -> &str {
        ["marker", "source"]
            .iter()
            .filter_map(|k| self.visit_data.get(*k))
            .map(|v| v.trim())
            .find(|v| !v.is_empty())
            .unwrap_or_default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub lead_id: i64,
    pub deal_id: Option<i64>,
    pub outcome: String,
    pub decision: Decision,
    /// The call was recorded before (`interrupted` at a restart; this is
    /// its real end, or a retry after a lost COMMIT): nothing was written,
    /// and the lead and outcome are the earlier record's.
    pub earlier: bool,
}

/// What a new deal's status is, and its group (SPEC L-2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDealStatus {
    pub status: String,
    pub group: Group,
}

/// The deal a status change names (the newest) among those it changed:
/// every deal the CRM knows by that id, when its answers gave one id to
/// several (a CRM that merges duplicates; trial, 2026-12-03: only the
/// oldest changed, and it may be another client's), said in the log.
pub(crate) fn newest_of(crm_id: &str, ids: Vec<i64>) -> Option<i64> {
    if ids.len() > 1 {
        tracing::warn!(crm_id, deals = ?ids, "one CRM deal id names several deals: the status changed on each");
    }
    ids.into_iter().max()
}
