//! Pool numbers and the visits holding them (SPEC T-1) in PostgreSQL.

use super::PgStore;
use crate::store::StoreError;
use crate::tracking::pools::{AssignmentRow, Visit};

impl PgStore {
    /// Writes a number's state unless the store already has a newer one.
    pub async fn save_assignment(&self, row: &AssignmentRow) -> Result<(), StoreError> {
        let row = row.clone();
        self.with(move |c| {
            let visit = row
                .visit
                .as_ref()
                .map(|v| serde_json::to_string(&v.fields).unwrap_or_default());
            c.client.execute(
                "INSERT INTO pool_assignments (number, pool, visit_id, visit, touched_at, version)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (number) DO UPDATE SET
                    pool = excluded.pool, visit_id = excluded.visit_id, visit = excluded.visit,
                    touched_at = excluded.touched_at, version = excluded.version
                 WHERE excluded.version > pool_assignments.version",
                &[
                    &row.number,
                    &row.pool,
                    &row.visit.as_ref().map(|v| v.id.as_str()),
                    &visit,
                    &(row.touched_at as i64),
                    &(row.version as i64),
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn load_assignments(&self) -> Result<Vec<AssignmentRow>, StoreError> {
        self.with(|c| {
            let rows = c.client.query(
                "SELECT number, pool, visit_id, visit, touched_at, version FROM pool_assignments",
                &[],
            )?;
            Ok(rows
                .iter()
                .map(|r| {
                    let visit_id: Option<String> = r.get(2);
                    let fields: Option<String> = r.get(3);
                    AssignmentRow {
                        number: r.get(0),
                        pool: r.get(1),
                        visit: visit_id.map(|id| Visit {
                            id,
                            // A row this build cannot read is a visit
                            // without data, not a reason to refuse to start.
                            fields: fields
                                .and_then(|f| serde_json::from_str(&f).ok())
                                .unwrap_or_default(),
                        }),
                        touched_at: r.get::<_, i64>(4).max(0) as u64,
                        version: r.get::<_, i64>(5).max(0) as u64,
                    }
                })
                .collect())
        })
        .await
    }
}
