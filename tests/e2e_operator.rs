//! What a new operator meets in the first hour (issue 11), and what a
//! stop or a crash does to calls in progress (issue 12, findings 6 and 7):
//! the running program, SIPp on loopback, the HTTP API and the CLI.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::checks::get;
use common::crm::{Crm, Mode};
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
    p.api()
}

fn list(p: &Siptrack, what: &str) -> Vec<Value> {
    p.list(what, TOKEN)
}

fn wait_for(p: &Siptrack, what: &str, n: usize) -> Vec<Value> {
    p.wait_for(what, n, TOKEN)
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
    // The caller talks for 30 s: longer than the test waits.
    let (uas, uac) = long_call(&p, uas_port, 30_000);
    wait_answered(&p);
    let answered = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let status = p.stop(Duration::from_secs(20)).expect("siptrack exits");
    let talked = answered.elapsed().as_secs();
    assert!(status.success(), "{status:?}\n{}", p.log());
    // The call still up when the drain ran out was ended on both sides
    // (it was left with dead air, its BYEs 481 after a restart; trial,
    // 2026-12-02).
    std::thread::sleep(Duration::from_millis(300));
    for (side, sipp) in [("caller", &uac), ("PBX", &uas)] {
        let byes: Vec<_> = sipp
            .messages()
            .into_iter()
            .filter(|m| m.dir == common::Dir::Received && m.is_request("BYE"))
            .collect();
        assert!(
            byes.iter()
                .any(|m| m.text.contains("siptrack shutting down")),
            "the {side} got siptrack's BYE: {byes:?}\n{}",
            p.log()
        );
    }
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

/// A caller of its own on a UDP socket (reads time out after 200 ms) and
/// the INVITE it sends to siptrack: from `caller`, to the tracked number
/// 74951110001, with `call_id`.
fn raw_caller(p: &Siptrack, caller: &str, call_id: &str) -> (std::net::UdpSocket, String) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("caller socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let me = socket.local_addr().expect("addr");
    // A branch is a token: the Call-ID's letters and digits.
    let branch: String = call_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let invite = format!(
        "INVITE sip:74951110001@{sip} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{caller}@{me}>;tag=raw1\r\n\
         To: <sip:74951110001@{sip}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@{me}>\r\n\
         Content-Length: 0\r\n\r\n",
        sip = p.sip_addr()
    );
    (socket, invite)
}

/// SIGTERM while a call still rings when the drain runs out: the PBX's
/// leg is CANCELled (its 487 ACKed before the exit) and the caller is
/// answered 503. A trial (2026-12-03) saw the call just dropped: the PBX
/// rang on, the caller had only its 100 Trying.
#[test]
fn sigterm_cancels_a_call_still_ringing() {
    let uas_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let cfg = config(uas_port, &db, "[shutdown]\ndrain_seconds = 1\n");
    let mut p = Siptrack::start(&cfg);
    let uas = Sipp::uas("uas_cancel.xml")
        .port(uas_port)
        .calls(1)
        .time_limit(Duration::from_secs(30))
        .spawn();
    let (caller, invite) = raw_caller(&p, "89160000002", "ringing-at-shutdown@e2e");
    let heard = |want: u16, within: Duration| {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok((n, _)) = caller.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.starts_with(&format!("SIP/2.0 {want} ")) {
                    return Some(text);
                }
            }
        }
        None
    };
    caller
        .send_to(invite.as_bytes(), p.sip_addr())
        .expect("send INVITE");
    assert!(
        heard(180, Duration::from_secs(10)).is_some(),
        "no 180\n{}",
        p.log()
    );
    let pid = p.pid();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let answer = heard(503, Duration::from_secs(10));
    assert!(answer.is_some(), "the caller got no 503\n{}", p.log());
    let status = p.stop(Duration::from_secs(20)).expect("siptrack exits");
    assert!(status.success(), "{status:?}\n{}", p.log());
    // The PBX got the CANCEL, and the ACK of its 487 before the exit: its
    // scenario ran to the end.
    let run = uas.wait_at_most(Duration::from_secs(10));
    assert!(
        run.messages
            .iter()
            .any(|m| m.dir == common::Dir::Received && m.is_request("CANCEL")),
        "{:?}\n{}",
        run.messages,
        p.log()
    );
    assert_eq!(run.successful(), 1, "{:?}\n{}", run.messages, p.log());
}

