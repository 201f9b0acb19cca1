//! Lead decisions against a large store (issue 4, item 6; issue 14):
//! 1,000,000 leads and 300,000 deals already in SQLite, and the same in
//! PostgreSQL (a throwaway cluster on loopback, `tests/common/pg.rs`), then
//! decide-and-record for new leads, half from known clients. Criterion
//! gives the throughput; a timed loop after it prints p50/p99 latency.
//!
//! Under `cargo test` (no `--bench` argument) the store is seeded with
//! 1,000 leads only, so the suite stays fast.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use siptrack::calls::{CallInfo, CallRecord, CallStatus};
use siptrack::crm::outbox::Plan;
use siptrack::leads::dedup::{Group, Identity, LeadKind, Settings};
use siptrack::leads::pipeline::call_lead;
use siptrack::store::leads::{Job, NewDealStatus, NewLead};
use siptrack::store::Store;

#[path = "../tests/common/pg.rs"]
mod pg;

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn sizes() -> (u64, u64) {
    if full_size() {
        (1_000_000, 300_000)
    } else {
        (1_000, 300)
    }
}

/// A seeded database file, made once per size and reused across runs.
async fn seeded_sqlite() -> Store {
    let (leads, deals) = sizes();
    let dir = PathBuf::from("/tmp/siptrack-leads-bench");
    let path = dir.join(format!("seed-{leads}-{deals}.db"));
    let fresh = !path.exists();
    let store = Store::open(&format!("sqlite:{}", path.display()))
        .await
        .expect("open the bench store");
    if fresh {
        let started = Instant::now();
        // Deals: one per client; a quarter in progress, a quarter paid.
        store
            .execute_raw(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {deals})
                 INSERT INTO deals (created_at, title, name, phone, email, visit_id, status, grp, lead_id)
                 SELECT {NOW} - (i % 60) * {DAY}, 'Incoming call from 7916' || printf('%07d', i), '',
                        '7916' || printf('%07d', i), '', '', 'new',
                        CASE i % 4 WHEN 0 THEN 'in_progress' WHEN 1 THEN 'paid' ELSE 'not_counted' END, i
                   FROM n"
            ))
            .await
            .expect("seed deals");
        // Leads: clients call again and again over 60 days.
        store
            .execute_raw(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {leads})
                 INSERT INTO leads (created_at, kind, title, name, phone, email, visit_id, form, dialed,
                                    text, fields, call_id, accepted, deal_id, outcome)
                 SELECT {NOW} - (i % 5184000), 'call',
                        'Incoming call from 7916' || printf('%07d', i % {deals} + 1), '',
                        '7916' || printf('%07d', i % {deals} + 1), '', 'google', '', '74951110001',
                        '', '{{}}', NULL, CASE WHEN i <= {deals} THEN 1 ELSE 0 END,
                        i % {deals} + 1,
                        CASE WHEN i <= {deals} THEN 'deal ' || i || ' created'
                             ELSE 'duplicate of deal ' || (i % {deals} + 1) END
                   FROM n"
            ))
            .await
            .expect("seed leads");
        eprintln!(
            "seeded {leads} leads and {deals} deals in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    store
}

