//! One siptrack node without its I/O: the proxy core and the call tracker
//! behind one set of inputs (a message, the time) and two outputs
//! (datagrams to send, call news for the lead pipeline). `siptrack run`
//! feeds it from sockets and the system clock, `siptrack replay` from a
//! capture and a virtual clock; everything between is this one piece of
//! code, so the two cannot drift apart.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::calls::{CallEvent, CallRecord, CallTracker, Party};
use crate::clock::Now;
use crate::crm::outbox::CallStart;
use crate::leads::pipeline::CallNews;
use crate::media::anchor::{Anchor, Command};
use crate::media::records::{Finished, Records};
use crate::media::relay::SessionId;
use crate::proxy::{Millis, Output, Peer, Proxy};

pub struct Node {
    proxy: Proxy,
    calls: CallTracker,
    news: Vec<CallNews>,
    /// The media phase's state (it runs inside the proxy's phase chain),
    /// when media is anchored.
    media: Option<Arc<Mutex<Anchor>>>,
    media_commands: Vec<Command>,
    records: Records,
    max_call_ms: Millis,
}

impl Node {
    /// `epoch` is any reading of the clock whose monotonic times the core
    /// will see; `max_call_seconds` closes calls whose BYE never comes.
    pub fn new(proxy: Proxy, epoch: Now, max_call_seconds: u64) -> Node {
        Node {
            proxy,
            calls: CallTracker::new(epoch.epoch_ms(), max_call_seconds),
            news: Vec::new(),
            media: None,
            media_commands: Vec::new(),
            records: Records::default(),
            max_call_ms: max_call_seconds * 1000,
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
            tracing::info!(call_id = %String::from_utf8_lossy(&call_id), "no media either way for media.rtp_timeout_seconds: ending the call");
            self.proxy.end_dialog(&call_id, now.mono_ms);
            self.collect_at(now.mono_ms);
        }
    }

    /// The writer finished (or could not start) a call's recording.
    pub fn on_recording(&mut self, call_id: &str, result: Finished) {
        if let Some(r) = self.records.finished(call_id, result) {
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

    /// Runs what is due at `now`: transaction timers, and calls that
    /// reached `max_call_seconds`.
    pub fn on_timer(&mut self, now: Now) {
        self.proxy.on_timer(now.mono_ms);
        self.collect_at(now.mono_ms);
        for r in self.calls.on_tick(now.mono_ms) {
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
    fn ended(&mut self, r: CallRecord, now: Millis) {
        let state = self
            .media
            .as_ref()
            .and_then(|m| m.lock().ok()?.close(r.call_id.as_bytes(), now));
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
        let events: Vec<CallEvent> = self.proxy.take_call_events().collect();
        for ev in events {
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
            let call_id = match &ev {
                CallEvent::Failed { call_id, .. } if self.calls.is_open(call_id) => {
                    Some(call_id.clone())
                }
                _ => None,
            };
            match self.calls.on_event(ev) {
                Some(r) => self.ended(r, now),
                // A failure that closed no record: a challenged INVITE.
                None => {
                    if let Some(id) = call_id.filter(|id| !self.calls.is_open(id)) {
                        if let Some(m) = &self.media {
                            if let Ok(mut a) = m.lock() {
                                a.close(&id, now);
                            }
                        }
                        self.news.push(CallNews::Abandoned(
                            String::from_utf8_lossy(&id).into_owned(),
                        ));
                    }
                }
            }
        }
        self.take_from_media();
    }
}
