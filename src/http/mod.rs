//! The HTTP API (SPEC C-6): health, and the visits endpoint that hands out
//! pool numbers. Handlers are thin: parse and check the request, call the
//! tracking state, persist, answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::clock::Clock;
use crate::config::LeadsConfig;
use crate::crm::metrics::OutboxMetrics;
use crate::leads::dedup::{Identity, LeadKind};
use crate::leads::pipeline::new_deal_status;
use crate::leads::pipeline::StorageHealth;
use crate::log_text::{Clean, Throttle};
use crate::phone::{form_phone, FormPhone, PhoneRules};
use crate::proxy::Stats;
use crate::recording::retention::RetentionMetrics;
use crate::store::leads::NewLead;
use crate::store::Store;
use crate::tracking::pools::{Granted, Pools, Visit};
use crate::tracking::VISIT_FIELDS;
use crate::transport::tcp::{TcpContext, TcpStats};

pub mod crm_status;
pub mod recordings;
mod serve;
pub use recordings::{file_of as recording_file, RecordingAccess};
pub use serve::serve;

pub mod json;
pub mod ui;

/// The "pool full" warning: one line per pool each 10 s (a full pool
/// takes a number over at every visit).
static POOL_FULL_SAID: std::sync::LazyLock<Mutex<Throttle>> =
    std::sync::LazyLock::new(|| Mutex::new(Throttle::new(std::time::Duration::from_secs(10))));

#[derive(Clone)]
pub struct AppState {
    pub pools: Arc<Mutex<Pools>>,
    pub store: Store,
    pub token: Option<String>,
    /// Unix milliseconds; injected so tests can move time.
    pub clock: Clock,
    pub leads: Arc<LeadsConfig>,
    pub phone: PhoneRules,
    pub outbox_metrics: Arc<OutboxMetrics>,
    /// The SIP thread's counters, refreshed every second.
    pub sip: Arc<Mutex<SipSnapshot>>,
    /// The lead pipeline's view of the database.
    pub storage: Arc<StorageHealth>,
    /// The TCP limits' counters, read live.
    pub tcp: Arc<TcpContext>,
    /// Media relay and recording counters, read live.
    pub media: Arc<crate::media::metrics::MediaMetrics>,
    /// `/recordings` and the links of the calls API.
    pub recordings: Arc<RecordingAccess>,
    /// What the recordings retention sweep deleted.
    pub retention: Arc<RetentionMetrics>,
    /// The web console's config and sessions.
    pub ui: Arc<ui::UiState>,
    /// The SIP ladders (`ui.sip_trace_minutes`); None when off.
    pub traces: Option<Arc<Mutex<crate::sip_trace::SipTraces>>>,
    /// The CRMs' status webhooks.
    pub crm_status: Arc<crm_status::StatusReceiver>,
}

/// What the proxy core reports for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct SipSnapshot {
    pub stats: Stats,
    pub dialogs: usize,
    pub transactions: usize,
    /// The UDP sockets' counters, kept live by the SIP loop.
    pub udp: Arc<crate::transport::udp::UdpStats>,
}

impl SipSnapshot {
    fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(2048);
        for (name, n) in self.stats.fields() {
            let _ = writeln!(
                out,
                "# TYPE siptrack_sip_{name}_total counter\nsiptrack_sip_{name}_total {n}"
            );
        }
        for (name, n) in [
            ("dialogs", self.dialogs),
            ("transactions", self.transactions),
        ] {
            let _ = writeln!(
                out,
                "# TYPE siptrack_sip_{name} gauge\nsiptrack_sip_{name} {n}"
            );
        }
        out.push_str(&self.udp.render());
        out
    }
}

