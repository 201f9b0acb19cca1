//! The embedded SQLite store (SPEC section 8), through rusqlite only: the
//! decision thread (`decide.rs`) records; one more connection, used on
//! blocking threads, serves lists (`leads.rs`), pools (`pools.rs`) and
//! the outbox (`outbox.rs`). Migrations (migrations/sqlite/) run at open.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{node_hold, runs, StoreError};
use crate::calls::{AdoptedCall, CallRecord};
use crate::clock::Clock;

mod decide;
mod leads;
mod outbox;
mod pools;

/// One driver for SQLite: rusqlite. Two connections to the file: the
/// decision thread's (`decide.rs`), and this one for lists, pools and
/// the outbox, used on tokio's blocking threads so that no query runs
/// on the runtime's thread (`siptrack run`'s runtime is the SIP thread's
/// too). WAL lets the two read while the other writes.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// The decision thread: one at a time in this process (SPEC L-6).
    decider: std::sync::mpsc::Sender<decide::Work>,
    install_id: Arc<str>,
    /// Signs recording links (migration 0007): per database, so links
    /// survive restarts.
    link_key: Arc<[u8]>,
    /// This process's run (`runs::new_run`): which open calls are its own.
    run_id: Arc<str>,
    node: Arc<str>,
    /// When dialogs kept for interrupted calls have run out.
    clock: Clock,
    /// The database file (the node lock is beside it).
    file: Arc<Path>,
    /// The file's device and inode as opened (or last written back):
    /// another at the path, or none, means it was replaced or deleted.
    identity: Arc<Mutex<Option<(u64, u64)>>>,
    /// This node's lock file and its open, locked handle, while `run`
    /// holds the name (`store::node_hold`).
    pub(crate) node_lock: node_hold::FileSlot,
    /// The database is in WAL mode: its `-wal` file is there while open.
    in_wal: bool,
    /// When the outbox was last un-stepped (`store::outbox::unstep_due`).
    unstepped_at: Arc<std::sync::atomic::AtomicI64>,
}

/// What `SqliteStore::check_file` found.
#[derive(Debug, PartialEq, Eq)]
pub enum FileCheck {
    /// The file the store has open is at its path.
    Same,
    /// It had been deleted; what the store held was written back there
    /// and the store goes on with that file.
    WrittenBack,
    /// Another file is at the path now (a backup copied over it?): the
    /// store keeps the one it opened, until a restart.
    Replaced,
}

/// `<db>-wal`: where SQLite keeps a WAL database's newest commits.
fn wal_of(db: &Path) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push("-wal");
    name.into()
}

/// Where a restore copies the database before it takes the file's place.
fn restore_copy_of(db: &Path) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(".restoring");
    name.into()
}

fn identity_of(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Opens a connection to the file as every connection of the store is
/// used: WAL, NORMAL (a commit survives the process dying, kill -9; only
/// an OS crash may lose the last ones), and waiting up to 10 s for a
/// writer of another connection or process.
/// How long a statement waits for another writer's lock.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_WAIT)?;
    // Switching a new file to WAL takes an exclusive lock, and SQLite
    // answers SQLITE_BUSY at once, without the busy handler, when another
    // connection is opening it too (a deadlock it avoids by refusing):
    // waited out here, within the busy timeout. Seen as 16 failed opens of
    // 200 in the four-opener test, one of which left it waiting forever.
    let since = std::time::Instant::now();
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && since.elapsed() < BUSY_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => {
                other?;
                break;
            }
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Applies the migrations not applied yet, each in its own IMMEDIATE
/// transaction that first reads `user_version` again: two processes
/// starting together apply each migration once.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let Some(sql) = MIGRATIONS.get(done.max(0) as usize) else {
            return newer_schema(done, MIGRATIONS.len()).map_or(Ok(()), |m| {
                Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                    Some(m),
                ))
            });
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", done + 1)?;
        tx.commit()?;
    }
}

/// A database a newer siptrack made (more migrations applied than this
/// build knows): refused, not run on (trial, 2026-12-02: a downgrade
/// started without a word; a later migration may change what this build
/// writes). The message for it, None when the schema is this build's.
pub(crate) fn newer_schema(applied: i64, known: usize) -> Option<String> {
    (applied > known as i64).then(|| {
        format!(
            "the database has {applied} schema migrations, this siptrack knows {known}: \
             it was made by a newer version; run that version (or a newer one)"
        )
    })
}

