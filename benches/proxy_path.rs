//! Hot-path benchmarks: parsing, the proxy core's INVITE path (parse →
//! validate → route → edit → serialise), and a whole call through the core.

use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::sync::{Arc, Mutex};

use siptrack::config::{parse_destination, Config, ListenAddr, Timers};
use siptrack::proxy::route::Identity;
use siptrack::proxy::{DefaultRouter, Output, Peer, Proxy, ProxySettings, Transport};
use siptrack::sip::Message;
use siptrack::tracking::pools::{Pools, Visit};
use siptrack::tracking::TrackingRouter;

const UAC: &str = "127.0.0.1:5061";
const PROXY: &str = "127.0.0.1:5060";

fn invite(n: u64) -> Vec<u8> {
    let sdp = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    format!(
        "INVITE sip:74951234567@{PROXY} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {UAC};branch=z9hG4bK-bench-{n}\r\n\
         From: sipp <sip:8-916-123-45-67@{UAC}>;tag=1234SIPpTag00{n}\r\n\
         To: 74951234567 <sip:74951234567@{PROXY}>\r\n\
         Call-ID: {n}-bench@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: sip:sipp@{UAC}\r\n\
         Max-Forwards: 70\r\n\
         Subject: Performance Test\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

fn settings() -> ProxySettings {
    let listen = vec![ListenAddr {
        transport: Transport::Udp,
        addr: PROXY.parse().expect("addr"),
    }];
    ProxySettings {
        identity: Identity::new(listen, None, b"bench-secret"),
        trusted_sources: vec!["127.0.0.0/8".parse().expect("cidr")],
        max_message_bytes: 65535,
        timers: Timers::default(),
        instance_nonce: 1,
        dialog_max_ms: 4 * 3600 * 1000,
        untrusted: siptrack::config::Untrusted::Reject,
    }
}

const FIXED_UNIX_MS: u64 = 1_000_000;

/// The tracking router with the dialed number (74951234567) in a pool and
/// held by a visit: every rule of SPEC T-2 to T-5 applies (three tracking
/// headers, four extra headers from the visit, caller normalisation).
fn tracking_proxy() -> Proxy {
    let config = Config::parse(
        r#"[tracking]
default_destination = "sip:pbx@127.0.0.1:5070"
[[tracking.pools]]
name = "site"
numbers = ["84951234567"]
destination = "sip:pbx@127.0.0.1:5070"
[rewrite]
extra_headers = "X-City={city}, X-Source={source}, X-Campaign={utm_campaign}, X-Caller={caller}"
"#,
    )
    .expect("bench config");
    let mut pools = Pools::new(config.tracking.pools.clone());
    let visit = Visit {
        id: "visit-123456".into(),
        fields: [
            ("marker", "google_cpc"),
            ("source", "google"),
            ("city", "Moscow"),
            ("utm_campaign", "winter_sale"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    };
    pools
        .touch(visit, FIXED_UNIX_MS)
        .expect("a number for the visit");
    let router = TrackingRouter::new(
        &config,
        Arc::new(Mutex::new(pools)),
        siptrack::clock::Clock::manual(FIXED_UNIX_MS),
    );
    Proxy::new(settings(), Box::new(router))
}

fn proxy() -> Proxy {
    let router = DefaultRouter {
        destination: Some(parse_destination("sip:127.0.0.1:5070").expect("dest")),
    };
    Proxy::new(settings(), Box::new(router))
}

fn uac() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: UAC.parse::<SocketAddr>().expect("addr"),
    }
}

fn uas() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: "127.0.0.1:5070".parse::<SocketAddr>().expect("addr"),
    }
}

/// A response from the UAS to a forwarded request: the request's Via,
/// Record-Route, From, To (+tag), Call-ID and CSeq.
fn answer(req: &[u8], status: &str, with_rr: bool) -> Bytes {
    let text = String::from_utf8_lossy(req);
    let mut out = format!("SIP/2.0 {status}\r\n");
    for line in text.split("\r\n").take_while(|l| !l.is_empty()).skip(1) {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("via:")
            || lower.starts_with("from:")
            || lower.starts_with("call-id:")
            || lower.starts_with("cseq:")
            || (with_rr && lower.starts_with("record-route:"))
        {
            out.push_str(line);
            out.push_str("\r\n");
        } else if lower.starts_with("to:") {
            out.push_str(line);
            if !lower.contains("tag=") {
                out.push_str(";tag=uas1");
            }
            out.push_str("\r\n");
        }
    }
    out.push_str("Contact: <sip:127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n");
    Bytes::from(out)
}