/// Prometheus text for what the TCP limits did.
pub fn render_tcp(s: &TcpStats) -> String {
    format!(
        "# TYPE siptrack_tcp_connections gauge\nsiptrack_tcp_connections {}\n\
         # TYPE siptrack_tcp_refused_total counter\n\
         siptrack_tcp_refused_total{{limit=\"total\"}} {}\n\
         siptrack_tcp_refused_total{{limit=\"per_source\"}} {}\n\
         # TYPE siptrack_tcp_closed_total counter\n\
         siptrack_tcp_closed_total{{reason=\"idle\"}} {}\n\
         siptrack_tcp_closed_total{{reason=\"slow_message\"}} {}\n\
         siptrack_tcp_closed_total{{reason=\"write_queue\"}} {}\n\
         # TYPE siptrack_tcp_responses_unsent_total counter\n\
         siptrack_tcp_responses_unsent_total {}\n",
        s.open,
        s.refused_total,
        s.refused_per_source,
        s.closed_idle,
        s.closed_slow_message,
        s.closed_write_queue,
        s.responses_unsent
    )
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/visits", post(post_visit))
        .route("/api/v1/leads", post(post_lead).get(get_leads))
        .route("/api/v1/calls", get(get_calls))
        .route("/api/v1/deals", get(get_deals))
        .route("/api/v1/crm/deals/{id}/status", post(post_deal_status))
        .route(
            "/api/v1/crm/amocrm/webhook",
            post(crm_status::amocrm_webhook),
        )
        .route(
            "/api/v1/crm/bitrix24/webhook",
            post(crm_status::bitrix24_webhook),
        )
        .route("/api/v1/outbox", get(get_outbox))
        .route("/api/v1/outbox/{id}/retry", post(post_outbox_retry))
        .route("/metrics", get(metrics))
        .route("/recordings/{call_id}", get(recordings::get_recording))
        .merge(ui::routes())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_TRANSPORT))
        .with_state(state)
}

/// An address nothing answers: the console's page for a browser under
/// `/ui`, a JSON error elsewhere (it was an empty 404, which a browser
/// shows as its own "page can't be found").
async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/ui") {
        ui::not_found().await
    } else {
        error(
            StatusCode::NOT_FOUND,
            "no such endpoint (see the README's HTTP API)",
        )
    }
}

/// A known address asked with another method: the JSON error every other
/// refusal has (it was an empty body). Axum still adds `Allow`.
async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed here (see the Allow header and the README's HTTP API)",
    )
}

/// 200 `ok`, or 503 with the reason while the database refuses calls or
/// the lead pipeline falls behind (a load balancer should look elsewhere).
async fn healthz(State(s): State<AppState>) -> Response {
    match s.storage.problem() {
        // Still 200: a node that cannot record still carries calls, and a
        // 503 would take it out of a balancer's rotation; the line says
        // what is wrong to whoever reads it.
        None => match s.media.dir_problem() {
            Some(p) => {
                format!("ok\nrecordings failing: media.recordings_dir: {p}\n").into_response()
            }
            None => "ok\n".into_response(),
        },
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// Prometheus text (SPEC C-6): SIP counters, the TCP limits, the CRM outbox's depth and
/// deliveries.
/// How long /metrics waits for the outbox's depth.
const METRICS_DB_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

async fn metrics(State(s): State<AppState>) -> Response {
    let sip =
        s.sip.lock().map(|snap| snap.render()).unwrap_or_default() + &render_tcp(&s.tcp.stats());
    // The outbox part needs the database; the rest is shown without it,
    // so a failing database is visible here.
    // A scraper gives up after about 10 s: a database that does not
    // answer must not take the rest of the figures with it.
    let pools = s
        .pools
        .lock()
        .map(|p| p.render_metrics(s.clock.unix_ms()))
        .unwrap_or_default();
    let depth = tokio::time::timeout(METRICS_DB_WAIT, s.store.outbox_depth()).await;
    let outbox = match depth {
        Ok(Ok(depth)) => s.outbox_metrics.render(depth),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reading the outbox depth");
            String::new()
        }
        Err(_) => {
            tracing::error!("reading the outbox depth: no answer from the database");
            String::new()
        }
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        sip + &outbox
            + &s.storage.render()
            + &s.media.render()
            + &s.retention.render()
            + &s.recordings.counts.render()
            + &pools
            + &node_info(s.store.node_id()),
    )
        .into_response()
}

/// Which node this is (`storage.node_name`): several nodes behind one
/// dispatcher are told apart in a scraper by this label.
fn node_info(node: &str) -> String {
    let escaped = node
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("# TYPE siptrack_node_info gauge\nsiptrack_node_info{{node=\"{escaped}\"}} 1\n")
}

/// CRM requests, newest first; `?state=pending|done|failed` (parked
/// requests are `failed`), `?limit=`. No `?since=`: it was checked and
/// then ignored, so a poll for what is new got every item (trial,
/// 2026-12-03); refused by name instead.
async fn get_outbox(_: Authorized, State(s): State<AppState>, Query(q): Params) -> Response {
    if q.contains_key("since") {
        return error(
            StatusCode::BAD_REQUEST,
            "since: the outbox is listed newest first by state and limit, not by time",
        );
    }
    let (limit, _) = match list_params(&q) {
        Ok(p) => p,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let state = q.get("state").map(String::as_str);
    if let Some(st) = state {
        if !["pending", "done", "failed"].contains(&st) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("state: \"{st}\" is not pending, done or failed"),
            );
        }
    }
    match s.store.list_outbox(state, limit).await {
        Ok(items) => {
            let items: Vec<Value> = items.iter().map(json::outbox).collect();
            Json(json!({ "outbox": items })).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "listing the outbox");
            error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        }
    }
}

