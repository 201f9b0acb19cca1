//! The local CRM (SPEC C-1 `local`): siptrack's own deals with their
//! comments and tasks. They are kept for every `crm.kind`: a webhook
//! CRM's requests name these deals (`deal_ref`) until the CRM answers
//! with its own id. What a lead decision does to them is decided here;
//! the store only holds the rows (`DealBook`). The webhook side of the
//! same decision is `crm::outbox::lead_items`; `store::record` applies
//! both in the decision's transaction.

use crate::leads::dedup::{Action, Original};
use crate::store::leads::{NewDealStatus, NewLead};

/// The local CRM's tables, inside the recording transaction.
pub(crate) trait DealBook {
    type Error;
    /// A deal for the lead `lead_id`, with the status new deals get;
    /// returns its id.
    fn insert_deal(
        &mut self,
        lead: &NewLead,
        status: &NewDealStatus,
        lead_id: i64,
    ) -> Result<i64, Self::Error>;
    /// `call`: the recorded call the note is about, whose recording link
    /// the deals API shows with it.
    fn add_note(
        &mut self,
        deal: i64,
        action: Action,
        at: i64,
        text: &str,
        call: Option<&str>,
    ) -> Result<(), Self::Error>;
}

/// The comment a deal made by a recorded call gets; the deals API adds
/// the link.
pub const RECORDING_NOTE: &str = "Call recording";

/// L-3 with `append_to_duplicates`, or a new client: a deal for the lead
/// (and, for a duplicate, a comment naming the original). Returns the
/// deal and the lead log's outcome. `recorded_call`: the lead is a call
/// with a recording, which gets a comment of its own.
pub(crate) fn create_deal<B: DealBook>(
    book: &mut B,
    lead: &NewLead,
    status: &NewDealStatus,
    lead_id: i64,
    duplicate_of: Option<Original>,
    recorded_call: Option<&str>,
) -> Result<(i64, String), B::Error> {
    let deal = book.insert_deal(lead, status, lead_id)?;
    let mut outcome = format!("deal {deal} created");
    if let Some(o) = duplicate_of {
        let dup = o.describe();
        book.add_note(
            deal,
            Action::Comment,
            lead.at,
            &format!("Duplicate: {dup}"),
            None,
        )?;
        outcome = format!("{outcome} ({dup})");
    }
    if let Some(call) = recorded_call {
        book.add_note(deal, Action::Comment, lead.at, RECORDING_NOTE, Some(call))?;
    }
    Ok((deal, outcome))
}

/// L-4 / L-5: the lead goes onto an existing deal as a comment or a
/// task (naming its call's recording, if any).
pub(crate) fn attach<B: DealBook>(
    book: &mut B,
    deal: i64,
    action: Action,
    lead: &NewLead,
    recorded_call: Option<&str>,
) -> Result<(), B::Error> {
    book.add_note(deal, action, lead.at, &note(lead), recorded_call)
}

/// The lead log's outcome of a lead attached to `deal`.
pub fn attached(deal: i64) -> String {
    format!("duplicate of deal {deal}")
}

/// The text a comment or task on an existing deal carries: the lead's
/// title, and its text if any.
pub fn note(lead: &NewLead) -> String {
    let mut t = lead.who.title.clone();
    if !lead.text.is_empty() {
        t.push_str(": ");
        t.push_str(&lead.text);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leads::dedup::{Group, Identity};

    /// Deals and notes as a list of what was written.
    #[derive(Default)]
    struct Book {
        written: Vec<String>,
    }

    impl DealBook for Book {
        type Error = std::convert::Infallible;
        fn insert_deal(
            &mut self,
            lead: &NewLead,
            status: &NewDealStatus,
            lead_id: i64,
        ) -> Result<i64, Self::Error> {
            self.written.push(format!(
                "deal for lead {lead_id}: {} ({})",
                lead.who.title, status.status
            ));
            Ok(7)
        }
        fn add_note(
            &mut self,
            deal: i64,
            action: Action,
            at: i64,
            text: &str,
            call: Option<&str>,
        ) -> Result<(), Self::Error> {
            let about = call.map_or(String::new(), |c| format!(" [call {c}]"));
            self.written
                .push(format!("{action:?} on deal {deal} at {at}: {text}{about}"));
            Ok(())
        }
    }

    fn lead(text: &str) -> NewLead {
        NewLead {
            who: Identity {
                title: "Order".into(),
                ..Identity::default()
            },
            text: text.into(),
            at: 100,
            ..NewLead::default()
        }
    }

    #[test]
    fn what_a_decision_writes_and_how_the_log_names_it() {
        let status = NewDealStatus {
            status: "NEW".into(),
            group: Group::NotCounted,
        };
        let mut b = Book::default();
        assert_eq!(
            create_deal(&mut b, &lead(""), &status, 3, None, None),
            Ok((7, "deal 7 created".to_string()))
        );
        assert_eq!(
            create_deal(&mut b, &lead(""), &status, 4, Some(Original::Lead(3)), None),
            Ok((7, "deal 7 created (duplicate of lead 3)".to_string()))
        );
        assert_eq!(
            attach(&mut b, 7, Action::Task, &lead("call back"), None),
            Ok(())
        );
        assert_eq!(
            create_deal(&mut b, &lead(""), &status, 5, None, Some("c1@h")),
            Ok((7, "deal 7 created".to_string()))
        );
        assert_eq!(
            attach(&mut b, 7, Action::Comment, &lead(""), Some("c2@h")),
            Ok(())
        );
        assert_eq!(attached(7), "duplicate of deal 7");
        assert_eq!(
            b.written,
            [
                "deal for lead 3: Order (NEW)",
                "deal for lead 4: Order (NEW)",
                "Comment on deal 7 at 100: Duplicate: duplicate of lead 3",
                "Task on deal 7 at 100: Order: call back",
                "deal for lead 5: Order (NEW)",
                "Comment on deal 7 at 100: Call recording [call c1@h]",
                "Comment on deal 7 at 100: Order [call c2@h]",
            ]
        );
    }
}
