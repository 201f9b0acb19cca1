//! The I/O edge of CRM delivery: sends an adapter's `Request` with
//! `crm.timeout_ms` and reads the answer. Any failure to get an answer is
//! a message for the item's retry.

use std::time::Duration;

use super::adapter::{Answer, Method, Request};

#[derive(Clone)]
pub struct Transport {
    client: reqwest::Client,
}

impl Transport {
    pub fn new(timeout: Duration, max_connections: usize) -> anyhow::Result<Transport> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(max_connections)
            .user_agent(concat!("siptrack/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Transport { client })
    }

    /// One request; `Err` when no answer came (timeout, refused, reset).
    pub async fn send(&self, r: &Request) -> Result<Answer, String> {
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
        let answer = b.send().await.map_err(|e| describe(&e))?;
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
        let body = match tokio::time::timeout(Duration::from_secs(30), answer.bytes()).await {
            Ok(Ok(b)) => b.to_vec(),
            Ok(Err(e)) => return Err(format!("reading the answer: {}", describe(&e))),
            Err(_) => return Err("reading the answer: timed out".into()),
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
