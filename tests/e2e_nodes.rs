//! Several siptrack nodes on one PostgreSQL behind Kamailio's dispatcher
//! (issue 14): Kamailio from Debian runs `config/kamailio-dispatcher.cfg`
//! (round robin over the nodes) in the foreground on loopback; SIPp calls
//! through it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::crm::{Crm, Mode};
use common::{free_port, options_ping, Sipp, Siptrack};

const TOKEN: &str = "nodes-token-5c2a";
const CRM_SECRET: &str = "nodes-crm-secret-91d3";

fn node_config(uas_port: u16, url: &str) -> String {
    node_config_with(uas_port, url, "")
}

fn node_config_with(uas_port: u16, url: &str, crm: &str) -> String {
    format!(
        r#"[sip]
listen = ["udp:127.0.0.1:{{SIP_PORT}}"]
trusted_sources = ["127.0.0.0/8"]
# The same on every node: a node's route tokens are valid on the others.
route_secret = "e2e-nodes-shared-secret"

[tracking]
default_destination = "sip:pbx@127.0.0.1:{uas_port}"

[http]
listen = "127.0.0.1:{{HTTP_PORT}}"
token = "{TOKEN}"

[[tracking.pools]]
name = "site"
numbers = ["74951230001", "74951230002", "74951230003", "74951230004", "74951230005"]
destination = "sip:pbx@127.0.0.1:{uas_port}"
hold_seconds = 600

{crm}
[storage]
url = "{url}"
pool_size = 4
statement_timeout_ms = 2000
node_name = "node-{{SIP_PORT}}"
"#
    )
}

/// Where Debian's kamailio keeps its modules.
fn kamailio_modules() -> String {
    let found = [
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        "/usr/lib/aarch64-linux-gnu/kamailio/modules",
        "/usr/lib/kamailio/modules",
    ]
    .into_iter()
    .find(|d| Path::new(d).join("dispatcher.so").exists());
    found
        .unwrap_or_else(|| panic!("no kamailio dispatcher module: scripts/test installs kamailio"))
        .to_string()
}

/// Kamailio in the foreground (`-DD -E`) in its own process group, ended
/// (the group: it forks its workers) when dropped.
struct Kamailio {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    fn start(nodes: &[&Siptrack]) -> Kamailio {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let list = dir.path().join("dispatcher.list");
        let lines: String = nodes
            .iter()
            .map(|n| format!("1 sip:{}\n", n.sip_addr()))
            .collect();
        std::fs::write(&list, lines).expect("dispatcher.list");
        let cfg = include_str!("../config/kamailio-dispatcher.cfg")
            .replace("@LISTEN@", &format!("udp:{addr}"))
            .replace("@MODULES@", &kamailio_modules())
            .replace("@LIST@", &list.display().to_string());
        let cfg_path = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg_path, cfg).expect("kamailio.cfg");
        let log = std::fs::File::create(dir.path().join("kamailio.log")).expect("log");
        let child = Command::new("kamailio")
            .arg("-f")
            .arg(&cfg_path)
            .args(["-DD", "-E", "-m", "64", "-M", "8", "-w"])
            .arg(dir.path())
            .arg("-Y")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("kamailio (scripts/test installs it)");
        let k = Kamailio {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while options_ping(addr, Duration::from_millis(300)).is_none() {
            assert!(
                Instant::now() < deadline,
                "kamailio did not answer:\n{}",
                k.log()
            );
        }
        k
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // Its own process group: the main process and its workers.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// The called PBX: answers every INVITE (180, 200 with its Contact and
/// the Record-Route) and every BYE (200), each response to where the
/// request came from — the node that relayed it, as RFC 3261 18.2.2 has
/// it through the top Via (SIPp's UAS answers the address a call began
/// with, a node that may be dead by the BYE). Notes, per call, which node
/// relayed its INVITE and which its BYE.
struct Callee {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<CalleeLog>,
}

/// What the callee saw: Call-ID → the address that relayed the INVITE it
/// answered, and Call-ID → the address that relayed its BYE.
#[derive(Default)]
struct CalleeLog {
    answered: BTreeMap<String, SocketAddr>,
    ended: BTreeMap<String, SocketAddr>,
}

impl CalleeLog {
    /// (calls answered, calls ended by a BYE).
    fn counts(&self) -> (usize, usize) {
        (self.answered.len(), self.ended.len())
    }
}

/// The callee's socket, bound on a free port at once: the port goes into
/// the nodes' config before the callee starts, and nothing else can take
/// it meanwhile (CI of 991ca2e found a port `free_port` gave taken by the
/// time the callee bound it).
fn callee_socket() -> (UdpSocket, u16) {
    for _ in 0..50 {
        let port = free_port();
        if let Ok(sock) = UdpSocket::bind(("127.0.0.1", port)) {
            return (sock, port);
        }
    }
    panic!("no free UDP port for the callee");
}

impl Callee {
    fn start(sock: UdpSocket) -> Callee {
        let port = sock.local_addr().map(|a| a.port()).unwrap_or_default();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut log = CalleeLog::default();
            let mut buf = vec![0u8; 65_536];
            let limit = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < limit {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let call_id = header(&req, "Call-ID").unwrap_or_default().to_string();
                let tag = format!(
                    "pbx{}",
                    call_id.len() * 31 + call_id.bytes().map(usize::from).sum::<usize>()
                );
                let contact = format!("Contact: <sip:pbx@127.0.0.1:{port}>\r\n");
                let replies = if req.starts_with("INVITE ") {
                    log.answered.entry(call_id).or_insert(from);
                    vec![
                        respond(&req, "180 Ringing", &tag, ""),
                        respond(&req, "200 OK", &tag, &contact),
                    ]
                } else if req.starts_with("BYE ") {
                    log.ended.entry(call_id).or_insert(from);
                    vec![respond(&req, "200 OK", &tag, "")]
                } else {
                    Vec::new()
                };
                for r in replies {
                    let _ = sock.send_to(r.as_bytes(), from);
                }
            }
            log
        });
        Callee { stop, thread }
    }

