//! S-4 over real sockets: every message of ../shared/corpus/torture/ is sent
//! as it is, in one UDP datagram, to a running siptrack whose default
//! destination is a UDP socket of this test (the far side). Each message
//! must get its verdict: valid ones arrive at the far side with every
//! header line, the header order and the body byte-identical except what a
//! proxy must change (S-5); invalid ones get the response named in
//! INDEX.tsv or 400, or are dropped. After each message the process must
//! still be running and answer OPTIONS.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{options_ping, Siptrack};

/// What siptrack must do with one corpus message.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Forwarded to the far side (and no error response).
    Forward,
    /// Not forwarded; a final response with one of these codes.
    Reply(&'static [u16]),
    /// Not forwarded; either one of these codes or no answer at all.
    ReplyOrDrop(&'static [u16]),
    /// Not forwarded, not answered.
    Drop,
}

use Expect::*;

/// The verdict for every file, keyed by its path under torture/. Where
/// siptrack's policy decides rather than the RFC, the reason is given.
const CASES: &[(&str, Expect)] = &[
    // A re-INVITE (To tag) whose Route names another proxy: S-3 relays
    // in-dialog requests only on siptrack's own signed Record-Route.
    // `wsinv_in_a_siptrack_dialog_is_forwarded_byte_for_byte` covers its
    // wire fidelity.
    ("rfc4475/wsinv.sip", Reply(&[404])),
    ("rfc4475/intmeth.sip", Forward),
    ("rfc4475/esc01.sip", Forward),
    // siptrack is no registrar: REGISTER gets 405 (S-3).
    ("rfc4475/escnull.sip", Reply(&[405])),
    ("rfc4475/esc02.sip", Forward),
    ("rfc4475/lwsdisp.sip", Forward),
    ("rfc4475/longreq.sip", Forward),
    ("rfc4475/dblreq.sip", Reply(&[405])),
    ("rfc4475/semiuri.sip", Forward),
    ("rfc4475/transports.sip", Forward),
    ("rfc4475/mpart01.sip", Forward),
    // Responses that match no transaction: a proxy drops them.
    ("rfc4475/unreason.sip", Drop),
    ("rfc4475/noreason.sip", Drop),
    ("rfc4475/badinv01.sip", Reply(&[400])),
    ("rfc4475/clerr.sip", Reply(&[400])),
    ("rfc4475/ncl.sip", ReplyOrDrop(&[400])),
    ("rfc4475/scalar02.sip", Reply(&[400])),
    ("rfc4475/scalarlg.sip", Drop),
    // lenient_ok rows: siptrack's parser is strict and says 400, which
    // the RFC allows, rather than guess and forward a repaired message.
    ("rfc4475/quotbal.sip", Reply(&[400])),
    ("rfc4475/ltgtruri.sip", Reply(&[400])),
    ("rfc4475/lwsruri.sip", Reply(&[400])),
    ("rfc4475/lwsstart.sip", Reply(&[400])),
    ("rfc4475/trws.sip", Reply(&[400])),
    ("rfc4475/escruri.sip", Reply(&[400])),
    ("rfc4475/baddate.sip", Reply(&[400])),
    ("rfc4475/regbadct.sip", Reply(&[400, 405])),
    ("rfc4475/badaspec.sip", Reply(&[400])),
    ("rfc4475/baddn.sip", Reply(&[400])),
    ("rfc4475/badvers.sip", Reply(&[505])),
    ("rfc4475/mismatch01.sip", Reply(&[400])),
    ("rfc4475/mismatch02.sip", Reply(&[501, 400])),
    ("rfc4475/bigcode.sip", Drop),
    // A bare magic cookie is no RFC 3261 branch: matched the RFC 2543
    // way, which the RFC allows, and forwarded.
    ("rfc4475/badbranch.sip", Forward),
    ("rfc4475/insuf.sip", ReplyOrDrop(&[400])),
    ("rfc4475/unkscm.sip", Reply(&[416])),
    ("rfc4475/novelsc.sip", Reply(&[416, 404])),
    ("rfc4475/unksm2.sip", Reply(&[405])),
    ("rfc4475/bext01.sip", Reply(&[420])),
    ("rfc4475/invut.sip", Forward),
    ("rfc4475/regaut01.sip", Reply(&[405])),
    ("rfc4475/multi01.sip", Reply(&[400])),
    ("rfc4475/mcl01.sip", ReplyOrDrop(&[400])),
    ("rfc4475/bcast.sip", Drop),
    ("rfc4475/zeromf.sip", Reply(&[483])),
    ("rfc4475/cparam01.sip", Reply(&[405])),
    ("rfc4475/cparam02.sip", Reply(&[405])),
    ("rfc4475/regescrt.sip", Reply(&[405])),
    ("rfc4475/sdp01.sip", Forward),
    ("rfc4475/inv2543.sip", Forward),
    // No SIP-Version on the request line: not a SIP message at all.
    ("rfc4475/test.sip", ReplyOrDrop(&[400])),
    ("rfc5118/ipv6-good.sip", Reply(&[405])),
    ("rfc5118/ipv6-bad.sip", Reply(&[400])),
    ("rfc5118/port-ambiguous.sip", Reply(&[405])),
    ("rfc5118/port-unambiguous.sip", Reply(&[405])),
    // In-dialog BYEs (To tag) without siptrack's Record-Route: S-3.
    ("rfc5118/via-received-param-with-delim.sip", Reply(&[404])),
    ("rfc5118/mult-ip-in-header.sip", Reply(&[404])),
    // OPTIONS to a URI without user part: the proxy answers itself.
    ("rfc5118/via-received-param-no-delim.sip", Reply(&[200])),
    // Declared Content-Length exceeds the datagram's body (as clerr).
    ("rfc5118/ipv6-in-sdp.sip", Reply(&[400])),
    // Declared Content-Length shorter than the body: framed by it, the
    // extra octets are not forwarded.
    ("rfc5118/mult-ip-in-sdp.sip", Forward),
    ("rfc5118/ipv4-mapped-ipv6.sip", Forward),
    ("rfc5118/ipv6-bug-abnf-3-colons.sip", Forward),
    ("rfc5118/ipv6-correct-abnf-2-colons.sip", Forward),
    ("rfc5118/clfix/ipv6-in-sdp.sip", Forward),
    ("rfc5118/clfix/mult-ip-in-sdp.sip", Forward),
    ("rfc5118/clfix/ipv4-mapped-ipv6.sip", Forward),
];

const T1_MS: u64 = 10;
const T4_MS: u64 = 50;

fn torture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/torture")
}

