//! Call records meet their recordings. A call's record is ready when the
//! call ends, but its WAV is finalised a moment later on the writer
//! thread; the record waits here (at most [`WAIT_MS`]) for the writer's
//! outcome so it says `recorded` with the DTMF list, or why not. Pure:
//! the node passes the time.

use std::collections::HashMap;

use crate::calls::{CallRecord, Recording};
use crate::proxy::Millis;

use super::anchor::RecState;
use super::recorder::{NoRecording, Summary};

/// How long a record waits for its recording's outcome.
pub const WAIT_MS: Millis = 10_000;
/// Reason given when the writer did not answer in time.
pub const LATE: &str = "recording not finalised within 10 s";
/// Reason given when a call ended before any answer SDP.
pub const NO_MEDIA: &str = "no media negotiated";

/// What the writer said about one call.
pub type Finished = Result<Summary, NoRecording>;

#[derive(Default)]
pub struct Records {
    /// (the record, its deadline, whether its recording was cut short:
    /// `RecState::Cut`).
    waiting: HashMap<String, (CallRecord, Millis, bool)>,
    /// Outcomes that came before their call ended (a file that could not
    /// even be created).
    early: HashMap<String, Finished>,
}

/// Packets of a codec the recorder does not decode (G.722 after a
/// re-INVITE switched to it, G.729) beyond which a recording that has
/// audio besides says `partial`: half a second at 20 ms a packet, so a
/// stray packet of another type does not.
const UNDECODED_PARTIAL: u64 = 25;

/// The writer's outcome into the record; `cut`: the recording ended
/// before the call did (its media left siptrack mid-call).
fn apply(r: &mut CallRecord, f: Finished, cut: bool) {
    match f {
        Ok(s) => {
            // Packets lost on the way to the recorder, media that went
            // around siptrack, or a stretch in a codec the recorder does
            // not decode (silence in the file; trial, 2026-12-02: a call
            // switched to G.722 said `recorded`): the file does not hold
            // the whole call, which "partial" says.
            let undecoded = s.unsupported_packets > UNDECODED_PARTIAL;
            r.recording = if s.lost_packets > 0 || cut || undecoded {
                Recording::Partial
            } else {
                Recording::Recorded
            };
            r.dtmf = s.dtmf;
        }
        // The media went around siptrack before any packet reached the
        // recorder: "no media received" read as a silent call (QA,
        // 2026-12-02).
        Err(NoRecording::NoMedia) if cut => {
            r.recording = Recording::not_recorded(LEFT_BEFORE_MEDIA);
        }
        Err(e) => r.recording = Recording::from(&e),
    }
}

/// Reason given when a call's media left siptrack (a later SDP it could
/// not anchor) before any of it was recorded.
pub const LEFT_BEFORE_MEDIA: &str =
    "the media went around siptrack (a later SDP it could not anchor) before any reached it";

impl Records {
    /// A call ended; `state` is what the media phase knew (`None`: it did
    /// not handle the call). Returns the record when it need not wait.
    pub fn ended(
        &mut self,
        mut r: CallRecord,
        state: Option<RecState>,
        now: Millis,
    ) -> Option<CallRecord> {
        match state {
            None => Some(r),
            Some(RecState::Undecided) => {
                r.recording = Recording::not_recorded(NO_MEDIA);
                Some(r)
            }
            Some(RecState::NotRecorded(why)) => {
                r.recording = Recording::from(&why);
                Some(r)
            }
            Some(s @ (RecState::Started | RecState::Cut)) => {
                let cut = s == RecState::Cut;
                match self.early.remove(&r.call_id) {
                    Some(f) => {
                        apply(&mut r, f, cut);
                        Some(r)
                    }
                    None => {
                        let deadline = now.saturating_add(WAIT_MS);
                        self.waiting.insert(r.call_id.clone(), (r, deadline, cut));
                        None
                    }
                }
            }
        }
    }

    /// The writer's outcome for a call; returns its record if it waited.
    /// `call_open`: the call has not ended yet, so the outcome waits for
    /// its end. For a call that ended and whose record left already (it
    /// waited [`WAIT_MS`] in vain) the outcome is dropped: kept, it stayed
    /// for good, a few hundred bytes for every late recording (a soak at
    /// 500 calls/s grew by 16 MB a minute).
    pub fn finished(&mut self, call_id: &str, f: Finished, call_open: bool) -> Option<CallRecord> {
        match self.waiting.remove(call_id) {
            Some((mut r, _, cut)) => {
                apply(&mut r, f, cut);
                Some(r)
            }
            None if call_open => {
                self.early.insert(call_id.to_string(), f);
                None
            }
            None => None,
        }
    }

    /// Outcomes waiting for their calls to end.
    pub fn early(&self) -> usize {
        self.early.len()
    }

