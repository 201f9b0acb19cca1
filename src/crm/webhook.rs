//! One CRM request over HTTP (SPEC C-2, C-5): signed, keyed, with a
//! timeout; the answer is classified by a pure function so every way a CRM
//! can fail is tested without sockets.

use crate::clock::Clock;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What became of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx; for `deal.create`, the CRM's id of the new deal.
    Delivered { deal_id: Option<String> },
    /// Try again later; `retry_after_ms` when the CRM said when.
    Retry {
        error: String,
        retry_after_ms: Option<u64>,
    },
}

/// `sha256=<hex HMAC-SHA256 of the body with crm.secret>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Retry-After as delay-seconds or an HTTP date (RFC 9110 10.2.3).
pub fn parse_retry_after(v: &str, now_unix_ms: i64) -> Option<u64> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(s.saturating_mul(1000));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    Some(at.timestamp_millis().saturating_sub(now_unix_ms).max(0) as u64)
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(120)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The CRM's answer to an attempt. `wants_deal_id`: a `deal.create`,
/// whose answer must carry `{"deal_id": ...}` (string or number);
/// anything else is a failed attempt, since later tasks need that id.
pub fn classify(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    wants_deal_id: bool,
    now_unix_ms: i64,
) -> Outcome {
    if !(200..300).contains(&status) {
        return Outcome::Retry {
            error: if body.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {}", snippet(body))
            },
            retry_after_ms: retry_after.and_then(|v| parse_retry_after(v, now_unix_ms)),
        };
    }
    if !wants_deal_id {
        return Outcome::Delivered { deal_id: None };
    }
    let id = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| match v.get("deal_id") {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => {
                Some(s.trim().to_string())
            }
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        });
    match id {
        Some(id) => Outcome::Delivered { deal_id: Some(id) },
        None => Outcome::Retry {
            error: format!(
                "HTTP {status} without {{\"deal_id\"}} in the answer to deal.create: {}",
                snippet(body)
            ),
            retry_after_ms: None,
        },
    }
}

/// Posts outbox items to the CRM.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    secret: Vec<u8>,
    /// For `Retry-After` dates.
    clock: Clock,
}

impl Sender {
    pub fn new(
        secret: &str,
        timeout: Duration,
        max_connections: usize,
        clock: Clock,
    ) -> anyhow::Result<Sender> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(max_connections)
            .user_agent(concat!("siptrack/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            client,
            secret: secret.as_bytes().to_vec(),
            clock,
        })
    }

    /// One attempt; never fails in another way than `Outcome::Retry`.
    pub async fn post(&self, url: &str, key: &str, body: String, wants_deal_id: bool) -> Outcome {
        let sig = signature(&self.secret, body.as_bytes());
        let sent = self
            .client
            .post(url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", key)
            .header("X-Siptrack-Signature", sig)
            .body(body)
            .send()
            .await;
        let answer = match sent {
            Ok(a) => a,
            Err(e) => {
                return Outcome::Retry {
                    error: describe(&e),
                    retry_after_ms: None,
                }
            }
        };
        let status = answer.status().as_u16();
        let retry_after = answer
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // A CRM's answer is small; one that is not is cut off.
        let body = match tokio::time::timeout(Duration::from_secs(30), answer.bytes()).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                return Outcome::Retry {
                    error: format!("reading the answer: {}", describe(&e)),
                    retry_after_ms: None,
                }
            }
            Err(_) => {
                return Outcome::Retry {
                    error: "reading the answer: timed out".into(),
                    retry_after_ms: None,
                }
            }
        };
        classify(
            status,
            retry_after.as_deref(),
            &body,
            wants_deal_id,
            self.clock.unix_ms() as i64,
        )
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

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn answers_are_classified() {
        let now = 1_795_435_200_000;
        assert_eq!(
            classify(200, None, b"", false, now),
            Outcome::Delivered { deal_id: None }
        );
        assert_eq!(
            classify(201, None, br#"{"deal_id": "D-1"}"#, true, now),
            Outcome::Delivered {
                deal_id: Some("D-1".into())
            }
        );
        assert_eq!(
            classify(200, None, br#"{"deal_id": 77}"#, true, now),
            Outcome::Delivered {
                deal_id: Some("77".into())
            }
        );
        for garbage in [
            &b"<html>oops"[..],
            b"{}",
            br#"{"deal_id": ""}"#,
            br#"{"deal_id": null}"#,
        ] {
            let Outcome::Retry { error, .. } = classify(200, None, garbage, true, now) else {
                panic!("{garbage:?} accepted");
            };
            assert!(error.contains("deal_id"), "{error}");
        }
        assert_eq!(
            classify(500, None, b"boom\n", false, now),
            Outcome::Retry {
                error: "HTTP 500: boom ".into(),
                retry_after_ms: None
            }
        );
        assert_eq!(
            classify(429, Some("7"), b"", false, now),
            Outcome::Retry {
                error: "HTTP 429".into(),
                retry_after_ms: Some(7_000)
            }
        );
        // 2026-11-23 12:00:10 GMT is 10 s after `now`.
        assert_eq!(
            parse_retry_after("Mon, 23 Nov 2026 12:00:10 GMT", now),
            Some(10_000)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
