//! Durable state: the embedded SQLite database (SPEC section 8; PostgreSQL
//! joins behind the same interface with the leads pipeline).

use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

use crate::calls::CallRecord;
use crate::clock::Clock;
use crate::tracking::pools::{AssignmentRow, Visit};

mod decide;
pub mod leads;
pub mod outbox;
pub mod rows;

async fn migrate(db: &SqlitePool) -> Result<(), StoreError> {
    let mut conn = db.acquire().await?;
    let done: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let applied = async {
            sqlx::raw_sql(sql).execute(&mut *conn).await?;
            sqlx::raw_sql(&format!("PRAGMA user_version = {}", i + 1))
                .execute(&mut *conn)
                .await
        }
        .await;
        match applied {
            Ok(_) => {
                sqlx::query("COMMIT").execute(&mut *conn).await?;
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(e.into());
            }
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("storage: {0}")]
    Query(#[from] sqlx::Error),
    #[error("storage: creating {dir}: {source}")]
    Dir { dir: String, source: std::io::Error },
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("storage: {0}")]
    Thread(String),
}

#[derive(Clone)]
pub struct Store {
    db: SqlitePool,
    /// The decision thread: one at a time in this process (SPEC L-6).
    decider: std::sync::mpsc::Sender<decide::Batch>,
    install_id: std::sync::Arc<str>,
    outbox_ready: std::sync::Arc<tokio::sync::Notify>,
    /// Unix time for what the store stamps (outbox due times).
    clock: Clock,
    /// Random per process: which open calls are this run's.
    run_id: std::sync::Arc<str>,
}

/// Schema changes, in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_pools.sql"),
    include_str!("../../migrations/sqlite/0002_leads.sql"),
    include_str!("../../migrations/sqlite/0003_deal_title_index.sql"),
    include_str!("../../migrations/sqlite/0004_lead_indexes_by_accepted.sql"),
    include_str!("../../migrations/sqlite/0005_crm_outbox.sql"),
    include_str!("../../migrations/sqlite/0006_open_calls.sql"),
];

impl Store {
    /// Opens (creating it and its directory if needed) `sqlite:<path>`,
    /// on the system clock.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with_clock(url, Clock::system()).await
    }

    pub async fn open_with_clock(url: &str, clock: Clock) -> Result<Store, StoreError> {
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
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a commit survives the process dying (kill -9);
            // only an OS crash may lose the last ones.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let db = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        migrate(&db).await?;
        let install_id: String =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'install_id'")
                .fetch_one(&db)
                .await?;
        let file = path.split('?').next().unwrap_or(path);
        let run_id: String = (0..16)
            .map(|_| char::from(b"0123456789abcdef"[fastrand::usize(..16)]))
            .collect();
        let decider = decide::start(
            std::path::Path::new(file),
            install_id.clone(),
            run_id.clone(),
            clock.clone(),
        )?;
        Ok(Store {
            db,
            decider,
            install_id: install_id.into(),
            outbox_ready: Default::default(),
            clock,
            run_id: run_id.into(),
        })
    }

    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// Calls that an earlier run saw start and never recorded: a crash
    /// cut them short. Oldest first.
    pub async fn interrupted_calls(&self) -> Result<Vec<CallRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT call_id, invite_at, info FROM open_calls WHERE run_id <> ?1
              ORDER BY invite_at, call_id",
        )
        .bind(&*self.run_id)
        .fetch_all(&self.db)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let info: String = r.try_get("info")?;
            out.push(CallRecord::interrupted(
                r.try_get("call_id")?,
                // A row this build cannot read still is a call.
                serde_json::from_str(&info).unwrap_or_default(),
                r.try_get::<i64, _>("invite_at")?.max(0) as u64,
            ));
        }
        Ok(out)
    }

    /// Runs SQL text as it is (benchmarks seed stores with it).
    pub async fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        sqlx::raw_sql(sql).execute(&self.db).await?;
        Ok(())
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