fn config(far: SocketAddr) -> String {
    format!(
        r#"[sip]
listen = ["udp:127.0.0.1:{{SIP_PORT}}", "tcp:127.0.0.1:{{SIP_PORT}}"]
trusted_sources = ["127.0.0.0/8"]
route_secret = "torture-route-secret"

# Short timers so that transactions of messages sharing a transaction key
# (several RFC 5118 files do) are gone before the next one is sent.
[sip.timers]
t1_ms = {T1_MS}
t2_ms = {t2}
t4_ms = {T4_MS}

[tracking]
default_destination = "sip:{far}"
# S-5 without the call-tracking rewrites of section 3, which have tests of
# their own: nothing but the proxy's own edits may differ.
normalize_caller = false
# Nor media anchoring (its SDP rewrite is tested in e2e_media.rs).
record_calls = false

[rewrite]
phone_header = ""

[http]
listen = "127.0.0.1:{{HTTP_PORT}}"
"#,
        t2 = T1_MS * 4,
    )
}

// ---- a minimal, independent reading of SIP text --------------------------

/// Header section (start line included) and body, split at the first
/// empty line.
fn split_message(msg: &[u8]) -> (&[u8], &[u8]) {
    match msg.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (&msg[..i + 2], &msg[i + 4..]),
        None => (msg, &[]),
    }
}

