//! Pool numbers and the visits holding them (SPEC T-1) in SQLite.

use sqlx::Row;

use super::SqliteStore;
use crate::store::StoreError;
use crate::tracking::pools::{AssignmentRow, Visit};

impl SqliteStore {
    /// Writes a number's state unless the store already has a newer one.
    pub async fn save_assignment(&self, row: &AssignmentRow) -> Result<(), StoreError> {
        let visit = row
            .visit
            .as_ref()
            .map(|v| serde_json::to_string(&v.fields).unwrap_or_default());
        sqlx::query(
            "INSERT INTO pool_assignments (number, pool, visit_id, visit, touched_at, version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(number) DO UPDATE SET
                pool = excluded.pool, visit_id = excluded.visit_id, visit = excluded.visit,
                touched_at = excluded.touched_at, version = excluded.version
             WHERE excluded.version > pool_assignments.version",
        )
        .bind(&row.number)
        .bind(&row.pool)
        .bind(row.visit.as_ref().map(|v| v.id.as_str()))
        .bind(visit)
        .bind(row.touched_at as i64)
        .bind(row.version as i64)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    pub async fn load_assignments(&self) -> Result<Vec<AssignmentRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT number, pool, visit_id, visit, touched_at, version FROM pool_assignments",
        )
        .fetch_all(&self.db)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let visit_id: Option<String> = r.try_get("visit_id")?;
            let fields: Option<String> = r.try_get("visit")?;
            let visit = visit_id.map(|id| Visit {
                id,
                // A row this build cannot read is a visit without data,
                // not a reason to refuse to start.
                fields: fields
                    .and_then(|f| serde_json::from_str(&f).ok())
                    .unwrap_or_default(),
            });
            out.push(AssignmentRow {
                number: r.try_get("number")?,
                pool: r.try_get("pool")?,
                visit,
                touched_at: r.try_get::<i64, _>("touched_at")?.max(0) as u64,
                version: r.try_get::<i64, _>("version")?.max(0) as u64,
            });
        }
        Ok(out)
    }
}
