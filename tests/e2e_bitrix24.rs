//! crm.kind = "bitrix24" end to end (issue 16): a test Bitrix24 on
//! loopback (tests/common/bitrix24.rs) receives what siptrack makes of
//! SIPp calls and form leads — deals with their contacts, a timeline
//! comment, a task, calls registered and finished — inside its leaky
//! bucket; answers lost after Bitrix24 applied them give one deal, one
//! contact, one call; a won stage sent back by Bitrix24's webhook makes
//! the client's next call a new deal (L-3).

mod common;

use std::time::Duration;

use common::bitrix24::{Bitrix, USER};
use common::checks::{post_form, post_json};
use common::{free_port, Sipp, Siptrack};
use serde_json::{json, Value};

const TOKEN: &str = "api-token-e2e";
const APP_TOKEN: &str = "b24-app-token-0123456789";

struct Setup {
    timeout_ms: u64,
    burst: u32,
    per_second: u32,
    /// `entity = "deal"` in pipeline 2, or `entity = "lead"`.
    entity: &'static str,
}

const REAL: Setup = Setup {
    timeout_ms: 2_000,
    burst: 50,
    per_second: 2,
    entity: "entity = \"deal\"\ncategory_id = 2",
};

fn config(b: &Bitrix, uas_port: u16, db: &str, s: &Setup) -> String {
    let url = b.webhook_url();
    let Setup {
        timeout_ms,
        burst,
        per_second,
        entity,
    } = s;
    format!(
        r#"[sip]
listen = ["udp:127.0.0.1:{{SIP_PORT}}"]
trusted_sources = ["127.0.0.0/8"]
route_secret = "e2e-b24"

[tracking]
default_destination = "sip:pbx@127.0.0.1:{uas_port}"

[[tracking.pools]]
name = "site"
numbers = ["74951230001"]
destination = "sip:pbx@127.0.0.1:{uas_port}"
hold_seconds = 600

[dedup]
append_to_duplicates = true

[dedup.client]
enabled = true
by_phone = true
action = "task"

[status_groups]
"Prepaid" = "in_progress"

[crm]
kind = "bitrix24"
timeout_ms = {timeout_ms}
timezone = "UTC+3"

[crm.retry]
initial_ms = 100
max_ms = 800

[crm.bitrix24]
webhook_url = "{url}"
{entity}
responsible_user_id = 9
task_minutes = 30
burst = {burst}
requests_per_second = {per_second}
application_token = "{APP_TOKEN}"
stage_map = {{ "C2:PREPAYMENT_INVOICE" = "Prepaid" }}

[http]
listen = "127.0.0.1:{{HTTP_PORT}}"
token = "{TOKEN}"

[storage]
url = "sqlite:{db}"
"#
    )
}

fn start(b: &Bitrix, s: &Setup) -> (Siptrack, u16, tempfile::TempDir) {
    let uas_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir
        .path()
        .join("siptrack.db")
        .to_string_lossy()
        .into_owned();
    let p = Siptrack::start(&config(b, uas_port, &db, s));
    (p, uas_port, dir)
}

fn post(p: &Siptrack, path: &str, body: &Value) -> Value {
    let (status, reply) = post_json(p.api(), path, Some(TOKEN), &body.to_string());
    assert_eq!(status, 200, "{path} {body}: {reply}");
    serde_json::from_str(&reply).expect("JSON answer")
}

/// One SIPp call from `caller` to `number`, talking a second.
fn call(p: &Siptrack, uas_port: u16, number: &str, caller: &str) {
    let uas = Sipp::uas("uas.xml")
        .port(uas_port)
        .calls(1)
        .time_limit(Duration::from_secs(20))
        .spawn();
    let uac = Sipp::uac("uac_tracking.xml", p.sip_addr())
        .calls(1)
        .rate(1)
        .arg("-s")
        .arg(number)
        .arg("-key")
        .arg("caller")
        .arg(caller)
        .arg("-d")
        .arg("1000")
        .time_limit(Duration::from_secs(20))
        .run();
    let uas = uas.wait_at_most(Duration::from_secs(10));
    assert_eq!(uac.failed(), 0, "{}\n{}", uac.summary(), uas.summary());
}

