//! One siptrack node without its I/O: the proxy core and the call tracker
//! behind one set of inputs (a message, the time) and two outputs
//! (datagrams to send, call news for the lead pipeline). `siptrack run`
//! feeds it from sockets and the system clock, `siptrack replay` from a
//! capture and a virtual clock; everything between is this one piece of
//! code, so the two cannot drift apart.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::calls::{AdoptedCall, AnsweredCall, CallEvent, CallRecord, CallTracker, Party};
use crate::clock::Now;
use crate::crm::outbox::CallStart;
use crate::leads::pipeline::CallNews;
use crate::media::anchor::{Anchor, Command};
use crate::media::records::{Finished, Records};
use crate::media::relay::SessionId;
use crate::proxy::handoff::DialogMiss;
use crate::proxy::{Millis, Output, Peer, Proxy};

/// The most call events whose room [`Node`] keeps between messages.
const MAX_KEPT_EVENTS: usize = 64;

pub struct Node {
    proxy: Proxy,
    calls: CallTracker,
    news: Vec<CallNews>,
    /// The core's call events of one message, taken into this buffer
    /// (kept between messages) rather than a new `Vec` each time: three
    /// allocations per call (issue 15).
    events: Vec<CallEvent>,
    /// The media phase's state (it runs inside the proxy's phase chain),
    /// when media is anchored.
    media: Option<Arc<Mutex<Anchor>>>,
    media_commands: Vec<Command>,
    records: Records,
    max_call_ms: Millis,
    /// Where the media of calls waiting for a retry stood when their
    /// failure closed it (the retry anchors afresh; a call no retry
    /// follows is recorded with this).
    media_before_retry: std::collections::HashMap<Bytes, crate::media::anchor::RecState>,
    /// Calls taken over from another node (`on_looked_up`) still open:
    /// their records say where their recording is.
    adopted: std::collections::HashSet<Bytes>,
}

impl Node {
    /// `epoch` is any reading of the clock whose monotonic times the core
    /// will see; `max_call_seconds` closes calls whose BYE never comes.
    pub fn new(proxy: Proxy, epoch: Now, max_call_seconds: u64) -> Node {
        Node {
            proxy,
            calls: CallTracker::new(epoch.epoch_ms(), max_call_seconds),
            news: Vec::new(),
            events: Vec::new(),
            media: None,
            media_commands: Vec::new(),
            adopted: std::collections::HashSet::new(),
            records: Records::default(),
            max_call_ms: max_call_seconds * 1000,
            media_before_retry: std::collections::HashMap::new(),
        }
    }

    /// The media phase's state, shared with the [`crate::media::anchor::MediaPhase`]
    /// in the proxy's chain: the node closes calls there and takes the
    /// relay's commands.
    pub fn with_media(mut self, anchor: Arc<Mutex<Anchor>>) -> Node {
        self.media = Some(anchor);
        self
    }

