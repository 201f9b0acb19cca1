//! The CRM outbox in SQLite (SPEC C-5): items are inserted inside the
//! decision's transaction (`decide.rs`); the worker takes the due ones
//! and settles each attempt.

use sqlx::Row;

use super::SqliteStore;
use crate::crm::metrics::Depth;
use crate::crm::outbox::Target;
use crate::store::outbox::{DueItem, Settle, KEEP_DONE_MS};
use crate::store::rows::OutboxRow;
use crate::store::StoreError;

impl SqliteStore {
    /// Pending items due by `now_ms` whose earlier items with the same
    /// order key are all settled, oldest first.
    pub async fn outbox_due(&self, now_ms: i64, limit: i64) -> Result<Vec<DueItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.id, o.target, o.idempotency_key, o.event, o.body, o.attempts, o.created_at,
                    o.deal_ref, d.crm_id,
                    EXISTS (SELECT 1 FROM outbox c
                             WHERE c.order_key = o.order_key AND c.event = 'deal.create') AS created_here
               FROM outbox o LEFT JOIN deals d ON d.id = o.deal_ref
              WHERE o.state = 'pending' AND o.next_at <= ?1
                AND NOT EXISTS (SELECT 1 FROM outbox p
                                 WHERE p.order_key = o.order_key AND p.id < o.id
                                   AND p.state = 'pending')
              ORDER BY o.id LIMIT ?2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let target: String = r.try_get(1)?;
            let Some(target) = Target::parse(&target) else {
                tracing::error!(
                    id = r.try_get::<i64, _>(0)?,
                    target,
                    "outbox item with an unknown target; left pending"
                );
                continue;
            };
            out.push(DueItem {
                id: r.try_get(0)?,
                target,
                key: r.try_get(2)?,
                event: r.try_get(3)?,
                body: r.try_get(4)?,
                attempts: r.try_get::<i64, _>(5)?.max(0) as u32,
                created_at: r.try_get(6)?,
                deal_ref: r.try_get(7)?,
                crm_deal_id: r.try_get(8)?,
                deal_created_here: r.try_get(9)?,
            });
        }
        Ok(out)
    }

    /// The earliest time a pending item is due, if any.
    pub async fn outbox_next_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MIN(next_at) FROM outbox WHERE state = 'pending'")
                .fetch_one(&self.db)
                .await?,
        )
    }

    /// Records the attempts' results in one transaction.
    pub async fn outbox_settle(
        &self,
        results: &[(i64, Settle)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.db.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let applied = async {
            for (id, s) in results {
                match s {
                    Settle::Done { crm_deal } => {
                        sqlx::query(
                            "UPDATE outbox SET state = 'done', done_at = ?2,
                                    attempts = attempts + 1, last_error = '' WHERE id = ?1",
                        )
                        .bind(id)
                        .bind(now_ms)
                        .execute(&mut *conn)
                        .await?;
                        if let Some((deal, crm_id)) = crm_deal {
                            sqlx::query("UPDATE deals SET crm_id = ?2 WHERE id = ?1")
                                .bind(deal)
                                .bind(crm_id)
                                .execute(&mut *conn)
                                .await?;
                        }
                    }
                    Settle::Retry { error, next_at } => {
                        sqlx::query(
                            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_at = ?3
                              WHERE id = ?1",
                        )
                        .bind(id)
                        .bind(error)
                        .bind(next_at)
                        .execute(&mut *conn)
                        .await?;
                    }
                    Settle::Park { error } => {
                        sqlx::query(
                            "UPDATE outbox SET state = 'failed', attempts = attempts + 1,
                                    last_error = ?2, done_at = ?3 WHERE id = ?1",
                        )
                        .bind(id)
                        .bind(error)
                        .bind(now_ms)
                        .execute(&mut *conn)
                        .await?;
                    }
                }
            }
            Ok::<(), sqlx::Error>(())
        }
        .await;
        match applied {
            Ok(()) => {
                sqlx::query("COMMIT").execute(&mut *conn).await?;
                Ok(())
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(e.into())
            }
        }
    }

    /// Deletes delivered items older than a week.
    pub async fn outbox_purge(&self, now_ms: i64) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM outbox WHERE state = 'done' AND done_at < ?1")
                .bind(now_ms - KEEP_DONE_MS)
                .execute(&self.db)
                .await?
                .rows_affected(),
        )
    }

    pub async fn outbox_depth(&self) -> Result<Depth, StoreError> {
        let (pending, failed): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE state = 'pending'),
                    (SELECT COUNT(*) FROM outbox WHERE state = 'failed')",
        )
        .fetch_one(&self.db)
        .await?;
        Ok(Depth { pending, failed })
    }

    /// Outbox items, newest first; `state` filters (pending, done, failed).
    pub async fn list_outbox(
        &self,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, created_at, target, idempotency_key, event, lead_id, deal_ref, state,
                    attempts, next_at, last_error, done_at, body
               FROM outbox WHERE (?1 IS NULL OR state = ?1) ORDER BY id DESC LIMIT ?2",
        )
        .bind(state)
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(OutboxRow {
                id: r.try_get("id")?,
                created_at: r.try_get("created_at")?,
                target: r.try_get("target")?,
                idempotency_key: r.try_get("idempotency_key")?,
                event: r.try_get("event")?,
                lead_id: r.try_get("lead_id")?,
                deal_ref: r.try_get("deal_ref")?,
                state: r.try_get("state")?,
                attempts: r.try_get("attempts")?,
                next_at: r.try_get("next_at")?,
                last_error: r.try_get("last_error")?,
                done_at: r.try_get("done_at")?,
                body: r.try_get("body")?,
            });
        }
        Ok(out)
    }

    /// Puts a parked item back in the queue (an operator fixed the CRM).
    pub async fn outbox_requeue(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET state = 'pending', next_at = ?2, created_at = ?2
              WHERE id = ?1 AND state = 'failed'",
        )
        .bind(id)
        .bind(now_ms)
        .execute(&self.db)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
