//! The web console's HTTP side (SPEC U-1): sign-in and sessions, CSRF on
//! every form, the pages of `crate::ui` filled from the store, and live
//! rows over server-sent events. A page without a session redirects to
//! the sign-in; `/ui/events` and form posts answer 401 instead, and a
//! form post without its session's CSRF token 403.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io::Read as _;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};

use super::{change_deal_status, requeue_outbox, AppState};
use crate::config::UiConfig;
use crate::ui::limits::{FailedSignIns, Streams};
use crate::ui::session::{cookie, same_secret, Session, Sessions};
use crate::ui::{self, Ctx};

const SESSION_COOKIE: &str = "siptrack_session";
/// Before sign-in: the login form's CSRF token (double submit).
const LOGIN_COOKIE: &str = "siptrack_login";
/// Sessions kept at most (the oldest to expire goes first).
const MAX_SESSIONS: usize = 10_000;
/// Password hashes checked at once.
const PASSWORD_CHECKS: usize = 2;
/// Failed sign-ins counted over this window (ms) …
const SIGN_IN_WINDOW_MS: u64 = 15 * 60_000;
/// … per (address, user name) and per address before attempts are
/// refused unchecked.
const SIGN_INS_PER_USER: usize = 5;
const SIGN_INS_PER_ADDRESS: usize = 20;
/// Live-row streams (`/ui/events`) one session may hold: a page each,
/// in a few tabs.
const STREAMS_PER_SESSION: usize = 8;

/// The console's state: its config and the sessions.
pub struct UiState {
    pub config: UiConfig,
    sessions: Mutex<Sessions>,
    /// Password checks at once: argon2 takes ~19 MiB and tens of ms each
    /// on purpose, so a flood of sign-ins waits here instead of filling
    /// the blocking threads and memory.
    checks: tokio::sync::Semaphore,
    sign_ins: Mutex<FailedSignIns>,
    streams: Mutex<Streams>,
}

impl UiState {
    /// `max_streams`: live-row streams in all (each holds an HTTP
    /// connection; the server leaves the rest of `http.max_connections`
    /// to the API, the website and the CRM webhooks).
    pub fn new(config: UiConfig, max_streams: usize) -> UiState {
        let ttl = config.session_minutes * 60_000;
        UiState {
            config,
            sessions: Mutex::new(Sessions::new(ttl, MAX_SESSIONS)),
            checks: tokio::sync::Semaphore::new(PASSWORD_CHECKS),
            sign_ins: Mutex::new(FailedSignIns::new(
                SIGN_IN_WINDOW_MS,
                SIGN_INS_PER_USER,
                SIGN_INS_PER_ADDRESS,
            )),
            streams: Mutex::new(Streams::new(STREAMS_PER_SESSION, max_streams)),
        }
    }
}

/// One live-row stream's place, given back when the stream ends.
struct StreamSlot {
    ui: Arc<UiState>,
    session: String,
}

