//! A customer's CRM for the tests: a real HTTP listener on loopback that
//! records every request, verifies its signature with the rule of SPEC C-5,
//! applies each Idempotency-Key once (a replay gets the first answer
//! again), hands out deal ids for `deal.create`, and can be told to fail
//! the way CRMs do: 500, 429 with Retry-After, answering too late, 200
//! with garbage for `deal.create`, or not listening at all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Ok,
    /// Answer every request with this status.
    Status(u16),
    /// Refuse every request with this status, after this long (within
    /// siptrack's timeout): the sender holds its claim on the request
    /// meanwhile, as against a CRM that is slow to fail.
    SlowStatus(u16, Duration),
    /// 429 with `Retry-After: <seconds>`.
    TooMany {
        retry_after_s: u32,
    },
    /// Apply the request, then answer after this long (past siptrack's
    /// timeout, so it retries what was already applied).
    Slow(Duration),
    /// 200 with a body that is not JSON, for `deal.create` only.
    GarbageOnCreate,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub key: String,
    pub signature_ok: bool,
    pub body: String,
    pub json: Value,
    /// The status answered.
    pub answered: u16,
}

#[derive(Default)]
pub struct Inner {
    pub mode: Option<Mode>,
    pub requests: Vec<Received>,
    /// Idempotency-Key → (body first applied, deal id handed out).
    pub applied: HashMap<String, (String, Option<String>)>,
    /// Keys in the order they were first applied.
    pub applied_order: Vec<String>,
    /// deal.task / deal.comment received for a deal id this CRM never
    /// handed out (a task ahead of its deal).
    pub orphans: Vec<String>,
    next_deal: u64,
}

pub struct Crm {
    pub port: u16,
    secret: Vec<u8>,
    state: Arc<Mutex<Inner>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`, computed here independently
/// of siptrack's code.
pub fn expected_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[derive(Clone)]
struct Shared {
    secret: Arc<Vec<u8>>,
    state: Arc<Mutex<Inner>>,
}

impl Crm {
    /// Starts listening on 127.0.0.1:`port` (0: any free port).
    pub fn start(port: u16, secret: &str, mode: Mode) -> Crm {
        let state = Arc::new(Mutex::new(Inner {
            mode: Some(mode),
            ..Inner::default()
        }));
        let mut crm = Crm {
            port,
            secret: secret.as_bytes().to_vec(),
            state,
            runtime: None,
        };
        crm.listen();
        crm
    }

    fn listen(&mut self) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test CRM runtime");
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("test CRM cannot bind 127.0.0.1:{}: {e}", self.port));
        std_listener.set_nonblocking(true).expect("nonblocking");
        self.port = std_listener.local_addr().expect("addr").port();
        let shared = Shared {
            secret: Arc::new(self.secret.clone()),
            state: self.state.clone(),
        };
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
            let app = Router::new().fallback(handle).with_state(shared);
            let _ = axum::serve(listener, app).await;
        });
        self.runtime = Some(rt);
    }

    /// Stops listening and drops every connection: "connection refused"
    /// from now on.
    pub fn go_down(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        // Let the kernel close the sockets before anyone connects again.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Listens again on the same port.
    pub fn come_up(&mut self, mode: Mode) {
        self.set_mode(mode);
        if self.runtime.is_none() {
            self.listen();
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.lock().mode = Some(mode);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `done` holds (at most `limit`); panics with what was
    /// received otherwise.
    pub fn wait_until(&self, limit: Duration, what: &str, done: impl Fn(&Inner) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            {
                let s = self.lock();
                if done(&s) {
                    return;
                }
                if Instant::now() > deadline {
                    panic!(
                        "test CRM: {what} not within {limit:?}; {} requests, {} keys applied; last: {:?}",
                        s.requests.len(),
                        s.applied.len(),
                        s.requests.last().map(|r| (&r.path, &r.key, r.answered))
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Requests whose signature did not verify.
    pub fn bad_signatures(&self) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| !r.signature_ok)
            .count()
    }

    /// The applied request for a key, as JSON.
    pub fn applied_json(&self, key: &str) -> Option<Value> {
        self.lock()
            .applied
            .get(key)
            .and_then(|(b, _)| serde_json::from_str(b).ok())
    }
}

impl Drop for Crm {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn handle(
    State(sh): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let key = header("idempotency-key");
    let signature_ok = header("x-siptrack-signature") == expected_signature(&sh.secret, &body);
    let text = String::from_utf8_lossy(&body).into_owned();
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let event = json["event"].as_str().unwrap_or("").to_string();
    let (status, answer, retry_after, delay) = {
        let mut s = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        let mode = s.mode.clone().unwrap_or(Mode::Ok);
        let apply = matches!(mode, Mode::Ok | Mode::Slow(_));
        let mut out = match &mode {
            Mode::Status(code) => (*code, "{\"error\":\"down\"}".to_string(), None, None),
            Mode::SlowStatus(code, d) => {
                (*code, "{\"error\":\"down\"}".to_string(), None, Some(*d))
            }
            Mode::TooMany { retry_after_s } => (429, String::new(), Some(*retry_after_s), None),
            Mode::GarbageOnCreate if event == "deal.create" => {
                (200, "<html>upstream error</html>".to_string(), None, None)
            }
            Mode::GarbageOnCreate | Mode::Ok => (200, "{}".to_string(), None, None),
            Mode::Slow(d) => (200, "{}".to_string(), None, Some(*d)),
        };
        if !signature_ok || key.is_empty() {
            out = (401, "{\"error\":\"bad signature\"}".into(), None, None);
        } else if apply || (matches!(mode, Mode::GarbageOnCreate) && event != "deal.create") {
            let deal_id = match s.applied.get(&key) {
                Some((_, id)) => id.clone(),
                None => {
                    let id = (event == "deal.create").then(|| {
                        s.next_deal += 1;
                        format!("CRM-{}", s.next_deal)
                    });
                    if event == "deal.task" || event == "deal.comment" {
                        let target = json["deal_id"].as_str().unwrap_or("").to_string();
                        let known = s
                            .applied
                            .values()
                            .any(|(_, d)| d.as_deref() == Some(&target));
                        if !known {
                            s.orphans.push(key.clone());
                        }
                    }
                    s.applied.insert(key.clone(), (text.clone(), id.clone()));
                    s.applied_order.push(key.clone());
                    id
                }
            };
            if let Some(id) = deal_id {
                out.1 = serde_json::json!({ "deal_id": id }).to_string();
            }
        }
        s.requests.push(Received {
            at: Instant::now(),
            path: uri.path().to_string(),
            key: key.clone(),
            signature_ok,
            body: text,
            json,
            answered: out.0,
        });
        out
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        answer,
    )
        .into_response();
    if let Some(s) = retry_after {
        r.headers_mut()
            .insert("Retry-After", s.to_string().parse().expect("header value"));
    }
    r
}