/// Puts a parked (failed) CRM request back in the queue.
async fn post_outbox_retry(
    _: Authorized,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Response {
    match requeue_outbox(&s, &id).await {
        Ok(id) => Json(json!({ "id": id, "state": "pending" })).into_response(),
        Err((code, m)) => error(code, m),
    }
}

/// The retry of the API and of the console's outbox page.
pub(crate) async fn requeue_outbox(s: &AppState, id: &str) -> Result<i64, (StatusCode, String)> {
    let Ok(id) = id.trim().parse::<i64>() else {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("id: \"{id}\" is not an outbox id"),
        ));
    };
    match s.store.outbox_requeue(id, s.clock.unix_ms() as i64).await {
        Ok(true) => Ok(id),
        Ok(false) => Err((
            StatusCode::NOT_FOUND,
            format!("id: no parked (failed) or waiting outbox item {id}"),
        )),
        Err(e) => {
            tracing::error!(error = %e, "requeueing an outbox item");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable; retry".into(),
            ))
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A request that carried the API's token. Every handler but /healthz
/// and /metrics takes one, so none can forget the check; a request
/// without it gets 401 before its body is read.
pub struct Authorized;

impl FromRequestParts<AppState> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Response> {
        if authorized(&parts.headers, s.token.as_deref()) {
            Ok(Authorized)
        } else {
            Err(unauthorized())
        }
    }
}

/// `Authorization: Bearer <http.token>`, compared in constant time. The
/// scheme name is case-insensitive (RFC 7235 2.1: `bearer` is `Bearer`).
fn authorized(headers: &HeaderMap, token: Option<&str>) -> bool {
    let Some(token) = token else { return false };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials)
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

/// The credentials of a `Bearer` authorization value: the scheme in any
/// case, then one or more spaces.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(' '))
}

fn unauthorized() -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

const MAX_VALUE: usize = 2048;
/// Larger bodies get 400 naming the body; past `MAX_TRANSPORT` the server
/// does not even read them (413).
const MAX_BODY: usize = 64 * 1024;
const MAX_TRANSPORT: usize = 1024 * 1024;

fn body_too_large(body: &[u8]) -> Option<Response> {
    (body.len() > MAX_BODY).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            format!("body: larger than {MAX_BODY} bytes"),
        )
    })
}

/// The kind of a JSON value, for error messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A text field of a request body, trimmed ("" when absent or null): a
/// string of at most `max` bytes, or, where `integer_ok` (ids, phones
/// that sites send as numbers), an integer — 1.5 is neither. The error
/// names the field, what it takes and what came.
fn text_field(k: &str, v: Option<&Value>, integer_ok: bool, max: usize) -> Result<String, String> {
    let wanted = if integer_ok {
        "a string or an integer"
    } else {
        "a string"
    };
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) if s.len() > max => Err(format!("{k}: longer than {max} bytes")),
        Some(Value::String(s)) => Ok(s.trim().to_string()),
        Some(Value::Number(n)) if integer_ok && (n.is_i64() || n.is_u64()) => Ok(n.to_string()),
        Some(Value::Number(n)) if integer_ok => Err(format!("{k}: expected {wanted}, got {n}")),
        Some(other) => Err(format!("{k}: expected {wanted}, got {}", json_kind(other))),
    }
}

