//! Checking what reached a SIPp UAS: scenarios with regular expressions
//! on the received INVITE, filled in per test from
//! tests/sipp/uas_tracking.xml, and a tiny HTTP client for the API.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{SipTrace, Sipp, SippRun, Siptrack};

/// A UAS scenario from tests/sipp/uas_tracking.xml with `regexps` (POSIX
/// extended, matched against the whole received INVITE) filled in.
pub fn uas_checking(dir: &tempfile::TempDir, regexps: &[String]) -> String {
    let template =
        fs::read_to_string(super::scenario("uas_tracking.xml")).expect("read uas_tracking.xml");
    let checks: String = regexps
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let r = r
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;");
            format!(
                "<ereg regexp=\"{r}\" search_in=\"msg\" check_it=\"true\" assign_to=\"check{i}\"/>\n      "
            )
        })
        .collect();
    let names: Vec<String> = (0..regexps.len()).map(|i| format!("check{i}")).collect();
    let references = format!("<Reference variables=\"{}\"/>", names.join(","));
    let path = dir.path().join("uas_checking.xml");
    fs::write(
        &path,
        template
            .replace("<!--CHECKS-->", &checks)
            .replace("<!--REFERENCES-->", &references),
    )
    .expect("write scenario");
    path.to_string_lossy().into_owned()
}

/// An ERE matching one header line exactly (the value, then CR).
pub fn line(name: &str, value: &str) -> String {
    format!("{name}: {}[[:space:]]", ere(value))
}

pub fn ere(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '.' | '[' | ']' | '(' | ')' | '*' | '+' | '?' | '{' | '}' | '|' | '^' | '$' | '\\' => {
                format!("\\{c}")
            }
            c => c.to_string(),
        })
        .collect()
}

/// Runs `calls` calls dialing `dialed` from caller `caller` through
/// `proxy` to a UAS that checks `regexps`; asserts every call succeeded on
/// both sides and returns the INVITEs the UAS received.
pub fn calls_through(
    proxy: &Siptrack,
    uas_port: u16,
    dialed: &str,
    caller: &str,
    regexps: &[String],
) -> (SippRun, Vec<SipTrace>) {
    let calls = 3;
    let dir = tempfile::tempdir().expect("temp dir");
    let uas = Sipp::uas(&uas_checking(&dir, regexps))
        .port(uas_port)
        .calls(calls)
        .time_limit(Duration::from_secs(20))
        .spawn();
    let uac = Sipp::uac("uac_tracking.xml", proxy.sip_addr())
        .calls(calls)
        .rate(10)
        .arg("-s")
        .arg(dialed)
        .arg("-key")
        .arg("caller")
        .arg(caller)
        .time_limit(Duration::from_secs(15))
        .run();
    let uas = uas.wait_at_most(Duration::from_secs(8));
    let ctx = format!(
        "{}\n{}\n--- siptrack ---\n{}",
        uac.summary(),
        uas.summary(),
        proxy.log()
    );
    assert_eq!(
        (uac.successful(), uac.failed()),
        (u64::from(calls), 0),
        "caller side\n{ctx}"
    );
    assert_eq!(
        (uas.successful(), uas.failed()),
        (u64::from(calls), 0),
        "UAS side: a failed call is an INVITE that did not match\n{regexps:#?}\n{ctx}"
    );
    let invites: Vec<SipTrace> = uas
        .received_requests("INVITE")
        .into_iter()
        .cloned()
        .collect();
    assert!(invites.len() >= calls as usize, "{ctx}");
    (uas, invites)
}

/// POSTs JSON to siptrack's HTTP API; (status, body).
pub fn post_json(addr: SocketAddr, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    http(addr, "POST", path, token, body)
}

/// POSTs a form (`application/x-www-form-urlencoded`, as CRMs send their
/// webhooks) without a token; (status, body).
pub fn post_form(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    send(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// GETs from siptrack's HTTP API; (status, body).
pub fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    http(addr, "GET", path, token, "")
}

fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    request(addr, method, path, auth.as_deref(), body)
}

/// Sends a request to siptrack's HTTP API with the `Authorization`
/// header as given (none: no header); (status, body).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> (u16, String) {
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    send(addr, &req)
}

fn send(addr: SocketAddr, req: &str) -> (u16, String) {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the HTTP API");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(req.as_bytes()).expect("send the request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the response");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {out:?}"));
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}
