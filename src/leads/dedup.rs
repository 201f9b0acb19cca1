//! The lead decision of SPEC L-3 to L-5 as a pure function of (lead, the
//! history it needs, settings, now). The pipeline fetches the candidates
//! and records the outcome atomically; nothing here touches a store.

/// Status group of a deal (SPEC L-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    NotCounted,
    InProgress,
    Paid,
    Cancelled,
}

impl Group {
    pub fn parse(s: &str) -> Option<Group> {
        match s {
            "not_counted" => Some(Group::NotCounted),
            "in_progress" => Some(Group::InProgress),
            "paid" => Some(Group::Paid),
            "cancelled" => Some(Group::Cancelled),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Group::NotCounted => "not_counted",
            Group::InProgress => "in_progress",
            Group::Paid => "paid",
            Group::Cancelled => "cancelled",
        }
    }
    /// Paid and cancelled deals are never duplicate candidates (L-3).
    fn closed(self) -> bool {
        matches!(self, Group::Paid | Group::Cancelled)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeadKind {
    Call,
    Form,
}

/// What L-3 compares: title, name, phone (normalised), email (lowercased),
/// visit id. Empty strings for what a lead does not have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub title: String,
    pub name: String,
    pub phone: String,
    pub email: String,
    pub visit: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lead {
    pub kind: LeadKind,
    pub who: Identity,
    /// Unix seconds.
    pub at: i64,
}

/// A lead accepted earlier (it created a deal), with that deal's group now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriorLead {
    pub id: i64,
    pub who: Identity,
    pub accepted_at: i64,
    pub deal_group: Group,
    /// The deal it created: a repeat of the lead is that deal's.
    pub deal: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deal {
    pub id: i64,
    pub who: Identity,
    pub created_at: i64,
    pub group: Group,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Task,
    Comment,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCheck {
    /// `[dedup.client]` present and on.
    pub enabled: bool,
    pub by_phone: bool,
    pub by_email: bool,
    /// 0 means 90 (L-4).
    pub period_days: i64,
    pub action: Action,
    pub groups: Vec<Group>,
}

impl Default for ClientCheck {
    fn default() -> Self {
        ClientCheck {
            enabled: false,
            by_phone: true,
            by_email: true,
            period_days: 0,
            action: Action::Comment,
            groups: vec![Group::NotCounted, Group::InProgress],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub check_in_progress: bool,
    pub append_to_duplicates: bool,
    pub client: ClientCheck,
    pub create_deals_from_calls: bool,
    pub create_deal_even_if_client_exists: bool,
    pub create_deal_even_if_in_progress: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            check_in_progress: false,
            append_to_duplicates: false,
            client: ClientCheck::default(),
            create_deals_from_calls: true,
            create_deal_even_if_client_exists: false,
            create_deal_even_if_in_progress: false,
        }
    }
}

/// Which earlier record a duplicate is a duplicate of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Original {
    Lead(i64),
    Deal(i64),
}

impl Original {
    /// The lead log's words for it (SPEC L-7).
    pub fn describe(self) -> String {
        match self {
            Original::Lead(n) => format!("duplicate of lead {n}"),
            Original::Deal(n) => format!("duplicate of deal {n}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A new deal; `duplicate_of` set when L-3 matched and
    /// `append_to_duplicates` asked for the deal anyway (with a comment
    /// naming the original).
    CreateDeal { duplicate_of: Option<Original> },
    /// L-3: logged, nothing sent.
    Duplicate(Original),
    /// L-4 / L-5: no deal; the action is applied to this existing deal.
    Attach { deal: i64, action: Action },
    /// L-5: `create_deals_from_calls = false`.
    NoDealFromCalls,
}

/// Whether L-3 can take this lead for a repeat at all: it needs something
/// that names a person. A phone or an e-mail does; for a form lead so
/// does its visit (the same form sent twice from one visit is a double
/// submission). A call without a phone (a withheld number, SPEC T-5) has
/// nothing: two withheld calls share title and empty phone, yet are
/// anybody's, so each is its own lead; likewise a form with nothing but a
/// title and a name.
pub fn identifiable(lead: &Lead) -> bool {
    let w = &lead.who;
    !w.phone.is_empty()
        || !w.email.is_empty()
        || (lead.kind == LeadKind::Form && !w.visit.is_empty())
}

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;
/// L-3: an accepted lead this recent is the same lead.
pub const SAME_LEAD_WINDOW: i64 = 12 * HOUR;
/// L-3: a deal in progress this recent is the same deal.
pub const SAME_DEAL_WINDOW: i64 = 30 * DAY;
/// L-4: `period_days = 0` means this many days.
pub const DEFAULT_CLIENT_DAYS: i64 = 90;

/// L-4's window in seconds.
pub fn client_window(c: &ClientCheck) -> i64 {
    let days = if c.period_days == 0 {
        DEFAULT_CLIENT_DAYS
    } else {
        c.period_days
    };
    days * DAY
}

/// The oldest history `decide` can use for this lead, so a store fetches
/// no more: (accepted leads created since, same-lead deals created
/// since). The client's deals (by phone or e-mail) are fetched without a
/// time bound (the most recent are enough); the windows are applied here.
pub fn history_since(lead: &Lead, s: &Settings) -> (i64, i64) {
    (
        lead.at - SAME_LEAD_WINDOW,
        lead.at - SAME_DEAL_WINDOW.max(client_window(&s.client)),
    )
}

/// The most deals a store reads of one part of a lead's history (the
/// client's by phone, by e-mail, the same-lead deals): the most recent.
pub const HISTORY_PART_LIMIT: usize = 100;

/// Whether a store must read the same-lead deals (title, name and visit)
/// of a lead after reading `by_phone` deals by its phone and `by_email`
/// by its e-mail. `decide` takes a deal only if its whole identity is the
/// lead's (L-3) or it is the client's (L-4, L-5: same phone or e-mail),
/// so for a lead with a phone or an e-mail such a deal is among that
/// phone's or e-mail's deals, which were read in full unless they
/// stopped at the limit. Issue 15: the same-lead read was an index probe
/// (SQLite) or a round trip (PostgreSQL) per lead that never found
/// anything new.
pub fn same_lead_deals_needed(phone: &str, email: &str, by_phone: usize, by_email: usize) -> bool {
    (phone.is_empty() && email.is_empty())
        || (!phone.is_empty() && by_phone >= HISTORY_PART_LIMIT)
        || (!email.is_empty() && by_email >= HISTORY_PART_LIMIT)
}

/// SPEC L-3 to L-5. `leads` and `deals` may hold more than the candidates;
/// the windows and groups are applied here. `deals` are the client's
/// deals as far as the store could find them (by phone or email).
///
/// A window bounds history from below only: what the store holds when the
/// lead is decided is earlier than the lead in the order that counts
/// (L-6), even when its time is later than the lead's. Leads are stamped
/// when they arrive and decided in turn, so a lead of one second can be
/// decided after one of the next, on one node (its HTTP handlers race to
/// the decision queue) or on several (each with its own clock); ignoring
/// such "future" history made a second deal for one client.
pub fn decide(lead: &Lead, leads: &[PriorLead], deals: &[Deal], s: &Settings) -> Decision {
    let who = identifiable(lead);
    // L-3: the same lead accepted in the last 12 hours …
    let same_lead = leads
        .iter()
        .filter(|_| who)
        .filter(|p| p.who == lead.who)
        .filter(|p| lead.at - p.accepted_at <= SAME_LEAD_WINDOW)
        .filter(|p| !p.deal_group.closed())
        .filter(|p| !s.check_in_progress || p.deal_group == Group::InProgress)
        .max_by_key(|p| (p.accepted_at, p.id))
        .map(|p| Original::Lead(p.id));
    // … or, failing that, the same deal in progress from the last 30 days.
    let original = same_lead.or_else(|| {
        deals
            .iter()
            .filter(|d| who && d.who == lead.who && d.group == Group::InProgress)
            .filter(|d| lead.at - d.created_at <= SAME_DEAL_WINDOW)
            .max_by_key(|d| (d.created_at, d.id))
            .map(|d| Original::Deal(d.id))
    });
    if let Some(o) = original {
        if !s.append_to_duplicates {
            return Decision::Duplicate(o);
        }
        return Decision::CreateDeal {
            duplicate_of: Some(o),
        };
    }
    match lead.kind {
        LeadKind::Form => client_check(lead, deals, &s.client),
        LeadKind::Call => call_switches(lead, deals, s),
    }
}

/// The client's deals: same normalised phone or lowercased email, by the
/// keys the check uses; closed deals never count (L-3).
fn clients_deals<'a>(
    lead: &'a Lead,
    deals: &'a [Deal],
    by_phone: bool,
    by_email: bool,
) -> impl Iterator<Item = &'a Deal> + 'a {
    deals.iter().filter(move |d| {
        !d.group.closed()
            && ((by_phone && !lead.who.phone.is_empty() && d.who.phone == lead.who.phone)
                || (by_email && !lead.who.email.is_empty() && d.who.email == lead.who.email))
    })
}

fn latest<'a>(it: impl Iterator<Item = &'a Deal>) -> Option<&'a Deal> {
    it.max_by_key(|d| (d.created_at, d.id))
}

/// L-4, for form leads.
fn client_check(lead: &Lead, deals: &[Deal], c: &ClientCheck) -> Decision {
    if !c.enabled {
        return Decision::CreateDeal { duplicate_of: None };
    }
    let candidate = latest(
        clients_deals(lead, deals, c.by_phone, c.by_email)
            .filter(|d| lead.at - d.created_at <= client_window(c))
            .filter(|d| c.groups.contains(&d.group)),
    );
    match candidate {
        Some(d) => Decision::Attach {
            deal: d.id,
            action: c.action,
        },
        None => Decision::CreateDeal { duplicate_of: None },
    }
}

/// L-5, for calls (matched by phone: a call has no email).
fn call_switches(lead: &Lead, deals: &[Deal], s: &Settings) -> Decision {
    if !s.create_deals_from_calls {
        return Decision::NoDealFromCalls;
    }
    let mine: Vec<&Deal> = clients_deals(lead, deals, true, false).collect();
    let in_progress = mine.iter().any(|d| d.group == Group::InProgress);
    let latest_deal = latest(mine.iter().copied());
    let blocked = (in_progress && !s.create_deal_even_if_in_progress)
        || (latest_deal.is_some() && !s.create_deal_even_if_client_exists);
    match latest_deal {
        Some(d) if blocked => Decision::Attach {
            deal: d.id,
            action: s.client.action,
        },
        _ => Decision::CreateDeal { duplicate_of: None },
    }
}

#[cfg(test)]
mod tests;
