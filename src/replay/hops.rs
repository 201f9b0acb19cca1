//! Proxy hops in a capture (issue 11 item 12). A capture taken through
//! another proxy (baresip → Kamailio → baresip) holds each request twice:
//! as the caller sent it to the proxy, and as the proxy relayed it, with
//! the same Call-ID and CSeq and the proxy's Via on top of the caller's.
//! Fed both, siptrack would see the relayed copy as a second call. The
//! replay instead stands where that proxy stood: the requests sent *to* it
//! go in, its relayed copies do not, the far side's answers *to* it are the
//! answers to what siptrack forwards, and its own answers upstream are left
//! to siptrack to make.
//!
//! A copy is recognised by its Vias alone (a request whose Via list is an
//! earlier request's with one more on top, same Call-ID and CSeq, sent by
//! the address that received the earlier one), so it needs no config and
//! no knowledge of the proxy. Pure: captured messages in, a lookup out.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;

use super::engine::{key_of, Key};
use super::stream::Captured;
use super::text;
use crate::proxy::Transport;

/// What a captured message is to the replay once the hops are known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not in a relayed transaction, or its original request: the
    /// replay's usual rules apply.
    Other,
    /// A request a proxy relayed (its copy of an earlier request, or the
    /// hop-by-hop CANCEL or ACK it made for a relayed INVITE): not fed,
    /// siptrack sends its own.
    Relayed,
    /// A response sent to the proxy siptrack stands in for, by the next
    /// hop: the answer to siptrack's forwarded request, the proxy's Via
    /// on top replaced by siptrack's.
    Answer,
    /// Any other response of a relayed transaction (the proxy relaying an
    /// answer upstream, or its own 100 Trying): siptrack makes these.
    Dropped,
}

/// One relayed transaction (Call-ID, CSeq number and method).
#[derive(Default, Debug)]
struct Hop {
    /// The proxy siptrack stands in for: the address that received the
    /// original request and the one its copy left from (they differ when
    /// the copy goes out on a TCP connection of its own).
    at: Vec<SocketAddr>,
    /// Every address a relayed copy left from (each proxy on the way).
    relays: Vec<SocketAddr>,
    /// The Record-Route values the first proxy put on its copy: the far
    /// side mirrors them in its answers, where siptrack's belong.
    record_routes: Vec<Vec<u8>>,
}

fn push_new(v: &mut Vec<SocketAddr>, a: SocketAddr) {
    if !v.contains(&a) {
        v.push(a);
    }
}

#[derive(Default, Debug)]
pub struct Hops {
    by_key: HashMap<Key, Hop>,
    proxies: Vec<SocketAddr>,
}

/// A Via value as an identity for comparing copies: case and white space
/// do not count, nor the `received` and `rport` values a proxy fills in
/// on the Via below its own when it relays.
fn via_id(v: &[u8]) -> Vec<u8> {
    let flat: Vec<u8> = v
        .iter()
        .filter(|c| !c.is_ascii_whitespace())
        .map(u8::to_ascii_lowercase)
        .collect();
    flat.split(|&c| c == b';')
        .filter(|p| !(p.starts_with(b"received=") || *p == b"rport" || p.starts_with(b"rport=")))
        .collect::<Vec<_>>()
        .join(&b';')
}

/// Whether a request leaving `sender` can be the relay of one that
/// arrived at `receiver`: the same host; the same port too, unless the
/// copy went out over TCP (from a connection's own port).
fn same_host(receiver: SocketAddr, sender: SocketAddr, transport: Transport) -> bool {
    receiver.ip() == sender.ip()
        && (receiver.port() == sender.port() || transport == Transport::Tcp)
}

