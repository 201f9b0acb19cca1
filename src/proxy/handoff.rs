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

pub fn to_json(h: &DialogHandoff) -> String {
    // Plain strings and addresses: serialising cannot fail.
    serde_json::to_string(h).unwrap_or_default()
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
