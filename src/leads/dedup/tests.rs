//! Issue 4, item 1: one row per switch and edge of SPEC L-3 to L-5.

use super::*;

const NOW: i64 = 1_800_000_000;
const H: i64 = 3600;
const D: i64 = 24 * H;

fn who() -> Identity {
    Identity {
        title: "Incoming call from 79161234567".into(),
        name: "Ivan".into(),
        phone: "79161234567".into(),
        email: "ivan@example.com".into(),
        visit: "v1".into(),
    }
}

fn lead(kind: LeadKind) -> Lead {
    Lead {
        kind,
        who: who(),
        at: NOW,
    }
}

fn prior(id: i64, ago: i64, group: Group) -> PriorLead {
    PriorLead {
        id,
        who: who(),
        accepted_at: NOW - ago,
        deal_group: group,
        deal: id + 100,
    }
}

fn deal(id: i64, ago: i64, group: Group) -> Deal {
    Deal {
        id,
        who: who(),
        created_at: NOW - ago,
        group,
    }
}

/// A deal of the same client (same phone and email) for another lead.
fn client_deal(id: i64, ago: i64, group: Group) -> Deal {
    let mut d = deal(id, ago, group);
    d.who.title = "Order #1".into();
    d.who.visit = "other-visit".into();
    d
}

fn with<T>(mut t: T, f: impl FnOnce(&mut T)) -> T {
    f(&mut t);
    t
}

fn client_on(f: impl FnOnce(&mut ClientCheck)) -> Settings {
    let mut s = Settings::default();
    s.client.enabled = true;
    f(&mut s.client);
    s
}

/// A call from a withheld number: no phone, no e-mail, no visit.
fn withheld<T: HasWho>(mut t: T) -> T {
    let w = t.who();
    w.title = "Incoming call from a withheld number".into();
    w.name.clear();
    w.phone.clear();
    w.email.clear();
    w.visit.clear();
    t
}

/// A form lead with nothing but its title and name.
fn bare<T: HasWho>(mut t: T) -> T {
    let w = t.who();
    w.phone.clear();
    w.email.clear();
    w.visit.clear();
    t
}

trait HasWho {
    fn who(&mut self) -> &mut Identity;
}
impl HasWho for Lead {
    fn who(&mut self) -> &mut Identity {
        &mut self.who
    }
}
impl HasWho for PriorLead {
    fn who(&mut self) -> &mut Identity {
        &mut self.who
    }
}
impl HasWho for Deal {
    fn who(&mut self) -> &mut Identity {
        &mut self.who
    }
}

use Decision::*;
use Group::*;
use LeadKind::*;

const NEW: Decision = CreateDeal { duplicate_of: None };

