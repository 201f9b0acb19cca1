use bytes::Bytes;

use super::*;
use crate::calls::CallInfo;
use crate::proxy::Transport;

const CALLER_SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=rtcp:4001\r\na=sendrecv\r\n";
const CALLEE_SDP: &str = "v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";
const G729_SDP: &str = "v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
const HOLD_SDP: &str = "v=0\r\no=- 2 3 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 5000 RTP/AVP 8\r\na=sendonly\r\n";
const MUX_SDP: &str = "v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 8\r\na=rtcp:5000\r\na=rtcp-mux\r\n";

fn a(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn msg(
    first: &str,
    from_tag: &str,
    to_tag: Option<&str>,
    cseq: &str,
    sdp: Option<&str>,
) -> Message {
    let body = sdp.unwrap_or("");
    let to = match to_tag {
        Some(t) => format!("<sip:100@b>;tag={t}"),
        None => "<sip:100@b>".into(),
    };
    let ct = if sdp.is_some() {
        "Content-Type: application/sdp\r\n"
    } else {
        ""
    };
    let text = format!(
        "{first}\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:a@a>;tag={from_tag}\r\nTo: {to}\r\nCall-ID: c1@x\r\nCSeq: {cseq}\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    Message::parse(Bytes::from(text), true).expect("message")
}

fn anchor(enabled: bool, pairs: u16) -> Anchor {
    let ports = PortAllocator::new(30000, 30000 + pairs * 2 - 1, 0).expect("range");
    Anchor::new(
        MediaSettings {
            enabled,
            advertised_ip: "192.0.2.10".parse().expect("ip"),
            advertised_other: None,
        },
        Box::new(ports),
    )
}

fn hop(tracked: bool) -> NextHop {
    NextHop {
        peer: Peer {
            transport: Transport::Udp,
            addr: a("10.0.0.2:5060"),
        },
        request_uri: None,
        call: tracked.then(|| Box::new(CallInfo::default())),
    }
}

fn out(m: &Message, p: &mut Patch) -> String {
    String::from_utf8_lossy(&p.apply(m.buf(), m.body.end as usize)).into_owned()
}

fn body(text: &str) -> &str {
    text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn ctx() -> CallCtx<'static> {
    CallCtx {
        call_id: b"c1@x",
        from_tag: b"ft",
    }
}

fn invite(an: &mut Anchor, sdp: Option<&str>, tracked: bool) -> String {
    let m = msg("INVITE sip:100@b SIP/2.0", "ft", None, "1 INVITE", sdp);
    let mut p = Patch::new();
    let trunk = Peer {
        transport: Transport::Udp,
        addr: a("10.0.0.1:5060"),
    };
    an.on_routed(&m, trunk, &hop(tracked), 0, &mut p);
    out(&m, &mut p)
}

fn response(an: &mut Anchor, status: &str, cseq: &str, sdp: Option<&str>) -> String {
    let m = msg(status, "ft", Some("tt"), cseq, sdp);
    let mut p = Patch::new();
    an.on_response(ctx(), &m, 10, &mut p);
    out(&m, &mut p)
}

fn pair(rtp: u16) -> PortPair {
    PortPair { rtp, rtcp: rtp + 1 }
}

#[test]
fn early_offer_anchored_both_ways_and_recorded() {
    let mut an = anchor(true, 8);
    let fwd = invite(&mut an, Some(CALLER_SDP), true);
    // The callee is pointed at siptrack's callee-facing pair (30002/30003);
    // every other byte as it came; Content-Length follows the body.
    let want = CALLER_SDP
        .replace("c=IN IP4 10.0.0.1", "c=IN IP4 192.0.2.10")
        .replace("m=audio 4000", "m=audio 30002")
        .replace("a=rtcp:4001", "a=rtcp:30003");
    assert_eq!(body(&fwd), want);
    assert!(
        fwd.contains(&format!("Content-Length: {}\r\n", want.len())),
        "{fwd}"
    );
    let ok = response(&mut an, "SIP/2.0 200 OK", "1 INVITE", Some(CALLEE_SDP));
    let want = CALLEE_SDP
        .replace("c=IN IP4 10.0.0.2", "c=IN IP4 192.0.2.10")
        .replace("m=audio 5000", "m=audio 30000");
    assert_eq!(body(&ok), want);
    let cmds: Vec<Command> = an.take_commands().collect();
    let streams = vec![StreamPorts {
        caller: pair(30000),
        callee: pair(30002),
    }];
    assert_eq!(
        cmds[..3],
        [
            Command::Open {
                session: 1,
                streams,
                recorded: Some(0),
                // The trunk the INVITE came from, the PBX it went to.
                peers: [Some(a("10.0.0.1:1").ip()), Some(a("10.0.0.2:1").ip())],
            },
            Command::Update {
                session: 1,
                stream: 0,
                leg: Side::Caller,
                sdp: LegSdp {
                    rtp: Some(a("10.0.0.1:4000")),
                    rtcp: Some(a("10.0.0.1:4001")),
                    rtcp_mux: false,
                    hold: false
                }
            },
            Command::Update {
                session: 1,
                stream: 0,
                leg: Side::Callee,
                sdp: LegSdp {
                    rtp: Some(a("10.0.0.2:5000")),
                    rtcp: Some(a("10.0.0.2:5001")),
                    rtcp_mux: false,
                    hold: false
                }
            },
        ]
    );
    assert_eq!(cmds[4], Command::Answered { session: 1 });
    assert!(
        matches!(&cmds[3], Command::Record { session: 1, call_id, payloads }
            if call_id.as_ref() == b"c1@x" && payloads.codec(101) == Some(crate::media::recorder::Codec::TelephoneEvent)),
        "{cmds:?}"
    );
    assert_eq!(cmds.len(), 5);
    // A retransmitted 200 gives the same body (same ports).
    let again = response(&mut an, "SIP/2.0 200 OK", "1 INVITE", Some(CALLEE_SDP));
    assert_eq!(body(&again), body(&ok));
    an.take_commands().for_each(drop);
    // The callee holds (re-INVITE, c=0.0.0.0): the hold address stays.
    let m = msg(
        "INVITE sip:a@10.0.0.1 SIP/2.0",
        "tt",
        Some("ft"),
        "2 INVITE",
        Some(HOLD_SDP),
    );
    let mut p = Patch::new();
    an.on_request(
        CallCtx {
            call_id: b"c1@x",
            from_tag: b"tt",
        },
        &m,
        20,
        &mut p,
    );
    let held = out(&m, &mut p);
    assert_eq!(
        body(&held),
        HOLD_SDP.replace("m=audio 5000", "m=audio 30000")
    );
    // The relay learns it when the caller's 2xx accepts the offer.
    let cmds: Vec<Command> = an.take_commands().collect();
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::Update { .. })),
        "{cmds:?}"
    );
    let accepted = msg(
        "SIP/2.0 200 OK",
        "tt",
        Some("ft"),
        "2 INVITE",
        Some(CALLER_SDP),
    );
    let mut p = Patch::new();
    an.on_response(
        CallCtx {
            call_id: b"c1@x",
            from_tag: b"tt",
        },
        &accepted,
        25,
        &mut p,
    );
    let cmds: Vec<Command> = an.take_commands().collect();
    assert!(
        cmds.iter().any(|c| matches!(c, Command::Update { leg: Side::Callee, sdp, .. } if sdp.hold && sdp.rtp == Some(a("0.0.0.0:5000")))),
        "{cmds:?}"
    );
    // The end of the call gives both pairs back and closes the session.
    assert_eq!(an.close(b"c1@x", 30), Some(RecState::Started));
    assert_eq!(
        an.take_commands().collect::<Vec<_>>(),
        [Command::Close { session: 1 }]
    );
    assert_eq!(an.calls(), 0);
    let fwd = invite(&mut an, Some(CALLER_SDP), true);
    assert!(fwd.contains("m=audio 30"), "ports came back: {fwd}");
}