/// Checks a visit body; the error names the field.
pub fn parse_visit(body: &[u8]) -> Result<Visit, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let Value::Object(map) = v else {
        return Err("body must be a JSON object".into());
    };
    // The id may be an integer (sites number their visits); every other
    // field is text, and 1.5 is no id: both said in the error.
    let text = |map: &Map<String, Value>, k: &str| -> Result<Option<String>, String> {
        text_field(k, map.get(k), k == "visit_id", MAX_VALUE)
            .map(|s| Some(s).filter(|s| !s.is_empty()))
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
    Ok(Visit {
        id,
        fields: fields.into(),
    })
}

async fn post_visit(_: Authorized, State(s): State<AppState>, body: Bytes) -> Response {
    if let Some(r) = body_too_large(&body) {
        return r;
    }
    let visit = match parse_visit(&body) {
        Ok(v) => v,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let now = s.clock.unix_ms();
    let granted = if s.store.is_shared() {
        grant_shared(&s, visit, now).await
    } else {
        grant_here(&s, visit, now).await
    };
    let g = match granted {
        Ok(Some(g)) => {
            if let Some(e) = &g.exhausted {
                let allowed = POOL_FULL_SAID
                    .lock()
                    .map(|mut t| t.allow(&e.pool, std::time::Instant::now()));
                if let Ok(Some(held_back)) = allowed {
                    tracing::warn!(
                        pool = %Clean(&e.pool),
                        number = %e.number,
                        taken_from = %Clean(&e.taken_from),
                        visit = %Clean(g.row.visit.as_ref().map_or("", |v| v.id.as_str())),
                        takeovers_not_logged = held_back,
                        "pool full: its longest idle number was taken from its visit (one line per pool each 10 s; siptrack_pool_numbers_taken_over_total counts them all)"
                    );
                }
            }
            g
        }
        Ok(None) => return Json(json!({ "number": null, "pool": null })).into_response(),
        Err(r) => return r,
    };
    Json(json!({
        "number": g.number,
        "pool": g.pool,
        "hold_seconds": g.hold_seconds,
    }))
    .into_response()
}

/// One node: this process's pools decide; the store keeps the row.
async fn grant_here(s: &AppState, visit: Visit, now: u64) -> Result<Option<Granted>, Response> {
    let granted = match s.pools.lock() {
        Ok(mut pools) => pools.touch(visit, now),
        Err(_) => {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "pool state unavailable",
            ))
        }
    };
    if let Some(g) = &granted {
        // The number is the visit's from now on, whatever the store says;
        // a failed write only means the hold may not survive a restart.
        if let Err(e) = s.store.save_assignment(&g.row).await {
            tracing::warn!(error = %e, number = %g.number, "pool assignment not persisted yet");
            // Nodes sharing the database write it once it is back
            // (`server::follow_shared_pools`).
            if let Ok(mut pools) = s.pools.lock() {
                pools.remember_unsaved(g.row.clone());
            }
        }
    }
    Ok(granted)
}

/// Nodes sharing PostgreSQL: the database decides over every node's
/// grants, then this node's pools learn the result (calls here find the
/// visit at once). With the database down, this node decides alone as
/// a single node would (logged): the site still gets a number, at the
/// risk that another node hands the same one out meanwhile.
async fn grant_shared(
    s: &AppState,
    mut visit: Visit,
    now: u64,
) -> Result<Option<Granted>, Response> {
    let configs = match s.pools.lock() {
        Ok(pools) => {
            pools.fill_unsent_fields(&mut visit);
            pools.configs().to_vec()
        }
        Err(_) => {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "pool state unavailable",
            ))
        }
    };
    match s.store.grant_number(configs, visit.clone(), now).await {
        Ok(granted) => {
            if let (Some(g), Ok(mut pools)) = (&granted, s.pools.lock()) {
                pools.restore([g.row.clone()]);
                // The console of the node that took the number shows it.
                if let Some(e) = &g.exhausted {
                    pools.remember_exhaustion(e.clone());
                }
            }
            Ok(granted)
        }
        Err(e) => {
            tracing::warn!(error = %e, visit = %Clean(&visit.id), "pool number granted by this node alone: the database did not answer");
            grant_here(s, visit, now).await
        }
    }
}

/// Fields of a form lead (SPEC L-1).
const LEAD_FIELDS: &[&str] = &[
    "title", "name", "phone", "email", "text", "form", "visit_id", "fields",
];

