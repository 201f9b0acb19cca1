//! What a new operator meets in the first hour (issue 11), and what a
//! stop or a crash does to calls in progress (issue 12, findings 6 and 7):
//! the running program, SIPp on loopback, the HTTP API and the CLI.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::checks::get;
use common::{free_port, Sipp, Siptrack};
use serde_json::Value;

const TOKEN: &str = "operator-token-9f3";

fn config(uas_port: u16, db: &str, extra_top: &str) -> String {
    format!(
        r#"[sip]
listen = ["udp:127.0.0.1:{{SIP_PORT}}"]
trusted_sources = ["127.0.0.0/8"]
route_secret = "e2e-operator"

[sip.timers]
t1_ms = 100
t2_ms = 400

[tracking]
default_destination = "sip:pbx@127.0.0.1:{uas_port}"

[[tracking.numbers]]
number = "74951110001"
destination = "sip:pbx@127.0.0.1:{uas_port}"
marker = "google"

[http]
listen = "127.0.0.1:{{HTTP_PORT}}"
token = "{TOKEN}"

[storage]
url = "sqlite:{db}"
{extra_top}
"#
    )
}

fn api(p: &Siptrack) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p.http_port))
}

fn list(p: &Siptrack, what: &str) -> Vec<Value> {
    let (status, body) = get(api(p), &format!("/api/v1/{what}?limit=1000"), Some(TOKEN));
    assert_eq!(status, 200, "{what}: {body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v[what].as_array().cloned().unwrap_or_default()
}

fn wait_for(p: &Siptrack, what: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = list(p, what);
        if rows.len() >= n || Instant::now() > deadline {
            assert_eq!(rows.len(), n, "{what}: {rows:#?}\n{}", p.log());
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn db_in(dir: &Path) -> String {
    dir.join("siptrack.db").to_string_lossy().into_owned()
}

/// Waits until siptrack has forwarded the 2xx of one call (the dialog
/// gauge in /metrics).
fn wait_answered(p: &Siptrack) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = get(api(p), "/metrics", None);
        if body.lines().any(|l| l == "siptrack_sip_dialogs 1") {
            return;
        }
        assert!(Instant::now() < deadline, "no dialog: {body}\n{}", p.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 11 item 1: SIGTERM while a call is up and nobody hangs up within
/// the drain time. The call is recorded with the real time (duration of
/// the talk so far), hangup `shutdown`, and its lead says so.
#[test]
fn sigterm_records_open_calls_at_the_real_time() {
    let uas_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let cfg = config(uas_port, &db, "[shutdown]\ndrain_seconds = 1\n");
    let mut p = Siptrack::start(&cfg);
    let uas = Sipp::uas("uas.xml")
        .port(uas_port)
        .calls(1)
        .time_limit(Duration::from_secs(40))
        .spawn();
    // The caller talks for 30 s: longer than the test waits.
    let uac = Sipp::uac("uac_tracking.xml", p.sip_addr())
        .calls(1)
        .rate(1)
        .arg("-s")
        .arg("74951110001")
        .arg("-key")
        .arg("caller")
        .arg("89160000001")
        .arg("-d")
        .arg("30000")
        .time_limit(Duration::from_secs(40))
        .spawn();
    wait_answered(&p);
    let answered = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let status = p.stop(Duration::from_secs(20)).expect("siptrack exits");
    let talked = answered.elapsed().as_secs();
    assert!(status.success(), "{status:?}\n{}", p.log());
    drop(uac.stop());
    drop(uas.stop());

    let p = Siptrack::start(&cfg);
    let calls = wait_for(&p, "calls", 1);
    let c = &calls[0];
    assert_eq!(c["status"], "answered", "{c}");
    assert_eq!(c["hangup"], "shutdown", "{c}");
    let duration = c["duration"].as_u64().expect("duration");
    assert!(
        (2..=talked + 1).contains(&duration),
        "talked about {talked} s, recorded {duration}: {c}"
    );
    let invite = c["invite_at_ms"].as_i64().expect("invite_at_ms");
    let end = c["end_at_ms"].as_i64().expect("end_at_ms");
    assert!(end >= invite && end - invite < 20_000, "{c}");
    let leads = wait_for(&p, "leads", 1);
    let text = leads[0]["comment"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("answered, {duration} s")),
        "{text}: {c}"
    );
}

/// Runs `siptrack <args>` in `cwd`; (exit code, stdout, stderr).
fn siptrack_cli(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_siptrack"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run siptrack");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 11 item 6: `siptrack leads` run from another directory does not
/// create an empty database there; it names the file it looked for and
/// fails. `check-config` prints the resolved database path.
#[test]
fn reading_the_lead_log_never_creates_a_database() {
    let conf_dir = tempfile::tempdir().expect("temp dir");
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let cfg_path = conf_dir.path().join("siptrack.toml");
    std::fs::write(
        &cfg_path,
        "[storage]\nurl = \"sqlite:data/siptrack.db\"\n[tracking]\ndefault_destination = \"sip:127.0.0.1:5070\"\n",
    )
    .expect("write config");
    let cfg = cfg_path.to_string_lossy().into_owned();
    let (code, out, err) = siptrack_cli(elsewhere.path(), &["leads", "--config", &cfg]);
    let expected = elsewhere.path().join("data").join("siptrack.db");
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains(&format!("no database at {}", expected.display())),
        "{err}"
    );
    assert!(
        !elsewhere.path().join("data").exists(),
        "a read created {}",
        expected.display()
    );
    let (code, out, err) = siptrack_cli(elsewhere.path(), &["check-config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("database: {}", expected.display())),
        "{out}"
    );
}
