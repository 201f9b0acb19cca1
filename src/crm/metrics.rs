//! Outbox counters for `GET /metrics` (Prometheus text format). Depth and
//! parked items are read from the store when scraped; the rest is counted
//! here by the worker.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the delivery-latency histogram: from the
/// item's commit to the CRM's 2xx.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0,
];

#[derive(Default)]
pub struct OutboxMetrics {
    attempts: AtomicU64,
    failures: AtomicU64,
    delivered: AtomicU64,
    parked: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_sum_ms: AtomicU64,
}

/// What the store knows at scrape time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    pub pending: i64,
    pub failed: i64,
}

impl OutboxMetrics {
    pub fn attempted(&self, ok: bool) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests attempted so far (delivered or not).
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    pub fn delivered(&self, latency_ms: u64) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ms.fetch_add(latency_ms, Ordering::Relaxed);
        let secs = latency_ms as f64 / 1000.0;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn parked(&self) {
        self.parked.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, depth: Depth) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "siptrack_outbox_pending",
            "gauge",
            "CRM requests waiting to be delivered.",
            depth.pending.to_string(),
        );
        metric(
            "siptrack_outbox_failed",
            "gauge",
            "CRM requests parked as failed after crm.retry.max_age_hours.",
            depth.failed.to_string(),
        );
        metric(
            "siptrack_outbox_attempts_total",
            "counter",
            "Delivery attempts.",
            get(&self.attempts).to_string(),
        );
        metric(
            "siptrack_outbox_failures_total",
            "counter",
            "Delivery attempts that failed (retried later).",
            get(&self.failures).to_string(),
        );
        metric(
            "siptrack_outbox_delivered_total",
            "counter",
            "CRM requests delivered.",
            get(&self.delivered).to_string(),
        );
        metric(
            "siptrack_outbox_parked_total",
            "counter",
            "CRM requests parked as failed since start.",
            get(&self.parked).to_string(),
        );
        let name = "siptrack_outbox_delivery_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From the request's commit to the CRM's 2xx.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (b, n) in BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += get(n);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = get(&self.delivered);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            get(&self.latency_sum_ms) as f64 / 1000.0
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = OutboxMetrics::default();
        m.attempted(false);
        m.attempted(true);
        m.delivered(3);
        m.delivered(70);
        m.delivered(7_200_000);
        m.parked();
        let text = m.render(Depth {
            pending: 5,
            failed: 1,
        });
        for line in [
            "siptrack_outbox_pending 5",
            "siptrack_outbox_failed 1",
            "siptrack_outbox_attempts_total 2",
            "siptrack_outbox_failures_total 1",
            "siptrack_outbox_delivered_total 3",
            "siptrack_outbox_parked_total 1",
            "siptrack_outbox_delivery_seconds_bucket{le=\"0.005\"} 1",
            "siptrack_outbox_delivery_seconds_bucket{le=\"0.05\"} 1",
            "siptrack_outbox_delivery_seconds_bucket{le=\"0.1\"} 2",
            "siptrack_outbox_delivery_seconds_bucket{le=\"3600\"} 2",
            "siptrack_outbox_delivery_seconds_bucket{le=\"+Inf\"} 3",
            "siptrack_outbox_delivery_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
