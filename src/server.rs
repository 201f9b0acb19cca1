//! `siptrack run`: binds the sockets and drives the proxy core on one
//! thread. One thread owns all transaction state, so the hot path takes no
//! locks; a SIP message costs microseconds, far below what a core can do.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::calls::{AdoptedCall, Party};
use crate::clock::Clock;
use crate::config::paths::{dir_write_problem, journal_problem};
use crate::config::{Config, ListenAddr};
use crate::crm::metrics::OutboxMetrics;
use crate::http::crm_status::StatusReceiver;
use crate::http::{AppState, RecordingAccess, SipSnapshot};
use crate::leads::pipeline::{CallNews, PipelineOptions, StorageHealth};
use crate::media::anchor::{Anchor, MediaSettings};
use crate::media::metrics::MediaMetrics;
use crate::media::ports::PortAllocator;
use crate::media::relay_io::{self, MediaReport, RelayConfig, RelayHandle};
use crate::media::writer;
use crate::node::Node;
use crate::proxy::handoff::DialogMiss;
use crate::proxy::route::Identity;
use crate::proxy::{Chain, Output, Peer, Proxy, ProxySettings, Transport};
use crate::recording::retention::{self, RetentionMetrics};
use crate::sip::Message;
use crate::sip_trace::{Direction, SipTraces, Traced};
use crate::store::Store;
use crate::tracking::pools::Pools;
use crate::tracking::TrackingRouter;
use crate::transport::limits::{fd_limit, FD_RESERVE};
use crate::transport::tcp::{accept_loop, TcpContext, TcpEvent, TcpHub};
use crate::transport::udp::{self, UdpIo, UdpStats};

/// The idle loop's period: the metrics snapshot.
const TICK: Duration = Duration::from_secs(1);
/// How often the SIP counters are logged when they changed.
const STATS_EVERY: Duration = Duration::from_secs(60);

