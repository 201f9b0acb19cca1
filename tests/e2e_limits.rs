//! Resource limits on a public trunk (issue 12, item 2), against a real
//! siptrack: TCP connection caps per source, idle and slow-message
//! timeouts, the bound on what waits for a peer that does not read, and
//! the HTTP server's connection cap and header timeout; UDP bursts taken
//! and answered in batches, and sends the kernel refuses.
//!
//! Untrusted peers connect from 127.0.0.2 (Linux routes all of 127/8 to
//! lo); siptrack trusts only 127.0.0.1.

mod common;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::{free_port, Sipp, Siptrack};
use socket2::{Domain, Socket, Type};

const TOKEN: &str = "limits-token-7d1e";

fn config(uas_port: u16, sip_extra: &str, http_extra: &str) -> String {
    format!(
        r#"[sip]
listen = ["udp:127.0.0.1:{{SIP_PORT}}", "tcp:127.0.0.1:{{SIP_PORT}}"]
trusted_sources = ["127.0.0.1/32"]
route_secret = "e2e-limits"
{sip_extra}

[tracking]
default_destination = "sip:127.0.0.1:{uas_port}"

[shutdown]
drain_seconds = 1

[http]
listen = "127.0.0.1:{{HTTP_PORT}}"
token = "{TOKEN}"
{http_extra}
"#
    )
}

/// A TCP connection to `to` from `from` (an address on lo), with a small
/// receive buffer when `rcvbuf` is set (so a peer that does not read
/// stops taking data soon).
fn connect_from(from: [u8; 4], to: SocketAddr, rcvbuf: Option<usize>) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    if let Some(n) = rcvbuf {
        s.set_recv_buffer_size(n).expect("SO_RCVBUF");
    }
    s.bind(&SocketAddr::from((from, 0)).into())
        .expect("bind a loopback source address");
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .expect("connect");
    s.into()
}

fn tcp_addr(p: &Siptrack) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p.sip_port))
}

fn http_addr(p: &Siptrack) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p.http_port))
}

