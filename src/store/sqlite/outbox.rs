//! The CRM outbox in SQLite (SPEC C-5): items are inserted inside the
//! decision's transaction (`decide.rs`); the worker claims the due ones
//! with a lease and settles each attempt. Several processes may share the
//! file; each item is in flight in one of them at a time.

use rusqlite::{params, TransactionBehavior};

use super::SqliteStore;
use crate::crm::metrics::Depth;
use crate::crm::outbox::Target;
use crate::store::outbox::{unstep_due, DueItem, Settle, CLOCK_STEP_MS, KEEP_DONE_MS, UNSTEP_SQL};
use crate::store::rows::OutboxRow;
use crate::store::StoreError;

impl SqliteStore {
    /// Claims for `node` until `now_ms + lease_ms` up to `limit` pending
    /// items that are due, not claimed by another process's live lease (a
    /// node's own claims are an earlier run's: its worker settles a round
    /// before it claims again), and first of their
    /// order key among the pending ones (an item in flight is pending, so
    /// a deal's next item waits until it is settled). Oldest first. One
    /// IMMEDIATE transaction: processes sharing the file take turns.
    pub async fn outbox_claim(
        &self,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<DueItem>, StoreError> {
        let node = node.to_string();
        let unstep = unstep_due(&self.unstepped_at, now_ms);
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if unstep {
                tx.prepare_cached(UNSTEP_SQL)?
                    .execute(params![now_ms, CLOCK_STEP_MS])?;
            }
            let items = {
                let mut q = tx.prepare_cached(
                    "SELECT o.id, o.target, o.idempotency_key, o.event, o.body, o.attempts, o.created_at,
                            o.deal_ref, d.crm_id,
                            EXISTS (SELECT 1 FROM outbox c
                                     WHERE c.order_key = o.order_key AND c.event = 'deal.create') AS created_here
                       FROM outbox o LEFT JOIN deals d ON d.id = o.deal_ref
                      WHERE o.state = 'pending' AND o.next_at <= ?1
                        AND (o.lease_until IS NULL OR o.lease_until <= ?1 OR o.claimed_by = ?3)
                        AND NOT EXISTS (SELECT 1 FROM outbox p
                                         WHERE p.order_key = o.order_key AND p.id < o.id
                                           AND p.state = 'pending')
                      ORDER BY o.id LIMIT ?2",
                )?;
                let rows = q.query_map(params![now_ms, limit, node], |r| {
                    let target: String = r.get(1)?;
                    let Some(target) = Target::parse(&target) else {
                        tracing::error!(
                            id = r.get::<_, i64>(0)?,
                            target,
                            "outbox item with an unknown target; left pending"
                        );
                        return Ok(None);
                    };
                    Ok(Some(DueItem {
                        id: r.get(0)?,
                        target,
                        key: r.get(2)?,
                        event: r.get(3)?,
                        body: r.get(4)?,
                        attempts: r.get::<_, i64>(5)?.max(0) as u32,
                        created_at: r.get(6)?,
                        deal_ref: r.get(7)?,
                        crm_deal_id: r.get(8)?,
                        deal_created_here: r.get(9)?,
                    }))
                })?;
                rows.filter_map(Result::transpose)
                    .collect::<rusqlite::Result<Vec<DueItem>>>()?
            };
            {
                let mut claim = tx.prepare_cached(
                    "UPDATE outbox SET claimed_by = ?2, lease_until = ?3, touched_at = ?4 WHERE id = ?1",
                )?;
                for i in &items {
                    claim.execute(params![i.id, node, now_ms + lease_ms, now_ms])?;
                }
            }
            tx.commit()?;
            Ok(items)
        })
        .await
    }

    /// The earliest time a pending item is due, if any.
    pub async fn outbox_next_due(&self) -> Result<Option<i64>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT MIN(MAX(next_at, COALESCE(lease_until, 0))) FROM outbox
                  WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Records the attempts' results in one transaction; results for
    /// items `node` no longer holds (its lease ran out and another process
    /// took them) are left out.
    pub async fn outbox_settle(
        &self,
        node: &str,
        results: &[(i64, Settle)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (node, results) = (node.to_string(), results.to_vec());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (id, s) in &results {
                let n = match s {
                    Settle::Done { .. } => tx
                        .prepare_cached(
                            "UPDATE outbox SET state = 'done', done_at = ?2,
                                    attempts = attempts + 1, last_error = '',
                                    claimed_by = NULL, lease_until = NULL
                              WHERE id = ?1 AND claimed_by = ?3",
                        )?
                        .execute(params![id, now_ms, node])?,
                    Settle::Retry { error, next_at, .. } => {
                        tx.prepare_cached(
                            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_at = ?3,
                                    claimed_by = NULL, lease_until = NULL, touched_at = ?5
                              WHERE id = ?1 AND claimed_by = ?4",
                        )?
                        .execute(params![id, error, next_at, node, now_ms])?
                    }
                    Settle::Park { error, .. } => {
                        tx.prepare_cached(
                            "UPDATE outbox SET state = 'failed', attempts = attempts + 1,
                                    last_error = ?2, done_at = ?3,
                                    claimed_by = NULL, lease_until = NULL
                              WHERE id = ?1 AND claimed_by = ?4",
                        )?
                        .execute(params![id, error, now_ms, node])?
                    }
                };
                if let (1, Some((deal, crm_id))) = (n, s.crm_deal()) {
                    tx.prepare_cached("UPDATE deals SET crm_id = ?2 WHERE id = ?1")?
                        .execute(params![deal, crm_id])?;
                }
            }
            // Dropping an uncommitted transaction rolls it back (the `?`s).
            tx.commit()
        })
        .await
    }

    /// Deletes delivered items older than a week.
    pub async fn outbox_purge(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.with(move |c| {
            c.execute(
                "DELETE FROM outbox WHERE state = 'done' AND done_at < ?1",
                params![now_ms - KEEP_DONE_MS],
            )
            .map(|n| n as u64)
        })
        .await
    }

    pub async fn outbox_depth(&self) -> Result<Depth, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT (SELECT COUNT(*) FROM outbox WHERE state = 'pending'),
                        (SELECT COUNT(*) FROM outbox WHERE state = 'failed')",
                [],
                |r| {
                    Ok(Depth {
                        pending: r.get(0)?,
                        failed: r.get(1)?,
                    })
                },
            )
        })
        .await
    }

    /// Outbox items, newest first; `state` filters (pending, done, failed).
    pub async fn list_outbox(
        &self,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let state = state.map(str::to_string);
        self.with(move |c| {
            let mut q = c.prepare_cached(
                "SELECT id, created_at, target, idempotency_key, event, lead_id, deal_ref, state,
                        attempts, next_at, last_error, done_at, body
                   FROM outbox WHERE (?1 IS NULL OR state = ?1) ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = q.query_map(params![state, limit], |r| {
                Ok(OutboxRow {
                    id: r.get("id")?,
                    created_at: r.get("created_at")?,
                    target: r.get("target")?,
                    idempotency_key: r.get("idempotency_key")?,
                    event: r.get("event")?,
                    lead_id: r.get("lead_id")?,
                    deal_ref: r.get("deal_ref")?,
                    state: r.get("state")?,
                    attempts: r.get("attempts")?,
                    next_at: r.get("next_at")?,
                    last_error: r.get("last_error")?,
                    done_at: r.get("done_at")?,
                    body: r.get("body")?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Puts a parked item back in the queue (an operator fixed the CRM).
    pub async fn outbox_requeue(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        self.with(move |c| {
            let parked = c.execute(
                "UPDATE outbox SET state = 'pending', next_at = ?2, created_at = ?2,
                        claimed_by = NULL, lease_until = NULL
                  WHERE id = ?1 AND state = 'failed'",
                params![id, now_ms],
            )?;
            // One waiting out its backoff, not in flight: due now.
            let waiting = c.execute(
                "UPDATE outbox SET next_at = ?2
                  WHERE id = ?1 AND state = 'pending' AND next_at > ?2
                    AND (lease_until IS NULL OR lease_until <= ?2)",
                params![id, now_ms],
            )?;
            Ok(parked + waiting == 1)
        })
        .await
    }
}