#[test]
fn late_offer_the_ack_answers() {
    let mut an = anchor(true, 8);
    let fwd = invite(&mut an, None, true);
    assert!(body(&fwd).is_empty());
    assert_eq!(an.take_commands().count(), 0);
    let ok = response(&mut an, "SIP/2.0 200 OK", "1 INVITE", Some(CALLEE_SDP));
    // Ports are taken at the first SDP; the caller is pointed at its pair.
    assert!(
        body(&ok).contains("m=audio 30000 RTP/AVP 8 101\r\n"),
        "{ok}"
    );
    let ack = msg(
        "ACK sip:100@10.0.0.2 SIP/2.0",
        "ft",
        Some("tt"),
        "1 ACK",
        Some(CALLER_SDP),
    );
    let mut p = Patch::new();
    an.on_request(ctx(), &ack, 20, &mut p);
    let ack = out(&ack, &mut p);
    assert!(body(&ack).contains("m=audio 30002 "), "{ack}");
    assert!(
        an.take_commands()
            .any(|c| matches!(c, Command::Record { .. })),
        "the ACK's answer decides the recording"
    );
}

#[test]
fn what_is_not_recorded_and_why() {
    // (name, enabled, pairs, tracked, answer, SDP rewritten?, reason)
    type Row = (
        &'static str,
        bool,
        u16,
        bool,
        &'static str,
        bool,
        Option<NoRecording>,
    );
    let rows: [Row; 5] = [
        (
            "G.729 answer: relayed, not recorded",
            true,
            8,
            true,
            G729_SDP,
            true,
            Some(NoRecording::Codec("G729".into())),
        ),
        (
            "one free pair for two: untouched",
            true,
            1,
            true,
            CALLEE_SDP,
            false,
            Some(NoRecording::NoPorts),
        ),
        (
            "record_calls = false: untouched, nothing kept",
            false,
            8,
            true,
            CALLEE_SDP,
            false,
            None,
        ),
        (
            "a call the router does not track",
            true,
            8,
            false,
            CALLEE_SDP,
            false,
            None,
        ),
        ("rtcp-mux answer", true, 8, true, MUX_SDP, true, None),
    ];
    for (name, enabled, pairs, tracked, answer, rewritten, reason) in rows {
        let mut an = anchor(enabled, pairs);
        let fwd = invite(&mut an, Some(CALLER_SDP), tracked);
        let ok = response(&mut an, "SIP/2.0 200 OK", "1 INVITE", Some(answer));
        assert_eq!(body(&fwd) != CALLER_SDP, rewritten, "{name}: {fwd}");
        assert_eq!(body(&ok) != answer, rewritten, "{name}: {ok}");
        let got: Vec<NoRecording> = an.take_unrecorded().map(|u| u.reason).collect();
        assert_eq!(
            got,
            reason.clone().into_iter().collect::<Vec<_>>(),
            "{name}"
        );
        let cmds: Vec<Command> = an.take_commands().collect();
        assert_eq!(
            cmds.iter().any(|c| matches!(c, Command::Record { .. })),
            rewritten && reason.is_none(),
            "{name}: {cmds:?}"
        );
        if !rewritten {
            assert!(cmds.is_empty(), "{name}: {cmds:?}");
        }
        if answer == MUX_SDP {
            // rtcp-mux kept; a=rtcp names the muxed RTP port.
            assert!(
                body(&ok).contains("m=audio 30000 RTP/AVP 8\r\na=rtcp:30000\r\na=rtcp-mux\r\n"),
                "{ok}"
            );
        }
    }
    let mut an = anchor(false, 8);
    invite(&mut an, Some(CALLER_SDP), true);
    assert_eq!(an.stats.unrecorded_disabled, 1);
    let mut an = anchor(true, 1);
    invite(&mut an, Some(CALLER_SDP), true);
    assert_eq!(an.stats.unrecorded_no_ports, 1);
}