    /// What the relay must do, in order.
    pub fn take_media_commands(&mut self) -> std::vec::Drain<'_, Command> {
        self.media_commands.drain(..)
    }

    /// The relay found a call silent both ways for the RTP timeout: end
    /// its dialog (a BYE to each side) and record it with hangup `timeout`.
    pub fn on_media_timeout(&mut self, now: Now, session: SessionId) {
        let call_id = self
            .media
            .as_ref()
            .and_then(|m| m.lock().ok()?.call_of(session));
        if let Some(call_id) = call_id {
            let who = String::from_utf8_lossy(&call_id).into_owned();
            if self.proxy.end_dialog(&call_id, now.mono_ms) {
                tracing::info!(call_id = %who, "no media either way for media.rtp_timeout_seconds: ending the call");
            } else {
                // It said "ending the call" when nothing was ended (a 2xx
                // without a To tag set up no dialog: trial, 2026-12-03).
                tracing::info!(call_id = %who, "no media either way for media.rtp_timeout_seconds, but no established dialog to end: the call ends with its BYE or its ACK's timeout");
            }
            self.collect_at(now.mono_ms);
        }
    }

    /// The writer finished (or could not start) a call's recording.
    pub fn on_recording(&mut self, call_id: &str, result: Finished) {
        let open = self
            .calls
            .is_open(&Bytes::copy_from_slice(call_id.as_bytes()));
        if let Some(r) = self.records.finished(call_id, result, open) {
            self.news.push(CallNews::Ended(r));
        }
    }

    /// Call records still waiting for their recordings.
    pub fn records_waiting(&self) -> usize {
        self.records.waiting()
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Calls in progress (INVITE seen, not ended).
    pub fn open_calls(&self) -> usize {
        self.calls.open_calls()
    }

    /// A SIP message from `from`.
    pub fn on_message(&mut self, now: Now, from: Peer, data: Bytes) {
        self.proxy.on_message(now.mono_ms, from, data);
        self.collect_at(now.mono_ms);
    }

    /// A TCP next hop that could not be connected to (RFC 3261 16.9): the
    /// requests sent there fail at once rather than after Timer B.
    pub fn on_unreachable(&mut self, now: Now, peer: Peer) {
        self.proxy.on_unreachable(now.mono_ms, peer);
        self.collect_at(now.mono_ms);
    }

    /// Several nodes share the store: answered calls' dialogs go to it
    /// (`CallNews::Answered`), and in-dialog requests of dialogs this node
    /// lacks wait in `take_dialog_misses` for a look-up there.
    pub fn share_dialogs(&mut self, on: bool) {
        self.proxy.share_dialogs(on);
    }

    /// In-dialog requests whose dialog is to be looked up in the store.
    pub fn take_dialog_misses(&mut self) -> std::vec::Drain<'_, DialogMiss> {
        self.proxy.take_dialog_misses()
    }

    /// The look-up of a [`DialogMiss`] came back: a call another node set
    /// up is taken over (its dialog into the core, its record into the
    /// tracker), then the request is processed; without one it gets 481.
    pub fn on_looked_up(&mut self, now: Now, miss: DialogMiss, found: Option<AdoptedCall>) {
        if let Some(call) = found.filter(|c| c.dialog.call_id == miss.call_id) {
            tracing::info!(call_id = %miss.call_id, "taking over a call another node set up");
            self.adopted
                .insert(Bytes::copy_from_slice(call.dialog.call_id.as_bytes()));
            self.proxy.adopt_dialog(now.mono_ms, &call.dialog);
            self.calls.adopt(now.mono_ms, call);
        }
        self.proxy.on_looked_up(now.mono_ms, miss);
        self.collect_at(now.mono_ms);
    }

    /// Runs what is due at `now`: transaction timers, and calls that
    /// reached `max_call_seconds`.
    pub fn on_timer(&mut self, now: Now) {
        self.proxy.on_timer(now.mono_ms);
        self.collect_at(now.mono_ms);
        for r in self.calls.on_tick(now.mono_ms) {
            if r.hangup == Some(Party::Timeout) {
                // max_call_seconds: a BYE each way, not dead air.
                if self
                    .proxy
                    .end_dialog_at_limit(r.call_id.as_bytes(), now.mono_ms)
                {
                    tracing::info!(call_id = %crate::log_text::Clean(&r.call_id), "tracking.max_call_seconds reached: ending the call");
                }
            }
            self.ended(r, now.mono_ms);
        }
        for r in self.records.expire(now.mono_ms, false) {
            self.news.push(CallNews::Ended(r));
        }
        if let Some(m) = &self.media {
            if let Ok(mut a) = m.lock() {
                // A call record always ends by max_call_seconds; a minute
                // on top, media state of calls that never had one goes too.
                a.expire(now.mono_ms, self.max_call_ms + 60_000);
            }
        }
        self.take_from_media();
    }

    /// When [`Node::on_timer`] has work next (monotonic).
    pub fn next_deadline(&self) -> Option<Millis> {
        [
            self.proxy.next_deadline(),
            self.calls.next_expiry(),
            self.records.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A call record is ready: its media closed, and it goes out now or
    /// when its recording is finalised.
    fn ended(&mut self, mut r: CallRecord, now: Millis) {
        // Usually empty, as below.
        let adopted = !self.adopted.is_empty() && self.adopted.remove(r.call_id.as_bytes());
        // Usually empty: no hashing of the Call-ID on every call's end.
        let before_retry = if self.media_before_retry.is_empty() {
            None
        } else {
            self.media_before_retry.remove(r.call_id.as_bytes())
        };
        let state = self
            .media
            .as_ref()
            .and_then(|m| m.lock().ok()?.close(r.call_id.as_bytes(), now))
            .or(before_retry);
        if adopted && state.is_none() && self.media.is_some() {
            r.recording =
                crate::calls::Recording::not_recorded(crate::calls::recording::TAKEN_OVER);
        }
        if let Some(r) = self.records.ended(r, state, now) {
            self.news.push(CallNews::Ended(r));
        }
    }

    /// The media phase's commands and news.
    fn take_from_media(&mut self) {
        let Some(m) = &self.media else { return };
        let Ok(mut a) = m.lock() else { return };
        self.media_commands.extend(a.take_commands());
        for u in a.take_unrecorded() {
            tracing::info!(call_id = %String::from_utf8_lossy(&u.call_id), reason = %u.reason, "call not recorded");
        }
    }

    /// After a burst: the tables give back their peak capacity.
    pub fn shrink(&mut self) {
        self.proxy.shrink_tables();
        self.calls.shrink();
        self.news.shrink_to_fit();
    }

    /// New INVITEs get 503 from now on; calls in progress go on.
    pub fn start_draining(&mut self) {
        self.proxy.start_draining();
    }

    /// No dialog and no transaction waiting for an answer.
    pub fn is_idle(&self) -> bool {
        self.proxy.active_dialogs() == 0 && self.proxy.pending_transactions() == 0
    }

    /// The drain time ran out: the calls still up get a BYE both ways
    /// from siptrack (their records are closed by [`Node::close_calls`]).
    pub fn end_dialogs_for_shutdown(&mut self, now: Now) {
        let ended = self.proxy.end_all_dialogs(now.mono_ms);
        if ended > 0 {
            tracing::warn!(
                calls = ended,
                "drain time over: calls still up are ended with a BYE to both sides"
            );
        }
        let cancelled = self.proxy.cancel_all_pending(now.mono_ms);
        if cancelled > 0 {
            tracing::warn!(
                calls = cancelled,
                "drain time over: calls still ringing are CANCELled toward the callee and answered 503"
            );
        }
    }

    /// Requests siptrack itself sent that still wait for their answer
    /// (the shutdown's BYEs and CANCELs), or any transaction waiting.
    pub fn pending_transactions(&self) -> usize {
        self.proxy.pending_transactions()
    }

    /// Ends every call still open at `now`, recorded as it stands at that
    /// moment with `hangup` (shutdown; `None` when a capture ended).
    pub fn close_calls(&mut self, now: Now, hangup: Option<Party>) {
        for r in self.calls.close_all(now.mono_ms, hangup) {
            self.ended(r, now.mono_ms);
        }
        self.take_from_media();
    }

    /// Lets go of records still waiting for their recordings (shutdown,
    /// after the writer had its chance).
    pub fn release_records(&mut self, now: Now) {
        for r in self.records.expire(now.mono_ms, true) {
            self.news.push(CallNews::Ended(r));
        }
    }

    /// What to send, in order.
    pub fn take_sends(&mut self) -> std::vec::Drain<'_, Output> {
        self.proxy.take_outputs()
    }

    /// Call starts and ends for the lead pipeline, in order.
    pub fn take_news(&mut self) -> std::vec::Drain<'_, CallNews> {
        self.news.drain(..)
    }

    fn collect_at(&mut self, now: Millis) {
        let handoffs: Vec<_> = self.proxy.take_handoffs().collect();
        let mut events = std::mem::take(&mut self.events);
        events.extend(self.proxy.take_call_events());
        for ev in events.drain(..) {
            if let CallEvent::Answered { call_id, at } = &ev {
                // The dialog answered with it (the core learns it from the
                // same 2xx), once: the first 2xx only.
                // Stored on one node too (without a dialog): a crash must
                // not hide that the call was answered (SPEC L-1).
                if self.calls.is_open(call_id) {
                    let dialog = handoffs
                        .iter()
                        .find(|h| h.call_id.as_bytes() == call_id)
                        .cloned();
                    self.news.push(CallNews::Answered(AnsweredCall {
                        call_id: String::from_utf8_lossy(call_id).into_owned(),
                        answer_at: self.calls.unix_ms(*at),
                        dialog,
                    }));
                }
            }
            if let CallEvent::Started {
                call_id, at, info, ..
            } = &ev
            {
                // A retransmitted INVITE reports Started again.
                if !self.calls.is_open(call_id) {
                    self.news.push(CallNews::Started(CallStart {
                        call_id: String::from_utf8_lossy(call_id).into_owned(),
                        info: (**info).clone(),
                        invite_at: self.calls.unix_ms(*at),
                    }));
                }
            }
            let failed = match &ev {
                CallEvent::Failed { call_id, .. } => Some(call_id.clone()),
                _ => None,
            };
            if let CallEvent::Started { call_id, .. } = &ev {
                // The retry anchors its media afresh.
                if !self.media_before_retry.is_empty() {
                    self.media_before_retry.remove(call_id);
                }
            }
            match self.calls.on_event(ev) {
                Some(r) => self.ended(r, now),
                // A failure the caller may retry (a challenge, a 3xx, a
                // 422 …): the call goes on; its media so far is done.
                None => {
                    if let Some(id) = failed.filter(|id| self.calls.awaits_retry(id)) {
                        let state = self
                            .media
                            .as_ref()
                            .and_then(|m| m.lock().ok()?.close(&id, now));
                        if let Some(state) = state {
                            self.media_before_retry.insert(id, state);
                        }
                    }
                }
            }
        }
        // A burst (a timer pass ending thousands of calls) is not kept.
        if events.capacity() <= MAX_KEPT_EVENTS {
            self.events = events;
        }
        self.take_from_media();
    }
}

