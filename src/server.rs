//! `siptrack run`: binds the sockets and drives the proxy core on one
//! thread. One thread owns all transaction state, so the hot path takes no
//! locks; a SIP message costs microseconds, far below what a core can do.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use crate::calls::{CallEvent, CallRecord, CallTracker};
use crate::config::{Config, ListenAddr};
use crate::crm::metrics::OutboxMetrics;
use crate::crm::outbox::CallStart;
use crate::http::{unix_ms, AppState, SipSnapshot};
use crate::leads::pipeline::CallNews;
use crate::proxy::route::Identity;
use crate::proxy::{Output, Peer, Proxy, ProxySettings, Transport};
use crate::store::Store;
use crate::tracking::pools::Pools;
use crate::tracking::TrackingRouter;
use crate::transport::limits::{fd_limit, FD_RESERVE};
use crate::transport::tcp::{accept_loop, TcpContext, TcpEvent, TcpHub};
use crate::transport::udp;

/// Datagrams handled per wake-up before timers and TCP get a turn.
const UDP_BATCH: usize = 64;
/// The idle loop's period: call timeouts and the metrics snapshot.
const TICK: Duration = Duration::from_secs(1);
/// How often the SIP counters are logged when they changed.
const STATS_EVERY: Duration = Duration::from_secs(60);

pub fn run(config: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(serve(config))
}

struct UdpOut {
    listen: ListenAddr,
    socket: Arc<UdpSocket>,
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let sip = &config.sip;
    let mut udp_sockets = Vec::new();
    let mut udp_outs = Vec::new();
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
                    addr: s.local_addr()?,
                };
                let s = Arc::new(s);
                udp_outs.push(UdpOut {
                    listen: actual,
                    socket: s.clone(),
                });
                udp_sockets.push(s);
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
    };
    let store = Store::open(&config.storage.url)
        .await
        .context("opening the database")?;
    let mut pools = Pools::new(config.tracking.pools.clone());
    pools.restore(store.load_assignments().await?);
    let pools = Arc::new(Mutex::new(pools));
    let http = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding http {}", config.http.listen))?;
    tracing::info!(addr = %http.local_addr()?, "listening for HTTP");
    let leads = Arc::new(config.leads.clone());
    let outbox_metrics = Arc::new(OutboxMetrics::default());
    let sip_snapshot = Arc::new(Mutex::new(SipSnapshot::default()));
    let app = crate::http::router(AppState {
        sip: sip_snapshot.clone(),
        tcp: tcp.clone(),
        outbox_metrics: outbox_metrics.clone(),
        pools: pools.clone(),
        store: store.clone(),
        token: config.http.token.clone(),
        clock: unix_ms,
        leads: leads.clone(),
        phone: config.rewrite.phone.clone(),
    });
    let (call_tx, call_rx) = mpsc::unbounded_channel();
    let pipeline = tokio::spawn(crate::leads::pipeline::run(
        call_rx,
        store.clone(),
        leads.clone(),
    ));
    if config.leads.crm.sends_anything() {
        tokio::spawn(crate::crm::worker::run(
            store,
            Arc::new(config.crm.clone()),
            outbox_metrics,
        ));
    }
    let http_config = config.http.clone();
    tokio::spawn(async move { crate::http::serve(http, app, &http_config).await });
    let router = TrackingRouter::new(&config, pools, unix_ms);
    let mut proxy = Proxy::new(settings, Box::new(router));
    let mut hub = TcpHub::new(tcp);

    let start = Instant::now();
    let now_ms = |start: Instant| start.elapsed().as_millis() as u64;
    let mut calls = Calls {
        tracker: CallTracker::new(unix_ms(), config.leads.max_call_seconds),
        tx: call_tx,
        report_starts: config.leads.crm.call_start,
        last_tick: Instant::now(),
    };
    let mut shutdown = Box::pin(shutdown_signal());
    let mut drain_deadline: Option<Instant> = None;
    let mut buf = vec![0u8; 65536];
    let sockets: Vec<&UdpSocket> = udp_sockets.iter().map(|s| s.as_ref()).collect();
    let mut stats_logged = Instant::now();
    let mut last_stats = proxy.stats.clone();

    loop {
        let deadline = proxy
            .next_deadline()
            .map(|ms| start + Duration::from_millis(ms));
        // At least once a second even when idle: calls past
        // max_call_seconds are closed and /metrics stays current.
        let wake = deadline.map_or(Instant::now() + TICK, |d| d.min(Instant::now() + TICK));
        let sleep = tokio::time::sleep_until(wake.into());
        tokio::select! {
            biased;
            _ = &mut shutdown, if drain_deadline.is_none() => {
                tracing::info!(drain_seconds = config.shutdown.drain_seconds, "shutting down: refusing new calls, draining");
                proxy.start_draining();
                drain_deadline = Some(Instant::now() + Duration::from_secs(config.shutdown.drain_seconds));
            }
            (i, r) = poll_fn(|cx| poll_recv_refs(&sockets, cx, &mut buf)) => {
                if let Ok((n, from)) = r {
                    let peer = Peer { transport: Transport::Udp, addr: from };
                    proxy.on_message(now_ms(start), peer, Bytes::copy_from_slice(&buf[..n]));
                }
                // Drain what else is queued on that socket before sleeping again.
                for _ in 1..UDP_BATCH {
                    match sockets[i].try_recv_from(&mut buf) {
                        Ok((n, from)) => {
                            let peer = Peer { transport: Transport::Udp, addr: from };
                            proxy.on_message(now_ms(start), peer, Bytes::copy_from_slice(&buf[..n]));
                            flush(&mut proxy, &udp_outs, &mut hub, &mut calls);
                        }
                        Err(_) => break,
                    }
                }
            }
            Some(ev) = tcp_rx.recv() => {
                hub.on_event(&ev);
                if let TcpEvent::Message { remote, data } = ev {
                    proxy.on_message(now_ms(start), Peer { transport: Transport::Tcp, addr: remote }, data);
                }
            }
            _ = sleep => {}
        }
        proxy.on_timer(now_ms(start));
        flush(&mut proxy, &udp_outs, &mut hub, &mut calls);
        if calls.last_tick.elapsed() >= TICK {
            calls.last_tick = Instant::now();
            if let Ok(mut snap) = sip_snapshot.lock() {
                snap.stats = proxy.stats.clone();
                snap.dialogs = proxy.active_dialogs();
                snap.transactions = proxy.active_transactions();
            }
            for r in calls.tracker.on_tick(now_ms(start)) {
                calls.record(r);
            }
        }
        // The counters also go to the log, for installations without a
        // metrics scraper.
        if stats_logged.elapsed() >= STATS_EVERY && proxy.stats != last_stats {
            stats_logged = Instant::now();
            last_stats = proxy.stats.clone();
            log_stats(&proxy);
        }
        if let Some(d) = drain_deadline {
            let idle = proxy.active_dialogs() == 0 && proxy.pending_transactions() == 0;
            if idle || Instant::now() >= d {
                log_stats(&proxy);
                // Calls still open are recorded as they stand, then the
                // lead pipeline is flushed before exit.
                for r in calls.tracker.on_tick(u64::MAX / 2) {
                    calls.record(r);
                }
                drop(calls);
                if tokio::time::timeout(Duration::from_secs(30), pipeline)
                    .await
                    .is_err()
                {
                    tracing::error!("lead pipeline did not finish within 30 s");
                }
                tracing::info!(
                    dialogs = proxy.active_dialogs(),
                    transactions = proxy.pending_transactions(),
                    "stopped"
                );
                return Ok(());
            }
        }
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
    let s = &proxy.stats;
    tracing::info!(
        received = s.received,
        unparsable = s.unparsable,
        invalid = s.invalid,
        oversized = s.oversized,
        untrusted = s.untrusted,
        stray_responses = s.stray_responses,
        absorbed_retransmissions = s.absorbed_retransmissions,
        retransmissions_sent = s.retransmissions_sent,
        requests_forwarded = s.requests_forwarded,
        responses_forwarded = s.responses_forwarded,
        local_replies = s.local_replies,
        timeouts = s.timeouts,
        dialogs = proxy.active_dialogs(),
        transactions = proxy.active_transactions(),
        "sip counters"
    );
}

