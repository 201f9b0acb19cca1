//! The CRM outbox in the store (SPEC C-5): items are inserted inside the
//! decision's transaction (`decide.rs`); the worker takes the due ones
//! and settles each attempt.

use serde_json::{json, Value};
use sqlx::Row;

use super::rows::OutboxRow;
use super::{Store, StoreError};
use crate::crm::metrics::Depth;
use crate::crm::outbox::Target;

/// Delivered items are kept this long (for the lead log), then deleted.
const KEEP_DONE_MS: i64 = 7 * 24 * 3_600_000;

/// An item ready to be attempted.
#[derive(Clone, Debug)]
pub struct DueItem {
    pub id: i64,
    pub target: Target,
    pub key: String,
    pub event: String,
    pub body: String,
    pub attempts: u32,
    pub created_at: i64,
    pub deal_ref: Option<i64>,
    /// The CRM's id of `deal_ref`, once its deal.create was answered.
    pub crm_deal_id: Option<String>,
    /// Whether `deal_ref`'s deal was (or is being) created through the
    /// outbox; deals made before the webhook was configured were not, and
    /// are named by siptrack's id.
    pub deal_created_here: bool,
}

impl DueItem {
    pub fn is_deal_create(&self) -> bool {
        self.event == "deal.create"
    }

    /// The body as sent: actions on a deal carry the CRM's `deal_id`.
    /// None while that id is not known.
    pub fn body_to_send(&self) -> Option<String> {
        let (Some(deal), false) = (self.deal_ref, self.is_deal_create()) else {
            return Some(self.body.clone());
        };
        let id = match (&self.crm_deal_id, self.deal_created_here) {
            (Some(id), _) => id.clone(),
            (None, false) => deal.to_string(),
            (None, true) => return None,
        };
        let mut v: Value = serde_json::from_str(&self.body).ok()?;
        v["deal_id"] = json!(id);
        Some(v.to_string())
    }
}

/// How an attempt is settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settle {
    Done {
        /// For a deal.create: (siptrack's deal, the CRM's id).
        crm_deal: Option<(i64, String)>,
    },
    Retry {
        error: String,
        next_at: i64,
    },
    Park {
        error: String,
    },
}

impl Store {
    /// This installation's prefix of idempotency keys.
    pub fn install_id(&self) -> &str {
        &self.install_id
    }

    /// Wakes the delivery worker; signalled after every commit that
    /// queued CRM requests.
    pub fn outbox_ready(&self) -> &tokio::sync::Notify {
        &self.outbox_ready
    }

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
        if done.rows_affected() == 1 {
            self.outbox_ready.notify_one();
        }
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(event: &str, crm: Option<&str>, created_here: bool) -> DueItem {
        DueItem {
            id: 1,
            target: Target::Lead,
            key: "k".into(),
            event: event.into(),
            body: r#"{"event":"x","id":"5"}"#.into(),
            attempts: 0,
            created_at: 0,
            deal_ref: Some(12),
            crm_deal_id: crm.map(str::to_string),
            deal_created_here: created_here,
        }
    }

    #[test]
    fn actions_carry_the_crms_deal_id_once_known() {
        let sent = |d: DueItem| {
            d.body_to_send()
                .map(|b| serde_json::from_str::<Value>(&b).expect("json"))
        };
        assert!(sent(due("deal.create", None, true))
            .expect("create")
            .get("deal_id")
            .is_none());
        assert_eq!(
            sent(due("deal.task", Some("CRM-9"), true)).expect("known")["deal_id"],
            "CRM-9"
        );
        assert_eq!(
            sent(due("deal.comment", None, false)).expect("older deal")["deal_id"],
            "12"
        );
        assert!(
            sent(due("deal.task", None, true)).is_none(),
            "waits for the create's answer"
        );
    }
}
