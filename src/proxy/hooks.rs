//! The phases where call tracking and media anchoring plug into
//! the proxy, in the style of pingora's `ProxyHttp`: the core calls
//! [`ProxyPhases`] at fixed points of a call's life and knows nothing of
//! tracking numbers or SDP. Only the first phase is required (a new call
//! must be routed); the others do nothing unless implemented. A phase
//! edits the message through the `Patch` the core then applies, so what
//! the phases leave alone goes out byte for byte (SPEC S-5).

use smol_str::SmolStr;

use crate::calls::CallInfo;
use crate::config::Destination;
use crate::sip::{Message, Patch};

use super::{Millis, Peer};

/// Where an out-of-dialog request goes, decided from configuration only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub peer: Peer,
    /// The Request-URI to send instead of the received one. A `SmolStr`
    /// so that the call record's destination shares it (one allocation
    /// per tracked INVITE where a `Vec` and a copy of it were two).
    pub request_uri: Option<SmolStr>,
    /// For a new INVITE the router tracks: what the call record needs.
    pub call: Option<Box<CallInfo>>,
}

/// A refusal: the status code and reason phrase to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
}

/// Which call a phase is about: phases that keep state per call (media
/// anchors, recordings) key it by these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallCtx<'a> {
    pub call_id: &'a [u8],
    /// The From tag of the message's transaction: the side that sent the
    /// request (a response carries its request's From).
    pub from_tag: &'a [u8],
}

pub trait ProxyPhases: Send {
    /// A new out-of-dialog request: choose its next hop (never from the
    /// Request-URI host: that would make the proxy an open relay) and add
    /// edits to `patch`. It must not touch the Request-URI span, Via,
    /// Route or Max-Forwards; the core edits those.
    fn initial_request(
        &mut self,
        req: &Message,
        source: Peer,
        now: Millis,
        patch: &mut Patch,
    ) -> Result<NextHop, Refusal>;

    /// An in-dialog request (re-INVITE, UPDATE, PRACK, ACK, BYE, …) that
    /// passed the dialog checks, before it is relayed; may edit it (SDP).
    fn in_dialog_request(
        &mut self,
        _call: CallCtx<'_>,
        _req: &Message,
        _from: Peer,
        _now: Millis,
        _patch: &mut Patch,
    ) {
    }

