//! CRM outbox (issue 5, item 5), against a local sink that answers at once:
//!
//! - throughput: items already queued in SQLite, delivered by the worker
//!   (attempt, settle in the store); the reference in the same run is the
//!   same number of POSTs sent straight with the same HTTP client and
//!   concurrency, no store;
//! - latency from call end to webhook received: finished calls go into the
//!   lead pipeline at a steady rate; the sink notes when each call-end
//!   webhook and each call's deal.create arrive (p50, p99).
//!
//! Under `cargo test` (no `--bench`) everything runs with small counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::Router;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;
use siptrack::calls::{CallInfo, CallRecord, CallStatus};
use siptrack::config::CrmDelivery;
use siptrack::crm::adapter::{Method, Request};
use siptrack::crm::metrics::OutboxMetrics;
use siptrack::crm::outbox::{Plan, Retry};
use siptrack::crm::transport::Transport;
use siptrack::crm::webhook::signature;
use siptrack::leads::pipeline::CallNews;
use siptrack::store::Store;
use tokio::sync::Semaphore;

const CONNECTIONS: usize = 16;

fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

#[derive(Default)]
struct Sink {
    received: AtomicU64,
    /// (path, call id) → when it arrived.
    arrivals: Mutex<HashMap<(String, String), Instant>>,
}

async fn receive(State(sink): State<Arc<Sink>>, uri: axum::http::Uri, body: Bytes) -> String {
    let at = Instant::now();
    sink.received.fetch_add(1, Ordering::Relaxed);
    if uri.path() != "/bulk" {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        // Lead payloads carry the call under "call".
        let call = if uri.path() == "/hook" {
            &v["call"]
        } else {
            &v
        };
        let id = call["id"].as_str().unwrap_or("").to_string();
        if let Ok(mut a) = sink.arrivals.lock() {
            a.insert((uri.path().to_string(), id), at);
        }
    }
    r#"{"deal_id": "D-1"}"#.to_string()
}

async fn start_sink() -> (u16, Arc<Sink>) {
    let sink = Arc::new(Sink::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the sink");
    let port = listener.local_addr().expect("addr").port();
    let app = Router::new().fallback(receive).with_state(sink.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, sink)
}

fn delivery(port: u16) -> CrmDelivery {
    CrmDelivery {
        url: Some(format!("http://127.0.0.1:{port}/hook")),
        call_start_url: None,
        call_end_url: Some(format!("http://127.0.0.1:{port}/end")),
        secret: "bench-secret".into(),
        timeout_ms: 10_000,
        max_connections: CONNECTIONS,
        retry: Retry::default(),
        ..CrmDelivery::default()
    }
}

fn body(i: u64) -> String {
    // The size of a real call-end webhook.
    format!(
        r#"{{"id":"bench-{i}@127.0.0.1","caller":"79160000001","callee":"74951110001","visit_id":"v-{i}","marker":"google_cpc","date":"2026-11-23 12:00:00","duration":42,"status":"ANSWER","landing_page":"https://shop.example/sale","domain":"shop.example","city":"Moscow","utm_source":"google","utm_medium":"cpc","utm_campaign":"winter","utm_term":"sofa","utm_content":"ad1"}}"#
    )
}

async fn wait_received(sink: &Sink, target: u64, store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while sink.received.load(Ordering::Relaxed) < target {
        if Instant::now() > deadline {
            let failed = store.list_outbox(Some("failed"), 1).await;
            let pending = store.list_outbox(Some("pending"), 1).await;
            panic!(
                "the sink got {} of {target} requests; failed: {failed:?}; pending: {pending:?}",
                sink.received.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("outbox.db").display());
    let store = rt.block_on(Store::open(&url)).expect("store");
    let (port, sink) = rt.block_on(start_sink());
    let cfg = Arc::new(delivery(port));
    rt.spawn(siptrack::crm::worker::run(
        store.clone(),
        cfg.clone(),
        Arc::new(OutboxMetrics::default()),
        None,
    ));
    let batch: u64 = if full_size() { 2_000 } else { 50 };
    let mut next = 0u64;
    let mut g = c.benchmark_group("outbox");
    g.throughput(Throughput::Elements(batch));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(if full_size() { 20 } else { 1 }));
    g.bench_function("queued call webhooks delivered (worker + SQLite)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let first = next;
                next += batch;
                let target = sink.received.load(Ordering::Relaxed) + batch;
                // Queued first (as after an outage), then timed. The
                // worker may see the rows before the notification: its
                // time to find them is part of what is measured.
                rt.block_on(store.execute_raw(&format!(
                    "WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n WHERE i < {last})
                     INSERT INTO outbox (created_at, target, idempotency_key, order_key, body, next_at)
                     SELECT {now}, 'call_end', 'bench-' || i, 'call-' || i,
                            '{}', 0 FROM n",
                    body(0).replace('\'', "''"),
                    last = next - 1,
                    now = siptrack::clock::Clock::system().unix_ms()
                )))
                .expect("queue");
                let t = Instant::now();
                store.outbox_ready().notify_one();
                rt.block_on(wait_received(&sink, target, &store));
                // Settled too: the next batch starts from an empty queue.
                while rt.block_on(store.outbox_depth()).map(|d| d.pending).unwrap_or(0) > 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                total += t.elapsed();
            }
            total
        })
    });
    let sender = Transport::new(Duration::from_secs(10), CONNECTIONS).expect("client");
    g.bench_function("reference: the same POSTs sent straight, no outbox", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                rt.block_on(async {
                    let slots = Arc::new(Semaphore::new(CONNECTIONS));
                    let mut set = tokio::task::JoinSet::new();
                    for i in 0..batch {
                        let (sender, slots) = (sender.clone(), slots.clone());
                        let url = format!("http://127.0.0.1:{port}/bulk");
                        set.spawn(async move {
                            let _slot = slots.acquire_owned().await;
                            let body = body(i);
                            let request = Request {
                                stage: "post",
                                method: Method::Post,
                                url,
                                headers: vec![
                                    ("Content-Type", "application/json".into()),
                                    ("Idempotency-Key", format!("ref-{i}")),
                                    (
                                        "X-Siptrack-Signature",
                                        signature(b"bench-secret", body.as_bytes()),
                                    ),
                                ],
                                body: Some(body),
                            };
                            sender.send(&request).await
                        });
                    }
                    while set.join_next().await.is_some() {}
                });
            }
            t.elapsed()
        })
    });
    g.finish();

    latency(&rt, &store, &sink, port);
}

