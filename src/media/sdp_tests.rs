use std::net::IpAddr;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

/// SIPp's built-in uac scenario after keyword substitution (LF endings as
/// SIPp sends them from its XML).
const SIPP: &[u8] = b"v=0\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\n\
s=-\n\
c=IN IP4 127.0.0.1\n\
t=0 0\n\
m=audio 6000 RTP/AVP 0\n\
a=rtpmap:0 PCMU/8000\n";

/// baresip 3.x: rtcp-mux, telephone-event, explicit direction.
const BARESIP: &[u8] = b"v=0\r\n\
o=- 1804289383 846930886 IN IP4 192.168.1.10\r\n\
s=-\r\n\
c=IN IP4 192.168.1.10\r\n\
t=0 0\r\n\
m=audio 10000 RTP/AVP 0 8 101\r\n\
b=AS:64\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=rtcp-mux\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n\
a=label:1\r\n\
a=ssrc:4104953716 cname:4a9e3c0a-5b2f\r\n";

/// Asterisk (chan_pjsip) with an explicit RTCP port and address.
const ASTERISK: &[u8] = b"v=0\r\n\
o=- 1234 1236 IN IP4 10.0.0.5\r\n\
s=Asterisk\r\n\
c=IN IP4 10.0.0.5\r\n\
t=0 0\r\n\
m=audio 14562 RTP/AVP 8 0 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=rtcp:14563 IN IP4 10.0.0.5\r\n\
a=ptime:20\r\n\
a=maxptime:150\r\n\
a=sendrecv\r\n";

/// A hold re-INVITE the old way (RFC 2543 c=0.0.0.0) and the new (sendonly).
const HOLD_ZERO: &[u8] = b"v=0\r\n\
o=- 1234 1237 IN IP4 10.0.0.5\r\n\
s=-\r\n\
c=IN IP4 0.0.0.0\r\n\
t=0 0\r\n\
m=audio 14562 RTP/AVP 8\r\n\
a=rtpmap:8 PCMA/8000\r\n";

const HOLD_SENDONLY: &[u8] = b"v=0\r\n\
o=- 1234 1238 IN IP4 10.0.0.5\r\n\
s=-\r\n\
c=IN IP4 10.0.0.5\r\n\
t=0 0\r\n\
a=sendonly\r\n\
m=audio 14562 RTP/AVP 8\r\n\
a=rtpmap:8 PCMA/8000\r\n";

/// Two streams, each with its own c= (the RFC 5118 mult-ip-in-sdp shape),
/// the second IPv6 and disabled video after them.
const TWO_MEDIA: &[u8] = b"v=0\r\n\
o=bob 280744730 28977631 IN IP4 host.example.com\r\n\
s=\r\n\
t=0 0\r\n\
m=audio 22334 RTP/AVP 0\r\n\
c=IN IP4 192.0.2.1\r\n\
m=video 6024 RTP/AVP 107\r\n\
c=IN IP6 2001:db8::1\r\n\
a=rtpmap:107 H263-1998/90000\r\n\
a=inactive\r\n\
m=video 0 RTP/AVP 96\r\n";

const IPV6: &[u8] = b"v=0\r\n\
o=- 1 1 IN IP6 2001:db8::9:1\r\n\
s=-\r\n\
c=IN IP6 2001:db8::9:1\r\n\
t=0 0\r\n\
m=audio 3456/2 RTP/AVP 0 8\r\n\
a=recvonly\r\n";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn anchor(rtp: u16) -> Option<Anchor> {
    Some(Anchor { rtp, rtcp: rtp + 1 })
}

/// What one stream of a row should parse to.
type Want = (
    &'static str,  // media
    u16,           // port
    &'static [u8], // payload types
    &'static str,  // effective c= address
    Direction,     // effective direction
    bool,          // hold
    Option<u16>,   // a=rtcp port
    bool,          // rtcp-mux
);

struct Row {
    name: &'static str,
    body: &'static [u8],
    media: &'static [Want],
}

