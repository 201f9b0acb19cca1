//! The hash of the maps keyed by configured numbers (pool numbers, static
//! numbers): every INVITE looks its dialed number up in them, and std's
//! SipHash took ~200 instructions per look-up (issue 15), a word-at-a-time
//! multiply-and-rotate takes a few dozen.
//!
//! SipHash's keyed hashing guards maps whose keys an attacker chooses
//! against collision flooding. These maps are built from the
//! configuration and never grow: a dialed number only looks up, and a
//! look-up costs at most the probe of the configured keys, whatever it
//! hashes to.

use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by configured numbers.
pub type NumberMap<V> = std::collections::HashMap<String, V, BuildHasherDefault<NumberHasher>>;

/// FxHash's mixing step over eight bytes at a time, with murmur3's
/// finaliser so that the low bits (the bucket hashbrown picks) depend on
/// every digit: without it numbers differing in their last digits share
/// their low bits and pile into one bucket.
#[derive(Clone, Copy, Debug, Default)]
pub struct NumberHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

fn mix(h: u64, w: u64) -> u64 {
    (h.rotate_left(5) ^ w).wrapping_mul(K)
}

impl Hasher for NumberHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut words = bytes.chunks_exact(8);
        for c in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = mix(h, u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let w = rest
                .iter()
                .enumerate()
                .fold(0u64, |w, (i, &b)| w | (u64::from(b) << (8 * i)));
            h = mix(h, w);
        }
        self.0 = h;
    }

    fn write_u8(&mut self, b: u8) {
        self.0 = mix(self.0, u64::from(b));
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = mix(self.0, n as u64);
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::*;

    fn hash(s: &str) -> u64 {
        BuildHasherDefault::<NumberHasher>::default().hash_one(s)
    }

    /// A map with this hash finds what std's finds.
    #[test]
    fn looks_up_as_the_std_map() {
        let keys: Vec<String> = (0..2000u64)
            .map(|i| format!("7495{:07}", i * 37))
            .chain(["", "1", "12345678", "123456789", "anonymous"].map(String::from))
            .collect();
        let mut ours = NumberMap::default();
        let mut std = std::collections::HashMap::new();
        for (i, k) in keys.iter().enumerate().step_by(2) {
            ours.insert(k.clone(), i);
            std.insert(k.clone(), i);
        }
        for k in &keys {
            assert_eq!(ours.get(k.as_str()), std.get(k.as_str()), "{k}");
        }
        assert_eq!(ours.get("74950000000x"), None);
    }

    /// Numbers of one pool (consecutive, differing in their last digits)
    /// spread over the low bits that pick a bucket.
    #[test]
    fn consecutive_numbers_spread_over_the_low_bits() {
        let low: HashSet<u64> = (0..1024u64)
            .map(|i| hash(&format!("7495123{i:04}")) & 1023)
            .collect();
        assert!(low.len() > 550, "{} distinct of 1024", low.len());
        // Lengths count: a prefix is another key.
        assert_ne!(hash("7495"), hash("74950"));
        assert_ne!(hash(""), hash("0"));
    }
}
