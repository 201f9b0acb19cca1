//! The web console against a large store (issue 17, item 5): 1,000,000
//! leads (a year of them) and 200,000 calls in SQLite, the console served
//! in-process on loopback, then full HTTP GETs of `/ui/leads` (first
//! page, a filtered page, a phone search, a name search, an older page)
//! a filter no lead matches, and `/ui/` (24 h and 7 d), signed in. Criterion gives the means; a
//! timed loop after it prints p50/p99 per page.
//!
//! Under `cargo test` (no `--bench` argument) the store is seeded with
//! 1,000 leads only, so the suite stays fast.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use siptrack::clock::Clock;
use siptrack::config::Config;
use siptrack::crm::metrics::OutboxMetrics;
use siptrack::http::ui::UiState;
use siptrack::http::{AppState, SipSnapshot};
use siptrack::leads::pipeline::StorageHealth;
use siptrack::store::Store;
use siptrack::tracking::pools::Pools;
use siptrack::transport::tcp::TcpContext;

const NOW: i64 = 1_800_000_000;
const TOKEN: &str = "bench-token";

fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn sizes() -> (u64, u64) {
    if full_size() {
        (1_000_000, 200_000)
    } else {
        (1_000, 200)
    }
}

/// A seeded database file, made once per size and reused across runs.
async fn seeded() -> Store {
    let (leads, calls) = sizes();
    let dir = PathBuf::from("/tmp/siptrack-console-bench");
    let path = dir.join(format!("seed-v2-{leads}-{calls}.db"));
    let fresh = !path.exists();
    let store = Store::open(&format!("sqlite:{}", path.display()))
        .await
        .expect("open the bench store");
    if fresh {
        let started = Instant::now();
        // A lead every 30 s for a year, newest last; a third are forms
        // with a name; five channels; 400,000 distinct callers.
        store
            .execute_raw(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {leads})
                 INSERT INTO leads (created_at, kind, title, name, phone, email, visit_id, form, dialed,
                                    text, fields, call_id, accepted, deal_id, outcome)
                 SELECT {NOW} - ({leads} - i) * 30,
                        CASE WHEN i % 3 = 0 THEN 'form' ELSE 'call' END,
                        'Lead ' || i,
                        CASE WHEN i % 3 = 0 THEN 'Name' || (i % 50000) ELSE '' END,
                        '7916' || printf('%07d', i % 400000), '',
                        CASE i % 5 WHEN 0 THEN 'google' WHEN 1 THEN 'yandex' WHEN 2 THEN 'vk'
                                   WHEN 3 THEN 'direct' ELSE 'v' || i END,
                        CASE WHEN i % 3 = 0 THEN 'order' ELSE '' END,
                        CASE WHEN i % 3 = 0 THEN '' ELSE '74951110001' END,
                        'Call to 74951110001 (answered, 42 s)', '{{}}', NULL,
                        CASE WHEN i % 4 = 0 THEN 1 ELSE 0 END, NULL,
                        CASE WHEN i % 4 = 1 THEN 'duplicate of lead ' || (i - 1)
                             WHEN i % 4 = 2 THEN 'duplicate of deal ' || (i - 2)
                             WHEN i % 4 = 3 AND i % 3 <> 0 THEN 'no deal: calls create no deals'
                             ELSE 'deal ' || i || ' created' END
                   FROM n"
            ))
            .await
            .expect("seed leads");
        // A call every 30 s for the last 70 days.
        store
            .execute_raw(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {calls})
                 INSERT INTO calls (call_id, caller_raw, caller, callee, destination, visit_id, marker,
                                    source, visit, invite_at, answer_at, end_at, duration, status,
                                    hangup, lead_id)
                 SELECT 'c' || i, '7916' || printf('%07d', i), '7916' || printf('%07d', i),
                        '74951110001', 'sip:pbx@127.0.0.1', NULL, 'google', NULL, '{{}}',
                        ({NOW} - ({calls} - i) * 30) * 1000, NULL, ({NOW} - ({calls} - i) * 30) * 1000 + 42000,
                        42, CASE i % 7 WHEN 0 THEN 'missed' WHEN 1 THEN 'busy' ELSE 'answered' END,
                        'caller', i
                   FROM n"
            ))
            .await
            .expect("seed calls");
        store.execute_raw("ANALYZE").await.expect("analyze");
        eprintln!(
            "seeded {leads} leads, {calls} calls in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    store
}

/// GET `path` with the session cookie on a fresh connection; the body.
fn get(addr: SocketAddr, path: &str, cookie: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "{path}: {}",
        &out[..out.len().min(300)]
    );
    out
}

