//! Durable state: the embedded SQLite database (SPEC section 8; PostgreSQL
//! joins behind the same interface with the leads pipeline).

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use crate::tracking::pools::{AssignmentRow, Visit};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("storage: {0}")]
    Query(#[from] sqlx::Error),
    #[error("storage: creating {dir}: {source}")]
    Dir { dir: String, source: std::io::Error },
}

#[derive(Clone)]
pub struct Store {
    db: SqlitePool,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS pool_assignments (
    number     TEXT PRIMARY KEY,
    pool       TEXT NOT NULL,
    visit_id   TEXT,
    visit      TEXT,
    touched_at INTEGER NOT NULL,
    version    INTEGER NOT NULL
)";

impl Store {
    /// Opens (creating it and its directory if needed) `sqlite:<path>`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                    dir: dir.display().to_string(),
                    source,
                })?;
            }
        }
        let open_err = |source| StoreError::Open {
            url: url.to_string(),
            source,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let db = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::query(SCHEMA).execute(&db).await?;
        Ok(Store { db })
    }

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