/// Checks a form lead; the error names the field.
pub fn parse_lead(body: &[u8], phone: &PhoneRules, now_s: i64) -> Result<NewLead, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let Value::Object(map) = v else {
        return Err("body must be a JSON object".into());
    };
    if let Some(k) = map.keys().find(|k| !LEAD_FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "{k}: unknown field (known: {})",
            LEAD_FIELDS.join(" ")
        ));
    }
    let text = |k: &str, max: usize| -> Result<String, String> {
        text_field(k, map.get(k), k == "phone" || k == "visit_id", max)
    };
    let fields = match map.get("fields") {
        None | Some(Value::Null) => String::new(),
        Some(f @ Value::Object(_)) => f.to_string(),
        Some(_) => return Err("fields: must be an object".into()),
    };
    if fields.len() > 16 * 1024 {
        return Err("fields: larger than 16384 bytes".into());
    }
    let email = text("email", 320)?.to_lowercase();
    if !email.is_empty() && !is_email(&email) {
        return Err(format!("email: \"{email}\" is not an e-mail address"));
    }
    let raw_phone = text("phone", 64)?;
    let FormPhone {
        phone,
        extension,
        as_typed,
    } = form_phone(&raw_phone, phone);
    let name = text("name", MAX_VALUE)?;
    if phone.is_empty() && email.is_empty() && name.is_empty() {
        // A phone was given and is no number: that is what to fix (trial,
        // 2026-12-03: "abc" was told a lead needs one of the three).
        if !raw_phone.trim().is_empty() {
            return Err(format!(
                "phone: \"{raw_phone}\" is not a phone number (and there is no email or name)"
            ));
        }
        // Named by all three: the rule is about them together (a visit
        // alone names nobody to call back). It named `phone` alone.
        return Err("phone, email, name: a lead needs at least one of them".into());
    }
    let form = text("form", 200)?;
    let mut title = text("title", 500)?;
    if title.is_empty() {
        title = if form.is_empty() {
            "Lead from the site".into()
        } else {
            format!("Lead from form {form}")
        };
    }
    Ok(NewLead {
        kind: Some(LeadKind::Form),
        who: Identity {
            title,
            name,
            phone,
            email,
            visit: text("visit_id", 200)?,
        },
        form,
        dialed: String::new(),
        text: with_typed_phone(
            with_extension(text("text", 16 * 1024)?, extension.as_deref()),
            as_typed.then_some(raw_phone.as_str()),
        ),
        fields,
        // Filled from the visits API by the handler.
        visit_data: Default::default(),
        call_id: None,
        at: now_s,
    })
}

/// A form lead's text, with its phone field as typed when that said more
/// than the number (see [`FormPhone::as_typed`]).
fn with_typed_phone(text: String, typed: Option<&str>) -> String {
    match typed {
        None => text,
        Some(t) if text.is_empty() => format!("Phone as typed: {t}"),
        Some(t) => format!("{text}\nPhone as typed: {t}"),
    }
}

/// A form lead's text, with the extension its phone came with (matched
/// without it, the number alone names the client): the manager who calls
/// back needs it.
fn with_extension(text: String, extension: Option<&str>) -> String {
    match extension {
        None => text,
        Some(e) if text.is_empty() => format!("Extension: {e}"),
        Some(e) => format!("{text}\nExtension: {e}"),
    }
}

async fn post_lead(_: Authorized, State(s): State<AppState>, body: Bytes) -> Response {
    if let Some(r) = body_too_large(&body) {
        return r;
    }
    let now_s = (s.clock.unix_ms() / 1000) as i64;
    let mut lead = match parse_lead(&body, &s.phone, now_s) {
        Ok(l) => l,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    if !lead.who.visit.is_empty() {
        if let Ok(pools) = s.pools.lock() {
            // Also a visit that lost its number, or that no pool took
            // (QA, 2026-12-02: their form leads lost the channel).
            if let Some(fields) = pools.visit_fields(&lead.who.visit) {
                lead.visit_data = fields.to_map();
            }
        }
    }
    match s
        .store
        .record_lead(
            &lead,
            &s.leads.dedup,
            &new_deal_status(&s.leads),
            None,
            &s.leads.crm,
        )
        .await
    {
        Ok(r) => Json(json!({ "lead_id": r.lead_id, "deal_id": r.deal_id, "outcome": r.outcome }))
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "lead not recorded");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable; nothing was recorded, retry",
            )
        }
    }
}