/// `config_path` is only named in the start-up log line.
pub fn run(config: Config, config_path: &std::path::Path) -> anyhow::Result<()> {
    // Before the runtime's threads exist (see the function).
    crate::memory::tune_allocator();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = rt.block_on(serve(config, config_path));
    // Blocking calls into a database that hangs (a frozen PostgreSQL
    // answers nothing, and no timeout of ours ends the thread's read) are
    // not waited for: dropping the runtime did, and SIGTERM then waited
    // until the database thawed (trial, 2026-12-02). What they carried is
    // in the journal by now (`leads::pipeline`).
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

pub async fn serve(config: Config, config_path: &std::path::Path) -> anyhow::Result<()> {
    let clock = Clock::system();
    let sip = &config.sip;
    let mut udp_sockets = Vec::new();
    let (tcp_tx, mut tcp_rx) = mpsc::channel::<TcpEvent>(4096);
    let tcp = tcp_context(&config, tcp_tx);
    let mut bound = Vec::new();
    for l in &sip.listen {
        match l.transport {
            Transport::Udp => {
                let s = udp::bind(l.addr, sip.udp_recv_buffer_bytes)
                    .with_context(|| format!("binding udp:{}", l.addr))?;
                let actual = ListenAddr {
                    transport: Transport::Udp,
                    addr: s.get_ref().local_addr()?,
                };
                udp_sockets.push((actual.addr, Arc::new(s)));
                bound.push(actual);
            }
            Transport::Tcp => {
                let listener = TcpListener::bind(l.addr)
                    .await
                    .with_context(|| format!("binding tcp:{}", l.addr))?;
                bound.push(ListenAddr {
                    transport: Transport::Tcp,
                    addr: listener.local_addr()?,
                });
                tokio::spawn(accept_loop(listener, tcp.clone()));
            }
        }
    }
    for b in &bound {
        tracing::info!(transport = b.transport.via_token(), addr = %b.addr, "listening for SIP");
    }
    let sip_listen: Vec<String> = bound
        .iter()
        .map(|b| {
            format!(
                "{}:{}",
                b.transport.via_token().to_ascii_lowercase(),
                b.addr
            )
        })
        .collect();
    let secret = match &sip.route_secret {
        Some(s) => s.as_bytes().to_vec(),
        None => (0..32).map(|_| fastrand::u8(..)).collect(),
    };
    let identity = Identity::new(bound, sip.advertised_host.clone(), &secret);
    let settings = ProxySettings {
        identity,
        trusted_sources: sip.trusted_sources.clone(),
        max_message_bytes: sip.max_message_bytes,
        timers: sip.timers,
        instance_nonce: fastrand::u64(..) & 0xffff_ffff,
        dialog_max_ms: config.leads.max_call_seconds * 1000,
        untrusted: sip.untrusted,
    };
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "siptrack".into());
    let node = config.storage.node_name(&hostname);
    let store = Store::open_with(
        &config.storage.url,
        &config.storage.postgres,
        &node,
        clock.clone(),
    )
    .await
    .context("opening the database")?;
    // Before anything reads this node's open calls or claims.
    let node_hold = store
        .hold_node(crate::store::node_hold::HoldPolicy::default())
        .await
        .context("holding storage.node_name")?;
    let mut pools = Pools::new(config.tracking.pools.clone());
    pools.restore(store.load_assignments().await?);
    let pools = Arc::new(Mutex::new(pools));
    if store.is_shared() {
        tokio::spawn(follow_shared_pools(store.clone(), pools.clone()));
    }
    let http = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding http {}", config.http.listen))?;
    let http_addr = http.local_addr()?;
    tracing::info!(addr = %http_addr, "listening for HTTP");
    // What an operator checks first: which file, which database, where
    // calls go, where leads go.
    tracing::info!(
        config = %config_path.display(),
        database = %config.storage.describe(),
        node = %node,
        destination = config
            .tracking
            .default_destination
            .as_ref()
            .map_or("none (unknown numbers get 404)", |d| d.uri.as_str()),
        crm = if config.crm.amocrm.is_some() { "amocrm" } else if config.crm.bitrix24.is_some() { "bitrix24" } else if config.leads.crm.lead_hooks { "webhook" } else { "local" },
        sip = %sip_listen.join(" "),
        http = %http_addr,
        "siptrack started"
    );
    if config.http.token.as_deref().unwrap_or_default().is_empty() {
        tracing::warn!("http.token is empty: the API (visits, leads, calls, deals) answers 401 to every request; /healthz and /metrics stay open");
    }
    let links = Arc::new(crate::recording::settings(
        &config,
        store.recording_link_key(),
        http_addr,
    ));
    let mut leads = config.leads.clone();
    if crate::store::postgres::is_postgres_url(&config.storage.url) {
        // Several nodes may share the database, and whichever claims a CRM
        // request sends it: a recording's link must name the node that
        // holds the WAV. (One node keeps building links from its current
        // base, so a changed http.public_url applies to requests queued.)
        leads.crm.recording_base = links.base_url.clone();
    }
    let leads = Arc::new(leads);
    let outbox_metrics = Arc::new(OutboxMetrics::default());
    let udp_stats = Arc::new(UdpStats::default());
    let sip_snapshot = Arc::new(Mutex::new(SipSnapshot {
        udp: udp_stats.clone(),
        ..SipSnapshot::default()
    }));
    let media_metrics = Arc::new(MediaMetrics::default());
    let storage_health = Arc::new(StorageHealth::default());
    tokio::spawn(watch_database_file(
        store.clone(),
        storage_health.clone(),
        config.storage.describe(),
    ));
    let traces = (config.ui.sip_trace_minutes > 0).then(|| {
        Arc::new(Mutex::new(
            SipTraces::new(
                config.ui.sip_trace_minutes * 60_000,
                (config.ui.sip_trace_max_mb as usize) << 20,
            )
            .opened_by(config.sip.trusted_sources.clone()),
        ))
    });
    let retention = Arc::new(RetentionMetrics::default());
    tokio::spawn(sweep_recordings(
        config.media.recordings_dir.clone(),
        config.media.retention_seconds(),
        retention.clone(),
    ));
    let app = crate::http::router(AppState {
        recordings: Arc::new(RecordingAccess {
            dir: config.media.recordings_dir.clone(),
            links: (*links).clone(),
            require_auth: config.media.recording_links_require_auth,
            counts: Default::default(),
        }),
        retention,
        traces: traces.clone(),
        sip: sip_snapshot.clone(),
        storage: storage_health.clone(),
        tcp: tcp.clone(),
        outbox_metrics: outbox_metrics.clone(),
        pools: pools.clone(),
        store: store.clone(),
        token: config.http.token.clone(),
        clock: clock.clone(),
        leads: leads.clone(),
        phone: config.rewrite.phone.clone(),
        media: media_metrics.clone(),
        ui: Arc::new(crate::http::ui::UiState::new(
            config.ui.clone(),
            (config.http.max_connections / 2).max(1),
        )),
        crm_status: Arc::new(StatusReceiver {
            hooks: config.crm.status_hooks.clone(),
            transport: crate::crm::transport::Transport::new(
                Duration::from_millis(config.crm.timeout_ms),
                2,
            )
            .map_err(|e| tracing::error!(error = %e, "no connection for the CRM status webhooks"))
            .ok(),
        }),
    });
    let (media_tx, mut media_rx) = mpsc::unbounded_channel::<MediaReport>();
    let media = start_media(&config, &media_metrics, media_tx)?;
    let (call_tx, call_rx) = mpsc::unbounded_channel();
    let journal = config.storage.journal_path();
    tracing::info!(journal = %journal.display(), "calls the database refuses wait in the journal");
    if let Some(p) = journal_problem(&journal) {
        tracing::error!(problem = %p, "storage.journal cannot take calls: while the database fails they would be held in memory only");
    }
    let pipeline = tokio::spawn(crate::leads::pipeline::run(
        call_rx,
        store.clone(),
        leads.clone(),
        PipelineOptions {
            journal: Some(journal),
            health: storage_health.clone(),
            partial_recordings: media.partial.clone(),
        },
    ));
    let (looked_up_tx, mut looked_up_rx) = mpsc::unbounded_channel();
    let mut lookups = Lookups {
        shared: store.is_shared(),
        store: store.clone(),
        tx: looked_up_tx,
        in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    };
    // Kept for the last deliveries at shutdown (`deliver_before_exit`).
    let crm_sends = config.leads.crm.sends_anything();
    let (outbox_store, outbox_progress) = (store.clone(), outbox_metrics.clone());
    if crm_sends {
        tokio::spawn(crate::crm::worker::run(
            store,
            Arc::new(config.crm.clone()),
            outbox_metrics,
            Some(links),
        ));
    }
    let http_config = config.http.clone();
    tokio::spawn(async move { crate::http::serve(http, app, &http_config).await });
    let router = TrackingRouter::new(&config, pools, clock.clone());
    let phases = Chain {
        router: Box::new(router),
        then: vec![Box::new(Anchor::phase(&media.anchor))],
    };
    let proxy = Proxy::new(settings, Box::new(phases));
    let mut node = Node::new(proxy, clock.now(), config.leads.max_call_seconds)
        .with_media(media.anchor.clone());
    let relay = media.relay;
    node.share_dialogs(lookups.shared);
    let mut hub = TcpHub::new(tcp);
    let mut news = News { tx: call_tx };

    let mut shutdown = Box::pin(async {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = node_hold.lost() => {
                tracing::error!("storage.node_name is held by another process now: this one drains its calls and exits");
            }
        }
    });
    ignore_hangups();
    let mut drain_deadline: Option<Instant> = None;
    // Set when the drain ended: the shutdown's own requests get this long
    // for their answers.
    let mut farewell: Option<Instant> = None;
    let mut udp = UdpIo::new(udp_sockets, udp_stats);
    let mut stats_logged = Instant::now();
    let mut snapshot_at = Instant::now();
    let mut trim = crate::memory::TrimPolicy::default();
    let mut last_stats = node.proxy().stats.clone();

    loop {
        let deadline = node.next_deadline().and_then(|ms| clock.instant_of(ms));
        // At least once a second even when idle: /metrics stays current.
        let wake = deadline.map_or(Instant::now() + TICK, |d| d.min(Instant::now() + TICK));
        let sleep = tokio::time::sleep_until(wake.into());
        tokio::select! {
            biased;
            _ = &mut shutdown, if drain_deadline.is_none() => {
                tracing::info!(drain_seconds = config.shutdown.drain_seconds, "shutting down: refusing new calls, draining");
                node.start_draining();
                drain_deadline = Some(Instant::now() + Duration::from_secs(config.shutdown.drain_seconds));
            }
            r = poll_fn(|cx| udp.poll_recv(cx)) => match r {
                // What one socket had queued (up to udp::RECV_BATCH), each
                // message through the core; what they produce leaves in
                // one flush below.
                Ok(n) => {
                    for k in 0..n {
                        let Some((data, from)) = udp.received(k) else { continue };
                        let peer = Peer { transport: Transport::Udp, addr: from };
                        log_sip("in", peer, data);
                        let data = Bytes::copy_from_slice(data);
                        trace_sip(traces.as_deref(), Direction::In, peer, &data, &clock);
                        node.on_message(clock.now(), peer, data);
                    }
                }
                // Counted on /metrics; a UDP socket's errors are one-shot
                // (an ICMP report), the socket stays usable.
                Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
            },
            Some(report) = media_rx.recv() => on_media_report(&mut node, clock.now(), report),
            Some((miss, found)) = looked_up_rx.recv() => {
                node.on_looked_up(clock.now(), miss, found);
            }
            Some(ev) = tcp_rx.recv() => {
                hub.on_event(&ev);
                match ev {
                    TcpEvent::Message { remote, data } => {
                        let peer = Peer { transport: Transport::Tcp, addr: remote };
                        log_sip("in", peer, &data);
                        trace_sip(traces.as_deref(), Direction::In, peer, &data, &clock);
                        node.on_message(clock.now(), peer, data);
                    }
                    TcpEvent::Closed { remote, unreachable: true, .. } => {
                        let peer = Peer { transport: Transport::Tcp, addr: remote };
                        node.on_unreachable(clock.now(), peer);
                    }
                    _ => {}
                }
            }
            _ = sleep => {}
        }
        node.on_timer(clock.now());
        flush(
            &mut node,
            &mut udp,
            &mut hub,
            &mut news,
            relay.as_ref(),
            traces.as_deref(),
            &clock,
        );
        lookups.start(&mut node);
        if snapshot_at.elapsed() >= TICK {
            snapshot_at = Instant::now();
            // After a burst, give the freed heap back (every 10 s at most).
            if trim.tick(node.proxy().active_transactions(), 10) {
                node.shrink();
                lookups.store.release_memory();
                crate::memory::release_unused();
            }
            if let Ok(a) = media.anchor.lock() {
                media_metrics.publish_anchor(&a.stats);
            }
            if let Some(t) = &traces {
                if let Ok(mut t) = t.lock() {
                    t.expire(clock.unix_ms());
                }
            }
            if let Ok(mut snap) = sip_snapshot.lock() {
                let proxy = node.proxy();
                snap.stats = proxy.stats.clone();
                snap.dialogs = proxy.active_dialogs();
                snap.transactions = proxy.active_transactions();
            }
        }
        // The counters also go to the log, for installations without a
        // metrics scraper.
        if stats_logged.elapsed() >= STATS_EVERY && node.proxy().stats != last_stats {
            stats_logged = Instant::now();
            last_stats = node.proxy().stats.clone();
            log_stats(node.proxy());
        }
        if let (Some(d), None) = (drain_deadline, farewell) {
            if node.is_idle() || Instant::now() >= d {
                log_stats(node.proxy());
                // Calls still up get their BYEs, calls still ringing their
                // CANCEL and a 503; they are recorded as they stand now.
                node.end_dialogs_for_shutdown(clock.now());
                node.close_calls(clock.now(), Some(Party::Shutdown));
                flush(
                    &mut node,
                    &mut udp,
                    &mut hub,
                    &mut news,
                    relay.as_ref(),
                    traces.as_deref(),
                    &clock,
                );
                farewell = Some(Instant::now() + FAREWELL);
            }
        }
        if let Some(f) = farewell {
            // Those BYEs and CANCELs are retransmitted until answered (a
            // lost one left a leg up: trial, 2026-12-03), for FAREWELL at
            // most; then the lead pipeline is flushed before exit.
            if node.pending_transactions() == 0 || Instant::now() >= f {
                // The recordings of those calls are finalised by the
                // writer; their records wait for it (a few seconds at most).
                drop(relay);
                let until = Instant::now() + Duration::from_secs(5);
                while node.records_waiting() > 0 && Instant::now() < until {
                    match tokio::time::timeout_at(until.into(), media_rx.recv()).await {
                        Ok(Some(report)) => on_media_report(&mut node, clock.now(), report),
                        _ => break,
                    }
                }
                node.release_records(clock.now());
                news.send(&mut node);
                let proxy = node.proxy();
                tracing::info!(
                    dialogs = proxy.active_dialogs(),
                    transactions = proxy.pending_transactions(),
                    "SIP stopped"
                );
                drop(news);
                let ended = match tokio::time::timeout(Duration::from_secs(30), pipeline).await {
                    Ok(Ok(end)) if end.undurable == 0 => {
                        tracing::info!("stopped");
                        Ok(())
                    }
                    Ok(Ok(end)) => Err(anyhow::anyhow!(
                        "{} call events could not be written to the database or the journal",
                        end.undurable
                    )),
                    Ok(Err(e)) => Err(anyhow::anyhow!("lead pipeline failed: {e}")),
                    Err(_) => pipeline_late(&storage_health),
                };
                if crm_sends {
                    deliver_before_exit(&outbox_store, &outbox_progress, &clock).await;
                }
                return ended;
            }
        }
    }
}

