//! One siptrack node without its I/O: the proxy core and the call tracker
//! behind one set of inputs (a message, the time) and two outputs
//! (datagrams to send, call news for the lead pipeline). `siptrack run`
//! feeds it from sockets and the system clock, `siptrack replay` from a
//! capture and a virtual clock; everything between is this one piece of
//! code, so the two cannot drift apart.

use bytes::Bytes;

use crate::calls::{AdoptedCall, AnsweredCall, CallEvent, CallTracker, Party};
use crate::clock::Now;
use crate::crm::outbox::CallStart;
use crate::leads::pipeline::CallNews;
use crate::proxy::handoff::DialogMiss;
use crate::proxy::{Millis, Output, Peer, Proxy};

pub struct Node {
    proxy: Proxy,
    calls: CallTracker,
    news: Vec<CallNews>,
}

impl Node {
    /// `epoch` is any reading of the clock whose monotonic times the core
    /// will see; `max_call_seconds` closes calls whose BYE never comes.
    pub fn new(proxy: Proxy, epoch: Now, max_call_seconds: u64) -> Node {
        Node {
            proxy,
            calls: CallTracker::new(epoch.epoch_ms(), max_call_seconds),
            news: Vec::new(),
        }
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
        self.collect();
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
            self.proxy.adopt_dialog(now.mono_ms, &call.dialog);
            self.calls.adopt(now.mono_ms, call);
        }
        self.proxy.on_looked_up(now.mono_ms, miss.from, miss.data);
        self.collect();
    }

    /// Runs what is due at `now`: transaction timers, and calls that
    /// reached `max_call_seconds`.
    pub fn on_timer(&mut self, now: Now) {
        self.proxy.on_timer(now.mono_ms);
        self.collect();
        for r in self.calls.on_tick(now.mono_ms) {
            self.news.push(CallNews::Ended(r));
        }
    }

    /// When [`Node::on_timer`] has work next (monotonic).
    pub fn next_deadline(&self) -> Option<Millis> {
        match (self.proxy.next_deadline(), self.calls.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
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

    fn collect(&mut self) {
        let handoffs: Vec<_> = self.proxy.take_handoffs().collect();
        for ev in self.proxy.take_call_events() {
            if let CallEvent::Answered { call_id, at } = &ev {
                // The dialog answered with it (the core learns it from the
                // same 2xx), once: the first 2xx only.
                let first = self.calls.is_open(call_id);
                if let Some(d) = handoffs.iter().find(|h| h.call_id.as_bytes() == call_id) {
                    if first {
                        self.news.push(CallNews::Answered(AnsweredCall {
                            call_id: d.call_id.clone(),
                            answer_at: self.calls.unix_ms(*at),
                            dialog: d.clone(),
                        }));
                    }
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
            let call_id = match &ev {
                CallEvent::Failed { call_id, .. } if self.calls.is_open(call_id) => {
                    Some(call_id.clone())
                }
                _ => None,
            };
            match self.calls.on_event(ev) {
                Some(r) => self.news.push(CallNews::Ended(r)),
                // A failure that closed no record: a challenged INVITE.
                None => {
                    if let Some(id) = call_id.filter(|id| !self.calls.is_open(id)) {
                        self.news.push(CallNews::Abandoned(
                            String::from_utf8_lossy(&id).into_owned(),
                        ));
                    }
                }
            }
        }
    }
}