#[test]
fn calls_nobody_closed_expire() {
    let mut an = anchor(true, 2);
    invite(&mut an, Some(CALLER_SDP), true);
    an.take_commands().for_each(drop);
    assert_eq!(an.expire(1_000, 1_000), 0);
    assert_eq!(an.expire(1_001, 1_000), 1);
    assert_eq!(
        an.take_commands().collect::<Vec<_>>(),
        [Command::Close { session: 1 }]
    );
    // Its ports are free again.
    let fwd = invite(&mut an, Some(CALLER_SDP), true);
    assert!(body(&fwd).contains("m=audio 30002 "), "{fwd}");
}

#[test]
fn an_sdp_it_cannot_read_passes_as_it_came_and_takes_no_ports() {
    // (offer, answer): the offer unreadable, or the answer.
    let bad = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio four RTP/AVP 0\r\n";
    let tcp = "v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=message 9 TCP/MSRP *\r\n";
    let no_c = "v=0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let unreadable = || {
        Some(NoRecording::Codec(
            "unreadable SDP (SDP line 3: unreadable m= line)".into(),
        ))
    };
    for (offer, answer, offer_kept, reason) in [
        (bad, CALLEE_SDP, true, unreadable()),
        (
            tcp,
            CALLEE_SDP,
            true,
            Some(NoRecording::Codec("media not over UDP/RTP".into())),
        ),
        (CALLER_SDP, bad, false, unreadable()),
        (
            no_c,
            CALLEE_SDP,
            true,
            Some(NoRecording::Codec(
                "unreadable SDP (a stream without a c= line)".into(),
            )),
        ),
    ] {
        let mut an = anchor(true, 8);
        let fwd = invite(&mut an, Some(offer), true);
        assert_eq!(body(&fwd) == offer, offer_kept, "{offer}");
        let ok = response(&mut an, "SIP/2.0 200 OK", "1 INVITE", Some(answer));
        let cmds: Vec<Command> = an.take_commands().collect();
        if offer_kept {
            // No ports: the answer passes too, nothing for the relay.
            assert_eq!(body(&ok), answer);
            assert!(cmds.is_empty(), "{cmds:?}");
        } else {
            // The answer it cannot read passes as it came; no recording decided.
            assert_eq!(body(&ok), bad);
            assert!(
                !cmds.iter().any(|c| matches!(c, Command::Record { .. })),
                "{cmds:?}"
            );
        }
        let got: Vec<NoRecording> = an.take_unrecorded().map(|u| u.reason).collect();
        assert_eq!(got, reason.clone().into_iter().collect::<Vec<_>>());
        let state = an.close(b"c1@x", 10);
        assert_eq!(state, reason.map(RecState::NotRecorded));
    }
}

