//! Call lifecycle (SPEC L-1): the proxy core reports what happened to each
//! tracked call ([`CallEvent`]); [`CallTracker`] turns that into one
//! [`CallRecord`] per call when it ends. Pure: time comes in with the
//! events, on the core's clock, and `epoch_ms` maps it to Unix time.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use smol_str::SmolStr;

use crate::media::recorder::Dtmf;
use crate::proxy::Millis;

pub mod recording;
pub use recording::Recording;

/// What the router knew when it forwarded the INVITE.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallInfo {
    /// The caller's number as it came, and normalised (T-5).
    pub caller_raw: SmolStr,
    pub caller: SmolStr,
    /// The tracking number dialed, normalised.
    pub dialed: SmolStr,
    /// The Request-URI it was sent to.
    pub destination: SmolStr,
    pub visit_id: Option<SmolStr>,
    pub marker: Option<SmolStr>,
    pub source: Option<SmolStr>,
    /// city, domain, page, utm_* of the visit (shared with the pools).
    pub visit: crate::tracking::VisitFields,
}

impl CallInfo {
    /// The call's visit as leads, the API and the CRM name it: a pool
    /// call's visit id, a static number's marker (SPEC T-2: X-Roistat
    /// carries the marker then), empty without either.
    pub fn lead_visit(&self) -> &str {
        self.visit_id
            .as_deref()
            .or(self.marker.as_deref())
            .unwrap_or_default()
    }
}

