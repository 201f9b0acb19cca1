//! The media phase: anchors a tracked call's media at siptrack. Every SDP
//! of the call (INVITE, re-INVITE, UPDATE, PRACK, 18x, 2xx, and the ACK of
//! a late offer) gets its `c=`, `m=` ports and `a=rtcp` pointed at
//! siptrack's ports facing the receiver (every other byte as it came,
//! Content-Length fixed), and tells the relay where each side wants its
//! media. The first answer decides whether the call is recorded.
//!
//! Pure state on the SIP thread: ports come from an injected
//! [`PortSource`] (the running node binds sockets there; replay and tests
//! use the bare allocator), and what the relay must do is queued as
//! [`Command`]s the node hands on. The phase never closes a call itself:
//! the node closes it when the call record ends (BYE, failure, CANCEL,
//! timeout, `max_call_seconds`), so ports live exactly as long as the call.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::proxy::hooks::{CallCtx, FollowingPhase, NextHop};
use crate::proxy::{Millis, Peer};
use crate::sip::validate::cseq;
use crate::sip::{HeaderName, Message, Method, Patch};

use super::ports::{PortAllocator, PortError, PortPair};
use super::recorder::{NoRecording, Payloads};
use super::relay::{LegSdp, SessionId, StreamPorts};
use super::sdp::{self, Anchor as SdpAnchor, Sdp};
use super::timeline::Side;

/// More `m=` lines than this and the call is left alone (unrecorded).
pub const MAX_STREAMS: usize = 4;

/// Where port pairs come from.
pub trait PortSource: Send {
    fn take(&mut self, now: Millis) -> Result<PortPair, PortError>;
    fn give_back(&mut self, pair: PortPair, now: Millis);
}

impl PortSource for PortAllocator {
    fn take(&mut self, now: Millis) -> Result<PortPair, PortError> {
        self.allocate(now)
    }
    fn give_back(&mut self, pair: PortPair, now: Millis) {
        self.release(pair, now)
    }
}

/// What the media phase needs from configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSettings {
    /// `tracking.record_calls`: false = SDP and media pass untouched.
    pub enabled: bool,
    /// The address written into SDP (`media.advertised_ip`, else the
    /// address the media sockets are bound to).
    pub advertised_ip: IpAddr,
    /// One of the other family, written into the SDP a peer of that
    /// family gets (`MediaConfig::advertised_other`).
    pub advertised_other: Option<IpAddr>,
}

impl MediaSettings {
    /// The address the SDP for a peer whose SIP comes from `peer` names:
    /// one of the peer's own family when there is one (trial, 2026-12-03:
    /// an IPv6 caller told an IPv4 address got no audio).
    pub fn advertised_for(&self, peer: Option<IpAddr>) -> IpAddr {
        match (peer, self.advertised_other) {
            (Some(p), Some(other)) if p.is_ipv4() != self.advertised_ip.is_ipv4() => other,
            _ => self.advertised_ip,
        }
    }
}

/// What the relay (and its recorder) must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// New streams for a session (the first creates it). `recorded`: the
    /// stream the recorder hears.
    Open {
        session: SessionId,
        streams: Vec<StreamPorts>,
        recorded: Option<usize>,
        /// The IPs the caller's and the callee's SIP come from (the
        /// INVITE's source, its next hop): only their hosts and the ones
        /// their SDP names may become a leg's media source.
        peers: [Option<IpAddr>; 2],
    },
    /// A leg's SDP for one stream.
    Update {
        session: SessionId,
        stream: usize,
        leg: Side,
        sdp: LegSdp,
    },
    /// The INVITE got its 2xx: the RTP timeout runs from now.
    Answered { session: SessionId },
    /// The answer allows G.711: record this call to `file` (a name in
    /// `recordings_dir`).
    Record {
        session: SessionId,
        call_id: Bytes,
        payloads: Payloads,
    },
    /// A later SDP of the call could not be anchored, so its media now
    /// goes around siptrack: no RTP timeout for it any more, and its
    /// recording ends here.
    LeftAlone { session: SessionId },
    /// The call ended: stop relaying, finish the recording.
    Close { session: SessionId },
}

/// Why calls went unrecorded, for `/metrics` (disk errors are counted
/// where the files are written).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnchorStats {
    pub unrecorded_no_ports: u64,
    pub unrecorded_codec: u64,
    pub unrecorded_disabled: u64,
}

/// A call without recording, and why: for the log and the call record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unrecorded {
    pub call_id: Bytes,
    pub reason: NoRecording,
}

