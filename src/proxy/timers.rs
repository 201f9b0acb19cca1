//! The proxy's timer queue: every armed transaction timer, earliest first.
//!
//! A binary heap was the obvious queue, but under load it holds every
//! held transaction's timers (half a million entries at 5,000 calls/s,
//! Timer J/L/M keep them for 32 s), and each pop sifts through ~19 levels
//! of it, a cache miss a level: the profile of a soak at 4,500 calls/s
//! put `BinaryHeap::pop` at 4.3 % of the process's CPU.
//!
//! Nearly every timer is `now + d` for one of a dozen fixed delays (T1
//! and its doublings, T4, 64·T1, Timer C, 0 on TCP), and `now` only goes
//! forward, so the timers of one delay are armed already in order. The
//! queue keeps sorted runs: an entry is appended to the run whose last
//! entry is the largest not after it (patience sorting), which puts each
//! delay in a run of its own; the earliest timer is the least of the
//! runs' first entries. Push and pop are O(runs), a dozen compares on
//! memory read in order. An entry no run takes when [`MAX_RUNS`] exist
//! goes to a small heap, so any order of pushes is still correct.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::transaction::TimerKind;
use super::Millis;

/// A queue entry: the deadline, then the transaction id with the timer
/// kind in its low 3 bits. 16 B instead of the 24 B of
/// `(Millis, u64, u8)`; a held transaction has several (stale ones
/// included) for its 32 s linger. Ordered as (at, id, kind) was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct TimerEntry {
    pub at: Millis,
    id_kind: u64,
}

impl TimerEntry {
    pub fn new(at: Millis, id: u64, kind: TimerKind) -> TimerEntry {
        // Ids count up from 1 by one per transaction: 2^61 is never reached.
        TimerEntry {
            at,
            id_kind: (id << 3) | kind as u64,
        }
    }
    pub fn id(&self) -> u64 {
        self.id_kind >> 3
    }
    pub fn kind(&self) -> usize {
        (self.id_kind & 7) as usize
    }
}

/// Sorted runs kept; more distinct delays than this go to the heap.
const MAX_RUNS: usize = 24;

#[derive(Debug)]
pub(super) struct TimerQueue {
    /// Each sorted, earliest first. Emptied runs are kept (with their
    /// room) until [`TimerQueue::shrink`]: the TCP run of 0 ms empties and
    /// refills all the time.
    runs: Vec<VecDeque<TimerEntry>>,
    /// What no run took.
    overflow: BinaryHeap<Reverse<TimerEntry>>,
    len: usize,
    max_runs: usize,
    /// How many times [`TimerQueue::rebuild`] ran (tests check the
    /// callers' rebuild rules against it).
    #[cfg(test)]
    rebuilds: u64,
}

impl Default for TimerQueue {
    fn default() -> TimerQueue {
        TimerQueue::with_max_runs(MAX_RUNS)
    }
}