    /// (calls answered, calls ended by a BYE).
    fn stop(self) -> (usize, usize) {
        self.stop_log().counts()
    }

    fn stop_log(self) -> CalleeLog {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("callee thread")
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A response to `req`: its Vias, Record-Routes, From, To (with `tag`
/// unless it has one), Call-ID and CSeq.
fn respond(req: &str, status: &str, tag: &str, extra: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for line in req
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .split("\r\n")
        .skip(1)
    {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if ["via", "record-route", "from", "call-id", "cseq"].contains(&name.as_str()) {
            out.push_str(line);
            out.push_str("\r\n");
        } else if name == "to" {
            out.push_str(line);
            if !line.contains("tag=") {
                out.push_str(&format!(";tag={tag}"));
            }
            out.push_str("\r\n");
        }
    }
    out.push_str(extra);
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// Issue 14 step 3: calls answered on a node that then dies (kill -9) are
/// ended by their BYE through another node: Kamailio sends the BYE on to
/// another node when the dead one does not answer, that node finds the
/// dialog in PostgreSQL, relays the BYE to the callee, and records the
/// call once with the time talked and the caller as the side that hung up.
/// `calls` calls of `talk_ms` at 10 a second from SIPp through `to`.
fn talking_calls(to: SocketAddr, calls: u32, talk_ms: u64) -> common::SippProcess {
    Sipp::uac("uac_talk.xml", to)
        .calls(calls)
        .rate(10)
        .pause_ms(talk_ms)
        .time_limit(Duration::from_secs(60))
        .spawn()
}

/// Every one of `calls` calls ended: SIPp had each BYE answered, and the
/// callee answered each call and got its BYE.
fn every_call_ended(uac: common::SippProcess, callee: Callee, calls: u32, kamailio: &Kamailio) {
    let uac = uac.wait_at_most(Duration::from_secs(50));
    let (answered, byes) = callee.stop();
    assert_eq!(
        (uac.successful(), uac.failed()),
        (u64::from(calls), 0),
        "every BYE answered:\n{}\n{}",
        uac.summary(),
        kamailio.log()
    );
    assert_eq!((answered, byes), (calls as usize, calls as usize));
}

#[test]
fn calls_of_a_dead_node_are_ended_by_their_bye_through_another_node() {
    let url = common::pg::database();
    let (callee_sock, uas_port) = callee_socket();
    let text = node_config(uas_port, &url);
    let mut nodes = [
        Siptrack::start(&text),
        Siptrack::start(&text),
        Siptrack::start(&text),
    ];
    let kamailio = Kamailio::start(&nodes.iter().collect::<Vec<_>>());
    const CALLS: u32 = 30;
    const TALK_MS: u64 = 5_000;
    let callee = Callee::start(callee_sock);
    let uac = talking_calls(kamailio.addr, CALLS, TALK_MS);
    // Every call is set up (3 s at 10 per second) and talking; none has
    // hung up yet.
    std::thread::sleep(Duration::from_millis(3_600));
    nodes[0].kill9();
    every_call_ended(uac, callee, CALLS, &kamailio);

    let calls = nodes[1].wait_for("calls", CALLS as usize, TOKEN);
    let ids: BTreeSet<&str> = calls.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids.len(), CALLS as usize, "each call recorded once");
    let talk = TALK_MS / 1000;
    for c in &calls {
        assert_eq!(c["status"], "answered", "{c}");
        assert_eq!(c["hangup"], "caller", "{c}");
        // The pause, plus up to Kamailio's 1 s wait for the dead node
        // and a second of rounding and load.
        let d = c["duration"].as_u64().unwrap_or(0);
        assert!((talk..=talk + 2).contains(&d), "duration {d}: {c}");
    }
    let taken: usize = nodes[1..]
        .iter()
        .map(|n| {
            n.log()
                .matches("taking over a call another node set up")
                .count()
        })
        .sum();
    // Round robin: about a third of the calls were on the dead node.
    assert!(
        (CALLS as usize / 3 - 3..=CALLS as usize / 3 + 3).contains(&taken),
        "{taken} calls taken over"
    );
    // Their records say where their recording is, not "recording
    // disabled" (trial, 2026-12-03).
    let adopted: BTreeSet<String> = nodes[1..]
        .iter()
        .flat_map(|n| taken_over(&n.log()))
        .collect();
    let adopted_calls: Vec<_> = calls
        .iter()
        .filter(|c| c["id"].as_str().is_some_and(|id| adopted.contains(id)))
        .collect();
    assert_eq!(adopted_calls.len(), taken, "{adopted:?}");
    for c in adopted_calls {
        assert_eq!(
            c["recording_reason"],
            "taken over from the node that set the call up: its media and recording stayed there",
            "{c}"
        );
    }
}

/// A node killed and started again at once under its name records its
/// live calls `interrupted` at its start, and their BYEs (through the
/// other node) still reach the PBX: the answered calls' dialogs stay for
/// them (trial, 2026-12-01: a restart half a second after the kill
/// deleted them, every such BYE got 481 and the PBX's legs stayed up).
#[test]
fn a_node_started_again_at_once_after_a_crash_still_ends_its_calls_by_their_bye() {
    let url = common::pg::database();
    let (callee_sock, uas_port) = callee_socket();
    let text = node_config(uas_port, &url);
    let mut nodes = [Siptrack::start(&text), Siptrack::start(&text)];
    let dead_name = format!("node-{}", nodes[0].sip_port);
    let kamailio = Kamailio::start(&nodes.iter().collect::<Vec<_>>());
    const CALLS: u32 = 10;
    const TALK_MS: u64 = 6_000;
    let callee = Callee::start(callee_sock);
    let uac = talking_calls(kamailio.addr, CALLS, TALK_MS);
    // Every call is set up (1 s at 10 per second) and talking.
    std::thread::sleep(Duration::from_millis(1_600));
    nodes[0].kill9();
    let again = Siptrack::start(&text.replace(
        "node_name = \"node-{SIP_PORT}\"",
        &format!("node_name = \"{dead_name}\""),
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !again
        .log()
        .contains("calls cut short by an earlier crash recorded as interrupted")
    {
        assert!(
            Instant::now() < deadline,
            "the node started again recorded no interrupted call\n{}",
            again.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    every_call_ended(uac, callee, CALLS, &kamailio);

    // Each call recorded once: the dead node's as interrupted when it
    // started again (their BYEs came after), the other node's as hung up.
    let calls = nodes[1].wait_for("calls", CALLS as usize, TOKEN);
    let ids: BTreeSet<&str> = calls.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids.len(), CALLS as usize, "each call recorded once");
    let interrupted: BTreeSet<String> = calls
        .iter()
        .filter(|c| c["hangup"] == "interrupted")
        .filter_map(|c| c["id"].as_str().map(String::from))
        .collect();
    assert!(
        !interrupted.is_empty(),
        "no call of the dead node: {calls:?}"
    );
    let taken: BTreeSet<String> = taken_over(&nodes[1].log()).into_iter().collect();
    assert_eq!(
        taken, interrupted,
        "the BYEs of the interrupted calls went through"
    );
}

/// A PBX that hangs up: answers every INVITE as [`Callee`] does, and
/// `talk` later sends the call's BYE (RFC 3261 12.2.1.1: the INVITE's
/// Record-Routes as its Route set, to the caller's Contact) through
/// `outbound` — the dispatcher, as a PBX that reaches the nodes through
/// it — repeating it every 500 ms (at most 16 times) until a 200 comes.
/// Returns the Call-IDs whose BYE got its 200.
struct HangingUpPbx {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<BTreeSet<String>>,
}

impl HangingUpPbx {
    fn start(sock: UdpSocket, outbound: SocketAddr, talk: Duration) -> HangingUpPbx {
        let port = sock.local_addr().expect("PBX address").port();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // Call-ID → (next send, sends so far, the BYE).
            let mut byes: BTreeMap<String, (Instant, u32, String)> = BTreeMap::new();
            let mut ended = BTreeSet::new();
            let mut buf = vec![0u8; 65_536];
            let limit = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < limit {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let call_id = header(&msg, "Call-ID").unwrap_or_default().to_string();
                    let tag = format!("pbx{}", call_id.bytes().map(usize::from).sum::<usize>());
                    if msg.starts_with("INVITE ") {
                        let contact = format!("Contact: <sip:pbx@127.0.0.1:{port}>\r\n");
                        for r in [
                            respond(&msg, "180 Ringing", &tag, ""),
                            respond(&msg, "200 OK", &tag, &contact),
                        ] {
                            let _ = sock.send_to(r.as_bytes(), from);
                        }
                        byes.entry(call_id).or_insert_with(|| {
                            (Instant::now() + talk, 0, pbx_bye(&msg, &tag, port))
                        });
                    } else if msg.starts_with("SIP/2.0 200")
                        && header(&msg, "CSeq").is_some_and(|c| c.ends_with("BYE"))
                    {
                        byes.remove(&call_id);
                        ended.insert(call_id);
                    }
                }
                let now = Instant::now();
                for (next, sent, bye) in byes.values_mut() {
                    if *next <= now && *sent < 16 {
                        let _ = sock.send_to(bye.as_bytes(), outbound);
                        *sent += 1;
                        *next = now + Duration::from_millis(500);
                    }
                }
            }
            ended
        });
        HangingUpPbx { stop, thread }
    }

    fn stop(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("PBX thread")
    }
}

/// The callee's BYE for an INVITE it answered with `tag`.
fn pbx_bye(invite: &str, tag: &str, port: u16) -> String {
    let head = invite.split("\r\n\r\n").next().unwrap_or_default();
    let lines: Vec<&str> = head.split("\r\n").collect();
    let value = |name: &str| header(head, name).unwrap_or_default();
    let target = value("Contact")
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or_default()
        .to_string();
    let routes: String = lines
        .iter()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("Record-Route")
                .then(|| format!("Route: {}\r\n", v.trim()))
        })
        .collect();
    let call_id = value("Call-ID");
    format!(
        "BYE {target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKbye{}\r\n\
         {routes}\
         From: {};tag={tag}\r\n\
         To: {}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 BYE\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        call_id.bytes().map(u32::from).sum::<u32>(),
        value("To"),
        value("From"),
    )
}

/// The PBX side of issue 14's takeover: a PBX that reaches the nodes
/// through the dispatcher hangs up calls whose node was killed while they
/// talked: its BYE goes to the dead node (its Route set names it), then
/// on to another node, which takes the call over, relays the BYE to the
/// caller and records the call once, hung up by the callee, with the time
/// talked.
#[test]
fn the_pbxs_bye_of_a_dead_nodes_call_ends_it_through_another_node() {
    const CALLS: u32 = 30;
    const TALK_MS: u64 = 4_000;
    // Bound before the nodes pick their ports.
    let pbx_sock = UdpSocket::bind(("127.0.0.1", 0)).expect("PBX port");
    let uas_port = pbx_sock.local_addr().expect("PBX address").port();
    let text = node_config(uas_port, &common::pg::database());
    let mut nodes = [
        Siptrack::start(&text),
        Siptrack::start(&text),
        Siptrack::start(&text),
    ];
    let kamailio = Kamailio::start(&nodes.iter().collect::<Vec<_>>());
    let pbx = HangingUpPbx::start(pbx_sock, kamailio.addr, Duration::from_millis(TALK_MS));
    let uac = Sipp::uac("uac_callee_bye.xml", kamailio.addr)
        .calls(CALLS)
        .rate(10)
        .time_limit(Duration::from_secs(60))
        .spawn();
    // Every call answered (3 s at 10 per second), none ended yet.
    std::thread::sleep(Duration::from_millis(3_500));
    nodes[0].kill9();
    let uac = uac.wait_at_most(Duration::from_secs(50));
    let ended = pbx.stop();
    assert_eq!(
        (uac.successful(), uac.failed()),
        (u64::from(CALLS), 0),
        "every caller got its BYE:\n{}\n{}",
        uac.summary(),
        kamailio.log()
    );
    assert_eq!(ended.len(), CALLS as usize, "every BYE answered 200");
    let calls = nodes[1].wait_for("calls", CALLS as usize, TOKEN);
    let ids: BTreeSet<&str> = calls.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids.len(), CALLS as usize, "each call recorded once");
    let talk = TALK_MS / 1000;
    for c in &calls {
        assert_eq!(
            (&c["status"], &c["hangup"]),
            (&"answered".into(), &"callee".into()),
            "{c}"
        );
        // The PBX's wait, give or take a second (the dead node's BYEs
        // wait up to Kamailio's 1 s before going elsewhere).
        let d = c["duration"].as_u64().unwrap_or(0);
        assert!((talk - 1..=talk + 1).contains(&d), "duration {d}: {c}");
    }
    let taken: BTreeSet<String> = nodes[1..]
        .iter()
        .flat_map(|n| taken_over(&n.log()))
        .collect();
    // Round robin: a third of the calls were on the dead node.
    assert_eq!(taken.len(), CALLS as usize / 3, "{taken:?}");
}