/// The CRM requests of a call the drain closed go out before the process
/// ends: the lead's and the call's webhooks are at the CRM when SIGTERM's
/// exit comes (trial, 2026-12-02: they waited in the outbox for the next
/// start, and a node retired for good kept them).
#[test]
fn sigterm_delivers_the_drained_calls_crm_requests_before_exit() {
    let uas_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let crm = Crm::start(0, SECRET, Mode::Ok);
    let extra = format!(
        "[shutdown]\ndrain_seconds = 1\n[crm]\nkind = \"webhook\"\nurl = \"{}\"\ncall_end_url = \"{}\"\nsecret = \"{SECRET}\"\n",
        crm.url("/hook"),
        crm.url("/end")
    );
    let mut p = Siptrack::start(&config(uas_port, &db_in(dir.path()), &extra));
    let (uas, uac) = long_call(&p, uas_port, 30_000);
    wait_answered(&p);
    let status = p.stop(Duration::from_secs(20)).expect("siptrack exits");
    assert!(status.success(), "{status:?}\n{}", p.log());
    drop(uac.stop());
    drop(uas.stop());
    let s = crm.lock();
    let delivered: Vec<(&str, u16)> = s
        .requests
        .iter()
        .map(|r| (r.path.as_str(), r.answered))
        .collect();
    assert!(
        delivered.contains(&("/hook", 200)) && delivered.contains(&("/end", 200)),
        "at the CRM before exit: {delivered:?}\n{}",
        p.log()
    );
    assert!(
        p.log().contains("every CRM request delivered"),
        "{}",
        p.log()
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

/// A reader that goes away (`siptrack check-config … | head -1`) ends
/// the command quietly, as with any Unix tool: it panicked with "failed
/// printing to stdout: Broken pipe" and a backtrace.
#[test]
fn a_closed_pipe_ends_a_printing_command_quietly() {
    use std::os::unix::process::ExitStatusExt as _;
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/siptrack.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_siptrack"))
        .args(["check-config", config])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run siptrack");
    // The reader is gone before the first line (the config takes longer
    // to read than this).
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

/// `siptrack leads --limit 0` is refused as the API's `limit=0` is (it
/// printed one lead; trial, 2026-12-02).
#[test]
fn a_lead_log_limit_out_of_range_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    for limit in ["0", "-5", "100001"] {
        let arg = format!("--limit={limit}");
        let (code, out, err) = siptrack_cli(dir.path(), &["leads", &arg]);
        assert_eq!(code, 2, "{limit}: {out}{err}");
        assert!(err.contains("--limit"), "{limit}: {err}");
    }
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

const SECRET: &str = "operator-crm-secret";

/// Starts a SIPp UAS and one answered call that talks for `talk_ms`;
/// returns both (the caller number 89160000001, dialed 74951110001).
fn long_call(
    p: &Siptrack,
    uas_port: u16,
    talk_ms: u64,
) -> (common::SippProcess, common::SippProcess) {
    let uas = Sipp::uas("uas.xml")
        .port(uas_port)
        .calls(1)
        .time_limit(Duration::from_secs(60))
        .spawn();
    let uac = Sipp::uac("uac_tracking.xml", p.sip_addr())
        .calls(1)
        .rate(1)
        .arg("-s")
        .arg("74951110001")
        .arg("-key")
        .arg("caller")
        .arg("89160000001")
        .arg("-d")
        .arg(talk_ms.to_string())
        .time_limit(Duration::from_secs(60))
        .spawn();
    (uas, uac)
}

/// Waits until the database holds the answer of the open call `call_id`
/// (the lead pipeline writes it within its linger of the 2xx).
fn wait_answer_stored(db: &str, call_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answered = rusqlite::Connection::open(db).ok().and_then(|c| {
            c.query_row(
                "SELECT answer_at FROM open_calls WHERE call_id = ?1",
                [call_id],
                |r| r.get::<_, Option<i64>>(0),
            )
            .ok()
            .flatten()
        });
        if answered.is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "no answer stored for {call_id}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 12 finding 7: kill -9 during a call whose start was reported.
/// The next start records it (SPEC L-1: hangup `interrupted`, status what
/// the database knew: answered, ending at its answer), makes its lead,
/// and sends its call-end webhook. Until 2026-12-01 the status was
/// `interrupted` too, a word L-1 does not have for a status.
#[test]
fn a_call_cut_short_by_a_crash_is_recorded_as_interrupted_and_ended_in_the_crm() {
    let uas_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let crm = Crm::start(0, SECRET, Mode::Ok);
    let crm_keys = format!(
        "[crm]\ncall_start_url = \"{}\"\ncall_end_url = \"{}\"\nsecret = \"{SECRET}\"\n[crm.retry]\ninitial_ms = 100\nmax_ms = 400\n",
        crm.url("/start"),
        crm.url("/end")
    );
    let db = db_in(dir.path());
    let cfg = config(uas_port, &db, &crm_keys);
    let mut p = Siptrack::start(&cfg);
    let (uas, uac) = long_call(&p, uas_port, 30_000);
    crm.wait_until(Duration::from_secs(10), "call start", |s| {
        s.requests.iter().any(|r| r.path == "/start")
    });
    let call_id = crm.lock().requests[0].json["id"]
        .as_str()
        .expect("call id")
        .to_string();
    wait_answered(&p);
    wait_answer_stored(&db, &call_id);
    p.kill9();
    drop(uac.stop());
    drop(uas.stop());

    let p = Siptrack::start(&cfg);
    let calls = wait_for(&p, "calls", 1);
    let c = &calls[0];
    assert_eq!(c["id"], call_id.as_str(), "{c}");
    assert_eq!(
        (&c["status"], &c["hangup"]),
        (&"answered".into(), &"interrupted".into()),
        "{c}"
    );
    assert_eq!(
        c["duration"], 0,
        "talk time after the answer is unknown: {c}"
    );
    assert_eq!(c["caller"], "79160000001");
    let leads = wait_for(&p, "leads", 1);
    assert_eq!(leads[0]["type"], "call", "{leads:?}");
    crm.wait_until(Duration::from_secs(10), "call end", |s| {
        s.requests.iter().any(|r| r.path == "/end")
    });
    let ends: Vec<Value> = crm
        .lock()
        .requests
        .iter()
        .filter(|r| r.path == "/end")
        .map(|r| r.json.clone())
        .collect();
    assert_eq!(ends[0]["id"], call_id.as_str());
    assert_eq!(ends[0]["status"], "ANSWER", "{:?}", ends[0]);
    assert_eq!(crm.bad_signatures(), 0);
    // A third start finds nothing more to close.
    drop(p);
    let p = Siptrack::start(&cfg);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(list(&p, "calls").len(), 1);
}

/// A second `siptrack run` on the same database under the same node name
/// (a copied config with other ports; trial, 2026-12-02) is refused
/// before it reads anything: it recorded the first one's live call
/// `interrupted` and would have delivered its CRM claims twice. The call
/// ends as talked.
#[test]
fn a_second_process_under_the_same_node_name_is_refused() {
    let uas_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let cfg = config(uas_port, &db, "");
    let p = Siptrack::start(&cfg);
    let (uas, uac) = long_call(&p, uas_port, 3_000);
    wait_answered(&p);

    let copy = dir.path().join("copy.toml");
    std::fs::write(
        &copy,
        cfg.replace("{SIP_PORT}", &free_port().to_string())
            .replace("{HTTP_PORT}", &free_port().to_string()),
    )
    .expect("write the copy");
    let mut second = Command::new(env!("CARGO_BIN_EXE_siptrack"))
        .args(["run", "--config"])
        .arg(&copy)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the second process");
    let deadline = Instant::now() + Duration::from_secs(20);
    while second.try_wait().expect("wait").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let still_running = second.try_wait().expect("wait").is_none();
    if still_running {
        let _ = second.kill();
    }
    let out = second.wait_with_output().expect("its output");
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!still_running, "the second process runs:\n{said}");
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("is in use by another running siptrack on this database"),
        "{said}"
    );

    drop(uac.wait());
    drop(uas.wait());
    let calls = wait_for(&p, "calls", 1);
    let c = &calls[0];
    assert_eq!(
        (&c["status"], &c["hangup"]),
        (&"answered".into(), &"caller".into()),
        "{c}"
    );
    assert!(c["duration"].as_u64().unwrap_or(0) >= 2, "{c}");
}

/// One short call through `p`, waited for to its end.
fn short_call(p: &Siptrack, uas_port: u16) {
    let (uas, uac) = long_call(p, uas_port, 200);
    drop(uac.wait());
    drop(uas.wait());
}

/// The database file deleted while siptrack runs (`rm siptrack.db*`;
/// trial, 2026-12-02): it went on writing into the deleted file and the
/// next start found an empty database. Now what it holds is written back
/// to the path within seconds and the calls after it go there too, so a
/// restart has every call.
#[test]
fn a_database_file_deleted_while_running_is_written_back() {
    let uas_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let cfg = config(uas_port, &db, "");
    let mut p = Siptrack::start(&cfg);
    short_call(&p, uas_port);
    wait_for(&p, "calls", 1);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{db}{suffix}"));
    }
    short_call(&p, uas_port);
    wait_for(&p, "calls", 2);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !Path::new(&db).exists() {
        assert!(Instant::now() < deadline, "not written back:\n{}", p.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    short_call(&p, uas_port);
    wait_for(&p, "calls", 3);
    assert!(
        p.log()
            .contains("the database file was deleted while siptrack ran"),
        "{}",
        p.log()
    );
    p.stop(Duration::from_secs(10));

    let p = Siptrack::start(&cfg);
    let calls = list(&p, "calls");
    assert_eq!(calls.len(), 3, "{calls:?}");
    let (_, health) = get(api(&p), "/healthz", None);
    assert_eq!(health, "ok\n");
}

/// A PBX with a session-timer floor answers the first INVITE 422; the
/// trunk sends it again with the same Call-ID (RFC 4028 6), and that
/// attempt is answered and talked. It is one call, answered, with the
/// talk time, from the first INVITE (trial, 2026-12-02: recorded
/// `failed`, 0 s, and the talked call dropped as a second record of the
/// same Call-ID).
#[test]
fn a_call_retried_after_a_422_is_one_answered_call() {
    let uas_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let crm = Crm::start(0, SECRET, Mode::Ok);
    let crm_keys = format!(
        "[crm]\ncall_start_url = \"{}\"\ncall_end_url = \"{}\"\nsecret = \"{SECRET}\"\n",
        crm.url("/start"),
        crm.url("/end")
    );
    let p = Siptrack::start(&config(uas_port, &db_in(dir.path()), &crm_keys));
    let uas = Sipp::uas("uas_session_timer.xml")
        .port(uas_port)
        .calls(1)
        .time_limit(Duration::from_secs(30))
        .spawn();
    let uac = Sipp::uac("uac_session_timer.xml", p.sip_addr())
        .calls(1)
        .arg("-s")
        .arg("74951110001")
        .arg("-key")
        .arg("caller")
        .arg("89160000001")
        .arg("-d")
        .arg("2000")
        .time_limit(Duration::from_secs(30))
        .run();
    let uas = uas.wait_at_most(Duration::from_secs(10));
    assert_eq!(
        uac.successful(),
        1,
        "{}\n{}\n{}",
        uac.summary(),
        uas.summary(),
        p.log()
    );
    let calls = wait_for(&p, "calls", 1);
    let c = &calls[0];
    assert_eq!(
        (&c["status"], &c["hangup"]),
        (&"answered".into(), &"caller".into()),
        "{c}"
    );
    assert!(
        (2..=3).contains(&c["duration"].as_u64().unwrap_or(0)),
        "{c}"
    );
    crm.wait_until(Duration::from_secs(10), "call end", |s| {
        s.requests.iter().any(|r| r.path == "/end")
    });
    std::thread::sleep(Duration::from_millis(500));
    let seen = crm.lock();
    let paths: Vec<&str> = seen.requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths.iter().filter(|p| **p == "/start").count(),
        1,
        "{paths:?}"
    );
    let ends: Vec<&Value> = seen
        .requests
        .iter()
        .filter(|r| r.path == "/end")
        .map(|r| &r.json)
        .collect();
    assert_eq!(ends.len(), 1, "{paths:?}");
    assert_eq!(ends[0]["status"], "ANSWER", "{}", ends[0]);
}

/// Holds the write lock of a SQLite database (as a stuck or broken
/// database would) until dropped.
struct DatabaseLock {
    _conn: rusqlite::Connection,
}

fn lock_database(db: &str) -> DatabaseLock {
    let conn = rusqlite::Connection::open(db).expect("open the database");
    conn.execute_batch("BEGIN EXCLUSIVE")
        .expect("lock the database");
    DatabaseLock { _conn: conn }
}

fn burst(p: &Siptrack, uas_port: u16, calls: u32) {
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
        .arg("89160000001")
        .time_limit(Duration::from_secs(30))
        .run();
    let uas = uas.wait_at_most(Duration::from_secs(10));
    assert_eq!(uac.failed(), 0, "{}\n{}", uac.summary(), uas.summary());
}

fn metric(p: &Siptrack, name: &str) -> u64 {
    let (_, body) = get(api(p), "/metrics", None);
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics: {body}"))
}

/// Issue 12 finding 6: the database refuses writes (locked) while calls
/// end, then SIGTERM. The calls wait in the journal, /healthz says why,
/// /metrics shows the backlog, the exit is clean because nothing was
/// lost, and the next start writes them into the database.
#[test]
fn calls_the_database_refuses_wait_in_the_journal_and_arrive_later() {
    let uas_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let cfg = config(uas_port, &db, "[shutdown]\ndrain_seconds = 1\n");
    let mut p = Siptrack::start(&cfg);
    let lock = lock_database(&db);
    burst(&p, uas_port, 20);
    let (status, why) = p.healthz_until_failing(Duration::from_secs(30));
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("storage failing"), "{why}");
    assert!(metric(&p, "siptrack_storage_errors_total") >= 1);
    assert_eq!(metric(&p, "siptrack_storage_up"), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&p, "siptrack_calls_journaled") < 60 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every call's start, answer and end.
    assert_eq!(metric(&p, "siptrack_calls_journaled"), 60, "{}", p.log());
    let status = p.stop(Duration::from_secs(40)).expect("siptrack exits");
    assert!(
        status.success(),
        "nothing was lost: {status:?}\n{}",
        p.log()
    );
    assert!(dir.path().join("siptrack-calls.journal").exists());
    drop(lock);

    let p = Siptrack::start(&cfg);
    let calls = wait_for(&p, "calls", 20);
    assert!(calls.iter().all(|c| c["status"] == "answered"), "{calls:?}");
    let (status, body) = get(api(&p), "/healthz", None);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(metric(&p, "siptrack_calls_backlog"), 0);
    assert!(!dir.path().join("siptrack-calls.journal").exists());
}

/// Issue 12 finding 6: when neither the database nor the journal takes
/// the calls, SIGTERM says how many were not made durable and exits 1.
#[test]
fn calls_that_cannot_be_made_durable_fail_the_exit() {
    let uas_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, b"").expect("file");
    let cfg = config(
        uas_port,
        &db,
        &format!(
            "journal = \"{}\"\n[shutdown]\ndrain_seconds = 1\n",
            blocker.join("calls.journal").display()
        ),
    );
    let mut p = Siptrack::start(&cfg);
    let lock = lock_database(&db);
    burst(&p, uas_port, 5);
    let status = p.stop(Duration::from_secs(40)).expect("siptrack exits");
    drop(lock);
    assert_eq!(status.code(), Some(1), "{}", p.log());
    assert!(
        p.log()
            .contains("could not be written to the database or the journal"),
        "{}",
        p.log()
    );
}

