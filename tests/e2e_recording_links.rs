//! Recording links end to end (issue 13, SPEC M-2, C-2a `link`): a real
//! siptrack process, a SIPp call that makes the call record, the test CRM
//! of tests/common receiving the call-end webhook, and plain HTTP against
//! `/recordings/{call_id}`.
//!
//! `a_really_recorded_calls_webhook_link_plays_its_wav` streams RTP
//! through siptrack's relay (tests/common/rtp.rs) and plays the WAV the
//! recorder wrote through the webhook's link. The other tests put a
//! recording in place through the store and the recordings directory (a
//! WAV of known bytes where the call's file belongs, the call record's
//! outcome set to `recorded`, the queued call-end request naming it as
//! siptrack does at queue time for a recorded call), so every byte range
//! and refusal can be checked exactly. Links are also signed here with an
//! independent HMAC over the documented format, with the key read from the
//! database.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::crm::{Crm, Mode};
use common::{free_port, Sipp, Siptrack};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

const TOKEN: &str = "rec-token-5e1d";
const SECRET: &str = "rec-crm-secret-77";

fn config(
    uas_port: u16,
    crm: &Crm,
    rec_dir: &str,
    media_extra: &str,
    tracking_extra: &str,
) -> String {
    format!(
        r#"[sip]
listen = ["udp:127.0.0.1:{{SIP_PORT}}"]
trusted_sources = ["127.0.0.0/8"]
route_secret = "e2e-rec"

[tracking]
default_destination = "sip:pbx@127.0.0.1:{uas_port}"
{tracking_extra}

[[tracking.numbers]]
number = "74951110001"
destination = "sip:pbx@127.0.0.1:{uas_port}"

[media]
recordings_dir = "{rec_dir}"
{media_extra}

[crm]
kind = "webhook"
url = "{hook}"
call_end_url = "{end}"
secret = "{SECRET}"
timeout_ms = 400

[crm.retry]
initial_ms = 100
max_ms = 300

[http]
listen = "127.0.0.1:{{HTTP_PORT}}"
token = "{TOKEN}"

[storage]
url = "sqlite:data/siptrack.db"
"#,
        end = crm.url("/end"),
        hook = crm.url("/hook"),
    )
}

/// One HTTP exchange, bytes exact: (status, lower-case headers, body).
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn http_get(addr: SocketAddr, target: &str, extra_headers: &[(&str, &str)]) -> Reply {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in extra_headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = raw[split + 4..].to_vec();
    let r = Reply {
        status,
        headers,
        body,
    };
    // Bodies are sent with Content-Length (never chunked), whole.
    if let Some(len) = r.header("content-length") {
        assert_eq!(len.parse::<usize>().ok(), Some(r.body.len()), "{target}");
    }
    r
}

/// The path part of an absolute link.
fn path_of(link: &str) -> &str {
    let rest = link.strip_prefix("http://").expect("http link");
    &rest[rest.find('/').expect("path")..]
}

/// The key siptrack signs links with, from its database.
fn link_key(db: &Path) -> Vec<u8> {
    let c = rusqlite::Connection::open(db).expect("open db");
    let hex: String = c
        .query_row(
            "SELECT value FROM meta WHERE key = 'recording_link_key'",
            [],
            |r| r.get(0),
        )
        .expect("link key");
    hex.into_bytes()
}