/// Schema changes, in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/sqlite/0001_pools.sql"),
    include_str!("../../../migrations/sqlite/0002_leads.sql"),
    include_str!("../../../migrations/sqlite/0003_deal_title_index.sql"),
    include_str!("../../../migrations/sqlite/0004_lead_indexes_by_accepted.sql"),
    include_str!("../../../migrations/sqlite/0005_crm_outbox.sql"),
    include_str!("../../../migrations/sqlite/0006_open_calls.sql"),
    include_str!("../../../migrations/sqlite/0007_call_recording.sql"),
    include_str!("../../../migrations/sqlite/0008_note_recordings.sql"),
    include_str!("../../../migrations/sqlite/0009_console_indexes.sql"),
    include_str!("../../../migrations/sqlite/0010_outbox_leases.sql"),
    include_str!("../../../migrations/sqlite/0011_open_dialogs.sql"),
    include_str!("../../../migrations/sqlite/0012_lean_call_writes.sql"),
    include_str!("../../../migrations/sqlite/0013_kept_dialogs.sql"),
    include_str!("../../../migrations/sqlite/0014_outbox_touched.sql"),
    include_str!("../../../migrations/sqlite/0015_lead_channel.sql"),
    include_str!("../../../migrations/sqlite/0016_lead_name_key.sql"),
    include_str!("../../../migrations/sqlite/0017_calls_end_at.sql"),
    include_str!("../../../migrations/sqlite/0018_leads_call_id.sql"),
    include_str!("../../../migrations/sqlite/0019_calls_recording_base.sql"),
];