fn poll_recv_refs(
    sockets: &[&UdpSocket],
    cx: &mut std::task::Context<'_>,
    buf: &mut [u8],
) -> std::task::Poll<(usize, std::io::Result<(usize, std::net::SocketAddr)>)> {
    if sockets.is_empty() {
        return std::task::Poll::Pending;
    }
    for (i, s) in sockets.iter().enumerate() {
        let mut rb = tokio::io::ReadBuf::new(buf);
        if let std::task::Poll::Ready(r) = s.poll_recv_from(cx, &mut rb) {
            return std::task::Poll::Ready((i, r.map(|from| (rb.filled().len(), from))));
        }
    }
    std::task::Poll::Pending
}

/// Finished calls on their way to the lead pipeline.
struct Calls {
    tracker: CallTracker,
    tx: mpsc::UnboundedSender<CallNews>,
    last_tick: Instant,
    /// A call-start webhook is configured.
    report_starts: bool,
}

impl Calls {
    fn record(&mut self, r: CallRecord) {
        if self.tx.send(CallNews::Ended(r)).is_err() {
            tracing::error!("lead pipeline gone; call not recorded");
        }
    }

    fn on_event(&mut self, ev: CallEvent) {
        if self.report_starts {
            if let CallEvent::Started {
                call_id, at, info, ..
            } = &ev
            {
                // A retransmitted INVITE reports Started again.
                if !self.tracker.is_open(call_id) {
                    let start = CallStart {
                        call_id: String::from_utf8_lossy(call_id).into_owned(),
                        info: (**info).clone(),
                        invite_at: self.tracker.unix_ms(*at),
                    };
                    if self.tx.send(CallNews::Started(start)).is_err() {
                        tracing::error!("lead pipeline gone; call start not reported");
                    }
                }
            }
        }
        if let Some(r) = self.tracker.on_event(ev) {
            self.record(r);
        }
    }
}

fn flush(proxy: &mut Proxy, udp_outs: &[UdpOut], hub: &mut TcpHub, calls: &mut Calls) {
    for ev in proxy.take_call_events() {
        calls.on_event(ev);
    }
    for out in proxy.take_outputs() {
        let Output::Send { to, data } = out;
        match to.transport {
            Transport::Udp => {
                let sock = udp_outs
                    .iter()
                    .find(|u| u.listen.addr.is_ipv4() == to.addr.is_ipv4())
                    .or_else(|| udp_outs.first());
                if let Some(u) = sock {
                    if let Err(e) = u.socket.try_send_to(&data, to.addr) {
                        tracing::debug!(to = %to.addr, error = %e, "UDP send failed");
                    }
                }
            }
            Transport::Tcp => hub.send(to.addr, data),
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
