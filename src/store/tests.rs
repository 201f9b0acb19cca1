//! The store's contract, run against every store: what one records, the
//! other must list the same way (ids, outcomes, notes, outbox order).

use std::sync::Arc;

use super::leads::{Job, NewDealStatus, NewLead};
use super::outbox::Settle;
use super::Store;
use crate::calls::{CallInfo, CallRecord, CallStatus, Party};
use crate::clock::Clock;
use crate::crm::outbox::{CallStart, Plan};
use crate::leads::dedup::{Group, Identity, LeadKind, Settings};
use crate::tracking::pools::{AssignmentRow, Visit};

const NOW_MS: u64 = 1_800_000_000_000;
/// `tracking.max_call_seconds`' default, in ms: how long a dialog kept
/// for an interrupted call stays.
const KEEP_DIALOGS_MS: u64 = 14_400_000;

/// A SQLite store in a scratch directory, a PostgreSQL store on a fresh
/// database of the test cluster, and a memory store, by name.
/// A client known by e-mail only is found by it (SQLite: through the
/// partial e-mail index of migration 0012), and leads without an e-mail
/// are not taken for that client.
#[tokio::test]
async fn an_email_only_client_is_found_by_the_email() {
    let at = (NOW_MS / 1000) as i64;
    let s = Settings {
        append_to_duplicates: true,
        ..Settings::default()
    };
    let by_email = |email: &str, at: i64| {
        let mut l = form("", at);
        l.who.email = email.into();
        l
    };
    for (name, store, _dir) in stores().await {
        let plan = Plan::default();
        let mut outcomes = Vec::new();
        for lead in [
            by_email("ivan@example.com", at),
            by_email("", at + 30),
            by_email("ivan@example.com", at + 60),
        ] {
            let r = store
                .record_lead(&lead, &s, &status(), None, &plan)
                .await
                .expect(name);
            outcomes.push(r.outcome);
        }
        assert_eq!(outcomes[0], "deal 1 created", "{name}");
        assert_eq!(
            outcomes[2], "deal 3 created (duplicate of lead 1)",
            "{name}: {outcomes:?}"
        );
    }
}

/// L-3's same deal in progress is found for a client with more deals by
/// phone than a history part reads (100): the SQLite history then reads
/// the same-lead deals as well (issue 15 made that part conditional).
#[tokio::test]
async fn a_same_deal_past_the_clients_newest_hundred_is_found() {
    let at = (NOW_MS / 1000) as i64;
    let in_progress = NewDealStatus {
        status: "IN WORK".into(),
        group: Group::InProgress,
    };
    let plan = Plan::default();
    for (name, store, _dir) in stores().await {
        let s = Settings::default();
        let first = store
            .record_lead(&form("79161234567", at), &s, &in_progress, None, &plan)
            .await
            .expect(name);
        assert_eq!(first.outcome, "deal 1 created", "{name}");
        for i in 0..100 {
            let mut other = form("79161234567", at + 1 + i);
            other.who.title = format!("Other order {i}");
            let r = store
                .record_lead(&other, &s, &in_progress, None, &plan)
                .await
                .expect(name);
            assert_eq!(r.outcome, format!("deal {} created", i + 2), "{name}");
        }
        // Past L-3's 12 hours for the lead, within its 30 days for the deal.
        let again = form("79161234567", at + 13 * 3600);
        let r = store
            .record_lead(&again, &s, &in_progress, None, &plan)
            .await
            .expect(name);
        assert_eq!(r.outcome, "duplicate of deal 1", "{name}");
    }
}

/// A deal.create retried after the CRM made its deal (`Outcome::Partly`)
/// comes back with the CRM's id, so the retry goes on from that deal.
#[tokio::test]
async fn a_retried_create_keeps_the_crms_id_its_deal_got() {
    for (name, store, _dir) in stores().await {
        queue_creates(&store, 1).await;
        let now = NOW_MS as i64;
        let (node, due) = claim_due(&store, now).await;
        assert_eq!(due.len(), 1, "{name}");
        assert_eq!(due[0].crm_deal_id, None, "{name}");
        let deal = due[0].deal_ref.expect("deal");
        store
            .outbox_settle(
                &node,
                &[(
                    due[0].id,
                    Settle::Retry {
                        error: "HTTP 500".into(),
                        next_at: now + 1,
                        crm_deal: Some((deal, "CRM-9".into())),
                    },
                )],
                now,
            )
            .await
            .expect(name);
        let again = store
            .outbox_claim(&node, now + 1, LEASE_MS, 10)
            .await
            .expect(name);
        assert_eq!(again.len(), 1, "{name}");
        assert_eq!(again[0].event, "deal.create", "{name}");
        assert_eq!(again[0].crm_deal_id.as_deref(), Some("CRM-9"), "{name}");
    }
}

async fn stores() -> Vec<(&'static str, Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("scratch dir");
    let url = format!("sqlite:{}", dir.path().join("t.db").display());
    let sqlite = Store::open_with_clock(&url, Clock::manual(NOW_MS))
        .await
        .expect("sqlite store");
    let postgres = Store::open_with_clock(&crate::test_pg::database(), Clock::manual(NOW_MS))
        .await
        .expect("postgres store");
    vec![
        ("sqlite", sqlite, Some(dir)),
        ("postgres", postgres, None),
        ("memory", Store::memory(Clock::manual(NOW_MS)), None),
    ]
}

/// A store on `url` as node `node` would open it, its clock at `at`.
async fn open_node(url: &str, node: &str, at: u64) -> Store {
    Store::open_with(
        url,
        &super::postgres::PgOptions::default(),
        node,
        Clock::manual(at),
    )
    .await
    .expect("store")
}

/// Two handles on one database, as two nodes would have: SQLite (one
/// file) and PostgreSQL.
async fn shared_stores() -> Vec<(&'static str, Store, Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("scratch dir");
    let file = format!("sqlite:{}", dir.path().join("t.db").display());
    let pg = crate::test_pg::database();
    let open = |url: String, node: &'static str| async move { open_node(&url, node, NOW_MS).await };
    vec![
        (
            "sqlite",
            open(file.clone(), "node-a").await,
            open(file, "node-b").await,
            Some(dir),
        ),
        (
            "postgres",
            open(pg.clone(), "node-a").await,
            open(pg, "node-b").await,
            None,
        ),
    ]
}

const LEASE_MS: i64 = 60_000;

/// Records `jobs` in `store` as the pipeline does, default settings and
/// no CRM; the test's `name` on failure.
async fn record_jobs(store: &Store, jobs: Vec<Job>, name: &str) -> Vec<super::leads::Recorded> {
    store
        .record_calls(
            Arc::new(jobs),
            &Settings::default(),
            &status(),
            &Plan::default(),
        )
        .await
        .expect(name)
}

fn status() -> NewDealStatus {
    NewDealStatus {
        status: "NEW".into(),
        group: Group::NotCounted,
    }
}

fn form(phone: &str, at: i64) -> NewLead {
    NewLead {
        kind: Some(LeadKind::Form),
        who: Identity {
            title: "Order".into(),
            name: "Ivan".into(),
            phone: phone.into(),
            email: String::new(),
            visit: "v1".into(),
        },
        form: "order".into(),
        text: "call me".into(),
        at,
        ..NewLead::default()
    }
}

fn call(id: &str, caller: &str, invite_at: u64) -> CallRecord {
    CallRecord {
        call_id: id.into(),
        info: CallInfo {
            caller_raw: format!("+{caller}").into(),
            caller: caller.into(),
            dialed: "74951110001".into(),
            destination: "sip:pbx@127.0.0.1".into(),
            visit_id: Some("v9".into()),
            visit: [("city".to_string(), "Moscow".to_string())].into(),
            ..CallInfo::default()
        },
        invite_at,
        answer_at: Some(invite_at + 1000),
        end_at: invite_at + 43_000,
        duration: 42,
        status: CallStatus::Answered,
        hangup: Some(Party::Caller),
        recording: Default::default(),
        dtmf: Vec::new(),
    }
}

#[tokio::test]
async fn leads_are_decided_and_listed_alike() {
    let at = (NOW_MS / 1000) as i64;
    let s = Settings {
        append_to_duplicates: true,
        ..Settings::default()
    };
    for (name, store, _dir) in stores().await {
        let plan = Plan::default();
        let first = store
            .record_lead(&form("79160000001", at), &s, &status(), None, &plan)
            .await
            .expect(name);
        assert_eq!(first.outcome, "deal 1 created", "{name}");
        let again = store
            .record_lead(&form("79160000001", at + 60), &s, &status(), None, &plan)
            .await
            .expect(name);
        assert_eq!(
            again.outcome, "deal 2 created (duplicate of lead 1)",
            "{name}"
        );
        // Outside the 12 hours: a lead of its own again.
        let later = store
            .record_lead(
                &form("79160000001", at + 13 * 3600),
                &Settings::default(),
                &status(),
                None,
                &plan,
            )
            .await
            .expect(name);
        assert_eq!(later.outcome, "deal 3 created", "{name}");

        let leads = store.list_leads(10, 0).await.expect(name);
        assert_eq!(
            leads.iter().map(|l| l.id).collect::<Vec<_>>(),
            [3, 2, 1],
            "{name}"
        );
        assert_eq!(leads[1].decision, "deal 2 created (duplicate of lead 1)");
        assert_eq!(leads[1].deal_id, Some(2));
        assert_eq!(
            (leads[2].kind.as_str(), leads[2].form.as_str()),
            ("form", "order")
        );
        assert!(leads.iter().all(|l| l.pending.is_none()), "{name}");
        assert_eq!(store.list_leads(1, 0).await.expect(name).len(), 1);
        assert_eq!(store.list_leads(10, at + 1).await.expect(name).len(), 2);

        let deals = store.list_deals(10, 0).await.expect(name);
        assert_eq!(deals.len(), 3, "{name}");
        assert_eq!(deals[1].id, 2);
        assert_eq!(deals[1].comments.len(), 1, "{name}");
        assert_eq!(deals[1].comments[0].text, "Duplicate: duplicate of lead 1");
        assert_eq!(
            (deals[0].status.as_str(), deals[0].group.as_str()),
            ("NEW", "not_counted")
        );

        // A CRM's own webhook naming an id the CRM never gave siptrack
        // changes nothing, even when siptrack has a deal of that number.
        assert_eq!(
            store
                .set_deal_status("2", "WON", Group::Paid, true)
                .await
                .expect(name),
            None,
            "{name}"
        );
        // A status callback by siptrack's id (the CRM never named it).
        assert_eq!(
            store
                .set_deal_status("2", "WON", Group::Paid, false)
                .await
                .expect(name),
            Some(2)
        );
        assert_eq!(
            store
                .set_deal_status("99", "WON", Group::Paid, false)
                .await
                .expect(name),
            None
        );
        assert_eq!(store.list_deals(10, 0).await.expect(name)[1].group, "paid");
        assert_eq!(store.leads_without_outcome().await.expect(name), 0);
    }
}

