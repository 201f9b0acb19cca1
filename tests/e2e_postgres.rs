//! siptrack on PostgreSQL (issue 14): two nodes sharing one database make
//! one deal of one client's leads and deliver each CRM request once;
//! PostgreSQL stopped mid-run costs no call and loses no decision; a
//! recording link made on one node opens on the other; a database that is
//! not there at start is a clear error.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::checks::{get, post_json};
use common::crm::{Crm, Mode};
use common::pg::Cluster;
use common::{free_port, Sipp, Siptrack};

const TOKEN: &str = "pg-token-4e1b";
const SECRET: &str = "pg-secret-77c0";

fn config(uas_port: u16, url: &str, crm: Option<&Crm>, extra_storage: &str) -> String {
    let crm = crm.map_or(String::new(), |c| {
        format!(
            "[crm]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\ntimeout_ms = 1000\n\n\
             [crm.retry]\ninitial_ms = 100\nmax_ms = 400\n",
            c.url("/hook")
        )
    });
    format!(
        r#"[sip]
listen = ["udp:127.0.0.1:{{SIP_PORT}}"]
trusted_sources = ["127.0.0.0/8"]
route_secret = "e2e-postgres"

[sip.timers]
t1_ms = 100
t2_ms = 400

[tracking]
default_destination = "sip:pbx@127.0.0.1:{uas_port}"

[[tracking.numbers]]
number = "74951110001"
destination = "sip:pbx@127.0.0.1:{uas_port}"
marker = "google"

[[tracking.pools]]
name = "site"
numbers = ["74951230001", "74951230002", "74951230003", "74951230004", "74951230005"]
destination = "sip:pbx@127.0.0.1:{uas_port}"
hold_seconds = 600

[http]
listen = "127.0.0.1:{{HTTP_PORT}}"
token = "{TOKEN}"

{crm}
[storage]
url = "{url}"
pool_size = 4
statement_timeout_ms = 2000
# Two nodes on one host: a name each.
node_name = "node-{{SIP_PORT}}"
{extra_storage}
"#
    )
}

fn api(p: &Siptrack) -> SocketAddr {
    p.api()
}

fn metric(p: &Siptrack, name: &str) -> u64 {
    let (_, body) = get(api(p), "/metrics", None);
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics: {body}"))
}

fn burst(p: &Siptrack, uas_port: u16, calls: u32, caller: &str) {
    let uas = Sipp::uas("uas.xml")
        .port(uas_port)
        .calls(calls)
        .time_limit(Duration::from_secs(30))
        .spawn();
    let uac = Sipp::uac("uac_tracking.xml", p.sip_addr())
        .calls(calls)
        .rate(20)
        .arg("-s")
        .arg("74951110001")
        .arg("-key")
        .arg("caller")
        .arg(caller)
        .time_limit(Duration::from_secs(30))
        .run();
    let uas = uas.wait_at_most(Duration::from_secs(10));
    assert_eq!(uac.failed(), 0, "{}\n{}", uac.summary(), uas.summary());
}

