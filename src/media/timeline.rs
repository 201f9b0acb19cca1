//! Places each direction's decoded audio on one 8 kHz timeline by RTP
//! timestamp, and streams the two as interleaved stereo frames.
//!
//! A direction's first packet (and the first after an SSRC change or a
//! timestamp jump) is placed at its arrival time; later packets by their
//! RTP timestamp relative to that base, so network jitter does not move
//! audio. Lost packets leave silence. Packets may arrive out of order by
//! up to [`REORDER_WINDOW`]: frames are only written once the newest audio
//! of either side is that far ahead of them, so each direction holds at
//! most a window of samples, whatever the call length. Later packets are
//! dropped and counted, except a direction's newest packet: a direction
//! that fell behind as a whole (its path's delay grew, or its sender's
//! clock runs slow) gets a new base instead, a little before its arrival,
//! rather than losing the rest of the call (trial, 2026-12-02: a 300 ms
//! delay step on one side silenced it until the call ended).

use std::collections::VecDeque;

/// Samples per second.
pub const RATE: u64 = 8000;
/// How late a packet may be (behind the newest audio of either side) and
/// still be placed: 200 ms, ten 20 ms packets.
pub const REORDER_WINDOW: u64 = 1600;
/// A timestamp that puts audio more than 1 s away from its arrival time
/// is a jump (a new source behind the same SSRC, a sender that kept its
/// clock across hold): the stream gets a new base.
pub const MAX_SKEW: i64 = 8000;
/// Frames handed to the sink per call, so gaps are written in bounded pieces.
pub const FRAMES_PER_WRITE: usize = 512;

/// Left channel: the caller's audio; right: the callee's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Caller = 0,
    Callee = 1,
}

#[derive(Clone, Copy, Debug)]
struct Base {
    ssrc: u32,
    timestamp: u32,
    pos: i64,
}

#[derive(Clone, Debug, Default)]
struct Channel {
    base: Option<Base>,
    /// One past the newest sample placed from this base: a packet that
    /// starts there or later is the direction's newest, not a reordered one.
    newest_end: i64,
    /// Samples from the timeline's `written` position on.
    pending: VecDeque<i16>,
}

/// What happened to one direction's packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SideStats {
    pub packets: u64,
    /// Samples that arrived after their place was written.
    pub late_samples: u64,
    /// New bases after the first: SSRC changes and timestamp jumps.
    pub rebases: u64,
}

