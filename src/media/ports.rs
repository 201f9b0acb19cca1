//! RTP/RTCP port pairs from `media.port_min..=port_max`: RTP on the even
//! port, RTCP on the odd one above it (RFC 3550 11). A freed pair goes to
//! the back of the queue and must rest `quarantine_ms` before it is handed
//! out again, so late packets of an ended call never reach a new one.
//! Pure state: the caller passes the time and binds the sockets.

use std::collections::VecDeque;

/// One RTP/RTCP pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortPair {
    pub rtp: u16,
    pub rtcp: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("media port range {min}..{max} holds no even/odd pair")]
    EmptyRange { min: u16, max: u16 },
    /// Every pair is in use or still resting: the call goes unrecorded.
    #[error("no free media ports")]
    Exhausted,
    /// The process may open no more sockets (`ulimit -n`), though ports
    /// are free (trial, 2026-12-02: this read "no free media ports").
    #[error("out of file descriptors (raise the open files limit, ulimit -n)")]
    NoDescriptors,
    /// Every pair tried is held by another program (a range that overlaps
    /// the kernel's ephemeral ports, another media server).
    #[error(
        "the media ports tried are held by other programs (give media a port range of its own)"
    )]
    HeldElsewhere,
}

/// Hands out pairs least recently freed first.
#[derive(Clone, Debug)]
pub struct PortAllocator {
    /// Free pairs by RTP port, with the time each became free (0 = never used).
    free: VecDeque<(u16, u64)>,
    /// Which pairs are out, indexed by (rtp - first) / 2.
    in_use: Vec<bool>,
    first: u16,
    quarantine_ms: u64,
}

impl PortAllocator {
    /// Pairs inside `min..=max`: the first even port ≥ `min`, while its odd
    /// partner is ≤ `max`.
    pub fn new(min: u16, max: u16, quarantine_ms: u64) -> Result<PortAllocator, PortError> {
        let first = min
            .checked_add(min % 2)
            .ok_or(PortError::EmptyRange { min, max })?;
        // u32 so that max = 65535 does not overflow.
        let pairs = if u32::from(first) < u32::from(max) {
            (u32::from(max) - u32::from(first)).div_ceil(2)
        } else {
            0
        };
        if pairs == 0 || first == 0 {
            return Err(PortError::EmptyRange { min, max });
        }
        let free = (0..pairs).map(|i| (first + 2 * i as u16, 0)).collect();
        Ok(PortAllocator {
            free,
            in_use: vec![false; pairs as usize],
            first,
            quarantine_ms,
        })
    }

    /// The next pair, or `Exhausted` when every pair is out or was freed
    /// less than the quarantine ago.
    pub fn allocate(&mut self, now_ms: u64) -> Result<PortPair, PortError> {
        match self.free.front() {
            // The queue is in order of freeing, so if the front is still
            // resting, every pair behind it is too.
            Some(&(rtp, freed))
                if freed == 0 || now_ms.saturating_sub(freed) >= self.quarantine_ms =>
            {
                self.free.pop_front();
                let i = self.index(rtp);
                if let Some(u) = self.in_use.get_mut(i) {
                    *u = true;
                }
                Ok(PortPair { rtp, rtcp: rtp + 1 })
            }
            _ => Err(PortError::Exhausted),
        }
    }

    /// Returns a pair. Pairs not from this allocator, or already free, are
    /// ignored (a double release must not hand one pair to two calls).
    /// `now_ms` must be > 0 for the quarantine to apply.
    pub fn release(&mut self, pair: PortPair, now_ms: u64) {
        if pair.rtp < self.first
            || !pair.rtp.is_multiple_of(2)
            || pair.rtcp != pair.rtp.wrapping_add(1)
        {
            return;
        }
        let i = self.index(pair.rtp);
        match self.in_use.get_mut(i) {
            Some(u) if *u => {
                *u = false;
                self.free.push_back((pair.rtp, now_ms.max(1)));
            }
            _ => {}
        }
    }

