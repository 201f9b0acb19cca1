//! The embedded SQLite store (SPEC section 8): a pool of connections for
//! lists, pools and the outbox, and the decision thread (`decide.rs`)
//! for recording.

use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

use super::StoreError;
use crate::calls::CallRecord;
use crate::clock::Clock;

mod decide;
mod leads;
mod outbox;
mod pools;

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

#[derive(Clone)]
pub struct SqliteStore {
    db: SqlitePool,
    /// The decision thread: one at a time in this process (SPEC L-6).
    decider: std::sync::mpsc::Sender<decide::Batch>,
    install_id: std::sync::Arc<str>,
    /// Random per process: which open calls are this run's.
    run_id: std::sync::Arc<str>,
}

/// Schema changes, in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/sqlite/0001_pools.sql"),
    include_str!("../../../migrations/sqlite/0002_leads.sql"),
    include_str!("../../../migrations/sqlite/0003_deal_title_index.sql"),
    include_str!("../../../migrations/sqlite/0004_lead_indexes_by_accepted.sql"),
    include_str!("../../../migrations/sqlite/0005_crm_outbox.sql"),
    include_str!("../../../migrations/sqlite/0006_open_calls.sql"),
];

impl SqliteStore {
    /// Opens (creating it and its directory if needed) `sqlite:<path>`;
    /// `clock` stamps what the decision thread writes.
    pub async fn open(url: &str, clock: Clock) -> Result<SqliteStore, StoreError> {
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
            clock,
        )?;
        Ok(SqliteStore {
            db,
            decider,
            install_id: install_id.into(),
            run_id: run_id.into(),
        })
    }

    /// This database's prefix of idempotency keys.
    pub fn install_id(&self) -> &std::sync::Arc<str> {
        &self.install_id
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
}