impl StreamSlot {
    fn take(ui: &Arc<UiState>, session: &str) -> Option<StreamSlot> {
        let mut streams = ui.streams.lock().ok()?;
        streams.try_open(session).then(|| StreamSlot {
            ui: ui.clone(),
            session: session.to_string(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut s) = self.ui.streams.lock() {
            s.close(&self.session);
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(overview))
        .route("/ui/app.css", get(css))
        .route("/ui/app.js", get(js))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/leads", get(leads))
        .route("/ui/calls", get(calls))
        .route("/ui/ladder", get(ladder))
        .route("/ui/deals", get(deals))
        .route("/ui/deals/{id}/status", post(deal_status))
        .route("/ui/pools", get(pools))
        .route("/ui/outbox", get(outbox))
        .route("/ui/outbox/{id}/retry", post(outbox_retry))
        .route("/ui/events", get(events))
        // The console's player: the recording route where the session
        // cookie (Path=/ui) reaches it (see `recording::links::console_link`).
        .route(
            "/ui/recordings/{call_id}",
            get(super::recordings::get_recording),
        )
}

/// Random hex from the kernel's CSPRNG (session ids, CSRF tokens, salts
/// are only as good as this).
fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

fn random_hex() -> std::io::Result<String> {
    Ok(crate::hex::hex(&random_bytes::<32>()?))
}

/// What every console answer carries: no caching, no framing, no script
/// or style from anywhere but siptrack itself (so not even a missed
/// escape could run inline script).
fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             media-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn html(status: StatusCode, body: String) -> Response {
    secure(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

/// A short page for a refused or failed request.
fn message(status: StatusCode, text: &str) -> Response {
    html(
        status,
        format!(
            "<!doctype html><meta charset=\"utf-8\"><title>{status}</title>\
             <link rel=\"stylesheet\" href=\"/ui/app.css\"><main><h1>{status}</h1>\
             <p class=\"err\">{}</p><p><a href=\"/ui/\">siptrack</a></p></main>",
            ui::esc(text)
        ),
    )
}

/// A console address with no page.
pub async fn not_found() -> Response {
    message(StatusCode::NOT_FOUND, "No such page.")
}

/// Behind TLS (a proxy saying so), cookies are Secure.
fn https(headers: &HeaderMap) -> bool {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    h("x-forwarded-proto").eq_ignore_ascii_case("https")
        || h("forwarded").to_ascii_lowercase().contains("proto=https")
}

fn set_cookie(name: &str, value: &str, max_age: u64, headers: &HeaderMap) -> HeaderValue {
    let secure = if https(headers) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The request's live session, with its id.
fn session_of(s: &AppState, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| cookie(c, SESSION_COOKIE))?
        .to_string();
    let now = s.clock.unix_ms();
    let session = s.ui.sessions.lock().ok()?.get(&id, now)?;
    Some((id, session))
}

/// Whether the request comes from a signed-in console user.
pub(super) fn signed_in(s: &AppState, headers: &HeaderMap) -> bool {
    session_of(s, headers).is_some()
}

/// A page's session, or the redirect to sign in (coming back here after).
fn page_session(s: &AppState, headers: &HeaderMap, here: &str) -> Result<Session, Box<Response>> {
    session_of(s, headers).map(|(_, sess)| sess).ok_or_else(|| {
        Box::new(secure(
            Redirect::to(&format!("/ui/login?next={}", ui::url_value(here))).into_response(),
        ))
    })
}

/// A form post's session: 401 without one, 403 without its CSRF token.
fn post_session(
    s: &AppState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(String, Session), Box<Response>> {
    let Some((id, sess)) = session_of(s, headers) else {
        return Err(Box::new(message(StatusCode::UNAUTHORIZED, "not signed in")));
    };
    match form.get("csrf") {
        Some(token) if same_secret(token, &sess.csrf) => Ok((id, sess)),
        _ => Err(Box::new(message(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token",
        ))),
    }
}

fn ctx<'a>(s: &'a AppState, sess: &'a Session) -> Ctx<'a> {
    Ctx {
        t: ui::texts::texts(s.ui.config.language),
        tz: s.leads.crm.format.timezone,
        phone_format: &s.leads.crm.format.phone_format,
        phone_rules: &s.leads.crm.format.phone_rules,
        csrf: &sess.csrf,
        user: &sess.user,
    }
}

fn storage_failed(s: &AppState, e: impl std::fmt::Display, what: &str) -> Response {
    tracing::error!(error = %e, "console: {what}");
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        ui::texts::texts(s.ui.config.language).storage_error,
    )
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        ui::APP_CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        ui::APP_JS,
    )
        .into_response()
}

async fn login_form(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Ok(token) = random_hex() else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, "no randomness");
    };
    let next = ui::login::safe_next(q.get("next").map_or("", String::as_str));
    let t = ui::texts::texts(s.ui.config.language);
    let body = ui::login::page(t, q.contains_key("failed"), next).replace(
        "<input type=\"hidden\" name=\"next\"",
        &format!("<input type=\"hidden\" name=\"csrf\" value=\"{token}\"><input type=\"hidden\" name=\"next\""),
    );
    let mut r = html(StatusCode::OK, body);
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &token, 600, &headers),
    );
    r
}

