//! Delivers the outbox (SPEC C-5): takes the due items, posts them with at
//! most `crm.max_connections` in flight, and settles every attempt in one
//! transaction per round: delivered, retried later with backoff, or parked
//! after `crm.retry.max_age_hours`. A crash between the CRM's answer and
//! the settle sends the item again with the same Idempotency-Key: delivery
//! is at least once, never zero.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::adapter::{serial_groups, Answer, CrmAdapter, Outcome, Step, MAX_STEPS};
use super::amocrm::AmoCrm;
use super::bitrix24::Bitrix24;
use super::metrics::OutboxMetrics;
use super::rate::Pacer;
use super::transport::{NoAnswer, Transport};
use super::webhook::Webhook;
use crate::clock::Clock;
use crate::config::CrmDelivery;
use crate::recording::links::{fill_crm_link, LinkSettings};
use crate::store::outbox::{DueItem, Settle};
use crate::store::Store;

/// The longest the worker sleeps without looking at the queue.
const IDLE_POLL: Duration = Duration::from_secs(1);
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// The account's limit, shared by every attempt of this worker.
struct Pace {
    /// Held while a request waits for its start (tokio's mutex is fair:
    /// requests start in the order they asked), so a start that comes
    /// late moves the next ones before they reserve theirs.
    pacer: tokio::sync::Mutex<Pacer>,
    epoch: Instant,
}

impl Pace {
    /// Reserves the next request's start and sleeps until it.
    async fn wait_turn(&self) {
        let mut pacer = self.pacer.lock().await;
        let now = self.epoch.elapsed().as_millis() as u64;
        let wait = pacer.reserve(now);
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        let woke = self.epoch.elapsed().as_millis() as u64;
        pacer.started_late(woke.saturating_sub(now + wait));
    }
}

/// How long the CRM is left alone after a rate-limit answer without a
/// Retry-After.
const RATE_LIMIT_HOLD_MS: i64 = 1_000;

/// A CRM's rate limit is its account's, not one request's: after a 429
/// (or Bitrix24's `QUERY_LIMIT_EXCEEDED`) no request of this worker goes
/// out until its Retry-After has passed (trial, 2026-12-03: the other
/// leads' requests went on at once, and amoCRM blocks an address that
/// keeps going past its limit). Unix ms; 0 when not held.
#[derive(Default)]
struct Hold(std::sync::atomic::AtomicI64);

impl Hold {
    /// How long requests must still wait at `now`, if at all.
    fn remaining(&self, now: i64) -> Option<i64> {
        let until = self.0.load(std::sync::atomic::Ordering::Relaxed);
        (until > now).then_some(until - now)
    }

