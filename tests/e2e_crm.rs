//! CRM webhooks end to end (issue 5, SPEC C-2 … C-5): a test CRM on
//! loopback receives what siptrack sends for SIPp calls and form leads;
//! it fails in every way a CRM does, siptrack is killed with a queue, and
//! every request's signature is checked.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::checks::{get, post_json};
use common::crm::{expected_signature, Crm, Mode};
use common::{free_port, Db, Sipp, Siptrack};
use serde_json::{json, Value};

const TOKEN: &str = "crm-token-7f3a";
const SECRET: &str = "crm-secret-e2e-91b4";

struct Setup<'a> {
    uas_port: u16,
    db: &'a str,
    crm: &'a Crm,
    /// Extra `[crm]` keys.
    crm_keys: &'a str,
    /// Extra top-level tables.
    extra: &'a str,
}

fn config(s: &Setup) -> String {
    let (uas_port, db, crm_keys, extra) = (s.uas_port, s.db, s.crm_keys, s.extra);
    let (hook, start, end) = (s.crm.url("/hook"), s.crm.url("/start"), s.crm.url("/end"));
    format!(
        r#"[sip]
listen = ["udp:127.0.0.1:{{SIP_PORT}}"]
trusted_sources = ["127.0.0.0/8"]
route_secret = "e2e-crm"

[tracking]
default_destination = "sip:pbx@127.0.0.1:{uas_port}"

[[tracking.numbers]]
number = "74951110001"
destination = "sip:pbx@127.0.0.1:{uas_port}"
marker = "billboard"
source = "offline"

[[tracking.pools]]
name = "site"
numbers = ["74951230001"]
destination = "sip:pbx@127.0.0.1:{uas_port}"
hold_seconds = 600

[dedup.client]
enabled = true
by_phone = true
action = "task"

[crm]
kind = "webhook"
url = "{hook}"
call_start_url = "{start}"
call_end_url = "{end}"
secret = "{SECRET}"
timeout_ms = 400
{crm_keys}

[crm.retry]
initial_ms = 100
max_ms = 800

[http]
listen = "127.0.0.1:{{HTTP_PORT}}"
token = "{TOKEN}"

[storage]
url = "{db}"
{extra}
"#
    )
}

fn api(p: &Siptrack) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p.http_port))
}

fn post(p: &Siptrack, path: &str, body: &Value) -> Value {
    let (status, reply) = post_json(api(p), path, Some(TOKEN), &body.to_string());
    assert_eq!(status, 200, "{path} {body}: {reply}");
    serde_json::from_str(&reply).expect("JSON answer")
}

