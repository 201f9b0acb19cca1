//! `crm.kind = "bitrix24"` (issue 16): the outbox's items as Bitrix24
//! REST calls through an incoming webhook, and Bitrix24's answers
//! classified, as pure functions.
//!
//! Followed (Bitrix24 REST docs, apidocs.bitrix24.com / dev.1c-bitrix.ru):
//! - an incoming webhook `https://<portal>/rest/<user>/<secret>/`; a
//!   method is called as `<webhook><method>.json` with a JSON body; the
//!   answer is `{"result": …, "time": {…}}`, an error
//!   `{"error": CODE, "error_description": text}` with an HTTP status
//!   (`QUERY_LIMIT_EXCEEDED` with 503 beyond the rate: a leaky bucket of
//!   50 requests drained at 2 per second; 401 `NO_AUTH_FOUND` /
//!   `INVALID_CREDENTIALS`; 403 `insufficient_scope`; 400 `ERROR_CORE`).
//! - `crm.deal.list` / `crm.lead.list` with `filter` and `select`;
//!   `crm.deal.add` / `crm.lead.add` `{fields}` answering the new id; the
//!   fields `TITLE`, `CONTACT_ID`, `ASSIGNED_BY_ID`, `CATEGORY_ID`,
//!   `SOURCE_ID`, `SOURCE_DESCRIPTION`, `UTM_*`, `COMMENTS`, and
//!   `ORIGINATOR_ID` / `ORIGIN_ID` (the external system and the item's id
//!   there: siptrack writes its key, and finds the entity by it).
//! - `crm.duplicate.findbycomm` `{entity_type, type: PHONE|EMAIL,
//!   values}` answering `{"CONTACT": [ids]}` (or `[]` when none);
//!   `crm.contact.add` with `PHONE` / `EMAIL` as `[{VALUE, VALUE_TYPE}]`.
//! - `crm.timeline.comment.add` `{fields: {ENTITY_ID, ENTITY_TYPE,
//!   COMMENT}}`; `tasks.task.add` `{fields: {TITLE, DESCRIPTION,
//!   RESPONSIBLE_ID, DEADLINE, UF_CRM_TASK: ["D_<id>"]}}`.
//! - `telephony.externalcall.register` (`USER_ID`, `PHONE_NUMBER`,
//!   `TYPE` 2 = incoming, `CALL_START_DATE`, `CRM_CREATE`, `SHOW`,
//!   `CRM_ENTITY_TYPE` / `CRM_ENTITY_ID`) answering `{CALL_ID, …}`, then
//!   `telephony.externalcall.finish` (`CALL_ID`, `USER_ID`, `DURATION`,
//!   `STATUS_CODE`, `RECORD_URL`), which makes the call's CRM activity;
//!   finished calls are listed by `voximplant.statistic.get` `{FILTER}`.

use chrono::FixedOffset;
use serde_json::{json, Map, Value};

use super::adapter::{
    call_deal_id, carries, crm_deal_id, data_of, lead_marker, marked, person_name, phone_of,
    text_of, text_with_form_fields, with_name_and_email, with_who, Answer, CrmAdapter, Method,
    Outcome, Request, Step,
};
use super::outbox::Target;
use super::rate::Pacer;
use super::webhook::parse_retry_after;
use crate::store::outbox::DueItem;

/// What siptrack's deals become in Bitrix24.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Entity {
    #[default]
    Deal,
    Lead,
}

impl Entity {
    /// `crm.deal.*` or `crm.lead.*`.
    fn method(self, verb: &str) -> String {
        match self {
            Entity::Deal => format!("crm.deal.{verb}"),
            Entity::Lead => format!("crm.lead.{verb}"),
        }
    }
    /// `ENTITY_TYPE` of a timeline comment.
    fn timeline_type(self) -> &'static str {
        match self {
            Entity::Deal => "deal",
            Entity::Lead => "lead",
        }
    }
    /// The prefix of a task's `UF_CRM_TASK` binding.
    fn task_prefix(self) -> &'static str {
        match self {
            Entity::Deal => "D",
            Entity::Lead => "L",
        }
    }
    /// `CRM_ENTITY_TYPE` of a registered call.
    fn call_type(self) -> &'static str {
        match self {
            Entity::Deal => "DEAL",
            Entity::Lead => "LEAD",
        }
    }
    pub fn parse(s: &str) -> Option<Entity> {
        match s {
            "deal" => Some(Entity::Deal),
            "lead" => Some(Entity::Lead),
            _ => None,
        }
    }
}

/// `[crm.bitrix24]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitrixSettings {
    /// `https://<portal>/rest/<user>/<secret>/`, with the trailing slash.
    pub webhook_url: String,
    pub entity: Entity,
    /// The user calls and tasks belong to, and deals are assigned to:
    /// `responsible_user_id`, else the webhook's own user.
    pub user_id: u64,
    /// Set as `ASSIGNED_BY_ID` only when configured.
    pub assigned_by_id: Option<u64>,
    /// The deals' pipeline (`CATEGORY_ID`); deals only.
    pub category_id: Option<u64>,
    pub task_minutes: u64,
    /// The leaky bucket: `burst` requests, drained at `per_second`.
    pub burst: u32,
    pub per_second: u32,
    /// `crm.timezone`: dates Bitrix24 gets carry this offset.
    pub timezone: FixedOffset,
    /// `crm.allow_html`: a form's fields in a comment are escaped as its
    /// text is (C-4).
    pub allow_html: bool,
}

impl Default for BitrixSettings {
    fn default() -> Self {
        BitrixSettings {
            webhook_url: String::new(),
            entity: Entity::Deal,
            user_id: 1,
            assigned_by_id: None,
            category_id: None,
            task_minutes: 60,
            burst: 50,
            per_second: 2,
            timezone: FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!("0 is an offset")),
            allow_html: false,
        }
    }
}

/// The user id of a webhook URL `…/rest/<user>/<secret>/`.
pub fn webhook_user(url: &str) -> Option<u64> {
    let parts: Vec<&str> = url.trim_end_matches('/').rsplit('/').take(3).collect();
    match parts.as_slice() {
        [secret, user, "rest"] if !secret.is_empty() => user.parse().ok().filter(|&u| u > 0),
        _ => None,
    }
}

/// The stages of an item, handed back with each answer.
const FIND_DEAL: &str = "find deal";
const FIND_CONTACT: &str = "find contact";
const ADD_CONTACT: &str = "add contact";
const ADD_DEAL: &str = "add deal";
const FIND_COMMENT: &str = "find comment";
const COMMENT: &str = "comment";
const FIND_TASK: &str = "find task";
const TASK: &str = "task";
const FIND_CALL: &str = "find call";
const REGISTER: &str = "register call";
const FINISH: &str = "finish call";

/// `ORIGINATOR_ID`: the external system siptrack's entities come from.
const ORIGINATOR: &str = "siptrack";

