//! The proxy core: requests and responses in, forwarded messages out,
//! with RFC 3261 transaction timers on an injected clock.

use std::collections::{HashMap, VecDeque};

/// The core's tables: see `ahash` in Cargo.toml for why not SipHash.
type Map<K, V> = HashMap<K, V, ahash::RandomState>;
/// The tables keyed by a [`TxnKey`]: see [`KeyMap`].
type KeyMap<V> = super::transaction::KeyMap<V>;

use bytes::Bytes;
use ipnet::IpNet;

use crate::config::{Timers, Untrusted};
use crate::sip::reply::{response, response_into, response_max_len, small_response};
use crate::sip::validate::{cseq, validate};
use crate::sip::{HeaderName, Message, Method, NameAddr, ParseError, Patch, Uri};

use super::guard::{same_origin, ReplyLimiter};
use super::handoff::{DialogHandoff, DialogMiss, HandoffSide};
use super::hooks::{CallCtx, ProxyPhases, Refusal};
use super::linger::{self, ClientAfter, Lingering};
use super::route::{self, Identity, ViasLeft};
use super::timers::{TimerEntry, TimerQueue};
use super::transaction::{
    CallIds, ClientSide, ClientState, Deadlines, Keyer, ServerSide, ServerState, TimerKind, Txn,
    TxnKey, TIMER_KINDS,
};
use super::{Millis, NextHop, Output, Peer, Transport};
use crate::calls::CallEvent;

/// Dialogs whose BYE never came are forgotten after this long.
/// The largest UDP payload over IPv4 and IPv6 (65,535 minus IP and UDP
/// headers); a larger request cannot leave on UDP at all (EMSGSIZE).
const MAX_UDP_V4: usize = 65_507;
const MAX_UDP_V6: usize = 65_527;
const ALLOW: &[u8] = b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK, REFER, NOTIFY, SUBSCRIBE, MESSAGE";

pub struct ProxySettings {
    pub identity: Identity,
    pub trusted_sources: Vec<IpNet>,
    pub max_message_bytes: usize,
    pub timers: Timers,
    /// Mixed into generated branches so they differ across restarts;
    /// replay passes a constant for deterministic output.
    pub instance_nonce: u64,
    /// What out-of-dialog requests from outside `trusted_sources` get:
    /// one small stateless 403, or nothing.
    pub untrusted: Untrusted,
    /// How long a dialog without BYE is kept (in-dialog requests are
    /// refused after it): the call tracker's `max_call_seconds`, so the
    /// core and the call record agree on when a call is over.
    pub dialog_max_ms: Millis,
}

/// One side of a dialog: where its requests came from (or where the
/// proxy sent the initial request) and its Contact, the two addresses
/// the side may be reached at and may send from.
#[derive(Clone, Copy, Debug)]
struct Side {
    source: Peer,
    contact: Option<std::net::SocketAddr>,
}

impl Side {
    /// Where a request for this side goes when its URI names a host
    /// rather than an address: over UDP its Contact address (where it
    /// takes requests), else where it sends from; over a connection,
    /// that connection.
    fn reached_at(&self) -> Peer {
        let addr = match (self.source.transport, self.contact) {
            (Transport::Udp, Some(contact)) => contact,
            _ => self.source.addr,
        };
        Peer {
            transport: self.source.transport,
            addr,
        }
    }

    fn has_ip(&self, ip: std::net::IpAddr) -> bool {
        self.source.addr.ip() == ip || self.contact.is_some_and(|c| c.ip() == ip)
    }

    /// Whether a message that names this side (by its tags) comes from
    /// it. Over UDP: from its source or Contact address, port included,
    /// since its SIP stack sends from the socket it listens on (RFC 3261
    /// 18.2.2, RFC 3581); another program on its host, on another port,
    /// is not the side (trial, 2026-12-02: one on the PBX's host ended the
    /// trunk's call with a BYE and moved its media with a re-INVITE). Over
    /// a connection the host is the proof (a side opens a new one from a
    /// port of its own, and a connection's address is not forged), but
    /// only for a side that speaks TCP: a UDP side's host on any TCP port
    /// was the same stranger again (second trial that day).
    fn sends_from(&self, from: Peer) -> bool {
        match from.transport {
            Transport::Udp => self.source.addr == from.addr || self.contact == Some(from.addr),
            _ => self.source.transport != Transport::Udp && self.has_ip(from.addr.ip()),
        }
    }
}

/// A dialog record-routed through this proxy, from its initial request
/// until BYE (or a failed setup, or [`ProxySettings::dialog_max_ms`]): what in-dialog
/// requests and late 2xx responses are checked against (SPEC S-3).
#[derive(Clone, Debug)]
struct Dialog {
    /// The Call-ID (the table's key is only its hash with the caller's tag).
    call_id: Bytes,
    started: Millis,
    /// A 2xx was relayed (early dialogs only allow what precedes it).
    confirmed: bool,
    /// Until an ACK passes: when the setup's 2xx was relayed (see
    /// `CallEvent::Unacknowledged`, reported 64·T1 later).
    unacked_since: Option<Millis>,
    /// Its 2xx was never ACKed (reported `Unacknowledged`): the call is
    /// over, and the dialog is kept only for a BYE that may still come,
    /// so a shutdown's drain does not wait for it.
    unacked_expired: bool,
    /// Initial requests of this dialog still waiting for a final response
    /// (a UA may send several INVITEs with one Call-ID and From tag).
    setups: u32,
    caller_tag: Bytes,
    /// Our Record-Route token for this dialog (its Call-ID and
    /// `caller_tag`): each in-dialog request's Route is checked against
    /// it instead of computing the token again.
    token: route::Token,
    /// The callee's To tag: of its latest tagged response until the 2xx,
    /// then the 2xx's.
    callee_tag: Option<Bytes>,
    /// The other To tags a forking PBX answered with: early dialogs of
    /// other branches (each may get its PRACK, UPDATE or BYE), and a second
    /// branch's 2xx, which the caller ACKs and then ends with a BYE (RFC
    /// 3261 13.2.2.4). At most [`MAX_FORKS`]; a BYE of one ends only it.
    /// Trial, 2026-12-02: only the latest tag was known, so the other
    /// branches' PRACKs, ACKs and BYEs got 481 or were dropped.
    forks: Vec<Fork>,
    caller: Side,
    callee: Side,
    /// What siptrack needs to end the dialog itself (RTP timeout). In
    /// the dialog's own box: a box of its own was from when dialogs sat
    /// in the table inline, and cost a malloc and a free per call (about
    /// 300 instructions of a new INVITE's, issue 15).
    ends: Ends,
    /// The caller's Contact address is not worked out yet:
    /// `caller.contact` is unset (`ends.target[0]` holds the INVITE's
    /// first Contact URI, which validation found). Decoding the URI costs
    /// more than a thousand instructions per INVITE, for an address only
    /// in-dialog requests, a shared 2xx and siptrack's own BYE need (an
    /// unanswered call never does); each of those resolves it first
    /// ([`Dialog::resolve_contact`]).
    contact_pending: bool,
}

/// A dialog's state as each UA keeps it (RFC 3261 12.1), enough for the
/// proxy to send each side a BYE in the other's name.
#[derive(Clone, Debug, Default)]
struct Ends {
    /// The INVITE's From (caller's tag) and the 2xx's To (callee's tag).
    caller_from: Bytes,
    callee_to: Bytes,
    /// Each side's remote target (its Contact URI), caller first.
    target: [Bytes; 2],
    /// The 2xx's Record-Route values, in order (nearest the callee first).
    record_route: Vec<Bytes>,
    /// The highest CSeq each side has used, caller first.
    cseq: [u64; 2],
}

/// Why siptrack ends a dialog itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndReason {
    RtpTimeout,
    Shutdown,
    /// `tracking.max_call_seconds` reached.
    CallLimit,
}

/// Branches of a forked call whose dialogs are kept besides the main one.
const MAX_FORKS: usize = 8;

/// Another branch's dialog (see `Dialog::forks`): its To tag, and the
/// Contact address it answered with. A forking proxy that does not
/// Record-Route leaves each branch's phone to send its own in-dialog
/// requests from that address (QA, 2026-12-02: with one Contact kept per
/// dialog, the second answering branch's own BYE got 481, and a BYE to
/// it 404).
#[derive(Clone, Debug)]
struct Fork {
    tag: Bytes,
    contact: Option<std::net::SocketAddr>,
}

/// A dialog's key in the table: its Call-ID and caller's From tag reduced
/// to 128 bits of a keyed hash, as transaction keys are (see [`TxnKey`]).
/// It was the pair of them as `Bytes`: every look-up (several per
/// in-dialog request and per response) copied the Call-ID to the heap.
type DialogKey = TxnKey;

fn dialog_key(keyer: &Keyer, call_id: &[u8], caller_tag: &[u8]) -> DialogKey {
    keyer.start().bytes(call_id).bytes(caller_tag).finish()
}

/// The dialog a message with these tags belongs to (the caller's tag is
/// its From or its To tag), and whether the caller sent it. A function
/// of the two fields, so that it can run while a transaction is borrowed.
fn find_dialog_in(
    dialogs: &KeyMap<Box<Dialog>>,
    keyer: &Keyer,
    call_id: &[u8],
    ftag: &[u8],
    ttag: &[u8],
) -> Option<(DialogKey, bool)> {
    for tag in [ftag, ttag] {
        let key = dialog_key(keyer, call_id, tag);
        if let Some(by_caller) = dialogs
            .get(&key)
            .and_then(|d| d.sender_is_caller(ftag, ttag))
        {
            return Some((key, by_caller));
        }
    }
    None
}

impl Dialog {
    /// Which side sent a message with these From and To tags: `Some(true)`
    /// for the caller, `Some(false)` for the callee, `None` for neither.
    fn sender_is_caller(&self, from_tag: &[u8], to_tag: &[u8]) -> Option<bool> {
        let callee_is =
            |t: &[u8]| self.callee_tag.as_deref().is_none_or(|c| c == t) || self.is_fork(t);
        if from_tag == self.caller_tag.as_ref() && callee_is(to_tag) {
            Some(true)
        } else if to_tag == self.caller_tag.as_ref() && callee_is(from_tag) {
            Some(false)
        } else {
            None
        }
    }
    /// Works out the caller's Contact address (see `contact_pending`):
    /// what [`first_contact`] of the INVITE gave.
    fn resolve_contact(&mut self) {
        if !std::mem::take(&mut self.contact_pending) {
            return;
        }
        self.caller.contact = contact_addr(&self.ends.target[0]);
    }
    /// Whether `tag` is a forked branch's (not the main dialog's).
    fn is_fork(&self, tag: &[u8]) -> bool {
        self.forks.iter().any(|f| f.tag.as_ref() == tag)
    }
    /// Keeps `tag` as another branch's dialog (see `forks`), with the
    /// Contact address it answered with (a later answer's replaces it).
    fn remember_fork(&mut self, tag: &[u8], contact: Option<std::net::SocketAddr>) {
        if self.callee_tag.as_deref() == Some(tag) {
            return;
        }
        if let Some(fork) = self.forks.iter_mut().find(|f| f.tag.as_ref() == tag) {
            fork.contact = contact.or(fork.contact);
        } else if self.forks.len() < MAX_FORKS {
            self.forks.push(Fork {
                tag: Bytes::copy_from_slice(tag),
                contact,
            });
        }
    }
    /// Another branch's 2xx to the INVITE (To tag other than the
    /// dialog's): its dialog, for its ACK and BYE. The main 2xx's
    /// retransmissions come here too, and teach nothing.
    fn learn_other_branch(&mut self, msg: &Message) {
        let to_tag = msg.tag(HeaderName::To).unwrap_or_default();
        if self.confirmed && !to_tag.is_empty() && self.callee_tag.as_deref() != Some(to_tag) {
            self.remember_fork(to_tag, first_contact(msg).addr);
        }
    }
    /// A target refresh (RFC 3261 12.2): the new Contact of a side,
    /// from its re-INVITE or UPDATE or their 2xx. On the callee's side
    /// `callee_tag` says which branch: a forked branch's moves only that
    /// branch (QA, 2026-12-02: branch B's re-INVITE moved the main
    /// dialog's callee to its new Contact, a third host, and branch A's
    /// BYE got 481).
    fn refresh_target(
        &mut self,
        caller: bool,
        callee_tag: &[u8],
        addr: std::net::SocketAddr,
        uri: &[u8],
    ) {
        if !caller && self.is_fork(callee_tag) {
            self.remember_fork(callee_tag, Some(addr));
            return;
        }
        self.side(caller).contact = Some(addr);
        self.ends.target[usize::from(!caller)] = Bytes::copy_from_slice(uri);
    }
    /// Ends the dialog of the branch with this tag.
    fn forget_fork(&mut self, tag: &[u8]) {
        self.forks.retain(|f| f.tag.as_ref() != tag);
    }
    /// The callee as the branch with this To tag is: a forked branch is
    /// at its own Contact (or, through the forking proxy, the callee's
    /// source); any other tag is the main dialog's callee.
    fn callee_of(&self, tag: &[u8]) -> Side {
        match self.forks.iter().find(|f| f.tag.as_ref() == tag) {
            Some(fork) => Side {
                source: self.callee.source,
                contact: fork.contact.or(self.callee.contact),
            },
            None => self.callee,
        }
    }
    /// The sending and the receiving side of a message with these tags,
    /// sent by the caller or not (see [`Dialog::sender_is_caller`]).
    fn ends_of(&self, by_caller: bool, ftag: &[u8], ttag: &[u8]) -> (Side, Side) {
        if by_caller {
            (self.caller, self.callee_of(ttag))
        } else {
            (self.callee_of(ftag), self.caller)
        }
    }
    fn side(&mut self, caller: bool) -> &mut Side {
        if caller {
            &mut self.caller
        } else {
            &mut self.callee
        }
    }
}

