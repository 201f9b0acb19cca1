//! A test amoCRM for the e2e tests: a real HTTP listener on loopback that
//! speaks the part of amoCRM API v4 siptrack uses, written from amoCRM's
//! API reference (leads/complex, the leads list with `query`, lead notes,
//! tasks, calls, problem+json errors, 7 requests per second):
//! - contacts are kept apart from leads: the complex add makes one,
//!   `GET /api/v4/contacts?query=…` searches them (full text, 204 when
//!   nothing matches), and `POST /api/v4/leads` with
//!   `_embedded.contacts: [{id}]` links a new lead to an existing one
//!   (`{_embedded: {leads: [{id, request_id}]}}`; an unknown id is 400);
//! - every request must carry `Authorization: Bearer <token>` (else 401
//!   problem+json);
//! - bodies are checked field by field against the documented shapes
//!   (else 400 problem+json with `validation-errors`);
//! - ids are handed out as amoCRM does (numbers; the complex add answers
//!   `[{id, contact_id, company_id, request_id, merged}]`);
//! - more than `limit` requests within any second are answered 429 and
//!   counted;
//! - `slow_creates` / `slow_calls` apply that many complex adds / calls,
//!   then answer them after `slow_by` (past siptrack's timeout);
//! - a lead's notes (`GET /api/v4/leads/{id}/notes`) and tasks
//!   (`GET /api/v4/tasks?filter[entity_type]=leads&filter[entity_id]=…`)
//!   are listed, 204 when there are none; `late_creates` hold that many
//!   complex adds `slow_by` before applying them; `slow_notes` / `slow_tasks`
//!   answer that many adds late;
//! - `busy_lookups` answers that many lead look-ups 503;
//! - a call is filed by its phone (the last 10 digits) as amoCRM's calls
//!   page says: with no contact of that phone it is refused under
//!   `_embedded.errors`; when the contact has one lead it goes on the
//!   lead's card, else on the contact's; `call_in` notes are listed by
//!   `GET /api/v4/{leads|contacts}/notes?filter[note_type]=call_in&filter[updated_at][from]=…`
//!   (204 when there are none).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

/// A lead as stored, with the contact made with it.
#[derive(Clone, Debug)]
pub struct Lead {
    pub id: u64,
    pub contact_id: Option<u64>,
    /// The lead object as received.
    pub json: Value,
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub status: u16,
}

#[derive(Default)]
pub struct Inner {
    pub leads: Vec<Lead>,
    /// (contact id, contact object as received)
    pub contacts: Vec<(u64, Value)>,
    /// (lead id, note object)
    pub notes: Vec<(u64, Value)>,
    pub tasks: Vec<Value>,
    pub calls: Vec<Value>,
    /// When each call was added (Unix seconds), for the notes list.
    pub call_times: Vec<i64>,
    /// Where each call was filed: "leads" or "contacts".
    pub call_cards: Vec<&'static str>,
    /// Calls refused for a phone no contact has.
    pub calls_refused: Vec<Value>,
    pub requests: Vec<Seen>,
    pub too_many: usize,
    pub bad_requests: Vec<String>,
    /// When set, custom field ids this account has; others are refused
    /// with 400 `NotSupportedChoice`, as amoCRM does.
    pub known_fields: Option<Vec<u64>>,
    /// Complex adds still to answer late.
    pub slow_creates: usize,
    pub slow_calls: usize,
    /// Notes and tasks still to answer late.
    pub slow_notes: usize,
    pub slow_tasks: usize,
    pub slow_by: Duration,
    /// Complex adds still to apply late: each is held `slow_by` before it
    /// is applied and answered, as an amoCRM still working on it when
    /// siptrack's timeout ran out.
    pub late_creates: usize,
    /// Lead look-ups (`GET /api/v4/leads?query=…`) still to answer 503,
    /// as an overloaded amoCRM does: the create waits for its retry.
    pub busy_lookups: usize,
    window: VecDeque<Instant>,
    next_id: u64,
}

pub struct Amo {
    pub port: u16,
    state: Arc<Mutex<Inner>>,
    runtime: Option<tokio::runtime::Runtime>,
}