/// `?limit=` (1…1000, default 100) and `?since=` (Unix seconds).
fn list_params(q: &std::collections::HashMap<String, String>) -> Result<(i64, i64), String> {
    let limit = match q.get("limit") {
        None => 100,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| format!("limit: \"{v}\" is not a number from 1 to 1000"))?,
    };
    let since = match q.get("since") {
        None => 0,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| format!("since: \"{v}\" is not a Unix time in seconds"))?,
    };
    Ok((limit, since))
}

type Params = Query<std::collections::HashMap<String, String>>;

async fn list(s: &AppState, q: &std::collections::HashMap<String, String>, key: &str) -> Response {
    let (limit, since) = match list_params(q) {
        Ok(p) => p,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let rows: Result<Vec<Value>, _> = match key {
        "leads" => {
            (s.store.list_leads(limit, since).await).map(|r| r.iter().map(json::lead).collect())
        }
        "calls" => {
            let now = s.clock.unix_ms() / 1000;
            let links = &s.recordings.links;
            (s.store.list_calls(limit, since.saturating_mul(1000)).await).map(|r| {
                r.iter()
                    .map(|c| {
                        let url = crate::recording::links::link(
                            &c.call_id,
                            &c.recording,
                            c.end_at.max(0) as u64,
                            &links.on_node(&c.recording_base),
                            now,
                        );
                        json::call(c, url.as_deref())
                    })
                    .collect()
            })
        }
        _ => {
            let now = s.clock.unix_ms() / 1000;
            let links = &s.recordings.links;
            // The local CRM is the CRM: its notes follow the CRM's rules.
            let link = |c: &crate::store::rows::NoteCall| {
                crate::recording::links::crm_link(
                    &c.call_id,
                    &c.recording,
                    c.end_at.max(0) as u64,
                    &links.on_node(&c.recording_base),
                    now,
                )
            };
            (s.store.list_deals(limit, since).await)
                .map(|r| r.iter().map(|d| json::deal(d, &link)).collect())
        }
    };
    match rows {
        Ok(rows) => Json(json!({ key: rows })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "listing {key}");
            error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        }
    }
}

async fn get_leads(_: Authorized, State(s): State<AppState>, Query(q): Params) -> Response {
    list(&s, &q, "leads").await
}

async fn get_calls(_: Authorized, State(s): State<AppState>, Query(q): Params) -> Response {
    list(&s, &q, "calls").await
}

async fn get_deals(_: Authorized, State(s): State<AppState>, Query(q): Params) -> Response {
    list(&s, &q, "deals").await
}

async fn post_deal_status(
    _: Authorized,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = body_too_large(&body) {
        return r;
    }
    let id = id.trim().to_string();
    if id.is_empty() || id.len() > 200 {
        return error(
            StatusCode::BAD_REQUEST,
            "id: must be a deal id (the CRM's, or siptrack's), up to 200 characters",
        );
    }
    let status = match serde_json::from_slice::<Value>(&body) {
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
        Ok(Value::Object(m)) => match (m.get("status"), m.keys().find(|k| *k != "status")) {
            (_, Some(k)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{k}: unknown field (known: status)"),
                )
            }
            (Some(Value::String(st)), None) if !st.trim().is_empty() => st.trim().to_string(),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "status: required, a non-empty string",
                )
            }
        },
        Ok(_) => return error(StatusCode::BAD_REQUEST, "body must be a JSON object"),
    };
    match change_deal_status(&s, &id, &status).await {
        Ok(v) => Json(v).into_response(),
        Err((code, m)) => error(code, m),
    }
}

