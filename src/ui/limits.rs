//! What one browser or one address may hold of the console: failed
//! sign-ins in a window, and live-row streams. Pure state over times the
//! caller passes in.
//!
//! A trial (2026-12-02) guessed 40 passwords of one user in 6 s, and a
//! signed-in user held every one of `http.max_connections` with 260
//! `/ui/events` streams, so /healthz, the website's visits and the CRM
//! webhooks waited until the streams closed.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// Failed sign-ins counted per (address, user name) and per address over
/// `window_ms`; past either limit, attempts are refused unchecked until
/// the oldest counted failure leaves the window.
pub struct FailedSignIns {
    window_ms: u64,
    per_user: usize,
    per_address: usize,
    by_user: HashMap<(IpAddr, String), VecDeque<u64>>,
    by_address: HashMap<IpAddr, VecDeque<u64>>,
}

/// Keys kept at most in each table: an attacker with many addresses
/// resets the tables rather than grow them.
const MAX_KEYS: usize = 10_000;

/// The longest user name counted (a name is free text from the form).
const MAX_NAME: usize = 64;

fn recent(times: &mut VecDeque<u64>, now: u64, window_ms: u64) -> usize {
    while times
        .front()
        .is_some_and(|t| now.saturating_sub(*t) >= window_ms)
    {
        times.pop_front();
    }
    times.len()
}

impl FailedSignIns {
    pub fn new(window_ms: u64, per_user: usize, per_address: usize) -> FailedSignIns {
        FailedSignIns {
            window_ms,
            per_user: per_user.max(1),
            per_address: per_address.max(1),
            by_user: HashMap::new(),
            by_address: HashMap::new(),
        }
    }

    fn key(ip: IpAddr, user: &str) -> (IpAddr, String) {
        (ip, user.trim().chars().take(MAX_NAME).collect())
    }

    /// Milliseconds until `user` may try again from `ip`; None: now.
    pub fn refused_for(&mut self, ip: IpAddr, user: &str, now: u64) -> Option<u64> {
        let window = self.window_ms;
        let wait = |times: &mut VecDeque<u64>, limit: usize| {
            (recent(times, now, window) >= limit).then(|| {
                times
                    .front()
                    .map_or(0, |t| (t + window).saturating_sub(now))
            })
        };
        let by_user = self
            .by_user
            .get_mut(&Self::key(ip, user))
            .and_then(|t| wait(t, self.per_user));
        let by_address = self
            .by_address
            .get_mut(&ip)
            .and_then(|t| wait(t, self.per_address));
        by_user.max(by_address)
    }

    pub fn failed(&mut self, ip: IpAddr, user: &str, now: u64) {
        if self.by_user.len() >= MAX_KEYS || self.by_address.len() >= MAX_KEYS {
            let w = self.window_ms;
            self.by_user.retain(|_, t| recent(t, now, w) > 0);
            self.by_address.retain(|_, t| recent(t, now, w) > 0);
            if self.by_user.len() >= MAX_KEYS || self.by_address.len() >= MAX_KEYS {
                self.by_user.clear();
                self.by_address.clear();
            }
        }
        self.by_user
            .entry(Self::key(ip, user))
            .or_default()
            .push_back(now);
        self.by_address.entry(ip).or_default().push_back(now);
    }

    /// A right password: that user's failures from there are forgotten
    /// (the address's stay: they may be guesses at other names).
    pub fn succeeded(&mut self, ip: IpAddr, user: &str) {
        self.by_user.remove(&Self::key(ip, user));
    }
}

/// Live-row streams open, per session and in all.
pub struct Streams {
    per_session: usize,
    total: usize,
    open: usize,
    by_session: HashMap<String, usize>,
}

impl Streams {
    pub fn new(per_session: usize, total: usize) -> Streams {
        Streams {
            per_session: per_session.max(1),
            total: total.max(1),
            open: 0,
            by_session: HashMap::new(),
        }
    }

    /// Counts one more for `session` when both limits allow it.
    pub fn try_open(&mut self, session: &str) -> bool {
        let mine = self.by_session.get(session).copied().unwrap_or(0);
        if mine >= self.per_session || self.open >= self.total {
            return false;
        }
        self.open += 1;
        self.by_session.insert(session.to_string(), mine + 1);
        true
    }

    pub fn close(&mut self, session: &str) {
        if let Some(n) = self.by_session.get_mut(session) {
            *n -= 1;
            self.open = self.open.saturating_sub(1);
            if *n == 0 {
                self.by_session.remove(session);
            }
        }
    }

    pub fn open(&self) -> usize {
        self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_sign_ins_are_limited_per_user_and_address() {
        let (a, b): (IpAddr, IpAddr) = (
            "192.0.2.1".parse().expect("an address"),
            "192.0.2.2".parse().expect("an address"),
        );
        let mut f = FailedSignIns::new(60_000, 3, 5);
        for t in 0..3 {
            assert_eq!(f.refused_for(a, "anna", t), None, "attempt {t}");
            f.failed(a, "anna", t);
        }
        // (address, name): refused until the first failure is a window old.
        assert_eq!(f.refused_for(a, "anna", 10), Some(59_990));
        assert_eq!(f.refused_for(a, " anna ", 10), Some(59_990), "trimmed");
        assert_eq!(f.refused_for(b, "anna", 10), None, "another address");
        assert_eq!(f.refused_for(a, "boris", 10), None, "another name");
        // The address: five failures over any names.
        f.failed(a, "boris", 20);
        f.failed(a, "vera", 30);
        assert_eq!(f.refused_for(a, "galina", 40), Some(59_960));
        // Windows pass.
        assert_eq!(f.refused_for(a, "anna", 59_999), Some(1));
        assert_eq!(
            f.refused_for(a, "anna", 60_000),
            None,
            "the first left the window"
        );
        assert_eq!(f.refused_for(a, "galina", 60_000), None);
        // A right password forgets that name's failures from there.
        for t in 0..3 {
            f.failed(b, "anna", 70_000 + t);
        }
        assert!(f.refused_for(b, "anna", 70_010).is_some());
        f.succeeded(b, "anna");
        assert_eq!(f.refused_for(b, "anna", 70_010), None);
    }

    #[test]
    fn failed_sign_ins_from_many_addresses_stay_bounded() {
        let mut f = FailedSignIns::new(60_000, 3, 5);
        for i in 0..(MAX_KEYS as u32 + 10) {
            let ip = IpAddr::from(i.to_be_bytes());
            f.failed(ip, "anna", 1);
        }
        assert!(f.by_user.len() <= MAX_KEYS && f.by_address.len() <= MAX_KEYS);
    }

    #[test]
    fn streams_are_limited_per_session_and_in_all() {
        let mut s = Streams::new(2, 3);
        assert!(s.try_open("a"));
        assert!(s.try_open("a"));
        assert!(!s.try_open("a"), "two per session");
        assert!(s.try_open("b"));
        assert!(!s.try_open("c"), "three in all");
        s.close("a");
        assert!(s.try_open("c"));
        assert_eq!(s.open(), 3);
        s.close("nobody");
        assert_eq!(s.open(), 3);
        for k in ["a", "b", "c"] {
            s.close(k);
        }
        assert_eq!(s.open(), 0);
        assert!(s.by_session.is_empty());
    }
}
