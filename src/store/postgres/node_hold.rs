//! `storage.node_name` held on PostgreSQL (see `store::node_hold`): a
//! session advisory lock on a connection of its own, kept by a thread
//! that asks the server something every `BEAT`, so that a holder whose
//! host died without closing the connection is seen to be gone (its
//! session's last activity stops moving) and can be ended by the next
//! process under that name. The thread takes the lock again after the
//! connection was lost (a server restart ends every session and its
//! locks).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::Client;

use crate::store::node_hold::HoldPolicy;
use crate::store::StoreError;

/// How often the holder shows it is alive.
const BEAT: Duration = Duration::from_secs(2);

/// Held until dropped: the thread stops and closes its connection.
pub struct PgNodeHold {
    stop: Arc<AtomicBool>,
    /// Signalled when another live process holds the name now: this one
    /// was silent past the stale time (frozen, cut off) and was ended.
    pub lost: Arc<tokio::sync::Notify>,
}

impl Drop for PgNodeHold {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The key of `node`'s lock: a 64-bit FNV-1a hash of the name behind a
/// prefix of its own, so that other applications' advisory locks on the
/// same database do not meet it by chance. It was the pair (class, a
/// 31-bit hash), and a trial found two names sharing a key by brute
/// force: the second node was refused as if its name were in use. At 64
/// bits a fleet of a thousand names has a chance of about 3·10⁻¹⁴ of one
/// such pair.
pub fn node_key(node: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"siptrack node\0".iter().chain(node.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// The halves `pg_locks` shows a one-key lock as: `classid` the high 32
/// bits, `objid` the low, both unsigned.
fn key_halves(key: i64) -> (i64, i64) {
    let k = key as u64;
    ((k >> 32) as i64, (k & 0xffff_ffff) as i64)
}

/// Who holds a node's lock: pid, address, seconds since it was last
/// active (NULL for what this role may not see: then it is not stale).
const HOLDER: &str = "SELECT l.pid, COALESCE(host(a.client_addr), 'a local socket'),
        COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - a.state_change), 0)::float8
   FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
  WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
    AND l.classid::int8 = $1::int8 AND l.objid::int8 = $2::int8
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())";

fn try_lock(c: &mut Client, key: i64) -> Result<bool, postgres::Error> {
    Ok(c.query_one("SELECT pg_try_advisory_lock($1)", &[&key])?
        .get(0))
}

/// Takes the lock on a fresh connection: waits `policy.wait` for a live
/// holder to go, ends a stale one at once.
fn acquire(
    config: &postgres::Config,
    node: &str,
    policy: HoldPolicy,
) -> Result<Client, StoreError> {
    let key = node_key(node);
    let (high, low) = key_halves(key);
    let mut c = super::connect(config)?;
    c.execute(
        "SELECT set_config('application_name', $1, false)",
        &[&format!("siptrack node {node}")],
    )?;
    let until = Instant::now() + policy.wait;
    loop {
        if try_lock(&mut c, key)? {
            return Ok(c);
        }
        let holder = c.query_opt(HOLDER, &[&high, &low])?;
        // None: released between the two queries (or not to be seen):
        // try again, within the wait.
        let seen = holder.and_then(|row| {
            Some((
                row.try_get::<_, i32>(0).ok()?,
                row.try_get::<_, String>(1).ok()?,
                row.try_get::<_, f64>(2).ok()?,
            ))
        });
        let (pid, addr, idle) = seen.unwrap_or((0, "an unknown session".into(), 0.0));
        if pid != 0 && idle > policy.stale.as_secs_f64() {
            tracing::warn!(node, pid, holder = %addr, idle_s = idle as u64, "ending a silent session that held this node name (its host is gone)");
            c.execute("SELECT pg_terminate_backend($1)", &[&pid])?;
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        if Instant::now() >= until {
            return Err(StoreError::NodeInUse(format!(
                "storage.node_name {node:?} is in use by another running siptrack on this database (PostgreSQL session {pid} from {addr}, active {idle:.0} s ago); give each node its own node_name"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Holds `node` until the returned value is dropped. Blocking: call it
/// from a blocking thread.
pub fn hold(
    config: &postgres::Config,
    node: &str,
    policy: HoldPolicy,
) -> Result<PgNodeHold, StoreError> {
    let client = acquire(config, node, policy)?;
    let stop = Arc::new(AtomicBool::new(false));
    let lost = Arc::new(tokio::sync::Notify::new());
    let (config, node, flag, told) = (config.clone(), node.to_string(), stop.clone(), lost.clone());
    std::thread::Builder::new()
        .name("node-hold".into())
        .spawn(move || keep(client, &config, &node, policy, &flag, &told))
        .map_err(|e| StoreError::Thread(e.to_string()))?;
    Ok(PgNodeHold { stop, lost })
}

/// Beats on the lock's connection; when it is lost, takes the lock again
/// on a new one (logging, not stopping, while the database cannot be
/// reached: its problems never cost a call). When another live process
/// holds the name by then, this one was silent past the stale time and
/// was ended as a dead host: `lost` tells the server to stop, or two
/// processes would share the name (trial, 2026-12-02: a node frozen for
/// 16 s went on taking calls, and the other recorded them interrupted).
fn keep(
    client: Client,
    config: &postgres::Config,
    node: &str,
    policy: HoldPolicy,
    stop: &AtomicBool,
    lost: &tokio::sync::Notify,
) {
    let mut held = Some(client);
    let mut warned: Option<Instant> = None;
    let retake = HoldPolicy {
        wait: Duration::ZERO,
        ..policy
    };
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(BEAT);
        if let Some(c) = held.as_mut() {
            if c.simple_query("SELECT 1").is_ok() {
                continue;
            }
        }
        held = None;
        match acquire(config, node, retake) {
            Ok(c) => {
                tracing::info!(
                    node,
                    "node name held again after its database connection was lost"
                );
                held = Some(c);
                warned = None;
            }
            Err(e @ StoreError::NodeInUse(_)) => {
                tracing::error!(node, error = %e, "another process holds this node's name now (this one was silent too long: frozen or cut off from the database); stopping");
                lost.notify_one();
                return;
            }
            Err(e) => {
                if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    tracing::error!(node, error = %e, "cannot hold this node's name on PostgreSQL; retrying");
                    warned = Some(Instant::now());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_name_and_split_as_pg_locks_shows_them() {
        let names = ["pbx-east-1", "pbx-east-2", "", "узел", "казань", "москва"];
        let keys: Vec<i64> = names.iter().map(|n| node_key(n)).collect();
        for (i, a) in keys.iter().enumerate() {
            assert!(!keys[i + 1..].contains(a), "{keys:?}");
        }
        assert_eq!(node_key("pbx-east-1"), node_key("pbx-east-1"));
        assert_eq!(key_halves(-1), (0xffff_ffff, 0xffff_ffff));
        assert_eq!(
            key_halves(0x1234_5678_9abc_def0),
            (0x1234_5678, 0x9abc_def0)
        );
    }
}