/// Sockets that cannot be opened for want of file descriptors say so
/// (trial, 2026-12-02: `ulimit -n 256` read "no free media ports", and an
/// operator went looking at the port range).
#[test]
fn out_of_descriptors_is_its_own_reason() {
    struct NoFds;
    impl PortSource for NoFds {
        fn take(&mut self, _now: Millis) -> Result<PortPair, PortError> {
            Err(PortError::NoDescriptors)
        }
        fn give_back(&mut self, _pair: PortPair, _now: Millis) {}
    }
    let mut an = Anchor::new(
        MediaSettings {
            enabled: true,
            advertised_ip: "192.0.2.10".parse().expect("ip"),
            advertised_other: None,
        },
        Box::new(NoFds),
    );
    let fwd = invite(&mut an, Some(CALLER_SDP), true);
    assert_eq!(body(&fwd), CALLER_SDP, "passed through untouched");
    let got: Vec<NoRecording> = an.take_unrecorded().map(|u| u.reason).collect();
    assert_eq!(got, [NoRecording::NoDescriptors]);
    assert_eq!(
        got[0].to_string(),
        "out of file descriptors (raise the open files limit, ulimit -n)"
    );
}

/// A recorded call whose later SDP siptrack cannot anchor (a BFCP stream
/// over TCP, more than four streams, an unreadable body, no ports left):
/// that SDP passes as it came, the relay is told the media left (so its
/// silence ends nothing), the recording is cut there, and later SDPs pass
/// too (trial, 2026-12-02: a re-INVITE adding BFCP got the talking call
/// hung up as "RTP timeout" and recorded as complete).
#[test]
fn a_later_sdp_it_cannot_anchor_leaves_the_call_alone_from_there() {
    let bfcp = format!("{CALLER_SDP}m=application 9 TCP/BFCP *\r\na=setup:actpass\r\n");
    let many = format!("{CALLER_SDP}{}", "m=video 6000 RTP/AVP 96\r\n".repeat(4));
    let unreadable = format!("{CALLER_SDP}m=video six RTP/AVP 96\r\n");
    for (name, later) in [
        ("bfcp", bfcp.as_str()),
        ("five streams", many.as_str()),
        ("unreadable", unreadable.as_str()),
    ] {
        let mut an = anchor(true, 8);
        invite(&mut an, Some(CALLER_SDP), true);
        response(&mut an, "SIP/2.0 200 OK", "1 INVITE", Some(CALLEE_SDP));
        assert!(
            an.take_commands()
                .any(|c| matches!(c, Command::Record { .. })),
            "{name}: recorded at first"
        );
        let reinvite = |an: &mut Anchor, cseq: &str, sdp: &str| {
            let m = msg(
                "INVITE sip:100@10.0.0.2 SIP/2.0",
                "ft",
                Some("tt"),
                cseq,
                Some(sdp),
            );
            let mut p = Patch::new();
            an.on_request(ctx(), &m, 20, &mut p);
            out(&m, &mut p)
        };
        let fwd = reinvite(&mut an, "2 INVITE", later);
        assert_eq!(body(&fwd), later, "{name}: passed as it came");
        assert_eq!(
            an.take_commands().collect::<Vec<_>>(),
            [Command::LeftAlone { session: 1 }],
            "{name}"
        );
        // A plain audio offer later on passes too: anchoring one half of
        // the media again would point the sides at ports nobody relays.
        let fwd = reinvite(&mut an, "3 INVITE", CALLER_SDP);
        assert_eq!(body(&fwd), CALLER_SDP, "{name}");
        assert_eq!(an.take_commands().count(), 0, "{name}");
        assert_eq!(an.take_unrecorded().count(), 0, "{name}: it was recorded");
        assert_eq!(an.close(b"c1@x", 30), Some(RecState::Cut), "{name}");
    }
    // Left alone before the answer decided anything: not recorded, and
    // the relay still told (its streams are open).
    let mut an = anchor(true, 8);
    invite(&mut an, Some(CALLER_SDP), true);
    let ok = response(
        &mut an,
        "SIP/2.0 183 Session Progress",
        "1 INVITE",
        Some(&bfcp),
    );
    assert_eq!(body(&ok), bfcp);
    assert!(an
        .take_commands()
        .any(|c| c == Command::LeftAlone { session: 1 }));
    assert!(matches!(
        an.close(b"c1@x", 30),
        Some(RecState::NotRecorded(_))
    ));
}

