//! TCP: accepted and outgoing connections, each framed by Content-Length
//! (RFC 3261 18.3), with RFC 5626 CRLF keep-alives answered. The core
//! addresses a connection by its remote address; responses therefore go
//! back on the connection their request came on.
//!
//! Limits (issue 12, see `limits.rs` and `queue.rs`): accepted connections
//! are capped in total and per untrusted source, a connection is closed
//! after `idle_seconds` without traffic (untrusted peers) or when a message
//! does not complete within `message_timeout_seconds`, and a peer that does
//! not read is disconnected once `write_queue_bytes` are waiting for it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub use super::limits::TcpLimits;
use super::limits::{
    accept_backoff, is_partial_message, next_expiry, ConnTable, Expiry, LogGate, Refusal, Slot,
};
use super::queue::{self, Push, QueueReceiver, WriteQueue};
use crate::sip::{Framer, StreamFrame};

/// What connection tasks tell the core.
pub enum TcpEvent {
    Opened {
        remote: SocketAddr,
        writer: WriteQueue,
    },
    Message {
        remote: SocketAddr,
        data: Bytes,
    },
    Closed {
        remote: SocketAddr,
        writer: WriteQueue,
        /// The connection could not be made: what was queued for it is
        /// lost (RFC 3261 16.9: the requests sent there failed).
        unreachable: bool,
    },
}

/// What every connection task needs: the limits, who is trusted, where
/// events go. One per process, shared by the listeners and the hub.
pub struct TcpContext {
    pub limits: TcpLimits,
    pub trusted: Vec<IpNet>,
    pub max_message_bytes: usize,
    pub events: mpsc::Sender<TcpEvent>,
    table: Arc<Mutex<ConnTable>>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    refused_total: AtomicU64,
    refused_per_source: AtomicU64,
    closed_idle: AtomicU64,
    closed_slow_message: AtomicU64,
    closed_write_queue: AtomicU64,
    responses_unsent: AtomicU64,
}

/// What the limits did, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Accepted connections open now.
    pub open: u64,
    pub refused_total: u64,
    pub refused_per_source: u64,
    pub closed_idle: u64,
    pub closed_slow_message: u64,
    pub closed_write_queue: u64,
    /// Responses to untrusted peers whose connection was gone.
    pub responses_unsent: u64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl TcpContext {
    pub fn new(
        limits: TcpLimits,
        trusted: Vec<IpNet>,
        max_message_bytes: usize,
        events: mpsc::Sender<TcpEvent>,
    ) -> Arc<TcpContext> {
        Arc::new(TcpContext {
            limits,
            trusted,
            max_message_bytes,
            events,
            table: Arc::new(Mutex::new(ConnTable::default())),
            counters: Counters::default(),
        })
    }

    pub fn stats(&self) -> TcpStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TcpStats {
            open: self.table.lock().unwrap_or_else(|e| e.into_inner()).total() as u64,
            refused_total: get(&c.refused_total),
            refused_per_source: get(&c.refused_per_source),
            closed_idle: get(&c.closed_idle),
            closed_slow_message: get(&c.closed_slow_message),
            closed_write_queue: get(&c.closed_write_queue),
            responses_unsent: get(&c.responses_unsent),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|n| n.contains(&ip))
    }
}

/// How often a kind of TCP trouble is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The core's view of open connections.
pub struct TcpHub {
    conns: HashMap<SocketAddr, WriteQueue>,
    ctx: Arc<TcpContext>,
    overflow_log: LogGate,
    started: Instant,
}

impl TcpHub {
    pub fn new(ctx: Arc<TcpContext>) -> TcpHub {
        TcpHub {
            conns: HashMap::new(),
            ctx,
            overflow_log: LogGate::new(LOG_EVERY),
            started: Instant::now(),
        }
    }

    pub fn on_event(&mut self, ev: &TcpEvent) {
        match ev {
            TcpEvent::Opened { remote, writer } => {
                self.conns.insert(*remote, writer.clone());
            }
            TcpEvent::Closed { remote, writer, .. } => {
                if self.conns.get(remote).is_some_and(|w| w.same(writer)) {
                    self.conns.remove(remote);
                }
            }
            TcpEvent::Message { .. } => {}
        }
    }