/// What must come out the same whichever node decided: leads as (phone,
/// outcome with ids blanked), deals by phone, calls as (caller, status,
/// hangup), each sorted.
fn decisions(node: &Siptrack) -> (Vec<String>, Vec<String>, Vec<String>) {
    // Each number as one '#': ids are handed out in whatever order the
    // nodes decide (deal 9 on one database may be deal 10 on the other).
    let blank = |v: &serde_json::Value| {
        let mut out = String::new();
        for c in v.as_str().unwrap_or_default().chars() {
            if !c.is_ascii_digit() {
                out.push(c);
            } else if !out.ends_with('#') {
                out.push('#');
            }
        }
        out
    };
    let mut leads: Vec<String> = node
        .list("leads", TOKEN)
        .iter()
        .map(|l| format!("{} {}", l["phone"], blank(&l["outcome"])))
        .collect();
    let mut deals: Vec<String> = node
        .list("deals", TOKEN)
        .iter()
        .map(|d| d["phone"].to_string())
        .collect();
    let mut calls: Vec<String> = node
        .list("calls", TOKEN)
        .iter()
        .map(|c| format!("{} {} {}", c["caller"], c["status"], c["hangup"]))
        .collect();
    leads.sort();
    deals.sort();
    calls.sort();
    (leads, deals, calls)
}

