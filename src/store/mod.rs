//! Durable state (SPEC section 8) behind one seam, in the style of
//! hickory-dns's `store/{sqlite,in_memory}`: `Store` is what the rest of
//! siptrack uses; it is one of
//! - `sqlite::SqliteStore`: the embedded database (`siptrack run`'s
//!   default);
//! - `postgres::PgStore`: PostgreSQL, which several nodes can share;
//! - `memory::MemoryStore`: maps in memory (replay, tests; no disk).
//!
//! All three record through the same code (`record.rs`: the pure decision of
//! `leads::dedup` over a `Ledger`, the store's reads and writes of one
//! transaction) and hand out the same typed rows (`rows.rs`). The choice
//! is made once, at open; `Store` dispatches by match (an enum, not a
//! trait object: no boxed futures, and the set of stores is closed).

use std::sync::Arc;

use crate::calls::{AdoptedCall, CallRecord};
use crate::clock::Clock;
use crate::crm::metrics::Depth;
use crate::crm::outbox::Plan;
use crate::leads::dedup::{Group, Settings};
use crate::tracking::pools::{AssignmentRow, Granted, PoolConfig, Visit};

pub mod leads;
pub mod memory;
pub mod node_hold;
pub mod outbox;
pub mod postgres;
pub mod query;
mod record;
pub mod rows;
pub mod runs;
pub mod sqlite;

use leads::{Job, NewDealStatus, NewLead, Recorded};
use memory::MemoryStore;
use outbox::{DueItem, Settle};
use postgres::{PgOptions, PgStore};
use query::LeadQuery;
use rows::{CallRow, DealRow, LeadRow, OutboxRow};
use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage {url}: {source}")]
    Open {
        url: String,
        source: rusqlite::Error,
    },
    #[error("storage: creating {dir}: {source}")]
    Dir { dir: String, source: std::io::Error },
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("storage {url}: {reason}")]
    OpenPostgres { url: String, reason: String },
    #[error("storage: {}", postgres_reason(.0))]
    Postgres(#[from] ::postgres::Error),
    #[error("storage: {0}")]
    Thread(String),
    #[error("storage: {0}")]
    Unsupported(&'static str),
    #[error("storage: {0}")]
    NodeInUse(String),
}

/// What went wrong with PostgreSQL, as its server or the connection said
/// it: the client library's own text is only "db error" or "error
/// connecting to server" (trial, 2026-12-02: a changed password and a
/// full disk both read "storage: db error").
pub fn postgres_reason(e: &::postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// For the commands that only read: a PostgreSQL `url` must name a
/// database siptrack already set up (see `postgres::has_schema`); other
/// URLs pass.
pub fn require_existing_postgres(url: &str) -> Result<(), anyhow::Error> {
    if postgres::is_postgres_url(url) && !postgres::has_schema(url)? {
        anyhow::bail!(
            "no siptrack tables in {} (storage.url): `siptrack run` creates them; this command only reads",
            postgres::redact(url)
        );
    }
    Ok(())
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
    Memory(MemoryStore),
}

/// The store. Cheap to clone: every clone is the same store.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    install_id: Arc<str>,
    /// This node among those sharing the database (`storage.node_name`):
    /// whose outbox claims are whose. The same across restarts, so a
    /// restarted node takes its own claims back at once.
    node_id: Arc<str>,
    /// Signalled after every commit that queued CRM requests.
    outbox_ready: Arc<tokio::sync::Notify>,
    /// Counts commits that recorded leads or calls: the console's live
    /// updates wait on it instead of polling.
    recorded: Arc<tokio::sync::watch::Sender<u64>>,
    /// Unix time for what the store stamps (outbox due times).
    clock: Clock,
}

/// Runs `$e` with `$s` bound to whichever store this is.
macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match &$self.backend {
            Backend::Sqlite($s) => $e,
            Backend::Postgres($s) => $e,
            Backend::Memory($s) => $e,
        }
    };
}