/// Counters exported as metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub received: u64,
    pub unparsable: u64,
    pub invalid: u64,
    pub oversized: u64,
    pub untrusted: u64,
    pub stray_responses: u64,
    /// Responses, CANCELs and ACKs from an address other than the one
    /// their transaction talks to (forged or misrouted): dropped.
    pub wrong_source: u64,
    /// In-dialog requests refused: bad token, no live dialog, a sender or
    /// target outside the dialog.
    pub in_dialog_refused: u64,
    /// Replies not sent: over the per-source rate, or `sip.untrusted = "drop"`.
    pub replies_suppressed: u64,
    /// Requests too large for UDP toward a UDP next hop (answered 513).
    pub too_large: u64,
    pub absorbed_retransmissions: u64,
    pub retransmissions_sent: u64,
    pub requests_forwarded: u64,
    pub responses_forwarded: u64,
    pub local_replies: u64,
    pub timeouts: u64,
}

impl Stats {
    /// Every counter with its name (logs, metrics, replay summaries).
    pub fn fields(&self) -> [(&'static str, u64); 16] {
        [
            ("received", self.received),
            ("unparsable", self.unparsable),
            ("invalid", self.invalid),
            ("oversized", self.oversized),
            ("untrusted", self.untrusted),
            ("stray_responses", self.stray_responses),
            ("wrong_source", self.wrong_source),
            ("in_dialog_refused", self.in_dialog_refused),
            ("replies_suppressed", self.replies_suppressed),
            ("too_large", self.too_large),
            ("absorbed_retransmissions", self.absorbed_retransmissions),
            ("retransmissions_sent", self.retransmissions_sent),
            ("requests_forwarded", self.requests_forwarded),
            ("responses_forwarded", self.responses_forwarded),
            ("local_replies", self.local_replies),
            ("timeouts", self.timeouts),
        ]
    }
}

pub struct Proxy {
    s: ProxySettings,
    /// Tracking (and later media) at the phases of a call.
    phases: Box<dyn ProxyPhases>,
    /// Boxed: a table of large inline values wastes its empty slots' size
    /// (up to half of them after it grows), for every held transaction.
    txns: Map<u64, Box<Txn>>,
    server_index: KeyMap<u64>,
    client_index: KeyMap<u64>,
    /// What is left of transactions whose final response has passed:
    /// their retransmissions are absorbed there (`linger.rs`).
    lingering: Lingering,
    /// Transactions that armed a linger timer during the current event:
    /// looked at when it is done, to retire them into `lingering`.
    settling: Vec<u64>,
    /// Hashes server keys and branches into the indexes' keys.
    keyer: Keyer,
    timers: TimerQueue,
    /// Entries of `timers` whose deadline was disarmed or moved since
    /// (or whose transaction is gone): counted where that happens, taken
    /// off when one is popped, zero after a rebuild.
    stale_timers: usize,
    /// Client transactions sent to each TCP next hop, for
    /// [`Proxy::on_unreachable`] (ids of ended ones are pruned as the
    /// list grows): a refused connect finds its requests here rather
    /// than in a scan of every transaction. UDP hops are not listed.
    tcp_sent: HashMap<Peer, Vec<u64>>,
    next_id: u64,
    branch_seq: u64,
    /// The key of `new_branch`'s PRF.
    branch_key: (u64, u64),
    out: Vec<Output>,
    events: Vec<CallEvent>,
    draining: bool,
    /// By (Call-ID, caller's From tag): a B2BUA may reuse one Call-ID on
    /// both of its legs, and both may pass through here. Boxed: a
    /// `Dialog` was 272 B (over 400 B now, its `Ends` inline), and in place every bucket of the table, empty
    /// ones included, was 288 B, so each new dialog wrote five cold cache
    /// lines of a table of megabytes and each growth moved them all (6 %
    /// of the criterion core per INVITE, issue 15).
    dialogs: KeyMap<Box<Dialog>>,
    limiter: ReplyLimiter,
    last_sweep: Millis,
    /// (64·T1 after the 2xx, the dialog, when its 2xx was relayed), in
    /// deadline order (one wait for all): the missing ACK is reported at
    /// its deadline. The minute's sweep reported it 32 to 92 s after the
    /// 2xx, so an RTP timeout at 60 s often came first and the call went
    /// to the CRM as 60 s answered (trial, 2026-12-03).
    unacked: VecDeque<(Millis, DialogKey, Millis)>,
    /// Several nodes share one database (issue 14): answered dialogs are
    /// handed out for the store, a route token of any node of the same
    /// `route_secret` is accepted, and an in-dialog request whose dialog
    /// is not here is handed to the driver to look up instead of a 481.
    share_dialogs: bool,
    handoffs: Vec<DialogHandoff>,
    misses: Vec<DialogMiss>,
    /// Call-IDs being looked up, with the requests of the same Call-ID
    /// that came meanwhile (retransmissions above all, while the database
    /// is slow): they wait for that one look-up and are processed after
    /// its request, never looked up again (a second look-up could come
    /// back after the call ended and take it over anew).
    waiting_lookups: HashMap<Bytes, Vec<(Peer, Bytes)>>,
    /// The request being processed was already looked up in the store:
    /// a dialog still missing is a 481.
    looked_up: bool,
    /// The edits of the request being forwarded, kept between requests
    /// for its room: a new `Patch` was two allocations per request.
    scratch: Patch,
    pub stats: Stats,
}

/// Our branches: the magic cookie and 20 hex digits (80 bits).
const BRANCH_LEN: usize = 27;

/// The key of the branch PRF: from the route key and the instance nonce,
/// as the HMAC branches were, so replay (both fixed) gives the same ones.
fn branch_key(s: &ProxySettings) -> (u64, u64) {
    s.identity
        .derived_key(&[b"branch-key", &s.instance_nonce.to_be_bytes()])
}

/// The branch numbered `seq` under `key` (see `Proxy::new_branch`).
/// SipHash's one-shot `hash`: the digest the streaming hasher gave
/// (write, then finish128), without its tail buffering.
fn branch((k0, k1): (u64, u64), seq: u64) -> [u8; BRANCH_LEN] {
    let h = siphasher::sip128::SipHasher24::new_with_keys(k0, k1);
    let digest = h.hash(&seq.to_le_bytes());
    let mut out = [0u8; BRANCH_LEN];
    out[..7].copy_from_slice(b"z9hG4bK");
    crate::hex::hex_into(&mut out[7..], &digest.as_bytes());
    out
}

/// Timer queue entries below which it is never rebuilt.
const COMPACT_TIMERS_MIN: usize = 1024;

/// Requests of one Call-ID held while its dialog is looked up.
const MAX_WAITING_FOR_LOOKUP: usize = 16;

impl Proxy {
    pub fn new(settings: ProxySettings, phases: Box<dyn ProxyPhases>) -> Proxy {
        let branch_key = branch_key(&settings);
        Proxy {
            s: settings,
            phases,
            txns: Map::default(),
            server_index: KeyMap::default(),
            client_index: KeyMap::default(),
            lingering: Lingering::default(),
            settling: Vec::new(),
            keyer: Keyer::default(),
            timers: TimerQueue::default(),
            stale_timers: 0,
            tcp_sent: HashMap::new(),
            next_id: 1,
            branch_seq: 0,
            branch_key,
            out: Vec::new(),
            events: Vec::new(),
            draining: false,
            dialogs: KeyMap::default(),
            limiter: ReplyLimiter::default(),
            last_sweep: 0,
            unacked: VecDeque::new(),
            share_dialogs: false,
            handoffs: Vec::new(),
            misses: Vec::new(),
            waiting_lookups: HashMap::new(),
            looked_up: false,
            scratch: Patch::default(),
            stats: Stats::default(),
        }
    }

    /// Answered dialogs are shared with other nodes through the store
    /// (see the field `share_dialogs`).
    pub fn share_dialogs(&mut self, on: bool) {
        self.share_dialogs = on;
    }

    /// Dialogs answered since the last call, for the store.
    pub fn take_handoffs(&mut self) -> std::vec::Drain<'_, DialogHandoff> {
        self.handoffs.drain(..)
    }