#[derive(Debug)]
struct Call {
    session: SessionId,
    caller_tag: Bytes,
    /// One entry per `m=` line seen so far.
    streams: Vec<StreamPorts>,
    /// Media left alone from here on (no ports, unreadable streams).
    passthrough: bool,
    /// The side whose offer waits for an answer, and that offer's body.
    offer: Option<(Side, Vec<u8>)>,
    /// Where the offerer of a re-INVITE or UPDATE will receive, applied
    /// when a 2xx accepts the offer and dropped when it is refused (RFC
    /// 3264 8: a refused offer leaves the session as it was; trial,
    /// 2026-12-03: after a 488 the media went on to the refused offer's
    /// port until the offerer sent again).
    reoffer: Option<Vec<Command>>,
    decided: bool,
    answered: bool,
    recording: RecState,
    started: Millis,
    /// The caller's and the callee's signalling IPs (`Command::Open`).
    peers: [Option<IpAddr>; 2],
}

/// Where a call's recording stands when the call ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecState {
    /// No answer SDP yet: nothing was negotiated to record.
    Undecided,
    /// The recorder was started: its outcome comes from the writer.
    Started,
    /// The recorder was started, then a later SDP took the media around
    /// siptrack: the file holds the call up to there (`partial`).
    Cut,
    NotRecorded(NoRecording),
}

/// The media phase's state, shared between the phase (in the proxy core)
/// and the node (which takes the commands and closes calls).
pub struct Anchor {
    settings: MediaSettings,
    ports: Box<dyn PortSource>,
    calls: HashMap<Bytes, Call>,
    next_session: SessionId,
    commands: Vec<Command>,
    unrecorded: Vec<Unrecorded>,
    pub stats: AnchorStats,
}

fn other(side: Side) -> Side {
    match side {
        Side::Caller => Side::Callee,
        Side::Callee => Side::Caller,
    }
}

/// A multipart body with an SDP part (SIP-I/SIP-T: SDP and ISUP): its
/// SDP is not anchored, so the call's media is left alone as a whole
/// (trial, 2026-12-03: such an offer went on unanchored while the plain
/// SDP answer was anchored, media half through siptrack, and the call
/// said "no media negotiated").
fn is_multipart_with_sdp(msg: &Message) -> bool {
    let multipart = msg.value(HeaderName::ContentType).is_some_and(|v| {
        let v = crate::sip::chars::trim_lws(v);
        v.len() >= 10 && v[..10].eq_ignore_ascii_case(b"multipart/")
    });
    multipart
        && msg
            .body_bytes()
            .windows(15)
            .any(|w| w.eq_ignore_ascii_case(b"application/sdp"))
}

fn is_sdp(msg: &Message) -> bool {
    !msg.body_bytes().is_empty()
        && msg.value(HeaderName::ContentType).is_some_and(|v| {
            let v = crate::sip::chars::trim_lws(v);
            v.len() >= 15 && v[..15].eq_ignore_ascii_case(b"application/sdp")
        })
}

/// What one stream of an SDP says about where its sender receives.
fn leg_sdp(sdp: &Sdp, i: usize) -> LegSdp {
    let Some(m) = sdp.media.get(i) else {
        return LegSdp::default();
    };
    let ip = sdp.connection_of(i).and_then(|c| c.ip());
    let rtp = ip
        .filter(|_| m.port != 0)
        .map(|ip| SocketAddr::new(ip, m.port));
    let rtcp = rtp.map(|a| match &m.rtcp {
        Some(r) => SocketAddr::new(r.connection.and_then(|c| c.ip()).unwrap_or(a.ip()), r.port),
        None => SocketAddr::new(a.ip(), a.port().wrapping_add(1)),
    });
    LegSdp {
        rtp,
        rtcp,
        rtcp_mux: m.rtcp_mux,
        hold: sdp.is_hold(i),
    }
}

/// The rest of the call's media is left as it comes: an SDP siptrack
/// cannot anchor. A call anchored before has relay streams whose silence
/// must no longer end it, and a recording that ends here.
fn leave_alone(c: &mut Call, commands: &mut Vec<Command>) {
    c.passthrough = true;
    if c.streams.is_empty() {
        return;
    }
    commands.push(Command::LeftAlone { session: c.session });
    if c.recording == RecState::Started {
        c.recording = RecState::Cut;
    }
}

/// The first audio RTP stream that is not rejected: the one recorded.
fn recorded_stream(sdp: &Sdp) -> Option<usize> {
    sdp.media
        .iter()
        .position(|m| m.media == b"audio" && m.is_rtp() && m.port != 0)
}