#[cfg(test)]
mod tests {
    //! The node with the media phase, on a virtual clock: what the relay
    //! is told, when call records go out, and the RTP timeout's BYEs.

    use super::*;
    use crate::calls::{CallInfo, Recording};
    use crate::config::{parse_listen, Timers, Untrusted};
    use crate::media::anchor::MediaSettings;
    use crate::media::ports::PortAllocator;
    use crate::media::recorder::Summary;
    use crate::proxy::hooks::{NextHop, ProxyPhases, Refusal};
    use crate::proxy::route::Identity;
    use crate::proxy::{Chain, ProxySettings, Transport};
    use crate::sip::{Message, Patch};

    const CALLER: &str = "127.0.0.1:5062";
    const UAS: &str = "127.0.0.1:5080";
    const SDP: &str = "v=0\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    fn udp(a: &str) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: a.parse().expect("address"),
        }
    }

    /// Tracks every INVITE, to the UAS.
    struct Track;
    impl ProxyPhases for Track {
        fn initial_request(
            &mut self,
            _req: &Message,
            _source: Peer,
            _now: Millis,
            _patch: &mut Patch,
        ) -> Result<NextHop, Refusal> {
            Ok(NextHop {
                peer: udp(UAS),
                request_uri: None,
                call: Some(Box::new(CallInfo::default())),
            })
        }
    }

    fn node() -> Node {
        let settings = ProxySettings {
            identity: Identity::new(
                vec![parse_listen("udp:127.0.0.1:5060").expect("listen")],
                None,
                b"node-tests",
            ),
            trusted_sources: vec!["127.0.0.0/8".parse().expect("cidr")],
            max_message_bytes: 65535,
            timers: Timers::default(),
            instance_nonce: 1,
            dialog_max_ms: 3_600_000,
            untrusted: Untrusted::Reject,
        };
        let anchor = Arc::new(Mutex::new(Anchor::new(
            MediaSettings {
                enabled: true,
                advertised_ip: "127.0.0.1".parse().expect("ip"),
                advertised_other: None,
            },
            Box::new(PortAllocator::new(30000, 30099, 0).expect("range")),
        )));
        let chain = Chain {
            router: Box::new(Track),
            then: vec![Box::new(Anchor::phase(&anchor))],
        };
        Node::new(Proxy::new(settings, Box::new(chain)), at(0), 3600).with_media(anchor)
    }

    fn at(ms: Millis) -> Now {
        Now {
            mono_ms: ms,
            unix_ms: 1_700_000_000_000 + ms,
        }
    }

    fn sent(n: &mut Node) -> Vec<(Peer, String)> {
        n.take_sends()
            .map(|Output::Send { to, data }| (to, String::from_utf8_lossy(&data).into_owned()))
            .collect()
    }

    /// The call records the node has put out since the last look.
    fn ended_records(n: &mut Node) -> Vec<CallRecord> {
        n.take_news()
            .filter_map(|x| match x {
                CallNews::Ended(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn lines<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
        msg.split("\r\n")
            .take_while(|l| !l.is_empty())
            .filter(|l| {
                l.to_ascii_lowercase()
                    .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            })
            .collect()
    }

    /// INVITE with SDP, the UAS's 200 with SDP, the ACK: an answered call.
    /// Returns the Route for in-dialog requests.
    fn answered(n: &mut Node, call_id: &str) -> String {
        let invite = format!(
            "INVITE sip:100@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK{b}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=ft\r\nTo: <sip:100@x>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:a@{CALLER}>\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{SDP}",
            SDP.len(),
            b = call_id.replace('@', "-")
        );
        n.on_message(at(0), udp(CALLER), Bytes::from(invite));
        let out = sent(n);
        let fwd = &out
            .iter()
            .find(|(to, _)| *to == udp(UAS))
            .unwrap_or_else(|| panic!("forwarded: {out:?}"))
            .1;
        assert!(fwd.contains("m=audio 3000"), "anchored: {fwd}");
        let mut ok = String::from("SIP/2.0 200 OK\r\n");
        for name in ["Via", "Record-Route", "From", "To", "Call-ID", "CSeq"] {
            for l in lines(fwd, name) {
                ok.push_str(l);
                if name == "To" {
                    ok.push_str(";tag=tt");
                }
                ok.push_str("\r\n");
            }
        }
        ok.push_str(&format!(
            "Contact: <sip:b@{UAS}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{}",
            SDP.len(),
            SDP.replace("4000", "5000")
        ));
        n.on_message(at(100), udp(UAS), Bytes::from(ok));
        sent(n);
        let route = lines(fwd, "Record-Route")[0]
            .split_once(':')
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        // The caller's ACK, as every answered call has (without it the
        // call ends `Unacknowledged` after 64·T1).
        let ack = format!(
            "ACK sip:b@{UAS} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKack-{b}\r\n\
             Route: {route}\r\nMax-Forwards: 70\r\nFrom: <sip:a@x>;tag=ft\r\n\
             To: <sip:100@x>;tag=tt\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\n\
             Content-Length: 0\r\n\r\n",
            b = call_id.replace('@', "-")
        );
        n.on_message(at(150), udp(CALLER), Bytes::from(ack));
        sent(n);
        route
    }

    #[test]
    fn the_relay_is_told_and_the_record_waits_for_its_wav() {
        let mut n = node();
        let route = answered(&mut n, "n1@x");
        let cmds: Vec<Command> = n.take_media_commands().collect();
        let kinds: Vec<&str> = cmds
            .iter()
            .map(|c| match c {
                Command::Open { .. } => "open",
                Command::Update { .. } => "update",
                Command::Answered { .. } => "answered",
                Command::Record { .. } => "record",
                Command::LeftAlone { .. } => "left_alone",
                Command::Close { .. } => "close",
            })
            .collect();
        assert_eq!(kinds, ["open", "update", "update", "record", "answered"]);
        let bye = format!(
            "BYE sip:b@{UAS} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKbye1\r\nRoute: {route}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=ft\r\nTo: <sip:100@x>;tag=tt\r\nCall-ID: n1@x\r\n\
             CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        n.on_message(at(5_000), udp(CALLER), Bytes::from(bye));
        assert!(sent(&mut n)
            .iter()
            .any(|(to, m)| *to == udp(UAS) && m.starts_with("BYE ")));
        assert_eq!(
            n.take_media_commands().collect::<Vec<_>>(),
            [Command::Close { session: 1 }]
        );
        // The record waits for the writer…
        assert!(!n.take_news().any(|x| matches!(x, CallNews::Ended(_))));
        assert_eq!(n.records_waiting(), 1);
        n.on_recording("n1@x", Ok(Summary::default()));
        let ended = ended_records(&mut n);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].recording, Recording::Recorded);
        assert_eq!(ended[0].hangup, Some(Party::Caller));
    }

    #[test]
    fn an_rtp_timeout_ends_the_call_with_a_bye_each_way() {
        let mut n = node();
        answered(&mut n, "n2@x");
        n.take_media_commands().for_each(drop);
        n.take_news().for_each(drop);
        n.on_media_timeout(at(61_000), 1);
        let out = sent(&mut n);
        let byes: Vec<&Peer> = out
            .iter()
            .filter(|(_, m)| m.starts_with("BYE "))
            .map(|(to, _)| to)
            .collect();
        assert_eq!(byes, [&udp(UAS), &udp(CALLER)]);
        assert_eq!(
            n.take_media_commands().collect::<Vec<_>>(),
            [Command::Close { session: 1 }]
        );
        // The writer never answers: after 10 s the record goes out anyway.
        n.on_timer(at(71_000));
        let ended = ended_records(&mut n);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].hangup, Some(Party::Timeout));
        assert_eq!(
            ended[0].recording,
            Recording::not_recorded(crate::media::records::LATE)
        );
        // A second report for the same session does nothing.
        sent(&mut n);
        n.on_media_timeout(at(72_000), 1);
        assert!(sent(&mut n).is_empty());
    }

    /// `max_call_seconds` ends an answered call with a BYE each way
    /// (trial, 2026-12-02: the media stopped and nobody was told).
    #[test]
    fn the_call_time_limit_ends_the_call_with_a_bye_each_way() {
        let mut n = node();
        answered(&mut n, "n3@x");
        sent(&mut n);
        n.take_news().for_each(drop);
        n.on_timer(at(3_599_999));
        assert!(sent(&mut n).iter().all(|(_, m)| !m.starts_with("BYE ")));
        n.on_timer(at(3_600_000));
        let out = sent(&mut n);
        let byes: Vec<(&Peer, &String)> = out
            .iter()
            .filter(|(_, m)| m.starts_with("BYE "))
            .map(|(to, m)| (to, m))
            .collect();
        assert_eq!(
            byes.iter().map(|(to, _)| *to).collect::<Vec<_>>(),
            [&udp(UAS), &udp(CALLER)]
        );
        assert!(
            byes[0]
                .1
                .contains("Reason: SIP;cause=408;text=\"maximum call duration\"\r\n"),
            "{}",
            byes[0].1
        );
        n.on_timer(at(3_611_000));
        let ended = ended_records(&mut n);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].hangup, Some(Party::Timeout));
    }
}