    /// In-dialog requests waiting for their dialog to be looked up.
    pub fn take_dialog_misses(&mut self) -> std::vec::Drain<'_, DialogMiss> {
        self.misses.drain(..)
    }

    /// Takes over a dialog another node set up (its record from the
    /// store), unless this node has it already. Its lifetime counts from
    /// now: the other node's clock is not this one's.
    pub fn adopt_dialog(&mut self, now: Millis, h: &DialogHandoff) {
        let key = dialog_key(&self.keyer, h.call_id.as_bytes(), h.caller_tag.as_bytes());
        let identity = &self.s.identity;
        self.dialogs.entry(key).or_insert_with(|| {
            Box::new(Dialog {
                call_id: Bytes::copy_from_slice(h.call_id.as_bytes()),
                started: now,
                confirmed: true,
                unacked_since: None,
                unacked_expired: false,
                setups: 0,
                caller_tag: Bytes::copy_from_slice(h.caller_tag.as_bytes()),
                token: identity.token_hex(h.call_id.as_bytes(), h.caller_tag.as_bytes()),
                callee_tag: Some(Bytes::copy_from_slice(h.callee_tag.as_bytes())),
                forks: Vec::new(),
                caller: Side {
                    source: h.caller.peer(),
                    contact: h.caller.contact,
                },
                callee: Side {
                    source: h.callee.peer(),
                    contact: h.callee.contact,
                },
                // No tags, targets or CSeqs of its own: siptrack never ends an
                // adopted call by itself (the RTP timeout is the media of the
                // node that set it up, which is gone); it relays its BYE.
                ends: Ends::default(),
                contact_pending: false,
            })
        });
    }

    /// A request given back after its dialog was looked up in the store
    /// (and adopted if found): processed as it arrived, but a dialog still
    /// missing now gets its 481.
    /// Then the requests of its Call-ID that waited for the same look-up.
    pub fn on_looked_up(&mut self, now: Millis, miss: DialogMiss) {
        let waited = self
            .waiting_lookups
            .remove(miss.call_id.as_bytes())
            .unwrap_or_default();
        self.looked_up = true;
        self.on_message(now, miss.from, miss.data);
        for (from, data) in waited {
            self.on_message(now, from, data);
        }
        self.looked_up = false;
    }

    /// Messages to send, in order. The driver takes them after each call.
    pub fn take_outputs(&mut self) -> std::vec::Drain<'_, Output> {
        self.out.drain(..)
    }

    /// What happened to tracked calls, in order. The driver takes them
    /// after each call, like the outputs.
    pub fn take_call_events(&mut self) -> std::vec::Drain<'_, CallEvent> {
        self.events.drain(..)
    }

    /// The earliest armed timer.
    /// Not the lingering entries' sweep: a look-up never sees an expired
    /// one, so sweeping them is only memory, and [`Proxy::on_timer`] does
    /// it whenever it is called (the run loop calls it at least once a
    /// second) rather than waking the loop for it.
    pub fn next_deadline(&self) -> Option<Millis> {
        // The first 2xx whose ACK deadline is still to come.
        let sweep = self.unacked.front().map(|&(at, _, _)| at);
        match (self.timers.next_at(), sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Gives back the capacity the tables grew to at a load peak (a map
    /// keeps its buckets when its entries go). Called after a burst, when
    /// they are mostly empty; costs one rehash of what is left.
    pub fn shrink_tables(&mut self) {
        fn shrink<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(m: &mut HashMap<K, V, S>) {
            if m.len() * 4 < m.capacity() {
                m.shrink_to_fit();
            }
        }
        shrink(&mut self.txns);
        shrink(&mut self.server_index);
        shrink(&mut self.client_index);
        shrink(&mut self.dialogs);
        self.lingering.shrink();
        self.settling.shrink_to_fit();
        self.timers.shrink();
        self.out.shrink_to_fit();
        self.events.shrink_to_fit();
        self.limiter.shrink();
        // A burst's ACK deadlines (32 s of its 2xx: 8 MB at 8,000 calls/s).
        if self.unacked.len() * 4 < self.unacked.capacity() {
            self.unacked.shrink_to_fit();
        }
    }

    /// Stop accepting new calls (503); calls in progress go on.
    pub fn start_draining(&mut self) {
        self.draining = true;
    }

    /// Transactions held in memory, including those lingering to absorb
    /// retransmissions.
    pub fn active_transactions(&self) -> usize {
        self.txns.len() + self.lingering.len()
    }

    /// Transactions still waiting for a final response.
    pub fn pending_transactions(&self) -> usize {
        self.txns
            .values()
            .filter(|t| {
                t.server
                    .as_ref()
                    .is_some_and(|s| s.state == ServerState::Proceeding)
                    || t.client.as_ref().is_some_and(|c| {
                        matches!(c.state, ClientState::Calling | ClientState::Proceeding)
                    })
            })
            .count()
    }

    /// Dialogs established through the proxy and not yet ended by BYE
    /// (those whose 2xx was never ACKed are over).
    pub fn active_dialogs(&self) -> usize {
        self.dialogs
            .values()
            .filter(|d| d.confirmed && !d.unacked_expired)
            .count()
    }

    /// A message arrived from `from`.
    pub fn on_message(&mut self, now: Millis, from: Peer, data: Bytes) {
        self.on_message_inner(now, from, data);
        self.settle(now);
    }

    fn on_message_inner(&mut self, now: Millis, from: Peer, data: Bytes) {
        self.stats.received += 1;
        let oversized = data.len() > self.s.max_message_bytes;
        let msg = match Message::parse(data, from.transport == Transport::Udp) {
            Ok(m) => m,
            Err(ParseError::Empty) => return,
            Err(_) => {
                self.stats.unparsable += 1;
                return;
            }
        };
        if oversized {
            self.stats.oversized += 1;
            if msg.method().is_some_and(|m| m != Method::Ack) {
                self.refuse(now, from, &msg, 400, "Message Too Large");
            }
            return;
        }
        if let Err(r) = validate(&msg) {
            self.stats.invalid += 1;
            if msg.method().is_some_and(|m| m != Method::Ack) {
                self.refuse(now, from, &msg, r.code, r.reason);
            }
            return;
        }
        if msg.is_request() {
            self.on_request(now, from, &msg);
        } else {
            self.on_response(now, from, &msg);
        }
    }

    // ---- requests -------------------------------------------------------

    fn on_request(&mut self, now: Millis, from: Peer, msg: &Message) {
        let Some(method) = msg.method() else { return };
        // Parsed once here for the key, the stamp and the ACK's branch.
        let Some(top) = route::TopVia::of(msg) else {
            self.stats.invalid += 1;
            return;
        };
        let Some(key) = server_key(&self.keyer, msg, &top, method) else {
            self.stats.invalid += 1;
            return;
        };
        match method {
            Method::Ack => {
                if let Some(&id) = self.server_index.get(&key) {
                    if !self.is_server_peer(id, from) {
                        self.stats.wrong_source += 1;
                        return;
                    }
                    if self.absorb_ack(now, id) {
                        return;
                    }
                } else if let Some(l) = self.lingering.server(&key, now) {
                    if !same_origin(l.peer, from) {
                        self.stats.wrong_source += 1;
                        return;
                    }
                    if l.absorbs_ack {
                        return;
                    }
                }
                self.on_in_dialog(now, from, msg, (key, top), true);
            }
            Method::Cancel => self.on_cancel(now, from, msg, &top),
            _ => {
                if let Some(&id) = self.server_index.get(&key) {
                    if !self.is_server_peer(id, from) {
                        // Someone else's retransmission: no answer, or
                        // the last response would be reflected at them.
                        self.stats.wrong_source += 1;
                        return;
                    }
                    self.stats.absorbed_retransmissions += 1;
                    let again = self
                        .txns
                        .get(&id)
                        .and_then(|t| t.server.as_ref())
                        .and_then(|s| s.last_response.clone());
                    if let Some(data) = again {
                        self.out.push(Output::Send { to: from, data });
                    }
                    return;
                }
                if let Some(l) = self.lingering.server(&key, now) {
                    if !same_origin(l.peer, from) {
                        self.stats.wrong_source += 1;
                        return;
                    }
                    self.stats.absorbed_retransmissions += 1;
                    if let Some(r) = &l.response {
                        let data = Bytes::copy_from_slice(r);
                        self.out.push(Output::Send { to: from, data });
                    }
                    return;
                }
                let in_dialog = msg.tag(HeaderName::To).is_some();
                if in_dialog {
                    self.on_in_dialog(now, from, msg, (key, top), false);
                } else {
                    self.on_initial(now, from, msg, (key, top), method);
                }
            }
        }
    }

    /// Whether `from` is where transaction `id`'s request came from.
    fn is_server_peer(&self, id: u64, from: Peer) -> bool {
        self.txns
            .get(&id)
            .and_then(|t| t.server.as_ref())
            .is_none_or(|s| same_origin(s.peer, from))
    }

    /// An ACK matching a server INVITE transaction that sent a non-2xx:
    /// the hop-by-hop ACK, absorbed here (RFC 3261 17.2.1).
    fn absorb_ack(&mut self, now: Millis, id: u64) -> bool {
        let Some(txn) = self.txns.get_mut(&id) else {
            return false;
        };
        let Some(server) = txn.server.as_mut() else {
            return false;
        };
        match server.state {
            ServerState::Completed => {
                server.state = ServerState::Confirmed;
                let linger = if server.peer.transport.is_reliable() {
                    0
                } else {
                    self.s.timers.t4_ms
                };
                self.stale_timers += usize::from(txn.deadlines.clear(TimerKind::ServerRetransmit));
                self.arm(id, TimerKind::ServerLinger, now + linger);
                true
            }
            ServerState::Confirmed => true,
            _ => false,
        }
    }

    fn on_cancel(&mut self, now: Millis, from: Peer, msg: &Message, top: &route::TopVia) {
        let Some(invite_key) = server_key(&self.keyer, msg, top, Method::Invite) else {
            return;
        };
        let Some(&id) = self.server_index.get(&invite_key) else {
            match self.lingering.server(&invite_key, now) {
                // The INVITE was answered: nothing left to cancel (RFC
                // 3261 9.2), but the CANCEL itself succeeds.
                Some(l) if same_origin(l.peer, from) => {
                    self.reply_stateless(msg, from, 200, "OK", &[]);
                }
                Some(_) => self.stats.wrong_source += 1,
                None => self.refuse(now, from, msg, 481, NO_DIALOG),
            }
            return;
        };
        if !self.is_server_peer(id, from) {
            // The victim's branch from another address: not believed.
            self.stats.wrong_source += 1;
            return;
        }
        self.reply_stateless(msg, from, 200, "OK", &[]);
        let Some(txn) = self.txns.get_mut(&id) else {
            return;
        };
        txn.caller_cancelled = true;
        let proceeding = txn
            .server
            .as_ref()
            .is_some_and(|s| s.state == ServerState::Proceeding);
        let Some(client) = txn.client.as_mut() else {
            return;
        };
        if !proceeding
            || client.cancel_sent
            || !matches!(client.state, ClientState::Calling | ClientState::Proceeding)
        {
            return;
        }
        if client.got_provisional {
            self.send_cancel(now, id);
        } else {
            // RFC 3261 9.1: a CANCEL may only follow a provisional response.
            client.cancel_pending = true;
        }
    }

    fn on_initial(
        &mut self,
        now: Millis,
        from: Peer,
        msg: &Message,
        (key, top): (TxnKey, route::TopVia),
        method: Method,
    ) {
        if !self.is_trusted(from) {
            self.stats.untrusted += 1;
            self.refuse(now, from, msg, 403, "Forbidden");
            return;
        }
        if let Some(refusal) = common_checks(msg) {
            self.reply_refusal(now, from, msg, key, refusal);
            return;
        }
        // Decoded by validation (kept in the message).
        let no_user = || msg.request_uri_spans().is_some_and(|u| u.user.is_none());
        match method {
            Method::Register => {
                self.reply_final(now, from, msg, key, (405, "Method Not Allowed"), &[ALLOW]);
                return;
            }
            Method::Options if no_user() => {
                self.reply_final(
                    now,
                    from,
                    msg,
                    key,
                    (200, "OK"),
                    &[ALLOW, b"Accept: application/sdp"],
                );
                return;
            }
            Method::Invite if self.draining => {
                self.reply_final(
                    now,
                    from,
                    msg,
                    key,
                    (503, "Service Unavailable"),
                    &[b"Retry-After: 30"],
                );
                return;
            }
            _ => {}
        }
        let mut patch = self.take_scratch();
        // A preloaded route is consumed, ours and any after it: the next
        // hop comes from configuration only, and a Route left for another
        // host would send the PBX (a loose router) there (trial,
        // 2026-12-03: `Route: <sip:us;lr>, <sip:other;lr>` reached the PBX
        // as `Route: <sip:other;lr>`).
        let routes = route::route_values(msg);
        if !routes.is_empty() {
            route::pop_routes(msg, &routes, routes.len(), &mut patch);
        }
        match self.phases.initial_request(msg, from, now, &mut patch) {
            Ok(hop) => {
                let record_route = matches!(method, Method::Invite)
                    || matches!(
                        msg.method_bytes(),
                        Some(b"SUBSCRIBE" | b"REFER" | b"NOTIFY")
                    );
                let ends = (record_route, true);
                self.forward_request(now, from, msg, (key, top), hop, &mut patch, ends);
            }
            Err(refusal) => self.reply_refusal(now, from, msg, key, refusal),
        }
        self.scratch = patch;
    }

    /// The scratch patch, empty (see the field).
    fn take_scratch(&mut self) -> Patch {
        let mut patch = std::mem::take(&mut self.scratch);
        patch.clear();
        patch
    }

    /// A request inside a dialog (To tag, or an ACK for a 2xx). SPEC S-3:
    /// relayed only when its top Route is our token for this Call-ID and
    /// the dialog's caller tag, the dialog is live in this node's table,
    /// the sender is the side its tags name (by source or Contact IP) or a
    /// trusted source, and the
    /// next hop is the other side (its source or Contact). Anything else
    /// gets one small 404/481 (nothing for an ACK), never relayed.
    fn on_in_dialog(
        &mut self,
        now: Millis,
        from: Peer,
        msg: &Message,
        (key, top): (TxnKey, route::TopVia),
        is_ack: bool,
    ) {
        let call_id = msg.call_id().unwrap_or_default();
        // Borrowed: copied only into what is kept (the BYE's event).
        let ftag = msg.tag(HeaderName::From).unwrap_or_default();
        let ttag = msg.tag(HeaderName::To).unwrap_or_default();
        let routes = route::route_values(msg);
        // The dialog is looked up first so that its token can stand in
        // for computing its caller's tag's (same Call-ID, same tag: same
        // token); the answer is what `Identity::is_token` gives.
        let found = self.find_dialog(call_id, ftag, ttag);
        let known = found
            .as_ref()
            .and_then(|(k, _)| self.dialogs.get(k))
            .map(|d| (d.caller_tag.clone(), d.token));
        let identity = &self.s.identity;
        let token = |t: &[u8], user: &[u8]| match &known {
            Some((tag, token)) if tag.as_ref() == t && route::constant_time_eq(user, token) => true,
            _ => identity.is_token(call_id, t, user),
        };
        // The values' name-addrs as validation parsed them (kept in the
        // message): a value that is none is no route of ours.
        let own = |i: usize| {
            routes.get(i).is_some_and(|(_, span)| {
                let (Some(uri), tags) = (msg.route_uri(*span), [ftag, ttag]) else {
                    return false;
                };
                identity.is_own_route_uri(uri, &tags, token)
                    // Another node's Record-Route: its token proves the
                    // cluster (same route_secret) issued it.
                    || (self.share_dialogs && route::is_signed_route_uri(uri, &tags, token))
            })
        };
        if !own(0) {
            return self.refuse_in_dialog(now, from, msg, is_ack, 404, "Not Found");
        }
        let Some((dkey, by_caller)) = found else {
            if self.share_dialogs && !self.looked_up && !self.draining {
                let data = msg.buf().clone();
                match self.waiting_lookups.get_mut(call_id) {
                    // Beyond a few, a copy is dropped: UDP senders repeat.
                    Some(waiting) if waiting.len() < MAX_WAITING_FOR_LOOKUP => {
                        waiting.push((from, data))
                    }
                    Some(_) => {}
                    None => {
                        self.waiting_lookups
                            .insert(Bytes::copy_from_slice(call_id), Vec::new());
                        self.misses.push(DialogMiss {
                            call_id: String::from_utf8_lossy(call_id).into_owned(),
                            from,
                            data,
                        });
                    }
                }
                return;
            }
            return self.refuse_in_dialog(now, from, msg, is_ack, 481, NO_DIALOG);
        };
        let Some(dialog) = self.dialogs.get_mut(&dkey) else {
            return;
        };
        dialog.resolve_contact();
        // Past its lifetime the dialog is over, whether or not the
        // periodic sweep has come by yet.
        if now.saturating_sub(dialog.started) >= self.s.dialog_max_ms {
            self.dialogs.remove(&dkey);
            return self.refuse_in_dialog(now, from, msg, is_ack, 481, NO_DIALOG);
        }
        let Some(dialog) = self.dialogs.get(&dkey) else {
            return;
        };
        let (sender, receiver) = dialog.ends_of(by_caller, ftag, ttag);
        // From the side its tags name (see `Side::sends_from`), or from a
        // trusted source (a trunk's other node).
        if !sender.sends_from(from) && !self.is_trusted(from) {
            return self.refuse_in_dialog(now, from, msg, is_ack, 481, NO_DIALOG);
        }
        if let Some(refusal) = common_checks(msg) {
            if !is_ack {
                self.reply_refusal(now, from, msg, key, refusal);
            }
            return;
        }
        // Double Record-Route (RFC 5658): both entries are ours.
        let popped = if own(1) { 2 } else { 1 };
        let next_uri = match routes.get(popped) {
            Some((_, span)) => msg.route_uri(*span).and_then(|u| Uri::parse(u).ok()),
            // Decoded by validation (kept in the message).
            None => msg.request_uri_parsed(),
        };
        let next = next_uri.as_ref().and_then(|u| match route::uri_peer(u) {
            Some(peer) => Some(peer),
            // A host name (a PBX's Contact `sip:ua2@pbx.example.com`):
            // siptrack resolves no names, and the request is for the
            // dialog's other side anyway, whose address the dialog
            // knows (trial, 2026-12-02: such a PBX's BYE got 502, and
            // its calls ran on until the capture ended).
            None if u.host_ip().is_none() => Some(receiver.reached_at()),
            None => None,
        });
        let Some(peer) = next else {
            if !is_ack {
                self.reply_final(
                    now,
                    from,
                    msg,
                    key,
                    (502, "Bad Gateway"),
                    &[b"Warning: 399 siptrack \"next hop is not an IP address\""],
                );
            }
            return;
        };
        // Toward the other side only: its host, on any port (an SBC or
        // PBX may Record-Route a port other than the one it sends from).
        if !receiver.has_ip(peer.addr.ip()) || self.s.identity.is_own_addr(peer.addr) {
            return self.refuse_in_dialog(now, from, msg, is_ack, 404, "Not Found");
        }
        // Target refresh (RFC 3261 12.2.2): the sender's new Contact.
        if matches!(msg.method_bytes(), Some(b"INVITE" | b"UPDATE")) {
            let first = first_contact(msg);
            if let Some(c) = first.addr {
                if let Some(d) = self.dialogs.get_mut(&dkey) {
                    let callee_tag = if by_caller { ttag } else { ftag };
                    d.refresh_target(by_caller, callee_tag, c, first.uri);
                }
            }
        }
        if let (Some(d), Some((n, _)), false) = (self.dialogs.get_mut(&dkey), cseq(msg), is_ack) {
            let c = &mut d.ends.cseq[usize::from(!by_caller)];
            *c = (*c).max(n);
        }
        let mut patch = self.take_scratch();
        route::pop_routes(msg, &routes, popped, &mut patch);
        let call = CallCtx {
            call_id,
            from_tag: ftag,
        };
        self.phases
            .in_dialog_request(call, msg, from, now, &mut patch);
        let hop = NextHop {
            peer,
            request_uri: None,
            call: None,
        };
        if is_ack {
            // Its entry in `unacked` goes at its deadline.
            if let Some(d) = self.dialogs.get_mut(&dkey) {
                d.unacked_since = None;
            }
            self.forward_stateless(from, msg, &top, hop, &mut patch);
            self.scratch = patch;
            return;
        }
        // A forked branch's BYE ends that branch, not the call.
        let is_bye = msg.method() == Some(Method::Bye);
        let branch = if by_caller { ttag } else { ftag };
        if is_bye && !self.dialogs.get(&dkey).is_some_and(|d| d.is_fork(branch)) {
            self.events.push(CallEvent::Bye {
                call_id: Bytes::copy_from_slice(call_id),
                at: now,
                from_tag: Bytes::copy_from_slice(ftag),
            });
        }
        self.forward_request(now, from, msg, (key, top), hop, &mut patch, (false, false));
        self.scratch = patch;
    }

    /// An in-dialog request that is not relayed: counted, and answered
    /// once, small and statelessly (an ACK gets no answer).
    fn refuse_in_dialog(
        &mut self,
        now: Millis,
        from: Peer,
        msg: &Message,
        is_ack: bool,
        code: u16,
        reason: &str,
    ) {
        self.stats.in_dialog_refused += 1;
        if !is_ack {
            self.refuse(now, from, msg, code, reason);
        }
    }

    /// A refusal sent statelessly, at most once per request and small
    /// ([`small_response`]); to an untrusted source only within the
    /// per-source reply rate and no larger than the request, and never
    /// with `sip.untrusted = "drop"`.
    fn refuse(&mut self, now: Millis, from: Peer, msg: &Message, code: u16, reason: &str) {
        if self.s.untrusted == Untrusted::Drop && !self.is_trusted(from) {
            self.stats.replies_suppressed += 1;
            return;
        }
        let tag = self.to_tag(msg);
        let data =
            small_response(msg, code, reason, &tag[..]).map(|d| route::stamped_reply(d, &from));
        // Trusted peers (the trunk) are not rate-limited: a busy trunk may
        // draw many refusals, and a reply to it is no reflection. To anyone
        // else no more bytes go out than came in: a minimal request in
        // compact form drew a reply 1.4-1.6 times its size (full header
        // names, a To tag, Content-Length; trial, 2026-12-02).
        let request_len = msg.buf().len();
        let allowed = |p: &mut Self, len: usize| {
            p.is_trusted(from) || (len <= request_len && p.limiter.allow(from.addr.ip(), now))
        };
        match data {
            Some(data) if allowed(self, data.len()) => {
                self.stats.local_replies += 1;
                self.out.push(Output::Send {
                    to: from,
                    data: Bytes::from(data),
                });
            }
            _ => self.stats.replies_suppressed += 1,
        }
    }

    fn is_trusted(&self, from: Peer) -> bool {
        self.s
            .trusted_sources
            .iter()
            .any(|n| n.contains(&from.addr.ip()))
    }

    /// Builds the forwarded request: Request-URI, Max-Forwards, received/
    /// rport, our Via, Record-Route; everything else as received.
    /// `(record_route, initial)`: whether it is record-routed, and whether
    /// it is an initial request (out of dialog).
    #[allow(clippy::too_many_arguments)]
    fn forward_request(
        &mut self,
        now: Millis,
        from: Peer,
        msg: &Message,
        (key, top): (TxnKey, route::TopVia),
        hop: NextHop,
        patch: &mut Patch,
        (record_route, initial): (bool, bool),
    ) {
        let Some(local) = self.s.identity.local_for(&hop.peer).copied() else {
            self.reply_final(
                now,
                from,
                msg,
                key,
                (503, "Service Unavailable"),
                &[b"Warning: 399 siptrack \"no listener for the next hop's transport\""],
            );
            return;
        };
        let method = msg.method().unwrap_or(Method::Other);
        let is_invite = method == Method::Invite;
        let branch = self.new_branch();
        // Borrowed from the message: copied once below, where kept.
        let call_id = msg.call_id().unwrap_or_default();
        let caller_tag = msg.tag(HeaderName::From).unwrap_or_default();
        self.edit_common(
            msg,
            &top,
            from,
            hop.request_uri.as_deref().map(str::as_bytes),
            &branch,
            &local,
            patch,
        );
        // One token for both Record-Route lines and the dialog's record.
        let token = record_route.then(|| self.s.identity.token_hex(call_id, caller_tag));
        if let Some(token) = &token {
            let first_via = msg
                .header(HeaderName::Via)
                .map_or(msg.headers_end, |h| h.line.start);
            let pos = msg
                .header(HeaderName::RecordRoute)
                .map_or(first_via, |h| h.line.start);
            let identity = &self.s.identity;
            patch.insert_with(pos, |o| identity.record_route_line_with(&local, token, o));
            if let Some(inbound) = identity.local_for(&from) {
                if inbound != &local {
                    patch.insert_with(pos, |o| identity.record_route_line_with(inbound, token, o));
                }
            }
        }
        // The forwarded request and an INVITE's 100 Trying in one buffer,
        // sized for both: one allocation and one shared count for the two
        // (sent, and kept by the transaction), where each had two.
        let end = msg.body.end as usize;
        let trying_room = if is_invite {
            response_max_len(msg, "Trying", None, &[])
        } else {
            0
        };
        let mut buf = Vec::with_capacity(patch.max_len(end) + trying_room);
        patch.apply_into(msg.buf(), end, &mut buf);
        let len = buf.len();
        if too_large_for(hop.peer, len) {
            // RFC 3261 18.1.1 would switch to TCP, but the next hop is
            // configured as UDP; say so instead of losing it to EMSGSIZE.
            self.stats.too_large += 1;
            tracing::warn!(to = %hop.peer.addr, bytes = len, "request too large for UDP: 513");
            self.reply_final(now, from, msg, key, (513, "Message Too Large"), &[]);
            return;
        }
        if is_invite {
            // 100 Trying at once, so the caller stops retransmitting.
            response_into(&mut buf, msg, 100, "Trying", None, &[]);
        }
        let mut data = Bytes::from(buf);
        let trying = data.split_off(len);
        let dialog_setup = initial && record_route;
        // The call's Call-ID and From tag for its `Started` event: the
        // dialog's copies when it has them (a shared count each, where
        // two copies of their own were two allocations per call).
        let mut event_ids = None;
        if dialog_setup {
            // A further INVITE of the same Call-ID and From tag joins the
            // dialog under way; it never resets one already confirmed.
            let key = dialog_key(&self.keyer, call_id, caller_tag);
            let d = self.dialogs.entry(key).or_insert_with(|| {
                // The URI, as validation found it (its address is worked
                // out when needed: `contact_pending`).
                let contact = msg.first_contact().map_or(&[][..], |a| msg.bytes(a.uri));
                let caller_from = msg.value(HeaderName::From).unwrap_or_default();
                // The dialog's strings in one buffer of their own (not the
                // request's, which would keep the whole INVITE for the
                // call): one allocation and one shared count, not six.
                let parts = [call_id, caller_tag, caller_from, contact];
                let strings = Bytes::from(parts.concat());
                let mut at = 0;
                let [call_id, caller_tag, caller_from, contact] = parts.map(|p| {
                    at += p.len();
                    strings.slice(at - p.len()..at)
                });
                Box::new(Dialog {
                    call_id,
                    started: now,
                    confirmed: false,
                    unacked_since: None,
                    unacked_expired: false,
                    setups: 0,
                    caller_tag,
                    // Always there: a dialog setup is record-routed.
                    token: token.unwrap_or_default(),
                    callee_tag: None,
                    forks: Vec::new(),
                    caller: Side {
                        source: from,
                        // Worked out when needed (`contact_pending`).
                        contact: None,
                    },
                    callee: Side {
                        source: hop.peer,
                        contact: None,
                    },
                    ends: Ends {
                        caller_from,
                        target: [contact, Bytes::new()],
                        cseq: [cseq(msg).map_or(0, |(n, _)| n), 0],
                        ..Ends::default()
                    },
                    contact_pending: true,
                })
            });
            d.setups += 1;
            // The key is a hash: the strings are compared, not assumed.
            if d.call_id == call_id && d.caller_tag == caller_tag {
                event_ids = Some((d.call_id.clone(), d.caller_tag.clone()));
            }
        }

        let id = self.next_id;
        self.next_id += 1;
        let mut server = ServerSide {
            key,
            peer: from,
            state: ServerState::Proceeding,
            last_response: None,
            retransmit_interval: self.s.timers.t1_ms,
        };
        if is_invite {
            server.last_response = Some(trying.clone());
        }
        let t1 = self.s.timers.t1_ms;
        let branch = client_key(&self.keyer, &branch);
        let client = ClientSide::calling(branch, hop.peer, data.clone(), t1);
        // Armed in the new transaction itself (`arm` would look it up
        // once per timer).
        let mut deadlines = Deadlines::default();
        if hop.peer.transport == Transport::Udp {
            deadlines.set(TimerKind::ClientRetransmit, now + t1);
        }
        deadlines.set(TimerKind::ClientTimeout, now + 64 * t1);
        if is_invite {
            deadlines.set(TimerKind::TimerC, now + self.s.timers.timer_c_ms);
        }
        self.txns.insert(
            id,
            Box::new(Txn {
                is_invite,
                ids: CallIds::new(call_id, dialog_setup.then_some(caller_tag)),
                server: Some(server),
                client: Some(client),
                own_cancel: false,
                initial_invite: is_invite && initial,
                caller_cancelled: false,
                is_bye: method == Method::Bye,
                deadlines,
            }),
        );
        self.server_index.insert(key, id);
        self.client_index.insert(branch, id);
        self.arm_new(id, &deadlines);
        if hop.peer.transport.is_reliable() {
            self.note_tcp_sent(hop.peer, id);
        }
        if let (true, true, Some(info)) = (is_invite, initial, hop.call) {
            let (call_id, from_tag) = event_ids.unwrap_or_else(|| {
                (
                    Bytes::copy_from_slice(call_id),
                    Bytes::copy_from_slice(caller_tag),
                )
            });
            self.events.push(CallEvent::Started {
                call_id,
                at: now,
                from_tag,
                info,
            });
        }
        self.stats.requests_forwarded += 1;
        // The request first, then the 100 Trying: a batch leaves in one
        // sendmmsg, and on loopback each datagram's delivery (the
        // receiver's wake-up included) runs inside the call before the
        // next one goes; the Trying first put its delivery into the
        // latency the proxy adds to the call (issue 15).
        self.out.push(Output::Send { to: hop.peer, data });
        if is_invite {
            self.out.push(Output::Send {
                to: from,
                data: trying,
            });
        }
    }

    /// ACK for a 2xx: passed on without a transaction (RFC 3261 16.11),
    /// with a branch derived from the incoming one so retransmissions match.
    fn forward_stateless(
        &mut self,
        from: Peer,
        msg: &Message,
        top: &route::TopVia,
        hop: NextHop,
        patch: &mut Patch,
    ) {
        let Some(local) = self.s.identity.local_for(&hop.peer).copied() else {
            return;
        };
        let in_branch = top.branch(msg).unwrap_or_default();
        let digest: [u8; 16] = self
            .s
            .identity
            .digest_hex_array(&[in_branch, msg.call_id().unwrap_or_default()]);
        let mut branch = [0u8; 9 + 16];
        branch[..9].copy_from_slice(b"z9hG4bKsl");
        branch[9..].copy_from_slice(&digest);
        self.edit_common(
            msg,
            top,
            from,
            hop.request_uri.as_deref().map(str::as_bytes),
            &branch,
            &local,
            patch,
        );
        let data = Bytes::from(patch.apply(msg.buf(), msg.body.end as usize));
        if too_large_for(hop.peer, data.len()) {
            self.stats.too_large += 1;
            return;
        }
        self.stats.requests_forwarded += 1;
        self.out.push(Output::Send { to: hop.peer, data });
    }

    #[allow(clippy::too_many_arguments)]
    fn edit_common(
        &self,
        msg: &Message,
        top: &route::TopVia,
        from: Peer,
        request_uri: Option<&[u8]>,
        branch: &[u8],
        local: &crate::config::ListenAddr,
        patch: &mut Patch,
    ) {
        if let (Some(uri), Some(span)) = (request_uri, msg.request_uri_span()) {
            patch.replace(span, uri);
        }
        match msg.header(HeaderName::MaxForwards) {
            Some(h) => {
                let n = crate::sip::chars::parse_u64(msg.bytes(h.value), 10).unwrap_or(70);
                let mut digits = [0u8; 20];
                patch.replace(
                    h.value,
                    crate::decimal::digits(n.saturating_sub(1), &mut digits),
                );
            }
            None => patch.insert(msg.headers_end, b"Max-Forwards: 70\r\n"),
        }
        route::stamp_via(msg, top, &from, patch);
        let first_via = msg
            .header(HeaderName::Via)
            .map_or(msg.headers_end, |h| h.line.start);
        let identity = &self.s.identity;
        patch.insert_with(first_via, |o| identity.via_line(local, branch, o));
    }

    /// A branch nobody can predict: a keyed PRF (SipHash-2-4, 128 bits,
    /// 80 of them written) of a counter, under a key derived once from the
    /// route key and this process's nonce (a guessed branch would let
    /// anyone answer or CANCEL our requests). It was an HMAC-SHA256 of the
    /// counter per request, about a fifth of the core's own instructions
    /// per INVITE. Replay fixes key and nonce, so its branches stay the
    /// same run after run.
    fn new_branch(&mut self) -> [u8; BRANCH_LEN] {
        self.branch_seq += 1;
        branch(self.branch_key, self.branch_seq)
    }

    // ---- responses ------------------------------------------------------

    /// A response is relayed only by the client transaction it matches,
    /// and only when it comes from where that request went; a 2xx to an
    /// INVITE whose transaction has ended, by the live dialog it matches.
    /// Anything else is dropped and counted: never routed by its Vias.
    fn on_response(&mut self, now: Millis, from: Peer, msg: &Message) {
        // Parsed by validation (kept in the message).
        let Some(top) = msg.top_via() else {
            self.stats.stray_responses += 1;
            return;
        };
        if !self.s.identity.is_own_via(&top.via(msg)) {
            self.stats.stray_responses += 1;
            return;
        }
        let is_cancel = cseq(msg).is_some_and(|(_, m)| m == b"CANCEL");
        let key = client_key(&self.keyer, top.branch(msg).unwrap_or_default());
        let key = if is_cancel { key.cancel() } else { key };
        let id = self.client_index.get(&key).copied();
        let Some(id) = id else {
            return self.lingering_response(now, from, key, msg);
        };
        let peer = self
            .txns
            .get(&id)
            .and_then(|t| t.client.as_ref())
            .map(|c| c.peer);
        if peer != Some(from) {
            self.stats.wrong_source += 1;
            return;
        }
        self.on_client_response(now, id, msg);
    }

    /// A 2xx retransmitted after its INVITE transaction ended (RFC 3261
    /// 13.3.1.4): relayed toward the side that sent the INVITE, as the
    /// dialog recorded it, when Call-ID and both tags match and it comes
    /// from the other side. Over TCP it is dropped: the core cannot know
    /// whether the connection is still open and must never open one.
    fn late_2xx(&mut self, now: Millis, from: Peer, msg: &Message) {
        let is_2xx = msg.status().is_some_and(|c| (200..300).contains(&c));
        let invite = cseq(msg).is_some_and(|(_, m)| m == b"INVITE");
        let call_id = msg.call_id().unwrap_or_default();
        let from_tag = msg.tag(HeaderName::From).unwrap_or_default();
        let to_tag = msg.tag(HeaderName::To).unwrap_or_default();
        let found = self.find_dialog(call_id, from_tag, to_tag).or_else(|| {
            // Another branch's first 2xx, after the INVITE transaction
            // ended (QA, 2026-12-02: one 34 s after the first answer was
            // dropped, and that branch's phone was never ACKed): learnt
            // as in time, from the callee's own address only.
            let from_callee = self
                .dialogs
                .get(&dialog_key(&self.keyer, call_id, from_tag))
                .is_some_and(|d| d.callee.sends_from(from));
            if !(is_2xx && invite && from_callee) {
                return None;
            }
            let key = self.learn_other_branch(msg)?;
            self.dialogs
                .get(&key)
                .is_some_and(|d| d.is_fork(to_tag))
                .then_some((key, true))
        });
        if let Some(d) = found.and_then(|(key, _)| self.dialogs.get_mut(&key)) {
            d.resolve_contact();
        }
        let target = found
            .and_then(|(key, by_caller)| Some((self.dialogs.get(&key)?, by_caller)))
            .filter(|(d, _)| d.confirmed && is_2xx && invite)
            .and_then(|(d, by_caller)| {
                // The 2xx's From tag is the requester's, its To tag the
                // responder's.
                let (requester, responder) = d.ends_of(by_caller, from_tag, to_tag);
                // Exactly the callee (see `Side::sends_from`): a "late
                // 2xx" from another port of its host moved the call's
                // media to a third host (trial, 2026-12-02).
                responder.sends_from(from).then_some(requester.source)
            })
            .filter(|t| t.transport == Transport::Udp && !self.s.identity.is_own_addr(t.addr));
        let Some(to) = target else {
            self.stats.stray_responses += 1;
            return;
        };
        let mut patch = self.take_scratch();
        // No Via left but ours: nowhere to send it (RFC 3261 16.7 step 3).
        if route::pop_top_via(msg, &mut patch) != Some(ViasLeft::Some) {
            patch.clear();
            self.scratch = patch;
            self.stats.invalid += 1;
            return;
        }
        let call = CallCtx {
            call_id,
            // Borrowed: `from_tag` would copy it to the heap.
            from_tag: msg.tag(HeaderName::From).unwrap_or_default(),
        };
        self.phases.response(call, msg, now, &mut patch);
        let data = Bytes::from(patch.apply(msg.buf(), msg.body.end as usize));
        self.scratch = patch;
        self.stats.responses_forwarded += 1;
        self.out.push(Output::Send { to, data });
    }

    fn on_client_response(&mut self, now: Millis, id: u64, msg: &Message) {
        let Some(code) = msg.status() else { return };
        let t1 = self.s.timers.t1_ms;
        let t2 = self.s.timers.t2_ms;
        let timer_c = self.s.timers.timer_c_ms;
        let Some(txn) = self.txns.get_mut(&id) else {
            return;
        };
        let is_invite = txn.is_invite;
        let Some(client) = txn.client.as_mut() else {
            return;
        };
        let reliable = client.peer.transport.is_reliable();
        // Only the first of each response (retransmissions teach nothing),
        // and after the first 2xx another branch's 2xx (a forking proxy's
        // second answer, which may come without a provisional before it).
        let learns = match client.state {
            ClientState::Calling | ClientState::Proceeding => true,
            ClientState::Accepted => (200..300).contains(&code),
            _ => false,
        };
        if !txn.own_cancel && learns {
            // Lent out for the call, not copied (an empty `CallIds`
            // takes no allocation).
            let ids = std::mem::take(&mut txn.ids);
            self.learn_dialog(now, ids.call_id(), ids.caller_tag().is_some(), code, msg);
            if let Some(txn) = self.txns.get_mut(&id) {
                txn.ids = ids;
            }
        }
        let Some(txn) = self.txns.get_mut(&id) else {
            return;
        };
        let Some(client) = txn.client.as_mut() else {
            return;
        };

        if txn.own_cancel {
            // Our own CANCEL: its response ends here.
            if code >= 200 && matches!(client.state, ClientState::Calling | ClientState::Proceeding)
            {
                client.state = ClientState::Completed;
                self.stale_timers += txn.deadlines.clear_all();
                self.arm(
                    id,
                    TimerKind::ClientLinger,
                    now + if reliable { 0 } else { self.s.timers.t4_ms },
                );
            }
            return;
        }

        match client.state {
            ClientState::Calling | ClientState::Proceeding if code < 200 => {
                client.state = ClientState::Proceeding;
                client.got_provisional = true;
                let cancel_now = client.cancel_pending && !client.cancel_sent;
                if is_invite {
                    self.stale_timers +=
                        usize::from(txn.deadlines.clear(TimerKind::ClientRetransmit))
                            + usize::from(txn.deadlines.clear(TimerKind::ClientTimeout));
                    self.arm(id, TimerKind::TimerC, now + timer_c);
                } else if !reliable {
                    client.retransmit_interval = t2;
                }
                if cancel_now {
                    self.send_cancel(now, id);
                }
                if code > 100 {
                    self.forward_upstream(now, id, msg, true, None);
                }
            }
            ClientState::Calling | ClientState::Proceeding => {
                for k in [
                    TimerKind::ClientRetransmit,
                    TimerKind::ClientTimeout,
                    TimerKind::TimerC,
                ] {
                    self.stale_timers += usize::from(txn.deadlines.clear(k));
                }
                let success = code < 300;
                let cancelled_here = client.cancel_sent || client.cancel_pending;
                // Nothing will be retransmitted or CANCELled any more; the
                // copy of the request is only needed to build the ACK below.
                let request = std::mem::take(&mut client.request);
                if txn.initial_invite {
                    self.events.push(if success {
                        CallEvent::Answered {
                            call_id: Bytes::copy_from_slice(txn.ids.call_id()),
                            at: now,
                        }
                    } else {
                        CallEvent::Failed {
                            call_id: Bytes::copy_from_slice(txn.ids.call_id()),
                            at: now,
                            code,
                            caller_cancelled: txn.caller_cancelled,
                            cancelled_here,
                        }
                    });
                }
                if is_invite && success {
                    client.state = ClientState::Accepted;
                    self.arm(id, TimerKind::ClientLinger, now + 64 * t1);
                    self.forward_upstream(now, id, msg, false, Some(&request));
                    self.set_server_state(now, id, ServerState::Accepted);
                } else if is_invite {
                    let ack = build_ack(&request, msg);
                    if let Some(ack) = ack.clone() {
                        self.out.push(Output::Send {
                            to: client.peer,
                            data: ack,
                        });
                    }
                    // The request's place holds the ACK now (see the field).
                    client.request = ack.unwrap_or_default();
                    client.state = ClientState::Completed;
                    self.arm(
                        id,
                        TimerKind::ClientLinger,
                        now + if reliable { 0 } else { 32_000 },
                    );
                    self.forward_upstream(now, id, msg, false, Some(&request));
                    self.set_server_state(now, id, ServerState::Completed);
                } else {
                    client.state = ClientState::Completed;
                    // A challenged BYE comes again with credentials (RFC
                    // 3261 22.2): the dialog carries it (trial,
                    // 2026-12-03: a PBX's 407 ended the dialog here, the
                    // BYE with credentials got 481 and the PBX's call
                    // stayed up).
                    let challenged = matches!(code, 401 | 407);
                    if txn.is_bye && !challenged {
                        let f = msg.tag(HeaderName::From).unwrap_or_default();
                        let t = msg.tag(HeaderName::To).unwrap_or_default();
                        let (call_id, dialogs) = (txn.ids.call_id(), &self.dialogs);
                        if let Some((key, by_caller)) =
                            find_dialog_in(dialogs, &self.keyer, call_id, f, t)
                        {
                            // A forked branch's BYE ends only its dialog.
                            let branch = if by_caller { t } else { f };
                            match self.dialogs.get_mut(&key) {
                                Some(d) if d.is_fork(branch) => d.forget_fork(branch),
                                _ => {
                                    self.dialogs.remove(&key);
                                }
                            }
                        }
                    }
                    self.arm(
                        id,
                        TimerKind::ClientLinger,
                        now + if reliable { 0 } else { self.s.timers.t4_ms },
                    );
                    self.forward_upstream(now, id, msg, false, Some(&request));
                    self.set_server_state(now, id, ServerState::Completed);
                }
            }
            ClientState::Completed => {
                // A retransmitted final response: repeat our ACK.
                // The ACK, for an INVITE (see the field `request`).
                if !client.request.is_empty() {
                    self.out.push(Output::Send {
                        to: client.peer,
                        data: client.request.clone(),
                    });
                }
                self.stats.absorbed_retransmissions += 1;
            }
            ClientState::Accepted => {
                if (200..300).contains(&code) {
                    self.forward_upstream(now, id, msg, false, None);
                }
            }
            ClientState::Terminated => {}
        }
    }

    /// What a response from the next hop tells the dialog table: the
    /// callee's tag and Contact (initial request), the end of a failed
    /// setup, or a target refresh's new Contact (RFC 3261 12.2.1.2).
    fn learn_dialog(&mut self, now: Millis, call_id: &[u8], setup: bool, code: u16, msg: &Message) {
        let from_tag = msg.tag(HeaderName::From).unwrap_or_default();
        let to_tag = msg.tag(HeaderName::To).unwrap_or_default();
        // During setup the callee's tag may still change (a 2xx with
        // another tag than the 180): look the dialog up by the caller's.
        let found = if setup {
            Some((dialog_key(&self.keyer, call_id, from_tag), true))
        } else {
            self.find_dialog(call_id, from_tag, to_tag)
        };
        let Some((key, by_caller)) = found else {
            return;
        };
        let Some(d) = self.dialogs.get_mut(&key) else {
            return;
        };
        if setup {
            if d.confirmed {
                if (200..300).contains(&code) {
                    d.learn_other_branch(msg);
                }
                return;
            }
            if code >= 300 {
                d.setups = d.setups.saturating_sub(1);
                if d.setups == 0 {
                    self.dialogs.remove(&key);
                }
                return;
            }
            if !to_tag.is_empty() && code > 100 {
                // Parsed once for both its address and (2xx) its URI, and
                // only where used (not for a BYE's 200, say).
                let first = first_contact(msg);
                let contact = first.addr;
                // An earlier branch's early dialog stays (forking).
                if let Some(previous) = d.callee_tag.take() {
                    if previous.as_ref() != to_tag {
                        d.remember_fork(&previous, d.callee.contact);
                    }
                }
                d.forget_fork(to_tag);
                d.callee_tag = Some(Bytes::copy_from_slice(to_tag));
                if contact.is_some() {
                    d.callee.contact = contact;
                }
                let awaits_ack = setup && code >= 200 && !d.confirmed;
                if awaits_ack {
                    d.unacked_since = Some(now);
                }
                d.confirmed = code >= 200;
                if d.confirmed {
                    d.ends.callee_to = header_value(msg, HeaderName::To);
                    d.ends.target[1] = Bytes::copy_from_slice(first.uri);
                    d.ends.record_route = msg
                        .headers_named(HeaderName::RecordRoute)
                        .flat_map(|h| {
                            let v = msg.bytes(h.value);
                            // No list per header on the way (an allocation
                            // per 2xx).
                            crate::sip::chars::split_commas(v).map(move |(a, b)| {
                                Bytes::copy_from_slice(crate::sip::chars::trim_lws(&v[a..b]))
                            })
                        })
                        .collect();
                }
                let is_invite = cseq(msg).is_some_and(|(_, m)| m == b"INVITE");
                if self.share_dialogs && d.confirmed && is_invite {
                    d.resolve_contact();
                    if let (Ok(call_id), Ok(caller_tag), Ok(callee_tag)) = (
                        std::str::from_utf8(call_id),
                        std::str::from_utf8(&d.caller_tag),
                        std::str::from_utf8(to_tag),
                    ) {
                        self.handoffs.push(DialogHandoff {
                            call_id: call_id.to_string(),
                            caller_tag: caller_tag.to_string(),
                            callee_tag: callee_tag.to_string(),
                            caller: HandoffSide::of(d.caller.source, d.caller.contact),
                            callee: HandoffSide::of(d.callee.source, d.callee.contact),
                        });
                    }
                }
                if awaits_ack {
                    self.await_ack(now, key);
                }
            } else if to_tag.is_empty()
                && (200..300).contains(&code)
                && d.unacked_since.is_none()
                && !d.unacked_expired
            {
                // A 2xx without a To tag (RFC 3261 8.2.6.2 wants one)
                // sets up no dialog a request can name: the caller's ACK
                // cannot pass, so it is reported as a 2xx never ACKed
                // (trial, 2026-12-03: the call stayed open, `answered`,
                // for max_call_seconds).
                tracing::warn!(call_id = %String::from_utf8_lossy(call_id), "2xx without a To tag: no dialog is set up, the call ends as failed when its ACK does not come");
                d.unacked_since = Some(now);
                self.await_ack(now, key);
            }
            return;
        }
        let refresh = cseq(msg).is_some_and(|(_, m)| m == b"INVITE" || m == b"UPDATE");
        if refresh && (200..300).contains(&code) {
            let first = first_contact(msg);
            if let Some(addr) = first.addr {
                d.resolve_contact();
                // The responder's tag: To of a caller's request, From of
                // a callee's.
                let callee_tag = if by_caller { to_tag } else { from_tag };
                d.refresh_target(!by_caller, callee_tag, addr, first.uri);
            }
        }
    }

    /// A 2xx to the INVITE from another branch than the dialog's (see
    /// [`Dialog::learn_other_branch`]), once its sender is known to be
    /// the callee: the dialog it joined, found by its Call-ID and the
    /// caller's tag.
    fn learn_other_branch(&mut self, msg: &Message) -> Option<DialogKey> {
        let call_id = msg.call_id().unwrap_or_default();
        let caller_tag = msg.tag(HeaderName::From).unwrap_or_default();
        let key = dialog_key(&self.keyer, call_id, caller_tag);
        self.dialogs.get_mut(&key)?.learn_other_branch(msg);
        Some(key)
    }

    /// The dialog a message with these tags belongs to (the caller's tag
    /// is its From or its To tag), and whether the caller sent it.
    fn find_dialog(&self, call_id: &[u8], ftag: &[u8], ttag: &[u8]) -> Option<(DialogKey, bool)> {
        find_dialog_in(&self.dialogs, &self.keyer, call_id, ftag, ttag)
    }

    /// Sends a response up to the server side's peer, minus our Via.
    /// `forwarded`: the request as sent downstream, when the transaction
    /// no longer holds it (a final response took it).
    fn forward_upstream(
        &mut self,
        now: Millis,
        id: u64,
        msg: &Message,
        provisional: bool,
        forwarded: Option<&Bytes>,
    ) {
        let Some(data) = self.upstream_copy(now, msg, forwarded, Some(id)) else {
            return;
        };
        let Some(txn) = self.txns.get_mut(&id) else {
            return;
        };
        let is_invite = txn.is_invite;
        let Some(server) = txn.server.as_mut() else {
            return;
        };
        let final_2xx = (200..300).contains(&msg.status().unwrap_or(0));
        // After a final response, only a 2xx may still go up (RFC 3261
        // 16.7 step 5): its retransmissions, or a 2xx that beat our 408.
        let may_send = server.state == ServerState::Proceeding
            || (final_2xx
                && matches!(server.state, ServerState::Accepted | ServerState::Completed));
        if !may_send {
            return;
        }
        let to = server.peer;
        // A 2xx to INVITE is retransmitted end to end by the UAS, so only
        // non-INVITE 2xx (e.g. 200 to BYE) is kept for our own answering
        // of retransmitted requests.
        if !too_large_for(to, data.len()) && (provisional || !final_2xx || !is_invite) {
            server.last_response = Some(data.clone());
        }
        self.send_upstream(to, data);
    }

    /// A response to a transaction that lingers (see `linger.rs`); or, if
    /// none has its branch, a 2xx after its transaction (`late_2xx`).
    fn lingering_response(&mut self, now: Millis, from: Peer, key: TxnKey, msg: &Message) {
        let Some(l) = self.lingering.client(&key, now) else {
            return self.late_2xx(now, from, msg);
        };
        if l.peer != from {
            self.stats.wrong_source += 1;
            return;
        }
        match &l.after {
            ClientAfter::Absorb { ack } => {
                // Our ACK for a rejected INVITE, repeated.
                if let Some(ack) = ack {
                    let data = Bytes::copy_from_slice(ack);
                    self.out.push(Output::Send { to: l.peer, data });
                }
                self.stats.absorbed_retransmissions += 1;
            }
            ClientAfter::Relay2xx { server } => {
                let upstream = self.lingering.server(server, now).map(|s| s.peer);
                let is_2xx = msg.status().is_some_and(|c| (200..300).contains(&c));
                if let (Some(to), true) = (upstream, is_2xx) {
                    // A forking proxy's second answer may come after the
                    // first ended the transaction.
                    self.learn_other_branch(msg);
                    if let Some(data) = self.upstream_copy(now, msg, None, None) {
                        self.send_upstream(to, data);
                    }
                }
            }
            ClientAfter::Drop => {}
        }
    }

    /// A response as it goes upstream: minus our Via, with the phases'
    /// edits, in a block of its own size (a final one may be held for
    /// 32 s). One that carries no Via but ours
    /// (a UAS that copied only ours, as SIPp's `[last_Via:]` does
    /// from a CANCEL) gets the upstream Vias of `forwarded` (the request
    /// as we sent it, else the one transaction `txn` still holds) back:
    /// relayed Via-less, as until a trial on 2026-12-03, no caller could
    /// match it (RFC 3261 16.7 step 3); with no request at hand it is
    /// dropped. The request is looked for only then, off the usual path.
    fn upstream_copy(
        &mut self,
        now: Millis,
        msg: &Message,
        forwarded: Option<&Bytes>,
        txn: Option<u64>,
    ) -> Option<Bytes> {
        let mut patch = self.take_scratch();
        let restored = match route::pop_top_via(msg, &mut patch) {
            Some(ViasLeft::Some) => true,
            Some(ViasLeft::None(line)) => {
                let held = || {
                    let client = self.txns.get(&txn?)?.client.as_ref()?;
                    Some(client.request.clone()).filter(|r| !r.is_empty())
                };
                let vias = forwarded
                    .cloned()
                    .or_else(held)
                    .and_then(|f| Message::parse(f, true).ok())
                    .and_then(|f| route::upstream_via_line(&f));
                if let Some(vias) = &vias {
                    patch.replace(line, vias);
                }
                vias.is_some()
            }
            None => false,
        };
        if !restored {
            patch.clear();
            self.scratch = patch;
            self.stats.invalid += 1;
            return None;
        }
        if msg.status() == Some(503) {
            // RFC 3261 16.7 step 6: a 503 says the server that sent it is
            // unavailable; passed on, the trunk would read it as siptrack
            // being so and may take it out of rotation (trial,
            // 2026-12-03). The call record keeps the PBX's 503.
            patch.replace(msg.start_line, b"SIP/2.0 500 Server Internal Error");
        }
        let call = CallCtx {
            call_id: msg.call_id().unwrap_or_default(),
            // Borrowed: `from_tag` would copy it to the heap.
            from_tag: msg.tag(HeaderName::From).unwrap_or_default(),
        };
        self.phases.response(call, msg, now, &mut patch);
        let mut data = patch.apply(msg.buf(), msg.body.end as usize);
        self.scratch = patch;
        // A final response is held for up to 32 s (Timer J / the INVITE's
        // Completed state): without the room the removed Via left. glibc
        // shrinks a block in place, so this costs no copy.
        data.shrink_to_fit();
        Some(Bytes::from(data))
    }

    fn send_upstream(&mut self, to: Peer, data: Bytes) {
        if too_large_for(to, data.len()) {
            // From a TCP next hop to a UDP caller: it cannot leave on UDP
            // (EMSGSIZE); say so rather than lose it silently.
            self.stats.too_large += 1;
            tracing::warn!(to = %to.addr, bytes = data.len(), "response too large for UDP: dropped");
            return;
        }
        self.stats.responses_forwarded += 1;
        self.out.push(Output::Send { to, data });
    }

    fn set_server_state(&mut self, now: Millis, id: u64, state: ServerState) {
        let t1 = self.s.timers.t1_ms;
        let Some(txn) = self.txns.get_mut(&id) else {
            return;
        };
        let is_invite = txn.is_invite;
        let Some(server) = txn.server.as_mut() else {
            return;
        };
        if server.state != ServerState::Proceeding {
            return;
        }
        server.state = state;
        let reliable = server.peer.transport.is_reliable();
        match state {
            ServerState::Completed if is_invite => {
                if !reliable {
                    server.retransmit_interval = t1;
                    self.arm(id, TimerKind::ServerRetransmit, now + t1);
                }
                self.arm(id, TimerKind::ServerLinger, now + 64 * t1);
            }
            ServerState::Completed => {
                self.arm(
                    id,
                    TimerKind::ServerLinger,
                    now + if reliable { 0 } else { 64 * t1 },
                );
            }
            ServerState::Accepted => {
                // Retransmitted INVITEs are absorbed silently (RFC 6026 8.7).
                server.last_response = None;
                self.arm(id, TimerKind::ServerLinger, now + 64 * t1)
            }
            _ => {}
        }
    }

    /// CANCELs the pending INVITE branch of transaction `id` (RFC 3261 9.1).
    fn send_cancel(&mut self, now: Millis, id: u64) {
        let t1 = self.s.timers.t1_ms;
        let Some(txn) = self.txns.get_mut(&id) else {
            return;
        };
        let ids = CallIds::new(txn.ids.call_id(), None);
        let Some(client) = txn.client.as_mut() else {
            return;
        };
        client.cancel_sent = true;
        client.cancel_pending = false;
        let Some(data) = build_cancel(&client.request) else {
            return;
        };
        let peer = client.peer;
        let key = client.branch.cancel();
        let cid = self.next_id;
        self.next_id += 1;
        self.txns.insert(
            cid,
            Box::new(Txn {
                is_invite: false,
                ids,
                server: None,
                client: Some(ClientSide::calling(key, peer, data.clone(), t1)),
                own_cancel: true,
                initial_invite: false,
                caller_cancelled: false,
                is_bye: false,
                deadlines: Deadlines::default(),
            }),
        );
        self.client_index.insert(key, cid);
        if peer.transport == Transport::Udp {
            self.arm(cid, TimerKind::ClientRetransmit, now + t1);
        }
        self.arm(cid, TimerKind::ClientTimeout, now + 64 * t1);
        self.out.push(Output::Send { to: peer, data });
    }

    // ---- dialogs ended by siptrack ---------------------------------------

    /// Ends the established dialogs of `call_id` on siptrack's own account
    /// (the media stopped: RTP timeout): each side gets a BYE in the other
    /// side's name, built from the dialog state the core keeps (remote
    /// target, route set, tags, next CSeq), sent as a client transaction
    /// (retransmitted, its answer absorbed). The call is reported as
    /// [`CallEvent::TimedOut`]. Returns whether a dialog was ended.
    pub fn end_dialog(&mut self, call_id: &[u8], now: Millis) -> bool {
        self.end_dialogs(now, EndReason::RtpTimeout, |d| {
            d.call_id.as_ref() == call_id
        }) > 0
    }

    /// Ends the call's dialog as [`Proxy::end_dialog`] does, when it
    /// reached `tracking.max_call_seconds` (`Reason: … "maximum call
    /// duration"`): its record is closed already (hangup `timeout`), so no
    /// call event. Before (trial, 2026-12-02) the media just stopped and
    /// both sides sat in dead air until their own timers.
    pub fn end_dialog_at_limit(&mut self, call_id: &[u8], now: Millis) -> bool {
        self.end_dialogs(now, EndReason::CallLimit, |d| d.call_id.as_ref() == call_id) > 0
    }

    /// Ends every established dialog as [`Proxy::end_dialog`] does, for
    /// a shutdown whose drain time ran out: the calls still up get their
    /// BYEs (`Reason: … "siptrack shutting down"`) rather than dead air
    /// and, after a restart, 481 for their own BYEs (trial, 2026-12-02).
    /// No call event: the node closes the call records itself (hangup
    /// `shutdown`). Returns the dialogs ended.
    pub fn end_all_dialogs(&mut self, now: Millis) -> usize {
        self.end_dialogs(now, EndReason::Shutdown, |_| true)
    }

    /// For a shutdown whose drain time ran out: every INVITE still
    /// waiting for its final answer is CANCELled toward the callee (at
    /// once when a provisional came, else when one comes: RFC 3261 9.1)
    /// and answered 503 toward the caller, so neither side rings on for
    /// a proxy that is gone (trial, 2026-12-03: a ringing call was just
    /// dropped, the PBX rang on and the caller had only its 100 Trying).
    /// Returns the INVITEs ended.
    pub fn cancel_all_pending(&mut self, now: Millis) -> usize {
        let ids: Vec<u64> = self
            .txns
            .iter()
            .filter(|(_, t)| {
                t.is_invite
                    && !t.own_cancel
                    && t.server
                        .as_ref()
                        .is_some_and(|s| s.state == ServerState::Proceeding)
                    && t.client.as_ref().is_some_and(|c| {
                        matches!(c.state, ClientState::Calling | ClientState::Proceeding)
                            && !c.cancel_sent
                    })
            })
            .map(|(id, _)| *id)
            .collect();
        for &id in &ids {
            let provisional = self
                .txns
                .get_mut(&id)
                .and_then(|t| t.client.as_mut())
                .map(|c| {
                    c.cancel_pending = true;
                    c.got_provisional
                });
            if provisional == Some(true) {
                self.send_cancel(now, id);
            }
            self.reply_locally(now, id, 503, "Service Unavailable");
        }
        ids.len()
    }

    fn end_dialogs(
        &mut self,
        now: Millis,
        why: EndReason,
        which: impl Fn(&Dialog) -> bool,
    ) -> usize {
        let keys: Vec<DialogKey> = self
            .dialogs
            .iter()
            .filter(|(_, d)| d.confirmed && which(d))
            .map(|(k, _)| *k)
            .collect();
        for key in &keys {
            let Some(mut d) = self.dialogs.remove(key) else {
                continue;
            };
            d.resolve_contact();
            for toward_callee in [true, false] {
                self.send_bye(now, &d.call_id, &d, toward_callee, why);
            }
            if why == EndReason::RtpTimeout {
                // Silent both ways before the caller's ACK passed: the
                // call never set up (failed, no talk time), as when the
                // ACK's wait runs out first (trial, 2026-12-03: 60 s
                // answered or failed, by which came first).
                let call_id = d.call_id.clone();
                self.events.push(match d.unacked_since {
                    Some(_) => CallEvent::Unacknowledged { call_id, at: now },
                    None => CallEvent::TimedOut { call_id, at: now },
                });
            }
        }
        keys.len()
    }

    fn send_bye(
        &mut self,
        now: Millis,
        call_id: &Bytes,
        d: &Dialog,
        toward_callee: bool,
        why: EndReason,
    ) {
        let e = &d.ends;
        let own: Vec<usize> = e
            .record_route
            .iter()
            .enumerate()
            .filter(|(_, v)| {
                NameAddr::parse(v)
                    .ok()
                    .and_then(|n| {
                        Uri::parse(n.uri())
                            .ok()
                            .map(|u| self.s.identity.is_own_uri(&u))
                    })
                    .unwrap_or(false)
            })
            .map(|(i, _)| i)
            .collect();
        // The 2xx lists the proxies nearest the callee first: beyond us
        // toward the callee are those before our entries (reversed),
        // toward the caller those after them.
        let routes: Vec<&Bytes> = match (own.first(), own.last()) {
            (Some(&first), _) if toward_callee => e.record_route[..first].iter().rev().collect(),
            (_, Some(&last)) => e.record_route[last + 1..].iter().collect(),
            _ => Vec::new(),
        };
        let (target, from, to, cseq) = if toward_callee {
            (&e.target[1], &e.caller_from, &e.callee_to, e.cseq[0] + 1)
        } else {
            (&e.target[0], &e.callee_to, &e.caller_from, e.cseq[1] + 1)
        };
        let next = match routes.first() {
            Some(r) => NameAddr::parse(r)
                .ok()
                .and_then(|n| Uri::parse(n.uri()).ok().and_then(|u| route::uri_peer(&u))),
            None => Uri::parse(target).ok().and_then(|u| route::uri_peer(&u)),
        };
        let Some(peer) = next else {
            tracing::warn!(call_id = %String::from_utf8_lossy(call_id), "cannot end the dialog: no IP target");
            return;
        };
        let Some(local) = self.s.identity.local_for(&peer).copied() else {
            return;
        };
        let branch = self.new_branch();
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"BYE ");
        out.extend_from_slice(target);
        out.extend_from_slice(b" SIP/2.0\r\n");
        self.s.identity.via_line(&local, &branch, &mut out);
        for r in routes {
            out.extend_from_slice(b"Route: ");
            out.extend_from_slice(r);
            out.extend_from_slice(b"\r\n");
        }
        for (name, v) in [
            (&b"From: "[..], from),
            (b"To: ", to),
            (b"Call-ID: ", call_id),
        ] {
            out.extend_from_slice(name);
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("CSeq: {cseq} BYE\r\n").as_bytes());
        out.extend_from_slice(b"Max-Forwards: 70\r\n");
        out.extend_from_slice(match why {
            EndReason::RtpTimeout => &b"Reason: SIP;cause=408;text=\"RTP timeout\"\r\n"[..],
            EndReason::Shutdown => b"Reason: SIP;cause=503;text=\"siptrack shutting down\"\r\n",
            EndReason::CallLimit => b"Reason: SIP;cause=408;text=\"maximum call duration\"\r\n",
        });
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let data = Bytes::from(out);
        let branch = client_key(&self.keyer, &branch);
        let t1 = self.s.timers.t1_ms;
        let id = self.next_id;
        self.next_id += 1;
        self.txns.insert(
            id,
            Box::new(Txn {
                is_invite: false,
                ids: CallIds::new(call_id, None),
                server: None,
                client: Some(ClientSide::calling(branch, peer, data.clone(), t1)),
                own_cancel: false,
                initial_invite: false,
                caller_cancelled: false,
                is_bye: true,
                deadlines: Deadlines::default(),
            }),
        );
        self.client_index.insert(branch, id);
        if peer.transport == Transport::Udp {
            self.arm(id, TimerKind::ClientRetransmit, now + t1);
        }
        self.arm(id, TimerKind::ClientTimeout, now + 64 * t1);
        self.stats.requests_forwarded += 1;
        self.out.push(Output::Send { to: peer, data });
    }

    // ---- local replies --------------------------------------------------

    fn to_tag(&self, msg: &Message) -> [u8; 10] {
        self.s
            .identity
            .digest_hex_array(&[msg.call_id().unwrap_or_default(), b"to-tag"])
    }

    fn reply_stateless(
        &mut self,
        msg: &Message,
        to: Peer,
        code: u16,
        reason: &str,
        extra: &[&[u8]],
    ) {
        let tag = self.to_tag(msg);
        let data = route::stamped_reply(response(msg, code, reason, Some(&tag[..]), extra), &to);
        self.stats.local_replies += 1;
        self.out.push(Output::Send {
            to,
            data: Bytes::from(data),
        });
    }

    fn reply_refusal(&mut self, now: Millis, to: Peer, msg: &Message, key: TxnKey, r: Refusal) {
        let unsupported;
        let mut extra: Vec<&[u8]> = Vec::new();
        if r.code == 420 {
            let tags = msg
                .headers_named(HeaderName::ProxyRequire)
                .map(|h| msg.bytes(h.value))
                .collect::<Vec<_>>()
                .join(&b", "[..]);
            unsupported = [b"Unsupported: ".as_slice(), &tags].concat();
            extra.push(&unsupported);
        }
        self.reply_final(now, to, msg, key, (r.code, r.reason), &extra);
    }

    /// A final response the proxy itself gives, kept in a server
    /// transaction so retransmissions get the same answer (and, for
    /// INVITE, it is repeated until the ACK).
    fn reply_final(
        &mut self,
        now: Millis,
        to: Peer,
        msg: &Message,
        key: TxnKey,
        (code, reason): (u16, &str),
        extra: &[&[u8]],
    ) {
        let tag = self.to_tag(msg);
        let mut data =
            route::stamped_reply(response(msg, code, reason, Some(&tag[..]), extra), &to);
        // Held for Timer J's 32 s: without the rest of the 512 B it was
        // built in (a flood of refused requests holds thousands).
        data.shrink_to_fit();
        let data = Bytes::from(data);
        self.stats.local_replies += 1;
        self.out.push(Output::Send {
            to,
            data: data.clone(),
        });
        let is_invite = msg.method() == Some(Method::Invite);
        let id = self.next_id;
        self.next_id += 1;
        self.txns.insert(
            id,
            Box::new(Txn {
                is_invite,
                ids: CallIds::default(),
                server: Some(ServerSide {
                    key,
                    peer: to,
                    state: ServerState::Proceeding,
                    last_response: Some(data),
                    retransmit_interval: self.s.timers.t1_ms,
                }),
                client: None,
                own_cancel: false,
                initial_invite: false,
                caller_cancelled: false,
                is_bye: false,
                deadlines: Deadlines::default(),
            }),
        );
        self.server_index.insert(key, id);
        self.set_server_state(now, id, ServerState::Completed);
    }

    // ---- timers ---------------------------------------------------------

    fn arm(&mut self, id: u64, kind: TimerKind, at: Millis) {
        if let Some(t) = self.txns.get_mut(&id) {
            self.stale_timers += usize::from(t.deadlines.rearm(kind, at));
            if matches!(kind, TimerKind::ClientLinger | TimerKind::ServerLinger) {
                self.settling.push(id);
            }
            self.timers.push(TimerEntry::new(at, id, kind));
            self.compact_timers_if_stale();
        }
    }

    /// Disarmed timers stay in the queue until their time (Timer C's is
    /// minutes away): rebuilt from the live deadlines when stale entries
    /// outnumber live ones, which bounds the queue's memory per held
    /// transaction at an amortised O(1) cost. A queue of live timers only
    /// (a burst of new INVITEs) was rebuilt at every doubling, 4.5 % of
    /// an INVITE's time in the core (issue 15), to sweep out nothing. A
    /// length rule stays as a backstop in case a disarm went uncounted:
    /// eight times the most entries the transactions could have armed
    /// (each has at most one per timer kind). A queue of live entries
    /// never reaches it, where the former backstop (eight times what was
    /// live at the last rebuild) still rebuilt a growing queue of live
    /// entries now and then: a sort of every entry, inside the call that
    /// armed the last one.
    fn compact_timers_if_stale(&mut self) {
        let len = self.timers.len();
        let backstop = 8 * TIMER_KINDS * self.txns.len() + COMPACT_TIMERS_MIN;
        if (self.stale_timers > COMPACT_TIMERS_MIN && 2 * self.stale_timers > len) || len > backstop
        {
            self.compact_timers();
        }
    }

    /// [`Proxy::arm`] for every deadline a transaction was created with
    /// (already in it).
    fn arm_new(&mut self, id: u64, deadlines: &Deadlines) {
        for kind in TimerKind::ALL {
            if let Some(at) = deadlines.get(kind) {
                self.timers.push(TimerEntry::new(at, id, kind));
            }
        }
        self.compact_timers_if_stale();
    }

    fn compact_timers(&mut self) {
        let live: Vec<TimerEntry> = self
            .txns
            .iter()
            .flat_map(|(&id, t)| {
                TimerKind::ALL
                    .iter()
                    .filter_map(move |&k| t.deadlines.get(k).map(|at| TimerEntry::new(at, id, k)))
            })
            .collect();
        self.timers.rebuild(live);
        self.stale_timers = 0;
    }

    /// Fires every timer due at `now`.
    pub fn on_timer(&mut self, now: Millis) {
        while let Some(entry) = self.timers.pop_due(now) {
            let (at, id, k) = (entry.at, entry.id(), entry.kind());
            let Some(&kind) = TimerKind::ALL.get(k) else {
                continue;
            };
            let Some(txn) = self.txns.get_mut(&id) else {
                self.stale_timers = self.stale_timers.saturating_sub(1);
                continue;
            };
            if txn.deadlines.get(kind) != Some(at) {
                self.stale_timers = self.stale_timers.saturating_sub(1);
                continue;
            }
            // Due: its entry is the one just popped, not a stale one.
            let _ = txn.deadlines.clear(kind);
            self.fire(now, id, kind);
            if self.txns.get(&id).is_some_and(|t| t.is_finished()) {
                self.remove(id);
            }
        }
        self.lingering.sweep(now);
        self.settle(now);
        if now >= self.last_sweep + 60_000 {
            self.last_sweep = now;
            let max = self.s.dialog_max_ms;
            self.dialogs
                .retain(|_, d| now.saturating_sub(d.started) < max);
            // TCP hops nothing is pending at any more (callers' own
            // connections come and go): their lists go.
            let txns = &self.txns;
            self.tcp_sent.retain(|peer, list| {
                list.retain(|id| unanswered_in(txns, *id, *peer));
                !list.is_empty()
            });
        }
        self.report_unacked(now);
    }

    /// RFC 3261 13.3.1.4: a 2xx whose ACK has not passed within 64·T1
    /// set up no session (a trial, 2026-12-03: such a call stayed
    /// `answered` for max_call_seconds when the PBX sent no BYE either).
    /// The dialog stays for a BYE that may still come.
    fn report_unacked(&mut self, now: Millis) {
        while let Some(&(at, key, since)) = self.unacked.front() {
            if at > now {
                break;
            }
            self.unacked.pop_front();
            let Some(d) = self.dialogs.get_mut(&key) else {
                continue;
            };
            // ACKed meanwhile, or a later 2xx of its own deadline.
            if d.unacked_since != Some(since) {
                continue;
            }
            d.unacked_since = None;
            d.unacked_expired = true;
            self.events.push(CallEvent::Unacknowledged {
                call_id: d.call_id.clone(),
                at,
            });
        }
    }

    /// A setup's 2xx relayed: its ACK is awaited until 64·T1 from now.
    fn await_ack(&mut self, now: Millis, key: DialogKey) {
        self.unacked
            .push_back((now + 64 * self.s.timers.t1_ms, key, now));
    }

    fn fire(&mut self, now: Millis, id: u64, kind: TimerKind) {
        let (t1, t2) = (self.s.timers.t1_ms, self.s.timers.t2_ms);
        let Some(txn) = self.txns.get_mut(&id) else {
            return;
        };
        let is_invite = txn.is_invite;
        match kind {
            TimerKind::ClientRetransmit => {
                let Some(c) = txn.client.as_mut() else { return };
                let active = c.state == ClientState::Calling
                    || (!is_invite && c.state == ClientState::Proceeding);
                if !active {
                    return;
                }
                let data = c.request.clone();
                let peer = c.peer;
                // Timer A doubles without limit; Timer E is capped at T2.
                c.retransmit_interval = if is_invite {
                    c.retransmit_interval * 2
                } else {
                    (c.retransmit_interval * 2).min(t2)
                };
                let next = now + c.retransmit_interval;
                self.stats.retransmissions_sent += 1;
                self.out.push(Output::Send { to: peer, data });
                self.arm(id, TimerKind::ClientRetransmit, next);
            }
            TimerKind::ClientTimeout | TimerKind::TimerC => {
                let Some(c) = txn.client.as_mut() else { return };
                if !matches!(c.state, ClientState::Calling | ClientState::Proceeding) {
                    return;
                }
                if kind == TimerKind::TimerC && c.got_provisional && !c.cancel_sent {
                    // RFC 3261 16.8: CANCEL the branch; its 487 flows back.
                    // If even that never comes, time out below.
                    self.send_cancel(now, id);
                    self.arm(id, TimerKind::ClientTimeout, now + 64 * t1);
                    return;
                }
                self.stats.timeouts += 1;
                self.fail_client(now, id, (408, "Request Timeout"));
            }
            TimerKind::ClientLinger => {
                if let Some(c) = txn.client.as_mut() {
                    c.state = ClientState::Terminated;
                }
            }
            TimerKind::ServerRetransmit => {
                let Some(s) = txn.server.as_mut() else { return };
                if s.state != ServerState::Completed {
                    return;
                }
                let Some(data) = s.last_response.clone() else {
                    return;
                };
                let peer = s.peer;
                s.retransmit_interval = (s.retransmit_interval * 2).min(t2);
                let next = now + s.retransmit_interval;
                self.stats.retransmissions_sent += 1;
                self.out.push(Output::Send { to: peer, data });
                self.arm(id, TimerKind::ServerRetransmit, next);
            }
            TimerKind::ServerLinger => {
                if let Some(s) = txn.server.as_mut() {
                    s.state = ServerState::Terminated;
                }
                self.stale_timers += usize::from(txn.deadlines.clear(TimerKind::ServerRetransmit));
            }
        }
    }

    /// A TCP next hop that could not be connected to: every request sent
    /// there and not answered yet fails as if it got a 503 (RFC 3261
    /// 16.9), the caller answered at once (16.7 step 6 makes that a 500)
    /// rather than with Timer B's 408 32 s later (trial, 2026-12-03: a
    /// PBX down on TCP kept callers in silence for 32 s, the call
    /// `missed`).
    pub fn on_unreachable(&mut self, now: Millis, peer: Peer) {
        let sent = self.tcp_sent.remove(&peer).unwrap_or_default();
        let failed: Vec<u64> = sent
            .into_iter()
            .filter(|id| self.unanswered(*id, peer))
            .collect();
        for id in failed {
            tracing::warn!(to = %peer.addr, "next hop unreachable over TCP: the request fails (503)");
            self.fail_client(now, id, (503, "Service Unavailable"));
        }
    }

    /// Whether client transaction `id` went to `peer` and has had no
    /// answer at all yet.
    fn unanswered(&self, id: u64, peer: Peer) -> bool {
        unanswered_in(&self.txns, id, peer)
    }

    /// Lists `id` as sent to TCP hop `peer`; when the list has doubled
    /// since its last pruning, the answered and ended ones leave it, so it
    /// stays about as long as what is pending there.
    fn note_tcp_sent(&mut self, peer: Peer, id: u64) {
        let mut list = self.tcp_sent.remove(&peer).unwrap_or_default();
        list.push(id);
        if list.len().is_power_of_two() && list.len() >= 64 {
            list.retain(|i| self.unanswered(*i, peer));
        }
        self.tcp_sent.insert(peer, list);
    }

    /// Ends client transaction `id`, still pending, as if it got `code`:
    /// the call fails with it and the caller is answered (a 503 as 500).
    fn fail_client(&mut self, now: Millis, id: u64, (code, reason): (u16, &str)) {
        let Some(txn) = self.txns.get_mut(&id) else {
            return;
        };
        let Some(c) = txn.client.as_mut() else { return };
        c.state = ClientState::Terminated;
        let request = c.request.clone();
        self.stale_timers += txn.deadlines.clear_all();
        if let Some(tag) = txn.ids.caller_tag() {
            let key = dialog_key(&self.keyer, txn.ids.call_id(), tag);
            if let Some(d) = self.dialogs.get_mut(&key).filter(|d| !d.confirmed) {
                d.setups = d.setups.saturating_sub(1);
                if d.setups == 0 {
                    self.dialogs.remove(&key);
                }
            }
        }
        if txn.is_bye {
            // Unanswered, the BYE still ends the dialog (RFC 3261
            // 15.1.1): its route must not stay open for 4 h.
            let bye = Message::parse(request, true).ok();
            let found = bye.and_then(|m| {
                let f = m.tag(HeaderName::From).unwrap_or_default();
                let t = m.tag(HeaderName::To).unwrap_or_default();
                find_dialog_in(&self.dialogs, &self.keyer, m.call_id()?, f, t)
            });
            if let Some((key, _)) = found {
                self.dialogs.remove(&key);
            }
        }
        let Some(txn) = self.txns.get_mut(&id) else {
            return;
        };
        if txn.initial_invite {
            self.events.push(CallEvent::Failed {
                call_id: Bytes::copy_from_slice(txn.ids.call_id()),
                at: now,
                code,
                caller_cancelled: txn.caller_cancelled,
                cancelled_here: txn.client.as_ref().is_some_and(|c| c.cancel_sent),
            });
        }
        if !txn.own_cancel {
            match code {
                // RFC 3261 16.7 step 6, as for a 503 the next hop sent.
                503 => self.reply_locally(now, id, 500, "Next Hop Unreachable"),
                _ => self.reply_locally(now, id, code, reason),
            }
        }
    }

    /// Answers the caller of transaction `id` with a final response of
    /// siptrack's own, when it is still waiting for one.
    fn reply_locally(&mut self, now: Millis, id: u64, code: u16, reason: &str) {
        let Some(txn) = self.txns.get(&id) else {
            return;
        };
        let Some(server) = txn.server.as_ref() else {
            return;
        };
        if server.state != ServerState::Proceeding {
            return;
        }
        let Some(client) = txn.client.as_ref() else {
            return;
        };
        // The 408 is built from the request as received upstream: our
        // forwarded copy minus our Via.
        let Ok(fwd) = Message::parse(client.request.clone(), true) else {
            return;
        };
        let mut patch = Patch::new();
        if route::pop_top_via(&fwd, &mut patch) != Some(ViasLeft::Some) {
            return;
        }
        let Ok(original) = Message::parse(
            Bytes::from(patch.apply(fwd.buf(), fwd.body.end as usize)),
            true,
        ) else {
            return;
        };
        let tag = self.to_tag(&original);
        let data = Bytes::from(response(&original, code, reason, Some(&tag[..]), &[]));
        let to = server.peer;
        if let Some(s) = self.txns.get_mut(&id).and_then(|t| t.server.as_mut()) {
            s.last_response = Some(data.clone());
        }
        self.stats.local_replies += 1;
        self.out.push(Output::Send { to, data });
        self.set_server_state(now, id, ServerState::Completed);
    }

    /// Retires the transactions of `settling` that have nothing left but
    /// their lingering (see `linger.rs`).
    fn settle(&mut self, now: Millis) {
        while let Some(id) = self.settling.pop() {
            let Some(retired) = self.txns.get(&id).and_then(|t| linger::retire(t)) else {
                continue;
            };
            self.remove(id);
            self.lingering.insert(now, retired);
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(txn) = self.txns.remove(&id) else {
            return;
        };
        // Its timers still armed (a linger's) are stale entries now.
        self.stale_timers += txn.deadlines.armed();
        let caller_tag = txn.ids.caller_tag().unwrap_or_default();
        self.phases.transaction_end(
            CallCtx {
                call_id: txn.ids.call_id(),
                from_tag: caller_tag,
            },
            txn.is_invite,
        );
        if let Some(s) = txn.server {
            if self.server_index.get(&s.key) == Some(&id) {
                self.server_index.remove(&s.key);
            }
        }
        if let Some(c) = txn.client {
            if self.client_index.get(&c.branch) == Some(&id) {
                self.client_index.remove(&c.branch);
            }
        }
    }
}

/// A header's value as it came, empty when absent.
fn header_value(msg: &Message, name: HeaderName) -> Bytes {
    msg.value(name)
        .map(Bytes::copy_from_slice)
        .unwrap_or_default()
}

/// The first Contact of a message: its URI (empty when there is none) and
/// its address when the host is an IP literal.
struct FirstContact<'m> {
    uri: &'m [u8],
    addr: Option<std::net::SocketAddr>,
}

fn first_contact(msg: &Message) -> FirstContact<'_> {
    // The name-addr as validation parsed it (kept in the message).
    let uri = msg.first_contact().map_or(&[][..], |a| msg.bytes(a.uri));
    FirstContact {
        uri,
        addr: contact_addr(uri),
    }
}