#[test]
fn decision_table() {
    let d = Settings::default;
    #[allow(clippy::type_complexity)]
    let rows: Vec<(&str, Lead, Vec<PriorLead>, Vec<Deal>, Settings, Decision)> = vec![
        // ---- L-3: the 12-hour lead match -------------------------------
        ("no history", lead(Form), vec![], vec![], d(), NEW),
        (
            "same lead 1 h ago",
            lead(Form),
            vec![prior(7, H, NotCounted)],
            vec![],
            d(),
            Duplicate(Original::Lead(7)),
        ),
        (
            "same lead exactly 12 h ago",
            lead(Form),
            vec![prior(7, 12 * H, NotCounted)],
            vec![],
            d(),
            Duplicate(Original::Lead(7)),
        ),
        (
            "same lead 12 h + 1 s ago",
            lead(Form),
            vec![prior(7, 12 * H + 1, NotCounted)],
            vec![],
            d(),
            NEW,
        ),
        (
            "title differs",
            with(lead(Form), |l| l.who.title = "Callback".into()),
            vec![prior(7, H, NotCounted)],
            vec![],
            d(),
            NEW,
        ),
        (
            "name differs",
            with(lead(Form), |l| l.who.name = "Petr".into()),
            vec![prior(7, H, NotCounted)],
            vec![],
            d(),
            NEW,
        ),
        (
            "phone differs",
            with(lead(Form), |l| l.who.phone = "79160000000".into()),
            vec![prior(7, H, NotCounted)],
            vec![],
            d(),
            NEW,
        ),
        (
            "email differs",
            with(lead(Form), |l| l.who.email = "x@example.com".into()),
            vec![prior(7, H, NotCounted)],
            vec![],
            d(),
            NEW,
        ),
        (
            "visit differs",
            with(lead(Form), |l| l.who.visit = "v2".into()),
            vec![prior(7, H, NotCounted)],
            vec![],
            d(),
            NEW,
        ),
        (
            "the latest of two matches",
            lead(Form),
            vec![prior(7, 5 * H, InProgress), prior(9, H, NotCounted)],
            vec![],
            d(),
            Duplicate(Original::Lead(9)),
        ),
        (
            "earlier lead's deal paid: never a candidate",
            lead(Form),
            vec![prior(7, H, Paid)],
            vec![],
            d(),
            NEW,
        ),
        (
            "earlier lead's deal cancelled: never a candidate",
            lead(Form),
            vec![prior(7, H, Cancelled)],
            vec![],
            d(),
            NEW,
        ),
        (
            "a call duplicates like a form",
            lead(Call),
            vec![prior(7, H, NotCounted)],
            vec![],
            d(),
            Duplicate(Original::Lead(7)),
        ),
        // ---- check_in_progress narrows the 12-hour check ---------------
        (
            "check_in_progress: not_counted deal no longer matches",
            lead(Form),
            vec![prior(7, H, NotCounted)],
            vec![],
            Settings {
                check_in_progress: true,
                ..d()
            },
            NEW,
        ),
        (
            "check_in_progress: in_progress deal matches",
            lead(Form),
            vec![prior(7, H, InProgress)],
            vec![],
            Settings {
                check_in_progress: true,
                ..d()
            },
            Duplicate(Original::Lead(7)),
        ),
        // ---- L-3 needs someone to match: withheld callers, bare forms ---
        (
            "withheld call: the same withheld call 1 h ago is not the same caller",
            withheld(lead(Call)),
            vec![withheld(prior(7, H, NotCounted))],
            vec![],
            d(),
            NEW,
        ),
        (
            "withheld call: nor is a withheld deal in progress",
            withheld(lead(Call)),
            vec![],
            vec![withheld(deal(3, D, InProgress))],
            d(),
            NEW,
        ),
        (
            "withheld call: never attached to a deal without phone",
            withheld(lead(Call)),
            vec![],
            vec![withheld(client_deal(3, D, InProgress))],
            d(),
            NEW,
        ),
        (
            "withheld call with a visit: still its own lead",
            with(withheld(lead(Call)), |l| l.who.visit = "v1".into()),
            vec![with(withheld(prior(7, H, NotCounted)), |p| {
                p.who.visit = "v1".into()
            })],
            vec![],
            d(),
            NEW,
        ),
        (
            "form without phone and e-mail, same visit: a double submission",
            with(lead(Form), |l| {
                l.who.phone.clear();
                l.who.email.clear()
            }),
            vec![with(prior(7, H, NotCounted), |p| {
                p.who.phone.clear();
                p.who.email.clear()
            })],
            vec![],
            d(),
            Duplicate(Original::Lead(7)),
        ),
        (
            "form without phone, e-mail and visit: nobody to match",
            bare(lead(Form)),
            vec![bare(prior(7, H, NotCounted))],
            vec![bare(deal(3, D, InProgress))],
            d(),
            NEW,
        ),
        (
            "form with only an e-mail still matches",
            with(lead(Form), |l| {
                l.who.phone.clear();
                l.who.visit.clear()
            }),
            vec![with(prior(7, H, NotCounted), |p| {
                p.who.phone.clear();
                p.who.visit.clear()
            })],
            vec![],
            d(),
            Duplicate(Original::Lead(7)),
        ),
        // ---- L-3: the 30-day in-progress deal match --------------------
        (
            "same deal in progress 10 days old",
            lead(Form),
            vec![],
            vec![deal(3, 10 * D, InProgress)],
            d(),
            Duplicate(Original::Deal(3)),
        ),
        (
            "same deal in progress exactly 30 days old",
            lead(Form),
            vec![],
            vec![deal(3, 30 * D, InProgress)],
            d(),
            Duplicate(Original::Deal(3)),
        ),
        (
            "same deal in progress 30 days + 1 s old",
            lead(Form),
            vec![],
            vec![deal(3, 30 * D + 1, InProgress)],
            d(),
            NEW,
        ),
        (
            "same deal not counted: no deal match",
            lead(Form),
            vec![],
            vec![deal(3, D, NotCounted)],
            d(),
            NEW,
        ),
        (
            "same deal paid: never",
            lead(Form),
            vec![],
            vec![deal(3, D, Paid)],
            d(),
            NEW,
        ),
        (
            "same deal cancelled: never",
            lead(Form),
            vec![],
            vec![deal(3, D, Cancelled)],
            d(),
            NEW,
        ),
        (
            "deal match only when the lead check fails",
            lead(Form),
            vec![prior(7, H, NotCounted)],
            vec![deal(3, D, InProgress)],
            d(),
            Duplicate(Original::Lead(7)),
        ),
        (
            "deal with another visit: no deal match",
            lead(Form),
            vec![],
            vec![client_deal(3, D, InProgress)],
            d(),
            NEW,
        ),
        // ---- append_to_duplicates ---------------------------------------
        (
            "append: lead duplicate still creates a deal",
            lead(Form),
            vec![prior(7, H, NotCounted)],
            vec![],
            Settings {
                append_to_duplicates: true,
                ..d()
            },
            CreateDeal {
                duplicate_of: Some(Original::Lead(7)),
            },
        ),
        (
            "append: deal duplicate still creates a deal",
            lead(Call),
            vec![],
            vec![deal(3, D, InProgress)],
            Settings {
                append_to_duplicates: true,
                ..d()
            },
            CreateDeal {
                duplicate_of: Some(Original::Deal(3)),
            },
        ),
        // ---- L-4: client check for forms ----------------------------------
        (
            "client check off: a client deal does not matter",
            lead(Form),
            vec![],
            vec![client_deal(3, D, InProgress)],
            d(),
            NEW,
        ),
        (
            "client check by phone: comment on the deal",
            lead(Form),
            vec![],
            vec![client_deal(3, D, NotCounted)],
            client_on(|c| c.by_email = false),
            Attach {
                deal: 3,
                action: Action::Comment,
            },
        ),
        (
            "client check by phone: email-only match is no match",
            lead(Form),
            vec![],
            vec![with(client_deal(3, D, NotCounted), |x| {
                x.who.phone = "7000".into()
            })],
            client_on(|c| c.by_email = false),
            NEW,
        ),
        (
            "client check by email, case already folded",
            lead(Form),
            vec![],
            vec![with(client_deal(3, D, NotCounted), |x| {
                x.who.phone = "7000".into()
            })],
            client_on(|c| c.by_phone = false),
            Attach {
                deal: 3,
                action: Action::Comment,
            },
        ),
        (
            "client check by email: phone-only match is no match",
            lead(Form),
            vec![],
            vec![with(client_deal(3, D, NotCounted), |x| {
                x.who.email = "other@example.com".into()
            })],
            client_on(|c| c.by_phone = false),
            NEW,
        ),
        (
            "client check by both: either key finds the client",
            lead(Form),
            vec![],
            vec![with(client_deal(3, D, NotCounted), |x| {
                x.who.email = "other@example.com".into()
            })],
            client_on(|_| {}),
            Attach {
                deal: 3,
                action: Action::Comment,
            },
        ),
        (
            "client check with action task",
            lead(Form),
            vec![],
            vec![client_deal(3, D, InProgress)],
            client_on(|c| c.action = Action::Task),
            Attach {
                deal: 3,
                action: Action::Task,
            },
        ),
        (
            "client check: most recent candidate",
            lead(Form),
            vec![],
            vec![
                client_deal(3, 5 * D, NotCounted),
                client_deal(4, D, InProgress),
                client_deal(5, 9 * D, NotCounted),
            ],
            client_on(|_| {}),
            Attach {
                deal: 4,
                action: Action::Comment,
            },
        ),
        (
            "client check: period 0 means 90 days, day 90 inside",
            lead(Form),
            vec![],
            vec![client_deal(3, 90 * D, NotCounted)],
            client_on(|c| c.period_days = 0),
            Attach {
                deal: 3,
                action: Action::Comment,
            },
        ),
        (
            "client check: period 0 means 90 days, day 90 + 1 s outside",
            lead(Form),
            vec![],
            vec![client_deal(3, 90 * D + 1, NotCounted)],
            client_on(|c| c.period_days = 0),
            NEW,
        ),
        (
            "client check: period 7, 7 days inside",
            lead(Form),
            vec![],
            vec![client_deal(3, 7 * D, NotCounted)],
            client_on(|c| c.period_days = 7),
            Attach {
                deal: 3,
                action: Action::Comment,
            },
        ),
        (
            "client check: period 7, 8 days outside",
            lead(Form),
            vec![],
            vec![client_deal(3, 8 * D, NotCounted)],
            client_on(|c| c.period_days = 7),
            NEW,
        ),
        (
            "client check: group not searched",
            lead(Form),
            vec![],
            vec![client_deal(3, D, InProgress)],
            client_on(|c| c.groups = vec![NotCounted]),
            NEW,
        ),
        (
            "client check: paid never, even if listed",
            lead(Form),
            vec![],
            vec![client_deal(3, D, Paid)],
            client_on(|c| c.groups = vec![Paid, InProgress]),
            NEW,
        ),
        (
            "client check: no phone and no email, no match",
            with(lead(Form), |l| {
                l.who.phone.clear();
                l.who.email.clear();
            }),
            vec![],
            vec![with(client_deal(3, D, NotCounted), |x| {
                x.who.phone.clear();
                x.who.email.clear();
            })],
            client_on(|_| {}),
            NEW,
        ),
        (
            "client check does not apply to calls",
            lead(Call),
            vec![],
            vec![],
            client_on(|_| {}),
            NEW,
        ),
        // ---- L-5: calls ------------------------------------------------------
        (
            "calls: deals disabled",
            lead(Call),
            vec![],
            vec![],
            Settings {
                create_deals_from_calls: false,
                ..d()
            },
            NoDealFromCalls,
        ),
        (
            "calls: deals disabled, duplicate still logged as such",
            lead(Call),
            vec![prior(7, H, NotCounted)],
            vec![],
            Settings {
                create_deals_from_calls: false,
                ..d()
            },
            Duplicate(Original::Lead(7)),
        ),
        (
            "calls: new client gets a deal",
            lead(Call),
            vec![],
            vec![],
            d(),
            NEW,
        ),
        (
            "calls: client exists: comment on the latest deal",
            lead(Call),
            vec![],
            vec![
                client_deal(3, 20 * D, NotCounted),
                client_deal(4, 2 * D, NotCounted),
            ],
            d(),
            Attach {
                deal: 4,
                action: Action::Comment,
            },
        ),
        (
            "calls: client exists, override",
            lead(Call),
            vec![],
            vec![client_deal(3, D, NotCounted)],
            Settings {
                create_deal_even_if_client_exists: true,
                ..d()
            },
            NEW,
        ),
        (
            "calls: in-progress deal blocks even with the client override",
            lead(Call),
            vec![],
            vec![client_deal(3, D, InProgress)],
            Settings {
                create_deal_even_if_client_exists: true,
                ..d()
            },
            Attach {
                deal: 3,
                action: Action::Comment,
            },
        ),
        (
            "calls: both overrides create a deal",
            lead(Call),
            vec![],
            vec![client_deal(3, D, InProgress)],
            Settings {
                create_deal_even_if_client_exists: true,
                create_deal_even_if_in_progress: true,
                ..d()
            },
            NEW,
        ),
        (
            "calls: in-progress override alone, client still exists",
            lead(Call),
            vec![],
            vec![client_deal(3, D, InProgress)],
            Settings {
                create_deal_even_if_in_progress: true,
                ..d()
            },
            Attach {
                deal: 3,
                action: Action::Comment,
            },
        ),
        (
            "calls: the action comes from the client check",
            lead(Call),
            vec![],
            vec![client_deal(3, D, NotCounted)],
            with(d(), |s| s.client.action = Action::Task),
            Attach {
                deal: 3,
                action: Action::Task,
            },
        ),
        (
            "calls: only a paid deal: a new deal",
            lead(Call),
            vec![],
            vec![client_deal(3, D, Paid)],
            d(),
            NEW,
        ),
        (
            "calls: only a cancelled deal: a new deal",
            lead(Call),
            vec![],
            vec![client_deal(3, D, Cancelled)],
            d(),
            NEW,
        ),
        (
            "calls: matched by phone, not email",
            with(lead(Call), |l| l.who.phone = "79990000000".into()),
            vec![],
            vec![client_deal(3, D, NotCounted)],
            d(),
            NEW,
        ),
        // L-6: whatever is recorded when a lead is decided is history,
        // even when its time is later than the lead's: another node's
        // clock, or a lead stamped in one second and decided after a
        // lead of the next second (issue 15's CI run: two deals for one
        // client across three nodes).
        (
            "calls: a client's deal stamped after the call still counts",
            lead(Call),
            vec![],
            vec![client_deal(3, -1, NotCounted)],
            d(),
            Attach {
                deal: 3,
                action: Action::Comment,
            },
        ),
        (
            "the same lead accepted a second after this one's time",
            lead(Form),
            vec![prior(7, -1, NotCounted)],
            vec![deal(3, -1, NotCounted)],
            d(),
            Duplicate(Original::Lead(7)),
        ),
        (
            "the same deal in progress stamped a second later",
            lead(Form),
            vec![],
            vec![deal(3, -1, InProgress)],
            d(),
            Duplicate(Original::Deal(3)),
        ),
        (
            "client check: the client's deal stamped a minute later",
            lead(Form),
            vec![],
            vec![client_deal(3, -60, NotCounted)],
            client_on(|_| {}),
            Attach {
                deal: 3,
                action: Action::Comment,
            },
        ),
    ];
    assert!(rows.len() >= 40, "{} rows", rows.len());
    for (name, lead, leads, deals, settings, expected) in rows {
        assert_eq!(decide(&lead, &leads, &deals, &settings), expected, "{name}");
    }
}