fn comm(v: &str) -> Value {
    json!([{"VALUE": v, "VALUE_TYPE": "WORK"}])
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

#[test]
fn a_call_and_form_leads_become_bitrix24_deals_contacts_comments_tasks_and_calls() {
    let b = Bitrix::start(REAL.burst, REAL.per_second);
    let (p, uas_port, _dir) = start(&b, &REAL);
    let visit = json!({"visit_id": "v-77", "marker": "google_cpc", "source": "google",
                       "utm_source": "google", "utm_medium": "cpc", "utm_campaign": "sofas",
                       "page": "https://shop.example/"});
    let number = post(&p, "/api/v1/visits", &visit)["number"]
        .as_str()
        .expect("a pool number")
        .to_string();
    call(&p, uas_port, &number, "89160000001");
    b.wait_until(
        Duration::from_secs(20),
        "the call's deal and its finished call",
        |s| s.deals.len() == 1 && s.finished_calls().len() == 1,
    );
    let (deal_id, deal, contact_id, contact, the_call) = {
        let s = b.lock();
        (
            s.deals[0].0,
            s.deals[0].1.clone(),
            s.contacts[0].0,
            s.contacts[0].1.clone(),
            s.calls[0].clone(),
        )
    };
    let key = deal["ORIGIN_ID"].as_str().expect("ORIGIN_ID").to_string();
    assert!(
        key.ends_with("-deal.create") && key.contains("-lead-"),
        "{key}"
    );
    let text = deal["COMMENTS"].as_str().expect("COMMENTS").to_string();
    assert!(text.contains("74951230001"), "{text}");
    assert_eq!(
        deal,
        json!({"TITLE": "Incoming call from 79160000001", "CONTACT_ID": contact_id,
               "CATEGORY_ID": 2, "SOURCE_ID": "CALL",
               "SOURCE_DESCRIPTION": "marker: google_cpc; source: google; page: https://shop.example/",
               "UTM_SOURCE": "google", "UTM_MEDIUM": "cpc", "UTM_CAMPAIGN": "sofas",
               "COMMENTS": text, "ORIGINATOR_ID": "siptrack", "ORIGIN_ID": key,
               "ASSIGNED_BY_ID": 9})
    );
    assert_eq!(
        contact,
        json!({"NAME": "79160000001", "PHONE": comm("79160000001"), "SOURCE_ID": "CALL",
               "ORIGINATOR_ID": "siptrack", "ORIGIN_ID": key, "ASSIGNED_BY_ID": 9})
    );
    // The call: registered on the deal, then finished with its duration.
    let start = the_call.register["CALL_START_DATE"]
        .as_str()
        .expect("CALL_START_DATE")
        .to_string();
    let started = chrono::DateTime::parse_from_rfc3339(&start).expect("ISO 8601");
    assert_eq!(started.offset().local_minus_utc(), 3 * 3600, "{start}");
    assert!((unix_now() - started.timestamp()).abs() < 60, "{start}");
    assert_eq!(
        the_call.register,
        // LINE_NUMBER: the tracking number the client dialed.
        json!({"USER_ID": 9, "PHONE_NUMBER": "79160000001", "TYPE": 2, "CALL_START_DATE": start,
               "CRM_CREATE": 0, "SHOW": 0, "CRM_ENTITY_TYPE": "DEAL", "CRM_ENTITY_ID": deal_id,
               "LINE_NUMBER": "74951230001"})
    );
    assert_eq!(
        the_call.finish,
        Some(
            json!({"CALL_ID": the_call.call_id, "USER_ID": 9, "DURATION": 1,
                    "STATUS_CODE": "200", "ADD_TO_CHAT": 0})
        )
    );

    // A form lead (a new client: a deal and a contact), the same client
    // again (a task on that deal), and the first form sent twice (a
    // duplicate appended: a new deal on the same contact and a comment).
    let form = json!({"title": "Sofa order", "name": "Ivan", "phone": "8 (903) 555-12-34",
                      "email": "Ivan@Example.com", "text": "Call me after 6", "visit_id": "v-77"});
    post(&p, "/api/v1/leads", &form);
    let before = unix_now();
    let again = post(
        &p,
        "/api/v1/leads",
        &json!({"title": "Second order", "phone": "+7 903 555 12 34", "text": "Chairs too"}),
    );
    assert!(
        again["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("duplicate of deal")),
        "{again}"
    );
    post(&p, "/api/v1/leads", &form);
    b.wait_until(
        Duration::from_secs(20),
        "the form deals, the task and the comment",
        |s| s.deals.len() == 3 && s.tasks.len() == 1 && s.comments.len() == 1,
    );
    let s = b.lock();
    assert_eq!(
        s.contacts.len(),
        2,
        "the duplicate's deal found Ivan's contact"
    );
    let (form_deal_id, form_deal, _) = &s.deals[1];
    let form_contact = &s.contacts[1];
    let form_key = form_deal["ORIGIN_ID"].clone();
    assert_eq!(
        form_deal,
        &json!({"TITLE": "Sofa order", "CONTACT_ID": form_contact.0, "CATEGORY_ID": 2,
                "SOURCE_ID": "WEB",
                "SOURCE_DESCRIPTION": "marker: google_cpc; source: google; page: https://shop.example/",
                "UTM_SOURCE": "google", "UTM_MEDIUM": "cpc", "UTM_CAMPAIGN": "sofas",
                "COMMENTS": "Call me after 6", "ORIGINATOR_ID": "siptrack", "ORIGIN_ID": form_key,
                "ASSIGNED_BY_ID": 9})
    );
    assert_eq!(
        form_contact.1,
        json!({"NAME": "Ivan", "PHONE": comm("79035551234"), "EMAIL": comm("ivan@example.com"),
               "SOURCE_ID": "WEB", "ORIGINATOR_ID": "siptrack", "ORIGIN_ID": form_key,
               "ASSIGNED_BY_ID": 9})
    );
    let task = &s.tasks[0];
    let deadline =
        chrono::DateTime::parse_from_rfc3339(task["DEADLINE"].as_str().expect("DEADLINE"))
            .expect("ISO 8601");
    assert!(
        (before + 1_800 - 5..=unix_now() + 1_800 + 5).contains(&deadline.timestamp()),
        "{task}"
    );
    assert_eq!(deadline.offset().local_minus_utc(), 3 * 3600);
    let again_id = again["lead_id"].as_i64().expect("lead id");
    assert_eq!(
        task,
        &json!({"TITLE": "Second order",
                // Who the repeat lead is first: the deal's contact is
                // the first lead's.
                "DESCRIPTION": format!("Phone: 79035551234\nChairs too\n\n(siptrack lead {again_id})"),
                "RESPONSIBLE_ID": 9,
                "DEADLINE": task["DEADLINE"], "UF_CRM_TASK": [format!("D_{form_deal_id}")]})
    );
    let (dup_id, dup, _) = &s.deals[2];
    assert_eq!(dup["TITLE"], "Sofa order");
    assert_eq!(dup["CONTACT_ID"], form_contact.0);
    let comment = &s.comments[0];
    assert_eq!(comment["ENTITY_ID"], *dup_id);
    assert_eq!(comment["ENTITY_TYPE"], "deal");
    assert!(
        comment["COMMENT"]
            .as_str()
            // After the lines saying who the lead is.
            .is_some_and(|c| c
                .lines()
                .any(|l| l.starts_with("Duplicate: duplicate of lead"))),
        "{comment}"
    );
    assert_eq!(s.refused_for_rate, 0);
    assert!(s.bad_requests.is_empty(), "{:?}", s.bad_requests);
    assert!(
        s.requests.iter().all(|r| r.status < 300),
        "{:?}",
        s.requests
    );
    assert!(s.requests.iter().all(|r| r.method.contains('.')));
    assert_eq!(
        USER, 7,
        "the webhook's user; deals go to responsible_user_id"
    );
}

#[test]
fn five_hundred_leads_at_once_stay_inside_the_bucket_and_in_order_per_deal() {
    // A portal drained faster than the default, so the test takes
    // seconds; the bucket is as small as Bitrix24's.
    let fast = Setup {
        burst: 50,
        per_second: 100,
        ..REAL
    };
    let b = Bitrix::start(fast.burst, fast.per_second);
    let (p, _uas, _dir) = start(&b, &fast);
    let phone = |i: usize| format!("+7 903 100 {:02} {:02}", i / 100, i % 100);
    let started = std::time::Instant::now();
    for i in 0..500 {
        // 400 clients; every fifth lead is the client of four leads
        // before again (a task on that client's deal, queued while the
        // deal's create is still on its way).
        let (title, who) = if i % 5 == 4 {
            (format!("Again {i}"), i - 4)
        } else {
            (format!("Order {i}"), i)
        };
        post(
            &p,
            "/api/v1/leads",
            &json!({"title": title, "phone": phone(who), "text": format!("lead {i}")}),
        );
    }
    let posted = started.elapsed();
    b.wait_until(Duration::from_secs(120), "400 deals and 100 tasks", |s| {
        s.deals.len() == 400 && s.tasks.len() == 100
    });
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let s = b.lock();
    assert_eq!(s.refused_for_rate, 0, "no request beyond the bucket");
    assert!(
        s.bad_requests.is_empty(),
        "{:?}",
        &s.bad_requests[..s.bad_requests.len().min(5)]
    );
    assert_eq!(s.contacts.len(), 400);
    // Order per deal: each task reached Bitrix24 after its deal existed
    // (the server refuses a task on an unknown deal) and names it.
    for t in &s.tasks {
        let bound = t["UF_CRM_TASK"][0].as_str().expect("bound");
        let id: u64 = bound.trim_start_matches("D_").parse().expect("deal id");
        let deal = s.deals.iter().find(|d| d.0 == id).expect("its deal");
        // After the Phone line the repeat lead's text: `lead <n>`.
        let n: usize = t["DESCRIPTION"]
            .as_str()
            .and_then(|d| d.lines().find(|l| l.starts_with("lead ")))
            .and_then(|d| d.strip_prefix("lead "))
            .and_then(|n| n.parse().ok())
            .expect("lead n");
        assert_eq!(deal.1["TITLE"], format!("Order {}", n - 4), "{t}");
    }
    eprintln!(
        "500 leads: posted in {:.1} s; {} requests, all delivered {:.1} s after the first post, none refused",
        posted.as_secs_f64(),
        s.requests.len(),
        took.as_secs_f64()
    );
}

#[test]
fn answers_lost_after_bitrix24_applied_them_give_one_deal_one_contact_one_call() {
    let b = Bitrix::start(REAL.burst, REAL.per_second);
    {
        let mut s = b.lock();
        for m in [
            "crm.contact.add",
            "crm.deal.add",
            "telephony.externalcall.finish",
            "tasks.task.add",
            "crm.timeline.comment.add",
        ] {
            s.slow.insert(m.to_string(), 1);
        }
        s.slow_by = Duration::from_millis(1_500);
    }
    let quick = Setup {
        timeout_ms: 400,
        ..REAL
    };
    let (p, uas_port, _dir) = start(&b, &quick);
    call(&p, uas_port, "74951230001", "89160000002");
    b.wait_until(Duration::from_secs(30), "the finished call", |s| {
        !s.finished_calls().is_empty()
    });
    // The same client by form (a task on the call's deal); a new
    // client's form sent twice (a duplicate appended: a deal and its
    // comment).
    post(
        &p,
        "/api/v1/leads",
        &json!({"title": "Form", "phone": "+7 916 000 00 02", "text": "Chairs"}),
    );
    let other = json!({"title": "Sofa", "name": "Olga", "phone": "+7 916 000 00 09",
                       "email": "olga@example.com", "text": "Blue", "visit_id": "v-5"});
    post(&p, "/api/v1/leads", &other);
    post(&p, "/api/v1/leads", &other);
    b.wait_until(Duration::from_secs(30), "the task and the comment", |s| {
        !s.tasks.is_empty() && !s.comments.is_empty()
    });
    // Whatever else was still to come would have come by now.
    std::thread::sleep(Duration::from_secs(2));
    let s = b.lock();
    assert_eq!(
        s.deals.len(),
        3,
        "the call's deal once, Olga's two: {:?}",
        s.deals
    );
    assert_eq!(
        s.contacts.len(),
        2,
        "the caller's once, Olga's: {:?}",
        s.contacts
    );
    assert_eq!(s.tasks.len(), 1, "one task: {:?}", s.tasks);
    assert_eq!(s.comments.len(), 1, "one comment: {:?}", s.comments);
    assert_eq!(
        s.finished_calls().len(),
        1,
        "one call record: {:?}",
        s.calls
    );
    assert_eq!(s.calls.len(), 1, "registered once: {:?}", s.calls);
    assert_eq!(s.calls[0].register["CRM_ENTITY_ID"], s.deals[0].0);
    let count = |m: &str| s.requests.iter().filter(|r| r.method == m).count();
    // Each lost answer was retried: applied once, looked up after.
    assert_eq!(count("crm.contact.add"), 2);
    assert_eq!(count("crm.deal.add"), 3);
    assert_eq!(count("telephony.externalcall.finish"), 1);
    assert_eq!(count("tasks.task.add"), 1);
    assert_eq!(count("crm.timeline.comment.add"), 1);
    assert!(count("tasks.task.list") >= 2, "{:?}", s.requests);
    assert!(count("crm.deal.list") >= 3, "{:?}", s.requests);
    assert!(count("voximplant.statistic.get") >= 2, "{:?}", s.requests);
}

#[test]
fn a_won_stage_sent_back_by_bitrix24_makes_the_next_call_a_new_deal() {
    let b = Bitrix::start(REAL.burst, REAL.per_second);
    let (p, uas_port, _dir) = start(&b, &REAL);
    let hook = "/api/v1/crm/bitrix24/webhook";
    let event = |id: u64, token: &str| {
        format!(
            "event=ONCRMDEALUPDATE&data%5BFIELDS%5D%5BID%5D={id}&ts=1795435200\
             &auth%5Bdomain%5D=acme.bitrix24.ru&auth%5Bclient_endpoint%5D=https%3A%2F%2Facme.bitrix24.ru%2Frest%2F\
             &auth%5Bapplication_token%5D={token}"
        )
    };
    call(&p, uas_port, "74951230001", "89160000003");
    b.wait_until(Duration::from_secs(20), "the first deal", |s| {
        s.deals.len() == 1
    });
    let deal = b.lock().deals[0].0;
    let ours = p.wait_for("deals", 1, TOKEN);
    // Bitrix24 names the deal once its create is recorded.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let named = deal.to_string();
    while p.list("deals", TOKEN)[0]["crm_deal_id"].as_str() != Some(named.as_str()) {
        assert!(std::time::Instant::now() < deadline, "{ours:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A forged event changes nothing.
    b.set_stage(deal, "C2:WON");
    let (status, body) = post_form(p.api(), hook, &event(deal, "not-the-token-0123"));
    assert_eq!(status, 401, "{body}");
    assert_eq!(p.list("deals", TOKEN)[0]["group"], "not_counted");
    // A stage the map names (a status of [status_groups]).
    b.set_stage(deal, "C2:PREPAYMENT_INVOICE");
    let (status, body) = post_form(p.api(), hook, &event(deal, APP_TOKEN));
    assert_eq!(status, 200, "{body}");
    let d = &p.list("deals", TOKEN)[0];
    assert_eq!(
        (d["status"].as_str(), d["group"].as_str()),
        (Some("Prepaid"), Some("in_progress"))
    );
    // Lost for "analysis of failure" (APOLOGY): no map names it, its
    // semantics (F) say lost.
    b.set_stage(deal, "C2:APOLOGY");
    let (status, body) = post_form(p.api(), hook, &event(deal, APP_TOKEN));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"cancelled\""), "{body}");
    assert_eq!(p.list("deals", TOKEN)[0]["group"], "cancelled");
    // Won (WON of pipeline 2): paid.
    b.set_stage(deal, "C2:WON");
    let (status, body) = post_form(p.api(), hook, &event(deal, APP_TOKEN));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        v,
        json!({"crm_deal_id": deal.to_string(), "stage": "C2:WON", "status": "paid", "updated": true})
    );
    assert_eq!(p.list("deals", TOKEN)[0]["group"], "paid");
    // Bitrix24 asked for the stage each time, with the webhook.
    assert_eq!(
        b.lock()
            .requests
            .iter()
            .filter(|r| r.method == "crm.deal.get")
            .count(),
        3
    );
    // A deal Bitrix24 does not have: its error, not a change.
    let (status, body) = post_form(p.api(), hook, &event(999_999, APP_TOKEN));
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("ERROR_NOT_FOUND"), "{body}");
    // Garbage: no token in it, refused before anything is asked.
    let (status, body) = post_form(p.api(), hook, "%%%&&&=data[FIELDS]=\u{0}");
    assert_eq!(status, 401, "{body}");
    // Another entity's event is not ours to act on.
    let (status, body) = post_form(
        p.api(),
        hook,
        &event(deal, APP_TOKEN).replace("ONCRMDEALUPDATE", "ONCRMCONTACTUPDATE"),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ignored"), "{body}");

    // The deal deleted in Bitrix24: cancelled, no stage read.
    let (status, body) = post_form(
        p.api(),
        hook,
        &event(deal, APP_TOKEN).replace("ONCRMDEALUPDATE", "ONCRMDEALDELETE"),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"deleted\":true"), "{body}");
    assert_eq!(p.list("deals", TOKEN)[0]["group"], "cancelled");

    // The client calls again: the won deal is not a candidate (L-3).
    call(&p, uas_port, "74951230001", "89160000003");
    let leads = p.wait_for("leads", 2, TOKEN);
    assert_eq!(leads[0]["outcome"], "deal 2 created", "{leads:#?}");
    b.wait_until(Duration::from_secs(20), "the second deal", |s| {
        s.deals.len() == 2 && s.finished_calls().len() == 2
    });
    let s = b.lock();
    assert_eq!(s.contacts.len(), 1, "the same client's contact");
    assert_eq!(s.deals[1].1["CONTACT_ID"], s.contacts[0].0);
}

