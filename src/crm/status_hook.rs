//! Deal status sent back by the CRM (issue 16): amoCRM's and Bitrix24's
//! status-change webhooks, read as pure functions. The CRM's status id is
//! mapped through `[crm.amocrm] status_map` / `[crm.bitrix24] stage_map`
//! onto a siptrack status, whose `[status_groups]` group (SPEC L-2) then
//! decides what L-3 … L-5 see — exactly as `POST
//! /api/v1/crm/deals/{id}/status` does.
//!
//! Followed:
//! - amoCRM webhooks (Settings → Integrations → Webhooks, event "lead
//!   status changed"): a POST, `application/x-www-form-urlencoded`,
//!   `leads[status][0][id]`, `[status_id]`, `[pipeline_id]`,
//!   `[old_status_id]`, … plus `account[subdomain]`; no signature, so the
//!   URL carries a secret `token` query parameter.
//! - Bitrix24 outgoing webhooks / event handlers (`ONCRMDEALUPDATE`,
//!   `ONCRMLEADUPDATE`): a POST, form-encoded, `event`,
//!   `data[FIELDS][ID]`, `ts`, `auth[domain]`, `auth[application_token]`
//!   (the token Bitrix24 shows for the outgoing webhook); the event
//!   carries only the id, so the stage is read with `crm.deal.get` /
//!   `crm.lead.get` (`STAGE_ID` / `STATUS_ID`).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::adapter::{Answer, Method, Request};
use super::bitrix24::{BitrixSettings, Entity};

/// `[crm.amocrm]` webhook_token and status_map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AmoHook {
    pub token: String,
    /// amoCRM status id → siptrack status.
    pub status_map: BTreeMap<String, String>,
}

/// `[crm.bitrix24]` application_token and stage_map, with the webhook to
/// read the deal's stage through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitrixHook {
    pub application_token: String,
    /// Bitrix24 stage (or lead status) id → siptrack status.
    pub stage_map: BTreeMap<String, String>,
    pub settings: BitrixSettings,
}

/// What a CRM's status webhook may change.
#[derive(Clone, Debug, Default)]
pub struct StatusHooks {
    pub amocrm: Option<AmoHook>,
    pub bitrix24: Option<BitrixHook>,
}

/// amoCRM's fixed ids: 142 "closed and won", 143 "closed and lost".
pub fn amo_default_map() -> BTreeMap<String, String> {
    [("142", "paid"), ("143", "cancelled")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Bitrix24's fixed semantic ids: deals `WON` / `LOSE` (`C<n>:WON` in
/// other pipelines), leads `CONVERTED` / `JUNK`.
pub fn bitrix_default_map() -> BTreeMap<String, String> {
    [
        ("WON", "paid"),
        ("LOSE", "cancelled"),
        ("CONVERTED", "paid"),
        ("JUNK", "cancelled"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The siptrack status of a CRM status id: the configured one, else, for
/// a Bitrix24 stage of another pipeline (`C3:WON`), its stage after the
/// pipeline prefix.
pub fn map_status(map: &BTreeMap<String, String>, crm_status: &str) -> Option<String> {
    map.get(crm_status)
        .or_else(|| {
            let (pipeline, stage) = crm_status.split_once(':')?;
            let numbered = pipeline.strip_prefix('C')?;
            numbered
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| map.get(stage))
                .flatten()
        })
        .cloned()
}

/// A form body as (name, value) pairs, names as sent
/// (`leads[status][0][id]`).
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// One status change of an amoCRM webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmoChange {
    pub lead_id: String,
    pub status_id: String,
    pub pipeline_id: String,
}

/// The lead ids of an amoCRM webhook's `leads[delete][<i>][id]` (event
/// "lead deleted"), in index order.
pub fn amo_deleted(pairs: &[(String, String)]) -> Vec<String> {
    amo_entries(pairs, "leads[delete][")
        .into_iter()
        .filter_map(|f| f.get("id").filter(|id| !id.is_empty()).cloned())
        .collect()
}

/// The status a deal deleted in the CRM takes: its group is `cancelled`,
/// so it is never a duplicate candidate (SPEC L-3, L-4) and the client's
/// next lead makes a new deal instead of a note on a deal that is gone.
pub const DELETED_STATUS: &str = "cancelled";

/// The fields of each `<prefix><i>][<field>]` of an amoCRM webhook
/// (`leads[status][0][id]`), in index order, values trimmed.
fn amo_entries(pairs: &[(String, String)], prefix: &str) -> Vec<BTreeMap<String, String>> {
    let mut by_index: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
    for (k, v) in pairs {
        let Some(rest) = k.strip_prefix(prefix) else {
            continue;
        };
        let Some((index, field)) = rest.split_once("][") else {
            continue;
        };
        let (Ok(i), Some(field)) = (index.parse::<u64>(), field.strip_suffix(']')) else {
            continue;
        };
        by_index
            .entry(i)
            .or_default()
            .insert(field.to_string(), v.trim().to_string());
    }
    by_index.into_values().collect()
}

/// Every `leads[status][<i>]` of an amoCRM webhook, in index order; an
/// entry without a lead id or a status id is left out.
pub fn amo_changes(pairs: &[(String, String)]) -> Vec<AmoChange> {
    amo_entries(pairs, "leads[status][")
        .into_iter()
        .filter_map(|f| {
            let get = |k: &str| f.get(k).cloned().unwrap_or_default();
            let (lead_id, status_id) = (get("id"), get("status_id"));
            (!lead_id.is_empty() && !status_id.is_empty()).then(|| AmoChange {
                lead_id,
                status_id,
                pipeline_id: get("pipeline_id"),
            })
        })
        .collect()
}

/// A Bitrix24 event as sent to an outgoing webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitrixEvent {
    pub event: String,
    pub id: String,
    pub application_token: String,
}

pub fn bitrix_event(pairs: &[(String, String)]) -> BitrixEvent {
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    BitrixEvent {
        event: get("event").to_ascii_uppercase(),
        id: get("data[FIELDS][ID]"),
        application_token: get("auth[application_token]"),
    }
}

/// Tokens compared in constant time; an empty expected token never
/// matches.
pub fn same_token(expected: &str, given: &str) -> bool {
    !expected.is_empty()
        && expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The event that names an update of the entity siptrack makes.
pub fn update_event(entity: Entity) -> &'static str {
    match entity {
        Entity::Deal => "ONCRMDEALUPDATE",
        Entity::Lead => "ONCRMLEADUPDATE",
    }
}

/// The event that names a deletion of the entity siptrack makes.
pub fn delete_event(entity: Entity) -> &'static str {
    match entity {
        Entity::Deal => "ONCRMDEALDELETE",
        Entity::Lead => "ONCRMLEADDELETE",
    }
}

/// `crm.deal.get` / `crm.lead.get` `{id}`.
pub fn entity_get(s: &BitrixSettings, id: &str) -> Request {
    let method = match s.entity {
        Entity::Deal => "crm.deal.get",
        Entity::Lead => "crm.lead.get",
    };
    Request {
        stage: "status",
        method: Method::Post,
        url: format!("{}{method}.json", s.webhook_url),
        headers: vec![("Content-Type", "application/json".to_string())],
        body: Some(json!({"id": id}).to_string()),
    }
}

/// What an answer to `entity_get` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    Is(String),
    /// Worth asking again (the rate limit, overload).
    Retry(String),
    Failed(String),
}