/// Finished calls at a steady rate through the lead pipeline: call end →
/// call-end webhook and → the call's deal.create at the sink.
fn latency(rt: &tokio::runtime::Runtime, store: &Store, sink: &Arc<Sink>, port: u16) {
    let (calls, per_second) = if full_size() {
        (3_000u64, 300u64)
    } else {
        (20, 100)
    };
    // The default rules: every new caller's call makes a deal.
    let mut leads = siptrack::config::Config::parse("").expect("defaults").leads;
    leads.crm = Plan {
        lead_hooks: true,
        call_start: false,
        call_end: true,
        calls_on_deals: false,
        format: leads.crm.format.clone(),
        recording_base: String::new(),
    };
    let _ = port;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    rt.spawn(siptrack::leads::pipeline::run(
        rx,
        store.clone(),
        Arc::new(leads),
        siptrack::leads::pipeline::PipelineOptions {
            journal: None,
            health: Default::default(),
            partial_recordings: Default::default(),
        },
    ));
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let start = Instant::now();
    for i in 0..calls {
        let due = start + Duration::from_micros(i * 1_000_000 / per_second);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let call_id = format!("lat-{i}@127.0.0.1");
        let r = CallRecord {
            call_id: call_id.clone(),
            info: CallInfo {
                caller: format!("7916{:07}", i).into(),
                dialed: "74951110001".into(),
                marker: Some("google".into()),
                ..CallInfo::default()
            },
            invite_at: 1_795_435_200_000,
            answer_at: Some(1_795_435_201_000),
            end_at: 1_795_435_260_000,
            duration: 59,
            status: CallStatus::Answered,
            hangup: None,
            recording: Default::default(),
            dtmf: Vec::new(),
        };
        sent.insert(call_id, Instant::now());
        tx.send(CallNews::Ended(r)).expect("pipeline");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = sink.arrivals.lock().map(|a| a.len()).unwrap_or(0);
        if n >= (calls * 2) as usize || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let arrivals = sink.arrivals.lock().map(|a| a.clone()).unwrap_or_default();
    for (path, what) in [
        ("/end", "call-end webhook"),
        ("/hook", "deal.create of the call"),
    ] {
        let mut took: Vec<Duration> = sent
            .iter()
            .filter_map(|(id, at)| {
                arrivals
                    .get(&(path.to_string(), id.clone()))
                    .map(|got| got.saturating_duration_since(*at))
            })
            .collect();
        assert_eq!(took.len() as u64, calls, "{what}: every call arrives");
        took.sort_unstable();
        let pct = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
        eprintln!(
            "outbox/latency: call end -> {what} received, {calls} calls at {per_second}/s: p50 {:?}, p99 {:?}, max {:?}",
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
    }
}

criterion_group!(outbox, bench);
criterion_main!(outbox);
