//! What untrusted text looks like in a log line, and how often a
//! repeated warning is written.
//!
//! The log is read by people and parsed by tools line by line: a visit id
//! from a website with a newline in it forged a whole log line, a NUL made
//! `grep` take the log for a binary file, and a full pool wrote two
//! 2 KB ids per takeover, 64 MB for 16,000 visits (trial, 2026-12-02).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

/// The longest piece of untrusted text a log line carries, in chars.
const MAX_CHARS: usize = 128;

/// Untrusted text for a log field: control characters (and the Unicode
/// line and paragraph separators) escaped as `\n`, `\r`, `\t` or
/// `\u{…}`, a backslash doubled, and anything past 128 characters cut to
/// `…(N chars)`.
pub struct Clean<'a>(pub &'a str);

impl fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.0.chars().count();
        for c in self.0.chars().take(MAX_CHARS) {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                    write!(f, "\\u{{{:x}}}", c as u32)?
                }
                c => write!(f, "{c}")?,
            }
        }
        if total > MAX_CHARS {
            write!(f, "…({total} chars)")?;
        }
        Ok(())
    }
}

/// At most one line per key and period: `allow` says whether to write
/// one now, and how many were held back since the last.
#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    last: HashMap<String, (Instant, u64)>,
}

/// Keys a throttle keeps at most (pool names, in practice a handful).
const MAX_KEYS: usize = 1024;

impl Throttle {
    pub fn new(period: Duration) -> Throttle {
        Throttle {
            period,
            last: HashMap::new(),
        }
    }

    /// Some(held back since the last line) when a line may be written
    /// for `key` at `now`; None while the period runs.
    pub fn allow(&mut self, key: &str, now: Instant) -> Option<u64> {
        match self.last.get_mut(key) {
            Some((at, held)) if now.duration_since(*at) < self.period => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = *held;
                (*at, *held) = (now, 0);
                Some(n)
            }
            None => {
                if self.last.len() >= MAX_KEYS {
                    self.last.clear();
                }
                self.last.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_stays_on_its_line() {
        let long = "x".repeat(200);
        let cut = format!("{}…(200 chars)", "x".repeat(128));
        for (raw, logged) in [
            ("visit-123", "visit-123"),
            (
                "a2\n2026-12-02T03:53:41Z INFO forged",
                "a2\\n2026-12-02T03:53:41Z INFO forged",
            ),
            ("a3\r\nINJECTED", "a3\\r\\nINJECTED"),
            ("a\0b", "a\\u{0}b"),
            ("tab\there", "tab\\there"),
            ("back\\slash", "back\\\\slash"),
            ("esc\u{1b}[31m", "esc\\u{1b}[31m"),
            ("line\u{2028}sep", "line\\u{2028}sep"),
            ("Москва", "Москва"),
            (long.as_str(), cut.as_str()),
        ] {
            assert_eq!(Clean(raw).to_string(), logged, "{raw:?}");
        }
    }

    #[test]
    fn a_throttle_writes_once_per_period_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(10));
        let s = Duration::from_secs;
        for (key, at, want) in [
            ("site", t0, Some(0)),
            ("site", t0 + s(1), None),
            ("site", t0 + s(9), None),
            ("other", t0 + s(9), Some(0)),
            ("site", t0 + s(10), Some(2)),
            ("site", t0 + s(11), None),
            ("site", t0 + s(30), Some(1)),
        ] {
            assert_eq!(t.allow(key, at), want, "{key} at {:?}", at - t0);
        }
    }
}