/// The siptrack status of a stage's semantics (`STAGE_SEMANTIC_ID` of a
/// deal, `STATUS_SEMANTIC_ID` of a lead): `S` success is `paid`, `F`
/// failure `cancelled`; `P` (in progress) and anything else none. Every
/// pipeline's won and lost stages carry it, custom ones (`APOLOGY`, a
/// `C3:REFUSED`) included, where the stage ids are the portal's own.
pub fn semantic_status(entity: Entity, a: &Answer) -> Option<&'static str> {
    if !(200..300).contains(&a.status) {
        return None;
    }
    let v: Value = serde_json::from_slice(&a.body).ok()?;
    let field = match entity {
        Entity::Deal => "STAGE_SEMANTIC_ID",
        Entity::Lead => "STATUS_SEMANTIC_ID",
    };
    match v["result"][field].as_str()? {
        "S" => Some("paid"),
        "F" => Some("cancelled"),
        _ => None,
    }
}

/// `STAGE_ID` of a deal / `STATUS_ID` of a lead.
pub fn stage_of(entity: Entity, a: &Answer) -> Stage {
    let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
    let field = match entity {
        Entity::Deal => "STAGE_ID",
        Entity::Lead => "STATUS_ID",
    };
    if (200..300).contains(&a.status) {
        if let Some(s) = v["result"][field].as_str().filter(|s| !s.is_empty()) {
            return Stage::Is(s.to_string());
        }
    }
    let code = v["error"].as_str().unwrap_or_default();
    let why = format!(
        "HTTP {}{}{}",
        a.status,
        if code.is_empty() { "" } else { ": " },
        code
    );
    if code == "QUERY_LIMIT_EXCEEDED" || a.status >= 500 {
        Stage::Retry(why)
    } else if (200..300).contains(&a.status) && code.is_empty() {
        Stage::Failed(format!("{why}: no {field} in the answer"))
    } else {
        Stage::Failed(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crm_status_ids_map_onto_siptrack_statuses() {
        let mut amo = amo_default_map();
        amo.insert("5551".into(), "in_progress".into());
        let bx = bitrix_default_map();
        for (map, id, want) in [
            (&amo, "142", Some("paid")),
            (&amo, "143", Some("cancelled")),
            (&amo, "5551", Some("in_progress")),
            (&amo, "777", None),
            (&bx, "WON", Some("paid")),
            (&bx, "C3:WON", Some("paid")),
            (&bx, "C12:LOSE", Some("cancelled")),
            (&bx, "NEW", None),
            (&bx, "X3:WON", None),
            (&bx, "C:WON", Some("paid")),
            (&bx, "CONVERTED", Some("paid")),
        ] {
            assert_eq!(map_status(map, id).as_deref(), want, "{id}");
        }
    }

    #[test]
    fn amocrm_status_changes_are_read_from_its_form() {
        let body =
            b"leads%5Bstatus%5D%5B0%5D%5Bid%5D=31&leads%5Bstatus%5D%5B0%5D%5Bstatus_id%5D=142\
&leads%5Bstatus%5D%5B0%5D%5Bpipeline_id%5D=11&leads%5Bstatus%5D%5B0%5D%5Bold_status_id%5D=22\
&leads[status][1][id]=32&leads[status][1][status_id]=143&leads[status][2][id]=33\
&account%5Bsubdomain%5D=acme&leads[add][0][id]=40";
        assert_eq!(
            amo_changes(&form_pairs(body)),
            vec![
                AmoChange {
                    lead_id: "31".into(),
                    status_id: "142".into(),
                    pipeline_id: "11".into()
                },
                AmoChange {
                    lead_id: "32".into(),
                    status_id: "143".into(),
                    pipeline_id: String::new()
                },
            ]
        );
        assert!(amo_changes(&form_pairs(b"garbage&&=%ZZ")).is_empty());
        let deleted =
            b"leads%5Bdelete%5D%5B0%5D%5Bid%5D=1001&leads%5Bdelete%5D%5B0%5D%5Bstatus_id%5D=5\
&leads[delete][1][id]=1002&leads[delete][2][id]=&account%5Bsubdomain%5D=acme";
        assert_eq!(amo_deleted(&form_pairs(deleted)), ["1001", "1002"]);
        assert!(amo_deleted(&form_pairs(body)).is_empty());
    }

    fn answer(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body: body.to_string().into_bytes(),
            ..Answer::default()
        }
    }

    /// A stage the map does not name still reads by its semantics.
    #[test]
    fn bitrix24_stage_semantics_are_read() {
        for (entity, a, want) in [
            (
                Entity::Deal,
                answer(
                    200,
                    json!({"result": {"STAGE_ID": "APOLOGY", "STAGE_SEMANTIC_ID": "F"}}),
                ),
                Some("cancelled"),
            ),
            (
                Entity::Deal,
                answer(
                    200,
                    json!({"result": {"STAGE_ID": "C3:PAID", "STAGE_SEMANTIC_ID": "S"}}),
                ),
                Some("paid"),
            ),
            (
                Entity::Deal,
                answer(
                    200,
                    json!({"result": {"STAGE_ID": "NEW", "STAGE_SEMANTIC_ID": "P"}}),
                ),
                None,
            ),
            (
                Entity::Lead,
                answer(
                    200,
                    json!({"result": {"STATUS_ID": "JUNK", "STATUS_SEMANTIC_ID": "F"}}),
                ),
                Some("cancelled"),
            ),
            (
                Entity::Deal,
                answer(200, json!({"result": {"STAGE_ID": "X"}})),
                None,
            ),
            (
                Entity::Deal,
                answer(503, json!({"result": {"STAGE_SEMANTIC_ID": "S"}})),
                None,
            ),
        ] {
            assert_eq!(semantic_status(entity, &a), want, "{a:?}");
        }
    }

    #[test]
    fn bitrix24_events_and_stages_are_read() {
        let body = b"event=ONCRMDEALUPDATE&data%5BFIELDS%5D%5BID%5D=12&ts=1795435200\
&auth%5Bdomain%5D=acme.bitrix24.ru&auth%5Bapplication_token%5D=app-tok";
        assert_eq!(
            bitrix_event(&form_pairs(body)),
            BitrixEvent {
                event: "ONCRMDEALUPDATE".into(),
                id: "12".into(),
                application_token: "app-tok".into()
            }
        );
        for (entity, a, want) in [
            (
                Entity::Deal,
                answer(200, json!({"result": {"ID": "12", "STAGE_ID": "C3:WON"}})),
                Stage::Is("C3:WON".into()),
            ),
            (
                Entity::Lead,
                answer(200, json!({"result": {"ID": "12", "STATUS_ID": "JUNK"}})),
                Stage::Is("JUNK".into()),
            ),
            (
                Entity::Deal,
                answer(503, json!({"error": "QUERY_LIMIT_EXCEEDED"})),
                Stage::Retry("HTTP 503: QUERY_LIMIT_EXCEEDED".into()),
            ),
            (
                Entity::Deal,
                answer(
                    400,
                    json!({"error": "ERROR_NOT_FOUND", "error_description": "Not found"}),
                ),
                Stage::Failed("HTTP 400: ERROR_NOT_FOUND".into()),
            ),
            (
                Entity::Deal,
                answer(200, json!({"result": {"ID": "12"}})),
                Stage::Failed("HTTP 200: no STAGE_ID in the answer".into()),
            ),
        ] {
            assert_eq!(stage_of(entity, &a), want);
        }
        for (expected, given, same) in [
            ("tok", "tok", true),
            ("tok", "toK", false),
            ("tok", "to", false),
            ("", "", false),
        ] {
            assert_eq!(same_token(expected, given), same, "{expected} {given}");
        }
    }
}
