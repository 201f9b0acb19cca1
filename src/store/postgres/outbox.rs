//! The CRM outbox in PostgreSQL (SPEC C-5), shared by the nodes: a node
//! claims due items with a lease (`FOR UPDATE SKIP LOCKED`, so nodes
//! claiming together skip each other's rows instead of waiting), delivers
//! them and settles them; a node that died leaves its claims to run out,
//! then another takes them over. Only the lease holder settles.

use super::PgStore;
use crate::crm::metrics::Depth;
use crate::crm::outbox::Target;
use crate::store::outbox::{unstep_due, DueItem, Settle, CLOCK_STEP_MS, KEEP_DONE_MS, UNSTEP_SQL};
use crate::store::rows::OutboxRow;
use crate::store::StoreError;

impl PgStore {
    /// Claims for `node` until `now_ms + lease_ms` up to `limit` pending
    /// items that are due, not claimed by another node's live lease (a
    /// node's own claims are an earlier run's: its worker settles a round
    /// before it claims again), and first of their
    /// order key among the pending ones (an item in flight is pending, so
    /// a deal's next item waits until it is settled). Oldest first.
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
            if unstep {
                let sql = UNSTEP_SQL.replace("?1", "$1").replace("?2", "$2");
                c.client.execute(sql.as_str(), &[&now_ms, &CLOCK_STEP_MS])?;
            }
            let rows = c.client.query(
                "WITH due AS (
                    SELECT o.id FROM outbox o
                     WHERE o.state = 'pending' AND o.next_at <= $1
                       AND (o.lease_until IS NULL OR o.lease_until <= $1 OR o.claimed_by = $2)
                       AND NOT EXISTS (SELECT 1 FROM outbox p
                                        WHERE p.order_key = o.order_key AND p.id < o.id
                                          AND p.state = 'pending')
                     ORDER BY o.id LIMIT $4
                     FOR UPDATE SKIP LOCKED)
                 UPDATE outbox o SET claimed_by = $2, lease_until = $1 + $3, touched_at = $1
                   FROM due WHERE o.id = due.id
                 RETURNING o.id, o.target, o.idempotency_key, o.event, o.body, o.attempts,
                           o.created_at, o.deal_ref,
                           (SELECT d.crm_id FROM deals d WHERE d.id = o.deal_ref),
                           EXISTS (SELECT 1 FROM outbox x
                                    WHERE x.order_key = o.order_key AND x.event = 'deal.create')",
                &[&now_ms, &node, &lease_ms, &limit],
            )?;
            let mut items: Vec<DueItem> = rows
                .iter()
                .filter_map(|r| {
                    let id: i64 = r.get(0);
                    let target: String = r.get(1);
                    let Some(target) = Target::parse(&target) else {
                        tracing::error!(
                            id,
                            target,
                            "outbox item with an unknown target; left pending"
                        );
                        return None;
                    };
                    Some(DueItem {
                        id,
                        target,
                        key: r.get(2),
                        event: r.get(3),
                        body: r.get(4),
                        attempts: r.get::<_, i64>(5).max(0) as u32,
                        created_at: r.get(6),
                        deal_ref: r.get(7),
                        crm_deal_id: r.get(8),
                        deal_created_here: r.get(9),
                    })
                })
                .collect();
            items.sort_by_key(|i| i.id);
            Ok(items)
        })
        .await
    }

    /// The earliest time a pending item is due, if any.
    pub async fn outbox_next_due(&self) -> Result<Option<i64>, StoreError> {
        self.with(|c| {
            Ok(c.client
                .query_one(
                    "SELECT MIN(GREATEST(next_at, COALESCE(lease_until, 0))) FROM outbox
                      WHERE state = 'pending'",
                    &[],
                )?
                .get(0))
        })
        .await
    }

    /// Records the attempts' results in one transaction; results for
    /// items `node` no longer holds (its lease ran out and another node
    /// took them) are left out.
    pub async fn outbox_settle(
        &self,
        node: &str,
        results: &[(i64, Settle)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (node, results) = (node.to_string(), results.to_vec());
        self.with(move |c| {
            let mut tx = c.client.transaction()?;
            for (id, s) in &results {
                let n = match s {
                    Settle::Done { .. } => tx.execute(
                        "UPDATE outbox SET state = 'done', done_at = $3, attempts = attempts + 1,
                                last_error = '', claimed_by = NULL, lease_until = NULL
                          WHERE id = $1 AND claimed_by = $2",
                        &[id, &node, &now_ms],
                    )?,
                    Settle::Retry { error, next_at, .. } => {
                        tx.execute(
                            "UPDATE outbox SET attempts = attempts + 1, last_error = $3,
                                    next_at = $4, claimed_by = NULL, lease_until = NULL, touched_at = $5
                              WHERE id = $1 AND claimed_by = $2",
                            &[id, &node, error, next_at, &now_ms],
                        )?
                    }
                    Settle::Park { error, .. } => {
                        tx.execute(
                            "UPDATE outbox SET state = 'failed', attempts = attempts + 1,
                                    last_error = $3, done_at = $4,
                                    claimed_by = NULL, lease_until = NULL
                              WHERE id = $1 AND claimed_by = $2",
                            &[id, &node, error, &now_ms],
                        )?
                    }
                };
                if let (1, Some((deal, crm_id))) = (n, s.crm_deal()) {
                    tx.execute(
                        "UPDATE deals SET crm_id = $2 WHERE id = $1",
                        &[deal, crm_id],
                    )?;
                }
            }
            tx.commit()
        })
        .await
    }

    /// Deletes delivered items older than a week.
    pub async fn outbox_purge(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.with(move |c| {
            c.client.execute(
                "DELETE FROM outbox WHERE state = 'done' AND done_at < $1",
                &[&(now_ms - KEEP_DONE_MS)],
            )
        })
        .await
    }

    pub async fn outbox_depth(&self) -> Result<Depth, StoreError> {
        self.with(|c| {
            let r = c.client.query_one(
                "SELECT COUNT(*) FILTER (WHERE state = 'pending'),
                        COUNT(*) FILTER (WHERE state = 'failed') FROM outbox",
                &[],
            )?;
            Ok(Depth {
                pending: r.get(0),
                failed: r.get(1),
            })
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
            let rows = c.client.query(
                "SELECT id, created_at, target, idempotency_key, event, lead_id, deal_ref, state,
                        attempts, next_at, last_error, done_at, body
                   FROM outbox WHERE ($1::text IS NULL OR state = $1) ORDER BY id DESC LIMIT $2",
                &[&state, &limit],
            )?;
            Ok(rows
                .iter()
                .map(|r| OutboxRow {
                    id: r.get(0),
                    created_at: r.get(1),
                    target: r.get(2),
                    idempotency_key: r.get(3),
                    event: r.get(4),
                    lead_id: r.get(5),
                    deal_ref: r.get(6),
                    state: r.get(7),
                    attempts: r.get(8),
                    next_at: r.get(9),
                    last_error: r.get(10),
                    done_at: r.get(11),
                    body: r.get(12),
                })
                .collect())
        })
        .await
    }

    /// Puts a parked item back in the queue (an operator fixed the CRM).
    pub async fn outbox_requeue(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        self.with(move |c| {
            let parked = c.client.execute(
                "UPDATE outbox SET state = 'pending', next_at = $2, created_at = $2,
                        claimed_by = NULL, lease_until = NULL
                  WHERE id = $1 AND state = 'failed'",
                &[&id, &now_ms],
            )?;
            // One waiting out its backoff, not in flight: due now.
            let waiting = c.client.execute(
                "UPDATE outbox SET next_at = $2
                  WHERE id = $1 AND state = 'pending' AND next_at > $2
                    AND (lease_until IS NULL OR lease_until <= $2)",
                &[&id, &now_ms],
            )?;
            Ok(parked + waiting == 1)
        })
        .await
    }
}