/// SPEC L-2: a deal's new status, from the API or the console's deal
/// page: one path, so both change what the next lead becomes (L-3).
pub(crate) async fn change_deal_status(
    s: &AppState,
    id: &str,
    status: &str,
) -> Result<Value, (StatusCode, String)> {
    let (id, status) = (id.trim(), status.trim());
    if id.is_empty() || id.len() > 200 {
        return Err((
            StatusCode::BAD_REQUEST,
            "id: must be a deal id (the CRM's, or siptrack's), up to 200 characters".into(),
        ));
    }
    if status.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            "status: required, a non-empty string".into(),
        ));
    }
    let Some(group) = s.leads.group_of(status) else {
        let mut known: Vec<&str> = s.leads.status_groups.keys().map(String::as_str).collect();
        known.sort_unstable();
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "status: unknown status \"{status}\" (known: {}; or a group name: not_counted in_progress paid cancelled)",
                known.join(" ")
            ),
        ));
    };
    match s.store.set_deal_status(id, status, group, false).await {
        Ok(Some(deal)) => Ok(json!({
            "id": deal,
            "crm_deal_id": id,
            "status": status,
            "group": group.as_str()
        })),
        // A deal the CRM has named answers to that name only (its
        // `crm_deal_id`): say so, since siptrack's id is what the lists
        // show first.
        Ok(None) => Err((
            StatusCode::NOT_FOUND,
            format!(
                "id: no deal \"{id}\" (a deal the CRM has named is addressed by the CRM's id, its crm_deal_id in GET /api/v1/deals)"
            ),
        )),
        Err(e) => {
            tracing::error!(error = %e, "deal status not recorded");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable; nothing was recorded, retry".into(),
            ))
        }
    }
}