    /// Sends on the connection to `to`, connecting first if there is none:
    /// for a request (where routing sends it) or a response to a trusted
    /// source. A response to anyone else goes on its own connection or
    /// not at all (RFC 3261 18.2.2 would open a new one): dialing an
    /// untrusted peer back let it hold connections past its per-source
    /// cap and fill the log with failed connects (trial, 2026-12-02: its
    /// request, then an unframeable one in one write, closed the
    /// connection before the request's 403 went out).
    pub fn send(&mut self, to: SocketAddr, data: Bytes) {
        if let Some(w) = self.conns.get(&to) {
            match w.push(data) {
                Push::Queued => return,
                Push::Overflow => {
                    let now = self.started.elapsed().as_millis() as u64;
                    if let Some(left_out) = self.overflow_log.note(now) {
                        tracing::warn!(%to, queue_bytes = w.limit(), left_out,
                            "TCP peer does not read: write queue full, closing the connection");
                    }
                    return;
                }
                // Closing after an overflow: the peer gets nothing more.
                Push::Closed(_) if w.is_overflowed() => return,
                Push::Closed(d) => {
                    self.conns.remove(&to);
                    return self.send(to, d);
                }
            }
        }
        let response = data.starts_with(b"SIP/2.0 ");
        if response && !self.ctx.is_trusted(to.ip()) {
            bump(&self.ctx.counters.responses_unsent);
            return;
        }
        if response {
            let listening = reconnect_to(to, &data);
            if listening != to {
                return self.send(listening, data);
            }
        }
        let (tx, rx) = queue::channel(self.ctx.limits.write_queue_bytes);
        let _ = tx.push(data);
        self.conns.insert(to, tx.clone());
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            match TcpStream::connect(to).await {
                Ok(stream) => {
                    stream.set_nodelay(true).ok();
                    run_connection(stream, to, tx, rx, ctx, None).await;
                }
                Err(e) => {
                    tracing::warn!(%to, error = %e, "TCP connect failed");
                    let _ = ctx
                        .events
                        .send(TcpEvent::Closed {
                            remote: to,
                            writer: tx,
                            unreachable: true,
                        })
                        .await;
                }
            }
        });
    }
}

/// Where a response goes when the connection its request came on is gone
/// (RFC 3261 18.2.2): to the address the request came from, at the port
/// of the top Via's sent-by (5060 when it names none), where the client
/// listens; the old connection's port was the client's ephemeral one, on
/// which nothing listens any more.
fn reconnect_to(to: SocketAddr, response: &[u8]) -> SocketAddr {
    let msg = crate::sip::Message::parse(Bytes::copy_from_slice(response), false).ok();
    let port = msg
        .as_ref()
        .and_then(|m| Some(m.top_via()?.via(m).port.unwrap_or(5060)));
    match port {
        Some(p) if p != 0 => SocketAddr::new(to.ip(), p),
        _ => to,
    }
}