fn sent_to(p: &mut Proxy, who: Peer) -> Bytes {
    let mut found = Bytes::new();
    for o in p.take_outputs() {
        let Output::Send { to, data } = o;
        if to == who {
            found = data;
        }
    }
    found
}

/// New INVITEs one after the other, each a fresh transaction; the clock
/// moves so that old ones expire.
fn invite_after_invite(b: &mut criterion::Bencher, mut p: Proxy, invites: &[Bytes]) {
    let mut i = 0usize;
    let mut now = 0u64;
    b.iter(|| {
        now += 1;
        p.on_message(now, uac(), invites[i % invites.len()].clone());
        p.on_timer(now);
        i += 1;
        black_box(p.take_outputs().count())
    })
}

fn benches(c: &mut Criterion) {
    let msg = Bytes::from(invite(1));
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse+validate INVITE with SDP", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(msg.clone()), true).expect("parses");
            siptrack::sip::validate::validate(&m).expect("valid");
            black_box(m.headers.len())
        })
    });

    let invites: Vec<Bytes> = (0..100_000u64).map(|n| Bytes::from(invite(n))).collect();
    g.bench_function("proxy core: INVITE parse+route+serialise", |b| {
        invite_after_invite(b, proxy(), &invites)
    });

    // The rewrite must really happen, or the figure means nothing.
    let mut p = tracking_proxy();
    p.on_message(0, uac(), Bytes::from(invite(0)));
    let fwd = sent_to(&mut p, uas());
    let fwd = String::from_utf8_lossy(&fwd);
    for needle in [
        "INVITE sip:74951234567@127.0.0.1:5070 SIP/2.0",
        "X-Roistat: visit-123456\r\n",
        "X-City: Moscow\r\n",
        "X-Caller: 79161234567\r\n",
        "<sip:79161234567@",
    ] {
        assert!(fwd.contains(needle), "{needle} not in\n{fwd}");
    }
    g.bench_function("proxy core: INVITE parse+track+rewrite+serialise", |b| {
        invite_after_invite(b, tracking_proxy(), &invites)
    });

    g.bench_function("proxy core: whole call (INVITE 180 200 ACK BYE 200)", |b| {
        let mut p = proxy();
        let mut n = 0u64;
        let mut now = 0u64;
        b.iter(|| {
            n += 1;
            now += 1;
            p.on_message(now, uac(), Bytes::from(invite(1_000_000 + n)));
            let fwd = sent_to(&mut p, uas());
            p.on_message(now, uas(), answer(&fwd, "180 Ringing", true));
            p.take_outputs().for_each(drop);
            p.on_message(now, uas(), answer(&fwd, "200 OK", true));
            let ok = sent_to(&mut p, uac());
            let text = String::from_utf8_lossy(&ok);
            let route: String = text.split("\r\n").filter(|l| l.starts_with("Record-Route:")).map(|l| l.replacen("Record-Route:", "Route:", 1) + "\r\n").collect();
            let tag = format!("1234SIPpTag00{}", 1_000_000 + n);
            let dialog = |method: &str, cseq: u32, branch: &str| {
                Bytes::from(format!(
                    "{method} sip:sipp@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bK-{branch}-{n}\r\n{route}From: sipp <sip:sipp@{UAC}>;tag={tag}\r\nTo: <sip:74951234567@{PROXY}>;tag=uas1\r\nCall-ID: {}-bench@127.0.0.1\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                    1_000_000 + n
                ))
            };
            p.on_message(now, uac(), dialog("ACK", 1, "ack"));
            p.on_message(now, uac(), dialog("BYE", 2, "bye"));
            let bye = sent_to(&mut p, uas());
            p.on_message(now, uas(), answer(&bye, "200 OK", false));
            p.on_timer(now);
            black_box(p.take_outputs().count())
        })
    });
    g.finish();
}

criterion_group!(proxy_path, benches);
criterion_main!(proxy_path);