#[test]
fn the_store_fetches_history_no_older_than_the_windows() {
    let client = |days: i64| client_on(|c| c.period_days = days);
    for (name, settings, leads_since, deals_since) in [
        (
            "default: 12 h, and the default client period (90 d)",
            Settings::default(),
            NOW - 12 * H,
            NOW - 90 * D,
        ),
        (
            "client check at 0 means 90 d",
            client(0),
            NOW - 12 * H,
            NOW - 90 * D,
        ),
        (
            "client check shorter than 30 d",
            client(7),
            NOW - 12 * H,
            NOW - 30 * D,
        ),
        (
            "client check of a year",
            client(365),
            NOW - 12 * H,
            NOW - 365 * D,
        ),
    ] {
        assert_eq!(
            history_since(&lead(LeadKind::Form), &settings),
            (leads_since, deals_since),
            "{name}"
        );
    }
    assert_eq!(client_window(&ClientCheck::default()), 90 * D);
}

#[test]
fn same_lead_deals_are_read_only_where_the_clients_deals_may_miss_them() {
    // phone, e-mail, deals read by phone, by e-mail, needed
    let table = [
        ("", "", 0, 0, true),
        ("79161234567", "", 0, 0, false),
        ("79161234567", "", 99, 0, false),
        ("79161234567", "", 100, 0, true),
        ("", "ivan@example.com", 3, 0, false),
        ("", "ivan@example.com", 0, 100, true),
        ("79161234567", "ivan@example.com", 5, 7, false),
        ("79161234567", "ivan@example.com", 100, 7, true),
        ("79161234567", "ivan@example.com", 5, 100, true),
    ];
    for (phone, email, by_phone, by_email, needed) in table {
        assert_eq!(
            same_lead_deals_needed(phone, email, by_phone, by_email),
            needed,
            "{phone:?} {email:?} {by_phone} {by_email}"
        );
    }
}