#[derive(Clone)]
struct Shared {
    token: Arc<String>,
    limit: usize,
    state: Arc<Mutex<Inner>>,
}

impl Amo {
    /// Listens on a free loopback port; `limit` requests per second.
    pub fn start(token: &str, limit: usize) -> Amo {
        let state = Arc::new(Mutex::new(Inner {
            next_id: 1000,
            ..Inner::default()
        }));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test amoCRM runtime");
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("addr").port();
        let shared = Shared {
            token: Arc::new(token.to_string()),
            limit,
            state: state.clone(),
        };
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            let app = Router::new().fallback(handle).with_state(shared);
            let _ = axum::serve(listener, app).await;
        });
        Amo {
            port,
            state,
            runtime: Some(rt),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

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
                        "test amoCRM: {what} not within {limit:?}; {} leads, {} notes, {} tasks, {} calls, {} requests, 429s {}, bad {:?}",
                        s.leads.len(),
                        s.notes.len(),
                        s.tasks.len(),
                        s.calls.len(),
                        s.requests.len(),
                        s.too_many,
                        s.bad_requests
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Amo {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The last ten digits of a phone: amoCRM finds a call's contact by them.
fn phone_key(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    digits[digits.len().saturating_sub(10)..].iter().collect()
}

/// The leads whose contact has this phone, oldest first.
fn leads_of_phone(s: &Inner, phone: &str) -> Vec<u64> {
    let key = phone_key(phone);
    if key.is_empty() {
        return Vec::new();
    }
    let contacts: Vec<u64> = s
        .contacts
        .iter()
        .filter(|(_, c)| {
            c["custom_fields_values"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|f| f["values"].as_array().into_iter().flatten())
                .any(|v| v["value"].as_str().is_some_and(|p| phone_key(p) == key))
        })
        .map(|(id, _)| *id)
        .collect();
    s.leads
        .iter()
        .filter(|l| l.contact_id.is_some_and(|c| contacts.contains(&c)))
        .map(|l| l.id)
        .collect()
}

/// The `query=` of a list request, its few escapes undone.
fn query_of(uri: &Uri) -> String {
    uri.query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("query="))
        .map(|q| q.replace("%2E", ".").replace("%2D", "-"))
        .unwrap_or_default()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn problem(status: u16, title: &str, detail: &str, errors: &[(&str, String)]) -> Response {
    let mut body = json!({
        "title": title,
        "type": format!("https://httpstatus.es/{status}"),
        "status": status,
        "detail": detail,
    });
    if !errors.is_empty() {
        body["validation-errors"] = json!([{
            "request_id": "0",
            "errors": errors.iter().map(|(path, d)| json!({"code": "InvalidType", "path": path, "detail": d})).collect::<Vec<_>>(),
        }]);
    }
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        body.to_string(),
    )
        .into_response();
    r.headers_mut().insert(
        "Content-Type",
        "application/problem+json".parse().expect("header"),
    );
    r
}

/// A body that must be a JSON array of at least one entity; else 400
/// problem+json saying `what` it is not.
fn non_empty_array<'a>(json: &'a Value, what: &str) -> Result<&'a Vec<Value>, Box<Response>> {
    json.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
        Box::new(problem(
            400,
            "Bad Request",
            "Request validation failed",
            &[("body", what.to_string())],
        ))
    })
}

/// A list answer as amoCRM gives it: 204 No Content when empty, else
/// `{_page, _embedded: {<name>: [...]}}`.
fn listed(name: &str, items: Vec<Value>) -> Response {
    if items.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ok_json(200, json!({"_page": 1, "_embedded": {name: items}}))
    }
}

fn ok_json(status: u16, v: Value) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        v.to_string(),
    )
        .into_response();
    r.headers_mut().insert(
        "Content-Type",
        "application/hal+json".parse().expect("header"),
    );
    r
}