#[test]
fn a_status_webhook_while_bitrix24_is_down_answers_502_within_seconds() {
    let b = Bitrix::start(REAL.burst, REAL.per_second);
    let (p, _uas, _dir) = start(&b, &REAL);
    drop(b);
    let started = std::time::Instant::now();
    let (status, body) = post_form(
        p.api(),
        "/api/v1/crm/bitrix24/webhook",
        &format!("event=ONCRMDEALUPDATE&data%5BFIELDS%5D%5BID%5D=5&auth%5Bapplication_token%5D={APP_TOKEN}"),
    );
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("reading deal 5 from Bitrix24"), "{body}");
    // Three tries, bounded: the webhook is answered within seconds.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn with_entity_lead_form_leads_become_bitrix24_leads_with_their_task_and_comment() {
    let b = Bitrix::start(REAL.burst, REAL.per_second);
    let leads = Setup {
        entity: "entity = \"lead\"",
        ..REAL
    };
    let (p, _uas, _dir) = start(&b, &leads);
    let form = json!({"title": "Sofa order", "name": "Ivan", "phone": "8 (903) 555-12-35",
                      "email": "ivan@example.com", "text": "Call me after 6"});
    post(&p, "/api/v1/leads", &form);
    post(
        &p,
        "/api/v1/leads",
        &json!({"title": "Second order", "phone": "+7 903 555 12 35", "text": "Chairs too"}),
    );
    post(&p, "/api/v1/leads", &form);
    b.wait_until(
        Duration::from_secs(20),
        "two leads, the task and the comment",
        |s| s.leads.len() == 2 && s.tasks.len() == 1 && s.comments.len() == 1,
    );
    let s = b.lock();
    assert!(s.deals.is_empty());
    assert_eq!(s.contacts.len(), 1);
    let (lead_id, lead, _) = &s.leads[0];
    let key = lead["ORIGIN_ID"].clone();
    assert_eq!(
        lead,
        &json!({"TITLE": "Sofa order", "CONTACT_ID": s.contacts[0].0, "NAME": "Ivan",
                "PHONE": comm("79035551235"), "EMAIL": comm("ivan@example.com"),
                "SOURCE_ID": "WEB", "COMMENTS": "Call me after 6",
                "ORIGINATOR_ID": "siptrack", "ORIGIN_ID": key, "ASSIGNED_BY_ID": 9})
    );
    assert_eq!(s.tasks[0]["UF_CRM_TASK"], json!([format!("L_{lead_id}")]));
    assert_eq!(s.comments[0]["ENTITY_TYPE"], "lead");
    assert_eq!(s.comments[0]["ENTITY_ID"], s.leads[1].0);
    let lists = s
        .requests
        .iter()
        .filter(|r| r.method == "crm.lead.list")
        .count();
    assert_eq!(lists, 2, "each create looked its lead up first");
    assert!(s.bad_requests.is_empty(), "{:?}", s.bad_requests);
}