#[test]
fn parse_table() {
    use Direction::*;
    let rows = [
        Row {
            name: "sipp",
            body: SIPP,
            media: &[(
                "audio",
                6000,
                &[0],
                "127.0.0.1",
                SendRecv,
                false,
                None,
                false,
            )],
        },
        Row {
            name: "baresip",
            body: BARESIP,
            media: &[(
                "audio",
                10000,
                &[0, 8, 101],
                "192.168.1.10",
                SendRecv,
                false,
                None,
                true,
            )],
        },
        Row {
            name: "asterisk",
            body: ASTERISK,
            media: &[(
                "audio",
                14562,
                &[8, 0, 101],
                "10.0.0.5",
                SendRecv,
                false,
                Some(14563),
                false,
            )],
        },
        Row {
            name: "hold c=0.0.0.0",
            body: HOLD_ZERO,
            media: &[("audio", 14562, &[8], "0.0.0.0", SendRecv, true, None, false)],
        },
        Row {
            name: "hold sendonly (session level)",
            body: HOLD_SENDONLY,
            media: &[(
                "audio",
                14562,
                &[8],
                "10.0.0.5",
                SendOnly,
                true,
                None,
                false,
            )],
        },
        Row {
            name: "two media, own c= each, disabled video",
            body: TWO_MEDIA,
            media: &[
                (
                    "audio",
                    22334,
                    &[0],
                    "192.0.2.1",
                    SendRecv,
                    false,
                    None,
                    false,
                ),
                (
                    "video",
                    6024,
                    &[107],
                    "2001:db8::1",
                    Inactive,
                    true,
                    None,
                    false,
                ),
                ("video", 0, &[96], "", SendRecv, false, None, false),
            ],
        },
        Row {
            name: "ipv6 with port count",
            body: IPV6,
            media: &[(
                "audio",
                3456,
                &[0, 8],
                "2001:db8::9:1",
                RecvOnly,
                false,
                None,
                false,
            )],
        },
    ];
    for row in rows {
        let sdp = Sdp::parse(row.body).unwrap_or_else(|e| panic!("{}: {e}", row.name));
        assert_eq!(sdp.media.len(), row.media.len(), "{}", row.name);
        for (i, want) in row.media.iter().enumerate() {
            let m = &sdp.media[i];
            let (media, port, pts, addr, dir, hold, rtcp, mux) = *want;
            assert_eq!(m.media, media.as_bytes(), "{} #{i}", row.name);
            assert_eq!(m.port, port, "{} #{i}", row.name);
            assert_eq!(
                m.payload_types().collect::<Vec<_>>(),
                pts,
                "{} #{i}",
                row.name
            );
            let c = sdp.connection_of(i).map(|c| c.address).unwrap_or(b"");
            assert_eq!(c, addr.as_bytes(), "{} #{i}", row.name);
            assert_eq!(sdp.direction_of(i), dir, "{} #{i}", row.name);
            assert_eq!(sdp.is_hold(i), hold, "{} #{i}", row.name);
            assert_eq!(m.rtcp.map(|r| r.port), rtcp, "{} #{i}", row.name);
            assert_eq!(m.rtcp_mux, mux, "{} #{i}", row.name);
            assert!(m.is_rtp());
        }
    }
    let baresip = Sdp::parse(BARESIP).expect("baresip");
    let maps: Vec<_> = baresip.media[0]
        .rtpmaps
        .iter()
        .map(|r| (r.payload_type, r.encoding, r.clock_rate))
        .collect();
    assert_eq!(
        maps,
        [
            (0, &b"PCMU"[..], 8000),
            (8, &b"PCMA"[..], 8000),
            (101, &b"telephone-event"[..], 8000)
        ]
    );
    let odd = Sdp::parse(b"v=0\r\nm=audio 1 RTP/AVP 96\r\na=rtpmap:x\r\na=rtpmap:300 A/1\r\na=rtpmap:96 opus/48000/2\r\n")
        .expect("unreadable rtpmaps are skipped");
    assert_eq!(odd.media[0].rtpmaps.len(), 1);
    let v6 = Sdp::parse(IPV6).expect("ipv6");
    assert_eq!(v6.media[0].port_count, Some(2));
    assert_eq!(v6.connection.expect("c=").ip(), Some(ip("2001:db8::9:1")));
}