/// Issue 11 item 5: at the default level, one line at start (config file,
/// database, destination, CRM kind, listen addresses), a warning when the
/// API has no token, one line per call; `RUST_LOG=siptrack=debug` shows
/// each SIP message in and out.
#[test]
fn the_log_tells_an_operator_what_happens() {
    let uas_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let cfg = config(uas_port, &db, "").replace(&format!("token = \"{TOKEN}\""), "token = \"\"");
    let p = Siptrack::start(&cfg);
    burst(&p, uas_port, 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.log().contains("status=\"answered\"") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = p.log();
    let started = log
        .lines()
        .find(|l| l.contains("siptrack started"))
        .unwrap_or_else(|| panic!("no start line: {log}"));
    for part in [
        "siptrack.toml",
        db.as_str(),
        &format!("sip:pbx@127.0.0.1:{uas_port}"),
        "crm=\"local\"",
        &format!("udp:127.0.0.1:{}", p.sip_port),
        &format!("127.0.0.1:{}", p.http_port),
    ] {
        assert!(started.contains(part), "{part} not in {started}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("http.token is empty")),
        "{log}"
    );
    let call = log
        .lines()
        .find(|l| l.contains(" INFO ") && l.contains("status=\"answered\""))
        .unwrap_or_else(|| panic!("no call line: {log}"));
    for part in [
        "call_id=",
        "caller=79160000001",
        "dialed=74951110001",
        "duration=0",
        "outcome=deal 1 created",
    ] {
        assert!(call.contains(part), "{part} not in {call}");
    }
    assert!(!log.contains("first_line="), "no SIP detail at info: {log}");
    drop(p);

    let p = Siptrack::start_with_env(&cfg, &[("RUST_LOG", "siptrack=debug")]);
    burst(&p, uas_port, 1);
    let log = p.log();
    let sip: Vec<&str> = log.lines().filter(|l| l.contains("first_line=")).collect();
    assert!(
        sip.iter()
            .any(|l| l.contains("dir=\"in\"") && l.contains("first_line=INVITE sip:74951110001@")),
        "{log}"
    );
    assert!(
        sip.iter().any(|l| l.contains("dir=\"out\"")
            && l.contains("first_line=INVITE sip:74951110001@")
            && l.contains(&format!("peer=127.0.0.1:{uas_port}"))),
        "{log}"
    );
    assert!(
        sip.iter()
            .any(|l| l.contains("dir=\"out\"") && l.contains("first_line=SIP/2.0 200 OK")),
        "{log}"
    );
    assert!(sip.iter().all(|l| l.contains("call_id=")), "{sip:?}");
}

/// Issue 11 item 7: every option of every command has a help line.
#[test]
fn every_cli_option_has_a_help_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    for cmd in ["run", "check-config", "replay", "leads"] {
        let (code, out, err) = siptrack_cli(dir.path(), &[cmd, "--help"]);
        assert_eq!(code, 0, "{cmd}: {err}");
        let options: Vec<&str> = out
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                l.starts_with("  ") && (t.starts_with('-') || t.starts_with('<'))
            })
            .collect();
        assert!(!options.is_empty(), "{cmd}: {out}");
        for o in options {
            // "  --flag <VALUE>   What it does"
            let described = o
                .trim()
                .split("  ")
                .filter(|p| !p.trim().is_empty())
                .count()
                >= 2;
            assert!(described, "{cmd}: no help for {o:?}");
        }
    }
}