fn post_form(addr: SocketAddr, path: &str, headers: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: bench\r\n{headers}Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

fn cookie(head: &str, name: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("set-cookie: {name}=")))
        .and_then(|v| v.split(';').next())
        .map(|v| format!("{name}={v}"))
        .unwrap_or_else(|| panic!("no {name} cookie in {head}"))
}

/// Serves the console on a loopback port and signs in with the token.
fn serve(rt: &tokio::runtime::Runtime, store: Store) -> (SocketAddr, String) {
    let config = Config::parse(&format!(
        "[http]\ntoken = \"{TOKEN}\"\n[crm]\ntimezone = \"UTC+3\"\nphone_format = \"+X XXX XXX-XX-XX\"\n"
    ))
    .expect("config");
    let (events, _keep) = tokio::sync::mpsc::channel(16);
    let tcp = TcpContext::new(
        config.sip.tcp,
        config.sip.trusted_sources.clone(),
        config.sip.max_message_bytes,
        events,
    );
    let state = AppState {
        pools: Arc::new(Mutex::new(Pools::new(Vec::new()))),
        store,
        token: config.http.token.clone(),
        clock: Clock::manual(NOW as u64 * 1000),
        leads: Arc::new(config.leads.clone()),
        phone: config.rewrite.phone.clone(),
        outbox_metrics: Arc::new(OutboxMetrics::default()),
        sip: Arc::new(Mutex::new(SipSnapshot::default())),
        storage: Arc::new(StorageHealth::default()),
        tcp,
        media: Default::default(),
        ui: Arc::new(UiState::new(config.ui.clone(), 128)),
        traces: None,
        recordings: Arc::new(siptrack::http::recordings::RecordingAccess {
            dir: config.media.recordings_dir.clone(),
            links: siptrack::recording::settings(
                &config,
                Arc::from(&b"bench-link-key"[..]),
                "127.0.0.1:0".parse().expect("addr"),
            ),
            require_auth: false,
            counts: Default::default(),
        }),
        retention: Arc::default(),
        crm_status: Arc::new(siptrack::http::crm_status::StatusReceiver {
            hooks: config.crm.status_hooks.clone(),
            transport: None,
        }),
    };
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = siptrack::http::router(state);
    let http = config.http.clone();
    rt.spawn(async move { siptrack::http::serve(listener, app, &http).await });
    std::mem::forget(_keep);
    let form = post_form(addr, "/ui/login", "", "");
    assert!(form.contains("403"), "login needs its form's token");
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET /ui/login HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut page = String::new();
    s.read_to_string(&mut page).expect("read");
    let login = cookie(&page, "siptrack_login");
    let token = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf")
        .to_string();
    let signed = post_form(
        addr,
        "/ui/login",
        &format!("Cookie: {login}\r\n"),
        &format!("csrf={token}&user=&password={TOKEN}&next=/ui/"),
    );
    (addr, cookie(&signed, "siptrack_session"))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = rt.block_on(seeded());
    let (addr, session) = serve(&rt, store);
    let (leads, _) = sizes();
    let older = leads as i64 / 2;
    let pages: Vec<(&str, String)> = vec![
        ("leads first page", "/ui/leads".into()),
        (
            "leads type=form outcome=duplicate",
            "/ui/leads?type=form&outcome=duplicate".into(),
        ),
        (
            "leads channel=vk, a week",
            "/ui/leads?channel=vk&from=2026-12-31&to=2027-01-07".into(),
        ),
        // Forms never get "no deal: calls create no deals": nothing
        // matches, the page reads its bounded window and stops.
        (
            "leads type=form outcome=no_deal (none)",
            "/ui/leads?type=form&outcome=no_deal".into(),
        ),
        ("leads phone search", "/ui/leads?q=8+916+012-34-56".into()),
        ("leads name search", "/ui/leads?q=Name4999".into()),
        ("leads older page", format!("/ui/leads?before={older}")),
        ("overview 24h", "/ui/".into()),
        ("overview 7d", "/ui/?range=7d".into()),
        ("calls first page", "/ui/calls".into()),
    ];
    for (_, path) in &pages {
        let body = get(addr, path, &session);
        assert!(body.contains("</html>"), "{path}");
    }
    let mut g = c.benchmark_group("console");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for (name, path) in &pages {
        g.bench_function(*name, |b| b.iter(|| get(addr, path, &session)));
    }
    g.finish();
    if full_size() {
        for (name, path) in &pages {
            let mut t: Vec<Duration> = (0..100)
                .map(|_| {
                    let at = Instant::now();
                    get(addr, path, &session);
                    at.elapsed()
                })
                .collect();
            t.sort();
            eprintln!(
                "{name:38} p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms",
                t[50].as_secs_f64() * 1e3,
                t[98].as_secs_f64() * 1e3,
                t[99].as_secs_f64() * 1e3
            );
        }
    }
}

criterion_group!(console, bench);
criterion_main!(console);
