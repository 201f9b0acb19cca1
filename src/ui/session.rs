//! Console sign-ins: server-side sessions with an expiry, each with its
//! own CSRF token. Pure state over times the caller passes in; the HTTP
//! layer makes the random ids and sets the cookie.

use std::collections::HashMap;

/// A signed-in browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The user's name, or `token` for the API token.
    pub user: String,
    /// Every form carries it; a POST without it is refused.
    pub csrf: String,
    /// Unix ms; the session is gone from then on.
    pub expires_at: u64,
}

/// Sessions one user holds at most: signing in beyond that drops that
/// user's session that would expire first, not anybody else's (trial,
/// 2026-12-02: 10,050 sign-ins of one user pushed every other user's
/// session out of the table).
const PER_USER: usize = 20;

/// Sessions by id, at most `cap` of them: signing in beyond that drops
/// the one that would expire first, so a flood of sign-ins cannot grow
/// memory; and at most `PER_USER` of one user.
pub struct Sessions {
    by_id: HashMap<String, Session>,
    ttl_ms: u64,
    cap: usize,
}

impl Sessions {
    pub fn new(ttl_ms: u64, cap: usize) -> Sessions {
        Sessions {
            by_id: HashMap::new(),
            ttl_ms,
            cap: cap.max(1),
        }
    }

    /// Signs `user` in under `id` (random, from the caller) at `now`.
    pub fn open(&mut self, id: String, csrf: String, user: &str, now: u64) -> Session {
        self.by_id.retain(|_, s| s.expires_at > now);
        let mine = self.by_id.values().filter(|s| s.user == user).count();
        if mine >= PER_USER {
            let oldest = self
                .by_id
                .iter()
                .filter(|(_, s)| s.user == user)
                .min_by_key(|(_, s)| s.expires_at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.by_id.remove(&k);
            }
        }
        while self.by_id.len() >= self.cap {
            let Some(first) = self
                .by_id
                .iter()
                .min_by_key(|(_, s)| s.expires_at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.by_id.remove(&first);
        }
        let s = Session {
            user: user.to_string(),
            csrf,
            expires_at: now.saturating_add(self.ttl_ms),
        };
        self.by_id.insert(id, s.clone());
        s
    }

    /// The live session of `id` at `now`; an expired one is removed.
    pub fn get(&mut self, id: &str, now: u64) -> Option<Session> {
        match self.by_id.get(id) {
            Some(s) if s.expires_at > now => Some(s.clone()),
            Some(_) => {
                self.by_id.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn close(&mut self, id: &str) {
        self.by_id.remove(id);
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Compares secrets without an early exit on the first difference.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_close() {
        let mut s = Sessions::new(1000, 10);
        s.open("a".into(), "c".into(), "anna", 0);
        assert_eq!(s.get("a", 999).map(|x| x.user), Some("anna".into()));
        assert_eq!(s.get("a", 999).map(|x| x.csrf), Some("c".into()));
        assert_eq!(s.get("a", 1000), None, "expired at expires_at");
        assert!(s.is_empty(), "an expired session is dropped when seen");
        s.open("b".into(), "c".into(), "boris", 0);
        s.close("b");
        assert_eq!(s.get("b", 1), None);
        assert_eq!(s.get("nobody", 1), None);
    }

    #[test]
    fn sessions_are_bounded() {
        let mut s = Sessions::new(1000, 3);
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            s.open(id.to_string(), "x".into(), "u", i as u64);
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.get("a", 10), None, "the first to expire made room");
        assert!(s.get("d", 10).is_some());
        // Expired ones go first, without pushing out live ones.
        s.open("e".into(), "x".into(), "u", 1002);
        assert_eq!(s.get("d", 1002).map(|x| x.user), Some("u".into()));
        assert!(s.get("b", 1002).is_none());
    }

    #[test]
    fn one_user_signing_in_again_and_again_drops_only_their_own_sessions() {
        let mut s = Sessions::new(1_000_000, 100);
        s.open("victim".into(), "x".into(), "anna", 0);
        for i in 0..500u64 {
            s.open(format!("flood{i}"), "x".into(), "boris", 1 + i);
        }
        assert!(s.get("victim", 600).is_some(), "anna is still signed in");
        assert_eq!(s.len(), 1 + PER_USER);
        assert!(s.get("flood499", 600).is_some(), "the newest stays");
        assert!(s.get("flood0", 600).is_none(), "the oldest went");
    }

    #[test]
    fn cookies_and_secrets() {
        for (header, want) in [
            ("siptrack_session=abc", Some("abc")),
            ("a=1; siptrack_session=abc; b=2", Some("abc")),
            ("siptrack_session_x=abc", None),
            ("xsiptrack_session=abc", None),
            ("", None),
            ("siptrack_session", None),
        ] {
            assert_eq!(cookie(header, "siptrack_session"), want, "{header}");
        }
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }
}
