//! TCP: accepted and outgoing connections, each framed by Content-Length
//! (RFC 3261 18.3), with RFC 5626 CRLF keep-alives answered. The core
//! addresses a connection by its remote address; responses therefore go
//! back on the connection their request came on.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::sip::{Framer, StreamFrame};

/// What connection tasks tell the core.
#[derive(Debug)]
pub enum TcpEvent {
    Opened {
        remote: SocketAddr,
        writer: mpsc::Sender<Bytes>,
    },
    Message {
        remote: SocketAddr,
        data: Bytes,
    },
    Closed {
        remote: SocketAddr,
        writer: mpsc::Sender<Bytes>,
    },
}

/// Messages a connection may have queued before writes block the core.
const WRITE_QUEUE: usize = 1024;

/// The core's view of open connections.
pub struct TcpHub {
    conns: HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    events: mpsc::Sender<TcpEvent>,
    max_message_bytes: usize,
}

impl TcpHub {
    pub fn new(events: mpsc::Sender<TcpEvent>, max_message_bytes: usize) -> TcpHub {
        TcpHub {
            conns: HashMap::new(),
            events,
            max_message_bytes,
        }
    }

    pub fn on_event(&mut self, ev: &TcpEvent) {
        match ev {
            TcpEvent::Opened { remote, writer } => {
                self.conns.insert(*remote, writer.clone());
            }
            TcpEvent::Closed { remote, writer } => {
                if self
                    .conns
                    .get(remote)
                    .is_some_and(|w| w.same_channel(writer))
                {
                    self.conns.remove(remote);
                }
            }
            TcpEvent::Message { .. } => {}
        }
    }

    /// Sends on the connection to `to`, connecting first if there is none.
    pub fn send(&mut self, to: SocketAddr, data: Bytes) {
        if let Some(w) = self.conns.get(&to) {
            match w.try_send(data) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(%to, "TCP write queue full, message dropped");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    self.conns.remove(&to);
                    return self.send(to, d);
                }
            }
        }
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let _ = tx.try_send(data);
        self.conns.insert(to, tx.clone());
        let events = self.events.clone();
        let max = self.max_message_bytes;
        tokio::spawn(async move {
            match TcpStream::connect(to).await {
                Ok(stream) => {
                    stream.set_nodelay(true).ok();
                    run_connection(stream, to, tx, rx, events, max).await;
                }
                Err(e) => {
                    tracing::warn!(%to, error = %e, "TCP connect failed");
                    let _ = events
                        .send(TcpEvent::Closed {
                            remote: to,
                            writer: tx,
                        })
                        .await;
                }
            }
        });
    }
}

/// Accepts connections until the listener fails.
pub async fn accept_loop(listener: TcpListener, events: mpsc::Sender<TcpEvent>, max: usize) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                stream.set_nodelay(true).ok();
                let (tx, rx) = mpsc::channel(WRITE_QUEUE);
                if events
                    .send(TcpEvent::Opened {
                        remote,
                        writer: tx.clone(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                let events = events.clone();
                tokio::spawn(run_connection(stream, remote, tx, rx, events, max));
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn run_connection(
    stream: TcpStream,
    remote: SocketAddr,
    tx: mpsc::Sender<Bytes>,
    mut rx: mpsc::Receiver<Bytes>,
    events: mpsc::Sender<TcpEvent>,
    max: usize,
) {
    let (mut reader, mut writer) = stream.into_split();
    let write_task = tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            if writer.write_all(&data).await.is_err() {
                break;
            }
        }
    });
    let mut buf = BytesMut::with_capacity(8192);
    let mut framer = Framer::default();
    'read: loop {
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            match framer.next(&buf, max) {
                StreamFrame::Complete(n) => {
                    let data = buf.split_to(n).freeze();
                    if events
                        .send(TcpEvent::Message { remote, data })
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                StreamFrame::KeepAlive { len, ping } => {
                    let _ = buf.split_to(len);
                    if ping {
                        let _ = tx.try_send(Bytes::from_static(b"\r\n"));
                    }
                }
                StreamFrame::Incomplete => break,
                StreamFrame::Invalid(why) => {
                    tracing::info!(%remote, why, "closing TCP connection: unframeable stream");
                    break 'read;
                }
            }
        }
    }
    write_task.abort();
    let _ = events.send(TcpEvent::Closed { remote, writer: tx }).await;
}