/// SPEC L-6 and C-5 across nodes: 200 form leads of one client posted at
/// once to two nodes make one deal; with 40 other clients' leads, every
/// CRM request is applied exactly once, though both nodes' workers take
/// from one outbox while the CRM first refuses everything.
#[test]
fn two_nodes_on_one_database_make_one_deal_and_send_each_request_once() {
    let url = common::pg::database();
    let crm = Crm::start(0, SECRET, Mode::Status(503));
    let text = config(free_port(), &url, Some(&crm), "");
    let nodes = [Siptrack::start(&text), Siptrack::start(&text)];
    let addrs: Vec<SocketAddr> = nodes.iter().map(api).collect();
    let posters: Vec<_> = (0..8)
        .map(|t| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                for i in 0..30 {
                    let n = t * 30 + i;
                    // 200 of one client, then 40 of one client each.
                    let phone = if n < 200 {
                        "+79160000001".to_string()
                    } else {
                        format!("+7916100{n:04}")
                    };
                    let body = format!(
                        r#"{{"title": "Order", "name": "Ivan", "phone": "{phone}", "form": "order"}}"#
                    );
                    let (status, answer) =
                        post_json(addrs[n % 2], "/api/v1/leads", Some(TOKEN), &body);
                    assert_eq!(status, 200, "{answer}");
                }
            })
        })
        .collect();
    for p in posters {
        p.join().expect("poster");
    }
    let deals = nodes[1].list("deals", TOKEN);
    let of_client = deals.iter().filter(|d| d["phone"] == "79160000001").count();
    assert_eq!(of_client, 1, "{deals:#?}");
    assert_eq!(deals.len(), 41);
    assert_eq!(nodes[0].list("leads", TOKEN).len(), 240);
    // Let both workers fail a few rounds, then the CRM recovers, slowly:
    // each answer takes 300 ms, long enough for the other node to look
    // at the outbox while a request is in flight.
    std::thread::sleep(Duration::from_millis(800));
    crm.set_mode(Mode::Slow(Duration::from_millis(300)));
    crm.wait_until(Duration::from_secs(30), "41 deals applied", |s| {
        s.applied.len() == 41
    });
    // A moment for a duplicate send to show, were there one.
    std::thread::sleep(Duration::from_millis(1500));
    let s = crm.lock();
    let mut accepted: BTreeMap<&str, usize> = BTreeMap::new();
    for r in s.requests.iter().filter(|r| r.answered == 200) {
        *accepted.entry(r.key.as_str()).or_default() += 1;
    }
    assert_eq!(accepted.len(), 41);
    let twice: Vec<_> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent again after a 200: {twice:?}");
    assert!(
        s.requests.iter().any(|r| r.answered == 503),
        "the CRM refused first"
    );
}

/// Pool numbers granted in the database: five visits arriving at two
/// nodes get five different numbers, and a call through one node to a
/// number the other node handed out belongs to that node's visit.
#[test]
fn a_number_granted_on_one_node_is_known_on_the_other() {
    let url = common::pg::database();
    let uas_port = free_port();
    let text = config(uas_port, &url, None, "");
    let nodes = [Siptrack::start(&text), Siptrack::start(&text)];
    let mut granted = Vec::new();
    for i in 0..5 {
        let body = format!(r#"{{"visit_id": "v{i}", "source": "ads"}}"#);
        let (status, answer) = post_json(api(&nodes[i % 2]), "/api/v1/visits", Some(TOKEN), &body);
        assert_eq!(status, 200, "{answer}");
        let v: serde_json::Value = serde_json::from_str(&answer).expect("json");
        let number = v["number"].as_str().expect("a number").to_string();
        granted.push((i, number));
    }
    let mut numbers: Vec<&str> = granted.iter().map(|(_, n)| n.as_str()).collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), 5, "{granted:?}");
    // Each number called through the node that did not grant it, once
    // that node has read the grants back (every 500 ms; a visitor takes
    // longer to dial).
    std::thread::sleep(Duration::from_millis(700));
    for (i, number) in &granted {
        let other = &nodes[(i + 1) % 2];
        let deadline = Instant::now() + Duration::from_secs(5);
        let uas = Sipp::uas("uas.xml")
            .port(uas_port)
            .calls(1)
            .time_limit(Duration::from_secs(20))
            .spawn();
        let uac = Sipp::uac("uac_tracking.xml", other.sip_addr())
            .calls(1)
            .arg("-s")
            .arg(number)
            .arg("-key")
            .arg("caller")
            .arg(format!("8916200000{i}"))
            .time_limit(Duration::from_secs(15))
            .run();
        let uas = uas.wait_at_most(Duration::from_secs(10));
        assert_eq!(uac.failed(), 0, "{}\n{}", uac.summary(), uas.summary());
        assert!(Instant::now() < deadline + Duration::from_secs(15));
    }
    let calls = nodes[0].wait_for("calls", 5, TOKEN);
    for (i, number) in &granted {
        let call = calls
            .iter()
            .find(|c| c["callee"] == number.as_str())
            .unwrap_or_else(|| panic!("no call to {number}: {calls:#?}"));
        assert_eq!(call["visit_id"], format!("v{i}"), "{call}");
    }
}

