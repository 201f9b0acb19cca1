//! The CRMs' status webhooks (issue 16): `POST /api/v1/crm/amocrm/webhook`
//! and `POST /api/v1/crm/bitrix24/webhook` move siptrack's deal to the
//! status the CRM reports, so L-2 … L-5 use the CRM's real statuses. They
//! are not behind `http.token` (a CRM cannot send it): amoCRM's URL
//! carries `?token=<crm.amocrm.webhook_token>`, Bitrix24's event its
//! `auth[application_token]`. Reading the form and mapping the status is
//! `crm::status_hook` (pure); this is the I/O.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{body_too_large, error, AppState};
use crate::crm::status_hook::{
    amo_changes, amo_deleted, bitrix_event, delete_event, entity_get, form_pairs, map_status,
    same_token, semantic_status, stage_of, update_event, Stage, StatusHooks, DELETED_STATUS,
};
use crate::crm::transport::Transport;
use crate::store::StoreError;

/// What the status webhooks need: which are on, and how to ask Bitrix24
/// for a deal's stage.
pub struct StatusReceiver {
    pub hooks: StatusHooks,
    /// `crm.timeout_ms`; None when no CRM is asked anything.
    pub transport: Option<Transport>,
}

/// How often a `crm.deal.get` refused for the rate limit is asked again,
/// and how long apart: the webhook answers within a few seconds either
/// way.
const STAGE_TRIES: u32 = 3;
const STAGE_PAUSE: Duration = Duration::from_millis(700);

/// Records one status; Ok(true) when a deal of siptrack's had that CRM id.
async fn apply(s: &AppState, crm_id: &str, status: &str) -> Result<bool, StoreError> {
    // The maps were checked against [status_groups] when the config was
    // read; a group name always maps.
    let Some(group) = s.leads.group_of(status) else {
        return Ok(false);
    };
    Ok(s.store
        .set_deal_status(crm_id, status, group, true)
        .await?
        .is_some())
}

fn storage_down(e: StoreError) -> Response {
    tracing::error!(error = %e, "deal status from the CRM not recorded");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage unavailable; nothing was recorded, retry",
    )
}

pub async fn amocrm_webhook(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(hook) = &s.crm_status.hooks.amocrm else {
        return error(
            StatusCode::NOT_FOUND,
            "the amoCRM status webhook is off: set crm.amocrm.webhook_token",
        );
    };
    if !same_token(&hook.token, q.get("token").map_or("", String::as_str)) {
        return error(StatusCode::UNAUTHORIZED, "token: missing or wrong");
    }
    if let Some(r) = body_too_large(&body) {
        return r;
    }
    let pairs = form_pairs(&body);
    let (mut updated, mut unknown, mut unmapped) = (Vec::new(), Vec::new(), Vec::new());
    // A lead deleted in amoCRM: its deal is no candidate any more (a
    // note on it would fail with 404 for every later lead of the client).
    for lead_id in amo_deleted(&pairs) {
        match apply(&s, &lead_id, DELETED_STATUS).await {
            Ok(true) => updated
                .push(json!({"crm_deal_id": lead_id, "status": DELETED_STATUS, "deleted": true})),
            Ok(false) => unknown.push(lead_id),
            Err(e) => return storage_down(e),
        }
    }
    for change in amo_changes(&pairs) {
        let Some(status) = map_status(&hook.status_map, &change.status_id) else {
            tracing::info!(lead = %change.lead_id, status_id = %change.status_id, "amoCRM status not in crm.amocrm.status_map; ignored");
            unmapped.push(change.status_id);
            continue;
        };
        match apply(&s, &change.lead_id, &status).await {
            Ok(true) => updated.push(json!({"crm_deal_id": change.lead_id, "status": status})),
            Ok(false) => unknown.push(change.lead_id),
            Err(e) => return storage_down(e),
        }
    }
    Json(json!({"updated": updated, "unknown_deals": unknown, "unmapped_statuses": unmapped}))
        .into_response()
}

pub async fn bitrix24_webhook(State(s): State<AppState>, body: Bytes) -> Response {
    let Some(hook) = &s.crm_status.hooks.bitrix24 else {
        return error(
            StatusCode::NOT_FOUND,
            "the Bitrix24 status webhook is off: set crm.bitrix24.application_token",
        );
    };
    if let Some(r) = body_too_large(&body) {
        return r;
    }
    let event = bitrix_event(&form_pairs(&body));
    if !same_token(&hook.application_token, &event.application_token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "auth[application_token]: missing or wrong",
        );
    }
    let (wanted, deleted) = (
        update_event(hook.settings.entity),
        delete_event(hook.settings.entity),
    );
    if event.event != wanted && event.event != deleted {
        return Json(json!({"ignored": event.event, "handled": [wanted, deleted]})).into_response();
    }
    if event.id.is_empty() || !event.id.bytes().all(|b| b.is_ascii_digit()) {
        return error(
            StatusCode::BAD_REQUEST,
            "data[FIELDS][ID]: required, a Bitrix24 id",
        );
    }
    if event.event == deleted {
        // Gone from Bitrix24: no stage to read; never a candidate again.
        return match apply(&s, &event.id, DELETED_STATUS).await {
            Ok(found) => Json(json!({"crm_deal_id": event.id, "status": DELETED_STATUS,
                                     "deleted": true, "updated": found}))
            .into_response(),
            Err(e) => storage_down(e),
        };
    }
    let Some(transport) = &s.crm_status.transport else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no CRM connection");
    };
    // The event names the deal only; its stage is read back. A direct,
    // bounded call (not the outbox): nothing is lost when it fails, as
    // Bitrix24 sends the next update again, and the answer tells it.
    let request = entity_get(&hook.settings, &event.id);
    let mut stage = Stage::Failed("not asked".into());
    let mut semantic = None;
    for attempt in 0..STAGE_TRIES {
        if attempt > 0 {
            tokio::time::sleep(STAGE_PAUSE).await;
        }
        stage = match transport.send(&request).await {
            Ok(a) => {
                semantic = semantic_status(hook.settings.entity, &a);
                stage_of(hook.settings.entity, &a)
            }
            Err(e) => Stage::Retry(e.error),
        };
        if !matches!(stage, Stage::Retry(_)) {
            break;
        }
    }
    let stage = match stage {
        Stage::Is(st) => st,
        Stage::Retry(why) | Stage::Failed(why) => {
            tracing::warn!(deal = %event.id, error = %why, "Bitrix24 status webhook: the stage could not be read");
            return error(
                StatusCode::BAD_GATEWAY,
                format!("reading deal {} from Bitrix24: {why}", event.id),
            );
        }
    };
    // The map first (an operator's own reading of a stage), then the
    // stage's semantics: a lost deal in any stage of any pipeline is lost.
    let mapped = map_status(&hook.stage_map, &stage).or_else(|| semantic.map(String::from));
    let Some(status) = mapped else {
        tracing::info!(deal = %event.id, stage = %stage, "Bitrix24 stage not in crm.bitrix24.stage_map; ignored");
        return Json(json!({"crm_deal_id": event.id, "stage": stage, "unmapped": true}))
            .into_response();
    };
    match apply(&s, &event.id, &status).await {
        Ok(found) => Json(
            json!({"crm_deal_id": event.id, "stage": stage, "status": status,
                                 "updated": found}),
        )
        .into_response(),
        Err(e) => storage_down(e),
    }
}