    /// Records that waited too long (or all of them, at shutdown).
    pub fn expire(&mut self, now: Millis, all: bool) -> Vec<CallRecord> {
        let due: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, (_, d, _))| all || *d <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out: Vec<CallRecord> = due
            .into_iter()
            .filter_map(|k| self.waiting.remove(&k))
            .map(|(mut r, _, _)| {
                r.recording = Recording::not_recorded(LATE);
                r
            })
            .collect();
        out.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        out
    }

    pub fn next_deadline(&self) -> Option<Millis> {
        self.waiting.values().map(|(_, d, _)| *d).min()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::{CallInfo, CallStatus, Party};
    use crate::media::recorder::Dtmf;
    use crate::media::timeline::Side;

    fn record(id: &str) -> CallRecord {
        CallRecord {
            call_id: id.into(),
            info: CallInfo::default(),
            invite_at: 0,
            answer_at: Some(1),
            end_at: 2,
            duration: 0,
            status: CallStatus::Answered,
            hangup: Some(Party::Caller),
            recording: Recording::default(),
            dtmf: Vec::new(),
        }
    }

    #[test]
    fn a_recording_with_lost_packets_cut_short_or_undecoded_is_partial() {
        for (lost, cut, undecoded, want) in [
            (0, false, 0, Recording::Recorded),
            (3, false, 0, Recording::Partial),
            (0, true, 0, Recording::Partial),
            (0, false, 25, Recording::Recorded),
            (0, false, 26, Recording::Partial),
        ] {
            let mut r = record("lost");
            let summary = Summary {
                lost_packets: lost,
                unsupported_packets: undecoded,
                ..Summary::default()
            };
            apply(&mut r, Ok(summary), cut);
            assert_eq!(r.recording, want, "{lost} {cut} {undecoded}");
        }
    }

    /// A recording cut short (media left siptrack mid-call) is partial
    /// whether the writer's outcome came before the call's end or after.
    #[test]
    fn a_cut_recording_is_partial_either_way() {
        let mut r = Records::default();
        assert!(r.finished("early", Ok(Summary::default()), true).is_none());
        let early = r.ended(record("early"), Some(RecState::Cut), 0);
        assert_eq!(early.map(|c| c.recording), Some(Recording::Partial));
        assert!(r.ended(record("late"), Some(RecState::Cut), 0).is_none());
        let late = r.finished("late", Ok(Summary::default()), false);
        assert_eq!(late.map(|c| c.recording), Some(Recording::Partial));
        // Nothing had reached the recorder by then.
        assert!(r.ended(record("none"), Some(RecState::Cut), 0).is_none());
        let none = r.finished("none", Err(NoRecording::NoMedia), false);
        assert_eq!(
            none.map(|c| c.recording),
            Some(Recording::not_recorded(LEFT_BEFORE_MEDIA))
        );
        // Without the cut it is a silent call.
        assert!(r
            .ended(record("silent"), Some(RecState::Started), 0)
            .is_none());
        let silent = r.finished("silent", Err(NoRecording::NoMedia), false);
        assert_eq!(
            silent.map(|c| c.recording),
            Some(Recording::not_recorded("no media received"))
        );
    }

    #[test]
    fn records_get_their_recording_state() {
        let press = Dtmf {
            side: Side::Caller,
            digit: '5',
            at_ms: 100,
            duration_ms: 80,
        };
        let done = || {
            Ok(Summary {
                dtmf: vec![press],
                ..Summary::default()
            })
        };
        let mut r = Records::default();
        // (state at the end, writer outcome before / after, expected)
        let not_handled = r.ended(record("a"), None, 0).expect("at once");
        assert_eq!(not_handled.recording, Recording::default());
        let undecided = r
            .ended(record("b"), Some(RecState::Undecided), 0)
            .expect("at once");
        assert_eq!(undecided.recording, Recording::not_recorded(NO_MEDIA));
        let codec = r
            .ended(
                record("c"),
                Some(RecState::NotRecorded(NoRecording::Codec("G729".into()))),
                0,
            )
            .expect("at once");
        assert_eq!(
            codec.recording,
            Recording::not_recorded("codec not recorded: G729")
        );
        // Started: waits for the writer.
        assert!(r.ended(record("d"), Some(RecState::Started), 0).is_none());
        assert_eq!(r.next_deadline(), Some(WAIT_MS));
        let d = r.finished("d", done(), false).expect("released");
        assert_eq!((d.recording, d.dtmf), (Recording::Recorded, vec![press]));
        // The writer failed before the call ended (file not created).
        assert!(r
            .finished(
                "e",
                Err(NoRecording::Disk("No space left on device".into())),
                true,
            )
            .is_none());
        let e = r
            .ended(record("e"), Some(RecState::Started), 0)
            .expect("at once");
        assert_eq!(
            e.recording,
            Recording::not_recorded("recording file: No space left on device")
        );
        // The writer never answers.
        assert!(r.ended(record("f"), Some(RecState::Started), 100).is_none());
        assert!(r.expire(WAIT_MS + 99, false).is_empty());
        let late = r.expire(WAIT_MS + 100, false);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].recording, Recording::not_recorded(LATE));
        // Its outcome comes after all: the record is gone, nothing is kept.
        assert!(r.finished("f", done(), false).is_none());
        assert_eq!(r.early(), 0);
        assert!(r.ended(record("g"), Some(RecState::Started), 100).is_none());
        assert_eq!(r.expire(0, true).len(), 1, "shutdown takes all");
        assert_eq!(r.waiting(), 0);
    }
}