/// How long siptrack's own BYEs and CANCELs of a shutdown are
/// retransmitted while their answers are awaited: Timer E / A at T1 = 500
/// ms sends each three more times within it.
const FAREWELL: Duration = Duration::from_secs(4);

/// The exit when the lead pipeline did not finish in time (a database
/// that does not answer): fine when every call event it had is in the
/// journal (the next start replays it), an error naming what only memory
/// held. Trial, 2026-12-02: "calls it held may be lost" was said of calls
/// that were all in the journal.
fn pipeline_late(health: &StorageHealth) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let journaled = health.journaled.load(Relaxed);
    let in_memory = health.held.load(Relaxed) + health.queued.load(Relaxed);
    if in_memory == 0 {
        tracing::warn!(
            calls = journaled,
            "the database did not answer within 30 s: call events wait in the journal for the next start"
        );
        return Ok(());
    }
    Err(anyhow::anyhow!(
        "lead pipeline did not finish within 30 s (the database does not answer): {in_memory} call events held only in memory are lost; {journaled} wait in the journal"
    ))
}

/// How long the look at the database (`probe`) waits for an answer.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// Looks at the database (`Store::probe`; every few seconds, from
/// `watch_database_file`) and tells /healthz and /metrics what it found:
/// a database stopped, hung or locked while no call ends shows there too.
async fn probe(store: &Store, health: &StorageHealth) {
    {
        let problem = match tokio::time::timeout(PROBE_EVERY, store.probe()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "the database did not answer within {} s",
                PROBE_EVERY.as_secs()
            )),
        };
        health.set_probe(problem);
    }
}