/// `calls` calls from 100 callers (one line each of an -inf file, in
/// turn) to `to` at 100 per second; every one answered and ended.
fn calls_from_100_callers(to: SocketAddr, calls: u32, dir: &Path) {
    let uac = callers_uac(to, calls, dir, 0).run();
    assert_eq!(
        (uac.successful(), uac.failed()),
        (u64::from(calls), 0),
        "{}",
        uac.summary()
    );
}

fn callers_uac(to: SocketAddr, calls: u32, dir: &Path, talk_ms: u64) -> Sipp {
    let inf = dir.join("callers.csv");
    let mut text = String::from("SEQUENTIAL\n");
    for i in 0..calls {
        text.push_str(&format!("7916555{:04};\n", i % 100));
    }
    std::fs::write(&inf, text).expect("callers file");
    Sipp::uac("uac_callers.xml", to)
        .calls(calls)
        .rate(100)
        .pause_ms(talk_ms)
        .arg("-inf")
        .arg(inf.display().to_string())
        .arg("-s")
        .arg("74951110001")
        .time_limit(Duration::from_secs(60))
}

/// SPEC §8 through a dispatcher: the same calls through three nodes as
/// through one node on its own database give the same lead log, deals
/// and call records; 200 form leads of one client spread over the three
/// nodes make one deal; visits through all three never share a number.
#[test]
fn three_nodes_behind_the_dispatcher_decide_as_one_node() {
    const CALLS: u32 = 1_000;
    let scratch = tempfile::tempdir().expect("temp dir");
    let (callee_sock, uas_port) = callee_socket();
    let callee = Callee::start(callee_sock);
    let text = node_config(uas_port, &common::pg::database());
    let nodes = [
        Siptrack::start(&text),
        Siptrack::start(&text),
        Siptrack::start(&text),
    ];
    let kamailio = Kamailio::start(&nodes.iter().collect::<Vec<_>>());
    calls_from_100_callers(kamailio.addr, CALLS, scratch.path());
    let alone = Siptrack::start(&node_config(uas_port, &common::pg::database()));
    calls_from_100_callers(alone.sip_addr(), CALLS, scratch.path());
    nodes[0].wait_for("calls", CALLS as usize, TOKEN);
    alone.wait_for("calls", CALLS as usize, TOKEN);
    let (three, one) = (decisions(&nodes[2]), decisions(&alone));
    assert_eq!(three.1.len(), 100, "one deal per caller: {:?}", three.1);
    assert_eq!(three.0.len(), CALLS as usize);
    assert_eq!(three, one, "three nodes decide as one");
    let (answered, ended) = callee.stop();
    assert_eq!((answered, ended), (2 * CALLS as usize, 2 * CALLS as usize));

    // 200 leads of one client at once, spread over the three nodes.
    let apis: Vec<SocketAddr> = nodes.iter().map(|n| n.api()).collect();
    let posters: Vec<_> = (0..8)
        .map(|t| {
            let apis = apis.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let body = r#"{"title": "Order", "name": "Olga", "phone": "+79169990001", "form": "order"}"#;
                    let (status, answer) = common::checks::post_json(
                        apis[(t * 25 + i) % 3],
                        "/api/v1/leads",
                        Some(TOKEN),
                        body,
                    );
                    assert_eq!(status, 200, "{answer}");
                }
            })
        })
        .collect();
    for p in posters {
        p.join().expect("poster");
    }
    let deals = nodes[1].list("deals", TOKEN);
    let of_client = deals.iter().filter(|d| d["phone"] == "79169990001").count();
    assert_eq!(of_client, 1, "one deal for 200 leads of one client");

    // Five visits at once through the three nodes: five numbers.
    let visitors: Vec<_> = (0..5)
        .map(|i| {
            let api = apis[i % 3];
            std::thread::spawn(move || {
                let body = format!(r#"{{"visit_id": "n{i}", "source": "ads"}}"#);
                let (status, answer) =
                    common::checks::post_json(api, "/api/v1/visits", Some(TOKEN), &body);
                assert_eq!(status, 200, "{answer}");
                let v: serde_json::Value = serde_json::from_str(&answer).expect("json");
                v["number"].as_str().expect("a number").to_string()
            })
        })
        .collect();
    let numbers: BTreeSet<String> = visitors
        .into_iter()
        .map(|v| v.join().expect("visitor"))
        .collect();
    assert_eq!(numbers.len(), 5, "a number held by two visits: {numbers:?}");

    // Each node names itself in /metrics.
    for n in &nodes {
        let (_, body) = common::checks::get(n.api(), "/metrics", None);
        let line = format!("siptrack_node_info{{node=\"node-{}\"}} 1", n.sip_port);
        assert!(body.lines().any(|l| l == line), "{line} in {body}");
    }
}

