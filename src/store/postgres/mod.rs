//! The PostgreSQL store (SPEC section 8): several siptrack nodes share one
//! database. One driver, `postgres` (the synchronous face of
//! tokio-postgres), on a small pool of connections (`pool.rs`) used on
//! tokio's blocking threads, as SQLite's connection is: the recording code
//! (`store/record.rs`) is synchronous over a `Ledger`, and runs here in
//! one transaction per batch (`decide.rs`). Lists (`leads.rs`), the outbox
//! (`outbox.rs`) and pools (`pools.rs`) use the same pool. Migrations
//! (migrations/postgres/) run at open, under an advisory lock so that
//! nodes starting together apply each once.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::{runs, StoreError};
use crate::calls::{AdoptedCall, CallRecord};
use crate::clock::Clock;

mod decide;
mod leads;
mod node_hold;
mod outbox;
mod pool;
mod pools;

pub use node_hold::{node_key, PgNodeHold};
use pool::{Conn, Pool};

/// Schema changes, in order; `schema_migrations` holds those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/postgres/0001_schema.sql"),
    include_str!("../../../migrations/postgres/0002_outbox_leases.sql"),
    include_str!("../../../migrations/postgres/0003_call_recording.sql"),
    include_str!("../../../migrations/postgres/0004_note_recordings.sql"),
    include_str!("../../../migrations/postgres/0005_console_indexes.sql"),
    include_str!("../../../migrations/postgres/0006_open_dialogs.sql"),
    include_str!("../../../migrations/postgres/0007_kept_dialogs.sql"),
    include_str!("../../../migrations/postgres/0008_outbox_touched.sql"),
    include_str!("../../../migrations/postgres/0009_lead_channel.sql"),
    include_str!("../../../migrations/postgres/0010_lead_name_key.sql"),
    include_str!("../../../migrations/postgres/0011_calls_end_at.sql"),
    include_str!("../../../migrations/postgres/0012_leads_call_id.sql"),
    include_str!("../../../migrations/postgres/0013_calls_recording_base.sql"),
];

/// Any constant: the key of the advisory lock migrations run under.
const MIGRATION_LOCK: i64 = 0x5349_5054_5241_434b; // "SIPTRACK"

/// How the store talks to the server (`storage.pool_size`,
/// `storage.statement_timeout_ms`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgOptions {
    pub pool_size: usize,
    pub statement_timeout_ms: u64,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 8,
            statement_timeout_ms: 5_000,
        }
    }
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

#[derive(Clone)]
pub struct PgStore {
    pool: Arc<Pool>,
    install_id: Arc<str>,
    /// Signs recording links: the same on every node of the database.
    link_key: Arc<[u8]>,
    /// This process's run (`runs::new_run`): which open calls are its own.
    run_id: Arc<str>,
    earlier_run_id: Arc<str>,
    node: Arc<str>,
    clock: Clock,
    /// How long one operation may take, waiting for a connection
    /// included, before it counts as failed (see [`PgStore::with`]).
    op_limit: Duration,
    /// When the outbox was last un-stepped (`store::outbox::unstep_due`).
    unstepped_at: Arc<std::sync::atomic::AtomicI64>,
}

/// Returns how many migrations the database had before (more than
/// [`MIGRATIONS`]: a newer siptrack made it, see `newer_schema`).
fn apply_migrations(conn: &mut Conn) -> Result<i64, postgres::Error> {
    let mut tx = conn.client.transaction()?;
    // Held to the end of the transaction: a second node waits here, then
    // finds the migrations applied (even the table's creation races
    // without it).
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")?;
    let done: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )?
        .get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&(i as i64 + 1)],
        )?;
    }
    tx.commit()?;
    Ok(done)
}

