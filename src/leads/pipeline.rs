//! From finished calls and form posts to recorded leads: builds the lead
//! (SPEC L-1), then lets the store decide and record it atomically.
//! Calls go through one queue, in order; a store error is retried until it
//! succeeds, so no call is lost while siptrack runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::calls::CallRecord;
use crate::config::LeadsConfig;
use crate::crm::outbox::CallStart;
use crate::leads::dedup::{Group, Identity, LeadKind};
use crate::store::leads::{Job, NewDealStatus, NewLead, Recorded};
use crate::store::{Store, StoreError};

/// The lead a call makes: title `Incoming call from <caller>`, the caller
/// as phone, the visit (for static tracking, the channel's marker), and a
/// text naming the dialed number. A withheld caller (no phone, SPEC T-5)
/// makes `Incoming call from a withheld number` without a phone.
pub fn call_lead(r: &CallRecord) -> NewLead {
    let i = &r.info;
    let title = if i.caller.is_empty() {
        "Incoming call from a withheld number".to_string()
    } else {
        format!("Incoming call from {}", i.caller)
    };
    NewLead {
        kind: Some(LeadKind::Call),
        who: Identity {
            title,
            name: String::new(),
            phone: i.caller.clone(),
            email: String::new(),
            visit: i
                .visit_id
                .clone()
                .or_else(|| i.marker.clone())
                .unwrap_or_default(),
        },
        form: String::new(),
        dialed: i.dialed.clone(),
        text: format!(
            "Call to {} ({}, {} s)",
            i.dialed,
            r.status.as_str(),
            r.duration
        ),
        fields: String::new(),
        // A call's visit rides with its call record.
        visit_data: Default::default(),
        call_id: Some(r.call_id.clone()),
        at: (r.invite_at / 1000) as i64,
    }
}

pub fn new_deal_status(cfg: &LeadsConfig) -> NewDealStatus {
    NewDealStatus {
        status: cfg.new_deal_status.clone(),
        group: cfg
            .group_of(&cfg.new_deal_status)
            .unwrap_or(Group::NotCounted),
    }
}

/// Records one finished call and its lead.
pub async fn record_call(
    store: &Store,
    cfg: &LeadsConfig,
    r: &CallRecord,
) -> Result<Recorded, StoreError> {
    let lead = call_lead(r);
    store
        .record_lead(&lead, &cfg.dedup, &new_deal_status(cfg), Some(r), &cfg.crm)
        .await
}

/// What the SIP side reports to the pipeline, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallNews {
    /// Only sent when a call-start webhook is configured.
    Started(CallStart),
    Ended(CallRecord),
}

/// Calls taken off the queue at once, recorded in one transaction.
const BATCH: usize = 256;

/// Takes call news off the queue until it closes (shutdown), in order;
/// whatever is queued is recorded together, so the pipeline keeps up with
/// call rates far above one commit per call.
pub async fn run(mut news: mpsc::UnboundedReceiver<CallNews>, store: Store, cfg: Arc<LeadsConfig>) {
    let status = new_deal_status(&cfg);
    let mut batch: Vec<Job> = Vec::with_capacity(BATCH);
    let job = |n: CallNews| match n {
        CallNews::Started(s) => Job::Start(s),
        CallNews::Ended(r) => Job::Lead(call_lead(&r), Some(r)),
    };
    while let Some(first) = news.recv().await {
        batch.push(job(first));
        while batch.len() < BATCH {
            match news.try_recv() {
                Ok(n) => batch.push(job(n)),
                Err(_) => break,
            }
        }
        let jobs = Arc::new(std::mem::take(&mut batch));
        let mut wait = Duration::from_millis(100);
        loop {
            match store
                .record_calls(jobs.clone(), &cfg.dedup, &status, &cfg.crm)
                .await
            {
                Ok(done) => {
                    let ended = jobs.iter().filter_map(|j| match j {
                        Job::Lead(_, Some(r)) => Some(r),
                        _ => None,
                    });
                    for (r, rec) in ended.zip(&done) {
                        tracing::debug!(call_id = %r.call_id, status = r.status.as_str(), lead = rec.lead_id, outcome = %rec.outcome, "call recorded");
                    }
                    break;
                }
                Err(e) => {
                    tracing::error!(calls = jobs.len(), error = %e, retry_in_ms = wait.as_millis() as u64, "calls not recorded yet");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
        batch = Vec::with_capacity(BATCH);
    }
}