/// The address of a Contact URI whose host is an IP literal:
/// `route::uri_peer(..).map(|p| p.addr)` without its transport parameter
/// look-up, which the address does not need. None for an empty URI (no
/// Contact name-addr).
fn contact_addr(uri: &[u8]) -> Option<std::net::SocketAddr> {
    let u = Uri::parse(uri).ok()?;
    let ip = u.host_ip()?;
    Some(std::net::SocketAddr::new(ip, u.port.unwrap_or(5060)))
}

const NO_DIALOG: &str = "Call/Transaction Does Not Exist";

/// Checks shared by initial and in-dialog requests (RFC 3261 16.3).
fn common_checks(msg: &Message) -> Option<Refusal> {
    if let Some(v) = msg.value(HeaderName::MaxForwards) {
        if crate::sip::chars::parse_u64(v, 10) == Some(0) {
            return Some(Refusal {
                code: 483,
                reason: "Too Many Hops",
            });
        }
    }
    if msg.header(HeaderName::ProxyRequire).is_some() {
        return Some(Refusal {
            code: 420,
            reason: "Bad Extension",
        });
    }
    None
}

/// The server transaction key (RFC 3261 17.2.3): branch + sent-by + method
/// for RFC 3261 branches, else the RFC 2543 fields. ACK and CANCEL match
/// their INVITE through `method`. Hashed part by part (no buffer).
fn server_key(keyer: &Keyer, msg: &Message, top: &route::TopVia, method: Method) -> Option<TxnKey> {
    let via = top.via(msg);
    let class: &[u8] = match method {
        Method::Ack | Method::Invite => b"INVITE",
        _ => msg.method_bytes()?,
    };
    let mut k = keyer.start();
    match top.rfc3261_branch(msg) {
        Some(branch) => {
            k.num(3261)
                .bytes(branch)
                .bytes(via.host())
                .num(u64::from(via.port.unwrap_or(5060)));
        }
        None => {
            let tag = msg.tag(HeaderName::From).unwrap_or_default();
            k.num(2543)
                .bytes(msg.request_uri().unwrap_or_default())
                .bytes(msg.call_id().unwrap_or_default())
                .num(cseq(msg).map_or(0, |(n, _)| n))
                .bytes(tag)
                .bytes(via.src);
        }
    }
    Some(k.bytes(class).finish())
}