impl PgStore {
    /// Connects to `postgres://…`, applies what migrations are missing and
    /// reads the installation id. Fails when the server cannot be reached.
    pub async fn open(
        url: &str,
        opts: &PgOptions,
        node: &str,
        clock: Clock,
    ) -> Result<PgStore, StoreError> {
        let open_err = |e: StoreError| StoreError::OpenPostgres {
            url: redact(url),
            reason: e.to_string(),
        };
        let mut config = client_config(url)?;
        // Keepalives: a server host that died without a word (no RST)
        // would leave a connection waiting for its answer forever.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .options(&format!(
                "-c statement_timeout={}",
                opts.statement_timeout_ms
            ));
        let pool = Arc::new(Pool::new(config, opts.pool_size));
        let (install_id, link_key, migrated) = {
            let pool = pool.clone();
            tokio::task::spawn_blocking(move || {
                pool.with(|conn| {
                    let migrated = apply_migrations(conn)?;
                    let mut meta = |key: &str| -> Result<String, postgres::Error> {
                        Ok(conn
                            .client
                            .query_one("SELECT value FROM meta WHERE key = $1", &[&key])?
                            .get(0))
                    };
                    Ok((meta("install_id")?, meta("recording_link_key")?, migrated))
                })
            })
            .await
            .map_err(|e| StoreError::Thread(e.to_string()))?
            .map_err(open_err)?
        };
        if let Some(reason) = crate::store::sqlite::newer_schema(migrated, MIGRATIONS.len()) {
            return Err(StoreError::OpenPostgres {
                url: redact(url),
                reason,
            });
        }
        Ok(PgStore {
            pool,
            install_id: install_id.into(),
            // The hex text itself is the key, as SQLite's.
            link_key: link_key.into_bytes().into(),
            run_id: runs::new_run(node).into(),
            earlier_run_id: runs::earlier_run(node).into(),
            node: node.into(),
            clock,
            op_limit: pool::CHECKOUT_WAIT + 2 * Duration::from_millis(opts.statement_timeout_ms),
            unstepped_at: Default::default(),
        })
    }

    pub fn install_id(&self) -> &Arc<str> {
        &self.install_id
    }

    pub fn link_key(&self) -> &Arc<[u8]> {
        &self.link_key
    }

    /// Holds this node's name for as long as the value lives (see
    /// `store::node_hold`).
    pub async fn hold_node(
        &self,
        policy: crate::store::node_hold::HoldPolicy,
    ) -> Result<PgNodeHold, StoreError> {
        let (pool, node) = (self.pool.clone(), self.node.clone());
        tokio::task::spawn_blocking(move || node_hold::hold(pool.config(), &node, policy))
            .await
            .map_err(|e| StoreError::Thread(e.to_string()))?
    }

    /// Runs `f` on a connection of the pool, on a blocking thread.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = self.pool.clone();
        let work = tokio::task::spawn_blocking(move || pool.with(|c| Ok(f(c)?)));
        // statement_timeout is the server's own: a server that stopped
        // answering (a frozen process or VM, a network that drops
        // everything) never sends it, and the caller would wait forever
        // with its calls in memory only (trial, 2026-12-01: 40 calls lost
        // to a kill -9 while /healthz said ok). Past the limit the
        // operation fails, so the lead pipeline puts its calls in the
        // journal and /healthz reports it; the blocking thread is left to
        // finish when the server answers (what it then commits is what a
        // replay of the journal finds recorded already).
        match tokio::time::timeout(self.op_limit, work).await {
            Ok(joined) => joined.map_err(|e| StoreError::Thread(e.to_string()))?,
            Err(_) => Err(StoreError::Thread(format!(
                "PostgreSQL did not answer within {} s",
                self.op_limit.as_secs()
            ))),
        }
    }

    /// An answered call still open, with its dialog (another node may
    /// have set it up); None when there is none or its dialog is
    /// unreadable.
    pub async fn open_dialog(&self, call_id: &str) -> Result<Option<AdoptedCall>, StoreError> {
        let call_id = call_id.to_string();
        self.with(move |c| {
            let row = c.client.query_opt(
                "SELECT info, invite_at, answer_at, dialog FROM open_calls
                  WHERE call_id = $1 AND dialog IS NOT NULL AND answer_at IS NOT NULL",
                &[&call_id],
            )?;
            Ok(row.and_then(|r| {
                crate::store::adopted(r.get::<_, &str>(0), r.get(1), r.get(2), r.get::<_, &str>(3))
            }))
        })
        .await
    }

    /// Calls that an earlier run saw start and never recorded: a crash
    /// cut them short. Oldest first. Only this node's: another node's
    /// open calls are live there.
    pub async fn interrupted_calls(
        &self,
        keep_dialogs_ms: u64,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let (run_id, node) = (self.run_id.to_string(), self.node.clone());
        let kept_since = self.clock.unix_ms().saturating_sub(keep_dialogs_ms) as i64;
        self.with(move |c| {
            c.client.execute(
                "DELETE FROM open_calls WHERE recorded_at < $1",
                &[&kept_since],
            )?;
            let rows = c.client.query(
                "SELECT call_id, invite_at, info, run_id, answer_at FROM open_calls
                  WHERE run_id <> $1 AND recorded_at IS NULL ORDER BY invite_at, call_id",
                &[&run_id],
            )?;
            Ok(rows
                .iter()
                .filter(|r| runs::cut_short(r.get(3), &run_id, &node))
                .map(|r| {
                    let info: String = r.get(2);
                    CallRecord::interrupted(
                        r.get(0),
                        // A row this build cannot read still is a call.
                        serde_json::from_str(&info).unwrap_or_default(),
                        r.get::<_, i64>(1).max(0) as u64,
                        r.get::<_, Option<i64>>(4).map(|a| a.max(0) as u64),
                    )
                })
                .collect())
        })
        .await
    }

    /// Runs SQL text as it is (tests and benchmarks age or seed stores).
    pub async fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        let sql = sql.to_string();
        self.with(move |c| c.client.batch_execute(&sql)).await
    }
}