    /// Pairs currently handed out.
    pub fn in_use(&self) -> usize {
        self.in_use.len() - self.free.len()
    }

    /// Pairs in the range.
    pub fn capacity(&self) -> usize {
        self.in_use.len()
    }

    fn index(&self, rtp: u16) -> usize {
        usize::from(rtp - self.first) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        // (min, max, Some((first rtp, pairs)) or None for an empty range)
        type Row = (u16, u16, Option<(u16, usize)>);
        let rows: [Row; 8] = [
            (30000, 40000, Some((30000, 5000))),
            (30001, 40000, Some((30002, 4999))),
            (30000, 30001, Some((30000, 1))),
            (30000, 30000, None),
            (30001, 30002, None),
            (40000, 30000, None),
            (65534, 65535, Some((65534, 1))),
            (0, 3, None), // port 0 is "any port" to the OS, never ours
        ];
        for (min, max, want) in rows {
            let got = PortAllocator::new(min, max, 0).map(|a| (a.first, a.capacity()));
            match want {
                Some(w) => assert_eq!(got, Ok(w), "{min}..{max}"),
                None => assert_eq!(got, Err(PortError::EmptyRange { min, max }), "{min}..{max}"),
            }
        }
    }

    #[test]
    fn pairs_are_even_odd_and_distinct_until_exhausted() {
        let mut a = PortAllocator::new(30001, 30010, 0).expect("range");
        let mut seen = Vec::new();
        while let Ok(p) = a.allocate(5) {
            assert_eq!(p.rtp % 2, 0);
            assert_eq!(p.rtcp, p.rtp + 1);
            assert!((30001..=30010).contains(&p.rtp) && p.rtcp <= 30010);
            assert!(!seen.contains(&p));
            seen.push(p);
        }
        assert_eq!(seen.len(), 4);
        assert_eq!(a.allocate(5), Err(PortError::Exhausted));
        assert_eq!(a.in_use(), 4);
    }

    #[test]
    fn freed_pairs_rest_and_come_back_least_recently_freed_first() {
        let mut a = PortAllocator::new(30000, 30005, 1000).expect("range");
        let p1 = a.allocate(10).expect("1");
        let p2 = a.allocate(10).expect("2");
        let p3 = a.allocate(10).expect("3");
        a.release(p2, 100);
        a.release(p1, 200);
        // Still resting: a late packet of the ended call would hit a new one.
        assert_eq!(a.allocate(1099), Err(PortError::Exhausted));
        assert_eq!(a.allocate(1100), Ok(p2));
        assert_eq!(a.allocate(1150), Err(PortError::Exhausted));
        assert_eq!(a.allocate(1200), Ok(p1));
        a.release(p3, 1300);
        assert_eq!(a.allocate(2300), Ok(p3));
    }

    #[test]
    fn double_or_foreign_release_is_ignored() {
        let mut a = PortAllocator::new(30000, 30003, 0).expect("range");
        let p = a.allocate(1).expect("p");
        a.release(p, 2);
        a.release(p, 3);
        a.release(
            PortPair {
                rtp: 30001,
                rtcp: 30002,
            },
            3,
        );
        a.release(
            PortPair {
                rtp: 20000,
                rtcp: 20001,
            },
            3,
        );
        a.release(
            PortPair {
                rtp: 40000,
                rtcp: 40001,
            },
            3,
        );
        let q = a.allocate(4).expect("q");
        let r = a.allocate(4).expect("r");
        assert_ne!(q, r);
        assert_eq!(a.allocate(4), Err(PortError::Exhausted));
    }

    #[test]
    fn a_full_range_allocates_in_time() {
        let mut a = PortAllocator::new(30000, 40000, 0).expect("range");
        for _ in 0..5000 {
            a.allocate(1).expect("pair");
        }
        assert_eq!(a.allocate(1), Err(PortError::Exhausted));
    }
}