/// Issue 14, a node's death under load: kill -9 of one of three nodes
/// while SIPp sends 100 calls/s through Kamailio and the CRM refuses
/// every request (503). Only calls still being set up on the dead node
/// may fail; every call it had answered is ended by its BYE through
/// another node and recorded once with the time talked; once the CRM is
/// back and the dead node's claims have run out, every CRM request is
/// applied exactly once per Idempotency-Key, each deal's in order.
#[test]
fn a_node_killed_mid_run_at_100_cps_loses_no_answered_call_and_no_crm_request() {
    const CALLS: u32 = 400;
    const RATE: u32 = 100;
    const TALK_MS: u64 = 2_000;
    // Past the middle of the 4 s of sending: the dead node's first calls
    // (answered in the first half second) have ended there, the others
    // are being set up or talking when it dies.
    const KILL_AFTER: Duration = Duration::from_millis(2_500);
    const FORM_LEADS: usize = 30;
    let scratch = tempfile::tempdir().expect("temp dir");
    // Slow to refuse, so that requests are in flight (claimed) on every
    // node most of the time, the dead one included.
    let crm = Crm::start(
        0,
        CRM_SECRET,
        Mode::SlowStatus(503, Duration::from_millis(600)),
    );
    let (callee_sock, uas_port) = callee_socket();
    let callee = Callee::start(callee_sock);
    let crm_text = format!(
        "[crm]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{CRM_SECRET}\"\ntimeout_ms = 1000\n\n\
         [crm.retry]\ninitial_ms = 100\nmax_ms = 400\n",
        crm.url("/hook")
    );
    let url = common::pg::database();
    let text = node_config_with(uas_port, &url, &crm_text);
    let mut nodes = [
        Siptrack::start(&text),
        Siptrack::start(&text),
        Siptrack::start(&text),
    ];
    let dead_name = format!("node-{}", nodes[0].sip_port);
    let dead_addr = nodes[0].sip_addr();
    let kamailio = Kamailio::start(&nodes.iter().collect::<Vec<_>>());
    let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("the test's database");

    // Deals of some of the callers, made on the node that will die: their
    // deal.create requests wait for the CRM, partly claimed by that node;
    // the calls' comments to the same deals come later from every node.
    for i in 0..FORM_LEADS {
        let body = format!(
            r#"{{"title": "Order", "name": "Client {i}", "phone": "+7916555{i:04}", "form": "order"}}"#
        );
        let (status, answer) =
            common::checks::post_json(nodes[0].api(), "/api/v1/leads", Some(TOKEN), &body);
        assert_eq!(status, 200, "{answer}");
    }

    let uac = callers_uac(kamailio.addr, CALLS, scratch.path(), TALK_MS)
        .rate(RATE)
        .spawn();
    let sending = Instant::now();
    std::thread::sleep(KILL_AFTER);
    // The kill lands when the dead node holds claims on CRM requests, so
    // that their delivery by another node, after the lease, is part of
    // every run. The other nodes may have claimed every due request (they
    // share them), so it is given a fresh lead of its own every 100 ms
    // (its deal.create it claims at once) until it holds one, at most 1 s,
    // still while SIPp sends.
    let until = Instant::now() + Duration::from_millis(1_000);
    let mut fresh = 0;
    while claimed_by(&mut db, &dead_name).is_empty() && Instant::now() < until {
        let body = format!(
            r#"{{"title": "Order", "name": "Late {fresh}", "phone": "+7916777{fresh:04}", "form": "order"}}"#
        );
        fresh += 1;
        let (status, answer) =
            common::checks::post_json(nodes[0].api(), "/api/v1/leads", Some(TOKEN), &body);
        assert_eq!(status, 200, "{answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
    nodes[0].kill9();
    let killed_at = sending.elapsed();
    let stranded = claimed_by(&mut db, &dead_name);
    assert!(
        !stranded.is_empty(),
        "the dead node held no CRM request when it died"
    );
    // The CRM recovers after the kill, while the calls still run.
    std::thread::sleep(Duration::from_secs(2));
    crm.set_mode(Mode::Ok);

    let uac = uac.wait_at_most(Duration::from_secs(60));
    let seen = callee.stop_log();
    // A call fails only when its INVITE transaction was on the dead node
    // at the kill: it had its 100 Trying from there, so Kamailio waits for
    // a final answer that never comes (408 after fr_inv_timer, 30 s). The
    // dead node got every third new call, 100/3 ≈ 34 a second, and a call
    // is in setup there from its INVITE to the callee's 200 leaving it:
    // milliseconds with this callee; 250 ms on a loaded machine would be
    // ⌈34 × 0.25⌉ = 9 calls. INVITEs sent to it after the kill get no
    // answer at all and go to another node after 1 s (fr_timer): they
    // succeed.
    let failed = uac.failed();
    assert_eq!(
        uac.successful() + failed,
        u64::from(CALLS),
        "{}",
        uac.summary()
    );
    assert!(
        failed <= 9,
        "{failed} calls failed, more than the dead node could have had in setup\n{}\n{}",
        uac.summary(),
        kamailio.log()
    );
    // Every call the callee answered and the caller never heard answered
    // is one of those.
    let unended = seen.answered.len() - seen.ended.len();
    assert!(
        unended as u64 <= failed,
        "{unended} answered calls never ended, {failed} failed"
    );
    assert_eq!(seen.ended.len() as u64, uac.successful());

    // The dead node's answered calls still talking when it died: their
    // BYEs came through the others.
    let of_dead: BTreeSet<&str> = seen
        .answered
        .iter()
        .filter(|(id, from)| {
            **from == dead_addr && seen.ended.get(*id).is_some_and(|by| *by != dead_addr)
        })
        .map(|(id, _)| id.as_str())
        .collect();
    assert!(
        of_dead.len() >= 20,
        "only {} calls of the dead node ended elsewhere",
        of_dead.len()
    );
    let taken: BTreeSet<String> = nodes[1..]
        .iter()
        .flat_map(|n| taken_over(&n.log()))
        .collect();
    // Every call of the dead node that ended elsewhere was taken over;
    // and only its answered calls were. One more is possible: a BYE the
    // dying node relayed in its last moment (the callee saw it come from
    // there) whose 200 it never relayed back, so the caller's
    // retransmission went to another node, which took the call over and
    // relayed it again (CI, 2026-12-02, on a loaded machine).
    let taken: BTreeSet<&str> = taken.iter().map(String::as_str).collect();
    let answered_by_dead: BTreeSet<&str> = seen
        .answered
        .iter()
        .filter(|(_, from)| **from == dead_addr)
        .map(|(id, _)| id.as_str())
        .collect();
    assert!(
        of_dead.is_subset(&taken),
        "ended elsewhere but not taken over: {:?}",
        of_dead.difference(&taken).collect::<Vec<_>>()
    );
    assert!(
        taken.is_subset(&answered_by_dead),
        "taken over but not the dead node's answered calls: {:?}",
        taken.difference(&answered_by_dead).collect::<Vec<_>>()
    );

    // Kamailio sent each of those BYEs on from the dead node, and never
    // back to it: round robin would land on it one time in three before
    // the probes noticed, another second in the call's duration.
    let log = kamailio.log();
    let failovers: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("did not answer, on to"))
        .collect();
    let dead = format!("127.0.0.1:{}", dead_addr.port());
    assert!(
        failovers.iter().filter(|l| l.contains(&dead)).count() >= of_dead.len(),
        "the dead node named as the one that failed: {failovers:?}"
    );
    let back: Vec<_> = failovers
        .iter()
        .filter(|l| l.split("on to").nth(1).is_some_and(|to| to.contains(&dead)))
        .collect();
    assert!(back.is_empty(), "sent back to the dead node: {back:?}");

    // Every ended call recorded once, answered, hung up by the caller,
    // with the time talked: SIPp's pause, give or take a second (the
    // dead node's BYEs wait up to Kamailio's 1 s fr_timer before going
    // elsewhere).
    let deadline = Instant::now() + Duration::from_secs(10);
    let calls = loop {
        let calls = nodes[1].list("calls", TOKEN);
        if calls.len() >= seen.ended.len() || Instant::now() > deadline {
            break calls;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let ids: Vec<&str> = calls.iter().filter_map(|c| c["id"].as_str()).collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "a call recorded twice");
    let ended: BTreeSet<&str> = seen.ended.keys().map(String::as_str).collect();
    assert!(
        distinct.is_subset(&ended),
        "a call recorded that never ended"
    );
    // A call hung up through the dying node in its last milliseconds is
    // not recorded yet: its record was in that node's queue for the
    // database (it is recorded `interrupted` when the node starts again
    // under its name). At 34 calls ending there a second, a queue of up
    // to 90 ms holds at most 3.
    let unrecorded: Vec<&str> = ended.difference(&distinct).copied().collect();
    assert!(
        unrecorded.len() <= 3 && unrecorded.iter().all(|id| seen.ended[*id] == dead_addr),
        "ended and not recorded: {:?}",
        unrecorded
            .iter()
            .map(|id| (id, seen.answered.get(*id), seen.ended[*id]))
            .collect::<Vec<_>>()
    );
    let talk = TALK_MS / 1000;
    let mut durations: BTreeMap<(bool, u64), usize> = BTreeMap::new();
    for c in &calls {
        assert_eq!(
            (&c["status"], &c["hangup"]),
            (&"answered".into(), &"caller".into()),
            "{c}"
        );
        let d = c["duration"].as_u64().unwrap_or(0);
        assert!((talk - 1..=talk + 1).contains(&d), "duration {d}: {c}");
        let taken_over = c["id"].as_str().is_some_and(|id| of_dead.contains(id));
        *durations.entry((taken_over, d)).or_default() += 1;
    }

    // The dead node's claims run out (its lease: 4 rounds of 6 requests
    // of 1 s, plus 30 s) and another node sends them.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending = outbox(&nodes[1], "pending").len() + outbox(&nodes[1], "failed").len();
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} CRM requests still waiting"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let done = outbox(&nodes[1], "done");
    // A moment for a second send to show, were there one.
    std::thread::sleep(Duration::from_millis(1_000));
    let s = crm.lock();
    let mut accepted: BTreeMap<&str, usize> = BTreeMap::new();
    for r in s.requests.iter().filter(|r| r.answered == 200) {
        *accepted.entry(r.key.as_str()).or_default() += 1;
    }
    let keys: BTreeSet<&str> = done
        .iter()
        .filter_map(|o| o["idempotency_key"].as_str())
        .collect();
    assert_eq!(
        accepted.keys().copied().collect::<BTreeSet<_>>(),
        keys,
        "every outbox row delivered"
    );
    let twice: Vec<_> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "applied twice: {twice:?}");
    for key in &stranded {
        assert!(keys.contains(key.as_str()), "{key} of the dead node lost");
    }
    // Per deal, the CRM applied the requests in the order they were queued.
    let position: BTreeMap<&str, usize> = s
        .applied_order
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let mut by_deal: BTreeMap<i64, Vec<(i64, &str)>> = BTreeMap::new();
    for o in &done {
        if let (Some(deal), Some(id), Some(key)) = (
            o["deal_id"].as_i64(),
            o["id"].as_i64(),
            o["idempotency_key"].as_str(),
        ) {
            by_deal.entry(deal).or_default().push((id, key));
        }
    }
    let mut several = 0;
    for (deal, mut rows) in by_deal {
        rows.sort();
        several += usize::from(rows.len() > 1);
        let order: Vec<usize> = rows.iter().map(|(_, k)| position[k]).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "deal {deal}: queued {rows:?}, applied at {order:?}"
        );
    }
    assert!(
        several >= FORM_LEADS,
        "{several} deals with several requests"
    );
    assert!(s.orphans.is_empty(), "ahead of their deal: {:?}", s.orphans);
    assert!(
        s.requests.iter().any(|r| r.answered == 503),
        "the CRM refused first"
    );
    eprintln!(
        "kill -9 after {killed_at:?}: {} calls, {failed} failed in setup, {} taken over, \
         {} CRM requests delivered ({} stranded on the dead node); \
         {} hung up through the dying node not recorded yet; \
         (taken over, duration s) → calls: {durations:?}",
        CALLS,
        taken.len(),
        keys.len(),
        stranded.len(),
        unrecorded.len()
    );
    drop(s);

    // The dead node starts again under its name: the calls it saw begin
    // and never recorded (hung up in its last milliseconds, or in setup)
    // are recorded `interrupted`; nothing is lost, nothing twice.
    let again = Siptrack::start(&text.replace(
        "node_name = \"node-{SIP_PORT}\"",
        &format!("node_name = \"{dead_name}\""),
    ));
    assert!(
        again.log().contains(&format!("node={dead_name}")),
        "{}",
        again.log()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let calls = again.list("calls", TOKEN);
        let ids: BTreeSet<String> = calls
            .iter()
            .filter_map(|c| c["id"].as_str().map(String::from))
            .collect();
        if unrecorded.iter().all(|id| ids.contains(*id)) || Instant::now() > deadline {
            break calls;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let ids: Vec<&str> = after.iter().filter_map(|c| c["id"].as_str()).collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "a call recorded twice");
    assert!(ended.is_subset(&distinct), "ended calls still not recorded");
    assert!(distinct.len() as u64 <= u64::from(CALLS));
    for c in after.iter().filter(|c| {
        c["id"]
            .as_str()
            .is_some_and(|id| !ended.contains(id) || unrecorded.contains(&id))
    }) {
        // SPEC L-1: the hangup says why; the status is what the database
        // knew of the call (answered, or never put through: failed).
        assert_eq!(c["hangup"], "interrupted", "{c}");
        assert!(c["status"] == "answered" || c["status"] == "failed", "{c}");
    }
}

