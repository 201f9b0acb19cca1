//! The one clock the program reads. The proxy core runs on monotonic
//! milliseconds (timers must not jump with the wall clock); call records,
//! pool holds, leads and the outbox need Unix time. A [`Now`] carries both,
//! read once, and is passed in; nothing below `server.rs` and the HTTP
//! edge reads the system time itself. `siptrack replay` and tests use a
//! [`Clock::manual`] that they move, so the same input gives the same
//! output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::proxy::Millis;

/// One reading of the time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds since the clock started: the proxy core's time.
    pub mono_ms: Millis,
    /// Unix milliseconds.
    pub unix_ms: u64,
}

impl Now {
    /// Unix milliseconds when the monotonic clock read 0: maps the core's
    /// times (call events) to Unix time.
    pub fn epoch_ms(&self) -> u64 {
        self.unix_ms.saturating_sub(self.mono_ms)
    }
}

#[derive(Clone)]
pub struct Clock(Arc<Source>);

enum Source {
    System {
        start: Instant,
    },
    /// Moved by its owner: (monotonic ms, Unix ms).
    Manual {
        mono: AtomicU64,
        unix: AtomicU64,
    },
}

fn system_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Clock {
    /// The machine's clocks; monotonic time starts now.
    pub fn system() -> Clock {
        Clock(Arc::new(Source::System {
            start: Instant::now(),
        }))
    }

    /// A clock that stands at `unix_ms` (monotonic 0) until [`Clock::set`].
    pub fn manual(unix_ms: u64) -> Clock {
        Clock(Arc::new(Source::Manual {
            mono: AtomicU64::new(0),
            unix: AtomicU64::new(unix_ms),
        }))
    }

    pub fn now(&self) -> Now {
        match &*self.0 {
            Source::System { start } => Now {
                mono_ms: start.elapsed().as_millis() as u64,
                unix_ms: system_unix_ms(),
            },
            Source::Manual { mono, unix } => Now {
                mono_ms: mono.load(Ordering::Relaxed),
                unix_ms: unix.load(Ordering::Relaxed),
            },
        }
    }

    pub fn unix_ms(&self) -> u64 {
        self.now().unix_ms
    }

    /// The monotonic reading of an instant (for the run loop's sleeps).
    pub fn mono_at(&self, at: Instant) -> Option<Millis> {
        match &*self.0 {
            Source::System { start } => {
                Some(at.saturating_duration_since(*start).as_millis() as u64)
            }
            Source::Manual { .. } => None,
        }
    }

    /// The instant of a monotonic reading (system clocks only).
    pub fn instant_of(&self, mono_ms: Millis) -> Option<Instant> {
        match &*self.0 {
            Source::System { start } => Some(*start + std::time::Duration::from_millis(mono_ms)),
            Source::Manual { .. } => None,
        }
    }

    /// Moves a manual clock; a system clock ignores it.
    pub fn set(&self, now: Now) {
        if let Source::Manual { mono, unix } = &*self.0 {
            mono.store(now.mono_ms, Ordering::Relaxed);
            unix.store(now.unix_ms, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_set() {
        let c = Clock::manual(1_700_000_000_000);
        assert_eq!(
            c.now(),
            Now {
                mono_ms: 0,
                unix_ms: 1_700_000_000_000
            }
        );
        let shared = c.clone();
        shared.set(Now {
            mono_ms: 2_500,
            unix_ms: 1_700_000_002_500,
        });
        assert_eq!(c.now().mono_ms, 2_500);
        assert_eq!(c.now().epoch_ms(), 1_700_000_000_000);
        assert_eq!(c.instant_of(10), None);
    }

    #[test]
    fn system_clock_reads_both_times() {
        let c = Clock::system();
        let n = c.now();
        assert!(n.unix_ms > 1_600_000_000_000, "{n:?}");
        assert!(n.mono_ms < 60_000);
        let at = c.instant_of(n.mono_ms).expect("system clock");
        assert_eq!(c.mono_at(at), Some(n.mono_ms));
    }
}