/// A trunk that counts its Call-IDs from 1 again (after a restart) sends
/// a new call with an earlier call's Call-ID: it is a call of its own,
/// recorded under the Call-ID and its INVITE time, with its own lead
/// (trial, 2026-12-03: it was taken for a replay, no record, no lead);
/// a replay of it is recorded once.
#[tokio::test]
async fn a_new_call_with_an_earlier_calls_call_id_is_recorded() {
    for (name, store, _dir) in stores().await {
        let record = |c: CallRecord| {
            let store = store.clone();
            async move {
                let lead = crate::leads::pipeline::call_lead(&c);
                record_jobs(&store, vec![Job::Lead(lead, Some(c))], name)
                    .await
                    .remove(0)
            }
        };
        let first = record(call("1-100@10.0.0.1", "79160000031", NOW_MS)).await;
        let later = NOW_MS + 600_000;
        let second = record(call("1-100@10.0.0.1", "79160000032", later)).await;
        assert!(!second.earlier, "{name}: {second:?}");
        assert_ne!(second.lead_id, first.lead_id, "{name}");
        // Replayed (a lost COMMIT answer): the same lead, nothing new.
        let replayed = record(call("1-100@10.0.0.1", "79160000032", later)).await;
        assert!(replayed.earlier, "{name}");
        assert_eq!(replayed.lead_id, second.lead_id, "{name}");
        let calls = store.list_calls(10, 0).await.expect(name);
        let seen: Vec<(&str, &str)> = calls
            .iter()
            .map(|c| (c.call_id.as_str(), c.caller.as_str()))
            .collect();
        let again = format!("1-100@10.0.0.1#{later}");
        assert_eq!(
            seen,
            [
                (again.as_str(), "79160000032"),
                ("1-100@10.0.0.1", "79160000031")
            ],
            "{name}"
        );
        let leads = store.list_leads(10, 0).await.expect(name);
        assert_eq!(leads.len(), 2, "{name}");
    }
}

/// A repeat call L-3 takes for a duplicate is the repeated lead's deal's:
/// its end waits behind that deal's create and names the CRM's deal
/// (trial, 2026-12-03: it went out at once with no deal, so amoCRM,
/// whose create for the first call was being retried, refused it
/// "Contact not found" for good, and Bitrix24 filed it on no deal).
#[tokio::test]
async fn a_duplicate_calls_end_waits_for_the_repeated_leads_deal() {
    let plan = Plan {
        lead_hooks: true,
        call_end: true,
        calls_on_deals: true,
        ..Plan::default()
    };
    for (name, store, _dir) in stores().await {
        let mut outcomes = Vec::new();
        for (id, at) in [("rep-1@h", NOW_MS), ("rep-2@h", NOW_MS + 60_000)] {
            let c = call(id, "79160000041", at);
            let lead = crate::leads::pipeline::call_lead(&c);
            let r = store
                .record_calls(
                    Arc::new(vec![Job::Lead(lead, Some(c))]),
                    &Settings::default(),
                    &status(),
                    &plan,
                )
                .await
                .expect(name);
            outcomes.push(r[0].outcome.clone());
        }
        assert_eq!(
            outcomes[1],
            format!("duplicate of lead {}", 1),
            "{name}: {outcomes:?}"
        );
        // Delivered in turn, the create answered with the CRM's id.
        let node = store.node_id().to_string();
        let now = NOW_MS as i64;
        let mut sent = Vec::new();
        for _ in 0..10 {
            let due = store
                .outbox_claim(&node, now, LEASE_MS, 10)
                .await
                .expect(name);
            if due.is_empty() {
                break;
            }
            let results: Vec<(i64, Settle)> = due
                .iter()
                .map(|d| {
                    let crm_deal = d
                        .is_deal_create()
                        .then(|| d.deal_ref.map(|deal| (deal, "CRM-7".to_string())))
                        .flatten();
                    (d.id, Settle::Done { crm_deal })
                })
                .collect();
            sent.extend(
                due.iter()
                    .map(|d| (d.key.clone(), d.deal_ref, d.crm_deal_id.clone())),
            );
            store.outbox_settle(&node, &results, now).await.expect(name);
        }
        let at = |suffix: &str| {
            sent.iter()
                .position(|(k, _, _)| k.ends_with(suffix))
                .unwrap_or_else(|| panic!("{name}: no {suffix} in {sent:?}"))
        };
        let (create, repeat) = (at("deal.create"), at("rep-2@h-end"));
        assert!(create < repeat, "{name}: {sent:?}");
        assert_eq!(sent[repeat].1, sent[create].1, "{name}: the same deal");
        assert_eq!(sent[repeat].2.as_deref(), Some("CRM-7"), "{name}: {sent:?}");
    }
}

#[tokio::test]
async fn calls_are_recorded_once_and_open_calls_of_earlier_runs_are_interrupted() {
    for (name, store, _dir) in stores().await {
        let plan = Plan::default();
        let c = call("c1@host", "79160000002", NOW_MS);
        let start = |id: &str, earlier| {
            Job::Start(
                CallStart {
                    call_id: id.into(),
                    info: c.info.clone(),
                    invite_at: NOW_MS,
                },
                earlier,
            )
        };
        let lead = crate::leads::pipeline::call_lead(&c);
        let jobs = vec![
            start("c1@host", false),
            start("old@host", true),
            start("talking@host", true),
            Job::Answered(crate::calls::AnsweredCall {
                call_id: "talking@host".into(),
                answer_at: NOW_MS + 3_000,
                // One node: no dialog to share, the answer all the same.
                dialog: None,
            }),
            start("ours@host", false),
            Job::Lead(lead.clone(), Some(c.clone())),
        ];
        let done = store
            .record_calls(Arc::new(jobs), &Settings::default(), &status(), &plan)
            .await
            .expect(name);
        assert_eq!(done.len(), 1, "{name}");
        // The same call again (a retry after a lost answer): the same lead.
        let again = store
            .record_calls(
                Arc::new(vec![Job::Lead(lead, Some(c.clone()))]),
                &Settings::default(),
                &status(),
                &plan,
            )
            .await
            .expect(name);
        assert_eq!(again[0].lead_id, done[0].lead_id, "{name}");
        assert_eq!(again[0].outcome, done[0].outcome, "{name}");
        // Said so, for the log: nothing was written the second time.
        assert!(!done[0].earlier && again[0].earlier, "{name}");

        let calls = store.list_calls(10, 0).await.expect(name);
        assert_eq!(calls.len(), 1, "{name}");
        let r = &calls[0];
        assert_eq!(
            (r.call_id.as_str(), r.caller.as_str(), r.callee.as_str()),
            ("c1@host", "79160000002", "74951110001")
        );
        assert_eq!((r.duration, r.status.as_str()), (42, "answered"));
        assert_eq!(r.visit.get("city").map(String::as_str), Some("Moscow"));
        assert_eq!(r.lead_id, Some(done[0].lead_id));
        // `since` is when the call ended (it is recorded then): one that
        // began before a poll and ended after it is in the next poll's
        // answer (trial, 2026-12-03: it was in none), one that ended
        // before is not.
        assert_eq!(
            store
                .list_calls(10, NOW_MS as i64 + 1)
                .await
                .expect(name)
                .len(),
            1,
            "{name}"
        );
        assert!(store
            .list_calls(10, NOW_MS as i64 + 43_001)
            .await
            .expect(name)
            .is_empty());

        // Only the earlier run's open calls were cut short; ours is open.
        // SPEC L-1: `interrupted` is the hangup; the status is what the
        // store knew: answered (ending at its answer, talk time unknown)
        // or, never answered, failed at its INVITE.
        let cut = store.interrupted_calls(KEEP_DIALOGS_MS).await.expect(name);
        let seen: Vec<_> = cut
            .iter()
            .map(|c| {
                (
                    c.call_id.as_str(),
                    c.status,
                    c.hangup,
                    c.answer_at,
                    c.end_at,
                    c.duration,
                )
            })
            .collect();
        // An answer without a dialog is nothing another node can take over.
        assert_eq!(store.open_dialog("talking@host").await.expect(name), None);
        let cut_short = Some(crate::calls::Party::Interrupted);
        assert_eq!(
            seen,
            [
                ("old@host", CallStatus::Failed, cut_short, None, NOW_MS, 0),
                (
                    "talking@host",
                    CallStatus::Answered,
                    cut_short,
                    Some(NOW_MS + 3_000),
                    NOW_MS + 3_000,
                    0
                ),
            ],
            "{name}"
        );
    }
}

