//! Pool numbers and the visits holding them (SPEC T-1) in PostgreSQL,
//! where several nodes hand out numbers of the same pools: a number is
//! granted in the database (`grant_number`), in one transaction under one
//! advisory lock, by the same pure rule as on one node
//! (`tracking::pools::Pools::touch`) over the state every node wrote, so
//! two nodes never give one number to two visits at once.

use postgres::GenericClient;

use super::PgStore;
use crate::store::StoreError;
use crate::tracking::pools::{AssignmentRow, Granted, PoolConfig, Pools, Visit};

/// The advisory lock every grant takes ("POOLS").
const POOL_LOCK: i64 = 0x0050_4f4f_4c53;

fn save(c: &mut impl GenericClient, row: &AssignmentRow) -> Result<(), postgres::Error> {
    let visit = row
        .visit
        .as_ref()
        .map(|v| serde_json::to_string(&v.fields).unwrap_or_default());
    c.execute(
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
}

fn load(c: &mut impl GenericClient) -> Result<Vec<AssignmentRow>, postgres::Error> {
    let rows = c.query(
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
                    // A row this build cannot read is a visit without
                    // data, not a reason to refuse to start.
                    fields: fields
                        .and_then(|f| serde_json::from_str(&f).ok())
                        .unwrap_or_default(),
                }),
                touched_at: r.get::<_, i64>(4).max(0) as u64,
                version: r.get::<_, i64>(5).max(0) as u64,
            }
        })
        .collect())
}

impl PgStore {
    /// Writes a number's state unless the store already has a newer one.
    pub async fn save_assignment(&self, row: &AssignmentRow) -> Result<(), StoreError> {
        let row = row.clone();
        self.with(move |c| save(&mut c.client, &row)).await
    }

    pub async fn load_assignments(&self) -> Result<Vec<AssignmentRow>, StoreError> {
        self.with(|c| load(&mut c.client)).await
    }

    /// A page view of `visit` at `now` (Unix ms), decided over what every
    /// node granted: the number it keeps or gets, written before the
    /// answer. None when no pool's segment matches it.
    pub async fn grant_number(
        &self,
        configs: Vec<PoolConfig>,
        visit: Visit,
        now: u64,
    ) -> Result<Option<Granted>, StoreError> {
        self.with(move |c| {
            let mut tx = c.client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&POOL_LOCK])?;
            let mut pools = Pools::new(configs);
            pools.restore(load(&mut tx)?);
            let granted = pools.touch(visit, now);
            if let Some(g) = &granted {
                save(&mut tx, &g.row)?;
            }
            tx.commit()?;
            Ok(granted)
        })
        .await
    }
}