/// Issue 13 across nodes: a recorded call's link is the same from both
/// nodes' calls API and from `siptrack recording-url` (one key per
/// database, the call found in PostgreSQL), and the node that did not
/// take the call serves it when it has the file.
#[test]
fn a_recording_link_made_on_one_node_opens_on_the_other() {
    let url = common::pg::database();
    let uas_port = free_port();
    let text = config(uas_port, &url, None, "") + "\n[media]\nrecordings_dir = \"rec\"\n";
    let nodes = [Siptrack::start(&text), Siptrack::start(&text)];
    burst(&nodes[0], uas_port, 1, "79160000077");
    let call_id = nodes[1].wait_for("calls", 1, TOKEN)[0]["id"]
        .as_str()
        .expect("call id")
        .to_string();
    // What the recorder does for a recorded call, done through the store
    // (the recorder's own tests are the media suite's).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = rt
        .block_on(siptrack::store::Store::open(&url))
        .expect("the nodes' database");
    rt.block_on(store.execute_raw(&format!(
        "UPDATE calls SET recording = 'recorded', recording_reason = '' WHERE call_id = '{}'",
        call_id.replace('\'', "''")
    )))
    .expect("mark recorded");

    let links: Vec<String> = nodes
        .iter()
        .map(|p| {
            let calls = p.wait_for("calls", 1, TOKEN);
            calls[0]["link"]
                .as_str()
                .unwrap_or_else(|| panic!("a link: {}", calls[0]))
                .to_string()
        })
        .collect();
    let cli: Vec<String> = nodes
        .iter()
        .map(|p| {
            let out = Command::new(env!("CARGO_BIN_EXE_siptrack"))
                .args(["recording-url", &call_id, "--config"])
                .arg(p.dir().join("siptrack.toml"))
                .current_dir(p.dir())
                .output()
                .expect("run siptrack");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{stderr}");
            // PostgreSQL's "already exists, skipping" notices of the
            // migrations are no news for a command's user.
            assert!(!stderr.contains("NOTICE"), "{stderr}");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect();
    // The links name each node's own address; their path and signature
    // are the database's.
    let path = |link: &str| link[link.find("/recordings/").expect("path")..].to_string();
    let paths: Vec<String> = links.iter().chain(&cli).map(|l| path(l)).collect();
    assert!(paths.iter().all(|p| p == &paths[0]), "{paths:?}");

    let rec_dir = nodes[1].dir().join("rec");
    std::fs::create_dir_all(&rec_dir).expect("rec dir");
    let mut wav = siptrack::media::wav::header(800, true).to_vec();
    // Text after the header, so a range of it reads back as a string.
    wav.extend((0..800).map(|i| b'a' + (i % 26) as u8));
    std::fs::write(
        rec_dir.join(format!(
            "{}.wav",
            siptrack::media::link::file_stem(call_id.as_bytes())
        )),
        &wav,
    )
    .expect("write wav");
    let (status, _, body) = common::browser::http(
        api(&nodes[1]),
        "GET",
        &paths[0],
        &[("Range", "bytes=100-199")],
        "",
    );
    assert_eq!(status, 206, "{}", paths[0]);
    assert_eq!(body.as_bytes(), &wav[100..200]);
    let tampered = paths[0].replacen("sig=", "sig=0", 1);
    let (status, _) = get(api(&nodes[1]), &tampered, None);
    assert_eq!(status, 403, "{tampered}");
}

/// `storage.journal` in `dir`, as a config line.
fn journal_line(dir: &std::path::Path) -> String {
    format!("journal = \"{}\"", dir.join("calls.journal").display())
}

/// PostgreSQL stopped mid-run: calls keep flowing through the proxy,
/// /healthz and /metrics show the outage, the calls wait in the journal
/// and are recorded when the database returns, without a restart.
#[test]
fn postgresql_stopped_mid_run_costs_no_call_and_loses_nothing() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let dir = tempfile::tempdir().expect("temp dir");
    let uas_port = free_port();
    let journal = journal_line(dir.path());
    let p = Siptrack::start(&config(uas_port, &url, None, &journal));
    burst(&p, uas_port, 5, "89160000001");
    p.wait_for("calls", 5, TOKEN);
    assert_eq!(metric(&p, "siptrack_storage_up"), 1);

    cluster.stop();
    burst(&p, uas_port, 20, "89160000002");
    let (status, why) = p.healthz_until_failing(Duration::from_secs(30));
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("storage failing"), "{why}");
    assert_eq!(metric(&p, "siptrack_storage_up"), 0);
    assert!(metric(&p, "siptrack_storage_errors_total") >= 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Per call: its start, its answer (the dialog another node would take
    // the call over from) and its end.
    while metric(&p, "siptrack_calls_journaled") < 60 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(metric(&p, "siptrack_calls_journaled"), 60, "{}", p.log());

    cluster.restart();
    let calls = p.wait_for("calls", 25, TOKEN);
    assert!(calls.iter().all(|c| c["status"] == "answered"), "{calls:?}");
    assert_eq!(p.list("leads", TOKEN).len(), 25);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = get(api(&p), "/healthz", None);
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(metric(&p, "siptrack_storage_up"), 1);
    assert_eq!(metric(&p, "siptrack_calls_backlog"), 0);
}

/// PostgreSQL frozen (SIGSTOP: nothing answered, nothing refused) while
/// calls end: within seconds /healthz says so and the calls are in the
/// journal, so a crash then loses none of them; started again once the
/// database is back, the node records each once. A SIGTERM while the
/// database is frozen ends the process in bounded time. Trial,
/// 2026-12-02: the calls sat in memory for the 20 s a statement may take,
/// `kill -9` lost them without a trace, /healthz said ok meanwhile, and
/// SIGTERM waited until the database thawed.
#[test]
fn postgresql_frozen_mid_run_loses_no_call_to_a_crash() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let dir = tempfile::tempdir().expect("temp dir");
    let uas_port = free_port();
    let journal = journal_line(dir.path());
    let text = config(uas_port, &url, None, &journal);
    let mut p = Siptrack::start(&text);
    burst(&p, uas_port, 3, "89160000001");
    p.wait_for("calls", 3, TOKEN);

    let frozen = cluster.freeze();
    burst(&p, uas_port, 5, "89160000002");
    // Per call: its start, its answer and its end; each batch within
    // about a second of waiting (the database's own timeout is 20 s).
    let deadline = Instant::now() + Duration::from_secs(4);
    while metric(&p, "siptrack_calls_journaled") < 15 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(metric(&p, "siptrack_calls_journaled"), 15, "{}", p.log());
    let (status, why) = p.healthz_until_failing(Duration::from_secs(25));
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("storage failing"), "{why}");
    p.kill9();
    drop(frozen);

    let mut p = Siptrack::start(&text);
    let calls = p.wait_for("calls", 8, TOKEN);
    let mut ids: Vec<&str> = calls.iter().filter_map(|c| c["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 8, "each call once: {calls:#?}");

    let _frozen = cluster.freeze();
    burst(&p, uas_port, 2, "89160000003");
    let asked = Instant::now();
    let status = p.stop(Duration::from_secs(60));
    assert!(status.is_some(), "SIGTERM did not end it\n{}", p.log());
    assert!(
        asked.elapsed() < Duration::from_secs(45),
        "SIGTERM took {:?}\n{}",
        asked.elapsed(),
        p.log()
    );
}

/// A PostgreSQL that is not there at start: siptrack says which database
/// (without the password) and why, and exits 1 instead of running without
/// its state.
#[test]
fn a_database_that_is_not_there_at_start_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let url = format!("postgres://siptrack:hunter2@127.0.0.1:{port}/siptrack");
    let text = config(free_port(), &url, None, "")
        .replace("{SIP_PORT}", &free_port().to_string())
        .replace("{HTTP_PORT}", &free_port().to_string());
    let cfg = dir.path().join("siptrack.toml");
    std::fs::write(&cfg, text).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_siptrack"))
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start siptrack");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("siptrack kept running without its database");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("opening the database")
            && text.contains(&format!(
                "postgres://siptrack:***@127.0.0.1:{port}/siptrack"
            )),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

/// The commands that only read never set up a database: `siptrack leads`
/// against an empty PostgreSQL database (a wrong URL) says so and leaves
/// it empty, as it does for a SQLite file that is not there (it used to
/// apply every migration and print an empty log).
#[test]
fn reading_the_lead_log_never_sets_up_a_postgresql_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = common::pg::database();
    let text = config(free_port(), &url, None, "")
        .replace("{SIP_PORT}", &free_port().to_string())
        .replace("{HTTP_PORT}", &free_port().to_string());
    let cfg = dir.path().join("siptrack.toml");
    std::fs::write(&cfg, text).expect("config");
    for args in [vec!["leads"], vec!["recording-url", "x@y"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_siptrack"))
            .args(&args)
            .arg("--config")
            .arg(&cfg)
            .current_dir(dir.path())
            .output()
            .expect("run siptrack");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("no siptrack tables"), "{args:?}: {stderr}");
    }
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let tables: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(tables, 0, "the database stays empty");
}