fn comm(value: &str) -> Value {
    json!([{"VALUE": value, "VALUE_TYPE": "WORK"}])
}

/// The lead's text and a form's own fields, else its title.
fn note_text(body: &Value, allow_html: bool) -> String {
    let text = text_with_form_fields(body, allow_html);
    if text.is_empty() {
        text_of(body, "title")
    } else {
        text
    }
}

/// A call webhook's `date` (`YYYY-MM-DD HH:MM:SS` in crm.timezone) as
/// ISO 8601 with the offset, as Bitrix24 takes dates.
pub fn iso_date(local: &str, tz: FixedOffset) -> Option<String> {
    let t = chrono::NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S").ok()?;
    Some(format!("{}{}", t.format("%Y-%m-%dT%H:%M:%S"), tz))
}

/// The call webhook's status → `STATUS_CODE` of
/// `telephony.externalcall.finish`: 200 talked, 304 missed, 486 busy,
/// 603-S cancelled by the caller, 503 failed.
pub fn status_code(webhook_status: &str) -> &'static str {
    match webhook_status {
        "ANSWER" => "200",
        "BUSY" => "486",
        "CANCEL" => "603-S",
        "CONGESTION" => "503",
        _ => "304",
    }
}

impl BitrixSettings {
    fn request(&self, stage: &'static str, method: &str, body: Value) -> Request {
        Request {
            stage,
            method: Method::Post,
            url: format!("{}{method}.json", self.webhook_url),
            headers: vec![("Content-Type", "application/json".to_string())],
            body: Some(body.to_string()),
        }
    }

    fn assign(&self, fields: &mut Map<String, Value>) {
        if let Some(u) = self.assigned_by_id {
            fields.insert("ASSIGNED_BY_ID".into(), json!(u));
        }
    }

    /// `crm.deal.list` / `crm.lead.list` by `ORIGIN_ID`: the entity an
    /// earlier attempt of this create may have made.
    pub fn find_deal(&self, key: &str) -> Request {
        self.request(
            FIND_DEAL,
            &self.entity.method("list"),
            json!({"filter": {"ORIGINATOR_ID": ORIGINATOR, "ORIGIN_ID": key}, "select": ["ID", "ORIGIN_ID"]}),
        )
    }

    /// `crm.duplicate.findbycomm`: the client's contact by phone, else by
    /// e-mail; None when the lead has neither (a withheld caller).
    pub fn find_contact(&self, body: &Value) -> Option<Request> {
        let (phone, email) = (phone_of(body, "phone"), text_of(body, "email"));
        let (kind, value) = if !phone.is_empty() {
            ("PHONE", phone)
        } else if !email.is_empty() {
            ("EMAIL", email)
        } else {
            return None;
        };
        Some(self.request(
            FIND_CONTACT,
            "crm.duplicate.findbycomm",
            json!({"entity_type": "CONTACT", "type": kind, "values": [value]}),
        ))
    }

    /// `crm.contact.add`: name (else the phone), phone, e-mail, and
    /// siptrack's key as its origin.
    pub fn contact(&self, key: &str, body: &Value) -> Value {
        let (name, phone, email) = (
            person_name(body, self.allow_html),
            phone_of(body, "phone"),
            text_of(body, "email"),
        );
        let mut f = Map::new();
        let shown = [&name, &phone, &email]
            .into_iter()
            .find(|s| !s.is_empty())
            .cloned()
            .unwrap_or_default();
        f.insert("NAME".into(), json!(shown));
        if !phone.is_empty() {
            f.insert("PHONE".into(), comm(&phone));
        }
        if !email.is_empty() {
            f.insert("EMAIL".into(), comm(&email));
        }
        f.insert("SOURCE_ID".into(), json!(source_id(body)));
        f.insert("ORIGINATOR_ID".into(), json!(ORIGINATOR));
        f.insert("ORIGIN_ID".into(), json!(key));
        self.assign(&mut f);
        json!({"fields": f})
    }

    /// `crm.deal.add` / `crm.lead.add`: the title, the contact, the
    /// visit's source and UTM fields, the text, siptrack's key.
    /// `found`: the contact is one Bitrix24 had already
    /// (`crm.duplicate.findbycomm`), which keeps its own name and e-mail,
    /// so the lead's head the deal's comments.
    pub fn deal(&self, key: &str, body: &Value, contact: Option<u64>, found: bool) -> Value {
        let data = data_of(body);
        let mut f = Map::new();
        let title = text_of(body, "title");
        f.insert(
            "TITLE".into(),
            json!(if title.is_empty() {
                "siptrack lead".to_string()
            } else {
                title
            }),
        );
        if let Some(c) = contact {
            f.insert("CONTACT_ID".into(), json!(c));
        }
        if self.entity == Entity::Lead {
            let (name, phone, email) = (
                person_name(body, self.allow_html),
                phone_of(body, "phone"),
                text_of(body, "email"),
            );
            if !name.is_empty() {
                f.insert("NAME".into(), json!(name));
            }
            if !phone.is_empty() {
                f.insert("PHONE".into(), comm(&phone));
            }
            if !email.is_empty() {
                f.insert("EMAIL".into(), comm(&email));
            }
        }
        if let (Entity::Deal, Some(c)) = (self.entity, self.category_id) {
            f.insert("CATEGORY_ID".into(), json!(c));
        }
        f.insert("SOURCE_ID".into(), json!(source_id(body)));
        // Where the visitor came from, in one line the manager reads.
        let described: Vec<String> = ["marker", "source", "page", "city", "domain"]
            .into_iter()
            .filter_map(|k| {
                let v = text_of(&data, k);
                (!v.is_empty()).then(|| format!("{k}: {v}"))
            })
            .collect();
        if !described.is_empty() {
            f.insert("SOURCE_DESCRIPTION".into(), json!(described.join("; ")));
        }
        for utm in [
            "utm_source",
            "utm_medium",
            "utm_campaign",
            "utm_content",
            "utm_term",
        ] {
            let v = text_of(&data, utm);
            if !v.is_empty() {
                f.insert(utm.to_ascii_uppercase(), json!(v));
            }
        }
        let mut text = text_with_form_fields(body, self.allow_html);
        // A Bitrix24 lead carries NAME and EMAIL itself (above).
        if found && self.entity == Entity::Deal {
            text = with_name_and_email(body, text);
        }
        let text = text.trim_end();
        if !text.is_empty() {
            f.insert("COMMENTS".into(), json!(text));
        }
        f.insert("ORIGINATOR_ID".into(), json!(ORIGINATOR));
        f.insert("ORIGIN_ID".into(), json!(key));
        self.assign(&mut f);
        json!({"fields": f})
    }

