//! SIP messages out of packets: UDP datagrams as they are, TCP streams
//! reassembled (out-of-order segments held back, retransmitted bytes
//! dropped, several messages in one segment and one message across
//! segments framed by Content-Length, RFC 3261 18.3). SIP over SCTP or
//! WebSocket is recognised and reported, not replayed.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use super::capture::{Packet, L4};
use crate::proxy::Transport;
use crate::sip::framing::{stream_frame, StreamFrame};

/// One SIP message as the capture saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// Nanoseconds since the Unix epoch (of the packet that completed it).
    pub ts_ns: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transport: Transport,
    pub data: Vec<u8>,
}

/// Why a capture is not replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unsupported {
    Sctp {
        messages: usize,
    },
    WebSocket {
        connection: (SocketAddr, SocketAddr),
    },
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsupported::Sctp { messages } => write!(
                f,
                "SIP over SCTP ({messages} packets with SIP) is not supported: siptrack speaks UDP and TCP"
            ),
            Unsupported::WebSocket { connection: (a, b) } => write!(
                f,
                "SIP over WebSocket ({a} -> {b}) is not supported: siptrack speaks UDP and TCP"
            ),
        }
    }
}

/// Whether a datagram or the start of a stream is a SIP message: a
/// request line ending in SIP/2.0 or a status line.
pub fn looks_like_sip(b: &[u8]) -> bool {
    let line_end = b
        .iter()
        .position(|&c| c == b'\r' || c == b'\n')
        .unwrap_or(b.len());
    let line = &b[..line_end];
    line.starts_with(b"SIP/2.0 ") || (line.ends_with(b" SIP/2.0") && line.contains(&b':'))
}