/// Issue 13: a call's recording outcome and key presses come back typed
/// from every store, each outcome as it went in.
#[tokio::test]
async fn recording_outcomes_and_dtmf_are_stored_alike() {
    use crate::calls::Recording;
    use crate::media::recorder::Dtmf;
    use crate::media::timeline::Side;
    let outcomes = [
        Recording::Recorded,
        Recording::Partial,
        Recording::not_recorded("codec not recorded: G729"),
        Recording::default(),
    ];
    let dtmf = vec![
        Dtmf {
            side: Side::Caller,
            digit: '5',
            at_ms: 1200,
            duration_ms: 160,
        },
        Dtmf {
            side: Side::Callee,
            digit: '#',
            at_ms: 4000,
            duration_ms: 80,
        },
    ];
    for (name, store, _dir) in stores().await {
        let mut jobs = Vec::new();
        for (i, o) in outcomes.iter().enumerate() {
            let mut c = call(&format!("rec{i}@host"), "79160000003", NOW_MS + i as u64);
            c.recording = o.clone();
            if i == 0 {
                c.dtmf = dtmf.clone();
            }
            jobs.push(Job::Lead(crate::leads::pipeline::call_lead(&c), Some(c)));
        }
        // Several nodes: the node recording the calls names its link
        // base, kept with the calls that have a WAV.
        let plan = Plan {
            recording_base: "http://node-a:8080".into(),
            ..Plan::default()
        };
        store
            .record_calls(Arc::new(jobs), &Settings::default(), &status(), &plan)
            .await
            .expect(name);
        let mut calls = store.list_calls(10, 0).await.expect(name);
        calls.reverse();
        let got: Vec<&Recording> = calls.iter().map(|c| &c.recording).collect();
        assert_eq!(got, outcomes.iter().collect::<Vec<_>>(), "{name}");
        let bases: Vec<&str> = calls.iter().map(|c| c.recording_base.as_str()).collect();
        assert_eq!(
            bases,
            ["http://node-a:8080", "http://node-a:8080", "", ""],
            "{name}"
        );
        assert_eq!(calls[0].dtmf, dtmf, "{name}");
        assert!(calls[1..].iter().all(|c| c.dtmf.is_empty()), "{name}");
        // The first call made a deal; its recording is a comment naming
        // the call (the later ones are duplicates: no deal, no note).
        let deals = store.list_deals(10, 0).await.expect(name);
        assert_eq!(deals.len(), 1, "{name}");
        let notes: Vec<(&str, Option<&crate::store::rows::NoteCall>)> = deals[0]
            .comments
            .iter()
            .map(|n| (n.text.as_str(), n.call.as_ref()))
            .collect();
        assert_eq!(
            notes,
            [(
                "Call recording",
                Some(&crate::store::rows::NoteCall {
                    call_id: "rec0@host".into(),
                    recording: Recording::Recorded,
                    end_at: (NOW_MS + 43_000) as i64,
                    recording_base: "http://node-a:8080".into(),
                })
            )],
            "{name}"
        );
    }
}

