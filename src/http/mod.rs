//! The HTTP API (SPEC C-6): health, and the visits endpoint that hands out
//! pool numbers. Handlers are thin: parse and check the request, call the
//! tracking state, persist, answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::store::Store;
use crate::tracking::pools::{Pools, Visit};

#[derive(Clone)]
pub struct AppState {
    pub pools: Arc<Mutex<Pools>>,
    pub store: Store,
    pub token: Option<String>,
    /// Unix milliseconds; injected so tests can move time.
    pub clock: fn() -> u64,
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/visits", post(post_visit))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// `Authorization: Bearer <http.token>`, compared in constant time.
fn authorized(headers: &HeaderMap, token: Option<&str>) -> bool {
    let Some(token) = token else { return false };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn unauthorized() -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// Fields a visit may carry besides `visit_id` (SPEC T-1).
pub const VISIT_FIELDS: &[&str] = &[
    "marker",
    "source",
    "city",
    "domain",
    "page",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
];
const MAX_VALUE: usize = 2048;

/// Checks a visit body; the error names the field.
pub fn parse_visit(body: &[u8]) -> Result<Visit, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let Value::Object(map) = v else {
        return Err("body must be a JSON object".into());
    };
    let text = |map: &Map<String, Value>, k: &str| -> Result<Option<String>, String> {
        match map.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() > MAX_VALUE => {
                Err(format!("{k}: longer than {MAX_VALUE} bytes"))
            }
            Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(format!("{k}: must be a string")),
        }
    };
    if let Some(k) = map
        .keys()
        .find(|k| k.as_str() != "visit_id" && !VISIT_FIELDS.contains(&k.as_str()))
    {
        return Err(format!(
            "{k}: unknown field (known: visit_id {})",
            VISIT_FIELDS.join(" ")
        ));
    }
    let id = text(&map, "visit_id")?.ok_or("visit_id: required, a non-empty string")?;
    let mut fields = BTreeMap::new();
    for k in VISIT_FIELDS {
        if let Some(v) = text(&map, k)? {
            fields.insert(k.to_string(), v);
        }
    }
    Ok(Visit { id, fields })
}

async fn post_visit(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&headers, s.token.as_deref()) {
        return unauthorized();
    }
    let visit = match parse_visit(&body) {
        Ok(v) => v,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let now = (s.clock)();
    let granted = match s.pools.lock() {
        Ok(mut pools) => pools.touch(visit, now),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "pool state unavailable"),
    };
    let Some(g) = granted else {
        return Json(json!({ "number": null, "pool": null })).into_response();
    };
    // The number is the visit's from now on, whatever the store says; a
    // failed write only means the hold may not survive a restart.
    if let Err(e) = s.store.save_assignment(&g.row).await {
        tracing::warn!(error = %e, number = %g.number, "pool assignment not persisted");
    }
    Json(json!({
        "number": g.number,
        "pool": g.pool,
        "hold_seconds": g.hold_seconds,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visit_bodies_are_checked_field_by_field() {
        let v = parse_visit(
            br#"{"visit_id": "v1", "city": " Moscow ", "utm_term": "", "marker": null}"#,
        )
        .expect("valid");
        assert_eq!(v.id, "v1");
        assert_eq!(v.fields.get("city").map(String::as_str), Some("Moscow"));
        assert!(!v.fields.contains_key("utm_term") && !v.fields.contains_key("marker"));
        assert_eq!(
            parse_visit(br#"{"visit_id": 42}"#).expect("numeric id").id,
            "42"
        );
        for (body, needle) in [
            (&b"{"[..], "body is not JSON"),
            (b"[1]", "body must be a JSON object"),
            (b"{}", "visit_id: required"),
            (br#"{"visit_id": ""}"#, "visit_id: required"),
            (br#"{"visit_id": ["x"]}"#, "visit_id: must be a string"),
            (
                br#"{"visit_id": "v", "city": {"a": 1}}"#,
                "city: must be a string",
            ),
            (br#"{"visit_id": "v", "ctiy": "x"}"#, "ctiy: unknown field"),
        ] {
            let e = parse_visit(body).expect_err(needle);
            assert!(e.contains(needle), "{e}");
        }
        let long = format!(r#"{{"visit_id": "v", "page": "{}"}}"#, "a".repeat(3000));
        assert!(parse_visit(long.as_bytes())
            .expect_err("long")
            .contains("page: longer"));
    }

    #[test]
    fn bearer_token_must_match() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, Some("secret")));
        h.insert(
            header::AUTHORIZATION,
            "Bearer secret".parse().expect("header"),
        );
        assert!(authorized(&h, Some("secret")));
        assert!(!authorized(&h, Some("secreT")));
        assert!(!authorized(&h, None), "no token configured: nobody gets in");
        h.insert(
            header::AUTHORIZATION,
            "Basic secret".parse().expect("header"),
        );
        assert!(!authorized(&h, Some("secret")));
    }
}
