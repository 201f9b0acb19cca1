//! A test Bitrix24 for the e2e tests: a real HTTP listener on loopback
//! that speaks the part of Bitrix24's REST API siptrack uses, written
//! from Bitrix24's REST documentation (incoming webhooks, crm.deal.*,
//! crm.lead.*, crm.contact.add, crm.duplicate.findbycomm,
//! crm.timeline.comment.add, tasks.task.add,
//! telephony.externalcall.register/finish, voximplant.statistic.get):
//! - methods are called as `/rest/<user>/<secret>/<method>.json`; another
//!   user or secret is `401 NO_AUTH_FOUND`;
//! - bodies are checked field by field (unknown fields, wrong types,
//!   entities that do not exist: `400 ERROR_CORE` / `INVALID_ARG_VALUE`);
//! - a leaky bucket of `burst` requests drained at `per_second`: a
//!   request that finds it full is `503 QUERY_LIMIT_EXCEEDED`, counted;
//! - `slow` methods are applied, then answered after `slow_by` (past
//!   siptrack's timeout), that many times each;
//! - register hands out the same CALL_ID for a call not yet finished
//!   (as the docs say), finish makes the call's record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};

#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub status: u16,
}

/// A registered call and, once finished, its finish.
#[derive(Clone, Debug)]
pub struct Call {
    pub call_id: String,
    pub register: Value,
    pub finish: Option<Value>,
}

#[derive(Default)]
pub struct Inner {
    /// (id, fields as received, stage)
    pub deals: Vec<(u64, Value, String)>,
    pub leads: Vec<(u64, Value, String)>,
    pub contacts: Vec<(u64, Value)>,
    pub comments: Vec<Value>,
    pub tasks: Vec<Value>,
    pub calls: Vec<Call>,
    pub requests: Vec<Seen>,
    pub refused_for_rate: usize,
    pub bad_requests: Vec<String>,
    /// method → how many more to apply and answer late.
    pub slow: HashMap<String, usize>,
    pub slow_by: Duration,
    /// The leaky bucket's level and when it was last drained.
    level: f64,
    drained_at: Option<Instant>,
    next_id: u64,
}

impl Inner {
    /// Every deal or lead, whichever the portal gets.
    pub fn entities(&self) -> Vec<(u64, Value, String)> {
        self.deals.iter().chain(&self.leads).cloned().collect()
    }
    pub fn finished_calls(&self) -> Vec<&Call> {
        self.calls.iter().filter(|c| c.finish.is_some()).collect()
    }
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

pub struct Bitrix {
    pub port: u16,
    state: Arc<Mutex<Inner>>,
    runtime: Option<tokio::runtime::Runtime>,
}

#[derive(Clone)]
struct Shared {
    prefix: Arc<String>,
    burst: f64,
    per_second: f64,
    state: Arc<Mutex<Inner>>,
}

pub const USER: u64 = 7;
pub const SECRET: &str = "w3bh00ks3cr3t";

impl Bitrix {
    /// Listens on a free loopback port; the webhook of user 7 with
    /// `SECRET`; a bucket of `burst` drained at `per_second`.
    pub fn start(burst: u32, per_second: u32) -> Bitrix {
        let state = Arc::new(Mutex::new(Inner {
            next_id: 100,
            ..Inner::default()
        }));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test Bitrix24 runtime");
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("addr").port();
        let shared = Shared {
            prefix: Arc::new(format!("/rest/{USER}/{SECRET}/")),
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            state: state.clone(),
        };
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            let app = Router::new().fallback(handle).with_state(shared);
            let _ = axum::serve(listener, app).await;
        });
        Bitrix {
            port,
            state,
            runtime: Some(rt),
        }
    }

    pub fn webhook_url(&self) -> String {
        format!("http://127.0.0.1:{}/rest/{USER}/{SECRET}/", self.port)
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
                        "test Bitrix24: {what} not within {limit:?}; {} deals, {} leads, {} contacts, {} comments, {} tasks, {} calls, {} requests, {} refused for the rate, bad {:?}",
                        s.deals.len(),
                        s.leads.len(),
                        s.contacts.len(),
                        s.comments.len(),
                        s.tasks.len(),
                        s.calls.len(),
                        s.requests.len(),
                        s.refused_for_rate,
                        s.bad_requests
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Moves a deal (or lead) to a stage, as a manager in Bitrix24 does.
    pub fn set_stage(&self, id: u64, stage: &str) {
        let mut guard = self.lock();
        let s = &mut *guard;
        for (i, _, st) in s.deals.iter_mut().chain(s.leads.iter_mut()) {
            if *i == id {
                *st = stage.to_string();
            }
        }
    }
}