#[tokio::test]
async fn the_outbox_delivers_a_deals_requests_in_order() {
    let at = (NOW_MS / 1000) as i64;
    let plan = Plan {
        lead_hooks: true,
        ..Plan::default()
    };
    let s = Settings {
        append_to_duplicates: true,
        ..Settings::default()
    };
    for (name, store, _dir) in stores().await {
        store
            .record_lead(&form("79160000003", at), &s, &status(), None, &plan)
            .await
            .expect(name);
        // A duplicate with append: deal.create, then its comment.
        store
            .record_lead(&form("79160000003", at + 1), &s, &status(), None, &plan)
            .await
            .expect(name);
        let now = NOW_MS as i64;
        let node = store.node_id().to_string();
        let due = store
            .outbox_claim(&node, now, LEASE_MS, 10)
            .await
            .expect(name);
        let events: Vec<&str> = due.iter().map(|d| d.event.as_str()).collect();
        assert_eq!(events, ["deal.create", "deal.create"], "{name}");
        assert_eq!(store.outbox_depth().await.expect(name).pending, 3, "{name}");
        assert_eq!(store.outbox_next_due().await.expect(name), Some(now));
        let leads = store.list_leads(10, 0).await.expect(name);
        assert_eq!(leads[0].outcome().1, Some("queued"), "{name}");

        let (first, second) = (due[0].id, due[1].id);
        let second_deal = due[1].deal_ref.expect("deal");
        store
            .outbox_settle(
                &node,
                &[
                    (
                        first,
                        Settle::Done {
                            crm_deal: Some((1, "CRM-1".into())),
                        },
                    ),
                    (
                        second,
                        Settle::Done {
                            crm_deal: Some((second_deal, "CRM-2".into())),
                        },
                    ),
                ],
                now,
            )
            .await
            .expect(name);
        // Now the comment on deal 2 is due, naming the CRM's id.
        let due = store
            .outbox_claim(&node, now, LEASE_MS, 10)
            .await
            .expect(name);
        assert_eq!(due.len(), 1, "{name}");
        assert_eq!(due[0].event, "deal.comment", "{name}");
        assert_eq!(due[0].crm_deal_id.as_deref(), Some("CRM-2"), "{name}");
        assert!(due[0].deal_created_here, "{name}");

        store
            .outbox_settle(
                &node,
                &[(
                    due[0].id,
                    Settle::Park {
                        crm_deal: None,
                        error: "HTTP 500".into(),
                    },
                )],
                now,
            )
            .await
            .expect(name);
        let depth = store.outbox_depth().await.expect(name);
        assert_eq!((depth.pending, depth.failed), (0, 1), "{name}");
        let failed = store.list_outbox(Some("failed"), 10).await.expect(name);
        assert_eq!(failed.len(), 1, "{name}");
        assert_eq!(
            (failed[0].attempts, failed[0].last_error.as_str()),
            (1, "HTTP 500")
        );
        assert_eq!(store.list_outbox(None, 10).await.expect(name).len(), 3);
        let leads = store.list_leads(10, 0).await.expect(name);
        assert_eq!(
            leads[0].outcome(),
            (
                "crm error: HTTP 500 (gave up after 1 attempt)".to_string(),
                Some("failed")
            ),
            "{name}"
        );
        assert!(store
            .outbox_requeue(failed[0].id, now + 5)
            .await
            .expect(name));
        assert!(!store
            .outbox_requeue(failed[0].id, now + 5)
            .await
            .expect(name));
        assert_eq!(
            store
                .outbox_claim(&node, now + 5, LEASE_MS, 10)
                .await
                .expect(name)
                .len(),
            1
        );

        // The CRM's id names the deal in status callbacks.
        assert_eq!(
            store
                .set_deal_status("CRM-2", "WORK", Group::InProgress, true)
                .await
                .expect(name),
            Some(second_deal)
        );

        // Delivered a week ago and more: purged.
        let week = 7 * 24 * 3_600_000;
        assert_eq!(
            store.outbox_purge(now + week + 1).await.expect(name),
            2,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_numbers_newer_state_wins() {
    for (name, store, _dir) in stores().await {
        let row = |version, visit: Option<&str>| AssignmentRow {
            pool: "site".into(),
            number: "74951110001".into(),
            visit: visit.map(|id| Visit {
                id: id.into(),
                fields: [("city".to_string(), "Moscow".to_string())].into(),
            }),
            touched_at: 5,
            version,
        };
        store
            .save_assignment(&row(2, Some("v2")))
            .await
            .expect(name);
        store
            .save_assignment(&row(1, Some("v1")))
            .await
            .expect(name);
        let rows = store.load_assignments().await.expect(name);
        assert_eq!(rows.len(), 1, "{name}");
        assert_eq!(rows[0].version, 2, "{name}");
        let v = rows[0].visit.as_ref().expect("visit");
        assert_eq!((v.id.as_str(), v.fields.len()), ("v2", 1), "{name}");
        store.save_assignment(&row(3, None)).await.expect(name);
        assert!(store.load_assignments().await.expect(name)[0]
            .visit
            .is_none());
    }
}

/// Issue 17: the console's reads — lead pages by keyset and filter, the
/// newest id, call pages with their row ids, the overview's counts — the
/// same from every store.
#[tokio::test]
async fn console_pages_and_counts_alike() {
    use super::query::{LeadQuery, OutcomeKind, Search};
    let at = (NOW_MS / 1000) as i64;
    for (name, store, _dir) in stores().await {
        assert_eq!(store.newest_lead_id().await.expect(name), 0, "{name}");
        let plan = Plan::default();
        let s = Settings::default();
        let mut leads = Vec::new();
        // Two forms of one client (a deal, then a duplicate), another
        // client's form, and two calls an hour apart.
        for (phone, t) in [
            ("79160000001", at - 7200),
            ("79160000001", at - 7100),
            ("79160000003", at - 7000),
        ] {
            let mut lead = form(phone, t);
            if phone == "79160000003" {
                // The visit of a pool number: its marker is the channel,
                // as for the pool's calls (a form lead counted under its
                // visit id before, a row per visit).
                lead.visit_data = [("marker".to_string(), "google_cpc".to_string())].into();
            }
            let r = store
                .record_lead(&lead, &s, &status(), None, &plan)
                .await
                .expect(name);
            leads.push(r.lead_id);
        }
        for (id, caller, t, marker) in [
            ("a@h", "79160000004", NOW_MS - 3_600_000, None),
            ("b@h", "79160000005", NOW_MS, Some("google_cpc")),
        ] {
            let mut c = call(id, caller, t);
            // A pool number's call: its visit's marker names the channel.
            c.info.marker = marker.map(Into::into);
            let lead = crate::leads::pipeline::call_lead(&c);
            store
                .record_calls(
                    Arc::new(vec![Job::Lead(lead, Some(c))]),
                    &s,
                    &status(),
                    &plan,
                )
                .await
                .expect(name);
        }
        assert_eq!(store.newest_lead_id().await.expect(name), 5, "{name}");
        let ids = |q: LeadQuery| {
            let store = store.clone();
            async move {
                store
                    .lead_page(LeadQuery {
                        limit: if q.limit == 0 { 10 } else { q.limit },
                        ..q
                    })
                    .await
                    .expect("page")
                    .iter()
                    .map(|l| l.id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(ids(LeadQuery::default()).await, [5, 4, 3, 2, 1], "{name}");
        assert_eq!(
            ids(LeadQuery {
                before: Some(4),
                limit: 2,
                ..Default::default()
            })
            .await,
            [3, 2],
            "{name}"
        );
        assert_eq!(
            ids(LeadQuery {
                after: Some(3),
                ..Default::default()
            })
            .await,
            [5, 4],
            "{name}"
        );
        assert_eq!(
            ids(LeadQuery {
                kind: Some("call".into()),
                ..Default::default()
            })
            .await,
            [5, 4],
            "{name}"
        );
        assert_eq!(
            ids(LeadQuery {
                outcome: Some(OutcomeKind::Duplicate),
                ..Default::default()
            })
            .await,
            [2],
            "{name}"
        );
        assert_eq!(
            ids(LeadQuery {
                search: Some(Search::Phone("79160000001".into())),
                ..Default::default()
            })
            .await,
            [2, 1],
            "{name}"
        );
        assert_eq!(
            ids(LeadQuery {
                search: Some(Search::NamePrefix("Iv".into())),
                channel: Some("v1".into()),
                floor: Some(1),
                ..Default::default()
            })
            .await,
            [3, 2],
            "{name}"
        );
        // A prefix matches any case, and is a range of bytes (of the
        // lower-cased name) on every store, whatever the database's
        // collation.
        assert_eq!(
            ids(LeadQuery {
                search: Some(Search::NamePrefix("Ivan".into())),
                ..Default::default()
            })
            .await,
            [3, 2, 1],
            "{name}"
        );
        assert_eq!(
            ids(LeadQuery {
                search: Some(Search::NamePrefix("iV".into())),
                ..Default::default()
            })
            .await,
            [3, 2, 1],
            "{name}"
        );
        assert_eq!(
            ids(LeadQuery {
                search: Some(Search::NamePrefix("iw".into())),
                ..Default::default()
            })
            .await,
            Vec::<i64>::new(),
            "{name}"
        );
        assert_eq!(
            ids(LeadQuery {
                from: Some(at - 7100),
                to: Some(at - 7000),
                ..Default::default()
            })
            .await,
            [2],
            "{name}"
        );

        // The overview counts two google_cpc leads (below): the channel
        // filter lists those two, the pool call among them, whose visit
        // column holds its visit (trial, 2026-12-02: it listed none of
        // the pool's calls); the visit still finds its leads.
        assert_eq!(
            ids(LeadQuery {
                channel: Some("google_cpc".into()),
                ..Default::default()
            })
            .await,
            [5, 3],
            "{name}"
        );
        let page = store
            .lead_page(LeadQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .expect(name);
        assert_eq!(
            page.iter().map(|l| l.channel.as_str()).collect::<Vec<_>>(),
            ["google_cpc", "v9", "google_cpc", "v1", "v1"],
            "{name}"
        );
        let calls = store.call_page(None, None, 10).await.expect(name);
        assert_eq!(
            calls
                .iter()
                .map(|(id, c)| (*id, c.call_id.as_str()))
                .collect::<Vec<_>>(),
            [(2, "b@h"), (1, "a@h")],
            "{name}"
        );
        assert_eq!(
            store.call_page(Some(2), None, 10).await.expect(name).len(),
            1,
            "{name}"
        );
        assert_eq!(
            store.call_page(None, Some(1), 10).await.expect(name)[0].0,
            2,
            "{name}"
        );

        let hour = (NOW_MS as i64) / 3_600_000 * 3_600_000;
        assert_eq!(
            store
                .calls_per_hour(NOW_MS as i64 - 7_200_000)
                .await
                .expect(name),
            [
                (hour - 3_600_000, "answered".to_string(), 1),
                (hour, "answered".to_string(), 1)
            ],
            "{name}"
        );
        assert_eq!(
            store.leads_per_channel(at - 7200, 10).await.expect(name),
            [
                ("google_cpc".to_string(), 2),
                ("v1".to_string(), 2),
                ("v9".to_string(), 1)
            ],
            "{name}"
        );
        assert_eq!(
            store
                .leads_per_channel(at - 7200, 1)
                .await
                .expect(name)
                .len(),
            1,
            "{name}"
        );
    }
}

/// A name prefix is a range of bytes (of the lower-cased name) on
/// PostgreSQL too, whatever the database's collation: under ICU's en-US,
/// which weighs case and punctuation loosely, a range in the database's
/// own order is no prefix ("I-v" would find "Ivan").
#[tokio::test]
async fn a_name_prefix_and_ties_are_bytes_whatever_the_collation() {
    use super::query::{LeadQuery, Search};
    let url = crate::test_pg::database_collated_en_us();
    let store = Store::open_with_clock(&url, Clock::manual(NOW_MS))
        .await
        .expect("postgres store");
    let at = (NOW_MS / 1000) as i64;
    store
        .record_lead(
            &form("79160000001", at),
            &Settings::default(),
            &status(),
            None,
            &Plan::default(),
        )
        .await
        .expect("lead");
    for (prefix, found) in [("Iv", 1), ("Ivan", 1), ("iv", 1), ("IV", 1), ("I-v", 0)] {
        let page = store
            .lead_page(LeadQuery {
                search: Some(Search::NamePrefix(prefix.into())),
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("page");
        assert_eq!(page.len(), found, "{prefix}");
    }
    // The console's channel counts break ties in byte order too, as
    // SQLite and the memory store do (en-US would put "Vb" last).
    for (phone, visit) in [("79160000002", "va"), ("79160000003", "Vb")] {
        let mut lead = form(phone, at);
        lead.who.visit = visit.into();
        store
            .record_lead(
                &lead,
                &Settings::default(),
                &status(),
                None,
                &Plan::default(),
            )
            .await
            .expect("lead");
    }
    let channels: Vec<(String, i64)> = store.leads_per_channel(0, 10).await.expect("counts");
    assert_eq!(
        channels,
        [("Vb".into(), 1), ("v1".into(), 1), ("va".into(), 1)]
    );
}

/// Issue 13 on several nodes: a recording link signed on one node opens
/// on another, so the key is the database's (64 hex digits), and another
/// database has another.
#[tokio::test]
async fn the_recording_link_key_is_one_per_database() {
    let mut keys = Vec::new();
    for (name, a, b, _dir) in shared_stores().await {
        let key = a.recording_link_key();
        assert_eq!(key, b.recording_link_key(), "{name}");
        assert_eq!(key.len(), 64, "{name}");
        assert!(key.iter().all(|c| c.is_ascii_hexdigit()), "{name}");
        keys.push(key);
    }
    assert_ne!(keys[0], keys[1]);
}

/// Queues `n` deal creates for `n` clients (one order key each).
/// Every item due at `now`, claimed as the store's own node: (the node,
/// the items).
async fn claim_due(store: &Store, now: i64) -> (String, Vec<super::outbox::DueItem>) {
    let node = store.node_id().to_string();
    let due = store
        .outbox_claim(&node, now, LEASE_MS, 10)
        .await
        .expect("claimed");
    (node, due)
}

async fn queue_creates(store: &Store, n: usize) {
    let at = (NOW_MS / 1000) as i64;
    let plan = Plan {
        lead_hooks: true,
        ..Plan::default()
    };
    let jobs: Vec<Job> = (0..n)
        .map(|i| Job::Lead(form(&format!("7916{i:07}"), at), None))
        .collect();
    store
        .record_calls(Arc::new(jobs), &Settings::default(), &status(), &plan)
        .await
        .expect("recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_claiming_together_never_get_the_same_item() {
    let now = NOW_MS as i64;
    for (name, a, b, _dir) in shared_stores().await {
        queue_creates(&a, 200).await;
        // Each node claims in small rounds, settling what it got, until
        // nothing is left; both at once.
        let node = |s: Store| {
            tokio::spawn(async move {
                let me = s.node_id().to_string();
                let mut got = Vec::new();
                loop {
                    let items = s.outbox_claim(&me, now, LEASE_MS, 7).await.expect("claim");
                    if items.is_empty() {
                        return got;
                    }
                    let done: Vec<(i64, Settle)> = items
                        .iter()
                        .map(|i| (i.id, Settle::Done { crm_deal: None }))
                        .collect();
                    s.outbox_settle(&me, &done, now).await.expect("settle");
                    got.extend(items.iter().map(|i| i.id));
                }
            })
        };
        let (ta, tb) = (node(a.clone()), node(b.clone()));
        let (ga, gb) = (ta.await.expect("node a"), tb.await.expect("node b"));
        let mut all: Vec<i64> = ga.iter().chain(&gb).copied().collect();
        all.sort_unstable();
        let claimed = all.len();
        all.dedup();
        assert_eq!(claimed, all.len(), "{name}: an item claimed twice");
        assert_eq!(all.len(), 200, "{name}: every item delivered");
        if name == "postgres" {
            // SQLite's IMMEDIATE transactions may let one node run ahead
            // of the other; PostgreSQL's claims truly overlap.
            assert!(
                !ga.is_empty() && !gb.is_empty(),
                "{name}: both nodes worked"
            );
        }
        assert_eq!(a.outbox_depth().await.expect(name).pending, 0, "{name}");
    }
}

#[tokio::test]
async fn a_dead_nodes_items_are_taken_over_when_its_lease_runs_out() {
    let now = NOW_MS as i64;
    for (name, a, b, _dir) in shared_stores().await {
        queue_creates(&a, 3).await;
        let dead = a.outbox_claim("dead", now, LEASE_MS, 10).await.expect(name);
        assert_eq!(dead.len(), 3, "{name}");
        // In flight on the dead node: nobody else gets them meanwhile.
        let early = b
            .outbox_claim("alive", now + LEASE_MS - 1, LEASE_MS, 10)
            .await
            .expect(name);
        assert!(early.is_empty(), "{name}: {early:?}");
        let late = b
            .outbox_claim("alive", now + LEASE_MS, LEASE_MS, 10)
            .await
            .expect(name);
        assert_eq!(late.len(), 3, "{name}: taken over");
        // The dead node comes back and settles late: not its items any more.
        let stale: Vec<(i64, Settle)> = dead
            .iter()
            .map(|i| {
                (
                    i.id,
                    Settle::Park {
                        crm_deal: None,
                        error: "stale".into(),
                    },
                )
            })
            .collect();
        a.outbox_settle("dead", &stale, now + LEASE_MS)
            .await
            .expect(name);
        assert_eq!(a.outbox_depth().await.expect(name).failed, 0, "{name}");
        let done: Vec<(i64, Settle)> = late
            .iter()
            .map(|i| (i.id, Settle::Done { crm_deal: None }))
            .collect();
        b.outbox_settle("alive", &done, now + LEASE_MS)
            .await
            .expect(name);
        let rows = a.list_outbox(Some("done"), 10).await.expect(name);
        assert_eq!(rows.len(), 3, "{name}");
        assert!(rows.iter().all(|r| r.attempts == 1), "{name}: {rows:?}");
    }
}

#[tokio::test]
async fn a_deals_items_go_out_in_order_across_nodes() {
    let now = NOW_MS as i64;
    let at = (NOW_MS / 1000) as i64;
    let plan = Plan {
        lead_hooks: true,
        ..Plan::default()
    };
    let s = Settings {
        append_to_duplicates: true,
        ..Settings::default()
    };
    for (name, a, b, _dir) in shared_stores().await {
        // deal.create, then a second deal.create and its comment (one
        // order key per deal).
        for t in [at, at + 1] {
            a.record_lead(&form("79160000009", t), &s, &status(), None, &plan)
                .await
                .expect(name);
        }
        let first = a.outbox_claim("a", now, LEASE_MS, 10).await.expect(name);
        assert_eq!(first.len(), 2, "{name}: the two creates");
        // The comment waits for its deal's create, in flight on node a.
        assert!(b
            .outbox_claim("b", now, LEASE_MS, 10)
            .await
            .expect(name)
            .is_empty());
        // A retry puts the create back: the comment still waits for it.
        let second = first[1].id;
        a.outbox_settle(
            "a",
            &[
                (first[0].id, Settle::Done { crm_deal: None }),
                (
                    second,
                    Settle::Retry {
                        crm_deal: None,
                        error: "HTTP 503".into(),
                        next_at: now + 10,
                    },
                ),
            ],
            now,
        )
        .await
        .expect(name);
        assert!(b
            .outbox_claim("b", now + 5, LEASE_MS, 10)
            .await
            .expect(name)
            .is_empty());
        let again = b
            .outbox_claim("b", now + 10, LEASE_MS, 10)
            .await
            .expect(name);
        assert_eq!(
            again.iter().map(|i| i.id).collect::<Vec<_>>(),
            [second],
            "{name}"
        );
        b.outbox_settle("b", &[(second, Settle::Done { crm_deal: None })], now + 10)
            .await
            .expect(name);
        let comment = a
            .outbox_claim("a", now + 10, LEASE_MS, 10)
            .await
            .expect(name);
        assert_eq!(
            comment.iter().map(|i| i.event.as_str()).collect::<Vec<_>>(),
            ["deal.comment"],
            "{name}"
        );
    }
}

/// A node restarted under its name takes its own claims back at once
/// (its earlier run died with them in flight); another node still waits
/// for the lease.
#[tokio::test]
async fn a_restarted_node_takes_its_own_claims_back_at_once() {
    let now = NOW_MS as i64;
    for (name, a, b, _dir) in shared_stores().await {
        queue_creates(&a, 2).await;
        let first = a
            .outbox_claim("node-a", now, LEASE_MS, 10)
            .await
            .expect(name);
        assert_eq!(first.len(), 2, "{name}");
        assert!(b
            .outbox_claim("node-b", now + 1, LEASE_MS, 10)
            .await
            .expect(name)
            .is_empty());
        let again = a
            .outbox_claim("node-a", now + 1, LEASE_MS, 10)
            .await
            .expect(name);
        assert_eq!(again.len(), 2, "{name}");
    }
}

/// Open calls are closed as interrupted only by their own node: another
/// node's open calls are its live calls.
#[tokio::test]
async fn only_a_nodes_own_open_calls_are_interrupted() {
    for (name, a, b, dir) in shared_stores().await {
        let c = call("live@a", "79160000011", NOW_MS);
        let start = Job::Start(
            CallStart {
                call_id: c.call_id.clone(),
                info: c.info.clone(),
                invite_at: NOW_MS,
            },
            false,
        );
        a.record_calls(
            Arc::new(vec![start]),
            &Settings::default(),
            &status(),
            &Plan::default(),
        )
        .await
        .expect(name);
        assert!(
            b.interrupted_calls(KEEP_DIALOGS_MS)
                .await
                .expect(name)
                .is_empty(),
            "{name}"
        );
        assert!(
            a.interrupted_calls(KEEP_DIALOGS_MS)
                .await
                .expect(name)
                .is_empty(),
            "{name}"
        );
        // node-a restarts: its earlier run's call was cut short.
        let url = match &dir {
            Some(d) => format!("sqlite:{}", d.path().join("t.db").display()),
            None => continue,
        };
        let a2 = Store::open_with(
            &url,
            &super::postgres::PgOptions::default(),
            "node-a",
            Clock::manual(NOW_MS),
        )
        .await
        .expect(name);
        let cut = a2.interrupted_calls(KEEP_DIALOGS_MS).await.expect(name);
        assert_eq!(cut.len(), 1, "{name}");
    }
}

/// SPEC L-6 across nodes: leads of one client posted to two nodes at
/// once make one deal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_leads_on_two_nodes_make_one_deal() {
    let at = (NOW_MS / 1000) as i64;
    for (name, a, b, _dir) in shared_stores().await {
        let post = |s: Store, _i: i64| {
            tokio::spawn(async move {
                // The same form again and again (a visitor clicking twice,
                // a retrying site): within 12 hours one deal (L-3).
                let lead = form("79160000042", at);
                s.record_lead(
                    &lead,
                    &Settings::default(),
                    &status(),
                    None,
                    &Plan::default(),
                )
                .await
            })
        };
        let tasks: Vec<_> = (0..40)
            .map(|i| post(if i % 2 == 0 { a.clone() } else { b.clone() }, i))
            .collect();
        for t in tasks {
            t.await.expect("task").expect(name);
        }
        let deals = a.list_deals(100, 0).await.expect(name);
        assert_eq!(deals.len(), 1, "{name}: {deals:?}");
        assert_eq!(a.list_leads(100, 0).await.expect(name).len(), 40, "{name}");
    }
}

/// SPEC L-6 when the order of decisions is not the order of the leads'
/// times: a node stamps a lead in one second and decides it after
/// another node decided a lead of the next second (or the other node's
/// clock runs ahead). The later-stamped deal is history all the same:
/// one deal, and the client check attaches the next form to it.
#[tokio::test]
async fn a_lead_decided_after_a_later_stamped_deal_makes_no_second_deal() {
    let at = (NOW_MS / 1000) as i64;
    let client = Settings {
        client: crate::leads::dedup::ClientCheck {
            enabled: true,
            ..Default::default()
        },
        ..Settings::default()
    };
    for (name, a, b, _dir) in shared_stores().await {
        let record = |s: &Store, lead: NewLead, settings: Settings| {
            let s = s.clone();
            async move {
                s.record_lead(&lead, &settings, &status(), None, &Plan::default())
                    .await
                    .expect("recorded")
                    .outcome
            }
        };
        let mut outcomes = vec![
            record(&a, form("79160000077", at + 1), Settings::default()).await,
            record(&b, form("79160000077", at), Settings::default()).await,
        ];
        let mut other_form = form("79160000077", at - 60);
        other_form.who.title = "Callback".into();
        outcomes.push(record(&b, other_form, client.clone()).await);
        assert_eq!(
            outcomes,
            [
                "deal 1 created",
                "duplicate of lead 1",
                "duplicate of deal 1"
            ],
            "{name}"
        );
        assert_eq!(a.list_deals(100, 0).await.expect(name).len(), 1, "{name}");
    }
}

/// Nodes sharing PostgreSQL grant pool numbers in the database: visits
/// arriving at two nodes at once never get one number between them while
/// the pool has free ones, and each node can read the other's grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_never_grant_one_number_to_two_visits() {
    use crate::tracking::pools::PoolConfig;
    let url = crate::test_pg::database();
    let open = || Store::open_with_clock(&url, Clock::manual(NOW_MS));
    let (a, b) = (open().await.expect("a"), open().await.expect("b"));
    assert!(a.is_shared());
    let configs = vec![PoolConfig {
        name: "site".into(),
        numbers: (1..=5).map(|i| format!("7495123000{i}")).collect(),
        destination: crate::config::parse_destination("sip:pbx@127.0.0.1:5070").expect("dest"),
        phone_destination: false,
        hold_ms: 150_000,
        segment: None,
    }];
    for round in 0..4u64 {
        // Every round after the last one's holds ran out: 5 free numbers.
        let now = NOW_MS + round * 1_000_000;
        let grants: Vec<_> = (0..5)
            .map(|i| {
                let node = if i % 2 == 0 { a.clone() } else { b.clone() };
                let configs = configs.clone();
                tokio::spawn(async move {
                    let visit = Visit {
                        id: format!("r{round}-v{i}"),
                        fields: Default::default(),
                    };
                    node.grant_number(configs, visit, now).await
                })
            })
            .collect();
        let mut numbers = Vec::new();
        for g in grants {
            let g = g.await.expect("task").expect("granted").expect("a number");
            numbers.push(g.number);
        }
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), 5, "round {round}: {numbers:?}");
    }
    // What a granted, b reads back: the visit holding each number.
    let rows = b.load_assignments().await.expect("rows");
    assert_eq!(rows.len(), 5);
    assert!(rows
        .iter()
        .all(|r| r.visit.as_ref().is_some_and(|v| v.id.starts_with("r3-"))));
    // One node's store grants only when shared.
    assert!(!Store::memory(Clock::manual(NOW_MS)).is_shared());
}

/// Issue 14 step 3: an answered call's dialog is kept with its start, read
/// back by any node of the database, and gone once the call is recorded.
#[tokio::test]
async fn an_answered_calls_dialog_is_shared_until_its_record_is_written() {
    use crate::calls::AnsweredCall;
    use crate::proxy::handoff::{DialogHandoff, HandoffSide, HandoffTransport};
    for (name, a, b, _dir) in shared_stores().await {
        let plan = Plan::default();
        let c = call("d1@host", "79160000003", NOW_MS);
        let side = |port: u16| HandoffSide {
            transport: HandoffTransport::Udp,
            source: ([127, 0, 0, 1], port).into(),
            contact: Some(([127, 0, 0, 2], port).into()),
        };
        let dialog = DialogHandoff {
            call_id: "d1@host".into(),
            caller_tag: "ct".into(),
            callee_tag: "et".into(),
            caller: side(5070),
            callee: side(5080),
        };
        let start = Job::Start(
            CallStart {
                call_id: "d1@host".into(),
                info: c.info.clone(),
                invite_at: NOW_MS,
            },
            false,
        );
        let record = |jobs: Vec<Job>| {
            let (a, plan) = (a.clone(), plan.clone());
            async move {
                a.record_calls(Arc::new(jobs), &Settings::default(), &status(), &plan)
                    .await
                    .expect(name)
            }
        };
        record(vec![start]).await;
        // Started, not answered: nothing to take over.
        assert_eq!(b.open_dialog("d1@host").await.expect(name), None, "{name}");
        record(vec![Job::Answered(AnsweredCall {
            call_id: "d1@host".into(),
            answer_at: NOW_MS + 2_000,
            dialog: Some(dialog.clone()),
        })])
        .await;
        let got = b
            .open_dialog("d1@host")
            .await
            .expect(name)
            .expect("the other node finds the answered call");
        assert_eq!(got.dialog, dialog, "{name}");
        assert_eq!(
            (got.invite_unix, got.answer_unix, got.info.caller.as_str()),
            (NOW_MS, NOW_MS + 2_000, "79160000003"),
            "{name}"
        );
        assert_eq!(b.open_dialog("other@host").await.expect(name), None);
        // Recorded (by either node): no longer open, nothing to take over.
        let lead = crate::leads::pipeline::call_lead(&c);
        b.record_calls(
            Arc::new(vec![Job::Lead(lead, Some(c.clone()))]),
            &Settings::default(),
            &status(),
            &plan,
        )
        .await
        .expect(name);
        assert_eq!(a.open_dialog("d1@host").await.expect(name), None, "{name}");
    }
    // The memory store (one node) keeps and forgets it alike.
    let m = Store::memory(Clock::manual(NOW_MS));
    let c = call("m1@host", "79160000004", NOW_MS);
    m.record_calls(
        Arc::new(vec![
            Job::Start(
                CallStart {
                    call_id: "m1@host".into(),
                    info: c.info.clone(),
                    invite_at: NOW_MS,
                },
                false,
            ),
            Job::Answered(AnsweredCall {
                call_id: "m1@host".into(),
                answer_at: NOW_MS + 1,
                dialog: Some(DialogHandoff {
                    call_id: "m1@host".into(),
                    caller_tag: "x".into(),
                    callee_tag: "y".into(),
                    caller: HandoffSide {
                        transport: HandoffTransport::Tcp,
                        source: ([127, 0, 0, 1], 1).into(),
                        contact: None,
                    },
                    callee: HandoffSide {
                        transport: HandoffTransport::Udp,
                        source: ([127, 0, 0, 1], 2).into(),
                        contact: None,
                    },
                }),
            }),
        ]),
        &Settings::default(),
        &status(),
        &Plan::default(),
    )
    .await
    .expect("memory");
    assert!(m.open_dialog("m1@host").await.expect("memory").is_some());
    m.record_calls(
        Arc::new(vec![Job::Abandoned("m1@host".into())]),
        &Settings::default(),
        &status(),
        &Plan::default(),
    )
    .await
    .expect("memory");
    assert!(m.open_dialog("m1@host").await.expect("memory").is_none());
}

/// A start and its answer in one batch are written together (issue 15),
/// and the answer is kept whether the start's row is new or was written
/// by an earlier batch (a journal replay sends the start again).
#[tokio::test]
async fn a_start_and_its_answer_in_one_batch_keep_the_answer() {
    for (name, a, b, _dir) in shared_stores().await {
        let record = |jobs: Vec<Job>| {
            let a = a.clone();
            async move { record_jobs(&a, jobs, name).await }
        };
        record(open_call_jobs("fresh@a", true)).await;
        let mut start_only = open_call_jobs("replayed@a", false);
        record(start_only.clone()).await;
        start_only.extend(open_call_jobs("replayed@a", true));
        record(start_only).await;
        for id in ["fresh@a", "replayed@a"] {
            let got = b
                .open_dialog(id)
                .await
                .expect(name)
                .unwrap_or_else(|| panic!("{name}: {id} has no open dialog"));
            assert_eq!(got.answer_unix, NOW_MS + 1_000, "{name} {id}");
            assert_eq!(got.dialog.caller_tag, "ct", "{name} {id}");
        }
    }
}

/// A call's start on node-a, and its answer with the dialog when
/// `answered`.
fn open_call_jobs(id: &str, answered: bool) -> Vec<Job> {
    use crate::calls::AnsweredCall;
    use crate::proxy::handoff::{DialogHandoff, HandoffSide, HandoffTransport};
    let side = |port: u16| HandoffSide {
        transport: HandoffTransport::Udp,
        source: ([127, 0, 0, 1], port).into(),
        contact: None,
    };
    let c = call(id, "79160000021", NOW_MS);
    let mut jobs = vec![Job::Start(
        CallStart {
            call_id: id.into(),
            info: c.info,
            invite_at: NOW_MS,
        },
        false,
    )];
    if answered {
        jobs.push(Job::Answered(AnsweredCall {
            call_id: id.into(),
            answer_at: NOW_MS + 1_000,
            dialog: Some(DialogHandoff {
                call_id: id.into(),
                caller_tag: "ct".into(),
                callee_tag: "et".into(),
                caller: side(5070),
                callee: side(5080),
            }),
        }));
    }
    jobs
}

/// A node crashed and was started again at once under its name: it
/// records its open calls `interrupted`, but an answered call's dialog
/// stays for the BYE still to come (trial, 2026-12-01: deleted with the
/// record, every such BYE got 481 on every node). The BYE's node takes
/// the call over, its real end finds the call recorded (once) and takes
/// the dialog away; a dialog whose BYE never comes goes after
/// `max_call_seconds`.
#[tokio::test]
async fn a_restarted_nodes_interrupted_calls_keep_their_dialogs_for_the_bye() {
    let dir = tempfile::tempdir().expect("scratch dir");
    let urls = [
        (
            "sqlite",
            format!("sqlite:{}", dir.path().join("t.db").display()),
        ),
        ("postgres", crate::test_pg::database()),
    ];
    for (name, url) in urls {
        let open = |node: &'static str, at: u64| {
            let url = url.clone();
            async move { open_node(&url, node, at).await }
        };
        let record = |s: &Store, jobs: Vec<Job>| {
            let s = s.clone();
            async move { record_jobs(&s, jobs, name).await }
        };
        let (a, b) = (open("node-a", NOW_MS).await, open("node-b", NOW_MS).await);
        // Two calls of node-a: one answered with its dialog, one ringing.
        record(&a, open_call_jobs("talking@a", true)).await;
        record(&a, open_call_jobs("ringing@a", false)).await;
        drop(a);
        // node-a again, at once: as the pipeline does at start.
        let a2 = open("node-a", NOW_MS + 2_000).await;
        let cut = a2.interrupted_calls(KEEP_DIALOGS_MS).await.expect(name);
        assert_eq!(cut.len(), 2, "{name}");
        record(
            &a2,
            cut.iter()
                .map(|r| Job::Lead(crate::leads::pipeline::call_lead(r), Some(r.clone())))
                .collect(),
        )
        .await;
        assert!(
            b.open_dialog("talking@a").await.expect(name).is_some(),
            "{name}: the answered call's dialog is still there for its BYE"
        );
        assert_eq!(b.open_dialog("ringing@a").await.expect(name), None);
        // A second restart does not record them again.
        let a3 = open("node-a", NOW_MS + 3_000).await;
        assert!(
            a3.interrupted_calls(KEEP_DIALOGS_MS)
                .await
                .expect(name)
                .is_empty(),
            "{name}"
        );
        // The BYE came to node-b, which took the call over: its end.
        let mut end = call("talking@a", "79160000021", NOW_MS);
        end.end_at = NOW_MS + 9_000;
        record(
            &b,
            vec![Job::Lead(
                crate::leads::pipeline::call_lead(&end),
                Some(end.clone()),
            )],
        )
        .await;
        assert_eq!(b.open_dialog("talking@a").await.expect(name), None);
        let calls = b.list_calls(100, 0).await.expect(name);
        let talking: Vec<_> = calls.iter().filter(|c| c.call_id == "talking@a").collect();
        assert_eq!(talking.len(), 1, "{name}: recorded once");
        assert_eq!(talking[0].hangup.as_deref(), Some("interrupted"), "{name}");

        // A kept dialog whose BYE never comes goes after max_call_seconds.
        let a4 = open("node-a", NOW_MS).await;
        record(&a4, open_call_jobs("lost@a", true)).await;
        let a5 = open("node-a", NOW_MS + 2_000).await;
        let cut = a5.interrupted_calls(KEEP_DIALOGS_MS).await.expect(name);
        record(
            &a5,
            cut.iter()
                .map(|r| Job::Lead(crate::leads::pipeline::call_lead(r), Some(r.clone())))
                .collect(),
        )
        .await;
        assert!(b.open_dialog("lost@a").await.expect(name).is_some());
        let later = open("node-a", NOW_MS + 2_000 + KEEP_DIALOGS_MS + 1).await;
        later.interrupted_calls(KEEP_DIALOGS_MS).await.expect(name);
        assert_eq!(b.open_dialog("lost@a").await.expect(name), None, "{name}");
    }
}

/// Issue 15: a call whose start, answer and record share one batch writes
/// no open row (`record::ended_later`). The outcome is the same on every
/// store: the call is recorded once and not open; a row an earlier batch
/// wrote for it (a replay) is gone too; another call of the batch,
/// started and answered only, is open with its dialog for another node.
#[tokio::test]
async fn a_call_started_and_recorded_in_one_batch_leaves_no_open_call() {
    use crate::calls::AnsweredCall;
    use crate::proxy::handoff::{DialogHandoff, HandoffSide, HandoffTransport};
    for (name, a, b, _dir) in shared_stores().await {
        let plan = Plan::default();
        let side = HandoffSide {
            transport: HandoffTransport::Udp,
            source: ([127, 0, 0, 1], 5070).into(),
            contact: None,
        };
        let start = |id: &str, c: &CallRecord| {
            Job::Start(
                CallStart {
                    call_id: id.into(),
                    info: c.info.clone(),
                    invite_at: NOW_MS,
                },
                false,
            )
        };
        let answered = |id: &str| {
            Job::Answered(AnsweredCall {
                call_id: id.into(),
                answer_at: NOW_MS + 1_000,
                dialog: Some(DialogHandoff {
                    call_id: id.into(),
                    caller_tag: "ct".into(),
                    callee_tag: "et".into(),
                    caller: side,
                    callee: side,
                }),
            })
        };
        let one = call("one@batch", "79160000011", NOW_MS);
        let replayed = call("replayed@batch", "79160000012", NOW_MS);
        let open = call("open@batch", "79160000013", NOW_MS);
        let record = |jobs: Vec<Job>| {
            let (a, plan) = (a.clone(), plan.clone());
            async move {
                a.record_calls(Arc::new(jobs), &Settings::default(), &status(), &plan)
                    .await
                    .expect(name)
            }
        };
        // An earlier batch wrote this one's start and answer.
        record(vec![
            start("replayed@batch", &replayed),
            answered("replayed@batch"),
        ])
        .await;
        assert!(b.open_dialog("replayed@batch").await.expect(name).is_some());
        let done = record(vec![
            start("one@batch", &one),
            start("replayed@batch", &replayed),
            start("open@batch", &open),
            answered("one@batch"),
            answered("replayed@batch"),
            answered("open@batch"),
            Job::Lead(crate::leads::pipeline::call_lead(&one), Some(one.clone())),
            Job::Lead(
                crate::leads::pipeline::call_lead(&replayed),
                Some(replayed.clone()),
            ),
        ])
        .await;
        assert_eq!(done.len(), 2, "{name}");
        for id in ["one@batch", "replayed@batch"] {
            assert_eq!(b.open_dialog(id).await.expect(name), None, "{name} {id}");
        }
        let got = b
            .open_dialog("open@batch")
            .await
            .expect(name)
            .expect("the call still open is there for another node");
        assert_eq!(got.answer_unix, NOW_MS + 1_000, "{name}");
        // Recorded once each: a retry of the batch changes nothing.
        let again = record(vec![
            start("one@batch", &one),
            answered("one@batch"),
            Job::Lead(crate::leads::pipeline::call_lead(&one), Some(one.clone())),
        ])
        .await;
        assert_eq!(again[0].lead_id, done[0].lead_id, "{name}");
        assert_eq!(
            b.open_dialog("one@batch").await.expect(name),
            None,
            "{name}"
        );
    }
}

/// A database a newer siptrack made (one migration more than this build
/// knows) is refused at open with a message that says so, on SQLite and
/// PostgreSQL (trial, 2026-12-02: a downgrade started without a word).
#[tokio::test]
async fn a_database_of_a_newer_siptrack_is_refused() {
    let dir = tempfile::tempdir().expect("scratch dir");
    let file = dir.path().join("t.db");
    let sqlite = format!("sqlite:{}", file.display());
    let pg = crate::test_pg::database();
    for url in [sqlite.as_str(), pg.as_str()] {
        let store = Store::open_with_clock(url, Clock::manual(NOW_MS))
            .await
            .expect(url);
        // A migration this build does not have.
        let newer = if url.starts_with("sqlite:") {
            "PRAGMA user_version = 1000".to_string()
        } else {
            "INSERT INTO schema_migrations (version) VALUES (1000)".to_string()
        };
        store.execute_raw(&newer).await.expect("newer schema");
        drop(store);
        let err = match Store::open_with_clock(url, Clock::manual(NOW_MS)).await {
            Ok(_) => panic!("{url}: opened a newer siptrack's database"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("made by a newer version"), "{url}: {err}");
    }
    // PostgreSQL's own words reach the operator, not "db error".
    let missing = format!("{}_missing", crate::test_pg::database());
    let err = match Store::open_with_clock(&missing, Clock::manual(NOW_MS)).await {
        Ok(_) => panic!("opened a database that does not exist"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("does not exist"), "{err}");
}

/// One running process per node name on a database (trial, 2026-12-02: a
/// second process under the same name recorded the first one's live
/// calls `interrupted`): a second holder of the name is refused, naming
/// it; another name is not; the name is free again once its holder lets
/// go (a crashed process's lock goes with its file handle or session).
#[tokio::test]
async fn a_node_name_is_held_by_one_process_at_a_time() {
    use super::node_hold::HoldPolicy;
    use std::time::Duration;
    let quick = HoldPolicy {
        wait: Duration::from_millis(300),
        stale: Duration::from_secs(60),
    };
    let dir = tempfile::tempdir().expect("scratch dir");
    let file = format!("sqlite:{}", dir.path().join("t.db").display());
    for (name, url) in [("sqlite", file), ("postgres", crate::test_pg::database())] {
        let first = open_node(&url, "pbx-east-1", NOW_MS).await;
        let held = first.hold_node(quick).await.expect(name);
        let second = open_node(&url, "pbx-east-1", NOW_MS).await;
        let refused = second.hold_node(quick).await.err().expect(name).to_string();
        assert!(
            refused.contains("\"pbx-east-1\" is in use by another running siptrack"),
            "{name}: {refused}"
        );
        let other = open_node(&url, "pbx-east-2", NOW_MS).await;
        let _other_held = other.hold_node(quick).await.expect(name);
        // Two names whose PostgreSQL lock keys were one when the key was
        // a 31-bit hash (trial, 2026-12-02: the second node was refused).
        let a = open_node(&url, "pbx-916079", NOW_MS).await;
        let _a_held = a.hold_node(quick).await.expect(name);
        let b = open_node(&url, "pbx-1097694", NOW_MS).await;
        let _b_held = b.hold_node(quick).await.expect(name);
        drop(held);
        let after = HoldPolicy {
            wait: Duration::from_secs(5),
            ..quick
        };
        second.hold_node(after).await.expect(name);
    }
}

/// A PostgreSQL session that holds a node's name but has been silent past
/// `stale` (its host died without closing the connection) is ended, so the
/// node comes back at once instead of after the server's TCP keepalive.
#[tokio::test]
async fn a_silent_postgres_holder_of_a_node_name_is_ended() {
    use super::node_hold::HoldPolicy;
    use std::time::Duration;
    let url = crate::test_pg::database();
    // A name of its own: it ends whatever session holds its name, and
    // `a_node_name_is_held_by_one_process_at_a_time` runs alongside on
    // the same database with "pbx-east-1" (CI of 5e08bcc: that test's
    // session was ended under it, "Closed").
    let node = open_node(&url, "pbx-silent-1", NOW_MS).await;
    // A holder that never speaks again: the lock taken as `hold_node`
    // takes it, from a session of its own.
    let first = node
        .hold_node(HoldPolicy::default())
        .await
        .expect("first hold");
    drop(first);
    let pg = url.clone();
    let mut silent = tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&pg, postgres::NoTls).expect("connect");
        // Wait for the hold's thread to let go, then take its lock.
        take_name_lock(&mut c, "pbx-silent-1");
        c
    })
    .await
    .expect("thread");
    let patient = HoldPolicy {
        wait: Duration::from_millis(500),
        stale: Duration::from_secs(60),
    };
    let refused = node.hold_node(patient).await.err().expect("a live holder");
    assert!(
        refused.to_string().contains("PostgreSQL session"),
        "{refused}"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let impatient = HoldPolicy {
        wait: Duration::from_millis(500),
        stale: Duration::from_secs(1),
    };
    let _held = node
        .hold_node(impatient)
        .await
        .expect("the silent holder ended");
    let ended = tokio::task::spawn_blocking(move || silent.simple_query("SELECT 1").is_err())
        .await
        .expect("thread");
    assert!(ended, "the silent session still answers");
}

/// A clock stepped back (a VM that booted with its clock two hours ahead,
/// then NTP) leaves queued and rescheduled items due hours late; they are
/// due at once, and after one attempt on the new clock their schedule is
/// the ordinary one again (no retry storm until the clock catches up).
#[tokio::test]
async fn a_clock_stepped_back_does_not_hold_crm_requests() {
    let now = NOW_MS as i64;
    let back = now - 2 * 3_600_000;
    for (name, store, _dir) in stores().await {
        queue_creates(&store, 1).await;
        let node = store.node_id().to_string();
        let claimed = store
            .outbox_claim(&node, now, LEASE_MS, 10)
            .await
            .expect(name);
        assert_eq!(claimed.len(), 1, "{name}");
        let retry = |next_at| Settle::Retry {
            crm_deal: None,
            error: "503".into(),
            next_at,
        };
        store
            .outbox_settle(&node, &[(claimed[0].id, retry(now + 300_000))], now)
            .await
            .expect(name);
        let early = store
            .outbox_claim(&node, now + 1_000, LEASE_MS, 10)
            .await
            .expect(name);
        assert!(early.is_empty(), "{name}: retried before its time");
        let after_step = store
            .outbox_claim(&node, back, LEASE_MS, 10)
            .await
            .expect(name);
        assert_eq!(after_step.len(), 1, "{name}: held by the step");
        store
            .outbox_settle(&node, &[(after_step[0].id, retry(back + 300_000))], back)
            .await
            .expect(name);
        let storm = store
            .outbox_claim(&node, back + 1_000, LEASE_MS, 10)
            .await
            .expect(name);
        assert!(storm.is_empty(), "{name}: retried again at once");
        let due = store
            .outbox_claim(&node, back + 300_000, LEASE_MS, 10)
            .await
            .expect(name);
        assert_eq!(due.len(), 1, "{name}");
    }
}

/// An item queued before the clock was stepped back is due at once too.
#[tokio::test]
async fn an_item_queued_before_a_backward_clock_step_is_due_at_once() {
    let back = NOW_MS as i64 - 2 * 3_600_000;
    for (name, store, _dir) in stores().await {
        queue_creates(&store, 1).await;
        let node = store.node_id().to_string();
        let due = store
            .outbox_claim(&node, back, LEASE_MS, 10)
            .await
            .expect(name);
        assert_eq!(due.len(), 1, "{name}");
    }
}

/// SQLite: a file deleted while open is written back with what the store
/// held and used from then on; another file put in its place is reported,
/// not used.
#[tokio::test]
async fn a_deleted_sqlite_file_is_written_back_and_a_replaced_one_reported() {
    use super::sqlite::FileCheck;
    let dir = tempfile::tempdir().expect("scratch dir");
    let path = dir.path().join("t.db");
    let url = format!("sqlite:{}", path.display());
    let store = open_node(&url, "n", NOW_MS).await;
    assert_eq!(store.check_file().await.expect("check"), FileCheck::Same);
    queue_creates(&store, 1).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    queue_creates(&store, 1).await;
    assert_eq!(
        store.check_file().await.expect("check"),
        FileCheck::WrittenBack
    );
    queue_creates(&store, 1).await;
    assert_eq!(store.check_file().await.expect("check"), FileCheck::Same);
    let reopened = open_node(&url, "n", NOW_MS).await;
    assert_eq!(reopened.list_leads(10, 0).await.expect("list").len(), 3);

    std::fs::rename(&path, dir.path().join("moved.db")).expect("move");
    std::fs::write(&path, b"").expect("another file");
    assert_eq!(
        store.check_file().await.expect("check"),
        FileCheck::Replaced
    );
}

/// SQLite: only the WAL deleted (where the newest commits are until a
/// checkpoint): everything is written back into the file (trial,
/// 2026-12-02: a crash then lost the whole database); and the node's
/// lock file deleted with the database is made and locked again, so a
/// second process under the name is still refused.
#[tokio::test]
async fn a_deleted_sqlite_wal_and_lock_file_are_made_again() {
    use super::node_hold::HoldPolicy;
    use super::sqlite::FileCheck;
    let dir = tempfile::tempdir().expect("scratch dir");
    let path = dir.path().join("t.db");
    let url = format!("sqlite:{}", path.display());
    let store = open_node(&url, "n", NOW_MS).await;
    let quick = HoldPolicy {
        wait: std::time::Duration::from_millis(200),
        ..HoldPolicy::default()
    };
    let _held = store.hold_node(quick).await.expect("hold");
    queue_creates(&store, 1).await;
    std::fs::remove_file(format!("{}-wal", path.display())).expect("rm -wal");
    queue_creates(&store, 1).await;
    assert_eq!(
        store.check_file().await.expect("check"),
        FileCheck::WrittenBack
    );
    // A copy of the file now (as a crash would leave it) has both.
    let copy = dir.path().join("copy.db");
    std::fs::copy(&path, &copy).expect("copy");
    let _ = std::fs::copy(
        format!("{}-wal", path.display()),
        format!("{}-wal", copy.display()),
    );
    let crashed = open_node(&format!("sqlite:{}", copy.display()), "m", NOW_MS).await;
    assert_eq!(crashed.list_leads(10, 0).await.expect("list").len(), 2);

    let lock = super::node_hold::lock_file_of(&path, "n");
    for p in [
        path.clone(),
        format!("{}-wal", path.display()).into(),
        format!("{}-shm", path.display()).into(),
        lock.clone(),
    ] {
        let _ = std::fs::remove_file(p);
    }
    assert_eq!(
        store.check_file().await.expect("check"),
        FileCheck::WrittenBack
    );
    assert!(lock.exists(), "the lock file is made again");
    let second = open_node(&url, "n", NOW_MS).await;
    assert!(
        second.hold_node(quick).await.is_err(),
        "the name is still held"
    );
    assert_eq!(second.list_leads(10, 0).await.expect("list").len(), 2);
}

/// A process whose PostgreSQL session was ended as a dead host's (it was
/// frozen past the stale time) while another process took its name is
/// told so, to stop (trial, 2026-12-02: it went on taking calls under
/// the name).
#[tokio::test]
async fn a_node_that_lost_its_name_to_another_process_is_told() {
    use super::node_hold::HoldPolicy;
    use std::time::Duration;
    let url = crate::test_pg::database();
    // A name of its own: it ends the sessions of its name, and other
    // tests hold "pbx-east-1" on the same database at the same time.
    let node = open_node(&url, "pbx-lost-1", NOW_MS).await;
    let held = node.hold_node(HoldPolicy::default()).await.expect("hold");
    // Another process ends the session and takes the name at once.
    let pg = url.clone();
    let other = tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&pg, postgres::NoTls).expect("connect");
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE application_name = 'siptrack node pbx-lost-1'",
            &[],
        )
        .expect("terminate");
        take_name_lock(&mut c, "pbx-lost-1");
        c
    })
    .await
    .expect("thread");
    let told = tokio::time::timeout(Duration::from_secs(15), held.lost()).await;
    // The other session's client is closed off the runtime's threads.
    tokio::task::spawn_blocking(move || drop(other))
        .await
        .expect("thread");
    told.expect("told within a few heartbeats");
}

/// Takes `node`'s name lock on the raw session `c` as another process
/// would, waiting up to 10 s for it to come free. Blocking.
fn take_name_lock(c: &mut postgres::Client, node: &str) {
    let key = super::postgres::node_key(node);
    for _ in 0..100 {
        let got: bool = c
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .expect("lock")
            .get(0);
        if got {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the name {node} never came free");
}

/// The health probe of a SQLite file another process holds write-locked
/// fails within its 3 s (a read would pass: WAL), and passes
/// again once the lock is gone; the store's own writes keep their longer
/// wait. QA, 2026-12-02: /healthz said ok for such a file.
#[tokio::test]
async fn a_write_locked_sqlite_file_fails_the_probe() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("probe.db");
    let store = Store::open(&format!("sqlite:{}", db.display()))
        .await
        .expect("store");
    store.probe().await.expect("free: the probe passes");
    let lock = rusqlite::Connection::open(&db).expect("second connection");
    lock.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let asked = std::time::Instant::now();
    assert!(store.probe().await.is_err(), "locked: the probe fails");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    store.outbox_depth().await.expect("a read still passes");
    lock.execute_batch("COMMIT").expect("unlock");
    store.probe().await.expect("free again");
    store
        .execute_raw("CREATE TABLE after_probe (x); DROP TABLE after_probe")
        .await
        .expect("the connection is usable after the probe");
}

/// A CRM that gives one id to two deals (it merged them, or its counter
/// started again): a status for that id changes every deal it names, not
/// only the oldest, which may be another client's (trial, 2026-12-03).
#[tokio::test]
async fn a_status_for_a_crm_id_two_deals_share_changes_both() {
    for (name, store, _dir) in stores().await {
        // Three clients' deals.
        queue_creates(&store, 3).await;
        let now = NOW_MS as i64;
        let (node, due) = claim_due(&store, now).await;
        assert_eq!(due.len(), 3, "{name}");
        let settled: Vec<(i64, Settle)> = due
            .iter()
            .zip(["CRM-SAME", "CRM-OTHER", "CRM-SAME"])
            .map(|(d, crm)| {
                let deal = d.deal_ref.expect("deal");
                (
                    d.id,
                    Settle::Done {
                        crm_deal: Some((deal, crm.into())),
                    },
                )
            })
            .collect();
        store.outbox_settle(&node, &settled, now).await.expect(name);
        let newest = due[2].deal_ref.expect("deal");
        assert_eq!(
            store
                .set_deal_status("CRM-SAME", "LOST", Group::Cancelled, true)
                .await
                .expect(name),
            Some(newest),
            "{name}"
        );
        let deals = store.list_deals(10, 0).await.expect(name);
        let mut statuses: Vec<(Option<String>, String)> = deals
            .iter()
            .map(|d| (d.crm_id.clone(), d.status.clone()))
            .collect();
        statuses.sort();
        assert_eq!(
            statuses,
            [
                (Some("CRM-OTHER".to_string()), "NEW".to_string()),
                (Some("CRM-SAME".to_string()), "LOST".to_string()),
                (Some("CRM-SAME".to_string()), "LOST".to_string()),
            ],
            "{name}"
        );
    }
}

/// `GET /api/v1/leads?since=`: a call's lead is dated at the call's start
/// but recorded at its end, so `since` lists it when either is at or
/// after it (trial, 2026-12-03: a poller missed every call under way at
/// its poll).
#[tokio::test]
async fn a_calls_lead_is_listed_since_its_call_ended() {
    let plan = Plan::default();
    let s = Settings::default();
    for (name, store, _dir) in stores().await {
        // Began 60 s before NOW_MS, ended 17 s before it (43 s long).
        let c = call("long@h", "79160000021", NOW_MS - 60_000);
        let lead = crate::leads::pipeline::call_lead(&c);
        store
            .record_calls(
                Arc::new(vec![Job::Lead(lead, Some(c))]),
                &s,
                &status(),
                &plan,
            )
            .await
            .expect(name);
        let listed = |since_ms: u64| {
            let store = store.clone();
            async move {
                store
                    .list_leads(10, (since_ms / 1000) as i64)
                    .await
                    .expect("leads")
                    .len()
            }
        };
        // A poll while it was under way: the next poll lists it.
        assert_eq!(listed(NOW_MS - 30_000).await, 1, "{name}");
        assert_eq!(listed(NOW_MS - 60_000).await, 1, "{name}");
        // A poll after it ended: no more.
        assert_eq!(listed(NOW_MS - 15_000).await, 0, "{name}");
    }
}

/// `POST /api/v1/outbox/{id}/retry` on an item waiting out its backoff (a
/// Retry-After of up to an hour): due now, once it is not in flight
/// (trial, 2026-12-03: only parked items could be retried, so a lead
/// waited the hour after the CRM was back).
#[tokio::test]
async fn a_waiting_outbox_item_can_be_sent_now() {
    for (name, store, _dir) in stores().await {
        queue_creates(&store, 1).await;
        let now = NOW_MS as i64;
        let (node, due) = claim_due(&store, now).await;
        assert_eq!(due.len(), 1, "{name}");
        let id = due[0].id;
        // In flight: not touched.
        assert!(!store.outbox_requeue(id, now).await.expect(name), "{name}");
        let hour = 3_600_000;
        store
            .outbox_settle(
                &node,
                &[(
                    id,
                    Settle::Retry {
                        crm_deal: None,
                        error: "HTTP 429".into(),
                        next_at: now + hour,
                    },
                )],
                now,
            )
            .await
            .expect(name);
        assert!(store
            .outbox_claim(&node, now + 1, LEASE_MS, 10)
            .await
            .expect(name)
            .is_empty());
        assert!(
            store.outbox_requeue(id, now + 1).await.expect(name),
            "{name}"
        );
        let due = store
            .outbox_claim(&node, now + 1, LEASE_MS, 10)
            .await
            .expect(name);
        assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), [id], "{name}");
        // Unknown ids and delivered items stay a "no".
        assert!(
            !store.outbox_requeue(id + 1000, now + 2).await.expect(name),
            "{name}"
        );
    }
}
