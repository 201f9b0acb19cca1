//! The CRM account's request limit (amoCRM: 7 requests per second per
//! account, answered with 429 beyond it): a token bucket as GCRA, pure,
//! with the time given by the caller. Requests reserve their start, so
//! concurrent attempts queue up in order instead of racing for tokens.

/// A token bucket of `burst` tokens, one added every `interval_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pacer {
    interval_ms: u64,
    burst: u64,
    /// When the bucket would be full again ("theoretical arrival time").
    tat_ms: u64,
}

/// Slack below the CRM's limit: requests are counted where they arrive,
/// after network jitter; spacing them 10% wider than the limit allows
/// keeps any one second of arrivals within it.
const SLACK_PERCENT: u64 = 10;

impl Pacer {
    pub fn new(interval_ms: u64, burst: u64) -> Pacer {
        Pacer {
            interval_ms: interval_ms.max(1),
            burst: burst.max(1),
            tat_ms: 0,
        }
    }

    /// At most `n` requests in any second, as the CRM counts them: one
    /// token, evenly spaced with `SLACK_PERCENT` to spare (a burst of n
    /// followed by n more evenly would put 2n-1 into one second).
    pub fn per_second(n: u32) -> Pacer {
        let n = u64::from(n.max(1));
        Pacer::new((1000 * (100 + SLACK_PERCENT)).div_ceil(100 * n), 1)
    }

    /// A leaky bucket as the CRM counts it (Bitrix24: 50 requests,
    /// drained at 2 per second, refused beyond): a burst 10% smaller and
    /// a drain 10% slower than the CRM's, so arrivals that bunch up on
    /// the way never fill its bucket.
    pub fn leaky(burst: u32, per_second: u32) -> Pacer {
        let n = u64::from(per_second.max(1));
        let burst = u64::from(burst.max(1));
        Pacer::new(
            (1000 * (100 + SLACK_PERCENT)).div_ceil(100 * n),
            (burst * (100 - SLACK_PERCENT) / 100).max(1),
        )
    }

    /// The spacing of its tokens: `1000 / interval_ms` requests a second
    /// once the burst is spent.
    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// A request that was to start at its reserved time went `ms` later
    /// (a busy machine wakes a sleeper late): the ones after it move by
    /// as much, so the late one and the next cannot arrive closer than
    /// the interval.
    pub fn started_late(&mut self, ms: u64) {
        self.tat_ms = self.tat_ms.saturating_add(ms);
    }

    /// Takes a token for a request at `now_ms` (any monotonic
    /// milliseconds); the answer is how long to wait before sending it.
    pub fn reserve(&mut self, now_ms: u64) -> u64 {
        let start = now_ms.max(
            self.tat_ms
                .saturating_sub((self.burst - 1) * self.interval_ms),
        );
        self.tat_ms = self.tat_ms.max(start) + self.interval_ms;
        start - now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_one_token_per_interval() {
        // (burst, interval, reservations at these times, waits expected)
        for (burst, interval, at, waits) in [
            (1, 100, vec![0, 0, 0, 250, 250], vec![0, 100, 200, 50, 150]),
            (1, 100, vec![0, 500, 500], vec![0, 0, 100]),
            (3, 100, vec![0, 0, 0, 0, 0], vec![0, 0, 0, 100, 200]),
            (3, 100, vec![0, 0, 0, 1_000, 1_000], vec![0, 0, 0, 0, 0]),
            (2, 50, vec![10, 10, 10, 20], vec![0, 0, 50, 90]),
        ] {
            let mut p = Pacer::new(interval, burst);
            let got: Vec<u64> = at.iter().map(|&t| p.reserve(t)).collect();
            assert_eq!(got, waits, "burst {burst} interval {interval} at {at:?}");
        }
    }

    #[test]
    fn a_late_start_moves_the_next_ones() {
        let mut p = Pacer::new(100, 1);
        assert_eq!(p.reserve(0), 0);
        // The first went 80 ms late: the second waits for 180, not 100.
        p.started_late(80);
        assert_eq!(p.reserve(10), 170);
        assert_eq!(p.reserve(10), 270);
    }

    #[test]
    fn per_second_never_puts_more_than_n_into_any_second() {
        for n in [1, 2, 7, 10, 50] {
            let mut p = Pacer::per_second(n);
            // 300 requests all wanting to go at once, and some later.
            let mut starts: Vec<u64> = (0..300u64)
                .map(|i| {
                    let now = if i < 200 { 0 } else { 5_000 + i };
                    now + p.reserve(now)
                })
                .collect();
            starts.sort_unstable();
            for (i, &s) in starts.iter().enumerate() {
                let in_window = starts[i..].iter().take_while(|&&t| t < s + 1_000).count();
                assert!(in_window <= n as usize, "{n}/s: {in_window} from {s} ms");
            }
        }
        assert_eq!(Pacer::per_second(7), Pacer::new(158, 1));
    }

    /// The CRM's leaky bucket: each arrival adds one, `per_second` drain
    /// away; an arrival that finds it full is refused.
    fn overflows(arrivals_ms: &[u64], burst: u32, per_second: u32) -> usize {
        let (mut level, mut last, mut refused) = (0.0f64, 0u64, 0);
        for &t in arrivals_ms {
            level = (level - (t - last) as f64 * f64::from(per_second) / 1000.0).max(0.0);
            last = t;
            if level + 1.0 > f64::from(burst) {
                refused += 1;
            } else {
                level += 1.0;
            }
        }
        refused
    }

    #[test]
    fn leaky_never_fills_the_crms_bucket_even_with_jitter() {
        for (burst, per_second) in [(50, 2), (250, 5), (10, 20), (1, 1)] {
            let mut p = Pacer::leaky(burst, per_second);
            // 1,000 requests wanting to go at once; each arrives up to
            // 40 ms late (network jitter), in a pseudo-random pattern.
            let mut arrivals: Vec<u64> = (0..1_000u64)
                .map(|i| {
                    let start = p.reserve(0);
                    start + (i * 7_919) % 41
                })
                .collect();
            arrivals.sort_unstable();
            assert_eq!(
                overflows(&arrivals, burst, per_second),
                0,
                "{burst}/{per_second}"
            );
        }
        assert_eq!(Pacer::leaky(50, 2), Pacer::new(550, 45));
    }
}