#[test]
fn rewrite_table() {
    type RewriteRow = (
        &'static str,
        &'static [u8],
        IpAddr,
        Vec<Option<Anchor>>,
        &'static [u8],
    );
    let rows: [RewriteRow; 7] = [
        (
            "sipp, LF endings kept",
            SIPP,
            ip("203.0.113.7"),
            vec![anchor(30000)],
            b"v=0\no=user1 53655765 2353687637 IN IP4 127.0.0.1\ns=-\nc=IN IP4 203.0.113.7\nt=0 0\nm=audio 30000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n",
        ),
        (
            "baresip, rtcp-mux kept",
            BARESIP,
            ip("203.0.113.7"),
            vec![anchor(30002)],
            b"v=0\r\no=- 1804289383 846930886 IN IP4 192.168.1.10\r\ns=-\r\nc=IN IP4 203.0.113.7\r\nt=0 0\r\nm=audio 30002 RTP/AVP 0 8 101\r\nb=AS:64\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=rtcp-mux\r\na=ptime:20\r\na=sendrecv\r\na=label:1\r\na=ssrc:4104953716 cname:4a9e3c0a-5b2f\r\n",
        ),
        (
            "asterisk, a=rtcp port and address",
            ASTERISK,
            ip("203.0.113.7"),
            vec![anchor(39998)],
            b"v=0\r\no=- 1234 1236 IN IP4 10.0.0.5\r\ns=Asterisk\r\nc=IN IP4 203.0.113.7\r\nt=0 0\r\nm=audio 39998 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=rtcp:39999 IN IP4 203.0.113.7\r\na=ptime:20\r\na=maxptime:150\r\na=sendrecv\r\n",
        ),
        (
            "hold keeps 0.0.0.0",
            HOLD_ZERO,
            ip("203.0.113.7"),
            vec![anchor(30000)],
            b"v=0\r\no=- 1234 1237 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 30000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n",
        ),
        (
            "two media; disabled stream keeps port 0; v6 c= becomes ours",
            TWO_MEDIA,
            ip("203.0.113.7"),
            vec![anchor(30000), anchor(30002), anchor(30004)],
            b"v=0\r\no=bob 280744730 28977631 IN IP4 host.example.com\r\ns=\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP4 203.0.113.7\r\nm=video 30002 RTP/AVP 107\r\nc=IN IP4 203.0.113.7\r\na=rtpmap:107 H263-1998/90000\r\na=inactive\r\nm=video 0 RTP/AVP 96\r\n",
        ),
        (
            "ipv6 anchor, port count kept",
            IPV6,
            ip("2001:db8::53"),
            vec![anchor(30010)],
            b"v=0\r\no=- 1 1 IN IP6 2001:db8::9:1\r\ns=-\r\nc=IN IP6 2001:db8::53\r\nt=0 0\r\nm=audio 30010/2 RTP/AVP 0 8\r\na=recvonly\r\n",
        ),
        (
            "stream without anchor keeps its port",
            SIPP,
            ip("::1"),
            vec![None],
            b"v=0\no=user1 53655765 2353687637 IN IP4 127.0.0.1\ns=-\nc=IN IP6 ::1\nt=0 0\nm=audio 6000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n",
        ),
    ];
    let muxed: &[u8] = b"v=0\r\nc=IN IP4 10.1.1.1\r\nt=0 0\r\nm=audio 7078 RTP/AVP 0\r\na=rtcp:7078\r\na=rtcp-mux\r\n";
    let rows = rows.into_iter().chain([(
        "rtcp-mux with a=rtcp on the RTP port",
        muxed,
        ip("203.0.113.7"),
        vec![Some(Anchor { rtp: 30020, rtcp: 30020 })],
        &b"v=0\r\nc=IN IP4 203.0.113.7\r\nt=0 0\r\nm=audio 30020 RTP/AVP 0\r\na=rtcp:30020\r\na=rtcp-mux\r\n"[..],
    )]);
    for (name, body, addr, anchors, want) in rows {
        let sdp = Sdp::parse(body).expect(name);
        let got = sdp.rewrite(addr, &anchors);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "{name}"
        );
    }
}