/// A fresh PostgreSQL database seeded like the SQLite file.
async fn seeded_postgres() -> Store {
    let (leads, deals) = sizes();
    // Seeding a million rows takes longer than the default statement
    // timeout.
    let opts = siptrack::store::postgres::PgOptions {
        statement_timeout_ms: 600_000,
        ..Default::default()
    };
    let store = Store::open_with(
        &pg::database(),
        &opts,
        "bench",
        siptrack::clock::Clock::system(),
    )
    .await
    .expect("open the bench store");
    let started = Instant::now();
    store
        .execute_raw(&format!(
            "INSERT INTO deals (created_at, title, name, phone, email, visit_id, status, grp, lead_id)
             SELECT {NOW} - (i % 60) * {DAY}, 'Incoming call from 7916' || lpad(i::text, 7, '0'), '',
                    '7916' || lpad(i::text, 7, '0'), '', '', 'new',
                    CASE i % 4 WHEN 0 THEN 'in_progress' WHEN 1 THEN 'paid' ELSE 'not_counted' END, i
               FROM generate_series(1, {deals}) AS i;
             INSERT INTO leads (created_at, kind, title, name, phone, email, visit_id, form, dialed,
                                text, fields, call_id, accepted, deal_id, outcome)
             SELECT {NOW} - (i % 5184000), 'call',
                    'Incoming call from 7916' || lpad((i % {deals} + 1)::text, 7, '0'), '',
                    '7916' || lpad((i % {deals} + 1)::text, 7, '0'), '', 'google', '', '74951110001',
                    '', '{{}}', NULL, i <= {deals}, i % {deals} + 1,
                    CASE WHEN i <= {deals} THEN 'deal ' || i || ' created'
                         ELSE 'duplicate of deal ' || (i % {deals} + 1) END
               FROM generate_series(1, {leads}) AS i;
             SELECT setval(pg_get_serial_sequence('deals', 'id'), {deals});
             SELECT setval(pg_get_serial_sequence('leads', 'id'), {leads});
             ANALYZE;"
        ))
        .await
        .expect("seed");
    eprintln!(
        "postgres: seeded {leads} leads and {deals} deals in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store
}

fn lead(i: u64, clients: u64) -> NewLead {
    // Even: a known client; odd: a new one.
    let phone = if i.is_multiple_of(2) {
        format!("7916{:07}", i % clients + 1)
    } else {
        format!("7926{:07}", i)
    };
    NewLead {
        kind: Some(LeadKind::Call),
        who: Identity {
            title: format!("Incoming call from {phone}"),
            name: String::new(),
            phone,
            email: String::new(),
            visit: format!("v{i}"),
        },
        dialed: "74951110001".into(),
        text: "Call to 74951110001".into(),
        at: NOW + i as i64,
        ..NewLead::default()
    }
}

fn call(i: u64, clients: u64) -> CallRecord {
    let l = lead(i, clients);
    CallRecord {
        call_id: format!("bench-{i}"),
        info: CallInfo {
            caller: l.who.phone.as_str().into(),
            caller_raw: l.who.phone.into(),
            dialed: "74951110001".into(),
            visit_id: Some(l.who.visit.into()),
            ..CallInfo::default()
        },
        invite_at: (NOW as u64 + i) * 1000,
        answer_at: Some((NOW as u64 + i) * 1000 + 500),
        end_at: (NOW as u64 + i) * 1000 + 60_500,
        duration: 60,
        status: CallStatus::Answered,
        hangup: None,
        recording: Default::default(),
        dtmf: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    // Multi-threaded: the PostgreSQL store works on blocking threads.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let sqlite = rt.block_on(seeded_sqlite());
    run(c, &rt, "SQLite", &sqlite);
    let postgres = rt.block_on(seeded_postgres());
    run(c, &rt, "PostgreSQL", &postgres);
}

fn run(c: &mut Criterion, rt: &tokio::runtime::Runtime, db: &str, store: &Store) {
    let (_, clients) = sizes();
    let settings = Settings::default();
    // The local CRM: no outbox rows; the webhook path is benches/outbox.rs.
    let plan = Plan::default();
    let status = NewDealStatus {
        status: "new".into(),
        group: Group::NotCounted,
    };
    // A run number keeps leads unique across repeated bench runs.
    let base = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 100_000)
        * 1_000_000;
    let mut i = base;
    let mut g = c.benchmark_group(format!("leads/{db}"));
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("decide and record (1M leads, 300k deals)", |b| {
        b.iter(|| {
            i += 1;
            rt.block_on(store.record_lead(&lead(i, clients), &settings, &status, None, &plan))
                .expect("recorded")
        })
    });
    // The pipeline's way under load: what is queued goes in one transaction.
    const BATCH: u64 = 100;
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("decide and record, 100 calls per transaction", |b| {
        b.iter(|| {
            let calls: Vec<CallRecord> = (0..BATCH)
                .map(|_| {
                    i += 1;
                    call(i, clients)
                })
                .collect();
            let items: Vec<Job> = calls
                .into_iter()
                .map(|r| Job::Lead(call_lead(&r), Some(r)))
                .collect();
            rt.block_on(store.record_calls(std::sync::Arc::new(items), &settings, &status, &plan))
                .expect("recorded")
        })
    });
    g.finish();

    let n = if full_size() { 5_000 } else { 50 };
    let mut took: Vec<Duration> = (0..n)
        .map(|_| {
            i += 1;
            let t = Instant::now();
            rt.block_on(store.record_lead(&lead(i, clients), &settings, &status, None, &plan))
                .expect("recorded");
            t.elapsed()
        })
        .collect();
    took.sort_unstable();
    let total: Duration = took.iter().sum();
    let pct = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
    eprintln!(
        "leads/{db}/latency: {n} decisions, {:.0} per second, p50 {:?}, p99 {:?}, max {:?}",
        n as f64 / total.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
}

/// `LEADS_COUNT=N cargo bench --bench leads` records N calls the way the
/// SIPp harness makes them, without criterion, for `perf stat` or
/// `valgrind --tool=callgrind`: instructions per call do not depend on
/// how loaded the machine is (issue 15). Every call is from one caller (a
/// repeat lead, the dedup history hits) and lasts longer than a batch:
/// each batch holds the starts and answers of 25 calls and the ends of
/// the 25 before, as the pipeline's 5 ms linger makes them at 5,000
/// calls/s. A fresh SQLite file (`LEADS_COUNT_DB=postgres`: a throwaway
/// PostgreSQL cluster) with 1,000 such calls recorded before counting.
fn count_mode(n: u64) {
    use siptrack::calls::AnsweredCall;
    use siptrack::crm::outbox::CallStart;
    use siptrack::proxy::handoff::{DialogHandoff, HandoffSide, HandoffTransport};
    const PER_BATCH: u64 = 25;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = match std::env::var("LEADS_COUNT_DB").as_deref() {
        Ok("postgres") => pg::database(),
        _ => format!("sqlite:{}", dir.path().join("count.db").display()),
    };
    let store = rt
        .block_on(Store::open(&url))
        .expect("open the count store");
    let settings = Settings::default();
    let plan = Plan::default();
    let status = NewDealStatus {
        status: "new".into(),
        group: Group::NotCounted,
    };
    let record = |i: u64| {
        let mut r = call(i, 1);
        // One caller for every call, as SIPp's.
        r.info.caller = "79161234567".into();
        r.info.caller_raw = r.info.caller.clone();
        r.info.visit_id = None;
        r
    };
    let side = |port: u16| HandoffSide {
        transport: HandoffTransport::Udp,
        source: ([127, 0, 0, 1], port).into(),
        contact: Some(([127, 0, 0, 1], port).into()),
    };
    let batch = |b: u64| -> Vec<Job> {
        let mut jobs = Vec::with_capacity(3 * PER_BATCH as usize);
        for i in b * PER_BATCH..(b + 1) * PER_BATCH {
            let r = record(i);
            jobs.push(Job::Start(
                CallStart {
                    call_id: r.call_id.clone(),
                    info: r.info.clone(),
                    invite_at: r.invite_at,
                },
                false,
            ));
            jobs.push(Job::Answered(AnsweredCall {
                call_id: r.call_id.clone(),
                answer_at: r.invite_at + 500,
                dialog: Some(DialogHandoff {
                    call_id: r.call_id.clone(),
                    caller_tag: format!("a{i}"),
                    callee_tag: format!("b{i}"),
                    caller: side(5061),
                    callee: side(5070),
                }),
            }));
        }
        for i in b.saturating_sub(1) * PER_BATCH..b * PER_BATCH {
            let r = record(i);
            jobs.push(Job::Lead(call_lead(&r), Some(r)));
        }
        jobs
    };
    let warm = 1_000 / PER_BATCH;
    let batches = warm + n.div_ceil(PER_BATCH);
    let mut counted = None;
    for b in 0..=batches {
        if b == warm {
            counted = Some(Instant::now());
        }
        let jobs = std::sync::Arc::new(batch(b));
        rt.block_on(store.record_calls(jobs, &settings, &status, &plan))
            .expect("recorded");
    }
    let took = counted.map(|t| t.elapsed()).unwrap_or_default();
    eprintln!(
        "leads count mode: {} calls in {:.3} s after {} warm-up calls",
        n,
        took.as_secs_f64(),
        warm * PER_BATCH
    );
}

criterion_group!(leads, bench);

fn main() {
    if let Ok(n) = std::env::var("LEADS_COUNT") {
        let n = n.parse().expect("LEADS_COUNT is a number");
        count_mode(n);
        return;
    }
    leads();
    Criterion::default().configure_from_args().final_summary();
}