/// Both directions of one call.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    ch: [Channel; 2],
    stats: [SideStats; 2],
    /// Frames handed to the sink so far.
    written: u64,
    /// One past the newest sample placed on either side.
    head: u64,
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline::default()
    }

    /// Places one packet's decoded `samples`. `arrival` is when it came, in
    /// samples since the recording started (ms × 8). Frames that are now
    /// final go to `sink` as interleaved left/right samples.
    pub fn push<E>(
        &mut self,
        side: Side,
        ssrc: u32,
        timestamp: u32,
        samples: &[i16],
        arrival: u64,
        sink: &mut impl FnMut(&[i16]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.stats[side as usize].packets += 1;
        let mut pos = self.place(side, ssrc, timestamp, arrival);
        let ch = &mut self.ch[side as usize];
        ch.newest_end = ch.newest_end.max(pos + samples.len() as i64);
        // Chunks no longer than the window keep `pending` within it.
        for chunk in samples.chunks(REORDER_WINDOW as usize) {
            let len = chunk.len() as i64;
            let end = pos + len;
            if end > 0 {
                self.head = self.head.max(end as u64);
            }
            if self.head > self.written + REORDER_WINDOW {
                self.flush_to(self.head - REORDER_WINDOW, sink)?;
            }
            // Samples before what is written (or before the recording's
            // start) are late.
            let skip = (self.written as i64 - pos).clamp(0, len) as usize;
            self.stats[side as usize].late_samples += skip as u64;
            let pending = &mut self.ch[side as usize].pending;
            for (k, &s) in chunk.iter().enumerate().skip(skip) {
                let idx = (pos + k as i64 - self.written as i64) as usize;
                if pending.len() <= idx {
                    pending.resize(idx + 1, 0);
                }
                pending[idx] = s;
            }
            pos = end;
        }
        Ok(())
    }

    /// Writes everything placed so far; call at the end of the call.
    pub fn finish<E>(&mut self, sink: &mut impl FnMut(&[i16]) -> Result<(), E>) -> Result<(), E> {
        self.flush_to(self.head, sink)
    }

    /// [`Timeline::finish`], then silence up to `end` (samples since the
    /// recording started) when the last audio came before it.
    pub fn finish_at<E>(
        &mut self,
        end: u64,
        sink: &mut impl FnMut(&[i16]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.flush_to(self.head.max(end), sink)
    }

    /// Frames written so far (the recording's length in samples).
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn stats(&self, side: Side) -> SideStats {
        self.stats[side as usize]
    }

    /// Samples held back for reordering, both sides (bounded by the window).
    pub fn buffered(&self) -> usize {
        self.ch[0].pending.len() + self.ch[1].pending.len()
    }

    /// The timeline position of a packet's first sample (negative for a
    /// reordered packet from before the recording's start).
    fn place(&mut self, side: Side, ssrc: u32, timestamp: u32, arrival: u64) -> i64 {
        let written = self.written as i64;
        let (ch, stats) = (&mut self.ch[side as usize], &mut self.stats[side as usize]);
        let mut pos = arrival.max(self.written) as i64;
        if let Some(b) = ch.base {
            if b.ssrc == ssrc {
                // Signed distance: reordered packets sit before the base,
                // and the 32-bit timestamp may wrap.
                let d = i64::from(timestamp.wrapping_sub(b.timestamp) as i32);
                let by_timestamp = b.pos + d;
                let lagging = by_timestamp < written && by_timestamp >= ch.newest_end;
                if (by_timestamp - arrival as i64).abs() <= MAX_SKEW && !lagging {
                    return by_timestamp;
                }
                if lagging {
                    // Half a window before its arrival: room for the
                    // jitter of the packets after it.
                    pos = (arrival.saturating_sub(REORDER_WINDOW / 2) as i64).max(written);
                }
            }
            stats.rebases += 1;
        }
        // Never before what is written: a new stream is not late.
        ch.base = Some(Base {
            ssrc,
            timestamp,
            pos,
        });
        ch.newest_end = pos;
        pos
    }

    fn flush_to<E>(
        &mut self,
        upto: u64,
        sink: &mut impl FnMut(&[i16]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut frames = [0i16; 2 * FRAMES_PER_WRITE];
        while self.written < upto {
            let n = (upto - self.written).min(FRAMES_PER_WRITE as u64) as usize;
            for i in 0..n {
                frames[2 * i] = self.ch[0].pending.pop_front().unwrap_or(0);
                frames[2 * i + 1] = self.ch[1].pending.pop_front().unwrap_or(0);
            }
            sink(&frames[..2 * n])?;
            self.written += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// Runs pushes (side, ssrc, timestamp, samples, arrival) and returns the
    /// (left, right) channels after finish.
    fn run(t: &mut Timeline, pushes: &[(Side, u32, u32, Vec<i16>, u64)]) -> (Vec<i16>, Vec<i16>) {
        let (mut l, mut r) = (Vec::new(), Vec::new());
        let mut sink = |f: &[i16]| -> Result<(), Infallible> {
            assert!(f.len() <= 2 * FRAMES_PER_WRITE);
            for p in f.chunks(2) {
                l.push(p[0]);
                r.push(p[1]);
            }
            Ok(())
        };
        for (side, ssrc, ts, s, arrival) in pushes {
            let Ok(()) = t.push(*side, *ssrc, *ts, s, *arrival, &mut sink);
            assert!(t.buffered() <= 2 * REORDER_WINDOW as usize);
        }
        let Ok(()) = t.finish(&mut sink);
        (l, r)
    }

    fn tone(v: i16, n: usize) -> Vec<i16> {
        vec![v; n]
    }

    use Side::{Callee, Caller};

    #[test]
    fn placement_table() {
        // (name, pushes, expected left as runs of (value, count), expected right, late, rebases)
        type Run = &'static [(i16, usize)];
        type Row = (
            &'static str,
            Vec<(Side, u32, u32, Vec<i16>, u64)>,
            Run,
            Run,
            u64,
            u64,
        );
        let rows: Vec<Row> = vec![
            (
                "in order",
                vec![
                    (Caller, 1, 1000, tone(1, 160), 0),
                    (Caller, 1, 1160, tone(2, 160), 160),
                ],
                &[(1, 160), (2, 160)],
                &[(0, 320)],
                0,
                0,
            ),
            (
                "jitter does not move audio: timestamps rule",
                vec![
                    (Caller, 1, 0, tone(1, 160), 0),
                    (Caller, 1, 160, tone(2, 160), 900),
                ],
                &[(1, 160), (2, 160)],
                &[(0, 320)],
                0,
                0,
            ),
            (
                "reordered within the window",
                vec![
                    (Caller, 1, 0, tone(1, 160), 0),
                    (Caller, 1, 320, tone(3, 160), 320),
                    (Caller, 1, 160, tone(2, 160), 330),
                ],
                &[(1, 160), (2, 160), (3, 160)],
                &[(0, 480)],
                0,
                0,
            ),
            (
                "lost packet is silence",
                vec![
                    (Caller, 1, 0, tone(1, 160), 0),
                    (Caller, 1, 320, tone(3, 160), 320),
                ],
                &[(1, 160), (0, 160), (3, 160)],
                &[(0, 480)],
                0,
                0,
            ),
            (
                "too late for the window: dropped and counted",
                vec![
                    (Caller, 1, 0, tone(1, 160), 0),
                    (Caller, 1, 4000, tone(3, 160), 4000),
                    (Caller, 1, 160, tone(2, 160), 4010),
                ],
                &[(1, 160), (0, 3840), (3, 160)],
                &[(0, 4160)],
                160,
                0,
            ),
            (
                "callee starts later: right channel aligned by arrival",
                vec![
                    (Caller, 1, 0, tone(1, 320), 0),
                    (Callee, 9, 77777, tone(5, 160), 160),
                ],
                &[(1, 320)],
                &[(0, 160), (5, 160)],
                0,
                0,
            ),
            (
                "SSRC change: new base at arrival",
                vec![
                    (Caller, 1, 0, tone(1, 160), 0),
                    (Caller, 2, 5, tone(2, 160), 480),
                ],
                &[(1, 160), (0, 320), (2, 160)],
                &[(0, 640)],
                0,
                1,
            ),
            (
                "timestamp jump: new base at arrival",
                vec![
                    (Caller, 1, 0, tone(1, 160), 0),
                    (Caller, 1, 3_000_000, tone(2, 160), 160),
                    (Caller, 1, 3_000_160, tone(3, 160), 320),
                ],
                &[(1, 160), (2, 160), (3, 160)],
                &[(0, 480)],
                0,
                1,
            ),
            (
                "first packet overtaken at the very start: the earlier one is late",
                vec![
                    (Caller, 1, 160, tone(2, 160), 0),
                    (Caller, 1, 0, tone(1, 160), 5),
                ],
                &[(2, 160)],
                &[(0, 160)],
                160,
                0,
            ),
            (
                "timestamp wraps",
                vec![
                    (Caller, 1, u32::MAX - 79, tone(1, 160), 0),
                    (Caller, 1, 80, tone(2, 160), 160),
                ],
                &[(1, 160), (2, 160)],
                &[(0, 320)],
                0,
                0,
            ),
        ];
        for (name, pushes, left, right, late, rebases) in rows {
            let mut t = Timeline::new();
            let (l, r) = run(&mut t, &pushes);
            let expand = |runs: &[(i16, usize)]| -> Vec<i16> {
                runs.iter()
                    .flat_map(|&(v, n)| std::iter::repeat_n(v, n))
                    .collect()
            };
            assert_eq!(l, expand(left), "{name}: left");
            assert_eq!(r, expand(right), "{name}: right");
            assert_eq!(t.stats(Caller).late_samples, late, "{name}: late");
            assert_eq!(t.stats(Caller).rebases, rebases, "{name}: rebases");
        }
    }

    /// Both sides talk in 20 ms packets for `packets` packets; the
    /// caller's packet `i` arrives `caller_delay(i)` samples late. Returns
    /// the caller's samples in the recording that are its tone, and the
    /// timeline.
    fn caller_kept(packets: u32, caller_delay: impl Fn(u32) -> u64) -> (usize, Timeline) {
        let mut pushes: Vec<_> = (0..packets)
            .flat_map(|i| {
                let at = u64::from(i) * 160;
                [
                    (Callee, 9, i * 160, tone(5, 160), at),
                    (Caller, 1, i * 160, tone(1, 160), at + caller_delay(i)),
                ]
            })
            .collect();
        // In arrival order, as the relay hands them over.
        pushes.sort_by_key(|p| p.4);
        let mut t = Timeline::new();
        let (l, _) = run(&mut t, &pushes);
        (l.iter().filter(|&&s| s == 1).count(), t)
    }

    /// A side whose packets all come later from some point on (a path's
    /// delay step between the window and the jump limit) or drift behind
    /// (a slow clock) is rebased, not dropped for the rest of the call.
    #[test]
    fn a_side_that_falls_behind_as_a_whole_keeps_its_audio() {
        let all = 300 * 160;
        for (name, delay) in [
            ("no delay", Box::new(|_| 0u64) as Box<dyn Fn(u32) -> u64>),
            (
                "300 ms step",
                Box::new(|i| if i >= 100 { 2_400 } else { 0 }),
            ),
            (
                "600 ms step",
                Box::new(|i| if i >= 100 { 4_800 } else { 0 }),
            ),
            // 1.25 % slow: 2 samples later each packet, 600 behind at the end.
            ("slow clock", Box::new(|i| u64::from(i) * 2)),
        ] {
            let (kept, t) = caller_kept(300, delay);
            assert_eq!(kept, all, "{name}: the caller's audio");
            assert_eq!(t.stats(Caller).late_samples, 0, "{name}");
        }
        // Reordering within a side is still placed by timestamp.
        let (kept, t) = caller_kept(300, |i| if i % 10 == 3 { 320 } else { 0 });
        assert_eq!((kept, t.stats(Caller).rebases), (all, 0));
    }

    #[test]
    fn memory_stays_bounded_over_a_long_call_and_a_long_gap() {
        let mut t = Timeline::new();
        let mut frames = 0u64;
        let mut sink = |f: &[i16]| -> Result<(), Infallible> {
            frames += f.len() as u64 / 2;
            Ok(())
        };
        // Two minutes of 20 ms packets both ways, then a two-minute silence.
        for i in 0..6_000u32 {
            for side in [Caller, Callee] {
                let Ok(()) = t.push(side, 7, i * 160, &[100; 160], u64::from(i) * 160, &mut sink);
            }
            assert!(t.buffered() <= 2 * (REORDER_WINDOW as usize + 160));
        }
        let gap = 6_000u64 * 160 + 8000 * 120;
        let Ok(()) = t.push(Caller, 7, gap as u32, &[1; 160], gap, &mut sink);
        let Ok(()) = t.finish(&mut sink);
        assert_eq!(frames, gap + 160);
        assert_eq!(t.written(), gap + 160);
    }

    #[test]
    fn sink_errors_stop_the_flush() {
        let mut t = Timeline::new();
        let mut sink = |_: &[i16]| -> Result<(), &'static str> { Err("disk full") };
        assert_eq!(
            t.push(Caller, 1, 0, &[1; 4000], 0, &mut sink),
            Err("disk full")
        );
    }
}