fn contains_ic(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// One direction of a TCP connection.
#[derive(Default)]
struct Flow {
    next: Option<u32>,
    /// Segments ahead of `next`, by sequence number.
    ahead: BTreeMap<u32, Vec<u8>>,
    buf: Vec<u8>,
    broken: bool,
}

impl Flow {
    /// Takes a segment; returns the bytes that are now in order.
    fn segment(&mut self, seq: u32, syn: bool, data: &[u8]) -> bool {
        if syn {
            self.next = Some(seq.wrapping_add(1));
            if data.is_empty() {
                return false;
            }
        }
        let next = *self.next.get_or_insert(seq);
        if data.is_empty() {
            return false;
        }
        let off = seq.wrapping_sub(next) as i32;
        if off > 0 {
            self.ahead.entry(seq).or_insert_with(|| data.to_vec());
            return false;
        }
        let skip = off.unsigned_abs() as usize;
        if skip >= data.len() {
            return false; // all retransmitted
        }
        self.buf.extend_from_slice(&data[skip..]);
        let mut next = next.wrapping_add((data.len() - skip) as u32);
        // Held segments that now join up (or were overtaken).
        while let Some((&s, _)) = self
            .ahead
            .iter()
            .find(|(s, _)| (s.wrapping_sub(next) as i32) <= 0)
        {
            let d = self.ahead.remove(&s).unwrap_or_default();
            let skip = next.wrapping_sub(s) as usize;
            if skip < d.len() {
                self.buf.extend_from_slice(&d[skip..]);
                next = next.wrapping_add((d.len() - skip) as u32);
            }
        }
        self.next = Some(next);
        true
    }
}

/// The UDP datagrams that may be media: not SIP, with RTP's version 2
/// (RTP and RTCP alike; keep-alives and other protocols are left out),
/// in capture order.
pub fn media_datagrams(packets: &[Packet]) -> Vec<Captured> {
    packets
        .iter()
        .filter(|p| p.l4 == L4::Udp && p.payload.len() >= 8 && p.payload[0] >> 6 == 2)
        .filter(|p| !looks_like_sip(&p.payload))
        .map(|p| Captured {
            ts_ns: p.ts_ns,
            src: p.src,
            dst: p.dst,
            transport: Transport::Udp,
            data: p.payload.clone(),
        })
        .collect()
}

/// Everything SIP in the packets, in capture order.
pub fn sip_messages(
    packets: &[Packet],
    max_message_bytes: usize,
) -> Result<Vec<Captured>, Unsupported> {
    let mut out = Vec::new();
    let mut flows: HashMap<(SocketAddr, SocketAddr), Flow> = HashMap::new();
    let mut sctp = 0;
    for p in packets {
        match p.l4 {
            L4::Udp => {
                if looks_like_sip(&p.payload) {
                    out.push(Captured {
                        ts_ns: p.ts_ns,
                        src: p.src,
                        dst: p.dst,
                        transport: Transport::Udp,
                        data: p.payload.clone(),
                    });
                }
            }
            L4::Sctp => {
                if contains_ic(&p.payload, b"SIP/2.0") {
                    sctp += 1;
                }
            }
            L4::Tcp { seq, syn, fin: _ } => {
                let flow = flows.entry((p.src, p.dst)).or_default();
                if !flow.segment(seq, syn, &p.payload) || flow.broken {
                    continue;
                }
                // The upgrade of a WebSocket connection (RFC 7118).
                if (flow.buf.starts_with(b"GET ") && contains_ic(&flow.buf, b"upgrade: websocket"))
                    || flow.buf.starts_with(b"HTTP/1.1 101")
                {
                    return Err(Unsupported::WebSocket {
                        connection: (p.src, p.dst),
                    });
                }
                loop {
                    match stream_frame(&flow.buf, max_message_bytes) {
                        StreamFrame::Complete(n) => {
                            let data: Vec<u8> = flow.buf.drain(..n).collect();
                            if looks_like_sip(&data) {
                                out.push(Captured {
                                    ts_ns: p.ts_ns,
                                    src: p.src,
                                    dst: p.dst,
                                    transport: Transport::Tcp,
                                    data,
                                });
                            }
                        }
                        StreamFrame::KeepAlive { len, .. } => {
                            flow.buf.drain(..len);
                        }
                        StreamFrame::Incomplete => break,
                        StreamFrame::Invalid(_) => {
                            // Not SIP (or broken beyond framing): ignore the
                            // rest of this direction.
                            flow.broken = true;
                            flow.buf.clear();
                            break;
                        }
                    }
                }
            }
        }
    }
    if sctp > 0 {
        return Err(Unsupported::Sctp { messages: sctp });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn seg(seq: u32, syn: bool, data: &[u8], ts: u64) -> Packet {
        Packet {
            ts_ns: ts,
            src: a(5060),
            dst: a(5061),
            l4: L4::Tcp {
                seq,
                syn,
                fin: false,
            },
            payload: data.to_vec(),
        }
    }

    const M1: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 4\r\n\r\nbody";
    const M2: &[u8] = b"SIP/2.0 200 OK\r\nCall-ID: 2\r\nContent-Length: 0\r\n\r\n";

    fn datas(m: &[Captured]) -> Vec<&[u8]> {
        m.iter().map(|c| c.data.as_slice()).collect()
    }

    #[test]
    fn one_message_across_segments_and_two_in_one() {
        let both = [M1, M2].concat();
        let split = 30;
        let pkts = vec![
            seg(100, true, b"", 1),
            seg(101, false, &both[..split], 2),
            seg(101 + split as u32, false, &both[split..], 3),
        ];
        let m = sip_messages(&pkts, 65535).expect("tcp");
        assert_eq!(datas(&m), vec![M1, M2]);
        assert_eq!(
            (m[0].ts_ns, m[1].ts_ns),
            (3, 3),
            "completed by the last segment"
        );
        assert!(m.iter().all(|c| c.transport == Transport::Tcp));
    }

    #[test]
    fn retransmitted_and_out_of_order_segments() {
        let both = [M1, M2].concat();
        let (x, y) = (20usize, 50usize);
        let pkts = vec![
            seg(1000, false, &both[..x], 1),
            // The third part arrives before the second.
            seg(1000 + y as u32, false, &both[y..], 2),
            // The first part again (retransmission), then one overlapping
            // what we have and what is missing.
            seg(1000, false, &both[..x], 3),
            seg(1000 + x as u32 - 5, false, &both[x - 5..y], 4),
            // And the end once more.
            seg(1000 + y as u32, false, &both[y..], 5),
        ];
        let m = sip_messages(&pkts, 65535).expect("tcp");
        assert_eq!(datas(&m), vec![M1, M2]);
        assert_eq!(m[0].ts_ns, 4);
    }

    #[test]
    fn udp_sip_is_kept_and_the_rest_ignored() {
        let udp = |payload: &[u8]| Packet {
            ts_ns: 0,
            src: a(1),
            dst: a(2),
            l4: L4::Udp,
            payload: payload.to_vec(),
        };
        let rtp = b"\x80\x00\x00\x01rtp-header";
        let packets = [
            udp(M2),
            udp(rtp),
            udp(b"\r\n\r\n"),
            udp(b"\x00\x01stun...."),
        ];
        let m = sip_messages(&packets, 65535).expect("udp");
        assert_eq!(datas(&m), vec![M2]);
        // The other way round: media (version 2), not SIP, keep-alives or STUN.
        assert_eq!(datas(&media_datagrams(&packets)), vec![&rtp[..]]);
    }

    #[test]
    fn sctp_and_websocket_are_refused_by_name() {
        let sctp = Packet {
            ts_ns: 0,
            src: a(1),
            dst: a(2),
            l4: L4::Sctp,
            payload: M1.to_vec(),
        };
        let e = sip_messages(&[sctp], 65535).expect_err("sctp");
        assert!(e.to_string().contains("SIP over SCTP"), "{e}");
        let ws = seg(
            1,
            false,
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: sip\r\n\r\n",
            0,
        );
        let e = sip_messages(&[ws], 65535).expect_err("ws");
        assert!(e.to_string().contains("SIP over WebSocket"), "{e}");
    }
}
