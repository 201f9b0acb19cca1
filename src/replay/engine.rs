//! The replay itself (SPEC ): the real proxy core and call
//! tracker on a virtual clock and a virtual network. Requests of the
//! capture go into the core from their senders at their capture times;
//! when the core forwards a request, the capture's responses to it (same
//! Call-ID, CSeq and method, from the other side) come back, no earlier
//! than the capture had them; timers fire on the capture's time. Every
//! message the core sends and every call record is one output line.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;

use bytes::Bytes;
use serde_json::{json, Value};

use super::hops::{Hops, Role};
use super::media::ReplayMedia;
use super::stream::Captured;
use super::text;
use crate::calls::CallRecord;
use crate::clock::{Clock, Now};
use crate::leads::pipeline::CallNews;
use crate::media::relay::RelayEvent;
use crate::node::Node;
use crate::proxy::{Millis, Output, Peer, Transport};

/// How long timers keep running after the capture's last message, so
/// retransmissions and timeouts of the last transactions show.
const RUN_OUT_MS: Millis = 40_000;

/// (Call-ID, CSeq number, CSeq method): what ties a response to its request.
pub(super) type Key = (String, u32, String);

pub(super) fn key_of(m: &[u8]) -> Option<Key> {
    let (n, method) = text::cseq(m)?;
    Some((text::call_id(m)?, n, method))
}

/// One output line before leads are added: its time and content.
pub struct Line {
    pub t_ms: Millis,
    pub value: Value,
    /// Set for call lines: the record, for the lead pipeline.
    pub call: Option<CallRecord>,
}

pub struct Engine<'a> {
    msgs: &'a [Captured],
    t0_ns: u64,
    /// The proxy's own address, when the capture was taken with siptrack
    /// (or another proxy) there: then only what was sent to it is fed.
    proxy_addr: SocketAddr,
    proxy_in_capture: bool,
    /// Other proxies' hops in the capture: siptrack stands where the
    /// first one stood (see hops.rs).
    hops: Hops,
    answers: HashMap<Key, Vec<usize>>,
    /// Who sent each request fed in, by key.
    requesters: HashMap<Key, SocketAddr>,
    /// (nanoseconds, order, slot) of answers due.
    scheduled: BinaryHeap<Reverse<(u64, u64, usize)>>,
    /// Answers on their way to the proxy, by slot.
    pending_answers: Vec<Option<(Peer, Vec<u8>)>>,
    seq: u64,
    /// The proxy's Record-Route by (Call-ID, caller's From tag): tokens
    /// are bound to the dialog, and a B2BUA may reuse a Call-ID.
    record_route: HashMap<(String, String), Vec<u8>>,
    confirmed: HashSet<String>,
    /// The From tag of each Call-ID's caller: its first INVITE's (a
    /// REGISTER may have used the Call-ID first, with another tag, as
    /// SIPp's branch scenario does), else its first request's. The flag
    /// says it came from an INVITE.
    callers: HashMap<String, (Option<String>, bool)>,
    /// The Contact URI each side of a dialog presented through siptrack,
    /// by (Call-ID, that side's tag): the callee's in the 2xx relayed
    /// upstream, the caller's in the INVITE relayed downstream.
    targets: HashMap<(String, String), Vec<u8>>,
    /// Whether each request fed in came from the caller's side.
    from_caller: HashMap<Key, bool>,
    pub lines: Vec<Line>,
    /// The capture's media datagrams and the relay they go through, when
    /// calls are recorded.
    datagrams: &'a [Captured],
    pub media: Option<ReplayMedia>,
}