/// Whether the database at `url` holds siptrack's tables (its `meta`
/// table). The commands that only read (`leads`, `recording-url`) ask
/// first: opening the store applies the migrations, which would turn a
/// wrong URL into a new, empty siptrack database (trial, 2026-12-01).
/// Blocking: call it outside the async runtime.
pub fn has_schema(url: &str) -> Result<bool, StoreError> {
    // What the server said (`FATAL 28P01 …`), as `run` says it (trial,
    // 2026-12-03: these commands said "db error").
    let failed = |e: postgres::Error| StoreError::OpenPostgres {
        url: redact(url),
        reason: crate::store::postgres_reason(&e),
    };
    let mut client = match connect(&client_config(url)?) {
        Ok(c) => c,
        Err(StoreError::Postgres(e)) => return Err(failed(e)),
        Err(StoreError::Thread(reason)) => {
            return Err(StoreError::OpenPostgres {
                url: redact(url),
                reason,
            })
        }
        Err(e) => return Err(e),
    };
    let row = client
        .query_one("SELECT to_regclass('meta') IS NOT NULL", &[])
        .map_err(failed)?;
    Ok(row.get(0))
}

/// How long a new connection may take to be ready, its login included:
/// the driver's connect timeout covers the TCP connect only, and a server
/// that accepts and never answers (a hung PostgreSQL, another program on
/// its port) held `run`, `leads` and `recording-url` for good (trial,
/// 2026-12-03).
pub(crate) const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// A connection on `config`, ready within [`CONNECT_WITHIN`]. The
/// attempt runs on a thread of its own, left to end by itself when the
/// server never answers.
pub(crate) fn connect(config: &postgres::Config) -> Result<postgres::Client, StoreError> {
    let config = config.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("pg-connect".into())
        .spawn(move || {
            let _ = tx.send(config.connect(postgres::NoTls));
        })
        .map_err(|e| StoreError::Thread(format!("starting a connection: {e}")))?;
    match rx.recv_timeout(CONNECT_WITHIN) {
        Ok(r) => r.map_err(StoreError::Postgres),
        Err(_) => Err(StoreError::Thread(format!(
            "the database took the connection but did not answer within {} s (is it PostgreSQL, and is it running?)",
            CONNECT_WITHIN.as_secs()
        ))),
    }
}

/// `url` as a connection config, with the connect timeout every
/// connection of siptrack's has.
fn client_config(url: &str) -> Result<postgres::Config, StoreError> {
    let mut config = postgres::Config::from_str(url).map_err(|e| StoreError::OpenPostgres {
        url: redact(url),
        reason: e.to_string(),
    })?;
    config.connect_timeout(Duration::from_secs(5));
    // PostgreSQL's remarks ("relation … already exists, skipping", from
    // the migrations' IF NOT EXISTS at every start) go to the debug log:
    // the driver logged them at INFO, on the stderr of `siptrack leads`,
    // a command that only reads (trial, 2026-12-02).
    config.notice_callback(|n| tracing::debug!(notice = %n.message(), "PostgreSQL notice"));
    Ok(config)
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that takes the connection and never answers is an error
    /// within CONNECT_WITHIN, naming what happened (trial, 2026-12-03:
    /// `leads`, `recording-url` and `run` waited for good).
    #[test]
    fn a_database_that_never_answers_is_an_error_in_time() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let port = silent.local_addr().expect("addr").port();
        let held = std::thread::spawn(move || {
            // Accepted and held open, never a byte.
            let conn = silent.accept();
            std::thread::sleep(CONNECT_WITHIN + Duration::from_secs(2));
            drop(conn);
        });
        let started = std::time::Instant::now();
        let e = has_schema(&format!("postgres://u:secret@127.0.0.1:{port}/db"))
            .expect_err("no answer is no database");
        assert!(started.elapsed() < CONNECT_WITHIN + Duration::from_secs(2));
        let text = e.to_string();
        assert!(text.contains("did not answer within 10 s"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        drop(held);
    }

    #[test]
    fn passwords_are_not_shown() {
        for (url, shown) in [
            (
                "postgres://siptrack:s3cret@db:5432/siptrack",
                "postgres://siptrack:***@db:5432/siptrack",
            ),
            (
                "postgres://siptrack@db/siptrack",
                "postgres://siptrack@db/siptrack",
            ),
            ("postgres://db/siptrack", "postgres://db/siptrack"),
        ] {
            assert_eq!(redact(url), shown);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_opening_together_migrate_once() {
        let url = crate::test_pg::database();
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    PgStore::open(&url, &PgOptions::default(), "n", Clock::system()).await
                })
            })
            .collect();
        let mut ids = Vec::new();
        for o in opens {
            let s = o.await.expect("task").expect("opened");
            ids.push(s.install_id().to_string());
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "one install id: {ids:?}");
    }

    #[tokio::test]
    async fn a_server_that_is_not_there_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let url = format!("postgres://siptrack:pw@127.0.0.1:{port}/siptrack");
        let err = PgStore::open(&url, &PgOptions::default(), "n", Clock::system())
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains(&format!("127.0.0.1:{port}")) && !err.contains("pw@"),
            "{err}"
        );
    }
}
