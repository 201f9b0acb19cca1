//! End-to-end security tests (issue 12): a real siptrack on 127.0.0.1 with
//! only 127.0.0.1 trusted, an attacker on 127.0.0.2 and a third party on
//! 127.0.0.3 (a UDP socket and a TCP listener) that must never hear from
//! siptrack. What siptrack drops shows in /metrics.

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use common::checks::get;
use common::{free_port, Dir, SipTrace, Sipp, Siptrack};

fn config(destination_port: u16, untrusted: &str) -> String {
    format!(
        r#"[sip]
listen = ["udp:127.0.0.1:{{SIP_PORT}}", "tcp:127.0.0.1:{{SIP_PORT}}"]
trusted_sources = ["127.0.0.1/32"]
route_secret = "e2e-security-route-secret"
untrusted = "{untrusted}"

[tracking]
default_destination = "sip:127.0.0.1:{destination_port}"

[shutdown]
drain_seconds = 1

[http]
listen = "127.0.0.1:{{HTTP_PORT}}"
"#
    )
}

fn udp_on(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind udp on {ip}: {e}"));
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    s
}

/// Everything `sock` receives until `quiet` passes without a datagram
/// (at most `limit` in all).
fn drain(sock: &UdpSocket, quiet: Duration, limit: Duration) -> Vec<String> {
    let mut out = Vec::new();
    let start = Instant::now();
    let mut last = Instant::now();
    let mut buf = vec![0u8; 70_000];
    while start.elapsed() < limit && last.elapsed() < quiet {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                last = Instant::now();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    out
}

/// The third party on 127.0.0.3: it must receive nothing at all.
struct Third {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Third {
    fn new() -> Third {
        let tcp = TcpListener::bind("127.0.0.3:0").expect("bind tcp on 127.0.0.3");
        tcp.set_nonblocking(true).expect("nonblocking");
        Third {
            udp: udp_on("127.0.0.3"),
            tcp,
        }
    }
    fn udp_addr(&self) -> SocketAddr {
        self.udp.local_addr().expect("addr")
    }
    fn tcp_addr(&self) -> SocketAddr {
        self.tcp.local_addr().expect("addr")
    }
    fn assert_untouched(&self) {
        let got = drain(
            &self.udp,
            Duration::from_millis(300),
            Duration::from_secs(2),
        );
        assert!(got.is_empty(), "the third party got UDP: {got:?}");
        match self.tcp.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok((_, from)) => panic!("siptrack connected to the third party from {from}"),
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// `siptrack_sip_<name>_total`, once it reaches `at_least` (the snapshot
/// is refreshed every second), or its last value after 5 s.
fn counter(st: &Siptrack, name: &str, at_least: u64) -> u64 {
    let addr = SocketAddr::from(([127, 0, 0, 1], st.http_port));
    let key = format!("siptrack_sip_{name}_total ");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, text) = get(addr, "/metrics", None);
        assert_eq!(status, 200, "{text}");
        let n = text
            .lines()
            .find_map(|l| l.strip_prefix(&key).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {key} in /metrics:\n{text}"));
        if n >= at_least || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn send(sock: &UdpSocket, to: SocketAddr, text: &str) {
    sock.send_to(text.as_bytes(), to).expect("send");
}

fn lines<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .split("\r\n")
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
        .collect()
}

/// A response to `req` as its recipient would write it.
fn response_to(req: &str, status: &str, to_tag: &str, extra: &str, body: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for name in ["Via", "Record-Route", "From", "To", "Call-ID", "CSeq"] {
        for l in lines(req, name) {
            out.push_str(l);
            if name == "To" && !l.contains("tag=") {
                out.push_str(&format!(";tag={to_tag}"));
            }
            out.push_str("\r\n");
        }
    }
    out.push_str(extra);
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out
}

#[test]
fn stray_responses_reach_no_one() {
    let third = Third::new();
    let st = Siptrack::start(&config(free_port(), "reject"));
    let attacker = udp_on("127.0.0.2");
    let own = format!("127.0.0.1:{}", st.sip_port);
    let stray = |second_via: &str| {
        format!(
            "SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP {own};branch=z9hG4bKforged\r\n\
             Via: {second_via}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\n\
             Call-ID: stray@x\r\nCSeq: 1 INVITE\r\nContent-Length: 11\r\n\r\nattacker!!!"
        )
    };
    let (u, t) = (third.udp_addr(), third.tcp_addr());
    for via in [
        format!("SIP/2.0/UDP {u};branch=z9hG4bK1"),
        format!(
            "SIP/2.0/UDP 192.0.2.1:5060;received=127.0.0.3;rport={};branch=z9hG4bK1",
            u.port()
        ),
        format!("SIP/2.0/TCP {t};branch=z9hG4bK1"),
    ] {
        send(&attacker, st.sip_addr(), &stray(&via));
    }
    // 2,000 Vias naming siptrack itself: once made 2,000 internal hops.
    let looping = vec![format!("SIP/2.0/UDP {own}"); 2000].join(",");
    let text = stray(&looping);
    assert!(text.len() > 50_000 && text.len() < 65_000, "{}", text.len());
    let started = Instant::now();
    send(&attacker, st.sip_addr(), &text);
    assert!(
        common::options_ping(st.sip_addr(), Duration::from_secs(2)).is_some(),
        "siptrack keeps answering"
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    third.assert_untouched();
    let back = drain(
        &attacker,
        Duration::from_millis(300),
        Duration::from_secs(1),
    );
    assert!(back.is_empty(), "nothing goes back either: {back:?}");
    assert_eq!(counter(&st, "stray_responses", 4), 4);
    assert_eq!(counter(&st, "responses_forwarded", 0), 0);
}

/// The UAS's Record-Route, the Call-ID and both tags of the one call of a
/// SIPp UAS run.
fn dialog_of(uas: &[SipTrace]) -> (String, String, String, String) {
    let invite = uas
        .iter()
        .find(|m| matches!(m.dir, Dir::Received) && m.is_request("INVITE"))
        .expect("the UAS got the INVITE");
    let ok = uas
        .iter()
        .find(|m| matches!(m.dir, Dir::Sent) && m.is_response(200))
        .expect("the UAS answered 200");
    let tag = |v: String| {
        v.split(";tag=")
            .nth(1)
            .and_then(|t| t.split([';', '>']).next())
            .unwrap_or_default()
            .to_string()
    };
    (
        invite.header("Record-Route").expect("Record-Route"),
        invite.call_id().expect("Call-ID"),
        tag(invite.header("From").expect("From")),
        tag(ok.header("To").expect("To")),
    )
}

#[test]
fn a_seen_route_token_relays_nothing_after_bye() {
    let third = Third::new();
    let uas_port = free_port();
    let st = Siptrack::start(&config(uas_port, "reject"));
    let uas = Sipp::uas("uas.xml")
        .port(uas_port)
        .calls(1)
        .time_limit(Duration::from_secs(20))
        .spawn();
    let uac = Sipp::uac("uac.xml", st.sip_addr())
        .calls(1)
        .time_limit(Duration::from_secs(20))
        .run();
    let uas = uas.wait_at_most(Duration::from_secs(10));
    assert_eq!(
        (uac.successful(), uas.successful()),
        (1, 1),
        "{}",
        uac.summary()
    );
    let (route, call_id, caller_tag, callee_tag) = dialog_of(&uas.messages);

    let attacker = udp_on("127.0.0.2");
    let local = attacker.local_addr().expect("addr");
    let targets = [
        format!("sip:x@{}", third.udp_addr()),
        format!("sip:x@{};transport=tcp", third.tcp_addr()),
        format!("sip:uas@127.0.0.1:{uas_port}"),
    ];
    let methods = ["INFO", "MESSAGE", "REFER", "OPTIONS", "INVITE", "BYE"];
    let mut sent = 0;
    for (i, uri) in targets.iter().enumerate() {
        for (j, method) in methods.iter().enumerate() {
            send(
                &attacker,
                st.sip_addr(),
                &format!(
                    "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKatk{i}x{j}\r\n\
                     Route: {route}\r\nMax-Forwards: 70\r\nFrom: <sip:sipp@127.0.0.1>;tag={caller_tag}\r\n\
                     To: <sip:74950000001@127.0.0.1>;tag={callee_tag}\r\nCall-ID: {call_id}\r\n\
                     CSeq: {} {method}\r\nContact: <sip:a@{local}>\r\nContent-Length: 0\r\n\r\n",
                    10 + sent
                ),
            );
            sent += 1;
        }
    }
    let replies = drain(
        &attacker,
        Duration::from_millis(1500),
        Duration::from_secs(6),
    );
    assert!(
        replies.len() <= sent,
        "at most one reply each, never repeated: {} for {sent}",
        replies.len()
    );
    assert!(
        replies
            .iter()
            .all(|r| r.starts_with("SIP/2.0 404") || r.starts_with("SIP/2.0 481")),
        "{replies:?}"
    );
    third.assert_untouched();
    assert!(counter(&st, "in_dialog_refused", sent as u64) >= sent as u64);
    // The UAS is gone; had anything reached its port, a socket bound there
    // now would see the retransmissions.
    let late = UdpSocket::bind(("127.0.0.1", uas_port));
    if let Ok(late) = late {
        late.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let got = drain(&late, Duration::from_millis(1200), Duration::from_secs(2));
        assert!(got.is_empty(), "relayed to the callee: {got:?}");
    }
}

/// A UAS on 127.0.0.1 written here, so the test knows the branch siptrack
/// used and can forge with it.
struct Uas {
    sock: UdpSocket,
}

impl Uas {
    fn recv(&self, what: &str, within: Duration) -> (String, SocketAddr) {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 70_000];
        while Instant::now() < deadline {
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if m.starts_with(what) {
                        return (m, from);
                    }
                    assert!(!m.starts_with("CANCEL"), "a CANCEL reached the UAS: {m}");
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
        panic!("the UAS got no {what} within {within:?}");
    }
}

#[test]
fn forged_486_and_cancel_do_not_end_a_ringing_call() {
    let uas = Uas {
        sock: udp_on("127.0.0.1"),
    };
    let uas_port = uas.sock.local_addr().expect("addr").port();
    let st = Siptrack::start(&config(uas_port, "reject"));
    let uac = Sipp::uac("uac.xml", st.sip_addr())
        .calls(1)
        .arg("-recv_timeout")
        .arg("15000")
        .time_limit(Duration::from_secs(25))
        .spawn();
    let (invite, proxy) = uas.recv("INVITE", Duration::from_secs(10));
    let ringing = response_to(&invite, "180 Ringing", "uas1", "", "");
    uas.sock
        .send_to(ringing.as_bytes(), proxy)
        .expect("send 180");

    // The attacker knows everything (it sniffed the forwarded INVITE).
    let attacker = udp_on("127.0.0.2");
    let busy = response_to(&invite, "486 Busy Here", "uas1", "", "");
    for _ in 0..29 {
        send(&attacker, st.sip_addr(), &busy);
    }
    let caller_via = lines(&invite, "Via")[1].to_string();
    let cancel = format!(
        "CANCEL sip:74950000001@127.0.0.1:{} SIP/2.0\r\n{caller_via}\r\n{}\r\n{}\r\n{}\r\n\
         CSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        st.sip_port,
        lines(&invite, "From")[0],
        lines(&invite, "To")[0],
        lines(&invite, "Call-ID")[0],
    );
    send(&attacker, st.sip_addr(), &cancel);
    // Ringing on: nothing reaches the UAS (recv panics on a CANCEL).
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut buf = vec![0u8; 70_000];
    while Instant::now() < deadline {
        if let Ok((n, _)) = uas.sock.recv_from(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]);
            panic!("the UAS got something while ringing: {m}");
        }
    }

    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let ok = response_to(
        &invite,
        "200 OK",
        "uas1",
        &format!("Contact: <sip:uas@127.0.0.1:{uas_port}>\r\nContent-Type: application/sdp\r\n"),
        sdp,
    );
    uas.sock.send_to(ok.as_bytes(), proxy).expect("send 200");
    uas.recv("ACK", Duration::from_secs(10));
    let (bye, from) = uas.recv("BYE", Duration::from_secs(10));
    let done = response_to(&bye, "200 OK", "uas1", "", "");
    uas.sock.send_to(done.as_bytes(), from).expect("send 200");
    let run = uac.wait_at_most(Duration::from_secs(15));
    assert_eq!(
        run.successful(),
        1,
        "the call was answered\n{}",
        run.summary()
    );
    assert_eq!(run.count("486", "Recv"), 0);
    assert!(counter(&st, "wrong_source", 30) >= 30);
}

/// Sends one ~60 KB INVITE from the attacker; returns what came back.
fn big_invite_from_attacker(st: &Siptrack) -> Vec<String> {
    let attacker = udp_on("127.0.0.2");
    let local = attacker.local_addr().expect("addr");
    let pad = "a".repeat(60_000);
    let invite = format!(
        "INVITE sip:74950000001@127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKbig\r\n\
         Max-Forwards: 70\r\nFrom: <sip:x@{local}>;tag=big\r\nTo: <sip:74950000001@127.0.0.1>\r\n\
         Call-ID: big@attacker\r\nCSeq: 1 INVITE\r\nX-Pad: {pad}\r\nContent-Length: 0\r\n\r\n",
        st.sip_port
    );
    send(&attacker, st.sip_addr(), &invite);
    // Timer G would repeat a stateful 403 at 0.5, 1.5, 3.5 s.
    drain(&attacker, Duration::from_secs(4), Duration::from_secs(5))
}

#[test]
fn an_untrusted_60_kb_invite_gets_one_small_reply_or_none() {
    let st = Siptrack::start(&config(free_port(), "reject"));
    let replies = big_invite_from_attacker(&st);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].starts_with("SIP/2.0 403 "), "{}", replies[0]);
    assert!(replies[0].len() < 1024, "{} bytes", replies[0].len());
    assert_eq!(counter(&st, "untrusted", 1), 1);

    let st = Siptrack::start(&config(free_port(), "drop"));
    let replies = big_invite_from_attacker(&st);
    assert!(replies.is_empty(), "{replies:?}");
    assert_eq!(counter(&st, "replies_suppressed", 1), 1);
}