    /// A response on its way back to the requester (provisional, final,
    /// or a 2xx retransmitted after its transaction ended); may edit it
    /// (SDP in 18x and 2xx). The core has already removed its own Via.
    fn response(&mut self, _call: CallCtx<'_>, _resp: &Message, _now: Millis, _patch: &mut Patch) {}

    /// A transaction is done: its final response has passed, and what is
    /// left of it only absorbs retransmissions (or it timed out): state
    /// kept for it can go. `from_tag` is the caller's for the request
    /// that set up a dialog, else empty.
    fn transaction_end(&mut self, _call: CallCtx<'_>, _is_invite: bool) {}
}

/// A phase that runs after the router in a [`Chain`] (media anchoring):
/// it sees where each new request was routed and every later message of
/// the call, and edits through the same `Patch`; it never routes.
pub trait FollowingPhase: Send {
    /// A new out-of-dialog request the router accepted, from `source`,
    /// with its next hop.
    fn routed(
        &mut self,
        _req: &Message,
        _source: Peer,
        _hop: &NextHop,
        _now: Millis,
        _patch: &mut Patch,
    ) {
    }

    fn in_dialog_request(
        &mut self,
        _call: CallCtx<'_>,
        _req: &Message,
        _from: Peer,
        _now: Millis,
        _patch: &mut Patch,
    ) {
    }

    fn response(&mut self, _call: CallCtx<'_>, _resp: &Message, _now: Millis, _patch: &mut Patch) {}

    fn transaction_end(&mut self, _call: CallCtx<'_>, _is_invite: bool) {}
}

/// The router, then the phases that follow it, each in order: the core
/// sees one [`ProxyPhases`] and knows nothing of tracking or media.
pub struct Chain {
    pub router: Box<dyn ProxyPhases>,
    pub then: Vec<Box<dyn FollowingPhase>>,
}

impl ProxyPhases for Chain {
    fn initial_request(
        &mut self,
        req: &Message,
        source: Peer,
        now: Millis,
        patch: &mut Patch,
    ) -> Result<NextHop, Refusal> {
        let hop = self.router.initial_request(req, source, now, patch)?;
        for p in &mut self.then {
            p.routed(req, source, &hop, now, patch);
        }
        Ok(hop)
    }

    fn in_dialog_request(
        &mut self,
        call: CallCtx<'_>,
        req: &Message,
        from: Peer,
        now: Millis,
        patch: &mut Patch,
    ) {
        self.router.in_dialog_request(call, req, from, now, patch);
        for p in &mut self.then {
            p.in_dialog_request(call, req, from, now, patch);
        }
    }

    fn response(&mut self, call: CallCtx<'_>, resp: &Message, now: Millis, patch: &mut Patch) {
        self.router.response(call, resp, now, patch);
        for p in &mut self.then {
            p.response(call, resp, now, patch);
        }
    }

    fn transaction_end(&mut self, call: CallCtx<'_>, is_invite: bool) {
        self.router.transaction_end(call, is_invite);
        for p in &mut self.then {
            p.transaction_end(call, is_invite);
        }
    }
}

/// Sends every new request to one configured destination, keeping the
/// dialed user part (the proxy-core behaviour before call tracking).
pub struct DefaultRouter {
    pub destination: Option<Destination>,
}

impl ProxyPhases for DefaultRouter {
    fn initial_request(
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
        // The user part as validation decoded it (kept in the message).
        let user = req
            .request_uri_spans()
            .and_then(|u| u.user)
            .map(|s| req.bytes(s));
        Ok(NextHop {
            peer: Peer {
                transport: dest.transport,
                addr: dest.addr,
            },
            request_uri: Some(destination_uri_smol(dest, user)),
            call: None,
        })
    }
}

/// `sip:<user>@<destination host>[:port][;transport=tcp]`: the dialed user
/// (or the destination's own) at the destination.
fn destination_uri(dest: &Destination, user: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Writing into a Vec cannot fail.
    let _ = write_destination_uri(dest, user, &mut out);
    out
}

/// [`destination_uri`] as a [`SmolStr`], written on the stack first: one
/// allocation (none when it is 23 bytes or less), not a `Vec` and then
/// the string. A user part that is not UTF-8 (validation lets only ASCII
/// into a Request-URI, so none here) is written lossily.
pub fn destination_uri_smol(dest: &Destination, user: Option<&[u8]>) -> SmolStr {
    // 128 bytes: a destination URI with a dialed number, an IPv6 host and
    // a port is about 70; a longer one is written into a Vec instead.
    let mut buf = [0u8; 128];
    let mut rest = &mut buf[..];
    if write_destination_uri(dest, user, &mut rest).is_ok() {
        let len = 128 - rest.len();
        return SmolStr::new(crate::sip::chars::lossy(&buf[..len]));
    }
    SmolStr::new(crate::sip::chars::lossy(&destination_uri(dest, user)))
}

/// The URI into `out`: a `Vec`, or a slice on the stack that refuses
/// (`WriteZero`) what does not fit.
fn write_destination_uri(
    dest: &Destination,
    user: Option<&[u8]>,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    out.write_all(b"sip:")?;
    if let Some(u) = user.or(dest.user.as_deref().map(str::as_bytes)) {
        out.write_all(u)?;
        out.write_all(b"@")?;
    }
    out.write_all(dest.host.as_bytes())?;
    if let Some(p) = dest.port {
        // Digits written straight into the URI's buffer: `write!` went
        // through `fmt::write` (~300 instructions) on every forwarded
        // request, a format! before that also allocated.
        out.write_all(b":")?;
        out.write_all(crate::decimal::digits(u64::from(p), &mut [0u8; 20]))?;
    }
    if dest.transport.is_reliable() {
        out.write_all(b";transport=tcp")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_destination;

    /// The URI as `format!` wrote it before the port's digits were
    /// written directly.
    fn old_destination_uri(dest: &Destination, user: Option<&[u8]>) -> Vec<u8> {
        let user = user
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .or_else(|| dest.user.clone());
        let mut s = String::from("sip:");
        if let Some(u) = user {
            s.push_str(&u);
            s.push('@');
        }
        s.push_str(&dest.host);
        if let Some(p) = dest.port {
            s.push_str(&format!(":{p}"));
        }
        if dest.transport.is_reliable() {
            s.push_str(";transport=tcp");
        }
        s.into_bytes()
    }

    #[test]
    fn a_destination_uri_too_long_for_the_stack_is_written_all_the_same() {
        let dest = parse_destination("sip:pbx@127.0.0.1:5070").expect("destination");
        let user = vec![b'7'; 200];
        let uri = destination_uri_smol(&dest, Some(&user));
        assert_eq!(uri.as_bytes(), destination_uri(&dest, Some(&user)));
        assert_eq!(uri.len(), 4 + 200 + 1 + 14);
    }

    #[test]
    fn destination_uri_matches_the_formatted_form() {
        for uri in [
            "sip:pbx@127.0.0.1:5070",
            "sip:127.0.0.1",
            "sip:office@127.0.0.1:1",
            "sip:127.0.0.1:65535;transport=tcp",
            "sip:pbx@127.0.0.1;transport=tcp",
        ] {
            let dest = parse_destination(uri).expect("destination");
            for user in [None, Some(&b"74951234567"[..]), Some(&b"a"[..])] {
                assert_eq!(
                    destination_uri(&dest, user),
                    old_destination_uri(&dest, user),
                    "{uri} {user:?}"
                );
                assert_eq!(
                    destination_uri_smol(&dest, user).as_bytes(),
                    old_destination_uri(&dest, user),
                    "{uri} {user:?}"
                );
            }
        }
    }
}