/// Each side's SDP names siptrack at an address of that side's family
/// when there is one (trial, 2026-12-03: an IPv6 caller was answered
/// `c=IN IP4` and got no audio).
#[test]
fn an_ipv6_caller_is_answered_with_siptracks_ipv6_address() {
    let v6_sdp = "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8\r\n";
    let mut an = Anchor::new(
        MediaSettings {
            enabled: true,
            advertised_ip: "192.0.2.10".parse().expect("ip"),
            advertised_other: Some("2001:db8::10".parse().expect("ip")),
        },
        Box::new(PortAllocator::new(30000, 30015, 0).expect("range")),
    );
    let m = msg(
        "INVITE sip:100@b SIP/2.0",
        "ft",
        None,
        "1 INVITE",
        Some(v6_sdp),
    );
    let mut p = Patch::new();
    let trunk = Peer {
        transport: Transport::Udp,
        addr: a("[2001:db8::1]:5060"),
    };
    an.on_routed(&m, trunk, &hop(true), 0, &mut p);
    let fwd = out(&m, &mut p);
    // The IPv4 PBX is given the IPv4 address …
    assert!(body(&fwd).contains("c=IN IP4 192.0.2.10\r\n"), "{fwd}");
    // … and the IPv6 caller the IPv6 one.
    let ok = response(&mut an, "SIP/2.0 200 OK", "1 INVITE", Some(CALLEE_SDP));
    assert!(body(&ok).contains("c=IN IP6 2001:db8::10\r\n"), "{ok}");

    // (advertised, other, the peer, the address its SDP names)
    for (main, other, peer, want) in [
        (
            "192.0.2.10",
            Some("2001:db8::10"),
            Some("2001:db8::1"),
            "2001:db8::10",
        ),
        (
            "192.0.2.10",
            Some("2001:db8::10"),
            Some("10.0.0.1"),
            "192.0.2.10",
        ),
        ("192.0.2.10", Some("2001:db8::10"), None, "192.0.2.10"),
        // No address of the peer's family: the one there is.
        ("192.0.2.10", None, Some("2001:db8::1"), "192.0.2.10"),
        (
            "2001:db8::10",
            Some("192.0.2.10"),
            Some("10.0.0.1"),
            "192.0.2.10",
        ),
    ] {
        let s = MediaSettings {
            enabled: true,
            advertised_ip: main.parse().expect("ip"),
            advertised_other: other.map(|o| o.parse().expect("ip")),
        };
        let peer = peer.map(|p| p.parse().expect("ip"));
        assert_eq!(
            s.advertised_for(peer),
            want.parse::<IpAddr>().expect("ip"),
            "{main} {other:?} {peer:?}"
        );
    }
}