async fn login(
    State(s): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    // Tests that call the router directly have no connection.
    let ip = peer.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |p| p.0 .0.ip());
    // The form's token must be the one its page set as a cookie: a page
    // elsewhere cannot sign a browser in to an account of its choosing.
    let expected = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| cookie(c, LOGIN_COOKIE));
    match (expected, f.get("csrf")) {
        (Some(e), Some(g)) if same_secret(e, g) => {}
        _ => return message(StatusCode::FORBIDDEN, "missing or wrong CSRF token"),
    }
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let (user, password) = (field("user"), field("password"));
    let next = ui::login::safe_next(&field("next")).to_string();
    let now = s.clock.unix_ms();
    let refused =
        s.ui.sign_ins
            .lock()
            .ok()
            .and_then(|mut f| f.refused_for(ip, &user, now));
    if let Some(ms) = refused {
        tracing::warn!(%ip, "console: too many failed sign-ins; refused unchecked");
        let mut r = message(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed sign-ins from this address: try again later",
        );
        if let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let tried = user.clone();
    let (users, token) = (s.ui.config.users.clone(), s.token.clone());
    // argon2 is slow on purpose: off the runtime's threads, a few at once.
    let Ok(_turn) = s.ui.checks.acquire().await else {
        return message(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let who = tokio::task::spawn_blocking(move || {
        ui::login::check(&users, token.as_deref(), &user, &password)
    })
    .await
    .ok()
    .flatten();
    let Some(who) = who else {
        if let Ok(mut f) = s.ui.sign_ins.lock() {
            f.failed(ip, &tried, s.clock.unix_ms());
        }
        tracing::warn!(%ip, "console: a sign-in failed");
        return secure(
            Redirect::to(&format!("/ui/login?failed&next={}", ui::url_value(&next)))
                .into_response(),
        );
    };
    let (Ok(id), Ok(csrf)) = (random_hex(), random_hex()) else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, "no randomness");
    };
    if let Ok(mut f) = s.ui.sign_ins.lock() {
        f.succeeded(ip, &tried);
    }
    match s.ui.sessions.lock() {
        Ok(mut sessions) => sessions.open(id.clone(), csrf, &who, now),
        Err(_) => return message(StatusCode::INTERNAL_SERVER_ERROR, "sessions unavailable"),
    };
    tracing::info!(user = %who, "console: signed in");
    let mut r = secure(Redirect::to(&next).into_response());
    let h = r.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            &id,
            s.ui.config.session_minutes * 60,
            &headers,
        ),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", 0, &headers),
    );
    r
}

async fn logout(
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let (id, _) = match post_session(&s, &headers, &f) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Ok(mut sessions) = s.ui.sessions.lock() {
        sessions.close(&id);
    }
    let mut r = secure(Redirect::to("/ui/login").into_response());
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, &headers),
    );
    r
}

