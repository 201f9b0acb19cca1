//! The webhook adapter (SPEC C-2, C-5): one signed, keyed POST per item;
//! the answer is classified by a pure function so every way a CRM can
//! fail is tested without sockets.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use super::adapter::Outcome;
use super::adapter::{Answer, CrmAdapter, Method, Request, Step};
use super::outbox::Target;
use crate::store::outbox::DueItem;

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
    out.push_str(&crate::hex::hex(&digest));
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

/// `crm.kind = "webhook"` (and the call webhooks of any kind): every item
/// is one signed POST of its JSON body, keyed by its Idempotency-Key.
pub struct Webhook {
    pub url: Option<String>,
    pub call_start_url: Option<String>,
    pub call_end_url: Option<String>,
    pub secret: Vec<u8>,
}

impl Webhook {
    fn url_for(&self, t: Target) -> Result<&str, String> {
        let (url, key) = match t {
            Target::Lead => (&self.url, "crm.url"),
            Target::CallStart => (&self.call_start_url, "crm.call_start_url"),
            Target::CallEnd => (&self.call_end_url, "crm.call_end_url"),
        };
        url.as_deref()
            .ok_or_else(|| format!("{key} is no longer configured"))
    }
}

impl CrmAdapter for Webhook {
    fn start(&self, item: &DueItem, _now_unix_ms: i64) -> Step {
        let url = match self.url_for(item.target) {
            Ok(u) => u,
            Err(error) => {
                return Step::Finish(Outcome::Retry {
                    error,
                    retry_after_ms: None,
                })
            }
        };
        let Some(body) = item.body_to_send() else {
            return Step::Finish(Outcome::Retry {
                error: format!(
                    "deal {} is not in the CRM yet (its deal.create is not through: pending, retried or parked)",
                    item.deal_ref.unwrap_or_default()
                ),
                retry_after_ms: None,
            });
        };
        Step::Send(Request {
            stage: "post",
            method: Method::Post,
            url: url.to_string(),
            headers: vec![
                ("Content-Type", "application/json".into()),
                ("Idempotency-Key", item.key.clone()),
                (
                    "X-Siptrack-Signature",
                    signature(&self.secret, body.as_bytes()),
                ),
            ],
            body: Some(body),
        })
    }

    fn next(&self, item: &DueItem, _sent: &Request, a: &Answer, now_unix_ms: i64) -> Step {
        Step::Finish(classify(
            a.status,
            a.retry_after.as_deref(),
            &a.body,
            item.is_deal_create(),
            now_unix_ms,
        ))
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

    fn due(target: Target, event: &str, crm_deal: Option<&str>) -> DueItem {
        DueItem {
            id: 1,
            target,
            key: "i1-lead-7-deal.task".into(),
            event: event.into(),
            body: r#"{"event":"deal.task"}"#.into(),
            attempts: 0,
            created_at: 0,
            deal_ref: Some(3),
            crm_deal_id: crm_deal.map(str::to_string),
            deal_created_here: true,
        }
    }

    #[test]
    fn the_adapter_posts_one_signed_keyed_request_per_item() {
        let w = Webhook {
            url: Some("http://crm/hook".into()),
            call_start_url: None,
            call_end_url: Some("http://crm/end".into()),
            secret: b"s".to_vec(),
        };
        let item = due(Target::Lead, "deal.task", Some("C-3"));
        let Step::Send(r) = w.start(&item, 0) else {
            panic!("a request");
        };
        let body = r#"{"deal_id":"C-3","event":"deal.task"}"#;
        assert_eq!(
            (r.method, r.url.as_str()),
            (Method::Post, "http://crm/hook")
        );
        assert_eq!(r.body.as_deref(), Some(body));
        assert_eq!(
            r.headers,
            vec![
                ("Content-Type", "application/json".to_string()),
                ("Idempotency-Key", "i1-lead-7-deal.task".to_string()),
                ("X-Siptrack-Signature", signature(b"s", body.as_bytes())),
            ]
        );
        let ok = Answer {
            status: 200,
            ..Answer::default()
        };
        assert_eq!(
            w.next(&item, &r, &ok, 0),
            Step::Finish(Outcome::Delivered { deal_id: None })
        );
        // No URL any more, or a deal the CRM has not named yet: retried.
        for (item, error) in [
            (
                due(Target::CallStart, "", None),
                "crm.call_start_url is no longer configured",
            ),
            (
                due(Target::Lead, "deal.task", None),
                "deal 3 is not in the CRM yet (its deal.create is not through: pending, retried or parked)",
            ),
        ] {
            assert_eq!(
                w.start(&item, 0),
                Step::Finish(Outcome::Retry {
                    error: error.into(),
                    retry_after_ms: None
                })
            );
        }
    }
}