impl Hops {
    /// Finds the relayed copies in a capture (messages in capture order).
    pub fn find(msgs: &[Captured]) -> Hops {
        let mut hops = Hops::default();
        let mut proxies = BTreeSet::new();
        // The first request seen with each (key, Via list), and which
        // requests are copies themselves (a second hop's source).
        let mut seen: HashMap<(Key, Vec<Vec<u8>>), usize> = HashMap::new();
        let mut copies: HashSet<usize> = HashSet::new();
        for (j, m) in msgs.iter().enumerate() {
            if !text::is_request(&m.data) {
                continue;
            }
            let Some(key) = key_of(&m.data) else { continue };
            let vias: Vec<Vec<u8>> = text::vias(&m.data).into_iter().map(via_id).collect();
            if vias.len() >= 2 {
                let below = (key.clone(), vias[1..].to_vec());
                if let Some(&i) = seen.get(&below) {
                    let earlier = &msgs[i];
                    if same_host(earlier.dst, m.src, m.transport) {
                        let hop = hops.by_key.entry(key.clone()).or_default();
                        // The first proxy on the way is the one siptrack
                        // replaces; later ones stay next hops.
                        if !copies.contains(&i) {
                            push_new(&mut hop.at, earlier.dst);
                            push_new(&mut hop.at, m.src);
                            proxies.insert(earlier.dst);
                            let before = text::record_routes(&earlier.data);
                            let after = text::record_routes(&m.data);
                            if after.len() > before.len() && after.ends_with(&before) {
                                hop.record_routes = after[..after.len() - before.len()]
                                    .iter()
                                    .map(|v| v.to_vec())
                                    .collect();
                            }
                        }
                        push_new(&mut hop.relays, m.src);
                        copies.insert(j);
                    }
                }
            }
            seen.entry((key, vias)).or_insert(j);
        }
        // A proxy's CANCEL and its ACK for a non-2xx answer are its own
        // (its Via only, no copy), but belong to the INVITE it relayed.
        let invites: Vec<(Key, Vec<SocketAddr>, Vec<SocketAddr>)> = hops
            .by_key
            .iter()
            .filter(|(k, _)| k.2 == "INVITE")
            .map(|(k, h)| (k.clone(), h.at.clone(), h.relays.clone()))
            .collect();
        for ((call_id, n, _), at, relays) in invites {
            for method in ["CANCEL", "ACK"] {
                let hop = hops
                    .by_key
                    .entry((call_id.clone(), n, method.to_string()))
                    .or_default();
                for a in &at {
                    push_new(&mut hop.at, *a);
                }
                for a in &relays {
                    push_new(&mut hop.relays, *a);
                }
            }
        }
        hops.proxies = proxies.into_iter().collect();
        hops
    }

    /// The addresses of the proxies the replay stands in for, sorted.
    pub fn proxies(&self) -> &[SocketAddr] {
        &self.proxies
    }

    /// The Record-Route values the replaced proxy added to the request
    /// this message answers (none outside relayed transactions).
    pub fn record_routes(&self, m: &Captured) -> &[Vec<u8>] {
        key_of(&m.data)
            .and_then(|k| self.by_key.get(&k))
            .map_or(&[], |h| &h.record_routes)
    }