    /// Holds until `until`, unless already held longer.
    fn until(&self, until: i64) {
        self.0
            .fetch_max(until, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether an answer says the account is over its rate limit.
fn rate_limited(a: &Answer) -> bool {
    a.status == 429 || (a.status == 503 && a.body.windows(20).any(|w| w == b"QUERY_LIMIT_EXCEEDED"))
}

/// What an attempt came to, and the least its retry waits (ms): a
/// request the CRM may still be applying ([`NoAnswer::maybe_applied`])
/// is given time to finish before it is looked up again.
type Attempted = (Outcome, Option<u64>);

/// One attempt at an item: the adapter's requests, one after another,
/// until it finishes; no answer at all is a retry.
async fn attempt(
    adapter: &dyn CrmAdapter,
    transport: &Transport,
    (pace, hold): (Option<&Pace>, &Hold),
    clock: &Clock,
    item: &DueItem,
) -> Attempted {
    let mut step = adapter.start(item, clock.unix_ms() as i64);
    for _ in 0..MAX_STEPS {
        let request = match step {
            Step::Finish(outcome) => return (outcome, None),
            Step::Send(r) => r,
        };
        if let Some(p) = pace {
            p.wait_turn().await;
        }
        // Not slept through: the item's claim would run out meanwhile.
        if let Some(left) = hold.remaining(clock.unix_ms() as i64) {
            let outcome = Outcome::Retry {
                error: format!("the CRM's rate limit: no request for {left} ms (HTTP 429)"),
                retry_after_ms: Some(left as u64),
            };
            return (outcome, None);
        }
        let answer = match transport.send(&request).await {
            Ok(a) => a,
            Err(NoAnswer {
                error,
                maybe_applied,
            }) => {
                let outcome = Outcome::Retry {
                    error,
                    retry_after_ms: None,
                };
                return (outcome, maybe_applied.then(|| transport.settle_ms()));
            }
        };
        step = adapter.next(item, &request, &answer, clock.unix_ms() as i64);
        if rate_limited(&answer) {
            let wait = match &step {
                Step::Finish(Outcome::Retry {
                    retry_after_ms: Some(ms),
                    ..
                }) => *ms as i64,
                _ => RATE_LIMIT_HOLD_MS,
            };
            hold.until(clock.unix_ms() as i64 + wait);
        }
    }
    let outcome = match step {
        Step::Finish(outcome) => outcome,
        Step::Send(r) => Outcome::Retry {
            error: format!(
                "more than {MAX_STEPS} requests for one item (next: {})",
                r.stage
            ),
            retry_after_ms: None,
        },
    };
    (outcome, None)
}

/// What to record for one attempt.
fn settle(
    cfg: &CrmDelivery,
    item: &DueItem,
    (outcome, at_least_ms): Attempted,
    now: i64,
) -> Settle {
    // The CRM's id of the deal this item created, when it made one.
    let created = |deal_id: Option<String>| match (item.is_deal_create(), item.deal_ref, deal_id) {
        (true, Some(deal), Some(id)) => Some((deal, id)),
        _ => None,
    };
    let (error, retry_after_ms, crm_deal) = match outcome {
        Outcome::Delivered { deal_id } => {
            return Settle::Done {
                crm_deal: created(deal_id),
            }
        }
        Outcome::GiveUp { reason } => {
            return Settle::Park {
                error: reason,
                crm_deal: None,
            }
        }
        Outcome::Retry {
            error,
            retry_after_ms,
        } => (error, retry_after_ms, None),
        Outcome::Partly {
            deal_id,
            error,
            retry_after_ms,
        } => (error, retry_after_ms, created(Some(deal_id))),
    };
    if cfg.retry.expired(item.created_at, now) {
        return Settle::Park { error, crm_deal };
    }
    let delay = cfg
        .retry
        .delay_ms(item.attempts + 1, retry_after_ms, fastrand::f64())
        .max(at_least_ms.unwrap_or(0));
    Settle::Retry {
        error,
        next_at: now.saturating_add(delay as i64),
        crm_deal,
    }
}

/// Items claimed per round: enough to keep every connection busy for a
/// few requests each, few enough that a round ends well within its lease.
fn claim_size(max_connections: usize) -> usize {
    max_connections * 4
}

/// How long a round's claim holds (ms): every item of the round taking
/// its longest (`MAX_STEPS` requests of `timeout_ms` each, the items one
/// connection-slot after another, and the account's pace), plus a
/// margin. Another node takes the items over only after it, so it is the
/// delay before a dead node's items are delivered elsewhere.
fn lease_ms(timeout_ms: u64, max_connections: usize, items: usize, per_second: Option<u32>) -> i64 {
    let rounds = items.div_ceil(max_connections.max(1)) as u64;
    let requests = (items * MAX_STEPS) as u64;
    let paced = per_second.map_or(0, |n| requests * 1000 / u64::from(n.max(1)));
    (rounds * MAX_STEPS as u64 * timeout_ms + paced + 30_000) as i64
}

/// Runs until the process ends. `links`: how recording links are made
/// (None: requests go without them).
pub async fn run(
    store: Store,
    cfg: Arc<CrmDelivery>,
    metrics: Arc<OutboxMetrics>,
    links: Option<Arc<LinkSettings>>,
) {
    let clock = store.clock();
    let adapter: Arc<dyn CrmAdapter> = match (&cfg.amocrm, &cfg.bitrix24) {
        (Some(settings), _) => Arc::new(AmoCrm {
            settings: settings.clone(),
        }),
        (None, Some(settings)) => Arc::new(Bitrix24 {
            settings: settings.clone(),
        }),
        (None, None) => Arc::new(Webhook {
            url: cfg.url.clone(),
            call_start_url: cfg.call_start_url.clone(),
            call_end_url: cfg.call_end_url.clone(),
            secret: cfg.secret.as_bytes().to_vec(),
        }),
    };
    let pace = adapter.pacer().map(|pacer| {
        Arc::new(Pace {
            pacer: tokio::sync::Mutex::new(pacer),
            epoch: Instant::now(),
        })
    });
    let transport = match Transport::new(Duration::from_millis(cfg.timeout_ms), cfg.max_connections)
    {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "CRM sender not started; requests stay queued");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let hold = Arc::new(Hold::default());
    let batch = claim_size(cfg.max_connections);
    let lease = lease_ms(
        cfg.timeout_ms,
        cfg.max_connections,
        batch,
        // The pacer's steady rate bounds how fast a batch can go.
        adapter
            .pacer()
            .map(|p| (1000 / p.interval_ms()).max(1) as u32),
    );
    let node = store.node_id().to_string();
    let mut purged = Instant::now();
    loop {
        let claimed = store
            .outbox_claim(&node, clock.unix_ms() as i64, lease, batch as i64)
            .await;
        let due = match claimed {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "reading the CRM outbox");
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
        };
        if due.is_empty() {
            if purged.elapsed() >= PURGE_EVERY {
                purged = Instant::now();
                if let Err(e) = store.outbox_purge(clock.unix_ms() as i64).await {
                    tracing::warn!(error = %e, "purging delivered CRM requests");
                }
            }
            let wait = match store.outbox_next_due().await {
                Ok(Some(at)) => Duration::from_millis((at - clock.unix_ms() as i64).max(1) as u64)
                    .min(IDLE_POLL),
                _ => IDLE_POLL,
            };
            tokio::select! {
                _ = store.outbox_ready().notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let mut inflight = JoinSet::new();
        // The recording link, made now (SPEC C-2, C-2a).
        let now_s = clock.unix_ms() / 1000;
        let due: Vec<DueItem> = due
            .into_iter()
            .map(|mut item| {
                item.body = fill_crm_link(&item.body, item.target, links.as_deref(), now_s);
                item
            })
            .collect();
        let count = due.len();
        for group in serial_groups(due, |i| adapter.serial_key(i)) {
            let (adapter, transport, slots, clock, pace, hold) = (
                adapter.clone(),
                transport.clone(),
                slots.clone(),
                clock.clone(),
                pace.clone(),
                hold.clone(),
            );
            inflight.spawn(async move {
                let mut done = Vec::with_capacity(group.len());
                for item in group {
                    let _slot = slots.clone().acquire_owned().await;
                    let outcome = attempt(
                        adapter.as_ref(),
                        &transport,
                        (pace.as_deref(), &hold),
                        &clock,
                        &item,
                    )
                    .await;
                    done.push((item, outcome));
                }
                done
            });
        }
        let mut results = Vec::with_capacity(count);
        let mut attempted = Vec::with_capacity(count);
        while let Some(done) = inflight.join_next().await {
            // A panicked attempt: its items stay pending.
            attempted.extend(done.into_iter().flatten());
        }
        for (item, outcome) in attempted {
            let now = clock.unix_ms() as i64;
            let ok = matches!(outcome.0, Outcome::Delivered { .. });
            metrics.attempted(ok);
            let s = settle(&cfg, &item, outcome, now);
            match &s {
                Settle::Done { .. } => metrics.delivered((now - item.created_at).max(0) as u64),
                Settle::Retry { error, next_at, .. } => {
                    if item.attempts == 0 {
                        tracing::warn!(key = %item.key, error = %error, retry_in_ms = next_at - now, "CRM request failed; retrying");
                    } else {
                        tracing::debug!(key = %item.key, attempt = item.attempts + 1, error = %error, "CRM request failed again");
                    }
                }
                Settle::Park { error, .. } => {
                    metrics.parked();
                    tracing::error!(key = %item.key, attempts = item.attempts + 1, error = %error, "CRM request parked as failed (refused by the CRM, or still failing after crm.retry.max_age_hours)");
                }
            }
            results.push((item.id, s));
        }
        let mut wait = Duration::from_millis(100);
        while let Err(e) = store
            .outbox_settle(&node, &results, clock.unix_ms() as i64)
            .await
        {
            tracing::error!(error = %e, "recording CRM delivery results; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(IDLE_POLL * 10);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::outbox::{Retry, Target};

    fn cfg() -> CrmDelivery {
        CrmDelivery {
            retry: Retry {
                initial_ms: 1_000,
                max_ms: 10_000,
                max_age_hours: 1,
            },
            ..CrmDelivery::default()
        }
    }

    fn item(event: &str, attempts: u32, created_at: i64) -> DueItem {
        DueItem {
            id: 1,
            target: Target::Lead,
            key: "k".into(),
            event: event.into(),
            body: "{}".into(),
            attempts,
            created_at,
            deal_ref: Some(4),
            crm_deal_id: None,
            deal_created_here: true,
        }
    }

    #[test]
    fn a_rate_limit_holds_every_request_until_it_passes() {
        let answer = |status: u16, body: &str| Answer {
            status,
            retry_after: None,
            content_type: None,
            body: body.as_bytes().to_vec(),
        };
        for (a, limited) in [
            (answer(429, ""), true),
            (
                answer(
                    503,
                    r#"{"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"}"#,
                ),
                true,
            ),
            (answer(503, "down for maintenance"), false),
            (answer(500, ""), false),
            (answer(200, "{}"), false),
        ] {
            assert_eq!(rate_limited(&a), limited, "{} {:?}", a.status, a.body);
        }
        let hold = Hold::default();
        assert_eq!(hold.remaining(1_000), None);
        hold.until(3_000);
        assert_eq!(hold.remaining(1_000), Some(2_000));
        // A shorter hold from another answer does not cut it short.
        hold.until(2_000);
        assert_eq!(hold.remaining(2_500), Some(500));
        assert_eq!(hold.remaining(3_000), None);
    }

    #[test]
    fn a_claim_outlasts_its_slowest_round() {
        // Bitrix24 looks a comment or task up before adding it: an item
        // takes up to 6 requests (the figures below are written with 6).
        assert_eq!(MAX_STEPS, 6);
        for (timeout, conns, items, pace, lease) in [
            // 64 items on 16 connections: 4 rounds of 6 requests of 10 s.
            (10_000, 16, 64, None, 4 * 6 * 10_000 + 30_000),
            (1_000, 1, 1, None, 6 * 1_000 + 30_000),
            // amoCRM's 7 requests/s: 8 items, 48 requests, 6.857 s paced.
            (5_000, 2, 8, Some(7), 4 * 6 * 5_000 + 6_857 + 30_000),
        ] {
            assert_eq!(
                lease_ms(timeout, conns, items, pace),
                lease,
                "{items} items"
            );
        }
        assert_eq!(claim_size(16), 64);
    }

    #[test]
    fn a_created_deal_keeps_the_crms_id() {
        let s = settle(
            &cfg(),
            &item("deal.create", 0, 0),
            (
                Outcome::Delivered {
                    deal_id: Some("C-4".into()),
                },
                None,
            ),
            10,
        );
        assert_eq!(
            s,
            Settle::Done {
                crm_deal: Some((4, "C-4".into()))
            }
        );
    }

    /// A create whose deal was made though its note failed is retried,
    /// the CRM's id recorded now (and when it is parked at last).
    #[test]
    fn a_partly_made_deal_is_retried_with_the_crms_id_recorded() {
        let partly = || Outcome::Partly {
            deal_id: "31".into(),
            error: "HTTP 500".into(),
            retry_after_ms: None,
        };
        match settle(&cfg(), &item("deal.create", 0, 0), (partly(), None), 10) {
            Settle::Retry { crm_deal, .. } => assert_eq!(crm_deal, Some((4, "31".into()))),
            other => panic!("{other:?}"),
        }
        let expired = cfg().retry.max_age_hours as i64 * 3_600_000 + 1;
        match settle(
            &cfg(),
            &item("deal.create", 9, 0),
            (partly(), None),
            expired,
        ) {
            Settle::Park { crm_deal, .. } => assert_eq!(crm_deal, Some((4, "31".into()))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failures_back_off_until_the_age_limit_then_park() {
        let fail = || Outcome::Retry {
            error: "HTTP 500".into(),
            retry_after_ms: None,
        };
        let Settle::Retry { next_at, .. } =
            settle(&cfg(), &item("deal.task", 2, 0), (fail(), None), 1_000)
        else {
            panic!("retried");
        };
        // Third failure: step 4 s, jittered into [2 s, 4 s).
        assert!((3_000..5_000).contains(&next_at), "{next_at}");
        let late = settle(&cfg(), &item("deal.task", 9, 0), (fail(), None), 3_600_000);
        assert_eq!(
            late,
            Settle::Park {
                crm_deal: None,
                error: "HTTP 500".into()
            }
        );
        let told = settle(
            &cfg(),
            &item("deal.task", 0, 0),
            (
                Outcome::Retry {
                    error: "HTTP 429".into(),
                    retry_after_ms: Some(7_000),
                },
                None,
            ),
            1_000,
        );
        assert_eq!(
            told,
            Settle::Retry {
                crm_deal: None,
                error: "HTTP 429".into(),
                next_at: 8_000
            }
        );
        // A request that timed out may still be applied: its retry (a
        // look-up first) waits at least the settle time, not a backoff
        // step (trial, 2026-12-03: amoCRM made a second lead).
        let settling = settle(
            &cfg(),
            &item("deal.create", 0, 0),
            (fail(), Some(30_000)),
            1_000,
        );
        assert!(
            matches!(
                settling,
                Settle::Retry {
                    next_at: 31_000,
                    ..
                }
            ),
            "{settling:?}"
        );
        // A longer backoff stays as long.
        let mut slow = cfg();
        slow.retry.max_ms = 600_000;
        let Settle::Retry { next_at, .. } = settle(
            &slow,
            &item("deal.task", 20, 0),
            (fail(), Some(30_000)),
            1_000,
        ) else {
            panic!("retried");
        };
        assert!(next_at >= 301_000, "{next_at}");
    }

    #[test]
    fn a_refusal_is_parked_at_once_with_the_crms_reason() {
        let s = settle(
            &cfg(),
            &item("deal.create", 0, 0),
            (
                Outcome::GiveUp {
                    reason: "HTTP 400: name: This value should not be blank".into(),
                },
                None,
            ),
            10,
        );
        assert_eq!(
            s,
            Settle::Park {
                crm_deal: None,
                error: "HTTP 400: name: This value should not be blank".into()
            }
        );
    }
}