/// `custom_fields_values`: `[{field_id: int, values: [{value: string}]}]`.
fn check_fields(v: &Value, path: &str, errs: &mut Vec<(&'static str, String)>) {
    let Some(fields) = v.as_array() else {
        errs.push(("custom_fields_values", format!("{path}: not an array")));
        return;
    };
    for f in fields {
        let ok = f["field_id"].as_u64().is_some()
            && f["values"].as_array().is_some_and(|vs| {
                !vs.is_empty()
                    && vs
                        .iter()
                        .all(|x| x["value"].as_str().is_some_and(|s| !s.is_empty()))
            })
            && f.as_object().is_some_and(|o| o.len() == 2);
        if !ok {
            errs.push(("custom_fields_values", format!("{path}: {f}")));
        }
    }
}

/// Absent, not a string, or empty.
fn blank(v: &Value) -> bool {
    v.as_str().is_none_or(str::is_empty)
}

/// Only `allowed` keys, each of the right kind.
fn check_keys(v: &Value, allowed: &[&str], path: &str, errs: &mut Vec<(&'static str, String)>) {
    match v.as_object() {
        Some(o) => {
            for k in o.keys() {
                if !allowed.contains(&k.as_str()) {
                    errs.push(("field", format!("{path}.{k} is not a field")));
                }
            }
        }
        None => errs.push(("body", format!("{path} is not an object"))),
    }
}

fn check_lead(lead: &Value) -> Vec<(&'static str, String)> {
    let mut errs = Vec::new();
    check_keys(
        lead,
        &[
            "name",
            "pipeline_id",
            "status_id",
            "responsible_user_id",
            "custom_fields_values",
            "_embedded",
        ],
        "lead",
        &mut errs,
    );
    if blank(&lead["name"]) {
        errs.push(("name", "This value should not be blank.".into()));
    }
    for k in ["pipeline_id", "status_id", "responsible_user_id"] {
        if !lead[k].is_null() && lead[k].as_u64().is_none() {
            errs.push(("id", format!("{k} must be an int")));
        }
    }
    if !lead["custom_fields_values"].is_null() {
        check_fields(&lead["custom_fields_values"], "lead", &mut errs);
    }
    if !lead["_embedded"].is_null() {
        check_keys(&lead["_embedded"], &["contacts"], "_embedded", &mut errs);
        for c in lead["_embedded"]["contacts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            check_keys(
                c,
                &["name", "custom_fields_values", "responsible_user_id"],
                "contact",
                &mut errs,
            );
            if blank(&c["name"]) {
                errs.push(("name", "contact name blank".into()));
            }
            check_fields(&c["custom_fields_values"], "contact", &mut errs);
        }
    }
    errs
}

async fn handle(
    State(sh): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let apply_late = {
        let mut s = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        let create =
            method == Method::POST && uri.path().trim_end_matches('/') == "/api/v4/leads/complex";
        (create && s.late_creates > 0).then(|| {
            s.late_creates -= 1;
            s.slow_by
        })
    };
    if let Some(d) = apply_late {
        // Applied whether or not siptrack still waits: a hyper handler is
        // dropped with its connection, which would unmake the create.
        let held = tokio::spawn(async move {
            tokio::time::sleep(d).await;
            answer(sh, method, uri, headers, body).await
        });
        return match held.await {
            Ok(r) => r,
            Err(_) => problem(500, "Internal Server Error", "late create failed", &[]),
        };
    }
    answer(sh, method, uri, headers, body).await
}

/// The answer to one request, as amoCRM gives it.
async fn answer(sh: Shared, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut delay = None;
    let response = {
        let mut s = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        while s
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            s.window.pop_front();
        }
        let r = if s.window.len() >= sh.limit {
            s.too_many += 1;
            problem(
                429,
                "Too Many Requests",
                "limit of requests per second",
                &[],
            )
        } else if auth != format!("Bearer {}", sh.token) {
            s.window.push_back(now);
            problem(401, "Unauthorized", "Invalid token", &[])
        } else {
            s.window.push_back(now);
            route(&mut s, &method, &uri, &path, &json, &mut delay)
        };
        let status = r.status().as_u16();
        if status == 400 {
            s.bad_requests.push(format!("{method} {path} {json}"));
        }
        s.requests.push(Seen {
            at: now,
            method: method.to_string(),
            path: path.clone(),
            status,
        });
        r
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    response
}

fn route(
    s: &mut Inner,
    method: &Method,
    uri: &Uri,
    path: &str,
    json: &Value,
    delay: &mut Option<Duration>,
) -> Response {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["api", "v4", "leads", "complex"]) => {
            let leads = match non_empty_array(json, "not an array of leads") {
                Ok(a) => a,
                Err(r) => return *r,
            };
            let mut errs = Vec::new();
            for l in leads {
                errs.extend(check_lead(l));
                if let Some(known) = &s.known_fields {
                    let ids = l["custom_fields_values"]
                        .as_array()
                        .into_iter()
                        .chain(
                            l["_embedded"]["contacts"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|c| &c["custom_fields_values"])
                                .filter_map(Value::as_array),
                        )
                        .flatten()
                        .filter_map(|f| f["field_id"].as_u64());
                    for id in ids {
                        if !known.contains(&id) {
                            errs.push((
                                "custom_fields_values.field_id",
                                format!(
                                    "field {id}: The value you selected is not a valid choice."
                                ),
                            ));
                        }
                    }
                }
            }
            if !errs.is_empty() {
                return problem(400, "Bad Request", "Request validation failed", &errs);
            }
            let mut out = Vec::new();
            for (i, l) in leads.iter().enumerate() {
                s.next_id += 1;
                let id = s.next_id;
                let contact_id = match l["_embedded"]["contacts"].get(0) {
                    Some(c) => {
                        s.next_id += 1;
                        s.contacts.push((s.next_id, c.clone()));
                        Some(s.next_id)
                    }
                    None => None,
                };
                s.leads.push(Lead {
                    id,
                    contact_id,
                    json: l.clone(),
                });
                out.push(
                    json!({"id": id, "contact_id": contact_id, "company_id": null,
                                "request_id": [i.to_string()], "merged": false}),
                );
            }
            if s.slow_creates > 0 {
                s.slow_creates -= 1;
                *delay = Some(s.slow_by);
            }
            ok_json(200, Value::Array(out))
        }
        ("GET", ["api", "v4", "leads"]) if s.busy_lookups > 0 => {
            s.busy_lookups -= 1;
            problem(503, "Service Unavailable", "try again later", &[])
        }
        ("GET", ["api", "v4", "leads"]) => {
            let query = query_of(uri);
            // amoCRM's search is full text over filled-in fields: a
            // substring match, so callers must check what they get.
            let hits: Vec<Value> = s
                .leads
                .iter()
                .filter(|l| !query.is_empty() && l.json.to_string().contains(&query))
                .map(|l| {
                    json!({"id": l.id, "name": l.json["name"],
                           "custom_fields_values": l.json["custom_fields_values"]})
                })
                .collect();
            listed("leads", hits)
        }
        ("GET", ["api", "v4", "contacts"]) => {
            let query = query_of(uri);
            let hits: Vec<Value> = s
                .contacts
                .iter()
                .filter(|(_, c)| !query.is_empty() && c.to_string().contains(&query))
                .map(|(id, c)| {
                    json!({"id": id, "name": c["name"],
                           "custom_fields_values": c["custom_fields_values"]})
                })
                .collect();
            listed("contacts", hits)
        }
        ("POST", ["api", "v4", "leads"]) => {
            let leads = match non_empty_array(json, "not an array of leads") {
                Ok(a) => a,
                Err(r) => return *r,
            };
            let mut errs = Vec::new();
            let mut links = Vec::new();
            for l in leads {
                let mut plain = l.clone();
                let embedded = plain
                    .as_object_mut()
                    .and_then(|o| o.remove("_embedded"))
                    .unwrap_or(Value::Null);
                errs.extend(check_lead(&plain));
                let linked = embedded["contacts"].as_array().cloned().unwrap_or_default();
                for c in &linked {
                    check_keys(c, &["id", "is_main"], "_embedded.contacts", &mut errs);
                }
                let contact = linked.first().and_then(|c| c["id"].as_u64());
                match contact {
                    Some(id) if s.contacts.iter().any(|(c, _)| *c == id) => {}
                    Some(id) => errs.push(("_embedded.contacts.id", format!("no contact {id}"))),
                    None => {}
                }
                links.push(contact);
            }
            if !errs.is_empty() {
                return problem(400, "Bad Request", "Request validation failed", &errs);
            }
            let mut out = Vec::new();
            for (i, (l, contact_id)) in leads.iter().zip(links).enumerate() {
                s.next_id += 1;
                s.leads.push(Lead {
                    id: s.next_id,
                    contact_id,
                    json: l.clone(),
                });
                out.push(json!({"id": s.next_id, "request_id": i.to_string()}));
            }
            ok_json(200, json!({"_embedded": {"leads": out}}))
        }
        ("POST", ["api", "v4", "leads", id, "notes"]) => {
            let Some(lead) = id
                .parse::<u64>()
                .ok()
                .filter(|id| s.leads.iter().any(|l| l.id == *id))
            else {
                return problem(404, "Not Found", "no such lead", &[]);
            };
            let notes = match non_empty_array(json, "not an array") {
                Ok(a) => a,
                Err(r) => return *r,
            };
            let mut out = Vec::new();
            for n in notes {
                let mut errs = Vec::new();
                check_keys(n, &["note_type", "params"], "note", &mut errs);
                check_keys(&n["params"], &["text"], "params", &mut errs);
                if n["note_type"] != "common" || blank(&n["params"]["text"]) {
                    errs.push(("params.text", format!("not a common note with text: {n}")));
                }
                if !errs.is_empty() {
                    return problem(400, "Bad Request", "Request validation failed", &errs);
                }
                s.next_id += 1;
                out.push(json!({"id": s.next_id, "entity_id": lead, "request_id": "0"}));
                s.notes.push((lead, n.clone()));
            }
            if s.slow_notes > 0 {
                s.slow_notes -= 1;
                *delay = Some(s.slow_by);
            }
            ok_json(200, json!({"_embedded": {"notes": out}}))
        }
        ("POST", ["api", "v4", "tasks"]) => {
            let tasks = match non_empty_array(json, "not an array") {
                Ok(a) => a,
                Err(r) => return *r,
            };
            let mut out = Vec::new();
            for t in tasks {
                let mut errs = Vec::new();
                check_keys(
                    t,
                    &[
                        "text",
                        "complete_till",
                        "entity_id",
                        "entity_type",
                        "task_type_id",
                        "responsible_user_id",
                    ],
                    "task",
                    &mut errs,
                );
                if blank(&t["text"]) || t["complete_till"].as_i64().is_none() {
                    errs.push(("text", format!("text and complete_till are required: {t}")));
                }
                let entity = t["entity_id"].as_u64();
                if t["entity_type"] != "leads"
                    || !entity.is_some_and(|e| s.leads.iter().any(|l| l.id == e))
                {
                    errs.push(("entity_id", format!("no such lead: {t}")));
                }
                if !errs.is_empty() {
                    return problem(400, "Bad Request", "Request validation failed", &errs);
                }
                s.next_id += 1;
                out.push(json!({"id": s.next_id, "request_id": "0"}));
                s.tasks.push(t.clone());
            }
            if s.slow_tasks > 0 {
                s.slow_tasks -= 1;
                *delay = Some(s.slow_by);
            }
            ok_json(200, json!({"_embedded": {"tasks": out}}))
        }
        ("POST", ["api", "v4", "calls"]) => {
            let calls = match non_empty_array(json, "not an array") {
                Ok(a) => a,
                Err(r) => return *r,
            };
            let (mut out, mut errors) = (Vec::new(), Vec::new());
            for c in calls {
                let mut errs = Vec::new();
                check_keys(
                    c,
                    &[
                        "direction",
                        "uniq",
                        "duration",
                        "source",
                        "phone",
                        "link",
                        "call_status",
                        "call_result",
                        "responsible_user_id",
                        "created_at",
                    ],
                    "call",
                    &mut errs,
                );
                let ok = matches!(c["direction"].as_str(), Some("inbound" | "outbound"))
                    && c["uniq"].as_str().is_some_and(|u| !u.is_empty())
                    && c["duration"].as_u64().is_some()
                    && c["source"].as_str().is_some_and(|u| !u.is_empty())
                    && c["phone"].as_str().is_some_and(|u| !u.is_empty())
                    && c["call_status"]
                        .as_u64()
                        .is_some_and(|v| (1..=7).contains(&v));
                if !ok {
                    errs.push((
                        "call",
                        format!("direction, uniq, duration, source, phone, call_status: {c}"),
                    ));
                }
                if c.get("created_at").is_some_and(|v| v.as_i64().is_none()) {
                    errs.push(("created_at", format!("not a Unix time: {c}")));
                }
                if !errs.is_empty() {
                    return problem(400, "Bad Request", "Request validation failed", &errs);
                }
                let phone = c["phone"].as_str().unwrap_or_default();
                let leads = leads_of_phone(s, phone);
                if leads.is_empty() {
                    errors.push(json!({"request_id": "0", "title": "Not Found",
                                       "detail": "Entity with phone not found"}));
                    s.calls_refused.push(c.clone());
                    continue;
                }
                let card = if leads.len() == 1 {
                    "leads"
                } else {
                    "contacts"
                };
                s.next_id += 1;
                out.push(json!({"id": s.next_id, "entity_id": leads[0], "entity_type": card, "request_id": "0"}));
                s.calls.push(c.clone());
                s.call_times.push(unix_now());
                s.call_cards.push(card);
            }
            if s.slow_calls > 0 {
                s.slow_calls -= 1;
                *delay = Some(s.slow_by);
            }
            ok_json(200, json!({"_embedded": {"calls": out, "errors": errors}}))
        }
        ("GET", ["api", "v4", "leads", id, "notes"]) => {
            let lead = id.parse::<u64>().unwrap_or(0);
            let notes: Vec<Value> = s
                .notes
                .iter()
                .enumerate()
                .filter(|(_, (l, _))| *l == lead)
                .map(|(i, (l, n))| {
                    json!({"id": 7000 + i, "entity_id": l, "note_type": n["note_type"],
                           "params": n["params"]})
                })
                .collect();
            listed("notes", notes)
        }
        ("GET", ["api", "v4", "tasks"]) => {
            let q: Vec<(String, String)> =
                form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
            let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let entity = get("filter[entity_id]").and_then(|v| v.parse::<u64>().ok());
            if get("filter[entity_type]").as_deref() != Some("leads") || entity.is_none() {
                return problem(
                    400,
                    "Bad Request",
                    "Request validation failed",
                    &[("filter", format!("{q:?}"))],
                );
            }
            let tasks: Vec<Value> = s
                .tasks
                .iter()
                .filter(|t| t["entity_id"].as_u64() == entity)
                .cloned()
                .collect();
            listed("tasks", tasks)
        }
        ("GET", ["api", "v4", card @ ("leads" | "contacts"), "notes"]) => {
            let q: Vec<(String, String)> =
                form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
            let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let from = get("filter[updated_at][from]").and_then(|v| v.parse::<i64>().ok());
            if get("filter[note_type]").as_deref() != Some("call_in") || from.is_none() {
                return problem(
                    400,
                    "Bad Request",
                    "Request validation failed",
                    &[("filter", format!("{q:?}"))],
                );
            }
            let notes: Vec<Value> = s
                .calls
                .iter()
                .zip(&s.call_times)
                .enumerate()
                .filter(|(i, (_, at))| Some(**at) >= from && s.call_cards[*i] == *card)
                .map(|(i, (c, at))| {
                    json!({"id": 9000 + i, "entity_id": 1, "note_type": "call_in",
                           "created_at": at, "updated_at": at,
                           "params": {"uniq": c["uniq"], "duration": c["duration"],
                                      "source": c["source"], "phone": c["phone"]}})
                })
                .collect();
            listed("notes", notes)
        }
        _ => problem(404, "Not Found", "no such route", &[]),
    }
}