    pub fn role(&self, m: &Captured) -> Role {
        let Some(hop) = key_of(&m.data).and_then(|k| self.by_key.get(&k)) else {
            return Role::Other;
        };
        if text::is_request(&m.data) {
            if hop.relays.contains(&m.src) {
                Role::Relayed
            } else {
                Role::Other
            }
        } else if hop.at.contains(&m.dst) && !hop.at.contains(&m.src) {
            Role::Answer
        } else {
            Role::Dropped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::{capture, stream};

    /// One letter per message: F fed as usual, R relayed (not fed),
    /// A answer to siptrack, D dropped (the proxy's own answer upstream).
    fn roles(hops: &Hops, msgs: &[Captured]) -> String {
        msgs.iter()
            .map(|m| match hops.role(m) {
                Role::Other => 'F',
                Role::Relayed => 'R',
                Role::Answer => 'A',
                Role::Dropped => 'D',
            })
            .collect()
    }

    fn read_case(name: &str) -> Vec<Captured> {
        let path = format!("{}/pcaps/{name}/capture.pcapng", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let contents = capture::read(&bytes).expect("a readable capture");
        stream::sip_messages(&contents.packets, 65_535).expect("SIP messages")
    }

    /// The recorded calls through Kamailio (SIPp 127.0.0.1:15080 →
    /// Kamailio :15060 → SIPp :15070): every message's role, in capture
    /// order.
    #[test]
    fn kamailio_captures_show_their_hop() {
        let cases = [
            // INVITE, 100 (Kamailio's), INVITE copy, 180 to Kamailio, 180
            // relayed, 200 to Kamailio, 200 relayed, ACK, ACK copy, BYE,
            // BYE copy, 200 to Kamailio, 200 relayed.
            ("kamailio-hop", "FDRADADFRFRAD"),
            // The same up to the ACK; then the callee's BYE to Kamailio
            // (fed), Kamailio's copy to the caller, the caller's 200 to
            // Kamailio (the answer), Kamailio's 200 to the callee.
            ("kamailio-hop-callee-bye", "FDRADADFRFRAD"),
            // INVITE, 100, copy, 180 to Kamailio, 180 relayed, CANCEL,
            // Kamailio's own CANCEL, its 200 for the caller's CANCEL, the
            // callee's 200 for Kamailio's CANCEL, 487 to Kamailio,
            // Kamailio's ACK for it, 487 relayed, the caller's ACK.
            ("kamailio-hop-cancel", "FDRADFRDAARDF"),
        ];
        for (name, want) in cases {
            let msgs = read_case(name);
            let hops = Hops::find(&msgs);
            assert_eq!(roles(&hops, &msgs), want, "{name}");
            let kamailio: SocketAddr = ([127, 0, 0, 1], 15060).into();
            assert_eq!(hops.proxies(), [kamailio], "{name}");
            // Kamailio's Record-Route, as the callee's answers mirror it.
            let answer = msgs
                .iter()
                .find(|m| hops.role(m) == Role::Answer)
                .expect("an answer");
            let rr = format!(
                "<sip:127.0.0.1:15060;lr;ftag={}>",
                text::from_tag(&answer.data).unwrap_or_default()
            );
            assert_eq!(hops.record_routes(answer), [rr.into_bytes()], "{name}");
        }
    }

    const CALL: &str = "Call-ID: 1-11160@127.0.0.1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\n";

    fn msg(
        src: u16,
        dst: u16,
        transport: Transport,
        first: &str,
        vias: &[&str],
        cseq: &str,
    ) -> Captured {
        let mut data = format!("{first}\r\n");
        for v in vias {
            data.push_str(&format!("Via: {v}\r\n"));
        }
        data.push_str(&format!("{CALL}CSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"));
        Captured {
            ts_ns: 0,
            src: ([127, 0, 0, 1], src).into(),
            dst: ([127, 0, 0, 1], dst).into(),
            transport,
            data: data.into_bytes(),
        }
    }

    const A: &str = "SIP/2.0/UDP 127.0.0.1:15080;branch=z9hG4bK-a";
    const P: &str = "SIP/2.0/UDP 127.0.0.1:15060;branch=z9hG4bK-p";
    const Q: &str = "SIP/2.0/UDP 127.0.0.1:15065;branch=z9hG4bK-q";
    const INV: &str = "INVITE sip:b@x SIP/2.0";
    const OK: &str = "SIP/2.0 200 OK";
    const UDP: Transport = Transport::Udp;

    /// The rules on made-up calls, one line each: what counts as a copy.
    #[test]
    fn what_counts_as_a_relayed_copy() {
        let a_rport = "SIP/2.0/UDP 127.0.0.1:15080;rport=15080;received=127.0.0.1;branch=z9hG4bK-a";
        let cases: Vec<(&str, Vec<Captured>, &str)> = vec![
            (
                "the proxy filled in rport and received on the caller's Via",
                vec![
                    msg(15080, 15060, UDP, INV, &[A], "1 INVITE"),
                    msg(15060, 15070, UDP, INV, &[P, a_rport], "1 INVITE"),
                    msg(15070, 15060, UDP, OK, &[P, a_rport], "1 INVITE"),
                ],
                "FRA",
            ),
            (
                "a request the proxy answers itself (407) is not relayed: \
                 its answer stays the answer; the retry is relayed",
                vec![
                    msg(15080, 15060, UDP, INV, &[A], "1 INVITE"),
                    msg(
                        15060,
                        15080,
                        UDP,
                        "SIP/2.0 407 Proxy Auth",
                        &[A],
                        "1 INVITE",
                    ),
                    msg(15080, 15060, UDP, "ACK sip:b@x SIP/2.0", &[A], "1 ACK"),
                    msg(15080, 15060, UDP, INV, &[A], "2 INVITE"),
                    msg(15060, 15070, UDP, INV, &[P, A], "2 INVITE"),
                    msg(15070, 15060, UDP, OK, &[P, A], "2 INVITE"),
                    msg(15060, 15080, UDP, OK, &[A], "2 INVITE"),
                ],
                "FFFFRAD",
            ),
            (
                "compact Via lines, several values on one line",
                vec![msg(15080, 15060, UDP, INV, &[A], "1 INVITE"), {
                    let mut m = msg(15060, 15070, UDP, INV, &[], "1 INVITE");
                    let v = format!("v: {P}, {A}\r\n");
                    let after_start_line = INV.len() + 2;
                    m.data
                        .splice(after_start_line..after_start_line, v.into_bytes());
                    m
                }],
                "FR",
            ),
            (
                "a retransmission is not a copy",
                vec![
                    msg(15080, 15060, UDP, INV, &[A], "1 INVITE"),
                    msg(15080, 15060, UDP, INV, &[A], "1 INVITE"),
                    msg(15060, 15080, UDP, OK, &[A], "1 INVITE"),
                ],
                "FFF",
            ),
            (
                "sent by another address than the one that received it",
                vec![
                    msg(15080, 15060, UDP, INV, &[A], "1 INVITE"),
                    msg(15061, 15070, UDP, INV, &[P, A], "1 INVITE"),
                ],
                "FF",
            ),
            (
                "another CSeq is another transaction",
                vec![
                    msg(15080, 15060, UDP, INV, &[A], "1 INVITE"),
                    msg(15060, 15070, UDP, INV, &[P, A], "2 INVITE"),
                ],
                "FF",
            ),
            (
                "Vias below the top must all be the earlier ones",
                vec![
                    msg(15080, 15060, UDP, INV, &[A], "1 INVITE"),
                    msg(15060, 15070, UDP, INV, &[P, Q, A], "1 INVITE"),
                ],
                "FF",
            ),
            (
                "over TCP the copy leaves from a port of its own",
                vec![
                    msg(15080, 15060, Transport::Tcp, INV, &[A], "1 INVITE"),
                    msg(40312, 15070, Transport::Tcp, INV, &[P, A], "1 INVITE"),
                    msg(15070, 40312, Transport::Tcp, OK, &[P, A], "1 INVITE"),
                    msg(15060, 15080, Transport::Tcp, OK, &[A], "1 INVITE"),
                ],
                "FRAD",
            ),
            (
                "two proxies: siptrack stands in for the first, the second \
                 stays the next hop (its answers to the first are the answers)",
                vec![
                    msg(15080, 15060, UDP, INV, &[A], "1 INVITE"),
                    msg(15060, 15065, UDP, INV, &[P, A], "1 INVITE"),
                    msg(15065, 15070, UDP, INV, &[Q, P, A], "1 INVITE"),
                    msg(15070, 15065, UDP, OK, &[Q, P, A], "1 INVITE"),
                    msg(15065, 15060, UDP, OK, &[P, A], "1 INVITE"),
                    msg(15060, 15080, UDP, OK, &[A], "1 INVITE"),
                ],
                "FRRDAD",
            ),
        ];
        for (what, msgs, want) in cases {
            assert_eq!(roles(&Hops::find(&msgs), &msgs), want, "{what}");
        }
    }

    #[test]
    fn no_hop_no_proxies() {
        let msgs = vec![
            msg(15080, 15060, UDP, INV, &[A], "1 INVITE"),
            msg(15060, 15080, UDP, OK, &[A], "1 INVITE"),
        ];
        let hops = Hops::find(&msgs);
        assert!(hops.proxies().is_empty());
        assert_eq!(roles(&hops, &msgs), "FF");
    }
}