impl Store {
    /// Opens `storage.url` on the system clock with the default pool:
    /// `sqlite:<path>` (creating the file and its directory if needed) or
    /// `postgres://…`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(
            url,
            &PgOptions::default(),
            runs::DEFAULT_NODE,
            Clock::system(),
        )
        .await
    }

    pub async fn open_with_clock(url: &str, clock: Clock) -> Result<Store, StoreError> {
        Store::open_with(url, &PgOptions::default(), runs::DEFAULT_NODE, clock).await
    }

    /// Opens `url` as `node` (`storage.node_name`: which open calls and
    /// outbox claims are this node's among those sharing the database);
    /// `pg` says how to talk to PostgreSQL (unused for SQLite).
    pub async fn open_with(
        url: &str,
        pg: &PgOptions,
        node: &str,
        clock: Clock,
    ) -> Result<Store, StoreError> {
        let backend = if postgres::is_postgres_url(url) {
            Backend::Postgres(PgStore::open(url, pg, node, clock.clone()).await?)
        } else {
            Backend::Sqlite(SqliteStore::open(url, node, clock.clone()).await?)
        };
        Ok(Store::with_backend(backend, node.into(), clock))
    }

    fn with_backend(backend: Backend, node_id: Arc<str>, clock: Clock) -> Store {
        let install_id = match &backend {
            Backend::Sqlite(b) => b.install_id().clone(),
            Backend::Postgres(b) => b.install_id().clone(),
            Backend::Memory(b) => b.install_id().clone(),
        };
        Store {
            backend,
            install_id,
            node_id,
            outbox_ready: Default::default(),
            recorded: Arc::new(tokio::sync::watch::Sender::new(0)),
            clock,
        }
    }

    /// A store in memory, empty, gone with the process.
    pub fn memory(clock: Clock) -> Store {
        Store::with_backend(
            Backend::Memory(MemoryStore::new(clock.clone())),
            runs::DEFAULT_NODE.into(),
            clock,
        )
    }

    /// Holds `storage.node_name` on the database until the value is
    /// dropped; fails when another running process holds it (see
    /// `node_hold`). Only `siptrack run` holds it: the commands that read
    /// share the name freely.
    pub async fn hold_node(
        &self,
        policy: node_hold::HoldPolicy,
    ) -> Result<node_hold::NodeHold, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => {
                let (file, node, slot) = (
                    b.file().to_path_buf(),
                    self.node_id.clone(),
                    b.node_lock.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    node_hold::hold_file(&file, &node, policy.wait, &slot)
                })
                .await
                .map_err(|e| StoreError::Thread(e.to_string()))?
            }
            Backend::Postgres(b) => Ok(node_hold::NodeHold::Postgres(b.hold_node(policy).await?)),
            Backend::Memory(_) => Ok(node_hold::NodeHold::Nothing),
        }
    }

    /// Whether a SQLite database file is still the one open (see
    /// `SqliteStore::check_file`: a deleted one is written back). Other
    /// stores have no file.
    pub async fn check_file(&self) -> Result<sqlite::FileCheck, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.check_file().await,
            _ => Ok(sqlite::FileCheck::Same),
        }
    }

    /// This process among the nodes sharing the database.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// This installation's prefix of idempotency keys.
    pub fn install_id(&self) -> &str {
        &self.install_id
    }

    /// The key that signs recording links: random per database (created
    /// by migration 0007 of SQLite, 0003 of PostgreSQL), used for nothing
    /// else; one for every node sharing the database.
    pub fn recording_link_key(&self) -> Arc<[u8]> {
        each!(self, b => b.link_key().clone())
    }

    /// The record of one call, if it ended (and was recorded).
    pub async fn find_call(&self, call_id: &str) -> Result<Option<CallRow>, StoreError> {
        each!(self, b => b.find_call(call_id).await)
    }

    /// Wakes the delivery worker; signalled after every commit that
    /// queued CRM requests.
    pub fn outbox_ready(&self) -> &tokio::sync::Notify {
        &self.outbox_ready
    }

    /// Call starts and finished calls with their leads, decided one after
    /// the other and recorded in one transaction: at high call rates one
    /// commit per call is the limit. One result per lead job, in order.
    pub async fn record_calls(
        &self,
        jobs: Arc<Vec<Job>>,
        s: &Settings,
        status: &NewDealStatus,
        plan: &Plan,
    ) -> Result<Vec<Recorded>, StoreError> {
        let done = each!(self, b => b.record_calls(jobs, s, status, plan).await)?;
        self.recorded.send_modify(|n| *n = n.wrapping_add(1));
        if plan.sends_anything() {
            self.outbox_ready.notify_one();
        }
        Ok(done)
    }

    /// SPEC L-3 to L-6: decides what the lead becomes and records the lead,
    /// its outcome, any deal, comment or task, the call that made it (if
    /// any), and the CRM requests it causes (C-5) in one transaction.
    pub async fn record_lead(
        &self,
        new: &NewLead,
        s: &Settings,
        status: &NewDealStatus,
        call: Option<&CallRecord>,
        plan: &Plan,
    ) -> Result<Recorded, StoreError> {
        let job = Job::Lead(new.clone(), call.cloned());
        self.record_calls(Arc::new(vec![job]), s, status, plan)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Thread("no decision came back".into()))
    }

    /// Calls that an earlier run saw start and never recorded: a crash
    /// cut them short. Oldest first. Dialogs kept for such calls longer
    /// than `keep_dialogs_ms` (`tracking.max_call_seconds`) go first.
    pub async fn interrupted_calls(
        &self,
        keep_dialogs_ms: u64,
    ) -> Result<Vec<CallRecord>, StoreError> {
        each!(self, b => b.interrupted_calls(keep_dialogs_ms).await)
    }

    /// SPEC L-2: the CRM reports a deal's status. `id` is the CRM's id
    /// of the deal (from its answer to deal.create) or, for deals the CRM
    /// never named, siptrack's — unless `crm_only` (a CRM's own status
    /// webhook: its id must never be read as siptrack's). Returns
    /// siptrack's deal id, None if no such deal.
    pub async fn set_deal_status(
        &self,
        id: &str,
        status: &str,
        group: Group,
        crm_only: bool,
    ) -> Result<Option<i64>, StoreError> {
        each!(self, b => b.set_deal_status(id, status, group, crm_only).await)
    }

    /// The lead log (L-7), newest first; leads created since `since`
    /// (Unix seconds).
    pub async fn list_leads(&self, limit: i64, since: i64) -> Result<Vec<LeadRow>, StoreError> {
        each!(self, b => b.list_leads(limit, since).await)
    }

    /// Changes after every commit that recorded leads or calls.
    pub fn recorded(&self) -> tokio::sync::watch::Receiver<u64> {
        self.recorded.subscribe()
    }

    /// A page of the lead log, newest first, by keyset (the console).
    pub async fn lead_page(&self, q: LeadQuery) -> Result<Vec<LeadRow>, StoreError> {
        each!(self, b => b.lead_page(q).await)
    }

    /// The newest lead's id, 0 when there is none.
    pub async fn newest_lead_id(&self) -> Result<i64, StoreError> {
        each!(self, b => b.newest_lead_id().await)
    }

    /// Leads per visit/channel created since `since` (Unix seconds), most
    /// first.
    pub async fn leads_per_channel(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        each!(self, b => b.leads_per_channel(since, limit).await)
    }

    /// Calls started since `since_ms`, per hour (start in Unix ms) and
    /// status.
    pub async fn calls_per_hour(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(i64, String, i64)>, StoreError> {
        each!(self, b => b.calls_per_hour(since_ms).await)
    }

    /// Call records in record order, newest first, with their row ids:
    /// below `before`, above `after` (the console's pages and news).
    pub async fn call_page(
        &self,
        before: Option<i64>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, CallRow)>, StoreError> {
        each!(self, b => b.call_page(before, after, limit).await)
    }

    /// Call records, newest first; calls that ended since `since_ms` (a
    /// call is recorded when it ends: a poller by start time missed the
    /// calls under way at its poll).
    pub async fn list_calls(&self, limit: i64, since_ms: i64) -> Result<Vec<CallRow>, StoreError> {
        each!(self, b => b.list_calls(limit, since_ms).await)
    }

    /// Deals of the local CRM with their tasks and comments, newest first.
    pub async fn list_deals(&self, limit: i64, since: i64) -> Result<Vec<DealRow>, StoreError> {
        each!(self, b => b.list_deals(limit, since).await)
    }

    /// Leads without an outcome: none, ever (checked after crashes).
    pub async fn leads_without_outcome(&self) -> Result<i64, StoreError> {
        each!(self, b => b.leads_without_outcome().await)
    }

    /// Claims for `node` until `now_ms + lease_ms` up to `limit` items to
    /// deliver, oldest first: pending, due, not in flight on another
    /// node's live lease (a node that died loses its claims when their
    /// lease runs out; restarted under its name, it takes them back at
    /// once: one worker per node settles a round before claiming again), and
    /// whose earlier items with the same order key are all settled (a
    /// deal's requests go out one after another, in order, across nodes).
    pub async fn outbox_claim(
        &self,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<DueItem>, StoreError> {
        each!(self, b => b.outbox_claim(node, now_ms, lease_ms, limit).await)
    }

    /// The earliest time a pending item is due, if any.
    pub async fn outbox_next_due(&self) -> Result<Option<i64>, StoreError> {
        each!(self, b => b.outbox_next_due().await)
    }

    /// Records the attempts' results in one transaction, for the items
    /// `node` still holds: an item whose lease ran out and that another
    /// node took over is settled by that node.
    pub async fn outbox_settle(
        &self,
        node: &str,
        results: &[(i64, Settle)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        each!(self, b => b.outbox_settle(node, results, now_ms).await)
    }

    /// Deletes delivered items older than a week.
    pub async fn outbox_purge(&self, now_ms: i64) -> Result<u64, StoreError> {
        each!(self, b => b.outbox_purge(now_ms).await)
    }

    pub async fn outbox_depth(&self) -> Result<Depth, StoreError> {
        each!(self, b => b.outbox_depth().await)
    }

    /// Outbox items, newest first; `state` filters (pending, done, failed).
    pub async fn list_outbox(
        &self,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        each!(self, b => b.list_outbox(state, limit).await)
    }

    /// Puts a parked item back in the queue (an operator fixed the CRM).
    pub async fn outbox_requeue(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let done = each!(self, b => b.outbox_requeue(id, now_ms).await)?;
        if done {
            self.outbox_ready.notify_one();
        }
        Ok(done)
    }

    /// Writes a number's state unless the store already has a newer one.
    pub async fn save_assignment(&self, row: &AssignmentRow) -> Result<(), StoreError> {
        each!(self, b => b.save_assignment(row).await)
    }

    pub async fn load_assignments(&self) -> Result<Vec<AssignmentRow>, StoreError> {
        each!(self, b => b.load_assignments().await)
    }

    /// An answered call still open, with its dialog: the BYE of a call
    /// another node set up (and died) is relayed from it (issue 14).
    pub async fn open_dialog(&self, call_id: &str) -> Result<Option<AdoptedCall>, StoreError> {
        each!(self, b => b.open_dialog(call_id).await)
    }

    /// After a burst: the embedded database gives back the page cache it
    /// filled (the run loop calls this with `malloc_trim`). A server
    /// database keeps its memory in its own processes: nothing to do.
    pub fn release_memory(&self) {
        if let Backend::Sqlite(b) = &self.backend {
            b.release_memory();
        }
    }

    /// Whether other nodes may share this store (PostgreSQL): pool numbers
    /// are then granted in the database (`grant_number`), and each node
    /// reads back what the others granted.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// A page view of `visit` at `now` (Unix ms) decided in the shared
    /// store over what every node granted: the number it keeps or gets,
    /// written before the answer. Only a shared store grants; on one node
    /// the process's own `Pools` decides and the store keeps its rows.
    pub async fn grant_number(
        &self,
        configs: Vec<PoolConfig>,
        visit: Visit,
        now: u64,
    ) -> Result<Option<Granted>, StoreError> {
        match &self.backend {
            Backend::Postgres(b) => b.grant_number(configs, visit, now).await,
            _ => Err(StoreError::Unsupported(
                "numbers are granted in the database only on PostgreSQL",
            )),
        }
    }

    /// A look at the database for /healthz: whether it takes work now.
    /// SQLite: its write lock taken and given back within 3 s (a read
    /// passes a file another process holds locked; 3 s, not less, so a
    /// long commit of this node's own under load is no alarm);
    /// PostgreSQL, memory: a read (the CRM outbox's depth; PostgreSQL's
    /// locks are per row).
    pub async fn probe(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.probe_write(std::time::Duration::from_secs(3)).await,
            Backend::Postgres(_) | Backend::Memory(_) => self.outbox_depth().await.map(|_| ()),
        }
    }

    /// Runs SQL text as it is (benchmarks and tests seed or age a SQL
    /// store with it); the memory store has no SQL.
    pub async fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.execute_raw(sql).await,
            Backend::Postgres(b) => b.execute_raw(sql).await,
            Backend::Memory(_) => Err(StoreError::Unsupported("SQL on the memory store")),
        }
    }
}

#[cfg(test)]
mod tests;

/// An open call's row as a call to take over; None when its dialog is
/// not one this build reads (the BYE then gets its 481).
pub(crate) fn adopted(
    info: &str,
    invite_at: i64,
    answer_at: i64,
    dialog: &str,
) -> Option<AdoptedCall> {
    Some(AdoptedCall {
        // Like interrupted calls: a row this build cannot read still is a call.
        info: serde_json::from_str(info).unwrap_or_default(),
        invite_unix: invite_at.max(0) as u64,
        answer_unix: answer_at.max(0) as u64,
        dialog: crate::proxy::handoff::parse(dialog)?,
    })
}
