//! The phase where call-tracking plugs into the proxy: choosing the next
//! hop of a new call and rewriting the request. The proxy core knows
//! nothing of tracking numbers; it asks a [`CallRouter`].

use crate::calls::CallInfo;
use crate::config::Destination;
use crate::sip::{Message, Patch, Uri};

use super::{Millis, Peer};

/// Where an out-of-dialog request goes, decided from configuration only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub peer: Peer,
    /// The Request-URI to send instead of the received one.
    pub request_uri: Option<Vec<u8>>,
    /// For a new INVITE the router tracks: what the call record needs.
    pub call: Option<Box<CallInfo>>,
}

/// A refusal: the status code and reason phrase to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
}

pub trait CallRouter: Send {
    /// Chooses the next hop of an out-of-dialog request (never from the
    /// Request-URI host: that would make the proxy an open relay) and adds
    /// its own edits to `patch`. It must not touch the Request-URI span,
    /// Via, Route or Max-Forwards; the core edits those.
    fn route_initial(
        &mut self,
        req: &Message,
        source: Peer,
        now: Millis,
        patch: &mut Patch,
    ) -> Result<NextHop, Refusal>;
}

/// Sends every new request to one configured destination, keeping the
/// dialed user part (the proxy-core behaviour before call tracking).
pub struct DefaultRouter {
    pub destination: Option<Destination>,
}

impl CallRouter for DefaultRouter {
    fn route_initial(
        &mut self,
        req: &Message,
        _source: Peer,
        _now: Millis,
        _patch: &mut Patch,
    ) -> Result<NextHop, Refusal> {
        let dest = self.destination.as_ref().ok_or(Refusal {
            code: 404,
            reason: "Not Found",
        })?;
        let user = req
            .request_uri()
            .and_then(|u| Uri::parse(u).ok())
            .and_then(|u| u.user().map(<[u8]>::to_vec));
        Ok(NextHop {
            peer: Peer {
                transport: dest.transport,
                addr: dest.addr,
            },
            request_uri: Some(destination_uri(dest, user.as_deref())),
            call: None,
        })
    }
}

/// `sip:<user>@<destination host>[:port][;transport=tcp]`: the dialed user
/// (or the destination's own) at the destination.
pub fn destination_uri(dest: &Destination, user: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"sip:");
    match (user, &dest.user) {
        (Some(u), _) => {
            out.extend_from_slice(u);
            out.push(b'@');
        }
        (None, Some(u)) => {
            out.extend_from_slice(u.as_bytes());
            out.push(b'@');
        }
        (None, None) => {}
    }
    out.extend_from_slice(dest.host.as_bytes());
    if let Some(p) = dest.port {
        out.extend_from_slice(format!(":{p}").as_bytes());
    }
    if dest.transport.is_reliable() {
        out.extend_from_slice(b";transport=tcp");
    }
    out
}
