//! Property tests: no input makes the parser, its typed views, the stream
//! framer or the proxy core panic or read out of bounds (SPEC S-3: the
//! process never panics on input). Inputs are random bytes, random
//! SIP-looking text, and the torture corpus with random mutations.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use proptest::prelude::*;
use siptrack::config::{parse_destination, parse_listen, Timers};
use siptrack::proxy::route::Identity;
use siptrack::proxy::{DefaultRouter, Peer, Proxy, ProxySettings, Transport};
use siptrack::sip::validate::{cseq, validate};
use siptrack::sip::via::via_values;
use siptrack::sip::{stream_frame, HeaderName, Message, NameAddr, StreamFrame, Uri, Via};

fn corpus_messages() -> &'static [Vec<u8>] {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(read_corpus)
}

fn read_corpus() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/torture");
    let mut out = Vec::new();
    for sub in ["rfc4475", "rfc5118", "rfc5118/clfix"] {
        let entries = std::fs::read_dir(dir.join(sub)).expect("torture corpus directory");
        for e in entries {
            let path = e.expect("corpus entry").path();
            if path.extension().is_some_and(|x| x == "sip") {
                out.push(std::fs::read(&path).expect("read corpus file"));
            }
        }
    }
    assert!(out.len() >= 65, "corpus files found: {}", out.len());
    out
}

/// Every typed view the proxy may ask for, on whatever parsed.
fn exercise_views(msg: &Message) {
    let _ = validate(msg);
    let _ = cseq(msg);
    let _ = (
        msg.method(),
        msg.method_bytes(),
        msg.status(),
        msg.call_id(),
    );
    let _ = (msg.body_bytes().len(), msg.wire().len());
    if let Some(uri) = msg.request_uri() {
        if let Ok(u) = Uri::parse(uri) {
            let _ = (u.user(), u.host_ip(), u.param(b"transport"), u.is_sips());
        }
    }
    for name in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::Contact,
        HeaderName::Route,
        HeaderName::RecordRoute,
        HeaderName::MaxForwards,
        HeaderName::ContentLength,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        for h in msg.headers_named(name) {
            let value = msg.bytes(h.value);
            let _ = msg.bytes(h.line);
            if name == HeaderName::Via {
                for (a, b) in via_values(value) {
                    if let Ok(v) = Via::parse(&value[a..b]) {
                        let _ = (v.host(), v.port, v.branch(), v.rfc3261_branch());
                        let _ = (v.param(b"received"), v.param_ranges(b"rport"));
                    }
                }
            } else if let Ok(n) = NameAddr::parse(value) {
                let _ = (n.tag(), n.param(b"lr"));
                let _ = Uri::parse(n.uri()).map(|u| u.host_ip());
            }
        }
    }
}

fn proxy() -> Proxy {
    let listen = vec![
        parse_listen("udp:127.0.0.1:5060").expect("listen"),
        parse_listen("tcp:127.0.0.1:5060").expect("listen"),
    ];
    let settings = ProxySettings {
        identity: Identity::new(listen, None, b"fuzz"),
        trusted_sources: vec!["127.0.0.0/8".parse().expect("cidr")],
        max_message_bytes: 65535,
        timers: Timers::default(),
        instance_nonce: 7,
        dialog_max_ms: 4 * 3600 * 1000,
        untrusted: siptrack::config::Untrusted::Reject,
    };
    let router = DefaultRouter {
        destination: Some(parse_destination("sip:127.0.0.1:5070").expect("destination")),
    };
    Proxy::new(settings, Box::new(router))
}

