//! The I/O edge of CRM delivery: sends an adapter's `Request` with
//! `crm.timeout_ms` and reads the answer. Any failure to get an answer is
//! a message for the item's retry.

use std::time::Duration;

use super::adapter::{Answer, Method, Request};

#[derive(Clone)]
pub struct Transport {
    client: reqwest::Client,
    /// `crm.timeout_ms`.
    timeout: Duration,
}

/// No answer came.
#[derive(Debug)]
pub struct NoAnswer {
    pub error: String,
    /// The request was sent and the CRM may still apply it (it timed out
    /// waiting, or the answer broke off): the retry waits
    /// [`Transport::settle_ms`] first, so that its look-up finds what the
    /// CRM made meanwhile. A refused or failed connect sent nothing.
    pub maybe_applied: bool,
}

impl Transport {
    pub fn new(timeout: Duration, max_connections: usize) -> anyhow::Result<Transport> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(max_connections)
            .user_agent(concat!("siptrack/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Transport { client, timeout })
    }

    /// How long a request that may have been applied ([`NoAnswer`]) waits
    /// at least before its retry: twice `crm.timeout_ms`, the time the
    /// operator gives the CRM, once more. A retry one backoff step (about
    /// a second) after a create timed out looked the lead up while amoCRM
    /// was still making it, found none and made a second (trial,
    /// 2026-12-03: a 15 s answer with the 10 s timeout).
    pub fn settle_ms(&self) -> u64 {
        (self.timeout.as_millis() as u64).saturating_mul(2)
    }

    /// One request; `Err` when no answer came (timeout, refused, reset).
    pub async fn send(&self, r: &Request) -> Result<Answer, NoAnswer> {
        let mut b = match r.method {
            Method::Get => self.client.get(&r.url),
            Method::Post => self.client.post(&r.url),
        };
        for (name, value) in &r.headers {
            b = b.header(*name, value);
        }
        if let Some(body) = &r.body {
            b = b.body(body.clone());
        }
        let answer = b.send().await.map_err(|e| NoAnswer {
            error: describe(&e),
            // A connect that failed or timed out sent nothing.
            maybe_applied: !e.is_connect() && (e.is_timeout() || e.is_request()),
        })?;
        let header = |n: &str| {
            answer
                .headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = answer.status().as_u16();
        let retry_after = header("Retry-After");
        let content_type = header("Content-Type");
        // A CRM's answer is small; one that is not is cut off.
        // The status line came: the request reached the CRM.
        let broken = |error: String| NoAnswer {
            error,
            maybe_applied: true,
        };
        let body = match tokio::time::timeout(Duration::from_secs(30), answer.bytes()).await {
            Ok(Ok(b)) => b.to_vec(),
            Ok(Err(e)) => return Err(broken(format!("reading the answer: {}", describe(&e)))),
            Err(_) => return Err(broken("reading the answer: timed out".into())),
        };
        Ok(Answer {
            status,
            retry_after,
            content_type,
            body,
        })
    }
}

fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(url: String) -> Request {
        Request {
            stage: "create",
            method: Method::Post,
            url,
            headers: Vec::new(),
            body: Some("{}".into()),
        }
    }

    /// A CRM that took the request and did not answer in time may still
    /// apply it; one nobody listens for never got it.
    #[tokio::test]
    async fn a_timeout_may_have_been_applied_a_refused_connect_not() {
        let t = Transport::new(Duration::from_millis(300), 1).expect("client");
        assert_eq!(t.settle_ms(), 600);
        let slow = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = slow.local_addr().expect("addr");
        // Accepts and reads, never answers.
        let held = tokio::spawn(async move {
            let (conn, _) = slow.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(conn);
        });
        let e = t
            .send(&post(format!("http://{addr}/api")))
            .await
            .expect_err("no answer");
        assert!(e.maybe_applied, "{e:?}");
        assert!(e.error.starts_with("timed out"), "{e:?}");
        held.abort();

        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let e = t
            .send(&post(format!("http://{addr}/api")))
            .await
            .expect_err("refused");
        assert!(!e.maybe_applied, "{e:?}");
        assert!(e.error.starts_with("cannot connect"), "{e:?}");
    }
}