/// The documented signature, computed here: HMAC-SHA256 of
/// "siptrack-recording\n" exp "\n" call_id.
fn sign(key: &[u8], call_id: &str, exp: u64) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("key");
    m.update(format!("siptrack-recording\n{exp}\n{call_id}").as_bytes());
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn encode(call_id: &str) -> String {
    call_id
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn signed_path(key: &[u8], call_id: &str, exp: u64) -> String {
    format!(
        "/recordings/{}?exp={exp}&sig={}",
        encode(call_id),
        sign(key, call_id, exp)
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A finished two-channel WAV as siptrack writes it: `frames` stereo
/// frames of a pattern, so every byte range is distinct.
fn wav(frames: usize) -> Vec<u8> {
    let data_len = frames * 4;
    let mut out = siptrack::media::wav::header(data_len as u32, true).to_vec();
    out.extend((0..data_len).map(|i| (i % 251) as u8));
    out
}

/// Where siptrack keeps a call's recording.
fn file_for(rec_dir: &Path, call_id: &str) -> PathBuf {
    rec_dir.join(format!(
        "{}.wav",
        siptrack::media::link::file_stem(call_id.as_bytes())
    ))
}

/// One answered SIPp call through siptrack; returns its call record.
fn one_call(p: &Siptrack, uas_port: u16) -> Value {
    let uas = Sipp::uas("uas.xml")
        .port(uas_port)
        .calls(1)
        .time_limit(Duration::from_secs(20))
        .spawn();
    let uac = Sipp::uac("uac.xml", p.sip_addr())
        .calls(1)
        .rate(1)
        .arg("-s")
        .arg("74951110001")
        .time_limit(Duration::from_secs(20))
        .run();
    let uas = uas.wait_at_most(Duration::from_secs(10));
    assert_eq!(uac.failed(), 0, "{}\n{}", uac.summary(), uas.summary());
    p.wait_for("calls", 1, TOKEN).remove(0)
}

/// What siptrack does for a recorded call, done through the store: the
/// call record says `recorded`, and its queued call-end and lead requests
/// name the recording (the field the outbox worker turns into `link` and
/// `recording_url` when it sends).
fn mark_recorded(db: &Path, call_id: &str) {
    let c = rusqlite::Connection::open(db).expect("open db");
    c.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let changed = c
        .execute(
            "UPDATE calls SET recording = 'recorded', recording_reason = '' WHERE call_id = ?1",
            [call_id],
        )
        .expect("update call");
    assert_eq!(changed, 1);
    let changed = c
        .execute(
            "UPDATE outbox SET body = json_set(body, '$._recording',
                 json_object('call_id', ?1, 'state', 'recorded',
                             'end_at_ms', (SELECT end_at FROM calls WHERE call_id = ?1)))
              WHERE target IN ('call_end', 'lead') AND state = 'pending'",
            [call_id],
        )
        .expect("update outbox");
    assert_eq!(
        changed, 2,
        "the call-end and deal.create requests are still queued"
    );
}

fn siptrack_cli(p: &Siptrack, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_siptrack"))
        .args(args)
        .arg("--config")
        .arg(p.dir().join("siptrack.toml"))
        .current_dir(p.dir())
        .output()
        .expect("run siptrack");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_recorded_calls_link_plays_seeks_and_refuses_what_it_must() {
    let uas_port = free_port();
    // The CRM refuses the call-end until the recording is in place.
    let crm = Crm::start(0, SECRET, Mode::Status(503));
    let p = Siptrack::start(&config(uas_port, &crm, "rec", "", ""));
    let db = p.dir().join("data/siptrack.db");
    let rec_dir = p.dir().join("rec");
    let call = one_call(&p, uas_port);
    let call_id = call["id"].as_str().expect("call id").to_string();
    assert_eq!(call["recording"], "not_recorded", "{call}");
    assert_eq!(call["link"], Value::Null);

    std::fs::create_dir_all(&rec_dir).expect("rec dir");
    let audio = wav(2000);
    std::fs::write(file_for(&rec_dir, &call_id), &audio).expect("write wav");
    mark_recorded(&db, &call_id);
    crm.set_mode(Mode::Ok);
    crm.wait_until(
        Duration::from_secs(15),
        "the call-end and lead webhooks",
        |s| {
            ["/end", "/hook"]
                .iter()
                .all(|p| s.requests.iter().any(|r| r.path == *p && r.answered == 200))
        },
    );
    let end = {
        let s = crm.lock();
        let r = s
            .requests
            .iter()
            .rev()
            .find(|r| r.path == "/end" && r.answered == 200)
            .expect("delivered end")
            .clone();
        assert!(r.signature_ok, "signed over the body with the link");
        r.json
    };
    assert!(end.get("_recording").is_none(), "{end}");
    let link = end["link"]
        .as_str()
        .expect("call-end webhook has a link")
        .to_string();
    assert!(
        link.starts_with(&format!("http://127.0.0.1:{}/recordings/", p.http_port)),
        "{link}"
    );

    // The lead webhook of the call names the same recording.
    let lead = {
        let s = crm.lock();
        let r = s
            .requests
            .iter()
            .rev()
            .find(|r| r.path == "/hook" && r.answered == 200)
            .expect("delivered lead")
            .clone();
        assert!(r.signature_ok);
        r.json
    };
    assert_eq!(lead["event"], "deal.create", "{lead}");
    assert_eq!(
        lead["recording_url"].as_str(),
        Some(link.as_str()),
        "{lead}"
    );
    assert_eq!(lead["call"]["link"].as_str(), Some(link.as_str()), "{lead}");
    assert!(lead.get("_recording").is_none());

    // The webhook's link plays: the whole file, then a seek.
    let whole = http_get(p.api(), path_of(&link), &[]);
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert_eq!(whole.header("content-type"), Some("audio/wav"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert!(whole.body == audio, "the file, byte for byte");
    let part = http_get(p.api(), path_of(&link), &[("Range", "bytes=100-199")]);
    assert_eq!(part.status, 206, "{}", part.text());
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 100-199/{}", audio.len()).as_str())
    );
    assert!(part.body == audio[100..200], "exactly bytes 100..=199");
    let tail = http_get(p.api(), path_of(&link), &[("Range", "bytes=-10")]);
    assert_eq!(
        (tail.status, tail.body.as_slice()),
        (206, &audio[audio.len() - 10..])
    );
    let past = http_get(
        p.api(),
        path_of(&link),
        &[("Range", &format!("bytes={}-", audio.len()))],
    );
    assert_eq!(past.status, 416);
    assert_eq!(
        past.header("content-range"),
        Some(format!("bytes */{}", audio.len()).as_str())
    );

    // The calls API shows the recording and the same link.
    let listed = p.wait_for("calls", 1, TOKEN).remove(0);
    assert_eq!(listed["recording"], "recorded", "{listed}");
    assert_eq!(listed["recording_reason"], Value::Null);
    assert_eq!(listed["dtmf"], serde_json::json!([]));
    assert_eq!(listed["link"].as_str(), Some(link.as_str()));

    // The documented format, signed independently, with the database's key.
    let key = link_key(&db);
    let exp = unix_now() + 3600;
    assert_eq!(
        http_get(p.api(), &signed_path(&key, &call_id, exp), &[]).status,
        200
    );
    // Expired (valid signature, exp past), tampered, missing → 403.
    let expired = signed_path(&key, &call_id, unix_now() - 1);
    let r = http_get(p.api(), &expired, &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("expired"), "{}", r.text());
    let good = path_of(&link).to_string();
    let sig_at = good.find("sig=").expect("sig") + 4;
    let mut tampered = good.clone().into_bytes();
    tampered[sig_at] = if tampered[sig_at] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let later_exp = good.replace("exp=", "exp=9");
    let no_sig = &good[..good.find("&sig=").expect("sig")];
    for bad in [tampered.as_str(), later_exp.as_str(), no_sig] {
        let r = http_get(p.api(), bad, &[]);
        assert_eq!(r.status, 403, "{bad}: {}", r.text());
    }
    // Another call's link does not open this one.
    let other = signed_path(&key, "other@host", exp);
    let swapped = format!(
        "/recordings/{}?{}",
        encode(&call_id),
        other.split_once('?').expect("query").1
    );
    assert_eq!(http_get(p.api(), &swapped, &[]).status, 403);

    // A call without a recording: 404 even with a valid signature.
    let r = http_get(p.api(), &signed_path(&key, "nope@host", exp), &[]);
    assert_eq!(r.status, 404, "{}", r.text());

    // Path tricks: a validly signed Call-ID that reads as a path never
    // leaves the directory. A WAV one level up and the database itself
    // are the bait.
    std::fs::write(p.dir().join("outside.wav"), wav(10)).expect("bait");
    for trick in [
        "../outside",
        "../outside.wav",
        "..",
        "../data/siptrack.db",
        "/etc/passwd",
        "rec/../../outside",
    ] {
        let r = http_get(p.api(), &signed_path(&key, trick, exp), &[]);
        assert_eq!(r.status, 404, "{trick}: {}", r.text());
    }
    let raw = format!(
        "/recordings/..%2Foutside?exp={exp}&sig={}",
        sign(&key, "../outside", exp)
    );
    assert_eq!(http_get(p.api(), &raw, &[]).status, 404);
    let long = "x".repeat(6000);
    let r = http_get(p.api(), &signed_path(&key, &long, exp), &[]);
    assert!(matches!(r.status, 404 | 414 | 431 | 400), "{}", r.status);

    // A file still being written (header not finalised): 409, not served.
    let mut unfinished = siptrack::media::wav::header(0, false).to_vec();
    unfinished.extend([0u8; 400]);
    std::fs::write(file_for(&rec_dir, "live@host"), &unfinished).expect("write");
    let r = http_get(p.api(), &signed_path(&key, "live@host", exp), &[]);
    assert_eq!(r.status, 409, "{}", r.text());
    // Not a WAV siptrack wrote: 404.
    std::fs::write(file_for(&rec_dir, "junk@host"), b"not a wav at all").expect("write");
    let r = http_get(p.api(), &signed_path(&key, "junk@host", exp), &[]);
    assert_eq!(r.status, 404, "{}", r.text());

    // Every answer is counted by status.
    let metrics = http_get(p.api(), "/metrics", &[]).text();
    for line in [
        "siptrack_recording_requests_total{status=\"206\"} 2\n",
        "siptrack_recording_requests_total{status=\"409\"} 1\n",
        "siptrack_recording_requests_total{status=\"416\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    // The CLI prints the same link; a call without a recording is exit 1.
    let (ok, out, err) = siptrack_cli(&p, &["recording-url", &call_id]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), link);
    let (ok, _, err) = siptrack_cli(&p, &["recording-url", "nope@host"]);
    assert!(!ok);
    assert!(err.contains("no call"), "{err}");
    let c = rusqlite::Connection::open(&db).expect("db");

    // Recorded by another node of a cluster (its link base kept with the
    // call, as nodes on PostgreSQL write it): the links lead there, and a
    // signed request that reaches this node, which has no file, is sent
    // there (it was a 404 here).
    let node_a = "http://node-a.example:8080";
    c.execute(
        "UPDATE calls SET recording_base = ?1 WHERE call_id = ?2",
        [node_a, call_id.as_str()],
    )
    .expect("update");
    std::fs::remove_file(file_for(&rec_dir, &call_id)).expect("the WAV is node A's");
    let there = format!("{node_a}{}", path_of(&link));
    let r = http_get(p.api(), path_of(&link), &[]);
    assert_eq!(r.status, 307, "{}", r.text());
    assert_eq!(r.header("location"), Some(there.as_str()));
    let r = http_get(p.api(), &format!("/ui{}", path_of(&link)), &[]);
    assert_eq!(
        r.header("location"),
        Some(there.as_str()),
        "the console's too"
    );
    let listed = p.wait_for("calls", 1, TOKEN).remove(0);
    assert_eq!(listed["link"].as_str(), Some(there.as_str()), "{listed}");
    let (ok, out, err) = siptrack_cli(&p, &["recording-url", &call_id]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), there);
    // Unsigned, nothing is said about where it is.
    let r = http_get(p.api(), no_sig, &[]);
    assert_eq!((r.status, r.header("location")), (403, None));

    c.execute(
        "UPDATE calls SET recording = 'not_recorded', recording_reason = 'no free media ports'",
        [],
    )
    .expect("update");
    let (ok, _, err) = siptrack_cli(&p, &["recording-url", &call_id]);
    assert!(!ok);
    assert!(
        err.contains("has no recording: no free media ports"),
        "{err}"
    );
}

#[test]
fn with_require_auth_a_link_also_needs_the_token() {
    let crm = Crm::start(0, SECRET, Mode::Ok);
    let p = Siptrack::start(&config(
        free_port(),
        &crm,
        "rec",
        "",
        "recording_links_require_auth = true",
    ));
    let rec_dir = p.dir().join("rec");
    std::fs::create_dir_all(&rec_dir).expect("rec dir");
    let audio = wav(100);
    std::fs::write(file_for(&rec_dir, "c9@host"), &audio).expect("write");
    let key = link_key(&p.dir().join("data/siptrack.db"));
    let path = signed_path(&key, "c9@host", unix_now() + 600);
    assert_eq!(http_get(p.api(), &path, &[]).status, 401);
    let wrong = http_get(p.api(), &path, &[("Authorization", "Bearer nope")]);
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let ok = http_get(p.api(), &path, &[("Authorization", &bearer)]);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(ok.body == audio);
    // The token does not stand in for the signature.
    let unsigned = "/recordings/c9%40host";
    assert_eq!(
        http_get(p.api(), unsigned, &[("Authorization", &bearer)]).status,
        403
    );
}

#[test]
fn retention_deletes_old_recordings_at_start_and_counts_them() {
    let crm = Crm::start(0, SECRET, Mode::Ok);
    let rec = tempfile::tempdir().expect("rec dir");
    let old = file_for(rec.path(), "old@host");
    let new = file_for(rec.path(), "new@host");
    for f in [&old, &new] {
        std::fs::write(f, wav(10)).expect("write");
    }
    std::fs::write(rec.path().join("keep.txt"), b"operator notes").expect("write");
    let three_days_ago = SystemTime::now() - Duration::from_secs(3 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .and_then(|f| f.set_modified(three_days_ago))
        .expect("age the file");
    let p = Siptrack::start(&config(
        free_port(),
        &crm,
        &rec.path().display().to_string(),
        "retention_days = 2",
        "",
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while old.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!old.exists(), "past retention: deleted\n{}", p.log());
    assert!(new.exists() && rec.path().join("keep.txt").exists());
    let metrics = http_get(p.api(), "/metrics", &[]).text();
    assert!(
        metrics.contains("siptrack_recordings_deleted_total 1\n"),
        "{metrics}"
    );
    // Its link, even validly signed and unexpired, finds nothing.
    let key = link_key(&p.dir().join("data/siptrack.db"));
    let r = http_get(
        p.api(),
        &signed_path(&key, "old@host", unix_now() + 60),
        &[],
    );
    assert_eq!(r.status, 404);
    let r = http_get(
        p.api(),
        &signed_path(&key, "new@host", unix_now() + 60),
        &[],
    );
    assert_eq!(r.status, 200);
    // Past retention after the sweep ran, with a link whose expiry is
    // later (made while retention_days was longer): refused before the
    // next sweep (trial, 2026-12-03: it played).
    std::fs::File::options()
        .write(true)
        .open(&new)
        .and_then(|f| f.set_modified(three_days_ago))
        .expect("age the file");
    let r = http_get(
        p.api(),
        &signed_path(&key, "new@host", unix_now() + 60),
        &[],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("expired"), "{}", r.text());
}

/// Waits (at most 10 s) for a message `sipp` traced that `want` matches.
fn traced(
    sipp: &common::SippProcess,
    what: &str,
    want: impl Fn(&common::SipTrace) -> bool,
) -> common::SipTrace {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(m) = sipp.messages().into_iter().find(|m| want(m)) {
            return m;
        }
        assert!(Instant::now() < deadline, "no {what} within 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// With the relay and the recorder in the path (no seam): a call whose
/// media went through siptrack is recorded, and the link its call-end and
/// lead webhooks carry plays that WAV, the caller's tone on the left.
#[test]
fn a_really_recorded_calls_webhook_link_plays_its_wav() {
    use common::rtp::{goertzel, sdp_media_addr, RtpEndpoint};
    use common::Dir;
    let uas_port = free_port();
    let crm = Crm::start(0, SECRET, Mode::Ok);
    let base = common::free_ports(8);
    let media = format!(
        "port_min = {base}\nport_max = {}\nadvertised_ip = \"127.0.0.1\"",
        base + 7
    );
    let p = Siptrack::start(&config(uas_port, &crm, "rec", &media, ""));
    let caller = RtpEndpoint::bind(free_port());
    let callee = RtpEndpoint::bind(free_port());
    let uas = Sipp::uas("uas_media.xml")
        .port(uas_port)
        .arg("-key")
        .arg("rtp_port")
        .arg(callee.port().to_string())
        .pause_ms(500)
        .spawn();
    let uac = Sipp::uac("uac_media.xml", p.sip_addr())
        .calls(1)
        .arg("-key")
        .arg("rtp_port")
        .arg(caller.port().to_string())
        .pause_ms(2500)
        .spawn();
    let body = |m: &common::SipTrace| m.text.split_once("\n\n").map_or("", |(_, b)| b).to_string();
    let invite = traced(&uas, "INVITE at the UAS", |m| {
        m.dir == Dir::Received && m.is_request("INVITE")
    });
    let ok = traced(&uac, "200 at the UAC", |m| {
        m.dir == Dir::Received && m.is_response(200) && m.cseq_method().as_deref() == Some("INVITE")
    });
    let from_callee = sdp_media_addr(&body(&invite)).expect("SDP in the INVITE");
    let from_caller = sdp_media_addr(&body(&ok)).expect("SDP in the 200");
    let a = caller.send_tone(from_caller, 440.0, 75, 0x1111);
    let b = callee.send_tone(from_callee, 1000.0, 75, 0x2222);
    a.join().expect("caller tone");
    b.join().expect("callee tone");
    let uac = uac.wait();
    let uas = uas.wait_at_most(Duration::from_secs(5));
    assert_eq!(uac.successful(), 1, "{}\n{}", uac.summary(), uas.summary());

    crm.wait_until(
        Duration::from_secs(15),
        "the call-end and lead webhooks",
        |s| {
            ["/end", "/hook"]
                .iter()
                .all(|p| s.requests.iter().any(|r| r.path == *p && r.answered == 200))
        },
    );
    let (end, lead) = {
        let s = crm.lock();
        let last = |path: &str| {
            s.requests
                .iter()
                .rev()
                .find(|r| r.path == path && r.answered == 200)
                .map(|r| r.json.clone())
                .expect("delivered")
        };
        (last("/end"), last("/hook"))
    };
    let link = end["link"]
        .as_str()
        .unwrap_or_else(|| panic!("a recorded call's end has a link: {end}\n{}", p.log()))
        .to_string();
    assert_eq!(
        lead["recording_url"].as_str(),
        Some(link.as_str()),
        "{lead}"
    );
    let listed = p.wait_for("calls", 1, TOKEN).remove(0);
    assert_eq!(listed["recording"], "recorded", "{listed}");
    assert_eq!(listed["link"].as_str(), Some(link.as_str()));

    let wav = http_get(p.api(), path_of(&link), &[]);
    assert_eq!(wav.status, 200, "{}", wav.text());
    let pcm = siptrack::media::wav::samples(&wav.body).expect("a finished WAV");
    let left: Vec<f64> = pcm.iter().step_by(2).map(|&s| f64::from(s)).collect();
    let right: Vec<f64> = pcm
        .iter()
        .skip(1)
        .step_by(2)
        .map(|&s| f64::from(s))
        .collect();
    assert!(
        goertzel(&left, 440.0) > 100.0 * goertzel(&left, 1000.0),
        "left: caller"
    );
    assert!(
        goertzel(&right, 1000.0) > 100.0 * goertzel(&right, 440.0),
        "right: callee"
    );
    let part = http_get(p.api(), path_of(&link), &[("Range", "bytes=100-199")]);
    assert_eq!(part.status, 206);
    assert!(part.body == wav.body[100..200]);
}