/// The client index's key of one of our branches.
/// Whether client transaction `id` of `txns` went to `peer` and has had
/// no answer at all yet (what a refused TCP connect fails).
fn unanswered_in(txns: &Map<u64, Box<Txn>>, id: u64, peer: Peer) -> bool {
    txns.get(&id)
        .and_then(|t| t.client.as_ref())
        .is_some_and(|c| c.peer == peer && c.state == ClientState::Calling && !c.got_provisional)
}

fn client_key(keyer: &Keyer, branch: &[u8]) -> TxnKey {
    keyer.start().bytes(branch).finish()
}

/// A request built from our forwarded INVITE (CANCEL, or ACK for a non-2xx):
/// same Request-URI, Call-ID, From, CSeq number and Route set, our Via only.
fn build_from_invite(invite: &Bytes, method: &[u8], to_line: Option<&[u8]>) -> Option<Bytes> {
    let inv = Message::parse(invite.clone(), true).ok()?;
    let uri = inv.request_uri()?;
    let (num, _) = cseq(&inv)?;
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(uri);
    out.extend_from_slice(b" SIP/2.0\r\n");
    let mut via_done = false;
    for h in &inv.headers {
        let line = inv.bytes(h.line);
        match h.name {
            HeaderName::Via if !via_done => {
                via_done = true;
                out.extend_from_slice(line);
            }
            HeaderName::Route | HeaderName::From | HeaderName::CallId => {
                out.extend_from_slice(line)
            }
            HeaderName::To => match to_line {
                Some(t) => out.extend_from_slice(t),
                None => out.extend_from_slice(line),
            },
            _ => {}
        }
    }
    out.extend_from_slice(format!("CSeq: {num} ").as_bytes());
    out.extend_from_slice(method);
    out.extend_from_slice(b"\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    // An ACK is held for Timer D's 32 s: without the rest of the 512 B.
    out.shrink_to_fit();
    Some(Bytes::from(out))
}

/// Whether `len` bytes cannot be sent to `peer` over UDP at all.
fn too_large_for(peer: Peer, len: usize) -> bool {
    let max = if peer.addr.is_ipv4() {
        MAX_UDP_V4
    } else {
        MAX_UDP_V6
    };
    peer.transport == Transport::Udp && len > max
}

fn build_cancel(invite: &Bytes) -> Option<Bytes> {
    build_from_invite(invite, b"CANCEL", None)
}

/// The hop-by-hop ACK for a non-2xx final response: its To carries the
/// response's tag (RFC 3261 17.1.1.3).
fn build_ack(invite: &Bytes, resp: &Message) -> Option<Bytes> {
    let to = resp.header(HeaderName::To)?;
    build_from_invite(invite, b"ACK", Some(resp.bytes(to.line)))
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