impl Drop for Bitrix {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn answer(status: u16, v: Value) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        v.to_string(),
    )
        .into_response();
    r.headers_mut().insert(
        "Content-Type",
        "application/json; charset=utf-8".parse().expect("header"),
    );
    r
}

fn result(v: Value) -> Response {
    answer(
        200,
        json!({"result": v, "time": {"start": 1.0, "finish": 1.01, "duration": 0.01}}),
    )
}

fn fail(status: u16, code: &str, description: &str) -> Response {
    answer(
        status,
        json!({"error": code, "error_description": description}),
    )
}

async fn handle(State(sh): State<Shared>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut delay = None;
    let name = path
        .strip_prefix(sh.prefix.as_str())
        .and_then(|m| m.strip_suffix(".json"))
        .map(str::to_string);
    let response = {
        let mut s = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // The bucket drains continuously; each request fills it by one.
        let since = s
            .drained_at
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        s.level = (s.level - since * sh.per_second).max(0.0);
        s.drained_at = Some(now);
        let r = if s.level + 1.0 > sh.burst {
            s.refused_for_rate += 1;
            fail(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        } else {
            s.level += 1.0;
            match &name {
                None => fail(401, "NO_AUTH_FOUND", "Wrong authorization data"),
                Some(_) if method != Method::POST || json.is_null() => fail(
                    400,
                    "INVALID_REQUEST",
                    "a POST with a JSON object is expected",
                ),
                Some(m) => route(&mut s, m, &json, &mut delay),
            }
        };
        let status = r.status().as_u16();
        if status == 400 {
            s.bad_requests
                .push(format!("{} {json}", name.clone().unwrap_or(path.clone())));
        }
        s.requests.push(Seen {
            at: now,
            method: name.clone().unwrap_or(path.clone()),
            status,
        });
        r
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    response
}

/// Only `allowed` keys.
fn unknown_keys(v: &Value, allowed: &[&str]) -> Option<String> {
    let o = v.as_object()?;
    o.keys()
        .find(|k| !allowed.contains(&k.as_str()))
        .map(|k| format!("unknown field {k}"))
}

/// `[{VALUE, VALUE_TYPE}]`, non-empty values.
fn multifield_ok(v: &Value) -> bool {
    v.is_null()
        || v.as_array().is_some_and(|a| {
            !a.is_empty()
                && a.iter().all(|x| {
                    x["VALUE"].as_str().is_some_and(|s| !s.is_empty())
                        && matches!(x["VALUE_TYPE"].as_str(), Some("WORK" | "HOME" | "MOBILE"))
                        && x.as_object().is_some_and(|o| o.len() == 2)
                })
        })
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn id_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

const DEAL_FIELDS: &[&str] = &[
    "TITLE",
    "CONTACT_ID",
    "CATEGORY_ID",
    "SOURCE_ID",
    "SOURCE_DESCRIPTION",
    "UTM_SOURCE",
    "UTM_MEDIUM",
    "UTM_CAMPAIGN",
    "UTM_CONTENT",
    "UTM_TERM",
    "COMMENTS",
    "ORIGINATOR_ID",
    "ORIGIN_ID",
    "ASSIGNED_BY_ID",
];

fn route(s: &mut Inner, m: &str, json: &Value, delay: &mut Option<Duration>) -> Response {
    if let Some(n) = s.slow.get_mut(m).filter(|n| **n > 0) {
        *n -= 1;
        *delay = Some(s.slow_by);
    }
    let fields = &json["fields"];
    match m {
        "crm.deal.list" | "crm.lead.list" => {
            if let Some(e) = unknown_keys(json, &["filter", "select", "order", "start"]) {
                return fail(400, "INVALID_ARG_VALUE", &e);
            }
            let filter = json["filter"].as_object().cloned().unwrap_or_default();
            let list = if m == "crm.deal.list" {
                &s.deals
            } else {
                &s.leads
            };
            let hits: Vec<Value> = list
                .iter()
                .filter(|(_, f, _)| filter.iter().all(|(k, v)| f.get(k).is_some_and(|x| x == v)))
                .map(|(id, f, _)| json!({"ID": id.to_string(), "ORIGIN_ID": f["ORIGIN_ID"]}))
                .collect();
            result(Value::Array(hits))
        }
        "crm.deal.add" | "crm.lead.add" => {
            let lead = m == "crm.lead.add";
            let mut allowed = DEAL_FIELDS.to_vec();
            if lead {
                allowed.retain(|f| *f != "CATEGORY_ID");
                allowed.extend(["NAME", "PHONE", "EMAIL"]);
            }
            if let Some(e) = unknown_keys(fields, &allowed) {
                return fail(400, "ERROR_CORE", &e);
            }
            if fields["TITLE"].as_str().is_none_or(str::is_empty) {
                return fail(400, "ERROR_CORE", "TITLE is empty");
            }
            if !fields["CONTACT_ID"].is_null() {
                let c = id_of(&fields["CONTACT_ID"]);
                if !c.is_some_and(|c| s.contacts.iter().any(|(id, _)| *id == c)) {
                    return fail(400, "ERROR_CORE", "Contact not found");
                }
            }
            if !multifield_ok(&fields["PHONE"]) || !multifield_ok(&fields["EMAIL"]) {
                return fail(
                    400,
                    "ERROR_CORE",
                    "PHONE/EMAIL must be [{VALUE, VALUE_TYPE}]",
                );
            }
            let id = s.id();
            if lead {
                s.leads.push((id, fields.clone(), "NEW".into()));
            } else {
                s.deals.push((id, fields.clone(), "NEW".into()));
            }
            result(json!(id))
        }
        "crm.deal.get" | "crm.lead.get" => {
            let Some(id) = id_of(&json["id"]) else {
                return fail(400, "ERROR_CORE", "ID is not defined or invalid.");
            };
            let (list, field) = if m == "crm.deal.get" {
                (&s.deals, "STAGE_ID")
            } else {
                (&s.leads, "STATUS_ID")
            };
            match list.iter().find(|(i, _, _)| *i == id) {
                Some((i, f, stage)) => {
                    let mut out: Map<String, Value> = f.as_object().cloned().unwrap_or_default();
                    out.insert("ID".into(), json!(i.to_string()));
                    out.insert(field.into(), json!(stage));
                    // The stage's semantics, as Bitrix24 gives them for the
                    // default pipeline's stages in any pipeline: WON (and
                    // a lead's CONVERTED) success, LOSE and APOLOGY (a
                    // lead's JUNK) failure, the rest in progress.
                    let own = stage.rsplit(':').next().unwrap_or(stage);
                    let semantic = match own {
                        "WON" | "CONVERTED" => "S",
                        "LOSE" | "APOLOGY" | "JUNK" => "F",
                        _ => "P",
                    };
                    out.insert(
                        format!("{}_SEMANTIC_ID", &field[..field.len() - 3]),
                        json!(semantic),
                    );
                    result(Value::Object(out))
                }
                None => fail(400, "ERROR_NOT_FOUND", "Not found"),
            }
        }
        "crm.duplicate.findbycomm" => {
            if let Some(e) = unknown_keys(json, &["entity_type", "type", "values"]) {
                return fail(400, "INVALID_ARG_VALUE", &e);
            }
            let kind = json["type"].as_str().unwrap_or_default();
            let (field, norm): (&str, fn(&str) -> String) = match kind {
                "PHONE" => ("PHONE", digits),
                "EMAIL" => ("EMAIL", |e: &str| e.to_lowercase()),
                _ => return fail(400, "INVALID_ARG_VALUE", "type must be PHONE or EMAIL"),
            };
            if json["entity_type"] != "CONTACT" {
                return fail(400, "INVALID_ARG_VALUE", "entity_type");
            }
            let Some(values) = json["values"].as_array().filter(|v| !v.is_empty()) else {
                return fail(400, "INVALID_ARG_VALUE", "values is empty");
            };
            let wanted: Vec<String> = values.iter().filter_map(Value::as_str).map(norm).collect();
            let ids: Vec<u64> = s
                .contacts
                .iter()
                .filter(|(_, f)| {
                    f[field].as_array().into_iter().flatten().any(|x| {
                        x["VALUE"]
                            .as_str()
                            .is_some_and(|v| wanted.contains(&norm(v)))
                    })
                })
                .map(|(id, _)| *id)
                .collect();
            // Bitrix24 answers an empty array, not an empty object.
            if ids.is_empty() {
                result(json!([]))
            } else {
                result(json!({"CONTACT": ids}))
            }
        }
        "crm.contact.add" => {
            if let Some(e) = unknown_keys(
                fields,
                &[
                    "NAME",
                    "PHONE",
                    "EMAIL",
                    "SOURCE_ID",
                    "ORIGINATOR_ID",
                    "ORIGIN_ID",
                    "ASSIGNED_BY_ID",
                ],
            ) {
                return fail(400, "ERROR_CORE", &e);
            }
            if fields["NAME"].as_str().is_none_or(str::is_empty)
                || !multifield_ok(&fields["PHONE"])
                || !multifield_ok(&fields["EMAIL"])
            {
                return fail(400, "ERROR_CORE", "NAME, PHONE, EMAIL");
            }
            let id = s.id();
            s.contacts.push((id, fields.clone()));
            result(json!(id))
        }
        "crm.timeline.comment.add" => {
            if let Some(e) = unknown_keys(fields, &["ENTITY_ID", "ENTITY_TYPE", "COMMENT"]) {
                return fail(400, "ERROR_CORE", &e);
            }
            let id = id_of(&fields["ENTITY_ID"]);
            let exists = match fields["ENTITY_TYPE"].as_str() {
                Some("deal") => id.is_some_and(|i| s.deals.iter().any(|d| d.0 == i)),
                Some("lead") => id.is_some_and(|i| s.leads.iter().any(|d| d.0 == i)),
                _ => false,
            };
            if !exists || fields["COMMENT"].as_str().is_none_or(str::is_empty) {
                return fail(400, "ERROR_CORE", "entity not found or comment empty");
            }
            s.comments.push(fields.clone());
            let id = s.id();
            result(json!(id))
        }
        "crm.timeline.comment.list" => {
            if let Some(e) = unknown_keys(json, &["filter", "select", "order", "start"]) {
                return fail(400, "INVALID_ARG_VALUE", &e);
            }
            let f = &json["filter"];
            let (Some(id), Some(kind)) = (id_of(&f["ENTITY_ID"]), f["ENTITY_TYPE"].as_str()) else {
                return fail(400, "ERROR_CORE", "ENTITY_ID and ENTITY_TYPE are required");
            };
            let hits: Vec<Value> = s
                .comments
                .iter()
                .enumerate()
                .filter(|(_, c)| id_of(&c["ENTITY_ID"]) == Some(id) && c["ENTITY_TYPE"] == kind)
                .map(|(i, c)| json!({"ID": (5000 + i).to_string(), "COMMENT": c["COMMENT"]}))
                .collect();
            result(Value::Array(hits))
        }
        "tasks.task.list" => {
            if let Some(e) = unknown_keys(json, &["filter", "select", "order", "start"]) {
                return fail(400, "INVALID_ARG_VALUE", &e);
            }
            let Some(bound) = json["filter"]["UF_CRM_TASK"].as_str() else {
                return fail(400, "INVALID_ARG_VALUE", "filter UF_CRM_TASK");
            };
            // tasks.task.list answers in camelCase.
            let hits: Vec<Value> = s
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| t["UF_CRM_TASK"][0] == bound)
                .map(|(i, t)| {
                    json!({"id": (6000 + i).to_string(), "description": t["DESCRIPTION"],
                           "ufCrmTask": t["UF_CRM_TASK"]})
                })
                .collect();
            result(json!({"tasks": hits}))
        }
        "tasks.task.add" => {
            if let Some(e) = unknown_keys(
                fields,
                &[
                    "TITLE",
                    "DESCRIPTION",
                    "RESPONSIBLE_ID",
                    "DEADLINE",
                    "UF_CRM_TASK",
                ],
            ) {
                return fail(400, "ERROR_CORE", &e);
            }
            let bound = fields["UF_CRM_TASK"]
                .as_array()
                .filter(|a| a.len() == 1)
                .and_then(|a| a[0].as_str())
                .and_then(|b| b.split_once('_'))
                .is_some_and(|(kind, id)| {
                    let id = id.parse::<u64>().unwrap_or(0);
                    match kind {
                        "D" => s.deals.iter().any(|d| d.0 == id),
                        "L" => s.leads.iter().any(|d| d.0 == id),
                        _ => false,
                    }
                });
            let deadline_ok = fields["DEADLINE"]
                .as_str()
                .is_some_and(|d| chrono::DateTime::parse_from_rfc3339(d).is_ok());
            if !bound
                || !deadline_ok
                || fields["TITLE"].as_str().is_none_or(str::is_empty)
                || fields["RESPONSIBLE_ID"].as_u64().is_none()
            {
                return fail(
                    400,
                    "ERROR_CORE",
                    "TITLE, RESPONSIBLE_ID, DEADLINE, UF_CRM_TASK",
                );
            }
            s.tasks.push(fields.clone());
            let id = s.id();
            result(json!({"task": {"id": id.to_string(), "title": fields["TITLE"]}}))
        }
        "telephony.externalcall.register" => {
            if let Some(e) = unknown_keys(
                json,
                &[
                    "USER_ID",
                    "PHONE_NUMBER",
                    "TYPE",
                    "CALL_START_DATE",
                    "CRM_CREATE",
                    "SHOW",
                    "CRM_ENTITY_TYPE",
                    "CRM_ENTITY_ID",
                    // The external line the call came in on (the docs of
                    // telephony.externalLine.add: "then give it as
                    // LINE_NUMBER when registering a call").
                    "LINE_NUMBER",
                ],
            ) {
                return fail(400, "INVALID_ARG_VALUE", &e);
            }
            let ok = json["USER_ID"].as_u64().is_some()
                && json["PHONE_NUMBER"].as_str().is_some_and(|p| !p.is_empty())
                && json["TYPE"].as_u64().is_some_and(|t| (1..=5).contains(&t))
                && json["CALL_START_DATE"]
                    .as_str()
                    .is_some_and(|d| chrono::DateTime::parse_from_rfc3339(d).is_ok());
            let entity_ok = match (
                json["CRM_ENTITY_TYPE"].as_str(),
                id_of(&json["CRM_ENTITY_ID"]),
            ) {
                (None, None) => true,
                (Some("DEAL"), Some(id)) => s.deals.iter().any(|d| d.0 == id),
                (Some("LEAD"), Some(id)) => s.leads.iter().any(|d| d.0 == id),
                _ => false,
            };
            if !ok || !entity_ok {
                return fail(
                    400,
                    "INVALID_ARG_VALUE",
                    "USER_ID, PHONE_NUMBER, TYPE, CALL_START_DATE, CRM_ENTITY",
                );
            }
            // "A repeated register with the same parameters, without
            // finishing the previous call, gives the same CALL_ID."
            if let Some(c) = s
                .calls
                .iter()
                .find(|c| c.finish.is_none() && c.register == *json)
            {
                return result(json!({"CALL_ID": c.call_id, "CRM_CREATED_LEAD": null}));
            }
            let call_id = format!("externalCall.{}.{}", s.id(), s.calls.len());
            s.calls.push(Call {
                call_id: call_id.clone(),
                register: json.clone(),
                finish: None,
            });
            result(json!({"CALL_ID": call_id, "CRM_CREATED_LEAD": null,
                          "CRM_ENTITY_TYPE": json["CRM_ENTITY_TYPE"], "CRM_ENTITY_ID": json["CRM_ENTITY_ID"]}))
        }
        "telephony.externalcall.finish" => {
            if let Some(e) = unknown_keys(
                json,
                &[
                    "CALL_ID",
                    "USER_ID",
                    "DURATION",
                    "STATUS_CODE",
                    "ADD_TO_CHAT",
                    "RECORD_URL",
                ],
            ) {
                return fail(400, "INVALID_ARG_VALUE", &e);
            }
            let ok = json["USER_ID"].as_u64().is_some()
                && json["DURATION"].as_u64().is_some()
                && json["STATUS_CODE"].as_str().is_some_and(|c| !c.is_empty());
            let Some(call) = s
                .calls
                .iter_mut()
                .find(|c| Some(c.call_id.as_str()) == json["CALL_ID"].as_str())
            else {
                return fail(400, "ERROR_NOT_FOUND", "Call is not found");
            };
            if !ok || call.finish.is_some() {
                return fail(400, "INVALID_ARG_VALUE", "bad finish, or finished already");
            }
            call.finish = Some(json.clone());
            result(json!({"CALL_ID": call.call_id, "CALL_DURATION": json["DURATION"]}))
        }
        "voximplant.statistic.get" => {
            if let Some(e) = unknown_keys(json, &["FILTER", "SORT", "ORDER", "start"]) {
                return fail(400, "INVALID_ARG_VALUE", &e);
            }
            let filter = json["FILTER"].as_object().cloned().unwrap_or_default();
            let hits: Vec<Value> = s
                .calls
                .iter()
                .filter_map(|c| {
                    let f = c.finish.as_ref()?;
                    let record = json!({
                        "CALL_ID": c.call_id,
                        "PHONE_NUMBER": c.register["PHONE_NUMBER"],
                        "CALL_START_DATE": c.register["CALL_START_DATE"],
                        "CALL_TYPE": c.register["TYPE"],
                        "CALL_DURATION": f["DURATION"],
                    });
                    filter
                        .iter()
                        .all(|(k, v)| record.get(k) == Some(v))
                        .then_some(record)
                })
                .collect();
            result(Value::Array(hits))
        }
        _ => fail(404, "ERROR_METHOD_NOT_FOUND", "Method not found!"),
    }
}