    /// `crm.timeline.comment.add` on the deal; the text carries the
    /// lead's marker.
    pub fn comment(&self, deal: u64, body: &Value) -> Value {
        json!({"fields": {"ENTITY_ID": deal, "ENTITY_TYPE": self.entity.timeline_type(),
                          "COMMENT": marked(&with_who(body, note_text(body, self.allow_html)), lead_marker(body).as_deref())}})
    }

    /// `crm.timeline.comment.list` of the deal: where an earlier
    /// attempt's comment would be.
    pub fn find_comment(&self, deal: u64) -> Request {
        self.request(
            FIND_COMMENT,
            "crm.timeline.comment.list",
            json!({"filter": {"ENTITY_ID": deal, "ENTITY_TYPE": self.entity.timeline_type()},
                   "select": ["ID", "COMMENT"]}),
        )
    }

    /// `tasks.task.list` bound to the deal: where an earlier attempt's
    /// task would be.
    pub fn find_task(&self, deal: u64) -> Request {
        self.request(
            FIND_TASK,
            "tasks.task.list",
            json!({"filter": {"UF_CRM_TASK": format!("{}_{deal}", self.entity.task_prefix())},
                   "select": ["ID", "DESCRIPTION", "UF_CRM_TASK"]}),
        )
    }

    /// `tasks.task.add` bound to the deal, due `task_minutes` from now.
    pub fn task(&self, deal: u64, body: &Value, now_unix_ms: i64) -> Value {
        let due = now_unix_ms.max(0) / 1000 + (self.task_minutes as i64) * 60;
        let deadline = chrono::DateTime::from_timestamp(due, 0)
            .map(|t| t.with_timezone(&self.timezone).to_rfc3339())
            .unwrap_or_default();
        let title = text_of(body, "title");
        json!({"fields": {
            "TITLE": if title.is_empty() { note_text(body, self.allow_html) } else { title },
            "DESCRIPTION": marked(&with_who(body, note_text(body, self.allow_html)), lead_marker(body).as_deref()),
            "RESPONSIBLE_ID": self.user_id,
            "DEADLINE": deadline,
            "UF_CRM_TASK": [format!("{}_{deal}", self.entity.task_prefix())],
        }})
    }

    /// `voximplant.statistic.get`: the finished call an earlier attempt
    /// may have recorded (same caller, same start).
    pub fn find_call(&self, phone: &str, start: &str) -> Request {
        self.request(
            FIND_CALL,
            "voximplant.statistic.get",
            json!({"FILTER": {"PHONE_NUMBER": phone, "CALL_START_DATE": start, "CALL_TYPE": 2}}),
        )
    }

    /// `telephony.externalcall.register`: an incoming call, bound to the
    /// deal when it has one (else Bitrix24 binds it by the phone), no
    /// lead created by Bitrix24, no card shown.
    pub fn register(&self, phone: &str, start: &str, deal: Option<u64>, line: &str) -> Value {
        let mut r = json!({
            "USER_ID": self.user_id,
            "PHONE_NUMBER": phone,
            "TYPE": 2,
            "CALL_START_DATE": start,
            "CRM_CREATE": 0,
            "SHOW": 0,
        });
        // The tracking number dialed: the call card shows which ad the
        // client called (trial, 2026-12-03: it was in no call field).
        if !line.is_empty() {
            r["LINE_NUMBER"] = json!(line);
        }
        if let Some(d) = deal {
            r["CRM_ENTITY_TYPE"] = json!(self.entity.call_type());
            r["CRM_ENTITY_ID"] = json!(d);
        }
        r
    }

    /// `telephony.externalcall.finish`: duration, outcome, recording.
    pub fn finish(&self, call_id: &str, end: &Value) -> Value {
        let mut r = json!({
            "CALL_ID": call_id,
            "USER_ID": self.user_id,
            "DURATION": end.get("duration").and_then(Value::as_u64).unwrap_or(0),
            "STATUS_CODE": status_code(&text_of(end, "status")),
            "ADD_TO_CHAT": 0,
        });
        let link = text_of(end, "link");
        if !link.is_empty() {
            r["RECORD_URL"] = json!(link);
        }
        r
    }
}

/// `SOURCE_ID`: Bitrix24's built-in sources `CALL` and `WEB`.
fn source_id(body: &Value) -> &'static str {
    if body.get("call").is_some_and(Value::is_object) {
        "CALL"
    } else {
        "WEB"
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// `{"error", "error_description"}` as one line.
pub fn error_of(body: &[u8]) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let code = text_of(&v, "error");
    (!code.is_empty()).then(|| (code, text_of(&v, "error_description")))
}

/// An answer that is not a result: the rate limit and overload are
/// retried; a refused webhook, a missing scope, invalid fields are parked
/// with Bitrix24's reason (a retry cannot fix them).
pub fn classify_failure(a: &Answer, now_unix_ms: i64) -> Outcome {
    let (code, description) = error_of(&a.body).unwrap_or_default();
    let why = match (code.is_empty(), description.is_empty()) {
        (true, _) => snippet(&a.body),
        (false, true) => code.clone(),
        (false, false) => format!("{code}: {description}"),
    };
    let error = if why.is_empty() {
        format!("HTTP {}", a.status)
    } else {
        format!("HTTP {}: {why}", a.status)
    };
    let retry = || Outcome::Retry {
        error: error.clone(),
        retry_after_ms: a
            .retry_after
            .as_deref()
            .and_then(|v| parse_retry_after(v, now_unix_ms)),
    };
    match (a.status, code.as_str()) {
        (_, "QUERY_LIMIT_EXCEEDED" | "OPERATION_TIME_LIMIT" | "INTERNAL_SERVER_ERROR") => retry(),
        (401, _)
        | (_, "NO_AUTH_FOUND" | "INVALID_CREDENTIALS" | "expired_token" | "invalid_token") => {
            Outcome::GiveUp {
                reason: format!("webhook refused ({error}): check crm.bitrix24.webhook_url"),
            }
        }
        (403, _) | (_, "insufficient_scope" | "ACCESS_DENIED") => Outcome::GiveUp {
            reason: format!(
                "not allowed ({error}): the webhook needs the scopes crm, task and telephony"
            ),
        },
        (400 | 404 | 405 | 422, _) => Outcome::GiveUp { reason: error },
        // A 200 carrying an error names a refusal too.
        (200..=299, _) => Outcome::GiveUp { reason: error },
        _ => retry(),
    }
}

/// The `result` of a successful answer; None for an error or garbage.
fn result_of(a: &Answer) -> Option<Value> {
    if !(200..300).contains(&a.status) {
        return None;
    }
    let v: Value = serde_json::from_slice(&a.body).ok()?;
    if v.get("error").is_some() {
        return None;
    }
    v.get("result").cloned()
}

