//! One running process per `storage.node_name` on a database.
//!
//! A node's name says which open calls and outbox claims are its own: at
//! start it records its earlier run's open calls `interrupted`, and it
//! takes its own claims back at once. A second process under the same
//! name on the same database (two VMs cloned with one hostname, the
//! default name; a copied config) would record the first one's live
//! calls `interrupted` and deliver its claimed CRM requests a second time
//! (trial, 2026-12-02). So `siptrack run` holds the name for as long as it
//! runs and refuses to start when another process holds it: SQLite by a
//! lock on a file beside the database, PostgreSQL by a session advisory
//! lock (`postgres::node_hold`).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::StoreError;

/// How long to wait for a name held by another process, and when a
/// PostgreSQL holder counts as gone.
#[derive(Clone, Copy, Debug)]
pub struct HoldPolicy {
    /// A node started again right after a crash may find its earlier
    /// run's lock still held for a moment (PostgreSQL ends the dead
    /// session once it sees the connection closed).
    pub wait: Duration,
    /// A PostgreSQL holder that has not been heard from for this long
    /// (its host died without closing the connection) is ended, so the
    /// node can come back without waiting hours for TCP keepalives.
    pub stale: Duration,
}

impl Default for HoldPolicy {
    fn default() -> Self {
        HoldPolicy {
            wait: Duration::from_secs(5),
            stale: Duration::from_secs(15),
        }
    }
}

/// A SQLite store's lock file and its locked handle, shared with the
/// store (which locks it again when the file was deleted).
pub type FileSlot = Arc<Mutex<Option<(PathBuf, File)>>>;

/// The name held until this is dropped (or the process ends).
pub enum NodeHold {
    /// The locked file beside a SQLite database.
    File(FileSlot),
    Postgres(super::postgres::PgNodeHold),
    /// A memory store is this process's alone.
    Nothing,
}

impl NodeHold {
    /// Completes when the name was lost to another live process (only on
    /// PostgreSQL: see `postgres::node_hold::keep`); never otherwise.
    pub async fn lost(&self) {
        match self {
            NodeHold::Postgres(h) => h.lost.notified().await,
            _ => std::future::pending().await,
        }
    }
}

impl Drop for NodeHold {
    fn drop(&mut self) {
        if let NodeHold::File(slot) = self {
            if let Ok(mut s) = slot.lock() {
                s.take();
            }
        }
    }
}

/// The lock file of `node` beside the SQLite database `db`: one per
/// name, so nodes of other names share the file freely. Bytes other
/// than ASCII letters, digits, `.`, `-` and `_` are written `%XX` (a name
/// is free text; a `/` must not reach another directory, and two names
/// must not share a file: `_` for each once made `москва` and `казань`
/// one name; trial, 2026-12-02).
pub fn lock_file_of(db: &Path, node: &str) -> PathBuf {
    use std::fmt::Write as _;
    let mut safe = String::with_capacity(node.len());
    for b in node.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => safe.push(b as char),
            _ => {
                let _ = write!(safe, "%{b:02X}");
            }
        }
    }
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".node-{safe}.lock"));
    db.with_file_name(name)
}

/// Holds `node` on the SQLite database `db`, waiting up to `wait`; the
/// lock goes into `slot`.
pub fn hold_file(
    db: &Path,
    node: &str,
    wait: Duration,
    slot: &FileSlot,
) -> Result<NodeHold, StoreError> {
    let path = lock_file_of(db, node);
    let file = hold_file_at(&path, node, wait)?;
    if let Ok(mut s) = slot.lock() {
        *s = Some((path, file));
    }
    Ok(NodeHold::File(slot.clone()))
}

/// Locks the lock file `path` of `node`, waiting up to `wait`.
pub fn hold_file_at(path: &Path, node: &str, wait: Duration) -> Result<File, StoreError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| StoreError::Thread(format!("opening {}: {e}", path.display())))?;
    let until = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::NodeInUse(format!(
                    "storage.node_name {node:?} is in use by another running siptrack on this database (it holds {}); give each process its own node_name",
                    path.display()
                )))
            }
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::Thread(format!(
                    "locking {}: {e}",
                    path.display()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_files_are_one_per_name_beside_the_database() {
        for (db, node, want) in [
            (
                "/var/lib/siptrack/s.db",
                "pbx-east-1",
                "/var/lib/siptrack/s.db.node-pbx-east-1.lock",
            ),
            ("s.db", "host.example", "s.db.node-host.example.lock"),
            (
                "/d/s.db",
                "../../etc/x",
                "/d/s.db.node-..%2F..%2Fetc%2Fx.lock",
            ),
            ("/d/s.db", "node 1", "/d/s.db.node-node%201.lock"),
            ("/d/s.db", "node_1", "/d/s.db.node-node_1.lock"),
            ("/d/s.db", "ок", "/d/s.db.node-%D0%BE%D0%BA.lock"),
        ] {
            assert_eq!(lock_file_of(Path::new(db), node), Path::new(want), "{node}");
        }
    }
}