/// Accepts connections until the core is gone. Connections over a cap are
/// closed at once (accepting them is the only way to take them out of the
/// backlog, where they would hold up a trusted trunk's connection).
pub async fn accept_loop(listener: TcpListener, ctx: Arc<TcpContext>) {
    let started = Instant::now();
    let mut error_log = LogGate::new(LOG_EVERY);
    let mut refusal_log = LogGate::new(LOG_EVERY);
    loop {
        let now_ms = || started.elapsed().as_millis() as u64;
        match listener.accept().await {
            Ok((stream, remote)) => {
                let trusted = ctx.is_trusted(remote.ip());
                let slot = match Slot::take(&ctx.table, &ctx.limits, remote.ip(), trusted) {
                    Ok(s) => s,
                    Err(why) => {
                        bump(match why {
                            Refusal::Total => &ctx.counters.refused_total,
                            Refusal::PerSource => &ctx.counters.refused_per_source,
                        });
                        if let Some(left_out) = refusal_log.note(now_ms()) {
                            let limit = match why {
                                Refusal::Total => "sip.tcp_max_connections",
                                Refusal::PerSource => "sip.tcp_max_connections_per_source",
                            };
                            tracing::warn!(%remote, limit, left_out, "TCP connection refused");
                        }
                        continue;
                    }
                };
                stream.set_nodelay(true).ok();
                let (tx, rx) = queue::channel(ctx.limits.write_queue_bytes);
                if ctx
                    .events
                    .send(TcpEvent::Opened {
                        remote,
                        writer: tx.clone(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::spawn(run_connection(
                    stream,
                    remote,
                    tx,
                    rx,
                    ctx.clone(),
                    Some(slot),
                ));
            }
            Err(e) => {
                let pause = accept_backoff(&e);
                if let Some(left_out) = error_log.note(now_ms()) {
                    tracing::warn!(error = %e, left_out, pause_ms = pause.map_or(0, |p| p.as_millis() as u64),
                        "TCP accept failed");
                }
                if let Some(p) = pause {
                    tokio::time::sleep(p).await;
                }
            }
        }
    }
}

/// Reads, frames and hands messages to the core; a second task writes the
/// queue out. `_slot` keeps the connection counted until it ends.
async fn run_connection(
    stream: TcpStream,
    remote: SocketAddr,
    tx: WriteQueue,
    mut rx: QueueReceiver,
    ctx: Arc<TcpContext>,
    _slot: Option<Slot>,
) {
    let start = tokio::time::Instant::now();
    let elapsed_ms = move || start.elapsed().as_millis() as u64;
    // Traffic in either direction, ms since `start`.
    let last_traffic = Arc::new(AtomicU64::new(0));
    let (mut reader, mut writer) = stream.into_split();
    let write_task = {
        let last_traffic = last_traffic.clone();
        tokio::spawn(async move {
            while let Some(data) = rx.next().await {
                let ok = writer.write_all(&data).await.is_ok();
                rx.written(data.len());
                if !ok {
                    break;
                }
                last_traffic.store(elapsed_ms(), Ordering::Relaxed);
            }
        })
    };
    let limits = &ctx.limits;
    // Trusted peers (the trunk, the PBX) may hold a quiet connection for a
    // long call; everyone else is closed when silent.
    let idle_ms = (!ctx.is_trusted(remote.ip())).then_some(limits.idle_seconds * 1000);
    let message_ms = limits.message_timeout_seconds * 1000;
    let max = ctx.max_message_bytes;
    let mut buf = BytesMut::with_capacity(8192);
    // Remembers how far the search for a message's end got: each byte is
    // scanned once however the segments cut it.
    let mut framer = Framer::default();
    // When the first byte of the message now in `buf` arrived.
    let mut partial_since: Option<u64> = None;
    'read: loop {
        let expiry = next_expiry(
            last_traffic.load(Ordering::Relaxed),
            partial_since,
            idle_ms,
            message_ms,
        );
        let wake = expiry.map(|(at, _)| start + Duration::from_millis(at));
        tokio::select! {
            r = reader.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => last_traffic.store(elapsed_ms(), Ordering::Relaxed),
            },
            _ = sleep_until(wake) => {
                // The writer may have moved the idle deadline meanwhile.
                let now = elapsed_ms();
                match next_expiry(last_traffic.load(Ordering::Relaxed), partial_since, idle_ms, message_ms) {
                    Some((at, why)) if now >= at => {
                        let (why, counter) = match why {
                            Expiry::Idle => ("idle (sip.tcp_idle_seconds)", &ctx.counters.closed_idle),
                            Expiry::SlowMessage => (
                                "message incomplete (sip.tcp_message_timeout_seconds)",
                                &ctx.counters.closed_slow_message,
                            ),
                        };
                        bump(counter);
                        tracing::debug!(%remote, why, "closing TCP connection");
                        break;
                    }
                    _ => continue,
                }
            }
            _ = tx.overflowed() => {
                bump(&ctx.counters.closed_write_queue);
                break;
            }
        }
        let mut framed = false;
        loop {
            match framer.next(&buf, max) {
                StreamFrame::Complete(n) => {
                    framed = true;
                    let data = buf.split_to(n).freeze();
                    if ctx
                        .events
                        .send(TcpEvent::Message { remote, data })
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                StreamFrame::KeepAlive { len, ping } => {
                    framed = true;
                    let _ = buf.split_to(len);
                    if ping {
                        let _ = tx.push(Bytes::from_static(b"\r\n"));
                    }
                }
                StreamFrame::Incomplete => break,
                StreamFrame::Invalid(why) => {
                    tracing::info!(%remote, why, "closing TCP connection: unframeable stream");
                    break 'read;
                }
            }
        }
        // A message's clock starts with its first byte.
        if !is_partial_message(&buf) {
            partial_since = None;
        } else if framed || partial_since.is_none() {
            partial_since = Some(elapsed_ms());
        }
    }
    write_task.abort();
    let _ = ctx
        .events
        .send(TcpEvent::Closed {
            remote,
            writer: tx,
            unreachable: false,
        })
        .await;
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_reconnects_to_the_via_port_table() {
        let to: SocketAddr = "192.0.2.7:40123".parse().expect("addr");
        let answer = |via: &str| {
            format!(
                "SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\n\
                 Call-ID: c@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
        };
        for (via, port) in [
            ("SIP/2.0/TCP 192.0.2.7:5070;branch=z9hG4bK1", 5070),
            // No port: SIP's own.
            ("SIP/2.0/TCP pbx.example.com;branch=z9hG4bK1", 5060),
            // The address is always the source's (RFC 3261 18.2.2).
            ("SIP/2.0/TCP 198.51.100.1:5080;branch=z9hG4bK1", 5080),
            // Nothing to go by: where it came from.
            ("garbage", 40123),
        ] {
            assert_eq!(
                reconnect_to(to, answer(via).as_bytes()),
                SocketAddr::new(to.ip(), port),
                "{via}"
            );
        }
    }
}
