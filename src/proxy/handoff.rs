//! An answered dialog as another node needs it (issue 14 step 3): when
//! the node that set a call up dies, the BYE that reaches another node of
//! the same database is relayed by that node from this record. Plain data
//! (JSON in the store), converted from and to the core's own dialog
//! entry; no I/O here.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{Peer, Transport};

/// One side of an answered dialog: where its requests came from (or where
/// the initial request went) and its Contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffSide {
    /// "udp" or "tcp".
    pub transport: HandoffTransport,
    pub source: SocketAddr,
    pub contact: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandoffTransport {
    Udp,
    Tcp,
}

impl HandoffSide {
    pub fn peer(&self) -> Peer {
        Peer {
            transport: match self.transport {
                HandoffTransport::Udp => Transport::Udp,
                HandoffTransport::Tcp => Transport::Tcp,
            },
            addr: self.source,
        }
    }

    pub fn of(peer: Peer, contact: Option<SocketAddr>) -> HandoffSide {
        HandoffSide {
            transport: match peer.transport {
                Transport::Udp => HandoffTransport::Udp,
                Transport::Tcp => HandoffTransport::Tcp,
            },
            source: peer.addr,
            contact,
        }
    }
}

/// What the core needs to relay in-dialog requests of an answered call it
/// did not set up: the dialog's identity (Call-ID and both tags) and both
/// sides' addresses (the route set is ours: the other side's address is
/// the next hop, as in the core's own dialogs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogHandoff {
    pub call_id: String,
    pub caller_tag: String,
    pub callee_tag: String,
    pub caller: HandoffSide,
    pub callee: HandoffSide,
}

/// An in-dialog request whose dialog this node does not have, with a
/// valid route token: the driver looks the dialog up in the store, hands
/// it to the core if found, and gives the request back
/// (`Node::on_looked_up`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialogMiss {
    pub call_id: String,
    pub from: Peer,
    pub data: bytes::Bytes,
}

/// A handoff as stored (JSON), None when it is not one (a row written by
/// another build, a damaged value): such a dialog is not taken over.
pub fn parse(json: &str) -> Option<DialogHandoff> {
    serde_json::from_str(json).ok()
}

/// The handoff as JSON, byte for byte what `serde_json::to_string` makes
/// of it (other nodes, of this build or an older one, parse it with
/// serde). Written by hand for the common case, IPv4 addresses and
/// Call-ID and tags with nothing to escape (issue 15: serde's way through
/// `Display` of each address cost ~9,000 instructions per answered call
/// on the decision thread, this ~1,000); anything else goes to serde.
pub fn to_json(h: &DialogHandoff) -> String {
    fast_json(h).unwrap_or_else(|| serde_json::to_string(h).unwrap_or_default())
}

/// `to_json` without serde, or None when an address is IPv6 or a string
/// needs escaping.
fn fast_json(h: &DialogHandoff) -> Option<String> {
    let mut out =
        String::with_capacity(200 + h.call_id.len() + h.caller_tag.len() + h.callee_tag.len());
    out.push_str("{\"call_id\":");
    plain_string(&mut out, &h.call_id)?;
    out.push_str(",\"caller_tag\":");
    plain_string(&mut out, &h.caller_tag)?;
    out.push_str(",\"callee_tag\":");
    plain_string(&mut out, &h.callee_tag)?;
    out.push_str(",\"caller\":");
    side_json(&mut out, &h.caller)?;
    out.push_str(",\"callee\":");
    side_json(&mut out, &h.callee)?;
    out.push('}');
    Some(out)
}

/// A JSON string of `s`, None when serde would escape something in it
/// (a quote, a backslash, a control character).
fn plain_string(out: &mut String, s: &str) -> Option<()> {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        return None;
    }
    out.push('"');
    out.push_str(s);
    out.push('"');
    Some(())
}

fn side_json(out: &mut String, side: &HandoffSide) -> Option<()> {
    out.push_str(match side.transport {
        HandoffTransport::Udp => "{\"transport\":\"udp\",\"source\":",
        HandoffTransport::Tcp => "{\"transport\":\"tcp\",\"source\":",
    });
    addr_json(out, side.source)?;
    out.push_str(",\"contact\":");
    match side.contact {
        Some(c) => addr_json(out, c)?,
        None => out.push_str("null"),
    }
    out.push('}');
    Some(())
}

/// An IPv4 address as `Display` writes it, in quotes; None for IPv6.
fn addr_json(out: &mut String, addr: SocketAddr) -> Option<()> {
    let SocketAddr::V4(a) = addr else {
        return None;
    };
    out.push('"');
    for (i, octet) in a.ip().octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        crate::decimal::push_str(out, octet.into());
    }
    out.push(':');
    crate::decimal::push_str(out, a.port().into());
    out.push('"');
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(t: HandoffTransport, s: &str, c: Option<&str>) -> HandoffSide {
        HandoffSide {
            transport: t,
            source: s.parse().expect("test address"),
            contact: c.map(|c| c.parse().expect("test contact")),
        }
    }

    /// The hand-written JSON is serde's, byte for byte, and serde's own
    /// is used where the hand-written one does not go.
    #[test]
    fn to_json_is_serdes_text() {
        let h = |id: &str, tag: &str, a: HandoffSide, b: HandoffSide| DialogHandoff {
            call_id: id.into(),
            caller_tag: tag.into(),
            callee_tag: "t2".into(),
            caller: a,
            callee: b,
        };
        let udp = side(HandoffTransport::Udp, "127.0.0.1:5070", None);
        let tcp = side(HandoffTransport::Tcp, "10.0.0.255:65535", Some("0.0.0.0:0"));
        let v6 = side(HandoffTransport::Tcp, "[::1]:5080", Some("[::1]:5081"));
        let v6_contact = side(HandoffTransport::Udp, "1.2.3.4:9", Some("[fe80::1]:5060"));
        let cases = [
            (h("abc@host", "t1", udp, tcp), true),
            (h("", "", tcp, udp), true),
            (h("ю@хост", "тег", udp, udp), true),
            (h("a\"b", "t1", udp, tcp), false),
            (h("a\\b", "t1", udp, tcp), false),
            (h("a", "t\n1", udp, tcp), false),
            (h("a", "\u{7f}x", udp, tcp), true),
            (h("a", "t1", v6, udp), false),
            (h("a", "t1", udp, v6_contact), false),
        ];
        for (handoff, fast) in cases {
            let serde = serde_json::to_string(&handoff).expect("serde");
            assert_eq!(fast_json(&handoff).is_some(), fast, "{handoff:?}");
            assert_eq!(to_json(&handoff), serde, "{handoff:?}");
            assert_eq!(parse(&to_json(&handoff)), Some(handoff));
        }
    }

    #[test]
    fn a_handoff_survives_the_store_and_garbage_is_none() {
        let h = DialogHandoff {
            call_id: "abc@host".into(),
            caller_tag: "t1".into(),
            callee_tag: "t2".into(),
            caller: side(HandoffTransport::Udp, "127.0.0.1:5070", None),
            callee: side(HandoffTransport::Tcp, "[::1]:5080", Some("[::1]:5081")),
        };
        assert_eq!(parse(&to_json(&h)), Some(h.clone()));
        for bad in ["", "{}", "null", "{\"call_id\":1}", "[1,2]", "not json"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let peer = h.callee.peer();
        assert_eq!(peer.transport, Transport::Tcp);
        assert_eq!(HandoffSide::of(peer, h.callee.contact), h.callee);
    }
}