impl Anchor {
    pub fn new(settings: MediaSettings, ports: Box<dyn PortSource>) -> Anchor {
        Anchor {
            settings,
            ports,
            calls: HashMap::new(),
            next_session: 1,
            commands: Vec::new(),
            unrecorded: Vec::new(),
            stats: AnchorStats::default(),
        }
    }

    /// The phase to put in the proxy's [`crate::proxy::Chain`].
    pub fn phase(anchor: &Arc<Mutex<Anchor>>) -> MediaPhase {
        MediaPhase(anchor.clone())
    }

    pub fn take_commands(&mut self) -> std::vec::Drain<'_, Command> {
        self.commands.drain(..)
    }

    pub fn take_unrecorded(&mut self) -> std::vec::Drain<'_, Unrecorded> {
        self.unrecorded.drain(..)
    }

    /// Calls with media state.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// The session of a call, while it is open.
    pub fn session_of(&self, call_id: &[u8]) -> Option<SessionId> {
        self.calls.get(call_id).map(|c| c.session)
    }

    /// The call whose session this is.
    pub fn call_of(&self, session: SessionId) -> Option<Bytes> {
        self.calls
            .iter()
            .find(|(_, c)| c.session == session)
            .map(|(k, _)| k.clone())
    }

    /// The call ended (its record closed): ports back, relay told.
    /// Returns where its recording stands; `None` for a call the phase
    /// left alone (not tracked, or `record_calls = false`).
    pub fn close(&mut self, call_id: &[u8], now: Millis) -> Option<RecState> {
        let c = self.calls.remove(call_id)?;
        for s in &c.streams {
            self.ports.give_back(s.caller, now);
            self.ports.give_back(s.callee, now);
        }
        self.commands.push(Command::Close { session: c.session });
        Some(c.recording)
    }

    /// Closes calls older than `max_age_ms` that nobody closed: an INVITE
    /// the core refused after routing (too large, no listener) never
    /// becomes a call record, and its ports must not stay bound.
    pub fn expire(&mut self, now: Millis, max_age_ms: Millis) -> usize {
        let old: Vec<Bytes> = self
            .calls
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.started) > max_age_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            self.close(k, now);
        }
        old.len()
    }

    fn not_recorded(&mut self, call_id: &[u8], reason: NoRecording) {
        if let Some(c) = self.calls.get_mut(call_id) {
            c.recording = RecState::NotRecorded(reason.clone());
        }
        match reason {
            NoRecording::NoPorts | NoRecording::NoDescriptors | NoRecording::PortsHeldElsewhere => {
                self.stats.unrecorded_no_ports += 1
            }
            NoRecording::Codec(_) => self.stats.unrecorded_codec += 1,
            _ => {}
        }
        self.unrecorded.push(Unrecorded {
            call_id: Bytes::copy_from_slice(call_id),
            reason,
        });
    }

    fn on_routed(
        &mut self,
        req: &Message,
        source: Peer,
        hop: &NextHop,
        now: Millis,
        patch: &mut Patch,
    ) {
        if hop.call.is_none() {
            return;
        }
        let call_id = req.call_id().unwrap_or_default();
        if !self.settings.enabled {
            self.stats.unrecorded_disabled += 1;
            return;
        }
        let caller_tag = req
            .tag(HeaderName::From)
            .map(Bytes::copy_from_slice)
            .unwrap_or_default();
        if !self.calls.contains_key(call_id) {
            let session = self.next_session;
            self.next_session += 1;
            self.calls.insert(
                Bytes::copy_from_slice(call_id),
                Call {
                    session,
                    caller_tag,
                    streams: Vec::new(),
                    passthrough: false,
                    offer: None,
                    reoffer: None,
                    decided: false,
                    answered: false,
                    recording: RecState::Undecided,
                    started: now,
                    peers: [Some(source.addr.ip()), Some(hop.peer.addr.ip())],
                },
            );
        }
        self.on_sdp(call_id, Side::Caller, req, now, patch);
    }

    /// Which side sent a request with this From tag.
    fn side_of(&self, call_id: &[u8], from_tag: &[u8]) -> Option<Side> {
        let c = self.calls.get(call_id)?;
        Some(if c.caller_tag.as_ref() == from_tag {
            Side::Caller
        } else {
            Side::Callee
        })
    }

    fn on_request(&mut self, call: CallCtx<'_>, req: &Message, now: Millis, patch: &mut Patch) {
        if let Some(side) = self.side_of(call.call_id, call.from_tag) {
            let before = self.commands.len();
            self.on_sdp(call.call_id, side, req, now, patch);
            // An offer in an established call waits for its 2xx. (An
            // ACK's or PRACK's SDP is an answer: it applies at once.)
            let offers = matches!(req.method(), Some(Method::Invite))
                || req.method_bytes() == Some(&b"UPDATE"[..]);
            if let Some(c) = self
                .calls
                .get_mut(call.call_id)
                .filter(|c| c.answered && offers)
            {
                let updates: Vec<Command> = self
                    .commands
                    .extract_if(before.., |cmd| matches!(cmd, Command::Update { .. }))
                    .collect();
                if !updates.is_empty() {
                    c.reoffer = Some(updates);
                }
            }
        }
    }

    fn on_response(&mut self, call: CallCtx<'_>, resp: &Message, now: Millis, patch: &mut Patch) {
        // A response comes from the side that did not send its request.
        let Some(side) = self.side_of(call.call_id, call.from_tag).map(other) else {
            return;
        };
        let code = resp.status().unwrap_or(0);
        let reoffer_answered =
            code >= 200 && cseq(resp).is_some_and(|(_, m)| m == b"INVITE" || m == b"UPDATE");
        if reoffer_answered {
            if let Some(updates) = self
                .calls
                .get_mut(call.call_id)
                .and_then(|c| c.reoffer.take())
            {
                if code < 300 {
                    self.commands.extend(updates);
                }
            }
        }
        if code > 100 && code < 300 {
            self.on_sdp(call.call_id, side, resp, now, patch);
        }
        // After the SDP: a late offer's 2xx opens the session first.
        if (200..300).contains(&code) && cseq(resp).is_some_and(|(_, m)| m == b"INVITE") {
            if let Some(c) = self.calls.get_mut(call.call_id) {
                if !c.answered && !c.streams.is_empty() {
                    c.answered = true;
                    self.commands.push(Command::Answered { session: c.session });
                }
            }
        }
    }

    /// Anchors the SDP `from` sent, if the message has one.
    fn on_sdp(
        &mut self,
        call_id: &[u8],
        from: Side,
        msg: &Message,
        now: Millis,
        patch: &mut Patch,
    ) {
        let multipart = is_multipart_with_sdp(msg);
        if !is_sdp(msg) && !multipart {
            return;
        }
        let Some(c) = self.calls.get_mut(call_id) else {
            return;
        };
        if c.passthrough {
            return;
        }
        if multipart {
            leave_alone(c, &mut self.commands);
            if !c.decided {
                c.decided = true;
                let reason = "SDP in a multipart body (SIP-I/SIP-T): media left alone";
                self.not_recorded(call_id, NoRecording::Codec(reason.into()));
            }
            return;
        }
        let body = msg.body_bytes();
        let parsed = match Sdp::parse(body) {
            Ok(s) => s,
            Err(e) => {
                // Anchoring the answer to an offer left alone (or the
                // other way round) would point the sides at each other
                // half through siptrack: the rest of the call is left alone.
                tracing::debug!(call_id = %String::from_utf8_lossy(call_id), error = %e, "SDP left as it came");
                leave_alone(c, &mut self.commands);
                if !c.decided {
                    c.decided = true;
                    let reason = NoRecording::Codec(format!("unreadable SDP ({e})"));
                    self.not_recorded(call_id, reason);
                }
                return;
            }
        };
        let unusable = if parsed.media.len() > MAX_STREAMS
            || parsed
                .media
                .iter()
                .any(|m| m.port != 0 && m.proto.windows(3).any(|w| w.eq_ignore_ascii_case(b"TCP")))
        {
            Some("media not over UDP/RTP")
        } else if parsed
            .media
            .iter()
            .any(|m| m.port != 0 && m.proto.windows(4).any(|w| w.eq_ignore_ascii_case(b"SAVP")))
        {
            // RTP/SAVP(F), UDP/TLS/RTP/SAVPF: recorded, the ciphertext
            // made a WAV of noise, and its link went to the CRM (trial,
            // 2026-12-03).
            Some("encrypted media (SRTP)")
        } else if (0..parsed.media.len()).any(|i| {
            parsed.media[i].port != 0 && parsed.connection_of(i).is_some_and(|c| c.is_multicast())
        }) {
            // Sent to a group, not to a party: there is no leg to relay.
            // Anchored, the group's `/ttl` stayed on siptrack's unicast
            // address, which RFC 4566 does not allow (trial, 2026-12-03).
            Some("multicast media")
        } else if (0..parsed.media.len())
            .any(|i| parsed.media[i].port != 0 && parsed.connection_of(i).is_none())
        {
            // RFC 4566 5.7: a stream needs a c=, its own or the session's.
            // Anchored, it went out with siptrack's port and still no
            // address (trial, 2026-12-02).
            Some("unreadable SDP (a stream without a c= line)")
        } else {
            None
        };
        if let Some(why) = unusable {
            leave_alone(c, &mut self.commands);
            if !c.decided {
                c.decided = true;
                self.not_recorded(call_id, NoRecording::Codec(why.into()));
            }
            return;
        }
        // New m= lines get their ports (two pairs each).
        let mut new = Vec::new();
        let mut failed = None;
        while c.streams.len() + new.len() < parsed.media.len() {
            let a = match self.ports.take(now) {
                Ok(p) => p,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            match self.ports.take(now) {
                Ok(b) => new.push(StreamPorts {
                    caller: a,
                    callee: b,
                }),
                Err(e) => {
                    self.ports.give_back(a, now);
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            for s in new {
                self.ports.give_back(s.caller, now);
                self.ports.give_back(s.callee, now);
            }
            leave_alone(c, &mut self.commands);
            if !c.decided {
                c.decided = true;
                let reason = match e {
                    PortError::NoDescriptors => NoRecording::NoDescriptors,
                    PortError::HeldElsewhere => NoRecording::PortsHeldElsewhere,
                    _ => NoRecording::NoPorts,
                };
                self.not_recorded(call_id, reason);
            }
            return;
        }
        let session = c.session;
        if !new.is_empty() {
            let recorded = if c.streams.is_empty() {
                recorded_stream(&parsed)
            } else {
                None
            };
            c.streams.extend_from_slice(&new);
            self.commands.push(Command::Open {
                session,
                streams: new,
                recorded,
                peers: c.peers,
            });
        }
        let to = other(from);
        let advertised = self.settings.advertised_for(c.peers[to as usize]);
        let anchors: Vec<Option<SdpAnchor>> = parsed
            .media
            .iter()
            .zip(&c.streams)
            .map(|(m, s)| {
                let pair = s.facing(to);
                Some(SdpAnchor {
                    rtp: pair.rtp,
                    rtcp: if m.rtcp_mux { pair.rtp } else { pair.rtcp },
                })
            })
            .collect();
        let rewritten = parsed.rewrite(advertised, &anchors);
        sdp::patch_body(msg, &rewritten, patch);
        for i in 0..parsed.media.len() {
            self.commands.push(Command::Update {
                session,
                stream: i,
                leg: from,
                sdp: leg_sdp(&parsed, i),
            });
        }
        // Offer and answer: the answer decides the recording.
        let decision = match &c.offer {
            Some((side, offer)) if *side != from && !c.decided => {
                c.decided = true;
                let offer = Sdp::parse(offer).ok();
                let check = match (recorded_stream(&parsed), offer) {
                    (Some(i), Some(offer)) => {
                        let payloads = Payloads::from_media(
                            offer.media.get(i).into_iter().chain(parsed.media.get(i)),
                        );
                        payloads.check(&parsed.media[i]).map(|()| payloads)
                    }
                    _ => Err(NoRecording::Codec("no audio stream".into())),
                };
                c.offer = None;
                Some(check)
            }
            Some((side, _)) if *side != from => {
                c.offer = None;
                None
            }
            _ => {
                c.offer = Some((from, body.to_vec()));
                None
            }
        };
        match decision {
            Some(Ok(payloads)) => {
                c.recording = RecState::Started;
                self.commands.push(Command::Record {
                    session,
                    call_id: Bytes::copy_from_slice(call_id),
                    payloads,
                })
            }
            Some(Err(reason)) => self.not_recorded(call_id, reason),
            None => {}
        }
    }
}

/// The [`FollowingPhase`] over the shared [`Anchor`].
pub struct MediaPhase(Arc<Mutex<Anchor>>);

impl FollowingPhase for MediaPhase {
    fn routed(
        &mut self,
        req: &Message,
        source: Peer,
        hop: &NextHop,
        now: Millis,
        patch: &mut Patch,
    ) {
        if let Ok(mut a) = self.0.lock() {
            a.on_routed(req, source, hop, now, patch);
        }
    }

    fn in_dialog_request(
        &mut self,
        call: CallCtx<'_>,
        req: &Message,
        _from: Peer,
        now: Millis,
        patch: &mut Patch,
    ) {
        if let Ok(mut a) = self.0.lock() {
            a.on_request(call, req, now, patch);
        }
    }

    fn response(&mut self, call: CallCtx<'_>, resp: &Message, now: Millis, patch: &mut Patch) {
        if let Ok(mut a) = self.0.lock() {
            a.on_response(call, resp, now, patch);
        }
    }
}

#[cfg(test)]
#[path = "anchor_tests.rs"]
mod tests;