/// Whether a look-up stage's `result` has the shape of a list answer:
/// one of another type (`{}` for a list, a string) is no "none found",
/// which would make the deal, comment, task or call a second time (as
/// the amoCRM QA of 2026-12-02 found there). Other stages: always.
fn is_list_answer(stage: &str, result: &Value) -> bool {
    match stage {
        FIND_DEAL | FIND_COMMENT | FIND_CALL => result.is_array(),
        FIND_TASK => result.is_array() || result["tasks"].is_array(),
        // findbycomm: `[]` when none, else an object by entity type.
        FIND_CONTACT => result.is_array() || result.is_object(),
        _ => true,
    }
}

/// An id Bitrix24 sent as a number or a numeric string.
fn id_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The entity of a list answer whose ORIGIN_ID is exactly `key` (checked,
/// not trusted: a filter a portal ignores would list everything).
pub fn found_deal(result: &Value, key: &str) -> Option<u64> {
    result
        .as_array()?
        .iter()
        .find(|d| d["ORIGIN_ID"].as_str() == Some(key))
        .and_then(|d| id_of(&d["ID"]))
}

/// Whether a comment list (`[{COMMENT}]`) or a task list (`{tasks:
/// [{description}]}`, tasks.task.list answers in camelCase) holds one
/// carrying `marker`.
pub fn found_marked(result: &Value, marker: &str) -> bool {
    let comments = result
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| &c["COMMENT"]);
    let tasks = result["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| [&t["description"], &t["DESCRIPTION"]]);
    comments
        .chain(tasks)
        .any(|t| t.as_str().is_some_and(|t| carries(t, marker)))
}

/// The first contact of a findbycomm answer (`[]` when none).
pub fn found_contact(result: &Value) -> Option<u64> {
    result["CONTACT"].as_array()?.iter().find_map(id_of)
}

/// The Bitrix24 adapter.
pub struct Bitrix24 {
    pub settings: BitrixSettings,
}

fn bad_body() -> Step {
    Step::Finish(Outcome::GiveUp {
        reason: "the queued body is not JSON".into(),
    })
}

fn retry(error: String) -> Step {
    Step::Finish(Outcome::Retry {
        error,
        retry_after_ms: None,
    })
}

impl Bitrix24 {
    /// The CRM's id of the item's deal (see `adapter::crm_deal_id`).
    fn deal_id(item: &DueItem) -> Result<u64, Outcome> {
        crm_deal_id(item, "Bitrix24", "bitrix24", "entity")
    }

    /// A call's phone and start, as sent to Bitrix24; None for a withheld
    /// caller or one known by a SIP login (Bitrix24 needs a number to
    /// register a call).
    /// The caller's phone, the call's start and the number dialed.
    fn call_of(&self, body: &Value) -> Option<(String, String, String)> {
        let phone = phone_of(body, "caller");
        if phone.is_empty() {
            return None;
        }
        let start = iso_date(&text_of(body, "date"), self.settings.timezone)?;
        Some((phone, start, text_of(body, "callee")))
    }

    fn add_comment(&self, deal: u64, body: &Value) -> Step {
        let s = &self.settings;
        Step::Send(s.request(COMMENT, "crm.timeline.comment.add", s.comment(deal, body)))
    }

    fn add_task(&self, deal: u64, body: &Value, now_unix_ms: i64) -> Step {
        let s = &self.settings;
        Step::Send(s.request(TASK, "tasks.task.add", s.task(deal, body, now_unix_ms)))
    }

    /// After the contact is known (or there is none): the create
    /// (`found`: see [`BitrixSettings::deal`]).
    fn add_deal(&self, item: &DueItem, body: &Value, contact: Option<u64>, found: bool) -> Step {
        let s = &self.settings;
        Step::Send(s.request(
            ADD_DEAL,
            &s.entity.method("add"),
            s.deal(&item.key, body, contact, found),
        ))
    }

    /// The call's entity: the deal, when the call made or joined one and
    /// Bitrix24 has named it; none (Bitrix24 binds the call by its phone)
    /// for a deal Bitrix24 will never know (see `adapter::call_deal_id`).
    fn call_entity(item: &DueItem) -> Result<Option<u64>, Outcome> {
        call_deal_id(item, "Bitrix24", "bitrix24", "entity")
    }
}

impl CrmAdapter for Bitrix24 {
    fn start(&self, item: &DueItem, now_unix_ms: i64) -> Step {
        let s = &self.settings;
        let Ok(body) = serde_json::from_str::<Value>(&item.body) else {
            return bad_body();
        };
        match (item.target, item.event.as_str()) {
            // Bitrix24 has no idempotency keys: every create first looks
            // for what an earlier attempt may have made.
            (Target::Lead, "deal.create") => Step::Send(s.find_deal(&item.key)),
            // Comments and tasks are looked up by the marker in their
            // text first.
            (Target::Lead, "deal.comment") => match Self::deal_id(item) {
                Ok(id) if lead_marker(&body).is_some() => Step::Send(s.find_comment(id)),
                Ok(id) => self.add_comment(id, &body),
                Err(o) => Step::Finish(o),
            },
            (Target::Lead, "deal.task") => match Self::deal_id(item) {
                Ok(id) if lead_marker(&body).is_some() => Step::Send(s.find_task(id)),
                Ok(id) => self.add_task(id, &body, now_unix_ms),
                Err(o) => Step::Finish(o),
            },
            (Target::CallEnd, _) => match (self.call_of(&body), Self::call_entity(item)) {
                (None, _) => Step::Finish(Outcome::Delivered { deal_id: None }),
                (Some(_), Err(o)) => Step::Finish(o),
                (Some((phone, start, _)), Ok(_)) => Step::Send(s.find_call(&phone, &start)),
            },
            // The call is registered and finished once it is over.
            (Target::CallStart, _) => Step::Finish(Outcome::Delivered { deal_id: None }),
            (Target::Lead, other) => Step::Finish(Outcome::GiveUp {
                reason: format!("event {other:?} has no Bitrix24 request"),
            }),
        }
    }

    fn next(&self, item: &DueItem, sent: &Request, a: &Answer, now_unix_ms: i64) -> Step {
        let s = &self.settings;
        let Some(result) = result_of(a) else {
            let failed = classify_failure(a, now_unix_ms);
            // An answer that is neither a result nor an error: applied or
            // not, the lookup of the next attempt tells.
            if (200..300).contains(&a.status) && error_of(&a.body).is_none() {
                return retry(format!(
                    "HTTP {} without a result ({}): {}",
                    a.status,
                    sent.stage,
                    snippet(&a.body)
                ));
            }
            return Step::Finish(failed);
        };
        if !is_list_answer(sent.stage, &result) {
            return retry(format!(
                "HTTP {} with a result that is no list ({}): {}",
                a.status,
                sent.stage,
                snippet(&a.body)
            ));
        }
        let Ok(body) = serde_json::from_str::<Value>(&item.body) else {
            return bad_body();
        };
        match sent.stage {
            FIND_DEAL => {
                match found_deal(&result, &item.key) {
                    Some(id) => Step::Finish(Outcome::Delivered {
                        deal_id: Some(id.to_string()),
                    }),
                    None => match s.find_contact(&body) {
                        Some(r) => Step::Send(r),
                        // A name alone: nothing to look the contact up by,
                        // but the client is named (trial, 2026-12-03: a
                        // name-only form made a deal without a contact, and
                        // the name was nowhere in Bitrix24).
                        None if !person_name(&body, s.allow_html).is_empty() => Step::Send(
                            s.request(ADD_CONTACT, "crm.contact.add", s.contact(&item.key, &body)),
                        ),
                        None => self.add_deal(item, &body, None, false),
                    },
                }
            }
            FIND_CONTACT => match found_contact(&result) {
                Some(c) => self.add_deal(item, &body, Some(c), true),
                None => Step::Send(s.request(
                    ADD_CONTACT,
                    "crm.contact.add",
                    s.contact(&item.key, &body),
                )),
            },
            ADD_CONTACT => match id_of(&result) {
                Some(c) => self.add_deal(item, &body, Some(c), false),
                None => retry(format!("crm.contact.add answered no id: {result}")),
            },
            ADD_DEAL => match id_of(&result) {
                Some(id) => Step::Finish(Outcome::Delivered {
                    deal_id: Some(id.to_string()),
                }),
                None => retry(format!(
                    "{} answered no id: {result}",
                    s.entity.method("add")
                )),
            },
            FIND_COMMENT | FIND_TASK => {
                let marker = lead_marker(&body).unwrap_or_default();
                if found_marked(&result, &marker) {
                    return Step::Finish(Outcome::Delivered { deal_id: None });
                }
                match (Self::deal_id(item), sent.stage) {
                    (Ok(id), FIND_COMMENT) => self.add_comment(id, &body),
                    (Ok(id), _) => self.add_task(id, &body, now_unix_ms),
                    (Err(o), _) => Step::Finish(o),
                }
            }
            FIND_CALL => {
                if result.as_array().is_some_and(|calls| !calls.is_empty()) {
                    return Step::Finish(Outcome::Delivered { deal_id: None });
                }
                let (Some((phone, start, line)), Ok(deal)) =
                    (self.call_of(&body), Self::call_entity(item))
                else {
                    return Step::Finish(Outcome::Delivered { deal_id: None });
                };
                Step::Send(s.request(
                    REGISTER,
                    "telephony.externalcall.register",
                    s.register(&phone, &start, deal, &line),
                ))
            }
            REGISTER => match result["CALL_ID"].as_str().filter(|c| !c.is_empty()) {
                Some(call_id) => Step::Send(s.request(
                    FINISH,
                    "telephony.externalcall.finish",
                    s.finish(call_id, &body),
                )),
                None => retry(format!(
                    "telephony.externalcall.register answered no CALL_ID: {result}"
                )),
            },
            _ => Step::Finish(Outcome::Delivered { deal_id: None }),
        }
    }

    /// Creates of one client's deals go one after another, so the second
    /// finds the contact the first added.
    fn serial_key(&self, item: &DueItem) -> Option<String> {
        if (item.target, item.event.as_str()) != (Target::Lead, "deal.create") {
            return None;
        }
        let body: Value = serde_json::from_str(&item.body).ok()?;
        let (phone, email) = (text_of(&body, "phone"), text_of(&body, "email"));
        if !phone.is_empty() {
            Some(format!("phone:{phone}"))
        } else if !email.is_empty() {
            Some(format!("email:{}", email.to_lowercase()))
        } else {
            None
        }
    }

    fn pacer(&self) -> Option<Pacer> {
        Some(Pacer::leaky(self.settings.burst, self.settings.per_second))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOOK: &str = "https://acme.bitrix24.ru/rest/7/s3cr3t/";

    fn settings() -> BitrixSettings {
        BitrixSettings {
            webhook_url: HOOK.into(),
            user_id: 7,
            assigned_by_id: Some(9),
            category_id: Some(3),
            task_minutes: 30,
            timezone: FixedOffset::east_opt(3 * 3600).expect("+3"),
            ..BitrixSettings::default()
        }
    }

    fn adapter() -> Bitrix24 {
        Bitrix24 {
            settings: settings(),
        }
    }

    fn lead_body() -> Value {
        json!({
            "id": "7", "event": "deal.create", "title": "Sofa order", "text": "Call me",
            "name": "Ann", "phone": "79031234567", "email": "ann@example.com",
            "data": json!({"visit": "v-1", "marker": "g_cpc", "source": "google",
                           "utm_source": "google", "utm_medium": "cpc", "page": "/sofa"}).to_string(),
        })
    }

    fn due(target: Target, event: &str, body: &Value, crm: Option<&str>) -> DueItem {
        DueItem {
            id: 1,
            target,
            key: format!("i1-lead-7-{event}"),
            event: event.into(),
            body: body.to_string(),
            attempts: 0,
            created_at: 0,
            deal_ref: Some(3),
            crm_deal_id: crm.map(str::to_string),
            deal_created_here: true,
        }
    }

    fn ok(result: Value) -> Answer {
        Answer {
            status: 200,
            body: json!({"result": result, "time": {"start": 1.0}})
                .to_string()
                .into_bytes(),
            ..Answer::default()
        }
    }

    fn err(status: u16, code: &str, description: &str) -> Answer {
        Answer {
            status,
            body: json!({"error": code, "error_description": description})
                .to_string()
                .into_bytes(),
            ..Answer::default()
        }
    }

    fn sent(step: Step) -> Request {
        match step {
            Step::Send(r) => r,
            Step::Finish(o) => panic!("finished: {o:?}"),
        }
    }

    fn body_of(r: &Request) -> Value {
        serde_json::from_str(r.body.as_deref().expect("a body")).expect("JSON")
    }

    #[test]
    fn the_webhook_url_names_its_user() {
        for (url, user) in [
            ("https://a.bitrix24.ru/rest/1/abc/", Some(1)),
            ("https://a.bitrix24.ru/rest/42/abc", Some(42)),
            ("https://a.bitrix24.ru/rest/x/abc/", None),
            ("https://a.bitrix24.ru/api/1/abc/", None),
            ("https://a.bitrix24.ru/rest/0/abc/", None),
        ] {
            assert_eq!(webhook_user(url), user, "{url}");
        }
    }

    #[test]
    fn contacts_deals_and_leads_have_every_field() {
        let s = settings();
        // The visit's city and site are where the visitor came from too
        // (trial, 2026-12-03: they reached Bitrix24 nowhere).
        let mut visited = lead_body();
        visited["data"] =
            json!(json!({"marker": "ya", "city": "Moscow", "domain": "shop.example"}).to_string());
        assert_eq!(
            s.deal("k0", &visited, None, false)["fields"]["SOURCE_DESCRIPTION"],
            "marker: ya; city: Moscow; domain: shop.example"
        );
        assert_eq!(
            s.contact("k1", &lead_body()),
            json!({"fields": {"NAME": "Ann", "PHONE": [{"VALUE": "79031234567", "VALUE_TYPE": "WORK"}],
                   "EMAIL": [{"VALUE": "ann@example.com", "VALUE_TYPE": "WORK"}], "SOURCE_ID": "WEB",
                   "ORIGINATOR_ID": "siptrack", "ORIGIN_ID": "k1", "ASSIGNED_BY_ID": 9}})
        );
        assert_eq!(
            s.deal("k1", &lead_body(), Some(55), false),
            json!({"fields": {"TITLE": "Sofa order", "CONTACT_ID": 55, "CATEGORY_ID": 3,
                   "SOURCE_ID": "WEB", "SOURCE_DESCRIPTION": "marker: g_cpc; source: google; page: /sofa",
                   "UTM_SOURCE": "google", "UTM_MEDIUM": "cpc", "COMMENTS": "Call me",
                   "ORIGINATOR_ID": "siptrack", "ORIGIN_ID": "k1", "ASSIGNED_BY_ID": 9}})
        );
        // A lead carries the client itself; a call is SOURCE_ID CALL; a
        // withheld caller has no contact and no search for one.
        let lead = BitrixSettings {
            entity: Entity::Lead,
            assigned_by_id: None,
            ..settings()
        };
        let call = json!({"title": "Incoming call from 7499", "phone": "7499", "data": "{}",
                          "call": {"id": "c@h"}});
        assert_eq!(
            lead.deal("k2", &call, None, false),
            json!({"fields": {"TITLE": "Incoming call from 7499",
                   "PHONE": [{"VALUE": "7499", "VALUE_TYPE": "WORK"}], "SOURCE_ID": "CALL",
                   "ORIGINATOR_ID": "siptrack", "ORIGIN_ID": "k2"}})
        );
        // A name is no HTML: C-4's escape is undone for the contact.
        let mut named = lead_body();
        named["name"] = json!("Sean O&#39;Brien");
        assert_eq!(s.contact("k4", &named)["fields"]["NAME"], "Sean O'Brien");
        // A form's own fields follow its text in COMMENTS (trial,
        // 2026-12-03: they reached webhooks only).
        let mut form = lead_body();
        form["data"] = json!(json!({"visit": "v-1", "fields": {"size": "3 m"}}).to_string());
        assert_eq!(
            s.deal("k3", &form, None, false)["fields"]["COMMENTS"],
            "Call me\nsize: 3 m"
        );
        assert!(s
            .find_contact(&json!({"title": "t", "phone": ""}))
            .is_none());
        assert_eq!(
            body_of(&s.find_contact(&json!({"email": "e@x"})).expect("by e-mail")),
            json!({"entity_type": "CONTACT", "type": "EMAIL", "values": ["e@x"]})
        );
    }

    #[test]
    fn comments_tasks_and_calls_have_every_field() {
        let s = settings();
        let body = json!({"title": "Second order", "text": "Chairs too"});
        assert_eq!(
            s.comment(12, &body),
            json!({"fields": {"ENTITY_ID": 12, "ENTITY_TYPE": "deal", "COMMENT": "Chairs too"}})
        );
        // 2026-11-23 12:00:00 UTC + 30 min, shown at +03:00.
        assert_eq!(
            s.task(12, &body, 1_795_435_200_999),
            json!({"fields": {"TITLE": "Second order", "DESCRIPTION": "Chairs too",
                   "RESPONSIBLE_ID": 7, "DEADLINE": "2026-11-23T15:30:00+03:00",
                   "UF_CRM_TASK": ["D_12"]}})
        );
        // A repeat lead says who it is: the deal's contact is the first
        // lead's (trial, 2026-12-03: a new name and e-mail were lost).
        let who = json!({"title": "Lead from form b", "name": "Task Two",
                         "phone": "79166000001", "email": "new.mail@example.com", "text": "b"});
        let who_text = "Name: Task Two\nPhone: 79166000001\nE-mail: new.mail@example.com\nb";
        assert_eq!(s.comment(12, &who)["fields"]["COMMENT"], who_text);
        assert_eq!(s.task(12, &who, 0)["fields"]["DESCRIPTION"], who_text);
        assert_eq!(
            s.register(
                "79031234567",
                "2026-11-23T15:00:00+03:00",
                Some(12),
                "74951110001"
            ),
            json!({"USER_ID": 7, "PHONE_NUMBER": "79031234567", "TYPE": 2,
                   "CALL_START_DATE": "2026-11-23T15:00:00+03:00", "CRM_CREATE": 0, "SHOW": 0,
                   "CRM_ENTITY_TYPE": "DEAL", "CRM_ENTITY_ID": 12, "LINE_NUMBER": "74951110001"})
        );
        let end = json!({"duration": 42, "status": "ANSWER", "link": "https://r/1.mp3"});
        assert_eq!(
            s.finish("externalCall.1", &end),
            json!({"CALL_ID": "externalCall.1", "USER_ID": 7, "DURATION": 42,
                   "STATUS_CODE": "200", "ADD_TO_CHAT": 0, "RECORD_URL": "https://r/1.mp3"})
        );
        for (status, code) in [
            ("ANSWER", "200"),
            ("BUSY", "486"),
            ("NOANSWER", "304"),
            ("CANCEL", "603-S"),
            ("CONGESTION", "503"),
            ("INTERRUPTED", "304"),
        ] {
            assert_eq!(status_code(status), code, "{status}");
        }
        assert_eq!(
            iso_date("2026-11-23 15:00:00", s.timezone).as_deref(),
            Some("2026-11-23T15:00:00+03:00")
        );
        assert_eq!(iso_date("yesterday", s.timezone), None);
    }

    /// Walks an item through the adapter with scripted answers per stage;
    /// the stages sent, and the outcome.
    fn walk(item: &DueItem, answers: &[(&str, Answer)]) -> (Vec<&'static str>, Outcome) {
        let a = adapter();
        let mut stages = Vec::new();
        let mut step = a.start(item, 0);
        loop {
            match step {
                Step::Finish(o) => return (stages, o),
                Step::Send(r) => {
                    stages.push(r.stage);
                    let answer = answers
                        .iter()
                        .find(|(s, _)| *s == r.stage)
                        .map(|(_, a)| a.clone())
                        .unwrap_or_else(|| panic!("no answer for {}", r.stage));
                    step = a.next(item, &r, &answer, 0);
                }
            }
        }
    }

    #[test]
    fn a_create_looks_up_its_deal_then_finds_or_adds_the_contact() {
        let item = due(Target::Lead, "deal.create", &lead_body(), None);
        let mine = json!([{"ID": "31", "ORIGIN_ID": "i1-lead-7-deal.create"}]);
        let others = json!([{"ID": "30", "ORIGIN_ID": "i1-lead-7-deal.create-x"}]);
        let delivered = |id: &str| Outcome::Delivered {
            deal_id: Some(id.into()),
        };
        // (answers per stage, stages sent, outcome)
        for (answers, stages, outcome) in [
            // An earlier attempt made it: nothing else is sent.
            (
                vec![(FIND_DEAL, ok(mine))],
                vec![FIND_DEAL],
                delivered("31"),
            ),
            // The client's contact exists: the deal names it.
            (
                vec![
                    (FIND_DEAL, ok(others.clone())),
                    (FIND_CONTACT, ok(json!({"CONTACT": [41, 40]}))),
                    (ADD_DEAL, ok(json!(32))),
                ],
                vec![FIND_DEAL, FIND_CONTACT, ADD_DEAL],
                delivered("32"),
            ),
            // No contact: one is added first.
            (
                vec![
                    (FIND_DEAL, ok(json!([]))),
                    (FIND_CONTACT, ok(json!([]))),
                    (ADD_CONTACT, ok(json!("42"))),
                    (ADD_DEAL, ok(json!("33"))),
                ],
                vec![FIND_DEAL, FIND_CONTACT, ADD_CONTACT, ADD_DEAL],
                delivered("33"),
            ),
        ] {
            assert_eq!(walk(&item, &answers), (stages, outcome));
        }
        // A look-up's result that is no list is retried, never taken for
        // "none found" (which would add the deal a second time).
        for bad in [json!({}), json!("x"), json!(null)] {
            let (stages, o) = walk(&item, &[(FIND_DEAL, ok(bad.clone()))]);
            assert_eq!(stages, [FIND_DEAL], "{bad}");
            assert!(matches!(o, Outcome::Retry { .. }), "{bad}: {o:?}");
        }
        let (stages, o) = walk(
            &item,
            &[(FIND_DEAL, ok(json!([]))), (FIND_CONTACT, ok(json!("x")))],
        );
        assert_eq!(stages, [FIND_DEAL, FIND_CONTACT]);
        assert!(matches!(o, Outcome::Retry { .. }), "{o:?}");
        // The create names the contact found or added.
        let a = adapter();
        let find = sent(a.start(&item, 0));
        assert_eq!(find.url, format!("{HOOK}crm.deal.list.json"));
        assert_eq!(
            body_of(&find),
            json!({"filter": {"ORIGINATOR_ID": "siptrack", "ORIGIN_ID": "i1-lead-7-deal.create"},
                   "select": ["ID", "ORIGIN_ID"]})
        );
        let contact = sent(a.next(&item, &find, &ok(json!([])), 0));
        let add = sent(a.next(&item, &contact, &ok(json!({"CONTACT": [41]})), 0));
        assert_eq!(add.url, format!("{HOOK}crm.deal.add.json"));
        assert_eq!(body_of(&add)["fields"]["CONTACT_ID"], 41);
        // That contact keeps its own name and e-mail: the lead's head the
        // deal's comments (trial, 2026-12-03: a form's were lost).
        let text = text_with_form_fields(&lead_body(), false);
        assert_eq!(
            body_of(&add)["fields"]["COMMENTS"],
            format!("Name: Ann\nE-mail: ann@example.com\n{text}")
        );
        // A withheld caller: no contact at all.
        let withheld = due(
            Target::Lead,
            "deal.create",
            &json!({"title": "Incoming call from a withheld number", "data": "{}"}),
            None,
        );
        let (stages, _) = walk(
            &withheld,
            &[(FIND_DEAL, ok(json!([]))), (ADD_DEAL, ok(json!(5)))],
        );
        assert_eq!(stages, [FIND_DEAL, ADD_DEAL]);
        // A name alone: no lookup (Bitrix24 finds by phone or e-mail),
        // the contact added with the name, the deal naming it.
        let named = due(
            Target::Lead,
            "deal.create",
            &json!({"title": "Lead from form f2", "name": "Мария Иванова", "data": "{}"}),
            None,
        );
        let deal = sent(a.next(&named, &find, &ok(json!([])), 0));
        assert_eq!(deal.url, format!("{HOOK}crm.contact.add.json"));
        assert_eq!(body_of(&deal)["fields"]["NAME"], "Мария Иванова");
        let add = sent(a.next(&named, &deal, &ok(json!(43)), 0));
        assert_eq!(add.url, format!("{HOOK}crm.deal.add.json"));
        assert_eq!(body_of(&add)["fields"]["CONTACT_ID"], 43);
        // A contact added with the lead's name carries it: no line.
        assert!(body_of(&add)["fields"].get("COMMENTS").is_none());
        // An answer without an id is a retry (the next lookup tells).
        let (_, o) = walk(
            &item,
            &[
                (FIND_DEAL, ok(json!([]))),
                (FIND_CONTACT, ok(json!({"CONTACT": [41]}))),
                (ADD_DEAL, ok(json!(null))),
            ],
        );
        assert!(matches!(o, Outcome::Retry { .. }), "{o:?}");
    }

    #[test]
    fn a_call_is_looked_up_then_registered_and_finished() {
        let end = json!({"id": "c@h", "caller": "79031234567", "date": "2026-11-23 15:00:00",
                         "duration": 42, "status": "ANSWER"});
        let mut item = due(Target::CallEnd, "", &end, Some("12"));
        let (stages, o) = walk(
            &item,
            &[
                (FIND_CALL, ok(json!([]))),
                (
                    REGISTER,
                    ok(json!({"CALL_ID": "externalCall.9", "CRM_ENTITY_TYPE": "DEAL"})),
                ),
                (FINISH, ok(json!({"CALL_ID": "externalCall.9"}))),
            ],
        );
        assert_eq!(
            (stages, o),
            (
                vec![FIND_CALL, REGISTER, FINISH],
                Outcome::Delivered { deal_id: None }
            )
        );
        // Already finished by an earlier attempt: nothing more.
        let (stages, _) = walk(
            &item,
            &[(FIND_CALL, ok(json!([{"CALL_ID": "externalCall.9"}])))],
        );
        assert_eq!(stages, [FIND_CALL]);
        // The finish names the register's CALL_ID.
        let a = adapter();
        let find = sent(a.start(&item, 0));
        assert_eq!(
            body_of(&find),
            json!({"FILTER": {"PHONE_NUMBER": "79031234567",
                   "CALL_START_DATE": "2026-11-23T15:00:00+03:00", "CALL_TYPE": 2}})
        );
        let reg = sent(a.next(&item, &find, &ok(json!([])), 0));
        assert_eq!(body_of(&reg)["CRM_ENTITY_ID"], 12);
        let fin = sent(a.next(&item, &reg, &ok(json!({"CALL_ID": "externalCall.9"})), 0));
        assert_eq!(fin.url, format!("{HOOK}telephony.externalcall.finish.json"));
        assert_eq!(body_of(&fin)["CALL_ID"], "externalCall.9");
        // A call whose deal Bitrix24 has not named yet waits; one without
        // a deal is bound by Bitrix24 through the phone.
        item.crm_deal_id = None;
        assert!(matches!(
            a.start(&item, 0),
            Step::Finish(Outcome::Retry { .. })
        ));
        let mut older = item.clone();
        older.deal_created_here = false;
        let reg = sent(a.next(&older, &find, &ok(json!([])), 0));
        assert!(
            body_of(&reg).get("CRM_ENTITY_ID").is_none(),
            "a deal made before Bitrix24"
        );
        item.deal_ref = None;
        let reg = sent(a.next(&item, &find, &ok(json!([])), 0));
        assert!(body_of(&reg).get("CRM_ENTITY_ID").is_none());
        // A withheld caller's call and a call's start send nothing.
        for item in [
            due(
                Target::CallEnd,
                "",
                &json!({"id": "c", "caller": "", "date": "2026-11-23 15:00:00"}),
                None,
            ),
            due(Target::CallStart, "", &json!({"id": "c"}), None),
        ] {
            assert_eq!(
                a.start(&item, 0),
                Step::Finish(Outcome::Delivered { deal_id: None })
            );
        }
    }

    #[test]
    fn comments_and_tasks_go_to_the_deal_bitrix24_named() {
        let a = adapter();
        let body = json!({"title": "Again", "text": "Chairs"});
        for (event, url) in [
            ("deal.comment", "crm.timeline.comment.add"),
            ("deal.task", "tasks.task.add"),
        ] {
            let r = sent(a.start(&due(Target::Lead, event, &body, Some("12")), 0));
            assert_eq!(r.url, format!("{HOOK}{url}.json"), "{event}");
            assert_eq!(r.method, Method::Post);
            // Not named yet: waits for the create's answer.
            assert!(matches!(
                a.start(&due(Target::Lead, event, &body, None), 0),
                Step::Finish(Outcome::Retry { .. })
            ));
        }
    }

    #[test]
    fn comments_and_tasks_are_looked_up_by_their_marker_and_added_only_when_absent() {
        let body = json!({"id": "7", "title": "Again", "text": "Chairs"});
        let marked_text = "Chairs\n\n(siptrack lead 7)";
        let other = "Chairs\n\n(siptrack lead 77)";
        for (event, find, add, absent, present) in [
            (
                "deal.comment",
                FIND_COMMENT,
                COMMENT,
                vec![json!([]), json!([{"ID": "1", "COMMENT": other}])],
                json!([{"ID": "1", "COMMENT": other}, {"ID": "2", "COMMENT": marked_text}]),
            ),
            (
                "deal.task",
                FIND_TASK,
                TASK,
                vec![
                    json!({"tasks": []}),
                    json!({"tasks": [{"id": "1", "description": other}]}),
                ],
                json!({"tasks": [{"id": "2", "description": marked_text}]}),
            ),
        ] {
            let item = due(Target::Lead, event, &body, Some("12"));
            for answer in absent {
                let (stages, o) = walk(&item, &[(find, ok(answer)), (add, ok(json!(5)))]);
                assert_eq!(stages, [find, add], "{event}");
                assert_eq!(o, Outcome::Delivered { deal_id: None });
            }
            let (stages, _) = walk(&item, &[(find, ok(present))]);
            assert_eq!(stages, [find], "{event}: found, not added again");
        }
        let s = settings();
        assert_eq!(s.comment(12, &body)["fields"]["COMMENT"], marked_text);
        assert_eq!(s.task(12, &body, 0)["fields"]["DESCRIPTION"], marked_text);
        assert_eq!(
            body_of(&s.find_comment(12)),
            json!({"filter": {"ENTITY_ID": 12, "ENTITY_TYPE": "deal"}, "select": ["ID", "COMMENT"]})
        );
        assert_eq!(
            body_of(&s.find_task(12)),
            json!({"filter": {"UF_CRM_TASK": "D_12"}, "select": ["ID", "DESCRIPTION", "UF_CRM_TASK"]})
        );
    }

    #[test]
    fn one_clients_creates_go_one_after_another() {
        let a = adapter();
        for (target, event, body, key) in [
            (
                Target::Lead,
                "deal.create",
                json!({"phone": "7916", "email": "A@x"}),
                Some("phone:7916"),
            ),
            (
                Target::Lead,
                "deal.create",
                json!({"phone": "", "email": "A@x"}),
                Some("email:a@x"),
            ),
            (
                Target::Lead,
                "deal.create",
                json!({"title": "withheld"}),
                None,
            ),
            (Target::Lead, "deal.task", json!({"phone": "7916"}), None),
            (Target::CallEnd, "", json!({"caller": "7916"}), None),
        ] {
            let item = due(target, event, &body, None);
            assert_eq!(a.serial_key(&item).as_deref(), key, "{event} {body}");
        }
    }

    #[test]
    fn refusals_are_parked_with_bitrix24s_reason_and_the_rate_limit_is_retried() {
        for (answer, outcome) in [
            (
                err(503, "QUERY_LIMIT_EXCEEDED", "Too many requests"),
                Outcome::Retry {
                    error: "HTTP 503: QUERY_LIMIT_EXCEEDED: Too many requests".into(),
                    retry_after_ms: None,
                },
            ),
            (
                err(401, "NO_AUTH_FOUND", "Wrong authorization data"),
                Outcome::GiveUp {
                    reason: "webhook refused (HTTP 401: NO_AUTH_FOUND: Wrong authorization data): check crm.bitrix24.webhook_url".into(),
                },
            ),
            (
                err(403, "insufficient_scope", ""),
                Outcome::GiveUp {
                    reason: "not allowed (HTTP 403: insufficient_scope): the webhook needs the scopes crm, task and telephony".into(),
                },
            ),
            (
                err(400, "ERROR_CORE", "Contact not found"),
                Outcome::GiveUp {
                    reason: "HTTP 400: ERROR_CORE: Contact not found".into(),
                },
            ),
            (
                err(200, "ERROR_CORE", "Title is empty"),
                Outcome::GiveUp {
                    reason: "HTTP 200: ERROR_CORE: Title is empty".into(),
                },
            ),
            (
                Answer {
                    status: 502,
                    body: b"<html>bad gateway</html>".to_vec(),
                    ..Answer::default()
                },
                Outcome::Retry {
                    error: "HTTP 502: <html>bad gateway</html>".into(),
                    retry_after_ms: None,
                },
            ),
        ] {
            assert_eq!(classify_failure(&answer, 0), outcome, "{answer:?}");
        }
        // Through the adapter: a refusal at any stage ends the attempt.
        let item = due(Target::Lead, "deal.create", &lead_body(), None);
        let (_, o) = walk(
            &item,
            &[
                (FIND_DEAL, ok(json!([]))),
                (FIND_CONTACT, err(403, "insufficient_scope", "")),
            ],
        );
        assert!(matches!(o, Outcome::GiveUp { .. }), "{o:?}");
    }
}