/// An offer siptrack cannot anchor whole leaves the call's media alone,
/// both ways, with the reason: a SIP-I/SIP-T multipart body (SDP and
/// ISUP), and SRTP (trial, 2026-12-03: the multipart offer went on
/// unanchored while its plain answer was anchored, media half through
/// siptrack, "no media negotiated"; SRTP was recorded as noise), and a
/// multicast one (a later trial: its `/ttl` stayed on siptrack's unicast
/// address, which RFC 4566 does not allow).
#[test]
fn multipart_and_srtp_offers_leave_the_media_alone() {
    let multipart_body = format!(
        "--b1\r\nContent-Type: application/sdp\r\n\r\n{CALLER_SDP}\r\n--b1\r\n\
         Content-Type: application/isup;version=itu-t92+\r\n\r\nxyz\r\n--b1--\r\n"
    );
    let srtp = CALLER_SDP.replace(
        "RTP/AVP 0 8 101",
        "RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
    );
    let multicast = CALLER_SDP.replace("c=IN IP4 10.0.0.1", "c=IN IP4 224.2.1.1/127");
    let cases = [
        (
            "application/sdp",
            multicast.as_str(),
            "codec not recorded: multicast media",
        ),
        (
            "multipart/mixed;boundary=b1",
            multipart_body.as_str(),
            "codec not recorded: SDP in a multipart body (SIP-I/SIP-T): media left alone",
        ),
        (
            "application/sdp",
            srtp.as_str(),
            "codec not recorded: encrypted media (SRTP)",
        ),
    ];
    for (ctype, offer, reason) in cases {
        let mut an = anchor(true, 8);
        let text = format!(
            "INVITE sip:100@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:a@a>;tag=ft\r\nTo: <sip:100@b>\r\nCall-ID: c1@x\r\nCSeq: 1 INVITE\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{offer}",
            offer.len()
        );
        let m = Message::parse(Bytes::from(text), true).expect("message");
        let mut p = Patch::new();
        let trunk = Peer {
            transport: Transport::Udp,
            addr: a("10.0.0.1:5060"),
        };
        an.on_routed(&m, trunk, &hop(true), 0, &mut p);
        assert_eq!(
            body(&out(&m, &mut p)),
            offer,
            "{ctype}: the offer as it came"
        );
        let ok = response(&mut an, "SIP/2.0 200 OK", "1 INVITE", Some(CALLEE_SDP));
        assert_eq!(body(&ok), CALLEE_SDP, "{ctype}: the answer as it came");
        let got: Vec<String> = an.take_unrecorded().map(|u| u.reason.to_string()).collect();
        assert_eq!(got, [reason], "{ctype}");
        let cmds: Vec<Command> = an.take_commands().collect();
        assert!(
            !cmds
                .iter()
                .any(|c| matches!(c, Command::Open { .. } | Command::Record { .. })),
            "{ctype}: {cmds:?}"
        );
    }
}

/// A re-offer the other side refuses (488, 491) leaves the session as it
/// was (RFC 3264 8): the relay keeps sending where it did; an accepted
/// one moves it (trial, 2026-12-03: after a 488 the media went to the
/// refused offer's port until the offerer sent again).
#[test]
fn a_refused_reoffer_leaves_the_media_where_it_was() {
    for (code, moved) in [
        ("488 Not Acceptable Here", false),
        ("491 Request Pending", false),
        ("200 OK", true),
    ] {
        let mut an = anchor(true, 8);
        invite(&mut an, Some(CALLER_SDP), true);
        response(&mut an, "SIP/2.0 200 OK", "1 INVITE", Some(CALLEE_SDP));
        an.take_commands().for_each(drop);
        let moved_sdp = CALLER_SDP.replace("m=audio 4000", "m=audio 4100");
        let m = msg(
            "INVITE sip:100@b SIP/2.0",
            "ft",
            Some("tt"),
            "2 INVITE",
            Some(&moved_sdp),
        );
        let mut p = Patch::new();
        an.on_request(ctx(), &m, 20, &mut p);
        let on_offer: Vec<Command> = an.take_commands().collect();
        assert!(
            !on_offer.iter().any(|c| matches!(c, Command::Update { .. })),
            "{code}: {on_offer:?}"
        );
        let answer = (code == "200 OK").then_some(CALLEE_SDP);
        response(&mut an, &format!("SIP/2.0 {code}"), "2 INVITE", answer);
        let cmds: Vec<Command> = an.take_commands().collect();
        let caller_moved = cmds.iter().any(|c| {
            matches!(c, Command::Update { leg: Side::Caller, sdp, .. } if sdp.rtp == Some(a("10.0.0.1:4100")))
        });
        assert_eq!(caller_moved, moved, "{code}: {cmds:?}");
        // A refused offer is forgotten: a later 2xx does not apply it.
        if !moved {
            response(&mut an, "SIP/2.0 200 OK", "2 INVITE", Some(CALLEE_SDP));
            let later: Vec<Command> = an.take_commands().collect();
            assert!(
                !later.iter().any(|c| matches!(
                    c,
                    Command::Update {
                        leg: Side::Caller,
                        ..
                    }
                )),
                "{code}: {later:?}"
            );
        }
    }
}