/// The whole path: parse and views, stream framing, then the proxy core
/// over UDP and TCP with its timers run far into the future.
fn check(input: &[u8]) {
    if let Ok(msg) = Message::parse(Bytes::copy_from_slice(input), true) {
        exercise_views(&msg);
    }
    if let Ok(msg) = Message::parse(Bytes::copy_from_slice(input), false) {
        exercise_views(&msg);
    }
    let mut rest = input;
    for _ in 0..64 {
        match stream_frame(rest, 65535) {
            StreamFrame::Complete(n) | StreamFrame::KeepAlive { len: n, .. } => {
                assert!(n > 0 && n <= rest.len(), "frame of {n} in {}", rest.len());
                rest = &rest[n..];
            }
            StreamFrame::Incomplete | StreamFrame::Invalid(_) => break,
        }
    }
    let mut p = proxy();
    let from: SocketAddr = "127.0.0.1:5080".parse().expect("address");
    for transport in [Transport::Udp, Transport::Tcp] {
        let peer = Peer {
            transport,
            addr: from,
        };
        p.on_message(0, peer, Bytes::copy_from_slice(input));
        // Twice: the second is a retransmission.
        p.on_message(10, peer, Bytes::copy_from_slice(input));
    }
    let _ = p.take_outputs().count();
    let mut now = 10;
    while let Some(t) = p.next_deadline() {
        if t > 48 * 3600 * 1000 {
            break;
        }
        now = now.max(t);
        p.on_timer(now);
        let _ = p.take_outputs().count();
    }
}

/// Text that looks enough like SIP to get past the start line.
fn sipish() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        Just("INVITE sip:100@127.0.0.1 SIP/2.0".to_string()),
        Just("SIP/2.0 200 OK".to_string()),
        Just("ACK sip:a@[::1]:5 SIP/2.0".to_string()),
        "[A-Z]{1,8} [a-z:@0-9.;=\\[\\]]{0,30} SIP/2.0",
        "SIP/2.0 [0-9]{1,4} [ -~]{0,10}",
    ];
    let name = prop_oneof![
        Just("Via"),
        Just("v"),
        Just("From"),
        Just("To"),
        Just("t"),
        Just("Call-ID"),
        Just("CSeq"),
        Just("Max-Forwards"),
        Just("Route"),
        Just("Record-Route"),
        Just("Contact"),
        Just("Content-Length"),
        Just("l"),
        Just("Proxy-Require"),
        Just("X-Other"),
    ];
    let value = "[ -~\t]{0,40}(\r\n [ -~]{0,10})?";
    let header = (name, value).prop_map(|(n, v)| format!("{n}:{v}\r\n"));
    (
        start,
        prop::collection::vec(header, 0..14),
        "[ -~\r\n]{0,60}",
    )
        .prop_map(|(s, hs, body)| format!("{s}\r\n{}\r\n{body}", hs.concat()).into_bytes())
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let tricky = prop_oneof![
        Just(b"\r\n".to_vec()),
        Just(b"\r\n\r\n".to_vec()),
        Just(b":".to_vec()),
        Just(b";".to_vec()),
        Just(b",".to_vec()),
        Just(b"<".to_vec()),
        Just(b">".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b"\0".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\r\n ".to_vec()),
        Just(b"99999999999999999999".to_vec()),
        prop::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), tricky).prop_map(|(i, s)| Mutation::Insert(i, s)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut msg: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = msg.len().max(1);
        match m {
            Mutation::Flip(i, b) if !msg.is_empty() => msg[i % len] = *b,
            Mutation::Insert(i, s) => {
                let at = i % (msg.len() + 1);
                msg.splice(at..at, s.iter().copied());
            }
            Mutation::Delete(i, n) if !msg.is_empty() => {
                let at = i % len;
                let end = (at + n).min(msg.len());
                msg.drain(at..end);
            }
            Mutation::Truncate(i) => msg.truncate(i % (msg.len() + 1)),
            _ => {}
        }
    }
    msg
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..4096)) {
        check(&input);
    }

    #[test]
    fn sip_like_text_never_panics(input in sipish()) {
        check(&input);
    }

    #[test]
    fn mutated_corpus_never_panics(
        which in any::<prop::sample::Index>(),
        muts in prop::collection::vec(mutation(), 1..6),
    ) {
        let msg = which.get(corpus_messages()).clone();
        check(&apply(msg, &muts));
    }
}

/// The unmutated corpus, every file, through the same path.
#[test]
fn corpus_as_is_never_panics() {
    for msg in corpus_messages() {
        check(msg);
    }
}