#[test]
fn refusals() {
    let rows: [(&[u8], SdpError); 6] = [
        (b"v=0\r\nm=audio x RTP/AVP 0\r\n", SdpError::BadMedia(2)),
        (b"v=0\r\nm=audio 70000 RTP/AVP 0\r\n", SdpError::BadMedia(2)),
        (
            b"v=0\r\nc=IN IP4\r\nm=audio 1 RTP/AVP 0\r\n",
            SdpError::BadConnection(2),
        ),
        (
            b"v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:abc\r\n",
            SdpError::BadRtcp(3),
        ),
        (b"v=0\r\nhello\r\n", SdpError::BadLine(2)),
        (b"v=0\r\ns=-\r\n", SdpError::NoMedia),
    ];
    for (body, want) in rows {
        assert_eq!(
            Sdp::parse(body),
            Err(want),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn body_and_content_length_replaced() {
    let msg = format!(
        "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nl:  {}\r\n\r\n{}",
        SIPP.len(),
        String::from_utf8_lossy(SIPP)
    );
    let m = Message::parse(Bytes::from(msg.clone()), true).expect("message");
    let sdp = Sdp::parse(m.body_bytes()).expect("sdp");
    let body = sdp.rewrite(ip("2001:db8::53"), &[anchor(30000)]);
    let mut patch = Patch::new();
    patch_body(&m, &body, &mut patch);
    let out = patch.apply(m.buf(), m.wire().len());
    let out = Message::parse(Bytes::from(out), false).expect("reparsed");
    assert_eq!(out.body_bytes(), &body[..]);
    assert_eq!(
        out.value(HeaderName::ContentLength),
        Some(body.len().to_string().as_bytes())
    );
    assert!(out.defect.is_none());
    // The compact name and the spacing around the value stay as they came.
    assert!(String::from_utf8_lossy(out.wire()).contains(&format!("\r\nl:  {}\r\n", body.len())));
}

fn sdp_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"v=0".to_vec()),
        Just(b"c=IN IP4 10.0.0.1".to_vec()),
        Just(b"c=IN IP6 ::".to_vec()),
        Just(b"a=rtcp-mux".to_vec()),
        Just(b"a=sendonly".to_vec()),
        (0u32..70000).prop_map(|p| format!("m=audio {p} RTP/AVP 0 8").into_bytes()),
        (0u32..70000).prop_map(|p| format!("a=rtcp:{p} IN IP4 1.2.3.4").into_bytes()),
        "[a-z]=[ -~]{0,20}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(sdp) = Sdp::parse(&bytes) {
            let _ = sdp.rewrite(ip("10.9.9.9"), &[anchor(30000), anchor(30002)]);
        }
    }

    /// SDP-shaped garbage: rewriting changes only ports and addresses, so a
    /// rewrite to the very same values gives the body back byte for byte,
    /// and a rewrite to ours parses to ours.
    #[test]
    fn rewrite_touches_only_addresses_and_ports(
        lines in proptest::collection::vec(sdp_line(), 1..12),
        crlf in any::<bool>(),
    ) {
        let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let body = lines.join(eol);
        if let Ok(sdp) = Sdp::parse(&body) {
            let anchors: Vec<_> = sdp.media.iter().map(|_| anchor(31000)).collect();
            let out = sdp.rewrite(ip("192.0.2.99"), &anchors);
            let again = Sdp::parse(&out).expect("rewritten body parses");
            prop_assert_eq!(again.media.len(), sdp.media.len());
            for (i, m) in again.media.iter().enumerate() {
                let want = if sdp.media[i].port == 0 { 0 } else { 31000 };
                prop_assert_eq!(m.port, want);
                if let Some(r) = m.rtcp { prop_assert_eq!(r.port, 31001); }
                if let Some(c) = again.connection_of(i) {
                    prop_assert!(c.is_hold() || c.address == b"192.0.2.99");
                }
            }
            prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(),
                            body.iter().filter(|&&b| b == b'\n').count());
        }
    }
}