impl<'a> Engine<'a> {
    pub fn new(msgs: &'a [Captured], proxy_addr: SocketAddr, hops: Hops) -> Engine<'a> {
        let t0_ns = msgs.first().map_or(0, |m| m.ts_ns);
        let proxy_in_capture = msgs.iter().any(|m| m.dst == proxy_addr);
        let mut answers: HashMap<Key, Vec<usize>> = HashMap::new();
        for (i, m) in msgs.iter().enumerate() {
            // A proxy's own answers upstream in a transaction it relayed
            // are siptrack's to make, not answers to it.
            if !text::is_request(&m.data) && m.src != proxy_addr && hops.role(m) != Role::Dropped {
                if let Some(k) = key_of(&m.data) {
                    answers.entry(k).or_default().push(i);
                }
            }
        }
        Engine {
            msgs,
            t0_ns,
            proxy_addr,
            proxy_in_capture,
            hops,
            answers,
            requesters: HashMap::new(),
            scheduled: BinaryHeap::new(),
            pending_answers: Vec::new(),
            seq: 0,
            record_route: HashMap::new(),
            confirmed: HashSet::new(),
            callers: HashMap::new(),
            targets: HashMap::new(),
            from_caller: HashMap::new(),
            lines: Vec::new(),
            datagrams: &[],
            media: None,
        }
    }

    /// Feeds `datagrams` (the capture's media, in capture order) through
    /// `media` at their capture times.
    pub fn with_media(mut self, datagrams: &'a [Captured], media: ReplayMedia) -> Engine<'a> {
        self.datagrams = datagrams;
        self.media = Some(media);
        self
    }

    /// Nanoseconds since the capture's first message: events are ordered
    /// at this resolution, the core's clock is in milliseconds.
    fn t_of(&self, m: &Captured) -> u64 {
        m.ts_ns.saturating_sub(self.t0_ns)
    }

    /// Unix milliseconds of the capture's first message.
    pub fn epoch_ms(&self) -> u64 {
        self.t0_ns / 1_000_000
    }

    fn feeds(&self, m: &Captured) -> bool {
        text::is_request(&m.data)
            && m.src != self.proxy_addr
            && (!self.proxy_in_capture || m.dst == self.proxy_addr)
            && self.hops.role(m) != Role::Relayed
    }

    /// The clock reading at `mono` ms into the capture.
    fn now(&self, mono_ms: Millis) -> Now {
        Now {
            mono_ms,
            unix_ms: self.epoch_ms() + mono_ms,
        }
    }

    /// Runs the whole capture through `node`, moving `clock` (which the
    /// tracking rules and the store read) with the capture's time.
    pub fn run(&mut self, node: &mut Node, clock: &Clock) {
        let requests: Vec<usize> = (0..self.msgs.len())
            .filter(|&i| self.feeds(&self.msgs[i]))
            .collect();
        const MS: u64 = 1_000_000;
        let last_media = match &self.media {
            Some(_) => self.datagrams.last().map_or(0, |d| self.t_of(d)),
            None => 0,
        };
        let last = self.msgs.last().map_or(0, |m| self.t_of(m)).max(last_media);
        let mut next_request = 0;
        let mut next_datagram = 0;
        let mut now_ns: u64 = 0;
        loop {
            let req_at = requests
                .get(next_request)
                .map(|&i| self.t_of(&self.msgs[i]));
            let ans_at = self.scheduled.peek().map(|Reverse((t, _, _))| *t);
            let run_out = last / MS + RUN_OUT_MS;
            let timer_at = node
                .next_deadline()
                .into_iter()
                .chain(self.media.as_ref().and_then(|m| m.next_timeout()))
                .min()
                .filter(|t| *t <= run_out)
                .map(|t| t * MS);
            let media_at = match &self.media {
                Some(_) => self.datagrams.get(next_datagram).map(|d| self.t_of(d)),
                None => None,
            };
            let Some(t) = [req_at, ans_at, timer_at, media_at]
                .into_iter()
                .flatten()
                .min()
            else {
                break;
            };
            now_ns = now_ns.max(t);
            let now = self.now(now_ns / MS);
            clock.set(now);
            if req_at == Some(t) {
                let i = requests[next_request];
                next_request += 1;
                self.feed_request(node, now, i);
            } else if ans_at == Some(t) {
                if let Some(Reverse((_, _, slot))) = self.scheduled.pop() {
                    if let Some((peer, data)) = self.pending_answers[slot].take() {
                        node.on_message(now, peer, Bytes::from(data));
                    }
                }
            } else if media_at == Some(t) {
                let d = &self.datagrams[next_datagram];
                next_datagram += 1;
                if let Some(m) = &mut self.media {
                    m.datagram(d.src, &d.data, now.mono_ms);
                }
            }
            node.on_timer(now);
            self.media_events(node, now);
            self.drain(node, now_ns);
        }
        let end = now_ns.max(last) / MS;
        // The capture does not say how the calls still open ended, nor
        // when: they end with its last packet, the last moment known.
        // Closed when the run-out's timers stopped, an answered call got
        // up to 32 s of talk nobody captured (trial, 2026-12-01).
        node.close_calls(self.now(last / MS), None);
        // Their recordings end there too: a recording runs to its call's
        // end, and the run-out would pad it with up to 32 s of silence.
        self.media_commands(node, last);
        self.drain(node, end * MS);
        // Recordings of sessions no call record closed (an INVITE that
        // never became a call) end with the capture.
        if let Some(m) = &mut self.media {
            for o in m.finish_all() {
                node.on_recording(&String::from_utf8_lossy(&o.call_id), o.result);
            }
        }
        self.drain(node, end * MS);
        let mut summary = serde_json::Map::new();
        summary.insert("event".into(), json!("summary"));
        for (name, n) in node.proxy().stats.fields() {
            summary.insert(name.into(), json!(n));
        }
        if let Some(m) = &self.media {
            let s = m.stats();
            summary.insert(
                "media".into(),
                json!({
                    "datagrams_fed": m.fed.fed,
                    "datagrams_unmatched": m.fed.unmatched,
                    "relayed": s.relayed,
                    "dropped_other_source": s.dropped_other_source,
                    "dropped_no_destination": s.dropped_no_destination,
                    "dropped_unknown_port": s.dropped_unknown_port,
                }),
            );
        }
        self.lines.push(Line {
            t_ms: end,
            value: Value::Object(summary),
            call: None,
        });
    }

    fn feed_request(&mut self, node: &mut Node, now: Now, i: usize) {
        let m = &self.msgs[i];
        let mut data = m.data.clone();
        if let Some(k) = key_of(&data) {
            // In a confirmed dialog the sender would route through the
            // proxy: its Route set names the proxy.
            if text::has_to_tag(&data) && self.confirmed.contains(&k.0) {
                let tags = [text::from_tag(&data), text::to_tag(&data)];
                let rr = tags
                    .into_iter()
                    .flatten()
                    .find_map(|t| self.record_route.get(&(k.0.clone(), t)));
                if let Some(rr) = rr {
                    data = text::with_route(&data, rr);
                }
                // Sent to a proxy siptrack stands in for, which put
                // itself in the Contact it relayed (a topology-hiding
                // proxy such as SIP_DTMF2's Brekeke): the request goes
                // to the Contact siptrack relayed instead.
                let target = text::to_tag(&data)
                    .and_then(|t| self.targets.get(&(k.0.clone(), t)))
                    .filter(|_| self.names_replaced_proxy(&data));
                if let Some(target) = target {
                    data = text::with_request_uri(&data, target);
                }
            }
            let tag = text::from_tag(&data);
            let starts_call = k.2 == "INVITE" && !text::has_to_tag(&data);
            let caller = self
                .callers
                .entry(k.0.clone())
                .or_insert((tag.clone(), starts_call));
            if starts_call && !caller.1 {
                *caller = (tag.clone(), true);
            }
            self.from_caller.insert(k.clone(), caller.0 == tag);
            self.requesters.insert(k, m.src);
        }
        let peer = Peer {
            transport: m.transport,
            addr: m.src,
        };
        node.on_message(now, peer, Bytes::from(data));
    }

    /// Whether a request's Request-URI names a proxy of the capture that
    /// siptrack stands in for.
    fn names_replaced_proxy(&self, data: &[u8]) -> bool {
        let peer = text::request_uri(data)
            .and_then(|u| crate::sip::uri::Uri::parse(u).ok())
            .and_then(|u| crate::proxy::route::uri_peer(&u));
        peer.is_some_and(|p| {
            self.hops.proxies().contains(&p.addr)
                || (self.proxy_in_capture && p.addr == self.proxy_addr)
        })
    }

    /// The relay's news at `now`: a call silent past the RTP timeout is
    /// ended by siptrack, as in a live run.
    fn media_events(&mut self, node: &mut Node, now: Now) {
        let Some(m) = &mut self.media else { return };
        for ev in m.events(now.mono_ms) {
            if let RelayEvent::TimedOut { session } = ev {
                node.on_media_timeout(now, session);
            }
        }
    }

    /// The media phase's commands, applied at `now_ns`.
    fn media_commands(&mut self, node: &mut Node, now_ns: u64) {
        let commands: Vec<_> = node.take_media_commands().collect();
        if let Some(m) = &mut self.media {
            for cmd in commands {
                for o in m.command(cmd, now_ns / 1_000_000) {
                    node.on_recording(&String::from_utf8_lossy(&o.call_id), o.result);
                }
            }
        }
    }

    fn drain(&mut self, node: &mut Node, now_ns: u64) {
        // The media phase's commands first: a call record that waits for
        // its recording is released by the outcome they bring.
        self.media_commands(node, now_ns);
        let outs: Vec<Output> = node.take_sends().collect();
        for Output::Send { to, data } in outs {
            self.sent(now_ns, to, &data);
        }
        let news: Vec<CallNews> = node.take_news().collect();
        for n in news {
            // Starts go to the CRM only, and a replay sends nothing there.
            if let CallNews::Ended(r) = n {
                self.call_line(now_ns / 1_000_000, r);
            }
        }
    }

    fn sent(&mut self, now_ns: u64, to: Peer, data: &[u8]) {
        let now = now_ns / 1_000_000;
        let request = text::is_request(data);
        let key = key_of(data);
        // A request travels away from the side that sent it, a response
        // back to it.
        let sender_is_caller = key
            .as_ref()
            .and_then(|k| self.from_caller.get(k))
            .copied()
            .unwrap_or(true);
        let to_caller = sender_is_caller != request;
        self.lines.push(Line {
            t_ms: now,
            value: json!({
                "event": "send",
                "direction": if to_caller { "to-caller" } else { "to-callee" },
                "transport": match to.transport { Transport::Udp => "udp", Transport::Tcp => "tcp" },
                "to": to.addr.to_string(),
                "first_line": text::start_line(data),
                "message": String::from_utf8_lossy(data),
            }),
            call: None,
        });
        let Some(key) = key else { return };
        if !request {
            // A 2xx to an INVITE relayed upstream confirms the dialog.
            if key.2 == "INVITE" && text::status(data).is_some_and(|s| (200..300).contains(&s)) {
                if let (Some(tag), Some(contact)) = (text::to_tag(data), text::contact_uri(data)) {
                    self.targets.insert((key.0.clone(), tag), contact);
                }
                self.confirmed.insert(key.0);
            }
            return;
        }
        if key.2 == "INVITE" && !text::has_to_tag(data) {
            if let (Some(tag), Some(contact)) = (text::from_tag(data), text::contact_uri(data)) {
                self.targets.insert((key.0.clone(), tag), contact);
            }
        }
        // The dialog's route through the proxy is set by the initial
        // INVITE (a re-INVITE's top Record-Route may be someone else's).
        if key.2 == "INVITE" && !text::has_to_tag(data) {
            if let Some(rr) = text::top_record_route(data) {
                let tag = text::from_tag(data).unwrap_or_default();
                self.record_route.insert((key.0.clone(), tag), rr);
            }
        }
        if key.2 == "ACK" {
            return;
        }
        let Some(via) = text::top_via_line(data) else {
            return;
        };
        let requester = self.requesters.get(&key).copied();
        let Some(candidates) = self.answers.get_mut(&key) else {
            return;
        };
        // The capture's answers to this request, each used once.
        let mut taken = Vec::new();
        candidates.retain(|&i| {
            let m = &self.msgs[i];
            // The requester's own responses are not answers to it, unless
            // a proxy hop says so (a call the proxy turned back to the
            // host it came from).
            if Some(m.src) == requester && self.hops.role(m) != Role::Answer {
                return true;
            }
            taken.push(i);
            false
        });
        for i in taken {
            let m = &self.msgs[i];
            let at = self.t_of(m).max(now_ns);
            // The answer carried the replaced proxy's Via on top: it goes.
            let replace = (self.proxy_in_capture && m.dst == self.proxy_addr)
                || self.hops.role(m) == Role::Answer;
            let mut answer = text::with_top_via(&m.data, &via, replace);
            // The far side mirrored the replaced proxy's Record-Route; it
            // would have mirrored siptrack's.
            let caller_tag = text::from_tag(&m.data).unwrap_or_default();
            if let Some(rr) = self.record_route.get(&(key.0.clone(), caller_tag)) {
                for old in self.hops.record_routes(m) {
                    answer = text::with_record_route_replaced(&answer, old, rr);
                }
            }
            let peer = Peer {
                transport: to.transport,
                addr: to.addr,
            };
            let slot = self.pending_answers.len();
            self.pending_answers.push(Some((peer, answer)));
            self.seq += 1;
            self.scheduled.push(Reverse((at, self.seq, slot)));
        }
    }

    fn call_line(&mut self, now: Millis, r: CallRecord) {
        self.lines.push(Line {
            t_ms: now,
            value: json!({
                "event": "call",
                "call_id": r.call_id,
                "caller": r.info.caller,
                "caller_raw": r.info.caller_raw,
                "callee": r.info.dialed,
                "destination": r.info.destination,
                "marker": r.info.marker,
                "visit_id": r.info.visit_id,
                "status": r.status.as_str(),
                "duration": r.duration,
                "hangup": r.hangup.map(|h| h.as_str()),
                "invite_at_ms": r.invite_at,
                "answer_at_ms": r.answer_at,
                "end_at_ms": r.end_at,
                "recording": r.recording.state(),
                "recording_reason": r.recording.reason(),
                "dtmf": r.dtmf,
                "wav": self.media.as_ref().and_then(|m| m.file_of(&r.call_id)).map(|f| json!({
                    "file": f.name,
                    "bytes": f.bytes,
                    "sha256": f.sha256,
                })),
            }),
            call: Some(r),
        });
    }
}