/// Idempotency-Keys of the CRM requests `node` holds a claim on.
fn claimed_by(db: &mut postgres::Client, node: &str) -> Vec<String> {
    db.query(
        "SELECT idempotency_key FROM outbox WHERE claimed_by = $1 AND state = 'pending'",
        &[&node],
    )
    .expect("outbox claims")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The Call-IDs of a node's log lines "taking over a call another node
/// set up".
fn taken_over(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("taking over a call another node set up"))
        .filter_map(|l| {
            let rest = &l[l.find("call_id=")? + "call_id=".len()..];
            Some(
                rest.split_whitespace()
                    .next()?
                    .trim_matches('"')
                    .to_string(),
            )
        })
        .collect()
}

fn outbox(node: &Siptrack, state: &str) -> Vec<serde_json::Value> {
    let (status, body) = common::checks::get(
        node.api(),
        &format!("/api/v1/outbox?state={state}&limit=1000"),
        Some(TOKEN),
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    v["outbox"].as_array().cloned().unwrap_or_default()
}

fn metric(node: &Siptrack, name: &str) -> u64 {
    let (_, body) = common::checks::get(node.api(), "/metrics", None);
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics: {body}"))
}

/// Polls `/healthz` of `node` until it answers `status` (at most 30 s).
fn wait_health(node: &Siptrack, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (got, body) = common::checks::get(node.api(), "/healthz", None);
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz {got}, not {status}: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// PostgreSQL frozen rather than stopped (SIGSTOP: connections stay open
/// and nothing answers, as with a frozen host or a network that drops
/// everything). statement_timeout is the server's, so it never fires:
/// the node must give up on its own, tell /healthz and put its calls in
/// the journal, and a crash then loses none of them (trial, 2026-12-01:
/// 40 of 40 calls lost, /healthz ok throughout).
#[test]
fn a_frozen_postgresql_sends_calls_to_the_journal_and_a_crash_loses_none() {
    let cluster = common::pg::Cluster::start();
    let scratch = tempfile::tempdir().expect("temp dir");
    let (callee_sock, uas_port) = callee_socket();
    let callee = Callee::start(callee_sock);
    let text = node_config(uas_port, &cluster.database()).replace(
        "node_name = ",
        &format!(
            "journal = \"{}/calls.journal\"\nnode_name = ",
            scratch.path().display()
        ),
    );
    let mut node = Siptrack::start(&text);
    calls_from_100_callers(node.sip_addr(), 10, scratch.path());
    node.wait_for("calls", 10, TOKEN);

    let frozen = cluster.freeze();
    let uac = callers_uac(node.sip_addr(), 20, scratch.path(), 0)
        .rate(10)
        .spawn();
    let uac = uac.wait_at_most(Duration::from_secs(30));
    assert_eq!(
        (uac.successful(), uac.failed()),
        (20, 0),
        "calls flow while the database hangs: {}",
        uac.summary()
    );
    let why = wait_health(&node, 503);
    assert!(why.contains("storage failing"), "{why}");
    // Each call's start, answer and end, in the journal.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&node, "siptrack_calls_journaled") < 3 * 20 {
        assert!(
            Instant::now() < deadline,
            "not in the journal: {}",
            metric(&node, "siptrack_calls_journaled")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    node.kill9();
    drop(frozen);

    let node = Siptrack::start(&text);
    let calls = node.wait_for("calls", 30, TOKEN);
    assert!(calls.iter().all(|c| c["status"] == "answered"), "{calls:?}");
    assert_eq!(node.list("leads", TOKEN).len(), 30);
    wait_health(&node, 200);
    let (answered, ended) = callee.stop();
    assert_eq!((answered, ended), (30, 30));
}

/// Numbers two nodes hand out on their own while PostgreSQL is down are
/// written when it is back, so both nodes then attribute the number's
/// calls to one visit (trial, 2026-12-01: each node kept its own visit
/// for the same number after the outage).
#[test]
fn numbers_granted_during_an_outage_agree_across_nodes_after_it() {
    let cluster = common::pg::Cluster::start();
    let (callee_sock, uas_port) = callee_socket();
    let callee = Callee::start(callee_sock);
    let text = node_config(uas_port, &cluster.database());
    let nodes = [Siptrack::start(&text), Siptrack::start(&text)];
    cluster.stop();
    let mut numbers = Vec::new();
    for (node, visit) in nodes.iter().zip(["during-a", "during-b"]) {
        let body = format!(r#"{{"visit_id": "{visit}", "source": "ads-{visit}"}}"#);
        let (status, answer) =
            common::checks::post_json(node.api(), "/api/v1/visits", Some(TOKEN), &body);
        assert_eq!(status, 200, "{answer}");
        let v: serde_json::Value = serde_json::from_str(&answer).expect("json");
        numbers.push(v["number"].as_str().expect("a number").to_string());
    }
    // Each decided alone: the same free number for both visits.
    assert_eq!(numbers[0], numbers[1], "{numbers:?}");
    cluster.restart();
    // Grants are read back every 500 ms; give the nodes a few rounds.
    std::thread::sleep(Duration::from_secs(3));
    let mut visits = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let uac = Sipp::uac("uac_tracking.xml", node.sip_addr())
            .calls(1)
            .arg("-s")
            .arg(&numbers[0])
            .arg("-key")
            .arg("caller")
            .arg(format!("8916000007{i}"))
            .time_limit(Duration::from_secs(20))
            .run();
        assert_eq!(uac.failed(), 0, "{}", uac.summary());
        let calls = node.wait_for("calls", i + 1, TOKEN);
        let call = calls
            .iter()
            .find(|c| c["caller"] == format!("7916000007{i}"))
            .unwrap_or_else(|| panic!("the call through node {i}: {calls:?}"));
        visits.push(call["visit_id"].clone());
    }
    assert!(visits[0].is_string(), "{visits:?}");
    assert_eq!(
        visits[0], visits[1],
        "one visit for the number on both nodes"
    );
    drop(callee);
}

/// Issue 14: PostgreSQL stopped for 30 s under three nodes behind the
/// dispatcher (pg_ctl stop -m fast, then start): calls keep flowing,
/// every node's /healthz and /metrics show the outage, the decisions wait
/// in each node's journal and are recorded when the database is back,
/// none lost, without a restart of any node.
#[test]
fn postgresql_stopped_for_30_seconds_under_three_nodes_loses_nothing() {
    let cluster = common::pg::Cluster::start();
    let scratch = tempfile::tempdir().expect("temp dir");
    let (callee_sock, uas_port) = callee_socket();
    let callee = Callee::start(callee_sock);
    let journal = format!(
        "journal = \"{}/journal-{{SIP_PORT}}\"\n",
        scratch.path().display()
    );
    let text = node_config(uas_port, &cluster.database())
        .replace("node_name = ", &format!("{journal}node_name = "));
    let nodes = [
        Siptrack::start(&text),
        Siptrack::start(&text),
        Siptrack::start(&text),
    ];
    let kamailio = Kamailio::start(&nodes.iter().collect::<Vec<_>>());
    calls_from_100_callers(kamailio.addr, 100, scratch.path());
    nodes[0].wait_for("calls", 100, TOKEN);

    cluster.stop();
    let started = Instant::now();
    // 30 s of calls at 10 per second while the database is down.
    let uac = callers_uac(kamailio.addr, 300, scratch.path(), 0)
        .rate(10)
        .spawn();
    for n in &nodes {
        let why = wait_health(n, 503);
        assert!(why.contains("storage failing"), "{why}");
        assert_eq!(metric(n, "siptrack_storage_up"), 0);
    }
    let uac = uac.wait_at_most(Duration::from_secs(60));
    assert_eq!(
        (uac.successful(), uac.failed()),
        (300, 0),
        "calls flow without the database: {}",
        uac.summary()
    );
    // Each call's start, answer and end, in the nodes' journals.
    let deadline = Instant::now() + Duration::from_secs(10);
    let waiting = loop {
        let waiting: u64 = nodes
            .iter()
            .map(|n| metric(n, "siptrack_calls_journaled"))
            .sum();
        if waiting >= 3 * 300 || Instant::now() > deadline {
            break waiting;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(waiting, 3 * 300, "in the journals");
    let down = started.elapsed();
    assert!(down >= Duration::from_secs(29), "down {down:?}");

    cluster.restart();
    let calls = nodes[2].wait_for("calls", 400, TOKEN);
    assert!(calls.iter().all(|c| c["status"] == "answered"), "{calls:?}");
    assert_eq!(nodes[1].list("leads", TOKEN).len(), 400);
    assert_eq!(nodes[0].list("deals", TOKEN).len(), 100);
    for n in &nodes {
        wait_health(n, 200);
        assert_eq!(metric(n, "siptrack_storage_up"), 1);
        assert_eq!(metric(n, "siptrack_calls_backlog"), 0);
    }
    let (answered, ended) = callee.stop();
    assert_eq!((answered, ended), (400, 400));
}