fn leads(p: &Siptrack) -> Vec<Value> {
    let (status, body) = get(api(p), "/api/v1/leads?limit=1000", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["leads"].as_array().cloned().unwrap_or_default()
}

fn lead_outcome(p: &Siptrack, id: i64) -> String {
    leads(p)
        .iter()
        .find(|l| l["id"] == id)
        .and_then(|l| l["outcome"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The applied request whose key ends with `suffix` (keys start with the
/// installation id).
fn applied(crm: &Crm, suffix: &str) -> Value {
    let s = crm.lock();
    let key = s
        .applied
        .keys()
        .find(|k| k.ends_with(suffix))
        .unwrap_or_else(|| panic!("no applied key *{suffix}; have {:?}", s.applied.keys()));
    serde_json::from_str(&s.applied[key].0).expect("applied body is JSON")
}

/// `YYYY-MM-DD HH:MM:SS`, which must be "now" in a zone `offset_h` from
/// UTC (within two minutes).
fn assert_local_now(text: &Value, offset_h: i64, what: &str) {
    let t = text.as_str().unwrap_or_else(|| panic!("{what}: {text}"));
    let parsed = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S")
        .unwrap_or_else(|e| panic!("{what} {t:?}: {e}"));
    let now_utc = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let shown = parsed.and_utc().timestamp();
    let skew = shown - (now_utc + offset_h * 3600);
    assert!(
        skew.abs() < 120,
        "{what} {t} is not now in UTC{offset_h:+} (off by {skew} s)"
    );
}

/// The object has exactly these fields.
fn assert_fields(v: &Value, names: &[&str], what: &str) {
    let got: BTreeSet<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    let want: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(got, want, "{what}: {v:#}");
}

fn visit() -> Value {
    json!({
        "visit_id": "v-77",
        "marker": "google_cpc",
        "source": "google",
        "city": "Moscow",
        "domain": "shop.example",
        "page": "https://shop.example/sale?a=1&b=<2>",
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "winter",
        "utm_term": "sofa",
        "utm_content": "ad1"
    })
}

/// One SIPp call to the pool number the visit got, talking 1 s, then a
/// form lead and a second one from the same client (a task), all checked
/// field by field as the CRM received them.
fn payloads_in(
    kind: Db,
    tz: &str,
    offset_h: i64,
    phone_format: &str,
    shown: fn(&str) -> String,
    allow_html: bool,
) {
    let crm = Crm::start(0, SECRET, Mode::Ok);
    let uas_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = kind.fresh_url(dir.path());
    let crm_keys = format!(
        "timezone = \"{tz}\"\nphone_format = \"{phone_format}\"\nallow_html = {allow_html}\n"
    );
    let p = Siptrack::start(&config(&Setup {
        uas_port,
        db: &db,
        crm: &crm,
        crm_keys: &crm_keys,
        extra: "",
    }));
    let number = post(&p, "/api/v1/visits", &visit())["number"]
        .as_str()
        .expect("a pool number")
        .to_string();
    assert_eq!(number, "74951230001");
    let uas = Sipp::uas("uas.xml")
        .port(uas_port)
        .calls(1)
        .time_limit(Duration::from_secs(20))
        .spawn();
    let uac = Sipp::uac("uac_tracking.xml", p.sip_addr())
        .calls(1)
        .rate(1)
        .arg("-s")
        .arg(&number)
        .arg("-key")
        .arg("caller")
        .arg("89160000001")
        .arg("-d")
        .arg("1000")
        .time_limit(Duration::from_secs(20))
        .run();
    let uas = uas.wait_at_most(Duration::from_secs(10));
    assert_eq!(uac.failed(), 0, "{}\n{}", uac.summary(), uas.summary());
    crm.wait_until(Duration::from_secs(15), "call start, end and lead", |s| {
        s.applied.len() >= 3
    });

    // C-2a, at the start and at the end of the call.
    let (start, end) = {
        let s = crm.lock();
        let by_path = |path: &str| {
            s.requests
                .iter()
                .find(|r| r.path == path)
                .map(|r| r.json.clone())
                .unwrap_or_else(|| panic!("nothing on {path}"))
        };
        (by_path("/start"), by_path("/end"))
    };
    let caller = shown("9160000001");
    let callee = shown("4951230001");
    for (what, c) in [("start", &start), ("end", &end)] {
        assert_fields(
            c,
            &[
                "id",
                "caller",
                "callee",
                "visit_id",
                "marker",
                "date",
                "duration",
                "status",
                "landing_page",
                "domain",
                "city",
                "utm_source",
                "utm_medium",
                "utm_campaign",
                "utm_term",
                "utm_content",
            ],
            what,
        );
        assert_eq!(c["caller"], caller.as_str(), "{what}");
        assert_eq!(c["callee"], callee.as_str(), "{what}");
        assert_eq!(c["visit_id"], "v-77", "{what}");
        assert_eq!(c["marker"], "google_cpc", "{what}");
        assert_eq!(
            c["landing_page"], "https://shop.example/sale?a=1&b=<2>",
            "{what}"
        );
        assert_eq!(c["domain"], "shop.example", "{what}");
        assert_eq!(c["city"], "Moscow", "{what}");
        for (k, v) in [
            ("utm_source", "google"),
            ("utm_medium", "cpc"),
            ("utm_campaign", "winter"),
            ("utm_term", "sofa"),
            ("utm_content", "ad1"),
        ] {
            assert_eq!(c[k], v, "{what} {k}");
        }
        assert_local_now(&c["date"], offset_h, what);
        assert!(
            c["id"].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: id"
        );
    }
    assert_eq!(start["id"], end["id"]);
    assert_eq!(
        (start["status"].clone(), start["duration"].clone()),
        (json!(""), json!(0))
    );
    assert_eq!(end["status"], "ANSWER");
    assert_eq!(end["duration"], 1, "1 s of talk");

    // C-2 for the call's lead: a new deal, with the call record.
    let lead = {
        let s = crm.lock();
        s.requests
            .iter()
            .find(|r| r.path == "/hook")
            .map(|r| r.json.clone())
            .expect("the call's lead")
    };
    let call_lead_id = lead["id"].as_str().expect("id is a string").to_string();
    assert_eq!(lead["event"], "deal.create");
    // The title's number as `phone_format` writes it, as `phone` has it.
    assert_eq!(lead["title"], format!("Incoming call from {caller}"));
    assert_eq!(lead["phone"], caller.as_str());
    assert_eq!(lead["visit_id"], "v-77");
    assert_eq!(lead["call"], end, "the call record rides with the lead");
    assert!(lead.get("deal_id").is_none() && lead.get("recording_url").is_none());
    let data: Value = serde_json::from_str(lead["data"].as_str().expect("data is a JSON string"))
        .expect("data holds JSON");
    for (k, v) in [
        ("visit", "v-77"),
        ("marker", "google_cpc"),
        ("source", "google"),
        ("utm_source", "google"),
        ("utm_medium", "cpc"),
        ("utm_campaign", "winter"),
        ("utm_term", "sofa"),
        ("utm_content", "ad1"),
    ] {
        assert_eq!(data[k], v, "data.{k}");
    }
    assert_local_now(&lead["date_create"], offset_h, "date_create");

    // A form lead with markup in it, then a second order of that client.
    let form = json!({
        "title": "<b>Sofa</b> & \"chair\"",
        "name": "Ivan <i>the</i> Buyer",
        "phone": "8 (903) 555-12-34",
        "email": "Ivan@Example.com",
        "text": "Call me <br> after 6",
        "form": "callback",
        // The visit that got the pool number: the CRM learns where the
        // visitor came from; a form field cannot overwrite that.
        "visit_id": "v-77",
        "fields": {"utm_source": "yandex", "size": "XL", "visit": "forged", "marker": "forged"}
    });
    let first = post(&p, "/api/v1/leads", &form);
    let first_id = first["lead_id"].as_i64().expect("lead id");
    let second = post(
        &p,
        "/api/v1/leads",
        &json!({"title": "Second order", "phone": "+7 903 555 12 34", "text": "<ok>"}),
    );
    let second_id = second["lead_id"].as_i64().expect("lead id");
    assert!(
        second["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("duplicate of deal")),
        "{second}"
    );
    crm.wait_until(Duration::from_secs(10), "form lead and its task", |s| {
        s.applied
            .keys()
            .any(|k| k.ends_with(&format!("-lead-{second_id}-deal.task")))
    });
    let created = applied(&crm, &format!("-lead-{first_id}-deal.create"));
    assert_fields(
        &created,
        &[
            "id",
            "event",
            "title",
            "text",
            "name",
            "phone",
            "email",
            "data",
            "contact_data",
            "visit_id",
            "date_create",
        ],
        "deal.create",
    );
    let client = shown("9035551234");
    let (title, name, text) = if allow_html {
        (
            "<b>Sofa</b> & \"chair\"",
            "Ivan <i>the</i> Buyer",
            "Call me <br> after 6",
        )
    } else {
        (
            "&lt;b&gt;Sofa&lt;/b&gt; &amp; &quot;chair&quot;",
            "Ivan &lt;i&gt;the&lt;/i&gt; Buyer",
            "Call me &lt;br&gt; after 6",
        )
    };
    assert_eq!(created["id"], first_id.to_string());
    assert_eq!(created["title"], title);
    assert_eq!(created["name"], name);
    assert_eq!(created["text"], text);
    assert_eq!(created["phone"], client.as_str());
    assert_eq!(created["email"], "ivan@example.com");
    assert_eq!(created["visit_id"], "v-77");
    assert_eq!(
        created["contact_data"],
        json!({"name": name, "phone": client, "email": "ivan@example.com"})
    );
    let data: Value =
        serde_json::from_str(created["data"].as_str().expect("data string")).expect("JSON");
    assert_eq!(data["visit"], "v-77");
    assert_eq!(data["form"], "callback");
    assert_eq!(data["size"], "XL");
    // Fields named like attribution stay under `fields` only.
    assert_eq!(data["fields"]["visit"], "forged");
    assert_eq!(data["fields"]["utm_source"], "yandex");
    for (k, v) in [
        ("marker", "google_cpc"),
        ("source", "google"),
        ("utm_source", "google"),
        ("utm_campaign", "winter"),
        ("city", "Moscow"),
    ] {
        assert_eq!(data[k], v, "form lead data.{k} from the visit");
    }
    assert_local_now(&created["date_create"], offset_h, "form date_create");

    // The task names the deal by the CRM's id from its deal.create answer.
    let crm_deal = {
        let s = crm.lock();
        let key = s
            .applied
            .keys()
            .find(|k| k.ends_with(&format!("-lead-{first_id}-deal.create")))
            .cloned()
            .expect("create key");
        s.applied[&key].1.clone().expect("a deal id was handed out")
    };
    let task = applied(&crm, &format!("-lead-{second_id}-deal.task"));
    assert_eq!(task["event"], "deal.task");
    assert_eq!(task["deal_id"], crm_deal.as_str());
    assert_eq!(task["text"], if allow_html { "<ok>" } else { "&lt;ok&gt;" });
    // The CRM's status callback names its own id.
    let st = post(
        &p,
        &format!("/api/v1/crm/deals/{crm_deal}/status"),
        &json!({"status": "in_progress"}),
    );
    assert_eq!(st["group"], "in_progress", "{st}");
    // The local list of deals shows the CRM's id beside siptrack's.
    let (status, body) = get(api(&p), "/api/v1/deals?limit=100", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let deals: Value = serde_json::from_str(&body).expect("JSON");
    let shown = deals["deals"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["crm_deal_id"] == crm_deal.as_str()))
        .unwrap_or_else(|| panic!("no deal with crm_deal_id {crm_deal}: {body}"));
    assert_eq!(shown["group"], "in_progress", "{shown}");
    assert_ne!(call_lead_id, first_id.to_string());
    // The SIP side's counters reach /metrics within a second or two.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, text) = get(api(&p), "/metrics", None);
        assert_eq!(status, 200);
        let forwarded = text.lines().find_map(|l| {
            l.strip_prefix("siptrack_sip_requests_forwarded_total ")
                .and_then(|v| v.parse::<u64>().ok())
        });
        if forwarded >= Some(3) {
            assert!(text.contains("# TYPE siptrack_sip_dialogs gauge"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "INVITE, ACK, BYE not counted: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(crm.bad_signatures(), 0);
    assert!(crm.lock().orphans.is_empty());
}

fn payloads_in_utc_plus_3_with_a_trunk_prefix_format_escaped(kind: Db) {
    payloads_in(
        kind,
        "UTC+3",
        3,
        "8 (XXX) XXX-XX-XX",
        |d| format!("8 ({}) {}-{}-{}", &d[..3], &d[3..6], &d[6..8], &d[8..]),
        false,
    );
}

fn payloads_in_utc_minus_5_with_an_international_format_html_allowed(kind: Db) {
    payloads_in(
        kind,
        "UTC-5",
        -5,
        "+7XXXXXXXXXX",
        |d| format!("+7{d}"),
        true,
    );
}

/// Every request the CRM saw for one key carried the same body, and every
/// signature verified.
fn assert_stable_and_signed(crm: &Crm) {
    let s = crm.lock();
    let mut bodies: BTreeMap<&str, &str> = BTreeMap::new();
    for r in &s.requests {
        assert!(r.signature_ok, "bad signature on {} {}", r.path, r.key);
        let first = bodies.entry(r.key.as_str()).or_insert(r.body.as_str());
        assert_eq!(
            *first,
            r.body.as_str(),
            "key {} sent with two bodies",
            r.key
        );
    }
}

fn every_way_a_crm_fails_is_retried_until_each_lead_is_applied_once(kind: Db) {
    let mut crm = Crm::start(0, SECRET, Mode::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = kind.fresh_url(dir.path());
    let p = Siptrack::start(&config(&Setup {
        uas_port: free_port(),
        db: &db,
        crm: &crm,
        crm_keys: "",
        extra: "",
    }));
    let mut expected = Vec::new();
    let cases: [(&str, Option<Mode>); 5] = [
        ("500", Some(Mode::Status(500))),
        ("429", Some(Mode::TooMany { retry_after_s: 2 })),
        ("timeout", Some(Mode::Slow(Duration::from_millis(1500)))),
        ("refused", None),
        ("garbage", Some(Mode::GarbageOnCreate)),
    ];
    for (i, (name, mode)) in cases.into_iter().enumerate() {
        match mode {
            Some(m) => crm.set_mode(m),
            None => crm.go_down(),
        }
        let phone = format!("+7 916 700 00 {i:02}");
        let lead = post(&p, "/api/v1/leads", &json!({"name": name, "phone": phone}));
        let id = lead["lead_id"].as_i64().expect("lead id");
        expected.push(format!("-lead-{id}-deal.create"));
        // The lead log says what is wrong while siptrack retries.
        let deadline = Instant::now() + Duration::from_secs(10);
        let shown = loop {
            let o = lead_outcome(&p, id);
            if o.starts_with("crm error: ") || Instant::now() > deadline {
                break o;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            shown.starts_with("crm error: "),
            "{name}: outcome {shown:?}"
        );
        let why = match name {
            "500" => "HTTP 500",
            "429" => "HTTP 429",
            "timeout" => "timed out",
            "refused" => "cannot connect",
            _ => "deal_id",
        };
        assert!(shown.contains(why), "{name}: {shown}");
        if name == "500" {
            // A task for that client while the CRM still fails: it must
            // wait for its deal.
            let t = post(
                &p,
                "/api/v1/leads",
                &json!({"title": "again", "phone": phone}),
            );
            expected.push(format!("-lead-{}-deal.task", t["lead_id"]));
        }
        if name == "429" {
            // Retry-After (2 s) is honoured over the 100 ms backoff.
            let suffix = expected[expected.len() - 1].clone();
            crm.wait_until(Duration::from_secs(10), "a second 429 attempt", |s| {
                s.requests
                    .iter()
                    .filter(|r| r.key.ends_with(&suffix))
                    .count()
                    >= 2
            });
            let s = crm.lock();
            let at: Vec<Instant> = s
                .requests
                .iter()
                .filter(|r| r.key.ends_with(&suffix))
                .map(|r| r.at)
                .collect();
            assert!(
                at[1] - at[0] >= Duration::from_millis(1900),
                "retried after {:?}",
                at[1] - at[0]
            );
        }
        crm.come_up(Mode::Ok);
        let last = expected.clone();
        crm.wait_until(
            Duration::from_secs(15),
            &format!("{name}: delivered"),
            move |s| {
                last.iter()
                    .all(|suffix| s.applied.keys().any(|k| k.ends_with(suffix.as_str())))
            },
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while lead_outcome(&p, id).starts_with("crm error") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            lead_outcome(&p, id).starts_with("deal "),
            "{name}: {}",
            lead_outcome(&p, id)
        );
    }
    {
        let s = crm.lock();
        // Applied once each (the test CRM replays a known key's answer).
        assert_eq!(s.applied.len(), expected.len(), "{:?}", s.applied.keys());
        for suffix in &expected {
            assert_eq!(
                s.applied
                    .keys()
                    .filter(|k| k.ends_with(suffix.as_str()))
                    .count(),
                1,
                "{suffix}"
            );
        }
        assert!(
            s.orphans.is_empty(),
            "tasks ahead of deals: {:?}",
            s.orphans
        );
        let timed_out = &expected[3];
        let tries = s
            .requests
            .iter()
            .filter(|r| r.key.ends_with(timed_out.as_str()))
            .count();
        assert!(tries >= 2, "the timed-out request was sent again ({tries})");
        assert!(
            s.requests.len() >= expected.len() + 5,
            "one failed attempt per case at least: {}",
            s.requests.len()
        );
    }
    assert_stable_and_signed(&crm);
    let (status, metrics) = get(api(&p), "/metrics", None);
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert_eq!(value("siptrack_outbox_pending "), 0.0);
    assert_eq!(value("siptrack_outbox_failed "), 0.0);
    assert_eq!(
        value("siptrack_outbox_delivered_total "),
        expected.len() as f64
    );
    assert!(value("siptrack_outbox_failures_total ") >= 5.0);
    assert_eq!(
        value("siptrack_outbox_delivery_seconds_count "),
        expected.len() as f64
    );
}

fn a_kill_with_1000_leads_queued_loses_none(kind: Db) {
    let mut crm = Crm::start(0, SECRET, Mode::Status(503));
    let dir = tempfile::tempdir().expect("temp dir");
    let db = kind.fresh_url(dir.path());
    let text = config(&Setup {
        uas_port: free_port(),
        db: &db,
        crm: &crm,
        crm_keys: "",
        extra: "",
    });
    let mut p = Siptrack::start(&text);
    // 800 clients, then 200 second orders of the first 200: tasks.
    let mut creates = BTreeMap::new();
    let mut tasks = BTreeMap::new();
    for i in 0..1000u32 {
        let client = i % 800;
        let phone = format!(
            "+7 926 {:03} {:02} {:02}",
            client / 10_000 + 100,
            (client / 100) % 100,
            client % 100
        );
        let title = if i < 800 { "Order" } else { "Second order" };
        let r = post(
            &p,
            "/api/v1/leads",
            &json!({"title": title, "phone": phone}),
        );
        let id = r["lead_id"].as_i64().expect("lead id");
        if i < 800 {
            creates.insert(client, id);
        } else {
            assert!(
                r["outcome"]
                    .as_str()
                    .is_some_and(|o| o.starts_with("duplicate of deal")),
                "{r}"
            );
            tasks.insert(client, id);
        }
    }
    crm.wait_until(Duration::from_secs(20), "attempts while down", |s| {
        s.requests.len() >= 100
    });
    let keys_before: BTreeMap<String, String> = crm
        .lock()
        .requests
        .iter()
        .map(|r| (r.key.clone(), r.body.clone()))
        .collect();
    p.kill9();
    crm.go_down();
    let mut p = Siptrack::start(&text);
    std::thread::sleep(Duration::from_millis(500));
    crm.come_up(Mode::Ok);
    crm.wait_until(Duration::from_secs(60), "all 1000 leads applied", |s| {
        s.applied.len() >= 1000
    });
    let s = crm.lock();
    assert_eq!(s.applied.len(), 1000);
    for (client, id) in &creates {
        let key = s
            .applied
            .keys()
            .find(|k| k.ends_with(&format!("-lead-{id}-deal.create")));
        assert!(key.is_some(), "client {client}: lead {id} never created");
    }
    for (client, id) in &tasks {
        let key = s
            .applied
            .keys()
            .find(|k| k.ends_with(&format!("-lead-{id}-deal.task")))
            .unwrap_or_else(|| panic!("client {client}: task of lead {id} missing"));
        let create = s
            .applied
            .keys()
            .find(|k| k.ends_with(&format!("-lead-{}-deal.create", creates[client])))
            .expect("its deal");
        let task: Value = serde_json::from_str(&s.applied[key].0).expect("JSON");
        assert_eq!(
            task["deal_id"].as_str(),
            s.applied[create].1.as_deref(),
            "task on its deal"
        );
        let (ti, ci) = (
            s.applied_order.iter().position(|k| k == key),
            s.applied_order.iter().position(|k| k == create),
        );
        assert!(ci < ti, "client {client}: task applied before its deal");
    }
    assert!(s.orphans.is_empty(), "{:?}", s.orphans);
    // Keys and bodies did not change across the crash.
    for (key, body) in &keys_before {
        let (applied_body, _) = s
            .applied
            .get(key)
            .unwrap_or_else(|| panic!("key {key} changed"));
        let strip = |b: &str| -> Value {
            let mut v: Value = serde_json::from_str(b).expect("JSON");
            v.as_object_mut().map(|o| o.remove("deal_id"));
            v
        };
        if !key.ends_with("deal.task") {
            assert_eq!(applied_body, body, "{key}");
        } else {
            assert_eq!(strip(applied_body), strip(body), "{key}");
        }
    }
    drop(s);
    assert_stable_and_signed(&crm);
    assert!(p.is_alive());
    let failed = leads(&p).iter().filter(|l| l["crm"] == "failed").count();
    assert_eq!(failed, 0);
}

#[test]
fn the_signature_check_is_not_vacuous() {
    let body = br#"{"event":"deal.create","id":"1"}"#;
    let good = expected_signature(SECRET.as_bytes(), body);
    assert_eq!(
        good,
        siptrack::crm::webhook::signature(SECRET.as_bytes(), body)
    );
    assert_ne!(
        good,
        expected_signature(SECRET.as_bytes(), br#"{"event":"deal.create","id":"2"}"#)
    );
    assert_ne!(good, expected_signature(b"other", body));
    // A request signed with the wrong secret is refused by the test CRM
    // and not applied.
    let crm = Crm::start(0, SECRET, Mode::Ok);
    let req = format!(
        "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIdempotency-Key: k1\r\n\
         X-Siptrack-Signature: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        expected_signature(b"wrong", body),
        body.len()
    );
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(crm.addr()).expect("connect");
    c.write_all(req.as_bytes()).expect("send");
    c.write_all(body).expect("send body");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert_eq!(crm.bad_signatures(), 1);
    assert!(crm.lock().applied.is_empty());
}

/// Parking: an item older than `crm.retry.max_age_hours` that fails again
/// is parked, shown in the API and metrics, and can be put back.
fn an_old_failing_request_is_parked_visible_and_requeued(kind: Db) {
    use siptrack::config::CrmDelivery;
    use siptrack::crm::metrics::OutboxMetrics;
    use siptrack::crm::outbox::{Plan, Retry};
    use siptrack::leads::dedup::{Group, Identity, LeadKind, Settings};
    use siptrack::store::leads::{NewDealStatus, NewLead};
    use siptrack::store::Store;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = kind.fresh_url(dir.path());
    let store = rt.block_on(Store::open(&url)).expect("store");
    let port = free_port();
    let plan = Plan {
        lead_hooks: true,
        ..Plan::default()
    };
    let lead = NewLead {
        kind: Some(LeadKind::Form),
        who: Identity {
            title: "Old".into(),
            phone: "79035550000".into(),
            ..Identity::default()
        },
        at: 1_700_000_000,
        ..NewLead::default()
    };
    let status = NewDealStatus {
        status: "new".into(),
        group: Group::NotCounted,
    };
    let rec = rt
        .block_on(store.record_lead(&lead, &Settings::default(), &status, None, &plan))
        .expect("recorded");
    // Queued two hours ago.
    rt.block_on(store.execute_raw("UPDATE outbox SET created_at = created_at - 7200000"))
        .expect("age");
    let cfg = Arc::new(CrmDelivery {
        url: Some(format!("http://127.0.0.1:{port}/hook")),
        secret: SECRET.into(),
        timeout_ms: 500,
        max_connections: 2,
        retry: Retry {
            initial_ms: 50,
            max_ms: 100,
            max_age_hours: 1,
        },
        ..CrmDelivery::default()
    });
    let metrics = Arc::new(OutboxMetrics::default());
    rt.spawn(siptrack::crm::worker::run(
        store.clone(),
        cfg,
        metrics.clone(),
        None,
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.block_on(store.outbox_depth()).expect("depth").failed == 0 {
        assert!(Instant::now() < deadline, "never parked");
        std::thread::sleep(Duration::from_millis(20));
    }
    let parked = rt
        .block_on(store.list_outbox(Some("failed"), 10))
        .expect("list");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].lead_id, Some(rec.lead_id));
    assert_eq!(parked[0].attempts, 1);
    assert!(
        parked[0].last_error.contains("cannot connect"),
        "{:?}",
        parked[0]
    );
    let text = metrics.render(rt.block_on(store.outbox_depth()).expect("depth"));
    assert!(
        text.contains("siptrack_outbox_failed 1")
            && text.contains("siptrack_outbox_parked_total 1"),
        "{text}"
    );
    let logged = rt.block_on(store.list_leads(10, 0)).expect("leads");
    let (outcome, crm) = logged[0].outcome();
    assert_eq!(crm, Some("failed"));
    assert!(
        outcome.starts_with("crm error: cannot connect")
            && outcome.ends_with("(gave up after 1 attempt)"),
        "{:?}",
        logged[0]
    );
    // The CRM is fixed; an operator puts the request back.
    let crm = Crm::start(port, SECRET, Mode::Ok);
    let id = parked[0].id;
    assert!(rt
        .block_on(store.outbox_requeue(id, store.clock().unix_ms() as i64))
        .is_ok());
    crm.wait_until(Duration::from_secs(10), "the requeued request", |s| {
        s.applied.len() == 1
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while rt.block_on(store.outbox_depth()).expect("depth").pending > 0 {
        assert!(Instant::now() < deadline, "never settled");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        rt.block_on(store.list_leads(10, 0)).expect("leads")[0]
            .outcome()
            .0,
        format!("deal {} created", rec.deal_id.expect("deal"))
    );
    rt.shutdown_background();
}

/// A 429 is the account's limit: after it no request of any lead goes
/// to the CRM until its Retry-After has passed (trial, 2026-12-03: the
/// other leads' requests went on at once; amoCRM blocks an address that
/// keeps going past its limit). Then every lead is delivered once.
#[test]
fn a_429_holds_every_lead_until_its_retry_after() {
    let crm = Crm::start(0, SECRET, Mode::TooMany { retry_after_s: 2 });
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::Sqlite.fresh_url(dir.path());
    let p = Siptrack::start(&config(&Setup {
        uas_port: free_port(),
        db: &db,
        crm: &crm,
        crm_keys: "",
        extra: "",
    }));
    post(
        &p,
        "/api/v1/leads",
        &json!({"name": "first", "phone": "+7 916 710 00 01"}),
    );
    crm.wait_until(Duration::from_secs(10), "the 429", |s| {
        !s.requests.is_empty()
    });
    crm.set_mode(Mode::Ok);
    let limited_at = crm.lock().requests[0].at;
    for i in 2..=3 {
        post(
            &p,
            "/api/v1/leads",
            &json!({"name": format!("lead {i}"), "phone": format!("+7 916 710 00 0{i}")}),
        );
    }
    crm.wait_until(Duration::from_secs(15), "three leads delivered", |s| {
        s.applied.len() == 3
    });
    let s = crm.lock();
    let after: Vec<Duration> = s.requests[1..].iter().map(|r| r.at - limited_at).collect();
    assert!(
        after.iter().all(|d| *d >= Duration::from_millis(1900)),
        "requests after the 429 came {after:?} after it"
    );
    assert_eq!(
        s.requests.len(),
        4,
        "the three leads once each, after the 429"
    );
}

crate::on_each_db!(
    payloads_in_utc_plus_3_with_a_trunk_prefix_format_escaped,
    payloads_in_utc_minus_5_with_an_international_format_html_allowed,
    every_way_a_crm_fails_is_retried_until_each_lead_is_applied_once,
    a_kill_with_1000_leads_queued_loses_none,
    an_old_failing_request_is_parked_visible_and_requeued,
);