impl TimerQueue {
    fn with_max_runs(max_runs: usize) -> TimerQueue {
        TimerQueue {
            runs: Vec::new(),
            overflow: BinaryHeap::new(),
            len: 0,
            max_runs,
            #[cfg(test)]
            rebuilds: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn push(&mut self, e: TimerEntry) {
        self.len += 1;
        // Best fit: the run whose last entry is the latest one not after
        // `e`; failing that an empty run, then a new one.
        let mut best: Option<(usize, TimerEntry)> = None;
        let mut empty = None;
        for (i, run) in self.runs.iter().enumerate() {
            match run.back() {
                Some(&last) if last <= e && best.is_none_or(|(_, b)| last > b) => {
                    best = Some((i, last))
                }
                None if empty.is_none() => empty = Some(i),
                _ => {}
            }
        }
        let run = match best.map(|(i, _)| i).or(empty) {
            Some(i) => self.runs.get_mut(i),
            None if self.runs.len() < self.max_runs => {
                self.runs.push(VecDeque::new());
                self.runs.last_mut()
            }
            None => None,
        };
        match run {
            Some(run) => run.push_back(e),
            None => self.overflow.push(Reverse(e)),
        }
    }

    /// Where the earliest entry is: a run's index, or `None` for the
    /// overflow heap; and the entry.
    fn earliest(&self) -> Option<(Option<usize>, TimerEntry)> {
        let mut best = self.overflow.peek().map(|&Reverse(e)| (None, e));
        for (i, run) in self.runs.iter().enumerate() {
            if let Some(&first) = run.front() {
                if best.is_none_or(|(_, b)| first < b) {
                    best = Some((Some(i), first));
                }
            }
        }
        best
    }

    /// The earliest deadline.
    pub fn next_at(&self) -> Option<Millis> {
        self.earliest().map(|(_, e)| e.at)
    }

    /// Takes the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Millis) -> Option<TimerEntry> {
        let (place, e) = self.earliest()?;
        if e.at > now {
            return None;
        }
        match place {
            Some(i) => {
                self.runs.get_mut(i)?.pop_front();
            }
            None => {
                self.overflow.pop();
            }
        }
        self.len -= 1;
        Some(e)
    }

    /// How many times the queue was rebuilt.
    #[cfg(test)]
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// Every entry, in no order (for tests that check the queue against
    /// the transactions).
    #[cfg(test)]
    pub fn entries(&self) -> Vec<TimerEntry> {
        let runs = self.runs.iter().flatten().copied();
        runs.chain(self.overflow.iter().map(|r| r.0)).collect()
    }

    /// Replaces the contents with `live` (the disarmed entries swept out).
    pub fn rebuild(&mut self, mut live: Vec<TimerEntry>) {
        #[cfg(test)]
        {
            self.rebuilds += 1;
        }
        live.sort_unstable();
        self.len = live.len();
        self.runs.clear();
        self.runs.push(VecDeque::from(live));
        self.overflow.clear();
    }

    /// Gives back room grown at a load peak; drops emptied runs.
    pub fn shrink(&mut self) {
        self.runs.retain(|r| !r.is_empty());
        for run in &mut self.runs {
            if run.len() * 4 < run.capacity() {
                run.shrink_to_fit();
            }
        }
        self.runs.shrink_to_fit();
        if self.overflow.len() * 4 < self.overflow.capacity() {
            self.overflow.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the queue must do: what a heap does.
    #[derive(Default)]
    struct Oracle(BinaryHeap<Reverse<TimerEntry>>);

    impl Oracle {
        fn pop_due(&mut self, now: Millis) -> Option<TimerEntry> {
            match self.0.peek() {
                Some(&Reverse(e)) if e.at <= now => {
                    self.0.pop();
                    Some(e)
                }
                _ => None,
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Arm at now + delay.
        Arm(u64, Millis, u8),
        /// Arm at an absolute time (behind `now` too).
        ArmAt(u64, Millis, u8),
        /// Let time pass and fire what is due.
        Advance(Millis),
        Rebuild,
        Shrink,
    }

    fn kind(k: u8) -> TimerKind {
        [
            TimerKind::ClientRetransmit,
            TimerKind::ClientTimeout,
            TimerKind::TimerC,
        ][k as usize % 3]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1u64..50, prop::sample::select(vec![0u64, 500, 1000, 2000, 4000, 5000, 32000, 180000]), 0u8..3)
                .prop_map(|(id, d, k)| Op::Arm(id, d, k)),
            1 => (1u64..50, 0u64..300_000, 0u8..3).prop_map(|(id, at, k)| Op::ArmAt(id, at, k)),
            3 => (0u64..40_000).prop_map(Op::Advance),
            1 => Just(Op::Rebuild),
            1 => Just(Op::Shrink),
        ]
    }

    /// Runs `ops` on a queue of at most `max_runs` runs and on the heap;
    /// every pop, the length and the next deadline must agree.
    fn agree(ops: &[Op], max_runs: usize) {
        let mut q = TimerQueue::with_max_runs(max_runs);
        let mut o = Oracle::default();
        let mut now = 0;
        for op in ops {
            match *op {
                Op::Arm(id, d, k) => {
                    let e = TimerEntry::new(now + d, id, kind(k));
                    q.push(e);
                    o.0.push(Reverse(e));
                }
                Op::ArmAt(id, at, k) => {
                    let e = TimerEntry::new(at, id, kind(k));
                    q.push(e);
                    o.0.push(Reverse(e));
                }
                Op::Advance(d) => {
                    now += d;
                    loop {
                        let (a, b) = (q.pop_due(now), o.pop_due(now));
                        assert_eq!(a, b, "at {now}");
                        if a.is_none() {
                            break;
                        }
                    }
                }
                Op::Rebuild => {
                    let live: Vec<TimerEntry> = o.0.iter().map(|&Reverse(e)| e).collect();
                    q.rebuild(live);
                }
                Op::Shrink => q.shrink(),
            }
            assert_eq!(q.len(), o.0.len());
            assert_eq!(q.next_at(), o.0.peek().map(|&Reverse(e)| e.at));
        }
    }

    proptest! {
        #[test]
        fn pops_in_the_order_a_heap_does(ops in prop::collection::vec(op(), 0..200)) {
            agree(&ops, MAX_RUNS);
        }

        /// Few runs: most entries go through the overflow heap.
        #[test]
        fn pops_in_order_with_the_overflow_in_use(ops in prop::collection::vec(op(), 0..200)) {
            agree(&ops, 2);
        }
    }

    /// The delays of a call's timers each get a run; none overflows, and
    /// the runs stay as few as the distinct delays.
    #[test]
    fn each_delay_keeps_a_run_of_its_own() {
        let delays = [0, 500, 1000, 2000, 4000, 5000, 32000, 180000];
        let mut q = TimerQueue::default();
        for now in 0..2000u64 {
            for (i, d) in delays.iter().enumerate() {
                q.push(TimerEntry::new(
                    now + d,
                    now * 8 + i as u64,
                    TimerKind::ServerLinger,
                ));
            }
            while q.pop_due(now).is_some() {}
        }
        assert!(q.runs.len() <= delays.len(), "{} runs", q.runs.len());
        assert!(q.overflow.is_empty());
    }

    /// Entries at the same instant come out by transaction id, then kind,
    /// as they did from the heap.
    #[test]
    fn ties_come_out_by_id_then_kind() {
        let mut q = TimerQueue::default();
        let table = [
            (5, 2, TimerKind::ClientTimeout),
            (5, 1, TimerKind::ServerLinger),
            (5, 2, TimerKind::ClientRetransmit),
            (4, 9, TimerKind::TimerC),
        ];
        for (at, id, k) in table {
            q.push(TimerEntry::new(at, id, k));
        }
        let order: Vec<(u64, u64, usize)> = std::iter::from_fn(|| q.pop_due(5))
            .map(|e| (e.at, e.id(), e.kind()))
            .collect();
        assert_eq!(
            order,
            vec![
                (4, 9, TimerKind::TimerC as usize),
                (5, 1, TimerKind::ServerLinger as usize),
                (5, 2, TimerKind::ClientRetransmit as usize),
                (5, 2, TimerKind::ClientTimeout as usize),
            ]
        );
    }
}