/// Whether the peer has closed `s`: EOF or reset within `wait`. Data that
/// arrives meanwhile (keep-alive answers) is read and ignored.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).expect("read timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Waits until siptrack closes `s`; how long that took, None if it did
/// not within `limit`.
fn time_to_close(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    closed_within(s, limit).then(|| t.elapsed())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn connections_over_the_per_source_cap_are_closed_and_trusted_calls_go_on() {
    let uas_port = free_port();
    let p = Siptrack::start(&config(uas_port, "tcp_max_connections_per_source = 4", ""));
    let mut conns: Vec<TcpStream> = (0..10)
        .map(|_| connect_from([127, 0, 0, 2], tcp_addr(&p), None))
        .collect();
    let open: Vec<bool> = conns
        .iter_mut()
        .map(|c| !closed_within(c, Duration::from_millis(300)))
        .collect();
    assert_eq!(
        open.iter().filter(|o| **o).count(),
        4,
        "connections from 127.0.0.2 left open: {open:?}\n{}",
        p.log()
    );
    assert!(
        open[..4].iter().all(|o| *o),
        "the first four stay: {open:?}"
    );

    // The trusted trunk is not held up by them: TCP calls from 127.0.0.1.
    let uas = Sipp::uas("uas.xml")
        .port(uas_port)
        .calls(3)
        .pause_ms(1000)
        .time_limit(Duration::from_secs(30))
        .spawn();
    let uac = Sipp::uac("uac.xml", p.sip_addr())
        .tcp()
        .calls(3)
        .rate(10)
        .time_limit(Duration::from_secs(25))
        .run();
    let uas = uas.wait_at_most(Duration::from_secs(10));
    assert_eq!(
        (uac.successful(), uac.failed()),
        (3, 0),
        "{}\n{}\n{}",
        uac.summary(),
        uas.summary(),
        p.log()
    );
    // A place freed is a place for the same source again.
    conns.truncate(3);
    std::thread::sleep(Duration::from_millis(200));
    let mut again = connect_from([127, 0, 0, 2], tcp_addr(&p), None);
    assert!(!closed_within(&mut again, Duration::from_millis(300)));
    let mut fifth = connect_from([127, 0, 0, 2], tcp_addr(&p), None);
    assert!(closed_within(&mut fifth, Duration::from_secs(2)));
    assert!(p.log().contains("sip.tcp_max_connections_per_source"));
    // Operators see it in /metrics: 6 + 1 refused, 3 + 1 open from
    // 127.0.0.2 (and the SIPp caller's, unless it has closed by now).
    let m = metrics(&p);
    assert!(
        m.contains("siptrack_tcp_refused_total{limit=\"per_source\"} 7\n"),
        "{m}"
    );
    assert!(
        m.contains("siptrack_tcp_refused_total{limit=\"total\"} 0\n"),
        "{m}"
    );
    let open = metric_value(&m, "siptrack_tcp_connections ");
    assert!((4..=5).contains(&open), "{m}");
}

fn metrics(p: &Siptrack) -> String {
    let (status, body) = common::checks::get(http_addr(p), "/metrics", None);
    assert_eq!(status, 200, "{body}");
    body
}

fn metric_value(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{prefix} not in\n{text}"))
}

#[test]
fn idle_connections_are_closed_and_keepalives_count_as_traffic() {
    let p = Siptrack::start(&config(free_port(), "tcp_idle_seconds = 1", ""));
    let mut idle = connect_from([127, 0, 0, 2], tcp_addr(&p), None);
    let mut pinging = connect_from([127, 0, 0, 2], tcp_addr(&p), None);
    let mut trusted = connect_from([127, 0, 0, 1], tcp_addr(&p), None);
    let started = Instant::now();
    // RFC 5626 pings every 400 ms for 2.5 s: answered, never idle.
    let mut pongs = 0;
    let mut buf = [0u8; 64];
    while started.elapsed() < Duration::from_millis(2500) {
        pinging.write_all(b"\r\n\r\n").expect("ping");
        pinging
            .set_read_timeout(Some(Duration::from_millis(400)))
            .expect("timeout");
        if let Ok(n) = pinging.read(&mut buf) {
            assert_eq!(&buf[..n], b"\r\n", "a pong");
            pongs += 1;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(pongs >= 3, "pongs: {pongs}");
    assert!(
        closed_within(&mut idle, Duration::from_millis(10)),
        "the silent connection was closed after about 1 s\n{}",
        p.log()
    );
    assert!(!closed_within(&mut pinging, Duration::from_millis(10)));
    assert!(
        !closed_within(&mut trusted, Duration::from_millis(10)),
        "trusted peers may stay silent"
    );
    // Pings stop: idle from now on.
    let took = time_to_close(&mut pinging, Duration::from_secs(5));
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(500)),
        "{took:?}"
    );
    let m = metrics(&p);
    assert_eq!(
        metric_value(&m, "siptrack_tcp_closed_total{reason=\"idle\"} "),
        2,
        "{m}"
    );
}

#[test]
fn a_message_that_never_completes_is_cut_off() {
    let p = Siptrack::start(&config(
        free_port(),
        "tcp_message_timeout_seconds = 1\ntcp_idle_seconds = 60",
        "",
    ));
    let mut slow = connect_from([127, 0, 0, 2], tcp_addr(&p), None);
    slow.write_all(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.2:5999;branch=z9hG4bK-slow\r\nX-Pad: ")
        .expect("first bytes");
    let started = Instant::now();
    let mut closed_after = None;
    // One byte every 200 ms: traffic, but the header never ends.
    while started.elapsed() < Duration::from_secs(6) {
        if slow.write_all(b"a").is_err() || closed_within(&mut slow, Duration::from_millis(200)) {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let t = closed_after.unwrap_or_else(|| panic!("slowloris connection still open\n{}", p.log()));
    assert!(
        t >= Duration::from_millis(700) && t < Duration::from_secs(4),
        "closed after {t:?}"
    );
    let m = metrics(&p);
    assert_eq!(
        metric_value(&m, "siptrack_tcp_closed_total{reason=\"slow_message\"} "),
        1,
        "{m}"
    );
    // A whole message in one go on a fresh connection is answered.
    let mut ok = connect_from([127, 0, 0, 1], tcp_addr(&p), None);
    ok.write_all(
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-ok\r\n\
          From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: ok-1\r\nCSeq: 1 OPTIONS\r\n\
          Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
    )
    .expect("send");
    ok.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    let n = ok.read(&mut buf).expect("an answer");
    assert!(
        buf[..n].starts_with(b"SIP/2.0 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[test]
fn a_peer_that_never_reads_is_disconnected_and_memory_stays_flat() {
    let p = Siptrack::start(&config(free_port(), "tcp_write_queue_bytes = 1048576", ""));
    let mut s = connect_from([127, 0, 0, 1], tcp_addr(&p), Some(16 * 1024));
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // Each OPTIONS carries 30 KB in From, which the 200 copies.
    let pad = "a".repeat(30_000);
    let rss_before = rss_kib(p.pid());
    let started = Instant::now();
    let mut sent = 0;
    let mut failed = None;
    while sent < 4000 && started.elapsed() < Duration::from_secs(30) {
        let req = format!(
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-q{sent}\r\n\
             From: <sip:a@127.0.0.1>;tag=1;pad={pad}\r\nTo: <sip:127.0.0.1>\r\nCall-ID: q-{sent}\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        if let Err(e) = s.write_all(req.as_bytes()) {
            failed = Some(e);
            break;
        }
        sent += 1;
    }
    let rss_after = rss_kib(p.pid());
    eprintln!(
        "never-reading peer: cut off after {sent} requests; RSS {rss_before} -> {rss_after} KiB"
    );
    let e = failed.unwrap_or_else(|| {
        panic!(
            "{sent} requests ({} MB of answers) and still connected\n{}",
            sent * 30 / 1000,
            p.log()
        )
    });
    assert!(
        matches!(
            e.kind(),
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
        ),
        "{e:?} after {sent}"
    );
    // The 1 MiB queue, kernel buffers aside: far from the answers' size.
    assert!(
        rss_after < rss_before + 48 * 1024,
        "RSS {rss_before} KiB -> {rss_after} KiB after {sent} requests"
    );
    assert!(p.log().contains("does not read"), "{}", p.log());
    let m = metrics(&p);
    assert_eq!(
        metric_value(&m, "siptrack_tcp_closed_total{reason=\"write_queue\"} "),
        1,
        "{m}"
    );
    assert!(common::options_ping(p.sip_addr(), Duration::from_secs(2)).is_some());
}

/// Sends a GET on `s` and reads the status code, waiting at most `wait`.
fn http_get(s: &mut TcpStream, path: &str, auth: &str, wait: Duration) -> Option<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.set_read_timeout(Some(wait)).ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) if out.is_empty() => return None,
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
}

#[test]
fn http_connections_are_capped_and_slow_headers_cut_off() {
    let p = Siptrack::start(&config(
        free_port(),
        "",
        "max_connections = 3\nheader_timeout_seconds = 2",
    ));
    let addr = http_addr(&p);
    // Three connections that send nothing hold every place …
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // … so a fourth is not served …
    let mut waiting = TcpStream::connect(addr).expect("connect (kernel backlog)");
    assert_eq!(
        http_get(&mut waiting, "/healthz", "", Duration::from_millis(800)),
        None,
        "a fourth connection was served beyond http.max_connections = 3"
    );
    // … until the header timeout closes the silent ones.
    let took = time_to_close(&mut idle[0], Duration::from_secs(5));
    assert!(
        took.is_some(),
        "silent HTTP connection not closed\n{}",
        p.log()
    );
    let mut buf = [0u8; 1024];
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let n = waiting
        .read(&mut buf)
        .expect("the waiting request is answered");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    drop(idle);

    // A header that trickles in is cut off after header_timeout_seconds.
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("send");
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(6) {
        if slow.write_all(b"X-A: b\r\n").is_err()
            || closed_within(&mut slow, Duration::from_millis(300))
        {
            closed = true;
            break;
        }
    }
    let t = started.elapsed();
    assert!(
        closed && t >= Duration::from_millis(1500) && t < Duration::from_secs(5),
        "{t:?}"
    );

    // A body that trickles in after the headers gets the same time.
    let mut rudy = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST /api/v1/leads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    rudy.write_all(head.as_bytes()).expect("send");
    let started = Instant::now();
    let mut answer = Vec::new();
    while started.elapsed() < Duration::from_secs(6) {
        if rudy.write_all(b" ").is_err() {
            break;
        }
        rudy.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut buf = [0u8; 1024];
        match rudy.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        if !answer.is_empty() {
            break;
        }
    }
    let t = started.elapsed();
    assert!(
        t >= Duration::from_millis(1500) && t < Duration::from_secs(5),
        "slow body: {t:?} {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        answer.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // Item 10: the scheme name in any case.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let mut s = TcpStream::connect(addr).expect("connect");
        let auth = format!("Authorization: {scheme} {TOKEN}\r\n");
        assert_eq!(
            http_get(&mut s, "/api/v1/leads", &auth, Duration::from_secs(5)),
            Some(200),
            "{scheme}"
        );
    }
}

/// Out of file descriptors (19,990 connections did it before the caps):
/// the accept loop pauses and logs once per 10 s instead of once per
/// failed attempt, and siptrack serves again as soon as descriptors free.
/// The limit is lowered on the running process with prlimit(1); trusted
/// connections are not capped, so they can exhaust it.
#[test]
fn running_out_of_descriptors_is_logged_once_and_survived() {
    let p = Siptrack::start(&config(free_port(), "", ""));
    let fds = std::fs::read_dir(format!("/proc/{}/fd", p.pid()))
        .expect("siptrack's descriptors")
        .count();
    let limit = fds + 4;
    let ok = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(p.pid().to_string())
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("run prlimit");
    assert!(ok.success(), "prlimit failed");
    let conns: Vec<TcpStream> = (0..40)
        .map(|_| connect_from([127, 0, 0, 1], tcp_addr(&p), None))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let log = p.log();
    let failures = log.matches("TCP accept failed").count();
    assert!(
        (1..=2).contains(&failures),
        "{failures} accept failures logged in 2 s\n{log}"
    );
    drop(conns);
    // Descriptors free again: a new connection is served.
    let deadline = Instant::now() + Duration::from_secs(5);
    let answered = loop {
        let mut s = connect_from([127, 0, 0, 1], tcp_addr(&p), None);
        s.write_all(
            b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-fd\r\n\
              From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: fd-1\r\nCSeq: 1 OPTIONS\r\n\
              Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        )
        .expect("send");
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let mut buf = [0u8; 2048];
        if let Ok(n) = s.read(&mut buf) {
            if buf[..n].starts_with(b"SIP/2.0 200") {
                break true;
            }
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(
        answered,
        "no answer after descriptors were freed\n{}",
        p.log()
    );
}

// ---------------------------------------------------------------------------
// UDP batching (issue 15): recvmmsg / sendmmsg
// ---------------------------------------------------------------------------

/// Stops (SIGSTOP) or resumes (SIGCONT) siptrack; stopping waits until
/// the kernel reports it stopped, so what is sent next queues on its
/// socket.
fn signal(p: &Siptrack, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(p.pid().to_string())
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -{sig}");
    if sig != "STOP" {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", p.pid())).unwrap_or_default();
        // The state follows the command name's closing parenthesis.
        let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next());
        if state == Some(Some('T')) {
            return;
        }
        assert!(Instant::now() < deadline, "siptrack did not stop: {stat}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sip_request(method: &str, ruri: &str, from: SocketAddr, call_id: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:79161234567@{from}>;tag=t-{call_id}\r\n\
         To: <{ruri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n\
         Contact: <sip:79161234567@{from}>\r\nContent-Length: 0\r\n\r\n"
    )
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The Call-IDs of what `sock` receives, each the first time it comes
/// (retransmissions left out), with its first line; until `want` distinct
/// ones or 10 s.
fn first_arrivals(sock: &UdpSocket, want: usize) -> Vec<(String, String)> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::<(String, String)>::new();
    let mut buf = vec![0u8; 65536];
    while seen.len() < want && Instant::now() < deadline {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let id = header(&text, "call-id").unwrap_or_default().to_string();
                if !seen.iter().any(|(c, _)| *c == id) {
                    let first = text.lines().next().unwrap_or_default().to_string();
                    seen.push((id, first));
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    seen
}

/// Kernel drops on siptrack's UDP socket (`/proc/net/udp`), to tell a
/// receive buffer too small for the burst from a fault of siptrack.
fn udp_drops(port: u16) -> String {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let local = format!(":{port:04X} ");
    table
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| format!("{a} ").ends_with(&local))
        })
        .map(|l| l.split_whitespace().last().unwrap_or("?").to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// 200 requests from four sources reach a stopped siptrack at once
/// (OPTIONS to siptrack, INVITEs to the callee, interleaved): when it
/// resumes, each source gets its answers (200, 100 Trying) in the order it
/// asked, the callee gets each source's INVITEs in order, and /metrics
/// shows they were read and written many per system call.
#[test]
fn a_burst_of_datagrams_is_answered_in_order_per_source_in_batches() {
    let uas = UdpSocket::bind("127.0.0.1:0").expect("bind the callee");
    let uas_port = uas.local_addr().expect("addr").port();
    let p = Siptrack::start(&config(uas_port, "", ""));
    let sources: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind a source"))
        .collect();
    let before = metrics(&p);
    signal(&p, "STOP");
    let mut asked: Vec<Vec<String>> = vec![Vec::new(); sources.len()];
    let mut invited: Vec<Vec<String>> = vec![Vec::new(); sources.len()];
    for j in 0..50u32 {
        for (s, sock) in sources.iter().enumerate() {
            let from = sock.local_addr().expect("addr");
            let call_id = format!("burst-{s}-{j}");
            let msg = if j.is_multiple_of(2) {
                sip_request("OPTIONS", &format!("sip:{}", p.sip_addr()), from, &call_id)
            } else {
                invited[s].push(call_id.clone());
                sip_request(
                    "INVITE",
                    &format!("sip:7495{s}00{j:04}@{}", p.sip_addr()),
                    from,
                    &call_id,
                )
            };
            sock.send_to(msg.as_bytes(), p.sip_addr()).expect("send");
            asked[s].push(call_id);
        }
    }
    signal(&p, "CONT");
    for (s, sock) in sources.iter().enumerate() {
        let got = first_arrivals(sock, asked[s].len());
        let ids: Vec<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            ids,
            asked[s],
            "source {s}: answers in the order asked (drops on siptrack's socket: {})\n{got:#?}",
            udp_drops(p.sip_port)
        );
        for (id, first) in &got {
            let j: u32 = id
                .rsplit('-')
                .next()
                .and_then(|j| j.parse().ok())
                .unwrap_or(1);
            let want = if j.is_multiple_of(2) {
                "SIP/2.0 200 "
            } else {
                "SIP/2.0 100 "
            };
            assert!(first.starts_with(want), "{id}: {first}");
        }
    }
    let forwarded = first_arrivals(&uas, 100);
    let mut per_source: HashMap<String, Vec<String>> = HashMap::new();
    for (id, first) in &forwarded {
        assert!(first.starts_with("INVITE "), "{first}");
        let s = id.split('-').nth(1).unwrap_or_default().to_string();
        per_source.entry(s).or_default().push(id.clone());
    }
    for (s, ids) in invited.iter().enumerate() {
        assert_eq!(
            per_source.get(&s.to_string()),
            Some(ids),
            "source {s}'s INVITEs in order"
        );
    }
    let after = metrics(&p);
    let delta = |name: &str| metric_value(&after, name) - metric_value(&before, name);
    let (got, recvs) = (
        delta("siptrack_sip_udp_datagrams_total{dir=\"in\"} "),
        delta("siptrack_sip_udp_syscalls_total{call=\"recvmmsg\"} "),
    );
    let (sent, sends) = (
        delta("siptrack_sip_udp_datagrams_total{dir=\"out\"} "),
        delta("siptrack_sip_udp_syscalls_total{call=\"sendmmsg\"} "),
    );
    assert_eq!(got, 200, "{after}");
    // 200 queued datagrams: 32 a call, 7 calls.
    assert!(
        recvs <= 10,
        "{recvs} recvmmsg calls for {got} datagrams\n{after}"
    );
    // 300 answers and forwarded INVITEs, one sendmmsg per batch of 32
    // received (the INVITEs' retransmissions to the silent callee, from
    // 0.5 s on, may add a call each).
    assert!(sent >= 300, "{after}");
    assert!(
        sends * 2 <= sent,
        "{sends} sendmmsg calls for {sent} datagrams\n{after}"
    );
    assert_eq!(
        delta("siptrack_sip_udp_send_errors_total{reason=\"other\"} "),
        0
    );
}

/// Every INVITE goes to a destination the kernel refuses to send to
/// (port 0: EINVAL), in the same batches as the answers to OPTIONS and the
/// 100 Trying: each refusal is counted, the datagrams after it in the
/// batch still leave, the log says so at most once a second, and
/// siptrack keeps answering.
#[test]
fn sends_the_kernel_refuses_are_counted_and_the_loop_goes_on() {
    let p = Siptrack::start(&config(0, "", ""));
    let caller = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let from = caller.local_addr().expect("addr");
    let started = Instant::now();
    signal(&p, "STOP");
    let mut asked = Vec::new();
    for j in 0..40u32 {
        let call_id = format!("refused-{j}");
        let msg = if j.is_multiple_of(2) {
            sip_request("OPTIONS", &format!("sip:{}", p.sip_addr()), from, &call_id)
        } else {
            sip_request(
                "INVITE",
                &format!("sip:74950000{j:03}@{}", p.sip_addr()),
                from,
                &call_id,
            )
        };
        caller.send_to(msg.as_bytes(), p.sip_addr()).expect("send");
        asked.push(call_id);
    }
    signal(&p, "CONT");
    let got = first_arrivals(&caller, asked.len());
    let ids: Vec<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(ids, asked, "{got:#?}");
    // Timer A repeats each INVITE at 0.5 and 1.5 s: refused again.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        common::options_ping(p.sip_addr(), Duration::from_secs(2)).is_some(),
        "siptrack stopped answering\n{}",
        p.log()
    );
    let m = metrics(&p);
    let refused = metric_value(&m, "siptrack_sip_udp_send_errors_total{reason=\"other\"} ");
    assert!(
        refused >= 40,
        "20 INVITEs, each sent at least twice: {refused}\n{m}"
    );
    let log = p.log();
    let lines = log.matches("UDP send refused by the kernel").count() as u64;
    let seconds = started.elapsed().as_secs() + 1;
    assert!(
        (1..=seconds).contains(&lines),
        "{lines} log lines in {seconds} s for {refused} refusals\n{log}"
    );
}

/// Writes `request` and, in the same write, a request siptrack cannot
/// frame (`Content-Length: 1e3`), which makes siptrack close the
/// connection before it answers `request`; waits for the close.
fn send_then_get_closed(conn: &mut TcpStream, request: &str) {
    let unframeable = "OPTIONS sip:a SIP/2.0\r\nContent-Length: 1e3\r\n\r\n";
    conn.write_all(format!("{request}{unframeable}").as_bytes())
        .expect("write");
    assert!(
        closed_within(conn, Duration::from_secs(5)),
        "an unframeable stream is closed"
    );
}

/// A refusal to an untrusted peer over TCP goes on the peer's own
/// connection or not at all: siptrack never dials an untrusted source
/// (trial, 2026-12-02: a request followed by an unframeable one in one
/// write got the connection closed, and then the 403 over a new
/// connection to the peer's port; a peer listening there held 250 such
/// connections past the per-source cap).
#[test]
fn a_refusal_to_an_untrusted_peer_never_opens_a_connection() {
    let uas_port = free_port();
    let p = Siptrack::start(&config(uas_port, "", ""));
    // The peer listens on the port it connects from.
    let port = free_port();
    let local = SocketAddr::from(([127, 0, 0, 2], port));
    let reusable = || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        s.set_reuse_address(true).expect("SO_REUSEADDR");
        s.set_reuse_port(true).expect("SO_REUSEPORT");
        s.bind(&local.into()).expect("bind 127.0.0.2");
        s
    };
    let listener = reusable();
    listener.listen(16).expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let conn = reusable();
    conn.connect_timeout(&tcp_addr(&p).into(), Duration::from_secs(5))
        .expect("connect");
    let mut conn: TcpStream = conn.into();
    let options = sip_request("OPTIONS", "sip:100@127.0.0.1", local, "dialback-1");
    send_then_get_closed(&mut conn, &options);
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Ok((_, from)) = listener.accept() {
            panic!(
                "siptrack dialed the untrusted peer from {from:?}\n{}",
                p.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!p.log().contains("TCP connect failed"), "{}", p.log());
    let m = metrics(&p);
    assert!(m.contains("siptrack_tcp_responses_unsent_total 1\n"), "{m}");
}

/// A trusted TCP peer whose connection closed before its answer went out
/// gets the answer over a new connection to where it listens: its Via's
/// sent-by port (RFC 3261 18.2.2), not the old connection's ephemeral
/// port, on which nothing listens (left alone in an earlier session:
/// "TCP connect failed", the answer lost).
#[test]
fn an_answer_to_a_closed_trusted_connection_goes_to_the_via_port() {
    let uas_port = free_port();
    let p = Siptrack::start(&config(uas_port, "", ""));
    // 127.0.0.1 is trusted; it listens here, and connects from elsewhere.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let listening = listener.local_addr().expect("addr");
    let mut conn = TcpStream::connect(tcp_addr(&p)).expect("connect");
    // A keep-alive OPTIONS (answered 200 by siptrack itself), its Via
    // over TCP naming the listening port, then a stream siptrack cannot
    // frame, which makes it close the connection before it answers.
    let options = sip_request("OPTIONS", "sip:127.0.0.1", listening, "reconnect-1")
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    send_then_get_closed(&mut conn, &options);
    let until = Instant::now() + Duration::from_secs(5);
    let mut answer = String::new();
    while Instant::now() < until && answer.is_empty() {
        if let Ok((mut s, _)) = listener.accept() {
            s.set_nonblocking(false).expect("blocking");
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap_or(0);
            answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        answer.starts_with("SIP/2.0 200") && answer.contains("reconnect-1"),
        "no answer at the Via's port: {answer:?}\n{}",
        p.log()
    );
}