/// The file of a `sqlite:<path>` (or `sqlite://<path>`) URL, without
/// query parameters; None for another scheme, an empty path or `:memory:`.
/// The one reading of `storage.url`: the store opens this file, and
/// `check-config` and the read-only commands name it.
pub fn file_of(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let file = rest.split('?').next().unwrap_or(rest);
    (!file.is_empty() && file != ":memory:").then_some(file)
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) `sqlite:<path>`
    /// for `node`; `clock` stamps what the decision thread writes.
    pub async fn open(url: &str, node: &str, clock: Clock) -> Result<SqliteStore, StoreError> {
        let file = file_of(url)
            .ok_or(StoreError::Unsupported(
                "storage.url must be sqlite:<path to a file>",
            ))?
            .to_string();
        if let Some(dir) = Path::new(&file).parent() {
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
        let opened = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || {
                let mut conn = connect(Path::new(&file))?;
                migrate(&mut conn)?;
                let install_id: String =
                    conn.query_row("SELECT value FROM meta WHERE key = 'install_id'", [], |r| {
                        r.get(0)
                    })?;
                let link_key: String = conn.query_row(
                    "SELECT value FROM meta WHERE key = 'recording_link_key'",
                    [],
                    |r| r.get(0),
                )?;
                Ok::<_, rusqlite::Error>((conn, install_id, link_key))
            })
            .await
            .map_err(|e| StoreError::Thread(e.to_string()))?
        };
        let (conn, install_id, link_key) = opened.map_err(open_err)?;
        // A file system without shared memory (some network mounts) keeps
        // the rollback journal: then there is no WAL to miss.
        let in_wal = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
            .is_ok_and(|m| m.eq_ignore_ascii_case("wal"));
        // The hex text itself is the key: 64 random hex digits are 256
        // random bits, and no parsing can fail.
        let link_key: Arc<[u8]> = link_key.into_bytes().into();
        let run_id = runs::new_run(node);
        let decider = decide::start(
            connect(Path::new(&file)).map_err(open_err)?,
            install_id.clone(),
            run_id.clone(),
            runs::earlier_run(node),
            clock.clone(),
        )?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            decider,
            install_id: install_id.into(),
            link_key,
            run_id: run_id.into(),
            node: node.into(),
            clock,
            identity: Arc::new(Mutex::new(identity_of(Path::new(&file)).ok())),
            node_lock: Arc::new(Mutex::new(None)),
            in_wal,
            unstepped_at: Default::default(),
            file: Path::new(&file).into(),
        })
    }

    /// Whether the database file is still the one this store has open.
    /// Deleted (an operator's `rm siptrack.db*` while it ran), or only its
    /// WAL: the store went on writing into the deleted files, and a
    /// restart found the database empty (trials, 2026-12-02); now the
    /// decision thread copies what it holds (`VACUUM INTO`, in its order:
    /// no batch is lost between) and the copy takes the file's place
    /// (never over a file somebody else put there), both connections go
    /// on with it, and the node's lock file is made again.
    pub async fn check_file(&self) -> Result<FileCheck, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.check_file_now())
            .await
            .map_err(|e| StoreError::Thread(e.to_string()))?
    }

    fn check_file_now(&self) -> Result<FileCheck, StoreError> {
        let poisoned = || StoreError::Thread("the store's lock is poisoned".into());
        let known = *self.identity.lock().map_err(|_| poisoned())?;
        let wal = wal_of(&self.file);
        let found = identity_of(&self.file);
        match &found {
            Ok(now) if Some(*now) != known => return Ok(FileCheck::Replaced),
            Ok(_) if !self.in_wal || wal.exists() => {
                self.lock_again()?;
                return Ok(FileCheck::Same);
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Thread(format!(
                    "checking {}: {e}",
                    self.file.display()
                )))
            }
        }
        // Nothing else uses this connection meanwhile.
        let mut c = self.conn.lock().map_err(|_| poisoned())?;
        let copy = restore_copy_of(&self.file);
        fn gone<E>(_: E) -> StoreError {
            StoreError::Thread("the decision thread is gone".into())
        }
        let (copied_tx, copied_rx) = tokio::sync::oneshot::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel();
        let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
        self.decider
            .send(decide::Work::Restore(decide::Restore {
                copy: copy.clone(),
                copied: copied_tx,
                go: go_rx,
                opened: opened_tx,
            }))
            .map_err(|_| StoreError::Thread("the decision thread is gone".into()))?;
        copied_rx
            .blocking_recv()
            .map_err(gone)?
            .map_err(StoreError::Thread)?;
        // Closed before the copy takes the file's place (see
        // `decide::Decider::restore`).
        *c = Connection::open_in_memory()?;
        let placed = match found {
            // The WAL went: the main file is stale, the copy replaces it.
            Ok(_) => std::fs::rename(&copy, &self.file),
            // Gone: the copy goes in its place, unless a file appeared.
            Err(_) => std::fs::hard_link(&copy, &self.file),
        };
        let target = match placed {
            Ok(()) => self.file.to_path_buf(),
            Err(_) => copy.clone(),
        };
        go_tx.send(target).map_err(gone)?;
        let opened = opened_rx.blocking_recv().map_err(gone)?.map_err(|e| {
            StoreError::Thread(format!(
                "the database could not be opened again ({e}); what it held is in {}",
                copy.display()
            ))
        })?;
        *c = connect(&opened)?;
        drop(c);
        if opened != *self.file {
            return Err(StoreError::Thread(format!(
                "another file appeared at {} while siptrack wrote its database back; siptrack goes on with {}: stop it and put that file in place",
                self.file.display(),
                opened.display()
            )));
        }
        let _ = std::fs::remove_file(&copy);
        *self.identity.lock().map_err(|_| poisoned())? = identity_of(&self.file).ok();
        self.lock_again()?;
        Ok(FileCheck::WrittenBack)
    }

    /// The node's lock file, made and locked again when it was deleted
    /// (with the database, by `rm siptrack.db*`: a second process under
    /// the same name could start otherwise; trial, 2026-12-02).
    fn lock_again(&self) -> Result<(), StoreError> {
        let Ok(mut held) = self.node_lock.lock() else {
            return Ok(());
        };
        let Some(h) = held.as_mut() else {
            return Ok(());
        };
        if h.0.exists() {
            return Ok(());
        }
        match node_hold::hold_file_at(&h.0, &self.node, std::time::Duration::ZERO) {
            Ok(file) => {
                h.1 = file;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Gives back the page caches' unused pages of both connections:
    /// the decision thread's (asked; it runs between batches) and this
    /// one's, unless a query holds it now (then it keeps its cache until
    /// the next time; never waited for, since the SIP thread calls this).
    pub fn release_memory(&self) {
        let _ = self.decider.send(decide::Work::ReleaseMemory);
        if let Ok(conn) = self.conn.try_lock() {
            decide::release_cache(&conn);
        }
    }

    pub fn link_key(&self) -> &Arc<[u8]> {
        &self.link_key
    }

    /// This database's prefix of idempotency keys.
    pub fn install_id(&self) -> &Arc<str> {
        &self.install_id
    }

    /// Runs `f` with the store's connection on a blocking thread.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().map_err(|_| {
                StoreError::Thread("the store's connection lock is poisoned".into())
            })?;
            Ok(f(&mut c)?)
        })
        .await
        .map_err(|e| StoreError::Thread(e.to_string()))?
    }

    /// Calls that an earlier run saw start and never recorded: a crash
    /// cut them short. Oldest first.
    pub async fn interrupted_calls(
        &self,
        keep_dialogs_ms: u64,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let (run_id, node) = (self.run_id.clone(), self.node.clone());
        let kept_since = self.clock.unix_ms().saturating_sub(keep_dialogs_ms) as i64;
        self.with(move |c| {
            c.execute(
                "DELETE FROM open_calls WHERE recorded_at < ?1",
                params![kept_since],
            )?;
            let mut q = c.prepare(
                "SELECT call_id, invite_at, info, run_id, answer_at FROM open_calls
                  WHERE run_id <> ?1 AND recorded_at IS NULL ORDER BY invite_at, call_id",
            )?;
            let rows = q.query_map(params![&*run_id], |r| {
                let info: String = r.get(2)?;
                let run: String = r.get(3)?;
                Ok(runs::cut_short(&run, &run_id, &node).then(|| {
                    CallRecord::interrupted(
                        r.get(0).unwrap_or_default(),
                        // A row this build cannot read still is a call.
                        serde_json::from_str(&info).unwrap_or_default(),
                        r.get::<_, i64>(1).unwrap_or_default().max(0) as u64,
                        r.get::<_, Option<i64>>(4)
                            .ok()
                            .flatten()
                            .map(|a| a.max(0) as u64),
                    )
                }))
            })?;
            rows.filter_map(Result::transpose).collect()
        })
        .await
    }

    /// An answered call still open, with its dialog (another node may
    /// have set it up); None when there is none or its dialog is
    /// unreadable.
    pub async fn open_dialog(&self, call_id: &str) -> Result<Option<AdoptedCall>, StoreError> {
        let call_id = call_id.to_string();
        self.with(move |c| {
            c.prepare_cached(
                "SELECT info, invite_at, answer_at, dialog FROM open_calls
                  WHERE call_id = ?1 AND dialog IS NOT NULL AND answer_at IS NOT NULL",
            )?
            .query_row(params![call_id], |r| {
                Ok(crate::store::adopted(
                    &r.get::<_, String>(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    &r.get::<_, String>(3)?,
                ))
            })
            .optional()
            .map(Option::flatten)
        })
        .await
    }

    /// Runs SQL text as it is (benchmarks seed stores with it).
    pub async fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        let sql = sql.to_string();
        self.with(move |c| c.execute_batch(&sql)).await
    }

    /// Whether the file would take a write now: its write lock taken and
    /// given back, waiting at most `wait` for it. A read passes a file
    /// another process holds locked (WAL), which the next call's write
    /// then waits on for the busy timeout (QA, 2026-12-02: /healthz said
    /// ok for such a file).
    pub async fn probe_write(&self, wait: std::time::Duration) -> Result<(), StoreError> {
        self.with(move |c| {
            c.busy_timeout(wait)?;
            let taken = c.execute_batch("BEGIN IMMEDIATE; ROLLBACK");
            if !c.is_autocommit() {
                let _ = c.execute_batch("ROLLBACK");
            }
            c.busy_timeout(BUSY_WAIT)?;
            taken
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_of_a_storage_url() {
        for (url, file) in [
            ("sqlite:data/siptrack.db", Some("data/siptrack.db")),
            (
                "sqlite:///var/lib/siptrack.db",
                Some("/var/lib/siptrack.db"),
            ),
            ("sqlite:x.db?mode=rwc", Some("x.db")),
            ("sqlite:", None),
            ("sqlite::memory:", None),
            ("postgres://db/siptrack", None),
        ] {
            assert_eq!(file_of(url), file, "{url}");
        }
    }

    /// Processes starting together on a fresh file (a restart racing a
    /// `siptrack leads`) each apply what is missing, once.
    #[test]
    fn concurrent_openers_migrate_once() {
        let dir = tempfile::tempdir().expect("scratch dir");
        let file = dir.path().join("race.db");
        let start = Arc::new(std::sync::Barrier::new(4));
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let (file, start) = (file.clone(), start.clone());
                std::thread::spawn(move || {
                    // Together from the start: the first open of a new
                    // file races too (and a failed open must not leave
                    // the others waiting at a barrier forever).
                    start.wait();
                    let mut conn = connect(&file)?;
                    migrate(&mut conn)
                })
            })
            .collect();
        for o in openers {
            o.join().expect("opener thread").expect("migrated");
        }
        let conn = connect(&file).expect("open");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        let ids: i64 = conn
            .query_row("SELECT COUNT(*) FROM meta", [], |r| r.get(0))
            .expect("meta");
        assert_eq!(ids, 2, "one install id, one recording link key");
    }

    /// A file of the previous schema (migrations up to 0011) with an
    /// open answered call and leads in every index takes migration 0012:
    /// the rows stay as they were, and the e-mail, channel and name
    /// indexes leave the empty values out.
    #[test]
    fn a_file_of_the_previous_schema_migrates_with_its_rows() {
        let dir = tempfile::tempdir().expect("scratch dir");
        let mut conn = connect(&dir.path().join("old.db")).expect("open");
        for (i, sql) in MIGRATIONS[..11].iter().enumerate() {
            conn.execute_batch(sql).expect("old migration");
            conn.pragma_update(None, "user_version", i as i64 + 1)
                .expect("version");
        }
        conn.execute_batch(
            "INSERT INTO open_calls (call_id, run_id, invite_at, info, answer_at, dialog)
             VALUES ('a@h', 'r1', 10, '{}', 11, '{\"d\":1}'), ('b@h', 'r1', 12, '{}', NULL, NULL);
             INSERT INTO leads (created_at, kind, title, name, phone, email, visit_id, form,
                                dialed, text, accepted, outcome)
             VALUES (1, 'call', 't', '', '7916', '', '', '', '', '', 1, 'x'),
                    (2, 'form', 't', 'Ivan', '', 'i@x', 'google', '', '', '', 1, 'y');",
        )
        .expect("old rows");
        let open_rows = |c: &Connection| -> Vec<(String, i64, Option<i64>, Option<String>)> {
            c.prepare("SELECT call_id, invite_at, answer_at, dialog FROM open_calls ORDER BY 1")
                .expect("prepare")
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        let before = open_rows(&conn);
        migrate(&mut conn).expect("migrated");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        assert_eq!(open_rows(&conn), before);
        // The indexes are partial now, and still find what they hold.
        for index in ["leads_email", "leads_visit", "leads_name_key"] {
            let sql: String = conn
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE name = ?1",
                    [index],
                    |r| r.get(0),
                )
                .expect(index);
            assert!(sql.contains("WHERE"), "{sql}");
        }
        let found: i64 = conn
            .query_row(
                "SELECT id FROM leads INDEXED BY leads_email WHERE email = 'i@x' AND email <> ''",
                [],
                |r| r.get(0),
            )
            .expect("by e-mail");
        assert_eq!(found, 2);
        let leads: i64 = conn
            .query_row("SELECT COUNT(*) FROM leads", [], |r| r.get(0))
            .expect("leads");
        assert_eq!(leads, 2);
    }

    /// The page cache a connection filled (SQLITE_DBSTATUS_CACHE_USED).
    fn cache_used(conn: &Connection) -> i32 {
        let (mut used, mut high) = (0, 0);
        // SAFETY: the handle is the live connection's; db_status only
        // reads its counters into the two integers.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_db_status(
                conn.handle(),
                rusqlite::ffi::SQLITE_DBSTATUS_CACHE_USED,
                &mut used,
                &mut high,
                0,
            )
        };
        assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
        used
    }

    /// After a burst the run loop asks the store to give its page cache
    /// back: what reading a table filled is freed, and the connection
    /// still answers (the pages are read again).
    #[test]
    fn released_page_cache_is_given_back() {
        let dir = tempfile::tempdir().expect("scratch dir");
        let conn = connect(&dir.path().join("cache.db")).expect("open");
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO t (v) SELECT printf('%0200d', i) FROM n;",
        )
        .expect("filled");
        let count = || -> i64 {
            conn.query_row("SELECT COUNT(v) FROM t WHERE v <> ''", [], |r| r.get(0))
                .expect("count")
        };
        assert_eq!(count(), 5000);
        let filled = cache_used(&conn);
        assert!(
            filled > 1 << 20,
            "5,000 rows of 200 B fill over 1 MB of cache: {filled}"
        );
        decide::release_cache(&conn);
        let released = cache_used(&conn);
        assert!(
            released < filled / 4,
            "cache after release {released} B, before {filled} B"
        );
        assert_eq!(count(), 5000);
    }
}