async fn overview(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let sess = match page_session(&s, &headers, "/ui/") {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let (range, hours) = ui::overview::RANGES
        .iter()
        .find(|(r, _)| q.get("range").map(String::as_str) == Some(*r))
        .copied()
        .unwrap_or(ui::overview::RANGES[0]);
    let now_ms = s.clock.unix_ms() as i64;
    // Whole hours: the last bar is the hour under way.
    let from_ms = (now_ms / 3_600_000 - hours + 1) * 3_600_000;
    let calls = match s.store.calls_per_hour(from_ms).await {
        Ok(c) => c,
        Err(e) => return storage_failed(&s, e, "calls per hour"),
    };
    let channels = match s.store.leads_per_channel(from_ms / 1000, 30).await {
        Ok(c) => c,
        Err(e) => return storage_failed(&s, e, "leads per channel"),
    };
    let sip: Vec<(String, String)> = match s.sip.lock() {
        Ok(snap) => snap
            .stats
            .fields()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([
                ("dialogs".to_string(), snap.dialogs.to_string()),
                ("transactions".to_string(), snap.transactions.to_string()),
            ])
            .collect(),
        Err(_) => Vec::new(),
    };
    let o = ui::overview::Overview {
        range,
        hours,
        from_ms,
        calls: &calls,
        channels: &channels,
        sip: &sip,
    };
    html(StatusCode::OK, ui::overview::page(&ctx(&s, &sess), &o))
}

async fn leads(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let sess = match page_session(&s, &headers, "/ui/leads") {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let c = ctx(&s, &sess);
    let mut query = match ui::leads::parse_filter(&q, c.tz, &s.phone) {
        Ok(query) => query,
        Err(e) => {
            return html(
                StatusCode::BAD_REQUEST,
                ui::leads::page(&c, &q, &[], None, Some(&e)),
            )
        }
    };
    // The newest id only matters where no `before` says where to start.
    let newest = match query.before {
        Some(_) => 0,
        None => match s.store.newest_lead_id().await {
            Ok(n) => n,
            Err(e) => return storage_failed(&s, e, "newest lead"),
        },
    };
    ui::leads::bound_scan(&mut query, newest);
    let floor = query.floor;
    match s.store.lead_page(query).await {
        Ok(rows) => html(StatusCode::OK, ui::leads::page(&c, &q, &rows, floor, None)),
        Err(e) => storage_failed(&s, e, "lead page"),
    }
}

async fn calls(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let sess = match page_session(&s, &headers, "/ui/calls") {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let before = match q.get("before").map(|b| b.parse::<i64>()) {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(_)) => return message(StatusCode::BAD_REQUEST, "before: not a call row id"),
    };
    match s.store.call_page(before, None, ui::calls::PAGE + 1).await {
        Ok(rows) => html(
            StatusCode::OK,
            ui::calls::page(
                &ctx(&s, &sess),
                &rows,
                before,
                &s.recordings.links,
                s.clock.unix_ms() / 1000,
            ),
        ),
        Err(e) => storage_failed(&s, e, "call page"),
    }
}

async fn ladder(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let call = q.get("call").cloned().unwrap_or_default();
    let here = format!("/ui/ladder?call={}", ui::url_value(&call));
    let sess = match page_session(&s, &headers, &here) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let c = ctx(&s, &sess);
    let body = match &s.traces {
        None => ui::ladder::page(&c, &call, None, false),
        Some(t) => match t.lock() {
            Ok(t) => ui::ladder::page(&c, &call, t.call(call.as_bytes()), true),
            Err(_) => return message(StatusCode::INTERNAL_SERVER_ERROR, "traces unavailable"),
        },
    };
    html(StatusCode::OK, body)
}

/// The statuses the deal form offers: the configured ones and the group
/// names, sorted, once each.
fn statuses(s: &AppState) -> Vec<String> {
    let mut v: Vec<String> = s.leads.status_groups.keys().cloned().collect();
    for g in ["not_counted", "in_progress", "paid", "cancelled"] {
        if !v.iter().any(|x| x == g) {
            v.push(g.to_string());
        }
    }
    v.sort();
    v
}

async fn deals(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let sess = match page_session(&s, &headers, "/ui/deals") {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match s.store.list_deals(200, 0).await {
        Ok(rows) => html(
            StatusCode::OK,
            ui::deals::page(
                &ctx(&s, &sess),
                &rows,
                &statuses(&s),
                None,
                &s.recordings.links,
                s.clock.unix_ms() / 1000,
            ),
        ),
        Err(e) => storage_failed(&s, e, "deals"),
    }
}

async fn deal_status(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = post_session(&s, &headers, &f) {
        return *r;
    }
    let status = f.get("status").map_or("", |v| v.as_str());
    match change_deal_status(&s, &id, status).await {
        Ok(_) => secure(
            Redirect::to(&format!("/ui/deals#deal-{}", ui::url_value(id.trim()))).into_response(),
        ),
        Err((code, m)) => message(code, &m),
    }
}

async fn pools(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let sess = match page_session(&s, &headers, "/ui/pools") {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let now = s.clock.unix_ms();
    let (numbers, exhaustions) = match s.pools.lock() {
        Ok(p) => (p.numbers(now), p.exhaustions().cloned().collect::<Vec<_>>()),
        Err(_) => return message(StatusCode::INTERNAL_SERVER_ERROR, "pool state unavailable"),
    };
    html(
        StatusCode::OK,
        ui::pools::page(&ctx(&s, &sess), &numbers, &exhaustions, now),
    )
}

async fn outbox(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let sess = match page_session(&s, &headers, "/ui/outbox") {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut items = Vec::new();
    for state in ["failed", "pending"] {
        match s.store.list_outbox(Some(state), 200).await {
            Ok(rows) => items.extend(rows),
            Err(e) => return storage_failed(&s, e, "outbox"),
        }
    }
    html(
        StatusCode::OK,
        ui::outbox::page(&ctx(&s, &sess), &items, None),
    )
}

async fn outbox_retry(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = post_session(&s, &headers, &f) {
        return *r;
    }
    match requeue_outbox(&s, &id).await {
        Ok(_) => secure(Redirect::to("/ui/outbox").into_response()),
        Err((code, m)) => message(code, &m),
    }
}

/// What a live stream sends: new leads, or new calls.
#[derive(Clone, Copy)]
enum Live {
    Lead,
    Call,
}

struct Stream {
    s: AppState,
    session: String,
    kind: Live,
    after: i64,
    recorded: tokio::sync::watch::Receiver<u64>,
    ready: VecDeque<Event>,
    ended: bool,
    /// Held for the stream's life.
    _slot: StreamSlot,
}

impl Stream {
    /// Rows newer than `after`, oldest first (each goes on top).
    async fn fetch(&mut self, sess: &Session) -> Result<(), crate::store::StoreError> {
        let s = &self.s;
        let c = ctx(s, sess);
        match self.kind {
            Live::Lead => {
                let rows = s
                    .store
                    .lead_page(crate::store::query::LeadQuery {
                        after: Some(self.after),
                        limit: 100,
                        ..Default::default()
                    })
                    .await?;
                for l in rows.iter().rev() {
                    self.after = self.after.max(l.id);
                    self.ready
                        .push_back(Event::default().event("lead").data(ui::leads::row(&c, l)));
                }
            }
            Live::Call => {
                let rows = s.store.call_page(None, Some(self.after), 100).await?;
                for (id, call) in rows.iter().rev() {
                    self.after = self.after.max(*id);
                    self.ready
                        .push_back(Event::default().event("call").data(ui::calls::row(
                            &c,
                            *id,
                            call,
                            &s.recordings.links,
                            s.clock.unix_ms() / 1000,
                        )));
                }
            }
        }
        Ok(())
    }

    async fn next(mut self) -> Option<(Result<Event, Infallible>, Stream)> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some((Ok(e), self));
            }
            if self.ended {
                return None;
            }
            let now = self.s.clock.unix_ms();
            let sess = self
                .s
                .ui
                .sessions
                .lock()
                .ok()
                .and_then(|mut m| m.get(&self.session, now));
            let Some(sess) = sess else {
                self.ended = true;
                // With data: browsers drop an event whose data is empty
                // (HTML's event-stream rules), and the page went stale.
                let gone = Event::default().event("signed-out").data("session ended");
                return Some((Ok(gone), self));
            };
            // Marked seen before reading, so a commit during the read
            // wakes the next round.
            self.recorded.borrow_and_update();
            if let Err(e) = self.fetch(&sess).await {
                tracing::warn!(error = %e, "console: live rows");
            }
            if self.ready.is_empty() {
                // Woken by a commit; at least once a minute to see the
                // session end.
                let woke =
                    tokio::time::timeout(Duration::from_secs(60), self.recorded.changed()).await;
                if let Ok(Err(_)) = woke {
                    return None;
                }
            }
        }
    }
}

async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some((session, _)) = session_of(&s, &headers) else {
        return message(StatusCode::UNAUTHORIZED, "not signed in");
    };
    let (kind, after) = match (q.get("lead"), q.get("call")) {
        (Some(a), None) => (Live::Lead, a),
        (None, Some(a)) => (Live::Call, a),
        _ => return message(StatusCode::BAD_REQUEST, "?lead=<id> or ?call=<id>"),
    };
    let Ok(after) = after.parse::<i64>() else {
        return message(StatusCode::BAD_REQUEST, "the id after which to send rows");
    };
    let Some(slot) = StreamSlot::take(&s.ui, &session) else {
        return message(
            StatusCode::TOO_MANY_REQUESTS,
            "too many live-row streams open (close some console tabs)",
        );
    };
    let recorded = s.store.recorded();
    let stream = Stream {
        _slot: slot,
        s,
        session,
        kind,
        after,
        recorded,
        ready: VecDeque::new(),
        ended: false,
    };
    let events = futures_util::stream::unfold(stream, Stream::next);
    secure(
        Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response(),
    )
}
