//! A small pool of synchronous PostgreSQL connections (`storage.pool_size`),
//! used on tokio's blocking threads. Connections are opened on demand up
//! to the size; a broken one (the server restarted, the network cut it)
//! is dropped when it comes back, so the next use opens a fresh one and a
//! database that returns is used again without a restart. Each connection
//! keeps its prepared statements.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use postgres::{Client, Statement};

use crate::store::StoreError;

/// How long a query waits for a free connection before it fails.
pub(crate) const CHECKOUT_WAIT: Duration = Duration::from_secs(10);

/// A connection and the statements prepared on it.
pub(crate) struct Conn {
    pub client: Client,
    pub statements: Statements,
}

/// Prepared statements of one connection, by their SQL text.
#[derive(Default)]
pub(crate) struct Statements(HashMap<&'static str, Statement>);

impl Statements {
    /// `sql` prepared on `client` (once per connection).
    pub fn get(
        &mut self,
        client: &mut impl postgres::GenericClient,
        sql: &'static str,
    ) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.0.get(sql) {
            return Ok(s.clone());
        }
        let s = client.prepare(sql)?;
        self.0.insert(sql, s.clone());
        Ok(s)
    }
}

pub(crate) struct Pool {
    config: postgres::Config,
    size: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<Conn>,
    /// Connections open or being opened, idle or not.
    open: usize,
}

impl Pool {
    pub fn new(config: postgres::Config, size: usize) -> Pool {
        Pool {
            config,
            size: size.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// How connections are made (the node lock makes its own).
    pub fn config(&self) -> &postgres::Config {
        &self.config
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, PoolState>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::Thread("the connection pool's lock is poisoned".into()))
    }

    /// Runs `f` on a connection of the pool (blocking: call it from a
    /// blocking thread).
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut out = Lent {
            pool: self,
            conn: Some(self.checkout()?),
        };
        match out.conn.as_mut() {
            Some(conn) => f(conn),
            None => Err(StoreError::Thread("no connection".into())),
        }
    }

    fn checkout(&self) -> Result<Conn, StoreError> {
        let mut st = self.lock()?;
        loop {
            if let Some(c) = st.idle.pop() {
                if c.client.is_closed() {
                    st.open -= 1;
                    continue;
                }
                return Ok(c);
            }
            if st.open < self.size {
                st.open += 1;
                drop(st);
                return match super::connect(&self.config) {
                    Ok(client) => Ok(Conn {
                        client,
                        statements: Statements::default(),
                    }),
                    Err(e) => {
                        self.lock()?.open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let (next, waited) = self
                .freed
                .wait_timeout(st, CHECKOUT_WAIT)
                .map_err(|_| StoreError::Thread("the connection pool's lock is poisoned".into()))?;
            st = next;
            if waited.timed_out() && st.idle.is_empty() && st.open >= self.size {
                return Err(StoreError::Thread(format!(
                    "no free database connection within {} s (storage.pool_size = {})",
                    CHECKOUT_WAIT.as_secs(),
                    self.size
                )));
            }
        }
    }

    /// Gives a connection back, or its place when it is broken.
    fn checkin(&self, conn: Conn) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if conn.client.is_closed() {
            st.open -= 1;
        } else {
            st.idle.push(conn);
        }
        drop(st);
        self.freed.notify_one();
    }
}

/// A connection lent out: back to the pool when the work is done, even
/// when it panicked (a half-done transaction is rolled back on drop), so
/// that a place is never lost.
struct Lent<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.checkin(conn);
        }
    }
}

impl Drop for Pool {
    /// Closing a connection blocks on its own runtime, which may not
    /// happen on a tokio thread (the last handle of a store may go there):
    /// the idle connections are closed on a thread of their own.
    fn drop(&mut self) {
        let idle = match self.state.get_mut() {
            Ok(st) => std::mem::take(&mut st.idle),
            Err(poisoned) => std::mem::take(&mut poisoned.into_inner().idle),
        };
        if !idle.is_empty() {
            let _ = std::thread::Builder::new()
                .name("siptrack-pg-close".into())
                .spawn(move || drop(idle));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_that_panics_gives_its_connection_back() {
        let config: postgres::Config = crate::test_pg::database().parse().expect("url");
        let pool = Pool::new(config, 1);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.with(|_| -> Result<(), StoreError> { panic!("a row this build cannot read") })
        }));
        assert!(panicked.is_err());
        // The one place is free again (else: no connection within 10 s).
        let one: i64 = pool
            .with(|c| Ok(c.client.query_one("SELECT 1::bigint", &[])?.get(0)))
            .expect("a connection");
        assert_eq!(one, 1);
    }
}