#[cfg(test)]
mod node_info_tests {
    #[test]
    fn the_node_name_is_a_label_escaped_as_prometheus_wants() {
        for (name, line) in [
            ("pbx-east-1", r#"siptrack_node_info{node="pbx-east-1"} 1"#),
            (r#"a"b\c"#, r#"siptrack_node_info{node="a\"b\\c"} 1"#),
        ] {
            let text = super::node_info(name);
            assert!(text.lines().any(|l| l == line), "{text}");
        }
    }
}

/// An address a CRM can take: one `@` between a local part and a domain,
/// neither empty, and none of white space, control or invisible format
/// characters (a zero-width space) or `< > ( ) [ ] \ , ; : "` (quoted
/// local parts are left out: no form sends them, and they carried markup
/// into CRMs that show e-mails as HTML; trial, 2026-12-02:
/// `a"><svg/onload=…>@x.ru` went through). `'` stays: `o'brien@…` is a
/// real address. No empty label in the domain.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let fine = |part: &str| {
        !part.is_empty()
            && part.chars().all(|c| {
                !c.is_whitespace()
                    && !c.is_control()
                    && !matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}' | '\u{ad}')
                    && !"<>()[]\\,;:\"@".contains(c)
            })
    };
    fine(local) && fine(domain) && domain.split('.').all(|label| !label.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Phones as people paste them normalise to the client's number
    /// (trial, 2026-12-03: each of these made a deal of its own); an
    /// extension goes to the lead's text.
    #[test]
    fn form_phones_pasted_or_with_an_extension_are_the_clients_number() {
        let rules = PhoneRules::default();
        // phone as sent, text as sent, phone stored, text stored
        let table = [
            ("+7\\u00a0926\\u00a0000-11-22", "", "79260001122", ""),
            ("+7 926 000\\u201311\\u201322", "", "79260001122", ""),
            (
                "\\uff18\\uff19\\uff12\\uff16\\uff10\\uff10\\uff10\\uff11\\uff11\\uff12\\uff12",
                "",
                "79260001122",
                "",
            ),
            ("tel:+79260001122", "", "79260001122", ""),
            ("+79260001122;ext=5", "", "79260001122", "Extension: 5"),
            (
                "+7 926 000-11-22 доб. 5",
                "call me",
                "79260001122",
                "call me\nExtension: 5",
            ),
            ("8 926 000 11 22", "", "79260001122", ""),
            // No number in it: no phone (never the field as typed), and
            // the text keeps what was typed.
            (
                "ask for Ivan x5",
                "hi",
                "",
                "hi\nPhone as typed: ask for Ivan x5",
            ),
            ("не звонить", "", "", "Phone as typed: не звонить"),
            ("12", "", "", "Phone as typed: 12"),
            // The number in a longer field (trial, 2026-12-03): the lead
            // gets it normalised, the text what was typed.
            (
                "тел. 89164000018",
                "",
                "79164000018",
                "Phone as typed: тел. 89164000018",
            ),
            (
                "+7 916 400 00 11 (Анна)",
                "",
                "79164000011",
                "Phone as typed: +7 916 400 00 11 (Анна)",
            ),
            (
                "+7 916 400-00-12, +7 916 400-00-13",
                "перезвонить",
                "79164000012",
                "перезвонить\nPhone as typed: +7 916 400-00-12, +7 916 400-00-13",
            ),
            (
                "тел. 8 916 400-00-14 доб. 7",
                "",
                "79164000014",
                "Extension: 7\nPhone as typed: тел. 8 916 400-00-14 доб. 7",
            ),
        ];
        for (phone, text, want_phone, want_text) in table {
            let body = format!(r#"{{"name":"N","phone":"{phone}","text":"{text}"}}"#);
            let lead = parse_lead(body.as_bytes(), &rules, 0).expect(phone);
            assert_eq!(lead.who.phone, want_phone, "{phone}");
            assert_eq!(lead.text, want_text, "{phone}");
        }
    }

    #[test]
    fn e_mail_addresses_a_crm_can_take() {
        for (s, ok) in [
            ("ivan@example.com", true),
            ("ivan.petrov+promo@mail.example.ru", true),
            ("иван@почта.рф", true),
            ("a\"><svg/onload=alert(13)>@x.ru", false),
            ("ivan@", false),
            ("@example.com", false),
            ("ivan", false),
            ("ivan@@example.com", false),
            ("ivan @example.com", false),
            ("ivan@example.com\r\nBcc: x", false),
            ("ivan@.example.com", false),
            ("ivan@example.com.", false),
            ("<ivan@example.com>", false),
            ("ivan;drop@example.com", false),
            ("o'brien@example.com", true),
            ("a\u{200b}@b.c", false),
            ("a@b..c", false),
            ("a@intranet", true),
        ] {
            assert_eq!(is_email(s), ok, "{s:?}");
        }
    }

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
        assert_eq!(
            parse_visit(br#"{"visit_id": -7}"#).expect("negative id").id,
            "-7"
        );
        for (body, needle) in [
            (&b"{"[..], "body is not JSON"),
            (b"[1]", "body must be a JSON object"),
            (b"{}", "visit_id: required"),
            (br#"{"visit_id": ""}"#, "visit_id: required"),
            (
                br#"{"visit_id": ["x"]}"#,
                "visit_id: expected a string or an integer, got a list",
            ),
            (
                br#"{"visit_id": true}"#,
                "visit_id: expected a string or an integer, got a boolean",
            ),
            (
                br#"{"visit_id": 1.5}"#,
                "visit_id: expected a string or an integer, got 1.5",
            ),
            (
                br#"{"visit_id": 1e3}"#,
                "visit_id: expected a string or an integer, got 1000.0",
            ),
            (
                br#"{"visit_id": "v", "city": {"a": 1}}"#,
                "city: expected a string, got an object",
            ),
            (
                br#"{"visit_id": "v", "city": 77}"#,
                "city: expected a string, got a number",
            ),
            (
                br#"{"visit_id": "v", "utm_source": false}"#,
                "utm_source: expected a string, got a boolean",
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
        for scheme in ["bearer", "BEARER", "bEaReR"] {
            let mut h = HeaderMap::new();
            let v = format!("{scheme} secret");
            h.insert(header::AUTHORIZATION, v.parse().expect("header"));
            assert!(authorized(&h, Some("secret")), "{v}");
        }
        assert!(!authorized(&h, None), "no token configured: nobody gets in");
        h.insert(
            header::AUTHORIZATION,
            "Basic secret".parse().expect("header"),
        );
        assert!(!authorized(&h, Some("secret")));
    }

    /// Issue 12, item 10: the auth scheme is case-insensitive (RFC 7235
    /// 2.1); the token is not.
    #[test]
    fn bearer_scheme_in_any_case() {
        for (value, ok) in [
            ("Bearer secret", true),
            ("bearer secret", true),
            ("BEARER secret", true),
            ("bEaReR secret", true),
            ("Bearer  secret", true),
            ("bearer Secret", false),
            ("Bearersecret", false),
            ("Bear secret", false),
            ("Basic secret", false),
            ("secret", false),
            ("", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().expect("header"));
            assert_eq!(authorized(&h, Some("secret")), ok, "{value:?}");
        }
    }
}