/// The visit data a call carries, under the names of SPEC C-2a: (name in
/// the API and webhooks, visit field).
pub const VISIT_COLUMNS: &[(&str, &str)] = &[
    ("landing_page", "page"),
    ("domain", "domain"),
    ("city", "city"),
    ("utm_source", "utm_source"),
    ("utm_medium", "utm_medium"),
    ("utm_campaign", "utm_campaign"),
    ("utm_term", "utm_term"),
    ("utm_content", "utm_content"),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallEvent {
    /// A new INVITE was forwarded.
    Started {
        call_id: Bytes,
        at: Millis,
        from_tag: Bytes,
        info: Box<CallInfo>,
    },
    /// The first 2xx to that INVITE.
    Answered { call_id: Bytes, at: Millis },
    /// The INVITE ended without an answer: the final status (408 when
    /// nothing came), whether the caller CANCELled it, and whether
    /// siptrack did (Timer C, a shutdown).
    Failed {
        call_id: Bytes,
        at: Millis,
        code: u16,
        caller_cancelled: bool,
        cancelled_here: bool,
    },
    /// A BYE was relayed; `from_tag` tells who sent it.
    Bye {
        call_id: Bytes,
        at: Millis,
        from_tag: Bytes,
    },
    /// siptrack ended the call itself: no media either way for
    /// `media.rtp_timeout_seconds`.
    TimedOut { call_id: Bytes, at: Millis },
    /// The 2xx was relayed but no ACK passed within 64·T1 of it: the
    /// session never came up (RFC 3261 13.3.1.4), whatever the PBX does.
    Unacknowledged { call_id: Bytes, at: Millis },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    Answered,
    Missed,
    Busy,
    Cancelled,
    Failed,
    /// Written by versions before 2026-12-01 for a call a crash cut
    /// short; still read from their records and journals. Such a call is
    /// now `Answered` or `Failed` with the hangup `Party::Interrupted`
    /// (SPEC L-1 has no status of that name, only the hangup).
    Interrupted,
}

impl CallStatus {
    /// The names of SPEC L-1 (records, API).
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Answered => "answered",
            CallStatus::Missed => "missed",
            CallStatus::Busy => "busy",
            CallStatus::Cancelled => "cancelled",
            CallStatus::Failed => "failed",
            CallStatus::Interrupted => "interrupted",
        }
    }
    /// The names call webhooks use (SPEC C-2a).
    pub fn webhook_name(self) -> &'static str {
        match self {
            CallStatus::Answered => "ANSWER",
            CallStatus::Missed => "NOANSWER",
            CallStatus::Busy => "BUSY",
            CallStatus::Cancelled => "CANCEL",
            CallStatus::Failed => "CONGESTION",
            CallStatus::Interrupted => "INTERRUPTED",
        }
    }
    /// A final response to the INVITE, other than 2xx.
    pub fn from_failure(code: u16, caller_cancelled: bool) -> CallStatus {
        match code {
            _ if caller_cancelled => CallStatus::Cancelled,
            // Busy Here / Busy Everywhere.
            486 | 600 => CallStatus::Busy,
            // Nobody picked up: timeout, unavailable, Timer C's CANCEL,
            // declined by the callee.
            408 | 480 | 487 | 603 => CallStatus::Missed,
            _ => CallStatus::Failed,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Party {
    Caller,
    Callee,
    /// Nobody: siptrack closed it after `max_call_seconds`, or ended it
    /// after `media.rtp_timeout_seconds` without media.
    Timeout,
    /// siptrack stopped (SIGTERM) while the call was up and nobody hung
    /// up within the drain time: recorded as it stood at that moment.
    Shutdown,
    /// siptrack died (kill -9, power) during the call: found at the next
    /// start, with nothing known after the INVITE.
    Interrupted,
}

impl Party {
    /// Who ended a call that got a final failure response (SPEC L-1: the
    /// callee also for a busy or declined call). The caller's CANCEL is the
    /// caller's, whatever response it crossed. A 408, or the 487 of
    /// siptrack's own CANCEL (Timer C), means a timer ran out — siptrack's,
    /// or the PBX's own 408 — and nobody refused: `timeout`. Every other
    /// final failure came from the callee's side (busy, declined,
    /// unavailable, not found, the PBX's errors), a 487 nobody asked for
    /// too (trial, 2026-12-03: it said `timeout`).
    pub fn of_failure(code: u16, caller_cancelled: bool, cancelled_here: bool) -> Party {
        match code {
            _ if caller_cancelled => Party::Caller,
            408 => Party::Timeout,
            487 if cancelled_here => Party::Timeout,
            _ => Party::Callee,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Party::Caller => "caller",
            Party::Callee => "callee",
            Party::Timeout => "timeout",
            Party::Shutdown => "shutdown",
            Party::Interrupted => "interrupted",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallRecord {
    pub call_id: String,
    pub info: CallInfo,
    /// Unix milliseconds.
    pub invite_at: u64,
    pub answer_at: Option<u64>,
    pub end_at: u64,
    /// Seconds talked (answer to end), rounded; 0 when not answered.
    pub duration: u64,
    pub status: CallStatus,
    pub hangup: Option<Party>,
    /// Whether the call was recorded, and why not (SPEC M-1). Records
    /// written before recording existed read as `recording disabled`.
    #[serde(default)]
    pub recording: Recording,
    /// Key presses seen in the media (RFC 4733), in order.
    #[serde(default)]
    pub dtmf: Vec<Dtmf>,
}

impl CallRecord {
    /// A call that a crash (kill -9) cut short, found at the next start
    /// (SPEC L-1: hangup `interrupted`), as the store last knew it: with
    /// its answer (`answer_at`), `answered`, ending there since nothing
    /// later is known (0 s talked); without, `failed` at its INVITE: the
    /// caller was never put through.
    pub fn interrupted(
        call_id: String,
        info: CallInfo,
        invite_at: u64,
        answer_at: Option<u64>,
    ) -> CallRecord {
        let answer_at = answer_at.map(|a| a.max(invite_at));
        CallRecord {
            call_id,
            info,
            invite_at,
            answer_at,
            end_at: answer_at.unwrap_or(invite_at),
            duration: 0,
            status: if answer_at.is_some() {
                CallStatus::Answered
            } else {
                CallStatus::Failed
            },
            hangup: Some(Party::Interrupted),
            recording: Recording::default(),
            dtmf: Vec::new(),
        }
    }
}

/// A call's answer and its dialog, for the store: another node takes the
/// call over from it when this one dies.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AnsweredCall {
    pub call_id: String,
    /// Unix milliseconds.
    pub answer_at: u64,
    /// The dialog, for another node to take the call over; None on one
    /// node (`share_dialogs` off), where the answer is stored only so that
    /// a crash does not hide it (SPEC L-1: an interrupted call keeps its
    /// status, answered or not).
    #[serde(default)]
    pub dialog: Option<crate::proxy::handoff::DialogHandoff>,
}

/// An answered call of another node, as the store has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdoptedCall {
    pub info: CallInfo,
    /// Unix milliseconds.
    pub invite_unix: u64,
    pub answer_unix: u64,
    /// Call-ID, tags and both sides' addresses.
    pub dialog: crate::proxy::handoff::DialogHandoff,
}

struct Open {
    from_tag: Bytes,
    info: CallInfo,
    /// On the core's clock: the call's key in `by_age` (for a call taken
    /// over from another node, when it was taken over).
    invite_at: Millis,
    /// Unix milliseconds: a call taken over from another node may have
    /// started before this node's clock did.
    invite_unix: u64,
    answer_unix: Option<u64>,
    /// A final failure the caller may still answer with the same call
    /// (`may_be_retried`): the call ends with it only if no new INVITE
    /// of this Call-ID comes within `RETRY_WAIT_MS`.
    failed: Option<Failure>,
}

/// A final failure response to the INVITE, at the core's time.
#[derive(Clone, Copy, Debug)]
struct Failure {
    at: Millis,
    code: u16,
    caller_cancelled: bool,
    cancelled_here: bool,
}

/// How long a call that got a failure the caller may answer with a new
/// INVITE of the same Call-ID (an authentication challenge, 3xx, 420,
/// 422, 488 …) waits for it before it ends with that failure. Trunks
/// retry at once (after their ACK); a phone whose user types the
/// password again takes longer (the corpus capture
/// zeek_wireshark_sip.pcap: 17, 33 and 51 s). Such a call's record, when
/// no retry comes, is that much later.
pub const RETRY_WAIT_MS: Millis = 60_000;

/// Failures after which RFC 3261 (8.1.3.4, 8.1.3.5, 22), RFC 4028 (422),
/// RFC 3329 (494), RFC 3262/3311 extensions (420, 421) and offer/answer
/// (488, 415) let the caller send the INVITE again with the same Call-ID
/// and From tag: that attempt is the same call (trial, 2026-12-02: a
/// session-timer 422 retried and talked was recorded `failed`, 0 s, and
/// the talked call lost; a 407 never retried left a call-start with no
/// call-end).
pub fn may_be_retried(code: u16) -> bool {
    matches!(
        code,
        300..=399 | 401 | 407 | 415 | 416 | 420 | 421 | 422 | 423 | 428 | 429 | 470 | 488 | 494
    )
}

/// Ended calls' `by_age` entries tolerated beyond the open calls' before
/// a sweep: keeps sweeps rare when few calls are open.
const SWEEP_SLACK: usize = 1024;

pub struct CallTracker {
    open: HashMap<Bytes, Open>,
    /// (INVITE time, Call-ID) in the order calls started: the oldest call
    /// is at the front, so `max_call_seconds` costs O(1) per check.
    /// Entries of calls that ended are skipped when they reach the front,
    /// and swept out (`forget_ended`) once they outnumber the open calls:
    /// otherwise every call's Call-ID stayed for `max_call_seconds` (4 h by
    /// default) after its end, 120 bytes a call, 430 MB an hour at 1,000
    /// calls/s, scattered over the heap.
    by_age: VecDeque<(Millis, Bytes)>,
    /// (deadline, Call-ID) of calls waiting for a retry, in order.
    retries: VecDeque<(Millis, Bytes)>,
    /// Unix milliseconds at the core's time 0.
    epoch_ms: u64,
    max_call_ms: u64,
}

impl CallTracker {
    pub fn new(epoch_ms: u64, max_call_seconds: u64) -> CallTracker {
        CallTracker {
            open: HashMap::new(),
            by_age: VecDeque::new(),
            retries: VecDeque::new(),
            epoch_ms,
            max_call_ms: max_call_seconds * 1000,
        }
    }

    /// Gives back the capacity of a load peak once most calls ended.
    pub fn shrink(&mut self) {
        self.forget_ended();
        if self.open.len() * 4 < self.open.capacity() {
            self.open.shrink_to_fit();
        }
        if self.by_age.len() * 4 < self.by_age.capacity() {
            self.by_age.shrink_to_fit();
        }
        if self.retries.len() * 4 < self.retries.capacity() {
            self.retries.shrink_to_fit();
        }
    }

    pub fn open_calls(&self) -> usize {
        self.open.len()
    }

    /// Drops the `by_age` entries of calls that ended (or whose Call-ID
    /// started again: that attempt has its own entry), keeping the order.
    fn forget_ended(&mut self) {
        let open = &self.open;
        self.by_age
            .retain(|(at, k)| open.get(k).is_some_and(|c| c.invite_at == *at));
    }

    pub fn is_open(&self, call_id: &Bytes) -> bool {
        self.open.contains_key(call_id)
    }

    /// The call got a failure it may still be retried after.
    pub fn awaits_retry(&self, call_id: &Bytes) -> bool {
        self.open.get(call_id).is_some_and(|c| c.failed.is_some())
    }

    /// Closes `c` with its failure `f`.
    fn close_failed(&self, call_id: &Bytes, c: Open, f: Failure) -> CallRecord {
        let status = CallStatus::from_failure(f.code, f.caller_cancelled);
        let hangup = Party::of_failure(f.code, f.caller_cancelled, f.cancelled_here);
        self.close(call_id, c, f.at, status, Some(hangup))
    }

    /// Unix milliseconds of a time on the core's clock.
    pub fn unix_ms(&self, at: Millis) -> u64 {
        self.epoch_ms + at
    }

    fn close(
        &self,
        call_id: &Bytes,
        c: Open,
        at: Millis,
        status: CallStatus,
        hangup: Option<Party>,
    ) -> CallRecord {
        let end_at = self.epoch_ms + at;
        let duration = c
            .answer_unix
            .map_or(0, |a| (end_at.saturating_sub(a) + 500) / 1000);
        CallRecord {
            call_id: String::from_utf8_lossy(call_id).into_owned(),
            info: c.info,
            invite_at: c.invite_unix,
            answer_at: c.answer_unix,
            end_at,
            duration,
            status,
            hangup,
            // The media layer, when it handled the call, says otherwise.
            recording: Recording::default(),
            dtmf: Vec::new(),
        }
    }

    /// Takes one event; returns the call's record when it ended.
    pub fn on_event(&mut self, ev: CallEvent) -> Option<CallRecord> {
        match ev {
            CallEvent::Started {
                call_id,
                at,
                from_tag,
                info,
            } => {
                // Amortised O(1): a sweep after at least `len / 2` calls ended.
                if self.by_age.len() >= 2 * self.open.len() + SWEEP_SLACK {
                    self.forget_ended();
                }
                match self.open.entry(call_id) {
                    std::collections::hash_map::Entry::Vacant(e) => {
                        self.by_age.push_back((at, e.key().clone()));
                        e.insert(Open {
                            from_tag,
                            info: *info,
                            invite_at: at,
                            invite_unix: self.epoch_ms + at,
                            answer_unix: None,
                            failed: None,
                        });
                    }
                    // The caller's new attempt after a failure it may
                    // retry: the same call, as it started (its tracking
                    // number, visit and time; a 3xx's new target is where
                    // the call went, not what was dialed). Otherwise a
                    // retransmission.
                    std::collections::hash_map::Entry::Occupied(mut e) => {
                        let c = e.get_mut();
                        if c.failed.take().is_some() {
                            // RFC 3261 wants the same From tag; a caller
                            // that picks a new one still hangs up with it.
                            c.from_tag = from_tag;
                        }
                    }
                }
                None
            }
            CallEvent::Answered { call_id, at } => {
                if let Some(c) = self.open.get_mut(&call_id) {
                    c.answer_unix.get_or_insert(self.epoch_ms + at);
                }
                None
            }
            CallEvent::Failed {
                call_id,
                at,
                code,
                caller_cancelled,
                cancelled_here,
            } => {
                // A failure after the answer (a late CANCEL race) does not
                // undo the answer; the BYE will end the call.
                if self.open.get(&call_id)?.answer_unix.is_some() {
                    return None;
                }
                let failure = Failure {
                    at,
                    code,
                    caller_cancelled,
                    cancelled_here,
                };
                if may_be_retried(code) && !caller_cancelled {
                    if let Some(c) = self.open.get_mut(&call_id) {
                        c.failed = Some(failure);
                        self.retries
                            .push_back((at.saturating_add(RETRY_WAIT_MS), call_id));
                    }
                    return None;
                }
                let c = self.open.remove(&call_id)?;
                Some(self.close_failed(&call_id, c, failure))
            }
            CallEvent::Bye {
                call_id,
                at,
                from_tag,
            } => {
                let c = self.open.remove(&call_id)?;
                let by = if c.from_tag == from_tag {
                    Party::Caller
                } else {
                    Party::Callee
                };
                let status = match (c.answer_unix, by) {
                    (Some(_), _) => CallStatus::Answered,
                    // The caller ended an early dialog (RFC 3261 15): it
                    // gave up before the answer, as with a CANCEL (trial,
                    // 2026-12-02: recorded failed).
                    (None, Party::Caller) => CallStatus::Cancelled,
                    // The callee's BYE before any 2xx: the call never
                    // connected as far as siptrack knows.
                    (None, _) => CallStatus::Failed,
                };
                Some(self.close(&call_id, c, at, status, Some(by)))
            }
            CallEvent::Unacknowledged { call_id, at } => {
                // Answered, never set up: failed, no talk time (a trial,
                // 2026-12-03: `answered` for max_call_seconds, 4 h by
                // default, when the PBX sent no BYE either).
                self.open.get(&call_id)?.answer_unix?;
                let c = self.open.remove(&call_id)?;
                let mut r = self.close(&call_id, c, at, CallStatus::Failed, Some(Party::Timeout));
                r.duration = 0;
                Some(r)
            }
            CallEvent::TimedOut { call_id, at } => {
                let c = self.open.remove(&call_id)?;
                let status = if c.answer_unix.is_some() {
                    CallStatus::Answered
                } else {
                    CallStatus::Missed
                };
                Some(self.close(&call_id, c, at, status, Some(Party::Timeout)))
            }
        }
    }

    /// Takes over an answered call another node set up (that node died;
    /// its BYE came here): from now on it ends like one of this node's,
    /// with its own start and answer times, so the duration is the time
    /// talked. `now` keys its `max_call_seconds` (counted from now, as
    /// the adopted dialog's lifetime is). A call already open is kept.
    pub fn adopt(&mut self, now: Millis, call: AdoptedCall) {
        let call_id = Bytes::from(call.dialog.call_id.into_bytes());
        if let std::collections::hash_map::Entry::Vacant(e) = self.open.entry(call_id) {
            self.by_age.push_back((now, e.key().clone()));
            e.insert(Open {
                from_tag: Bytes::from(call.dialog.caller_tag.into_bytes()),
                info: call.info,
                invite_at: now,
                invite_unix: call.invite_unix,
                answer_unix: Some(call.answer_unix),
                failed: None,
            });
        }
    }

    /// Closes every open call at `now`, as it stands: answered ones as
    /// answered (talked until now), the rest as missed. `hangup` says why:
    /// [`Party::Shutdown`] when siptrack stops, `None` when a replayed
    /// capture ends (the capture does not say).
    pub fn close_all(&mut self, now: Millis, hangup: Option<Party>) -> Vec<CallRecord> {
        let mut open: Vec<(Bytes, Open)> = self.open.drain().collect();
        self.by_age.clear();
        self.retries.clear();
        open.sort_by(|a, b| a.0.cmp(&b.0));
        open.into_iter()
            .map(|(k, c)| match c.failed {
                // It ended with its failure; no retry will come now.
                Some(f) => self.close_failed(&k, c, f),
                None => {
                    let status = if c.answer_unix.is_some() {
                        CallStatus::Answered
                    } else {
                        CallStatus::Missed
                    };
                    self.close(&k, c, now, status, hangup)
                }
            })
            .collect()
    }

    /// When the oldest open call reaches `max_call_seconds` (possibly
    /// earlier: the front may be a call that has ended).
    pub fn next_expiry(&self) -> Option<Millis> {
        let oldest = self
            .by_age
            .front()
            .map(|(at, _)| at.saturating_add(self.max_call_ms));
        let retry = self.retries.front().map(|(deadline, _)| *deadline);
        match (oldest, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Closes calls older than `max_call_seconds` (their BYE never came).
    pub fn on_tick(&mut self, now: Millis) -> Vec<CallRecord> {
        let mut out = Vec::new();
        // Failures no retry followed end their calls, at the failure.
        while let Some((deadline, _)) = self.retries.front() {
            if *deadline > now {
                break;
            }
            let Some((deadline, k)) = self.retries.pop_front() else {
                break;
            };
            // Only if still waiting for this failure's retry.
            let waiting = self
                .open
                .get(&k)
                .and_then(|c| c.failed)
                .filter(|f| f.at.saturating_add(RETRY_WAIT_MS) == deadline);
            if let Some(f) = waiting {
                if let Some(c) = self.open.remove(&k) {
                    out.push(self.close_failed(&k, c, f));
                }
            }
        }
        while let Some((at, _)) = self.by_age.front() {
            if now.saturating_sub(*at) < self.max_call_ms {
                break;
            }
            let Some((at, k)) = self.by_age.pop_front() else {
                break;
            };
            // Ended already, or started again after a challenge (that
            // attempt has an entry of its own further back).
            if self.open.get(&k).is_none_or(|c| c.invite_at != at) {
                continue;
            }
            if let Some(c) = self.open.remove(&k) {
                let status = if c.answer_unix.is_some() {
                    CallStatus::Answered
                } else {
                    CallStatus::Missed
                };
                out.push(self.close(&k, c, now, status, Some(Party::Timeout)));
            }
        }
        out.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal keeps call records as JSON lines across upgrades: a
    /// line written before recording existed reads as not recorded.
    #[test]
    fn a_record_from_before_recording_reads_back() {
        let old = r#"{"call_id":"c1","info":{"caller_raw":"","caller":"","dialed":"","destination":"","visit_id":null,"marker":null,"source":null,"visit":{}},"invite_at":1,"answer_at":null,"end_at":2,"duration":0,"status":"missed","hangup":"caller"}"#;
        let r: CallRecord = serde_json::from_str(old).expect("old journal line");
        assert_eq!((&r.recording, r.dtmf.len()), (&Recording::default(), 0));
        let mut recorded = r.clone();
        recorded.recording = Recording::Partial;
        recorded.dtmf = vec![Dtmf {
            side: crate::media::timeline::Side::Caller,
            digit: '#',
            at_ms: 10,
            duration_ms: 40,
        }];
        let line = serde_json::to_string(&recorded).expect("json");
        assert_eq!(
            serde_json::from_str::<CallRecord>(&line).expect("back"),
            recorded
        );
    }

    fn started(id: &str, at: Millis) -> CallEvent {
        CallEvent::Started {
            call_id: Bytes::from(id.to_string()),
            at,
            from_tag: Bytes::from_static(b"caller-tag"),
            info: Box::new(CallInfo {
                caller: "79161234567".into(),
                dialed: "74951111111".into(),
                ..CallInfo::default()
            }),
        }
    }

    /// Issue 15: ended calls do not stay in the age queue until
    /// `max_call_seconds` (what grew a soak's memory by 120 bytes a call),
    /// and the queue still ends the calls that are left open, oldest first.
    #[test]
    fn ended_calls_leave_the_age_queue() {
        let mut t = CallTracker::new(0, 3600);
        let bye = |id: String, at| CallEvent::Bye {
            call_id: Bytes::from(id),
            at,
            from_tag: Bytes::from_static(b"caller-tag"),
        };
        // 100,000 calls of 1 s at 1,000 calls/s; every 10,000th stays open.
        for i in 0..100_000u64 {
            t.on_event(started(&format!("c{i}"), i));
            if i >= 1_000 && (i - 1_000) % 10_000 != 0 {
                assert!(t.on_event(bye(format!("c{}", i - 1_000), i)).is_some());
            }
            assert!(
                t.by_age.len() <= 2 * t.open.len() + SWEEP_SLACK + 1,
                "call {i}: {} queued for {} open",
                t.by_age.len(),
                t.open.len()
            );
        }
        for i in 99_000..100_000u64 {
            t.on_event(bye(format!("c{i}"), 100_000));
        }
        // After the load: a trim's shrink keeps only the open calls.
        t.shrink();
        let open: Vec<u64> = (0..10).map(|k| k * 10_000).collect();
        assert_eq!(t.by_age.iter().map(|(at, _)| *at).collect::<Vec<_>>(), open);
        assert_eq!(t.next_expiry(), Some(3_600_000));
        let ended = t.on_tick(3_600_000 + 90_000);
        assert_eq!(
            ended.iter().map(|r| r.call_id.as_str()).collect::<Vec<_>>(),
            [
                "c0", "c10000", "c20000", "c30000", "c40000", "c50000", "c60000", "c70000",
                "c80000", "c90000"
            ]
        );
        assert!(ended.iter().all(|r| r.hangup == Some(Party::Timeout)));
        assert_eq!((t.open_calls(), t.by_age.len()), (0, 0));
    }

    fn handoff(call_id: &str, caller_tag: &str) -> crate::proxy::handoff::DialogHandoff {
        use crate::proxy::handoff::{DialogHandoff, HandoffSide, HandoffTransport};
        let side = HandoffSide {
            transport: HandoffTransport::Udp,
            source: ([127, 0, 0, 1], 5060).into(),
            contact: None,
        };
        DialogHandoff {
            call_id: call_id.into(),
            caller_tag: caller_tag.into(),
            callee_tag: "callee-tag".into(),
            caller: side,
            callee: side,
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    /// Issue 14: a call answered on a node that died, ended by its BYE
    /// here: the times are the other node's (before this node's clock
    /// started), the duration is the time talked, the side is the BYE's.
    #[test]
    fn an_adopted_call_ends_with_its_own_times() {
        for (tag, party) in [("caller-tag", Party::Caller), ("callee-tag", Party::Callee)] {
            // This node's clock started at Unix 1,000,000 ms; the call was
            // set up 20 s before that and answered 5 s later.
            let mut t = CallTracker::new(1_000_000, 3600);
            let adopted = AdoptedCall {
                dialog: handoff("c1", "caller-tag"),
                info: CallInfo::default(),
                invite_unix: 980_000,
                answer_unix: 985_000,
            };
            t.adopt(7_000, adopted.clone());
            // Adopting twice (two BYE retransmissions looked up) keeps one.
            t.adopt(7_100, adopted);
            assert_eq!(t.open_calls(), 1);
            let r = t
                .on_event(CallEvent::Bye {
                    call_id: b("c1"),
                    at: 7_400,
                    from_tag: b(tag),
                })
                .expect("the BYE ends the adopted call");
            assert_eq!(
                (r.invite_at, r.answer_at, r.end_at, r.duration),
                (980_000, Some(985_000), 1_007_400, 22)
            );
            assert_eq!((r.status, r.hangup), (CallStatus::Answered, Some(party)));
            assert_eq!(t.open_calls(), 0);
        }
        // One never ended expires max_call_seconds after it was adopted.
        let mut t = CallTracker::new(1_000_000, 60);
        t.adopt(
            5_000,
            AdoptedCall {
                dialog: handoff("c2", "x"),
                info: CallInfo::default(),
                invite_unix: 900_000,
                answer_unix: 901_000,
            },
        );
        assert!(t.on_tick(64_999).is_empty());
        let r = t.on_tick(65_000);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].hangup, Some(Party::Timeout));
    }

    #[test]
    fn answered_call_ended_by_either_side() {
        for (tag, party) in [("caller-tag", Party::Caller), ("callee-tag", Party::Callee)] {
            let mut t = CallTracker::new(1_000_000, 3600);
            assert!(t.on_event(started("c1", 100)).is_none());
            assert!(t
                .on_event(CallEvent::Answered {
                    call_id: b("c1"),
                    at: 2_100
                })
                .is_none());
            let r = t
                .on_event(CallEvent::Bye {
                    call_id: b("c1"),
                    at: 7_600,
                    from_tag: b(tag),
                })
                .expect("record");
            assert_eq!(r.status, CallStatus::Answered);
            assert_eq!(r.hangup, Some(party));
            assert_eq!(
                (r.invite_at, r.answer_at, r.end_at),
                (1_000_100, Some(1_002_100), 1_007_600)
            );
            assert_eq!(r.duration, 6, "5.5 s rounds to 6");
            assert_eq!(r.info.dialed, "74951111111");
            assert_eq!(t.open_calls(), 0);
        }
    }

    #[test]
    fn an_answer_never_acked_is_a_failed_call_without_talk_time() {
        let mut t = CallTracker::new(1_000_000, 3600);
        t.on_event(started("u1", 0));
        // Not answered yet: the event says nothing of it.
        assert!(t
            .on_event(CallEvent::Unacknowledged {
                call_id: b("u1"),
                at: 10
            })
            .is_none());
        t.on_event(CallEvent::Answered {
            call_id: b("u1"),
            at: 100,
        });
        let r = t
            .on_event(CallEvent::Unacknowledged {
                call_id: b("u1"),
                at: 32_100,
            })
            .expect("closed");
        assert_eq!(
            (r.status, r.hangup, r.duration, r.answer_at, r.end_at),
            (
                CallStatus::Failed,
                Some(Party::Timeout),
                0,
                Some(1_000_100),
                1_032_100
            )
        );
        assert_eq!(t.open_calls(), 0);
    }

    #[test]
    fn media_timeout_ends_the_call_as_timeout() {
        // (answered before the timeout?, status)
        for (answered, status) in [(true, CallStatus::Answered), (false, CallStatus::Missed)] {
            let mut t = CallTracker::new(0, 3600);
            t.on_event(started("c1", 0));
            if answered {
                t.on_event(CallEvent::Answered {
                    call_id: b("c1"),
                    at: 1_000,
                });
            }
            let r = t
                .on_event(CallEvent::TimedOut {
                    call_id: b("c1"),
                    at: 61_000,
                })
                .expect("record");
            assert_eq!((r.status, r.hangup), (status, Some(Party::Timeout)));
            assert_eq!(r.duration, if answered { 60 } else { 0 });
            assert!(t
                .on_event(CallEvent::TimedOut {
                    call_id: b("c1"),
                    at: 62_000
                })
                .is_none());
        }
    }

    #[test]
    fn failures_map_to_statuses() {
        use Party::*;
        // (code, the caller CANCELled, siptrack CANCELled, status, hangup)
        for (code, cancelled, here, status, hangup) in [
            // Busy or declined: the callee's answer (SPEC L-1).
            (486, false, false, CallStatus::Busy, Callee),
            (600, false, false, CallStatus::Busy, Callee),
            (603, false, false, CallStatus::Missed, Callee),
            // The caller's CANCEL, whatever final response it crossed.
            (487, true, false, CallStatus::Cancelled, Caller),
            (486, true, false, CallStatus::Cancelled, Caller),
            // A timer ran out: siptrack's own 408 (Timer B), the 487 of
            // Timer C's CANCEL, or a 408 of the PBX's own timer.
            (487, false, true, CallStatus::Missed, Timeout),
            (408, false, false, CallStatus::Missed, Timeout),
            // A 487 nobody CANCELled for: the PBX ended it.
            (487, false, false, CallStatus::Missed, Callee),
            // Every other final failure came from the callee's side.
            (480, false, false, CallStatus::Missed, Callee),
            (404, false, false, CallStatus::Failed, Callee),
            (503, false, false, CallStatus::Failed, Callee),
            (500, false, false, CallStatus::Failed, Callee),
        ] {
            let mut t = CallTracker::new(0, 3600);
            t.on_event(started("c", 0));
            let r = t
                .on_event(CallEvent::Failed {
                    call_id: b("c"),
                    at: 3_000,
                    code,
                    caller_cancelled: cancelled,
                    cancelled_here: here,
                })
                .expect("record");
            assert_eq!(r.status, status, "{code} cancelled={cancelled}");
            assert_eq!(r.duration, 0);
            assert_eq!(r.hangup, Some(hangup), "{code} cancelled={cancelled}");
        }
        assert_eq!(CallStatus::Cancelled.webhook_name(), "CANCEL");
        assert_eq!(CallStatus::Failed.webhook_name(), "CONGESTION");
        // A BYE on the early dialog: the caller's gives up (as a CANCEL
        // does), the callee's fails the call.
        for (from_tag, status, hangup) in [
            (&b"caller-tag"[..], CallStatus::Cancelled, Caller),
            (&b"pbx-tag"[..], CallStatus::Failed, Callee),
        ] {
            let mut t = CallTracker::new(0, 3600);
            t.on_event(started("c", 0));
            let r = t
                .on_event(CallEvent::Bye {
                    call_id: b("c"),
                    at: 3_000,
                    from_tag: Bytes::copy_from_slice(from_tag),
                })
                .expect("record");
            assert_eq!((r.status, r.hangup), (status, Some(hangup)));
        }
    }

    #[test]
    fn a_failure_the_caller_retries_is_not_the_calls_end() {
        let mut t = CallTracker::new(0, 3600);
        t.on_event(started("c", 0));
        for (at, code) in [
            (50, 407),
            (150, 401),
            (250, 302),
            (350, 422),
            (450, 420),
            (550, 488),
        ] {
            let failed = t.on_event(CallEvent::Failed {
                call_id: b("c"),
                at,
                code,
                caller_cancelled: false,
                cancelled_here: false,
            });
            assert!(failed.is_none(), "{code}");
            assert!(t.awaits_retry(&b("c")), "{code}");
            assert_eq!(
                t.next_expiry(),
                Some(50 + RETRY_WAIT_MS),
                "the first deadline"
            );
            t.on_event(started("c", at + 50));
            assert!(!t.awaits_retry(&b("c")), "{code}");
            assert_eq!(t.open_calls(), 1);
        }
        // The earlier failures' deadlines pass without effect.
        assert!(t.on_tick(600 + RETRY_WAIT_MS).is_empty());
        t.on_event(CallEvent::Answered {
            call_id: b("c"),
            at: 2_000,
        });
        let r = t
            .on_event(CallEvent::Bye {
                call_id: b("c"),
                at: 7_000,
                from_tag: b("caller-tag"),
            })
            .expect("the retried INVITE's call");
        assert_eq!(
            (r.status, r.invite_at, r.duration, r.hangup),
            (CallStatus::Answered, 0, 5, Some(Party::Caller)),
            "one call, from the first INVITE"
        );
    }

    /// A call started at 0 that got `code` at 300 (the clock's 0 is Unix
    /// 1,000 ms).
    fn failed_at_300(code: u16) -> CallTracker {
        let mut t = CallTracker::new(1_000, 3600);
        t.on_event(started("c", 0));
        t.on_event(CallEvent::Failed {
            call_id: b("c"),
            at: 300,
            code,
            caller_cancelled: false,
            cancelled_here: false,
        });
        t
    }

    #[test]
    fn a_failure_nobody_retries_ends_the_call_at_the_failure() {
        // (code, status, hangup)
        for (code, status, hangup) in [
            (407, CallStatus::Failed, Party::Callee),
            (302, CallStatus::Failed, Party::Callee),
            (488, CallStatus::Failed, Party::Callee),
        ] {
            let mut t = failed_at_300(code);
            assert!(t.on_tick(300 + RETRY_WAIT_MS - 1).is_empty(), "{code}");
            let r = t.on_tick(300 + RETRY_WAIT_MS);
            assert_eq!(r.len(), 1, "{code}");
            assert_eq!(
                (r[0].status, r[0].hangup, r[0].end_at, r[0].duration),
                (status, Some(hangup), 1_300, 0),
                "{code}"
            );
            assert_eq!(t.open_calls(), 0);
            // Or the capture (or siptrack) ends first: the same record.
            let mut t = failed_at_300(code);
            let r = t.close_all(900, Some(Party::Shutdown));
            assert_eq!(
                (r[0].status, r[0].hangup, r[0].end_at),
                (status, Some(hangup), 1_300)
            );
        }
        // Final failures, and anything the caller cancelled, end it at once.
        for (code, cancelled) in [
            (486, false),
            (404, false),
            (500, false),
            (487, true),
            (302, true),
        ] {
            let mut t = CallTracker::new(0, 3600);
            t.on_event(started("c", 0));
            let r = t.on_event(CallEvent::Failed {
                call_id: b("c"),
                at: 300,
                code,
                caller_cancelled: cancelled,
                cancelled_here: false,
            });
            assert!(r.is_some(), "{code} {cancelled}");
        }
    }

    #[test]
    fn open_calls_close_when_a_capture_ends() {
        let mut t = CallTracker::new(1_000, 3600);
        t.on_event(started("b", 0));
        t.on_event(started("a", 10));
        t.on_event(CallEvent::Answered {
            call_id: b("a"),
            at: 1_000,
        });
        let r = t.close_all(4_000, None);
        let got: Vec<(&str, CallStatus, u64, Option<Party>)> = r
            .iter()
            .map(|r| (r.call_id.as_str(), r.status, r.duration, r.hangup))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", CallStatus::Answered, 3, None),
                ("b", CallStatus::Missed, 0, None)
            ]
        );
        assert_eq!(t.open_calls(), 0);
    }

    #[test]
    fn events_of_unknown_calls_and_late_failures_are_ignored() {
        let mut t = CallTracker::new(0, 3600);
        assert!(t
            .on_event(CallEvent::Answered {
                call_id: b("x"),
                at: 1
            })
            .is_none());
        assert!(t
            .on_event(CallEvent::Bye {
                call_id: b("x"),
                at: 1,
                from_tag: b("t")
            })
            .is_none());
        t.on_event(started("c", 0));
        t.on_event(CallEvent::Answered {
            call_id: b("c"),
            at: 10,
        });
        assert!(t
            .on_event(CallEvent::Failed {
                call_id: b("c"),
                at: 20,
                code: 487,
                caller_cancelled: true,
                cancelled_here: false,
            })
            .is_none());
        assert_eq!(t.open_calls(), 1, "the answered call is still up");
        // A retransmitted INVITE's Started does not restart the call.
        t.on_event(started("c", 500));
        let r = t
            .on_event(CallEvent::Bye {
                call_id: b("c"),
                at: 1_010,
                from_tag: b("caller-tag"),
            })
            .expect("record");
        assert_eq!((r.invite_at, r.duration), (0, 1));
    }

    #[test]
    fn a_shutdown_records_open_calls_at_that_moment() {
        let mut t = CallTracker::new(1_700_000_000_000, 3600);
        t.on_event(started("a", 1_000));
        t.on_event(CallEvent::Answered {
            call_id: b("a"),
            at: 3_000,
        });
        t.on_event(started("b", 9_000));
        let r = t.close_all(10_400, Some(Party::Shutdown));
        let got: Vec<(&str, CallStatus, u64, u64, Option<&str>)> = r
            .iter()
            .map(|r| {
                (
                    r.call_id.as_str(),
                    r.status,
                    r.duration,
                    r.end_at,
                    r.hangup.map(Party::as_str),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "a",
                    CallStatus::Answered,
                    7,
                    1_700_000_010_400,
                    Some("shutdown")
                ),
                (
                    "b",
                    CallStatus::Missed,
                    0,
                    1_700_000_010_400,
                    Some("shutdown")
                ),
            ]
        );
        assert_eq!(t.next_expiry(), None);
    }

    #[test]
    fn the_oldest_open_call_expires_first() {
        let mut t = CallTracker::new(0, 60);
        t.on_event(started("a", 0));
        t.on_event(started("b", 10_000));
        t.on_event(started("c", 20_000));
        t.on_event(CallEvent::Bye {
            call_id: b("a"),
            at: 5_000,
            from_tag: b("caller-tag"),
        });
        // The ended call's entry is still at the front: an early wake-up.
        assert_eq!(t.next_expiry(), Some(60_000));
        assert!(t.on_tick(60_000).is_empty());
        assert_eq!(t.next_expiry(), Some(70_000));
        let r = t.on_tick(75_000);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].call_id, "b");
        assert_eq!(t.next_expiry(), Some(80_000));
        // A challenged INVITE that comes back is the same call: its
        // clock runs from the first INVITE.
        t.on_event(CallEvent::Failed {
            call_id: b("c"),
            at: 21_000,
            code: 407,
            caller_cancelled: false,
            cancelled_here: false,
        });
        t.on_event(started("c", 22_000));
        let r = t.on_tick(80_000);
        assert_eq!((r.len(), r[0].invite_at), (1, 20_000));
        assert_eq!(t.open_calls(), 0);
    }

    #[test]
    fn calls_without_bye_are_closed_after_max_call_seconds() {
        let mut t = CallTracker::new(0, 60);
        t.on_event(started("a", 0));
        t.on_event(CallEvent::Answered {
            call_id: b("a"),
            at: 1_000,
        });
        t.on_event(started("b", 30_000));
        assert!(t.on_tick(59_999).is_empty());
        let r = t.on_tick(60_000);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].status, r[0].hangup, r[0].duration),
            (CallStatus::Answered, Some(Party::Timeout), 59)
        );
        let r = t.on_tick(90_000);
        assert_eq!(
            (r[0].call_id.as_str(), r[0].status),
            ("b", CallStatus::Missed)
        );
    }
}
