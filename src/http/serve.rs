//! The HTTP server loop (issue 12): axum's router on hyper connections,
//! with what `axum::serve` lacks on a public address. At most
//! `http.max_connections` are served at once (more wait in the kernel's
//! backlog until a place frees), and a request's header section must
//! arrive within `http.header_timeout_seconds` of the connection's start or
//! the previous response; an idle keep-alive connection is closed then too.
//! The body, read before any handler runs, gets as long again (408).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
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
    let app = app.layer(from_fn_with_state(header_timeout, body_in_time));
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
        let service = WithPeer {
            inner: TowerToHyperService::new(app.clone()),
            remote,
        };
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

/// The router's service with the connection's peer address in every
/// request's extensions (`ConnectInfo`: the console counts failed
/// sign-ins per address).
struct WithPeer<S> {
    inner: S,
    remote: std::net::SocketAddr,
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for WithPeer<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut req: hyper::Request<B>) -> Self::Future {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.remote));
        self.inner.call(req)
    }
}

/// Reads the whole body within `limit` (a body trickling in a byte at a
/// time would hold its connection, and a place, for as long as it likes),
/// then hands the request on. Bodies over the transport limit get 413 as
/// before; the handlers check their own, smaller limits.
async fn body_in_time(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > super::MAX_TRANSPORT) {
        // Not read at all.
        return too_large();
    }
    match tokio::time::timeout(limit, axum::body::to_bytes(body, super::MAX_TRANSPORT)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => too_large(),
        Err(_) => {
            let mut r = super::error(
                StatusCode::REQUEST_TIMEOUT,
                format!("body: not received within {} s", limit.as_secs()),
            )
            .into_response();
            // What is left of the body is never read: the connection ends.
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

fn too_large() -> Response {
    let mut r = super::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body: larger than {} bytes", super::MAX_TRANSPORT),
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}