/// The start line, then one entry per header field with its folded
/// continuation lines, each with its line ends as on the wire.
fn fields(head: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut rest = head;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(rest.len(), |i| i + 2);
        let line = &rest[..end];
        match out.last_mut() {
            Some(prev) if matches!(line.first(), Some(b' ' | b'\t')) => {
                prev.extend_from_slice(line)
            }
            _ => out.push(line.to_vec()),
        }
        rest = &rest[end..];
    }
    out
}

/// Long lower-case name of a header field.
fn field_name(field: &[u8]) -> String {
    let colon = field.iter().position(|&c| c == b':').unwrap_or(0);
    let name = String::from_utf8_lossy(&field[..colon])
        .trim()
        .to_ascii_lowercase();
    match name.as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        "s" => "subject",
        "e" => "content-encoding",
        _ => return name,
    }
    .to_string()
}

/// The value of a field with folding and surrounding whitespace removed.
fn field_value(field: &[u8]) -> String {
    let colon = field.iter().position(|&c| c == b':').map_or(0, |i| i + 1);
    String::from_utf8_lossy(&field[colon..])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn first_value(msg: &[u8], name: &str) -> Option<String> {
    let (head, _) = split_message(msg);
    fields(head)
        .iter()
        .skip(1)
        .find(|f| field_name(f) == name)
        .map(|f| field_value(f))
}

fn start_line(msg: &[u8]) -> String {
    let (head, _) = split_message(msg);
    fields(head)
        .first()
        .map(|l| String::from_utf8_lossy(l).trim_end().to_string())
        .unwrap_or_default()
}

fn status_of(msg: &[u8]) -> Option<u16> {
    let line = start_line(msg);
    let rest = line.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

/// A far-side answer: the request's Via, From, To, Call-ID and CSeq
/// fields as they came, under a new status line.
fn answer(request: &[u8], status: &str) -> Vec<u8> {
    let (head, _) = split_message(request);
    let mut out = format!("SIP/2.0 {status}\r\n").into_bytes();
    for f in fields(head).iter().skip(1) {
        if matches!(
            field_name(f).as_str(),
            "via" | "from" | "to" | "call-id" | "cseq"
        ) {
            out.extend_from_slice(f);
        }
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    out
}

// ---- the run ---------------------------------------------------------------

struct Observed {
    forwarded: Option<Vec<u8>>,
    final_status: Option<u16>,
}

struct Rig {
    siptrack: Siptrack,
    caller: UdpSocket,
    far: UdpSocket,
    /// Every datagram the far side got so far: retransmissions of earlier
    /// requests are recognised by their identical bytes.
    seen_at_far: HashSet<Vec<u8>>,
}

impl Rig {
    fn start() -> Rig {
        let far = UdpSocket::bind("127.0.0.1:0").expect("bind far side");
        let caller = UdpSocket::bind("127.0.0.1:0").expect("bind caller");
        far.set_nonblocking(true).expect("nonblocking far");
        caller.set_nonblocking(true).expect("nonblocking caller");
        let far_addr = far.local_addr().expect("far address");
        let siptrack = Siptrack::start(&config(far_addr));
        Rig {
            siptrack,
            caller,
            far,
            seen_at_far: HashSet::new(),
        }
    }

    fn far_addr(&self) -> SocketAddr {
        self.far.local_addr().expect("far address")
    }

    /// Sends `msg` and watches both sockets until the expectation can be
    /// judged: a forward or a final response, or `quiet` without either.
    fn exchange(&mut self, msg: &[u8], expect: Expect) -> Observed {
        let call_id = first_value(msg, "call-id");
        let cseq = first_value(msg, "cseq");
        self.caller
            .send_to(msg, self.siptrack.sip_addr())
            .expect("send to siptrack");
        let quiet = match expect {
            Forward | Reply(_) => Duration::from_secs(3),
            ReplyOrDrop(_) | Drop => Duration::from_millis(400),
        };
        let deadline = Instant::now() + quiet;
        let mut seen = Observed {
            forwarded: None,
            final_status: None,
        };
        let mut buf = vec![0u8; 70_000];
        while Instant::now() < deadline {
            let mut idle = true;
            if let Ok((n, from)) = self.far.recv_from(&mut buf) {
                idle = false;
                let data = buf[..n].to_vec();
                let fresh = self.seen_at_far.insert(data.clone());
                if status_of(&data).is_none() {
                    let status = if start_line(&data).starts_with("ACK ") {
                        None
                    } else {
                        Some("200 OK")
                    };
                    if let Some(status) = status {
                        // Answer retransmissions too, as a UAS would.
                        let _ = self.far.send_to(&answer(&data, status), from);
                    }
                    if fresh
                        && seen.forwarded.is_none()
                        && first_value(&data, "call-id") == call_id
                        && first_value(&data, "cseq") == cseq
                    {
                        seen.forwarded = Some(data);
                    }
                }
            }
            if let Ok((n, _)) = self.caller.recv_from(&mut buf) {
                idle = false;
                let data = &buf[..n];
                if let Some(code) = status_of(data) {
                    if code >= 200
                        && seen.final_status.is_none()
                        && first_value(data, "call-id") == call_id
                        && first_value(data, "cseq") == cseq
                    {
                        seen.final_status = Some(code);
                    }
                }
            }
            let decided = match expect {
                Forward => seen.forwarded.is_some(),
                Reply(_) | ReplyOrDrop(_) => seen.final_status.is_some(),
                Drop => false,
            };
            if decided {
                // A little longer, to catch a forward that comes with an
                // error response or the other way round.
                std::thread::sleep(Duration::from_millis(30));
                if let Ok((n, _)) = self.far.recv_from(&mut buf) {
                    let data = buf[..n].to_vec();
                    if self.seen_at_far.insert(data.clone())
                        && first_value(&data, "call-id") == call_id
                        && seen.forwarded.is_none()
                        && status_of(&data).is_none()
                    {
                        seen.forwarded = Some(data);
                    }
                }
                break;
            }
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        seen
    }
}

/// Asserts that `fwd` is `orig` as a proxy may forward it (S-5): the same
/// method and user part, then exactly the original header fields in the
/// original order and spelling, except that
/// - siptrack's own Via comes first and Record-Route may be added;
/// - the original top Via may gain `received` / a filled-in `rport`;
/// - Max-Forwards is one less (70 when absent);
/// - fields named in `also_changed` are checked by the caller;
/// - the body is the original body, cut at its Content-Length.
fn assert_forwarded_faithfully(
    name: &str,
    orig: &[u8],
    fwd: &[u8],
    proxy: SocketAddr,
    far: SocketAddr,
    also_changed: &[&str],
) {
    let (orig_head, orig_body) = split_message(orig);
    let (fwd_head, fwd_body) = split_message(fwd);
    let orig_fields = fields(orig_head);
    let fwd_fields = fields(fwd_head);
    let text = |f: &[u8]| String::from_utf8_lossy(f).into_owned();

    // Start line: method kept, Request-URI sent to the configured
    // destination with the dialed user part.
    let orig_line = start_line(orig);
    let fwd_line = start_line(fwd);
    let orig_method = orig_line.split(' ').next().unwrap_or_default();
    let (method, rest) = fwd_line.split_once(' ').unwrap_or_default();
    assert_eq!(method, orig_method, "{name}: method changed: {fwd_line}");
    assert!(
        fwd_line.ends_with(" SIP/2.0"),
        "{name}: version: {fwd_line}"
    );
    if !also_changed.contains(&"request-uri") {
        let uri = rest.trim_end_matches(" SIP/2.0");
        let user = uri
            .strip_prefix("sip:")
            .and_then(|u| u.strip_suffix(&far.to_string()))
            .unwrap_or_else(|| panic!("{name}: R-URI not for {far}: {fwd_line}"));
        if let Some(user) = user.strip_suffix('@') {
            let orig_uri = orig_line.split(' ').nth(1).unwrap_or_default();
            assert!(
                orig_uri.starts_with(&format!("sip:{user}")),
                "{name}: user part {user:?} not from {orig_uri:?}"
            );
        } else {
            assert!(user.is_empty(), "{name}: R-URI {uri}");
        }
    }

    // siptrack's own fields.
    let ours = |f: &Vec<u8>| {
        let v = field_value(f);
        let mine = v.contains(&format!("127.0.0.1:{}", proxy.port()));
        match field_name(f).as_str() {
            "via" => mine && v.starts_with("SIP/2.0/UDP 127.0.0.1"),
            "record-route" => mine,
            _ => false,
        }
    };
    // RFC 3261 16.6 step 8: before the existing Via values; where among
    // the other fields does not matter, and siptrack puts it in place of
    // the first Via so that nothing else moves.
    assert!(
        fwd_fields
            .iter()
            .skip(1)
            .find(|f| field_name(f) == "via")
            .is_some_and(ours),
        "{name}: siptrack's Via is not the first Via:\n{}",
        text(fwd_head)
    );
    let rr_added = fwd_fields
        .iter()
        .skip(1)
        .filter(|f| field_name(f) == "record-route" && ours(f))
        .count();
    let in_dialog = first_value(orig, "to").is_some_and(|v| v.contains("tag"));
    if orig_method == "INVITE" && !in_dialog {
        assert_eq!(rr_added, 1, "{name}: one Record-Route for a new INVITE");
    } else {
        assert_eq!(rr_added, 0, "{name}: no Record-Route on this request");
    }

    // Max-Forwards.
    let mf = |fs: &[Vec<u8>]| {
        fs.iter()
            .skip(1)
            .find(|f| field_name(f) == "max-forwards")
            .map(|f| field_value(f).parse::<u32>().expect("numeric Max-Forwards"))
    };
    let expected_mf = mf(&orig_fields).map_or(70, |n| n - 1);
    assert_eq!(mf(&fwd_fields), Some(expected_mf), "{name}: Max-Forwards");

    // A new request's preloaded Route is consumed whole: the next hop is
    // the configured one (a Route left for another host would send a
    // loose-routing PBX there).
    if !in_dialog {
        assert!(
            !fwd_fields.iter().skip(1).any(|f| field_name(f) == "route"),
            "{name}: a preloaded Route went on:\n{}",
            text(fwd_head)
        );
    }
    // Everything else, in order and byte for byte.
    let skip = |f: &Vec<u8>| {
        let n = field_name(f);
        n == "max-forwards" || also_changed.contains(&n.as_str()) || (n == "route" && !in_dialog)
    };
    let kept_orig: Vec<&Vec<u8>> = orig_fields.iter().skip(1).filter(|f| !skip(f)).collect();
    let kept_fwd: Vec<&Vec<u8>> = fwd_fields
        .iter()
        .skip(1)
        .filter(|f| !skip(f) && !ours(f))
        .collect();
    assert_eq!(
        kept_fwd.len(),
        kept_orig.len(),
        "{name}: header fields added or lost:\n--- sent ---\n{}--- forwarded ---\n{}",
        text(orig_head),
        text(fwd_head)
    );
    let mut top_via_seen = false;
    for (o, f) in kept_orig.iter().zip(&kept_fwd) {
        if o == f {
            if field_name(o) == "via" {
                top_via_seen = true;
            }
            continue;
        }
        // The first Via field of the original may carry the stamps of
        // RFC 3261 18.2.1 / RFC 3581: ";received=<source>", "rport=<port>".
        assert!(
            field_name(o) == "via" && !top_via_seen,
            "{name}: field changed:\n  sent:      {:?}\n  forwarded: {:?}",
            text(o),
            text(f)
        );
        top_via_seen = true;
        let unstamped = strip_rport_value(&strip_received(&text(f)));
        assert_eq!(
            unstamped,
            strip_rport_value(&strip_received(&text(o))),
            "{name}: top Via changed beyond received/rport"
        );
    }

    // Body: the original, framed by its Content-Length.
    let declared = first_value(fwd, "content-length").map(|v| v.parse::<usize>().expect("CL"));
    match declared {
        Some(n) => {
            assert_eq!(
                fwd_body.len(),
                n,
                "{name}: forwarded body vs its Content-Length"
            );
            assert!(
                n <= orig_body.len() && fwd_body == &orig_body[..n],
                "{name}: body changed"
            );
        }
        None => assert_eq!(fwd_body, orig_body, "{name}: body changed"),
    }
}

/// `rport=<digits>` back to the bare `rport` the sender wrote.
fn strip_rport_value(s: &str) -> String {
    let Some(i) = s.find("rport=") else {
        return s.to_string();
    };
    let digits = s[i + 6..].bytes().take_while(u8::is_ascii_digit).count();
    format!("{}rport{}", &s[..i], &s[i + 6 + digits..])
}

/// A `received` the sender wrote itself is replaced with the true source;
/// both sides are compared without it.
fn strip_received(s: &str) -> String {
    let Some(i) = s.find(";received=") else {
        return s.to_string();
    };
    let end = s[i + 1..]
        .find([';', ',', '\r'])
        .map_or(s.len(), |j| i + 1 + j);
    format!("{}{}", &s[..i], &s[end..])
}

fn index_files() -> Vec<String> {
    let index = fs::read_to_string(torture_dir().join("INDEX.tsv")).expect("read INDEX.tsv");
    index
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').nth(2).expect("file column").to_string())
        .collect()
}

#[test]
fn every_torture_message_gets_its_verdict_and_siptrack_stays_up() {
    let cases: HashMap<&str, Expect> = CASES.iter().copied().collect();
    // The table covers the whole corpus: every INDEX.tsv row and every
    // corrected copy in clfix/.
    let mut files = index_files();
    assert_eq!(files.len(), 62, "INDEX.tsv rows");
    for entry in fs::read_dir(torture_dir().join("rfc5118/clfix")).expect("clfix/") {
        let entry = entry.expect("clfix entry");
        files.push(format!(
            "rfc5118/clfix/{}",
            entry.file_name().to_string_lossy()
        ));
    }
    let missing: Vec<&String> = files
        .iter()
        .filter(|f| !cases.contains_key(f.as_str()))
        .collect();
    assert!(missing.is_empty(), "no expectation for {missing:?}");
    assert_eq!(
        files.len(),
        CASES.len(),
        "a case names a file not in the corpus"
    );

    let mut rig = Rig::start();
    let proxy = rig.siptrack.sip_addr();
    let far = rig.far_addr();
    let mut used_keys: HashSet<(Option<String>, Option<String>)> = HashSet::new();
    let mut failures = Vec::new();
    let mut forwarded = 0;
    for &(file, expect) in CASES {
        let msg = fs::read(torture_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        // Several files share a transaction key (top Via and CSeq method,
        // RFC 3261 17.2.3), or Call-ID and CSeq: wait until the earlier
        // transaction is gone (64*T1, T4), or the proxy rightly takes the
        // later message for a retransmission.
        let via =
            first_value(&msg, "via").map(|v| v.split(',').next().unwrap_or_default().to_string());
        let cseq = first_value(&msg, "cseq");
        let method = cseq
            .as_deref()
            .and_then(|c| c.split(' ').nth(1))
            .map(str::to_string);
        let fresh_txn = used_keys.insert((via, method));
        let fresh_call = used_keys.insert((first_value(&msg, "call-id"), cseq));
        if !(fresh_txn && fresh_call) {
            std::thread::sleep(Duration::from_millis(64 * T1_MS + T4_MS + 300));
        }
        let seen = rig.exchange(&msg, expect);
        let verdict_ok = match expect {
            Forward => seen.forwarded.is_some() && seen.final_status.is_none_or(|c| c < 300),
            Reply(codes) => {
                seen.forwarded.is_none() && seen.final_status.is_some_and(|c| codes.contains(&c))
            }
            ReplyOrDrop(codes) => {
                seen.forwarded.is_none() && seen.final_status.is_none_or(|c| codes.contains(&c))
            }
            Drop => seen.forwarded.is_none() && seen.final_status.is_none(),
        };
        if !verdict_ok {
            failures.push(format!(
                "{file}: expected {expect:?}, got forwarded={} final={:?}",
                seen.forwarded.is_some(),
                seen.final_status
            ));
        }
        if let (Forward, Some(fwd)) = (expect, &seen.forwarded) {
            forwarded += 1;
            assert_forwarded_faithfully(file, &msg, fwd, proxy, far, &[]);
        }
        assert!(rig.siptrack.is_alive(), "siptrack died after {file}");
        assert!(
            options_ping(proxy, Duration::from_secs(2))
                .is_some_and(|r| r.starts_with("SIP/2.0 200")),
            "siptrack stopped answering OPTIONS after {file}"
        );
    }
    assert!(
        failures.is_empty(),
        "verdicts not met:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        forwarded,
        CASES.iter().filter(|(_, e)| matches!(e, Forward)).count()
    );
}

/// wsinv is a re-INVITE; sent as it is, S-3 refuses it (the Route names a
/// proxy that is not siptrack). Here it travels inside a dialog siptrack
/// set up, its only edit being its Route: siptrack's own Record-Route
/// first, then the far side in place of services.example.com. Its folded
/// lines, compact forms, odd whitespace and unknown headers must arrive as
/// they were sent.
#[test]
fn wsinv_in_a_siptrack_dialog_is_forwarded_byte_for_byte() {
    let mut rig = Rig::start();
    let proxy = rig.siptrack.sip_addr();
    let far = rig.far_addr();
    let caller = rig.caller.local_addr().expect("caller address");
    let call_id = "wsinv.ndaksdj@192.0.2.1";

    // The dialog: an INVITE with wsinv's Call-ID through siptrack.
    let invite = format!(
        "INVITE sip:vivekg@chair-dnrc.example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {caller};branch=z9hG4bK-wsinv-dialog;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:jdrosen@example.com>;tag=98asjd8\r\n\
         To: <sip:vivekg@chair-dnrc.example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 8 INVITE\r\n\
         Contact: <sip:jdrosen@{caller}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let seen = rig.exchange(invite.as_bytes(), Forward);
    let fwd = seen
        .forwarded
        .expect("the dialog-forming INVITE is forwarded");
    let record_route = first_value(&fwd, "record-route").expect("siptrack adds Record-Route");

    let orig = fs::read(torture_dir().join("rfc4475/wsinv.sip")).expect("wsinv.sip");
    let route_field: &[u8] =
        b"Route:\r\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\n";
    let at = orig
        .windows(route_field.len())
        .position(|w| w == route_field)
        .expect("wsinv's Route field");
    let far_route = format!("<sip:{far};lr;unknownwith=value;unknown-no-value>");
    let mut msg = orig[..at].to_vec();
    msg.extend_from_slice(format!("Route:\r\n {record_route},\r\n {far_route}\r\n").as_bytes());
    msg.extend_from_slice(&orig[at + route_field.len()..]);

    let seen = rig.exchange(&msg, Forward);
    let fwd = seen.forwarded.unwrap_or_else(|| {
        panic!(
            "wsinv in the dialog was not forwarded (final {:?})\n{}",
            seen.final_status,
            rig.siptrack.log()
        )
    });
    // Loose routing: the Request-URI stays, siptrack's Route entry is gone,
    // the next one remains.
    assert!(
        start_line(&fwd).starts_with("INVITE sip:vivekg@chair-dnrc.example.com;unknownparam "),
        "R-URI changed: {}",
        start_line(&fwd)
    );
    let routes: Vec<String> = fields(split_message(&fwd).0)
        .iter()
        .filter(|f| field_name(f) == "route")
        .map(|f| field_value(f))
        .collect();
    assert_eq!(routes, vec![far_route.clone()], "Route after loose routing");
    assert_forwarded_faithfully("wsinv", &msg, &fwd, proxy, far, &["route", "request-uri"]);
    // The folded, compact and odd fields, spot-checked verbatim.
    let raw = String::from_utf8_lossy(&fwd);
    for piece in [
        "TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n",
        "NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n",
        "UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n",
        "v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n",
        "cseq: 0009\r\n  INVITE\r\n",
    ] {
        assert!(raw.contains(piece), "not forwarded verbatim: {piece:?}");
    }
}