/// The CRM requests of the last calls (those the drain closed, those
/// recorded just before) go out before the process ends, while the
/// worker gets on with them: at most 5 s, and only while a request is due
/// within a second or one was just attempted. A CRM that refuses or is
/// down keeps them in the outbox for the next start (or another node),
/// as always. Trial, 2026-12-02: a call closed by the drain and its
/// deal.create waited for the next start; a node retired for good kept
/// them.
async fn deliver_before_exit(store: &Store, progress: &OutboxMetrics, clock: &Clock) {
    const AT_MOST: Duration = Duration::from_secs(5);
    const QUIET: Duration = Duration::from_millis(1_500);
    let until = Instant::now() + AT_MOST;
    let (mut attempts, mut last_attempt) = (progress.attempts(), Instant::now());
    while Instant::now() < until {
        let pending = match tokio::time::timeout(Duration::from_secs(1), store.outbox_depth()).await
        {
            Ok(Ok(d)) => d.pending,
            _ => return,
        };
        if pending == 0 {
            tracing::info!("every CRM request delivered");
            return;
        }
        let due_soon = matches!(
            tokio::time::timeout(Duration::from_secs(1), store.outbox_next_due()).await,
            Ok(Ok(Some(at))) if at <= clock.unix_ms() as i64 + 1_000
        );
        if progress.attempts() != attempts {
            (attempts, last_attempt) = (progress.attempts(), Instant::now());
        }
        if !due_soon && last_attempt.elapsed() >= QUIET {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_secs(1), store.outbox_depth()).await {
        if d.pending > 0 {
            tracing::info!(
                pending = d.pending,
                "CRM requests left in the outbox for the next start"
            );
        }
    }
}

/// `RUST_LOG=siptrack=debug`: every SIP message in and out, by its first
/// line and Call-ID. Costs one level check when debug is off.
fn log_sip(dir: &'static str, peer: Peer, data: &[u8]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let first = data
        .split(|&b| b == b'\n')
        .next()
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .unwrap_or_default();
    // The project's one SIP reader (compact `i:` and folding included);
    // only at debug, so the hot path never parses twice.
    let message = Message::parse(
        Bytes::copy_from_slice(data),
        peer.transport == Transport::Udp,
    );
    let call_id = message
        .as_ref()
        .ok()
        .and_then(|m| m.call_id())
        .unwrap_or_default();
    tracing::debug!(
        dir,
        transport = peer.transport.via_token(),
        peer = %peer.addr,
        call_id = %crate::log_text::Clean(&String::from_utf8_lossy(call_id)),
        first_line = %crate::log_text::Clean(&String::from_utf8_lossy(first)),
        "SIP"
    );
}

/// `ui.sip_trace_minutes`: the message joins its call's ladder (by the
/// project's SIP reader; a message without a Call-ID has no call).
fn trace_sip(
    traces: Option<&Mutex<SipTraces>>,
    dir: Direction,
    peer: Peer,
    data: &Bytes,
    clock: &Clock,
) {
    let Some(traces) = traces else { return };
    let Ok(message) = Message::parse(data.clone(), peer.transport == Transport::Udp) else {
        return;
    };
    let Some(call_id) = message.call_id() else {
        return;
    };
    if let Ok(mut t) = traces.lock() {
        t.record_from(
            call_id,
            Traced {
                at: clock.unix_ms(),
                dir,
                peer: format!(
                    "{} {}",
                    peer.transport.via_token().to_ascii_lowercase(),
                    peer.addr
                ),
                from_ip: (dir == Direction::In).then(|| peer.addr.ip()),
                data: data.clone(),
            },
            peer.addr.ip(),
        );
    }
}

/// The TCP limits, with the connection cap fitted under the descriptor
/// limit (HTTP connections and the rest of the process need theirs).
fn tcp_context(config: &Config, events: mpsc::Sender<TcpEvent>) -> Arc<TcpContext> {
    let sip = &config.sip;
    let fds = fd_limit();
    let limits = sip
        .tcp
        .fit_to_fds(fds, FD_RESERVE + config.http.max_connections);
    if limits.max_connections < sip.tcp.max_connections {
        tracing::warn!(
            configured = sip.tcp.max_connections,
            used = limits.max_connections,
            open_files_limit = fds,
            "sip.tcp_max_connections lowered to fit the open files limit (raise LimitNOFILE / ulimit -n)"
        );
    }
    TcpContext::new(
        limits,
        sip.trusted_sources.clone(),
        sip.max_message_bytes,
        events,
    )
}

fn log_stats(proxy: &Proxy) {
    // Every counter of the core, by its /metrics name: one list.
    let counters: Vec<String> = proxy
        .stats
        .fields()
        .iter()
        .map(|(name, n)| format!("{name}={n}"))
        .collect();
    tracing::info!(
        counters = %counters.join(" "),
        dialogs = proxy.active_dialogs(),
        transactions = proxy.active_transactions(),
        "sip counters"
    );
}

/// Look-ups of dialogs another node set up (issue 14): an in-dialog
/// request whose dialog this node lacks waits while the store is asked,
/// then comes back with what it found.
struct Lookups {
    shared: bool,
    store: Store,
    tx: mpsc::UnboundedSender<(DialogMiss, Option<AdoptedCall>)>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

/// Look-ups waiting at once; beyond, a request gets its 481 at once (a
/// database that hangs must not pile requests up in memory).
const MAX_LOOKUPS: usize = 1024;

impl Lookups {
    fn start(&mut self, node: &mut Node) {
        use std::sync::atomic::Ordering;
        for miss in node.take_dialog_misses() {
            let tx = self.tx.clone();
            if self.in_flight.load(Ordering::Relaxed) >= MAX_LOOKUPS {
                tracing::warn!(call_id = %miss.call_id, "too many dialog look-ups waiting; 481");
                let _ = tx.send((miss, None));
                continue;
            }
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            let (store, in_flight) = (self.store.clone(), self.in_flight.clone());
            tokio::spawn(async move {
                let found = match store.open_dialog(&miss.call_id).await {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::warn!(call_id = %miss.call_id, error = %e, "looking up a dialog in the database; 481");
                        None
                    }
                };
                in_flight.fetch_sub(1, Ordering::Relaxed);
                // The SIP loop is gone only when the process stops.
                let _ = tx.send((miss, found));
            });
        }
    }
}

/// Call news on their way to the lead pipeline.
struct News {
    tx: mpsc::UnboundedSender<CallNews>,
}

impl News {
    fn send(&mut self, node: &mut Node) {
        for n in node.take_news() {
            if self.tx.send(n).is_err() {
                tracing::error!("lead pipeline gone; call news lost");
            }
        }
    }
}

/// Everything one pass of the loop produced goes out: media commands,
/// call news, and the messages (UDP ones batched per socket).
fn flush(
    node: &mut Node,
    udp: &mut UdpIo,
    hub: &mut TcpHub,
    news: &mut News,
    relay: Option<&RelayHandle>,
    traces: Option<&Mutex<SipTraces>>,
    clock: &Clock,
) {
    for cmd in node.take_media_commands() {
        if let Some(r) = relay {
            r.send(cmd);
        }
    }
    news.send(node);
    for out in node.take_sends() {
        let Output::Send { to, data } = out;
        log_sip("out", to, &data);
        trace_sip(traces, Direction::Out, to, &data, clock);
        match to.transport {
            Transport::Udp => udp.queue(to.addr, data),
            Transport::Tcp => hub.send(to.addr, data),
        }
    }
    udp.flush();
}

/// The media side of a node: the phase's state and, when calls are
/// recorded, the relay thread's handle.
struct Media {
    anchor: Arc<Mutex<Anchor>>,
    relay: Option<RelayHandle>,
    /// File names of the recordings repaired at start (partial).
    partial: std::collections::HashSet<String>,
}

/// Starts the recording writer and the relay (repairing what a crash left
/// in `recordings_dir` first), or, with `record_calls = false`, a media
/// phase that leaves every call alone.
fn start_media(
    config: &Config,
    metrics: &Arc<MediaMetrics>,
    reports: mpsc::UnboundedSender<MediaReport>,
) -> anyhow::Result<Media> {
    let m = &config.media;
    let settings = MediaSettings {
        enabled: m.record_calls,
        advertised_ip: m.advertised_ip,
        advertised_other: m.advertised_other,
    };
    if !m.record_calls {
        // No sockets: the phase only counts calls as `disabled`.
        let ports = PortAllocator::new(m.port_min, m.port_max, 0)?;
        let anchor = Anchor::new(settings, Box::new(ports));
        return Ok(Media {
            anchor: Arc::new(Mutex::new(anchor)),
            relay: None,
            partial: Default::default(),
        });
    }
    let problem = match std::fs::create_dir_all(&m.recordings_dir) {
        // Calls still go through; each recording will fail and say why.
        Err(e) => Some(format!("cannot create {}: {e}", m.recordings_dir.display())),
        Ok(()) => dir_write_problem(&m.recordings_dir),
    };
    if let Some(p) = &problem {
        // Said once at start rather than first learnt from the first
        // call's failure (trial, 2026-12-02: a read-only directory started
        // with "recording calls" and no word of it), and on /healthz.
        tracing::error!(problem = %p, "media.recordings_dir cannot take recordings: calls will go through unrecorded");
    }
    if let Ok(mut slot) = metrics.dir_problem.lock() {
        *slot = problem;
    }
    let repaired = writer::repair_dir(&m.recordings_dir);
    for p in &repaired.partial {
        tracing::warn!(file = %p.display(), "recording left unfinished by a crash: finalised as partial");
    }
    for p in &repaired.removed {
        tracing::warn!(file = %p.display(), "recording left by a crash before its header: removed");
    }
    for (p, e) in &repaired.failed {
        tracing::error!(file = %p.display(), error = %e, "recording left by a crash could not be repaired");
    }
    metrics.recordings_repaired.fetch_add(
        repaired.partial.len() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    if let Some(limit) = media_fds_short(fd_limit(), m.port_min, m.port_max) {
        tracing::warn!(
            open_files_limit = limit,
            media_ports = u32::from(m.port_max - m.port_min) + 1,
            "the open files limit is below the media port range: busy hours may leave calls unrecorded (raise LimitNOFILE / ulimit -n)"
        );
    }
    let to_node = reports.clone();
    let writer = writer::spawn(m.recordings_dir.clone(), metrics.clone(), move |o| {
        let _ = to_node.send(MediaReport::Recording(o));
    })?;
    // Peers of both families (`advertised_other`): dual-stack sockets.
    let bind_ip = if m.advertised_ip.is_ipv4() && m.advertised_other.is_none() {
        std::net::IpAddr::from([0u8; 4])
    } else {
        std::net::IpAddr::from([0u16; 8])
    };
    let cfg = RelayConfig {
        bind_ip,
        port_min: m.port_min,
        port_max: m.port_max,
        timeout_ms: m.rtp_timeout_seconds * 1000,
    };
    let (ports, relay) = relay_io::start(&cfg, writer, metrics.clone(), move |r| {
        let _ = reports.send(r);
    })?;
    tracing::info!(
        advertised_ip = %m.advertised_ip,
        ports = %format!("{}-{}", m.port_min, m.port_max),
        dir = %m.recordings_dir.display(),
        "recording calls"
    );
    Ok(Media {
        anchor: Arc::new(Mutex::new(Anchor::new(settings, Box::new(ports)))),
        relay: Some(relay),
        partial: repaired
            .partial
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect(),
    })
}

/// The open files limit when it cannot hold every media port plus the
/// rest of the process's descriptors: each media port is a socket, so
/// past the limit calls find no ports (unrecorded) and TCP and HTTP
/// compete with the relay for what is left.
fn media_fds_short(limit: Option<u64>, port_min: u16, port_max: u16) -> Option<u64> {
    let ports = u64::from(port_max.saturating_sub(port_min)) + 1;
    limit.filter(|&l| l < ports + FD_RESERVE as u64)
}

fn on_media_report(node: &mut Node, now: crate::clock::Now, report: MediaReport) {
    match report {
        MediaReport::TimedOut { session } => node.on_media_timeout(now, session),
        MediaReport::Latched { session, leg, from } => {
            tracing::debug!(session, ?leg, %from, "media source latched");
        }
        MediaReport::Recording(o) => {
            let call_id = String::from_utf8_lossy(&o.call_id).into_owned();
            match &o.result {
                Ok(s) if s.lost_packets > 0 => {
                    tracing::warn!(
                        %call_id,
                        file = %o.file.display(),
                        duration_ms = s.duration_ms,
                        lost_packets = s.lost_packets,
                        "recording finished with gaps: the recorder fell behind (disk or CPU) and lost packets; recorded as partial"
                    )
                }
                Ok(s) => {
                    tracing::info!(
                        %call_id,
                        file = %o.file.display(),
                        duration_ms = s.duration_ms,
                        dtmf = s.dtmf.len(),
                        late_ms = (s.caller.late_samples + s.callee.late_samples) / 8,
                        rebases = s.caller.rebases + s.callee.rebases,
                        other_payload_packets = s.unsupported_packets,
                        "recording finished"
                    )
                }
                Err(e) => {
                    tracing::warn!(%call_id, file = %o.file.display(), error = %e, "call not recorded")
                }
            }
            node.on_recording(&call_id, o.result);
        }
    }
}

/// SIGHUP (`systemctl reload`, logrotate's `postrotate kill -HUP`, a
/// closed terminal) does not end siptrack: it is logged and ignored.
/// Its default action killed the process at once, calls and all, like a
/// crash (trial, 2026-12-02). Nothing is reloaded: a changed config needs
/// a restart (SIGTERM drains).
fn ignore_hangups() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::warn!("SIGHUP ignored: nothing is reloaded; restart (SIGTERM drains) to apply a changed config");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot catch SIGHUP: it will end the process"),
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `media.retention_days`: a sweep at start, then hourly, off the SIP
/// thread (it touches the disk).
async fn sweep_recordings(
    dir: std::path::PathBuf,
    retention_seconds: u64,
    metrics: Arc<RetentionMetrics>,
) {
    loop {
        let (dir, m) = (dir.clone(), metrics.clone());
        let swept = tokio::task::spawn_blocking(move || {
            retention::sweep(&dir, std::time::SystemTime::now(), retention_seconds, &m)
        })
        .await;
        if let Err(e) = swept {
            tracing::error!(error = %e, "recordings retention sweep failed");
        }
        tokio::time::sleep(retention::EVERY).await;
    }
}

/// How often a node sharing PostgreSQL reads back the numbers other nodes
/// granted: a call to a number another node handed out within this long
/// may not find its visit yet.
const SHARED_POOLS_EVERY: Duration = Duration::from_millis(500);

/// Keeps this node's pools in step with the numbers every node granted
/// (the SIP thread looks calls up in memory, never in the database).
async fn follow_shared_pools(store: Store, pools: Arc<Mutex<Pools>>) {
    let mut tick = tokio::time::interval(SHARED_POOLS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Grants made here while the database was down go in first: the
        // database keeps the newest version of each number, and every node
        // then reads the same one back.
        let mut unsaved = pools
            .lock()
            .map(|mut p| p.take_unsaved())
            .unwrap_or_default()
            .into_iter();
        while let Some(row) = unsaved.next() {
            if let Err(e) = store.save_assignment(&row).await {
                tracing::debug!(error = %e, number = %row.number, "pool grants still not written");
                // Still down: this one and the rest wait for the next tick.
                if let Ok(mut p) = pools.lock() {
                    for r in std::iter::once(row).chain(unsaved.by_ref()) {
                        p.remember_unsaved(r);
                    }
                }
                break;
            }
        }
        match store.load_assignments().await {
            Ok(rows) => {
                if let Ok(mut p) = pools.lock() {
                    p.restore(rows);
                }
            }
            Err(e) => tracing::debug!(error = %e, "reading pool numbers granted by other nodes"),
        }
    }
}

/// How often the SQLite file is checked (`watch_database_file`).
const FILE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Checks every few seconds that the SQLite database file is the one open:
/// a deleted one is written back (`SqliteStore::check_file`); a replaced
/// one makes /healthz 503 until a restart, since this process goes on
/// writing into the file it opened.
///
/// Every other tick it looks at the database for /healthz (`probe`).
async fn watch_database_file(store: Store, health: Arc<StorageHealth>, database: String) {
    use crate::store::sqlite::FileCheck;
    let mut said_at: Option<Instant> = None;
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(FILE_CHECK_EVERY).await;
        // Every other tick (10 s): each look is a blocking call, and an
        // idle node must hardly wake (tests/e2e_bench.rs).
        tick += 1;
        if tick.is_multiple_of(2) {
            probe(&store, &health).await;
        }
        if store.is_shared() {
            continue;
        }
        match store.check_file().await {
            Ok(FileCheck::Same) => {}
            Ok(FileCheck::WrittenBack) => {
                tracing::error!(
                    database = %database,
                    "the database file was deleted while siptrack ran; everything it held was written back to its path, and siptrack goes on with that file"
                );
                health.set_file_problem(None);
            }
            Ok(FileCheck::Replaced) => {
                let why = format!("the database file ({database}) was replaced by another file while siptrack ran; this process still writes to the one it opened: restart it to use the new one");
                if said_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::error!("{why}");
                    said_at = Some(Instant::now());
                }
                health.set_file_problem(Some(why));
            }
            Err(e) => {
                // Deleted and not written back (its directory gone, a full
                // disk): calls go into the deleted file meanwhile.
                let why = format!(
                    "the database file ({database}) is gone and could not be written back: {e}"
                );
                if said_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::error!("{why}");
                    said_at = Some(Instant::now());
                }
                health.set_file_problem(Some(why));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exit when the lead pipeline outlived its 30 s: fine when the
    /// journal holds every call event it had, an error naming those only
    /// memory held.
    #[test]
    fn a_late_pipeline_fails_the_exit_only_for_events_not_in_the_journal() {
        use std::sync::atomic::Ordering::Relaxed;
        for (journaled, held, queued, ok) in [
            (0, 0, 0, true),
            (12, 0, 0, true),
            (12, 3, 0, false),
            (0, 0, 4, false),
        ] {
            let h = StorageHealth::default();
            h.journaled.store(journaled, Relaxed);
            h.held.store(held, Relaxed);
            h.queued.store(queued, Relaxed);
            let got = pipeline_late(&h);
            assert_eq!(got.is_ok(), ok, "{journaled} {held} {queued}: {got:?}");
            if let Err(e) = got {
                let text = e.to_string();
                assert!(
                    text.contains(&format!(
                        "{} call events held only in memory",
                        held + queued
                    )),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn the_open_files_limit_against_the_media_range() {
        // (limit, port_min, port_max, warned)
        for (limit, min, max, warned) in [
            (Some(1024), 30000, 40000, true),
            (Some(20_000), 30000, 40000, false),
            (Some(10_257), 30000, 40000, false),
            (Some(10_256), 30000, 40000, true),
            (None, 30000, 40000, false),
        ] {
            assert_eq!(
                media_fds_short(limit, min, max).is_some(),
                warned,
                "{limit:?} {min}..{max}"
            );
        }
    }
}
