//! The HTTP server loop (issue 12): axum's router on hyper connections,
//! with what `axum::serve` lacks on a public address. At most
//! `http.max_connections` are served at once (more wait in the kernel's
//! backlog until a place frees), and a request's header section must
//! arrive within `http.header_timeout_seconds` of the connection's start or
//! the previous response; an idle keep-alive connection is closed then too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::HttpConfig;
use crate::transport::limits::{accept_backoff, LogGate};

/// Serves `app` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, app: Router, config: &HttpConfig) {
    let places = Arc::new(Semaphore::new(config.max_connections));
    let header_timeout = Duration::from_secs(config.header_timeout_seconds);
    let started = Instant::now();
    let mut error_log = LogGate::new(Duration::from_secs(10));
    let mut full_log = LogGate::new(Duration::from_secs(10));
    loop {
        // Waiting for a place before accepting leaves further connections
        // in the backlog: nothing is read from them, no memory is spent.
        let place = match places.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if let Some(left_out) = full_log.note(started.elapsed().as_millis() as u64) {
                    tracing::warn!(
                        max = config.max_connections,
                        left_out,
                        "HTTP connections at http.max_connections; new ones wait"
                    );
                }
                match places.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                }
            }
        };
        let (stream, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                let pause = accept_backoff(&e);
                if let Some(left_out) = error_log.note(started.elapsed().as_millis() as u64) {
                    tracing::warn!(error = %e, left_out, "HTTP accept failed");
                }
                if let Some(p) = pause {
                    tokio::time::sleep(p).await;
                }
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "HTTP connection ended");
            }
            drop(place);
        });
    }
}