/// Issue 11 item 7: the lead table wraps a long comment instead of
/// cutting it, and dates carry their zone (crm.timezone).
#[test]
fn the_lead_table_shows_whole_comments_and_zoned_dates() {
    let uas_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let cfg = config(uas_port, &db, "[crm]\ntimezone = \"UTC+3\"\n");
    let mut p = Siptrack::start(&cfg);
    burst(&p, uas_port, 1);
    wait_for(&p, "leads", 1);
    let status = p.stop(Duration::from_secs(20)).expect("exit");
    assert!(status.success());
    let cfg_path = p.dir().join("siptrack.toml");
    let (code, out, err) =
        siptrack_cli(p.dir(), &["leads", "--config", &cfg_path.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    let table = out.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert!(table.contains("+03:00"), "{out}");
    // "Call to 74951110001 (answered, 0 s)" is longer than the column.
    let words: Vec<&str> = table.split_whitespace().collect();
    for w in ["Call", "to", "74951110001", "(answered,", "0", "s)"] {
        assert!(words.contains(&w), "{w} missing: {out}");
    }
}

/// Issue 11 item 8: a repeat call within 12 hours is "duplicate of lead
/// N" and makes no CRM deal, but both calls get their call webhooks.
#[test]
fn every_call_gets_its_call_webhooks_whatever_its_lead_became() {
    let uas_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let crm = Crm::start(0, SECRET, Mode::Ok);
    let crm_keys = format!(
        "[crm]\nkind = \"webhook\"\nurl = \"{}\"\ncall_start_url = \"{}\"\ncall_end_url = \"{}\"\nsecret = \"{SECRET}\"\n",
        crm.url("/hook"),
        crm.url("/start"),
        crm.url("/end")
    );
    let p = Siptrack::start(&config(uas_port, &db_in(dir.path()), &crm_keys));
    burst(&p, uas_port, 2);
    let leads = wait_for(&p, "leads", 2);
    let outcomes: Vec<&str> = leads
        .iter()
        .rev()
        .map(|l| l["outcome"].as_str().unwrap_or_default())
        .collect();
    assert!(outcomes[0].starts_with("deal 1 created"), "{outcomes:?}");
    assert!(
        outcomes[1].starts_with("duplicate of lead 1"),
        "{outcomes:?}"
    );
    crm.wait_until(Duration::from_secs(10), "both call ends", |s| {
        s.requests.iter().filter(|r| r.path == "/end").count() == 2
    });
    std::thread::sleep(Duration::from_millis(500));
    let s = crm.lock();
    let count = |path: &str| s.requests.iter().filter(|r| r.path == path).count();
    assert_eq!((count("/start"), count("/end"), count("/hook")), (2, 2, 1));
}

/// A recordings directory siptrack cannot write in (trial, 2026-12-02:
/// `/proc/forbidden` passed check-config and `/healthz` said "ok" while
/// every call went unrecorded): check-config refuses it, and a node run
/// with it anyway carries calls (200) and says so on `/healthz` and in
/// `/metrics`.
#[test]
fn an_unusable_recordings_directory_is_reported_before_and_while_running() {
    let uas_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let media = "[media]\nrecordings_dir = \"/proc/forbidden\"\n";
    let text = config(uas_port, &db, media)
        .replace("{SIP_PORT}", "5060")
        .replace("{HTTP_PORT}", "8080");
    let file = dir.path().join("siptrack.toml");
    std::fs::write(&file, &text).expect("config");
    let file = file.to_string_lossy().into_owned();
    let (code, _, stderr) = siptrack_cli(dir.path(), &["check-config", &file]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "media.recordings_dir: /proc/forbidden does not exist, and /proc takes no new entry"
        ),
        "{stderr}"
    );
    // Recording off: nothing to write, nothing to say.
    let off = text.replace("[tracking]\n", "[tracking]\nrecord_calls = false\n");
    std::fs::write(&file, off).expect("config");
    let (code, stdout, stderr) = siptrack_cli(dir.path(), &["check-config", &file]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    let p = Siptrack::start(&config(uas_port, &db, media));
    let (status, health) = get(api(&p), "/healthz", None);
    assert_eq!(status, 200, "{health}");
    assert!(
        health.starts_with(
            "ok\nrecordings failing: media.recordings_dir: cannot create /proc/forbidden"
        ),
        "{health}"
    );
    let (_, metrics) = get(api(&p), "/metrics", None);
    assert!(
        metrics.contains("siptrack_recordings_dir_usable 0\n"),
        "{metrics}"
    );
    // Every line of the Prometheus text starts at its first column.
    let indented: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with(char::is_whitespace))
        .collect();
    assert!(indented.is_empty(), "{indented:?}");
}

/// A PBX on TCP that refuses the connection (down, or not listening):
/// the caller gets a final answer at once, not Timer B's 408 after 32 s
/// (here 6.4 s), and the call is `failed` (RFC 3261 16.9: a transport
/// error is a 503; trial, 2026-12-03: 32 s of silence and `missed`).
#[test]
fn a_tcp_pbx_that_refuses_fails_the_call_at_once() {
    let dead = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let cfg = config(dead, &db, "")
        .replace(
            "listen = [\"udp:127.0.0.1:{SIP_PORT}\"]",
            "listen = [\"udp:127.0.0.1:{SIP_PORT}\", \"tcp:127.0.0.1:{SIP_PORT}\"]",
        )
        .replace(
            &format!("sip:pbx@127.0.0.1:{dead}\"\n\n[[tracking.numbers]]"),
            &format!("sip:pbx@127.0.0.1:{dead};transport=tcp\"\n\n[[tracking.numbers]]"),
        )
        .replace(
            &format!("destination = \"sip:pbx@127.0.0.1:{dead}\"\nmarker"),
            &format!("destination = \"sip:pbx@127.0.0.1:{dead};transport=tcp\"\nmarker"),
        );
    assert_eq!(cfg.matches(";transport=tcp").count(), 2, "{cfg}");
    let p = Siptrack::start(&cfg);
    let (caller, invite) = raw_caller(&p, "89160000003", "tcp-pbx-down@e2e");
    let sent = Instant::now();
    caller
        .send_to(invite.as_bytes(), p.sip_addr())
        .expect("send INVITE");
    let mut buf = [0u8; 4096];
    let final_answer = loop {
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "no final answer within 5 s\n{}",
            p.log()
        );
        if let Ok((n, _)) = caller.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !text.starts_with("SIP/2.0 1") {
                break text;
            }
        }
    };
    assert!(
        final_answer.starts_with("SIP/2.0 500 Next Hop Unreachable\r\n"),
        "{final_answer}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = get(api(&p), "/api/v1/calls", Some(TOKEN));
        if body.contains("tcp-pbx-down@e2e") {
            assert!(body.contains("\"status\":\"failed\""), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "no call record: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
