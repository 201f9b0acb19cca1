//! Lower-case hex, the one encoder for digests and tokens (branches,
//! route tokens, signed links, webhook signatures, session ids, checksums).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes, bytes.len() * 2);
    s
}

/// The two digits of `b`, high nibble first.
fn pair(b: u8) -> [u8; 2] {
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]]
}

/// The first `digits` hex digits of `bytes` (all of them when it has
/// fewer), appended to `out` without an allocation of their own.
pub fn push_hex(out: &mut String, bytes: &[u8], digits: usize) {
    for (i, &b) in bytes.iter().enumerate().take(digits.div_ceil(2)) {
        let [high, low] = pair(b);
        out.push(char::from(high));
        if 2 * i + 1 < digits {
            out.push(char::from(low));
        }
    }
}

/// `bytes` as hex into `out`, two digits a byte, as far as `out` goes:
/// the fixed-size tokens (route tokens, branches, tags) kept on the stack.
pub fn hex_into(out: &mut [u8], bytes: &[u8]) {
    for (slot, &b) in out.chunks_mut(2).zip(bytes) {
        slot.copy_from_slice(&pair(b)[..slot.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits() {
        for (bytes, digits, want) in [
            (&[0x00u8, 0xff, 0x1a][..], 6, "00ff1a"),
            (&[0xab, 0xcd][..], 3, "abc"),
            (&[0xab, 0xcd][..], 0, ""),
            (&[0xab][..], 8, "ab"),
        ] {
            let mut s = String::new();
            push_hex(&mut s, bytes, digits);
            assert_eq!(s, want, "{bytes:?} to {digits} digits");
        }
        assert_eq!(hex(&[0xde, 0xad]), "dead");
    }

    /// The array form writes the digits the `String` form does, up to the
    /// array's length.
    #[test]
    fn hex_into_an_array_as_push_hex() {
        let bytes = [0x00u8, 0xff, 0x1a, 0x9c];
        for len in 0..=9 {
            let mut out = vec![b'.'; len];
            hex_into(&mut out, &bytes);
            let mut want = String::new();
            push_hex(&mut want, &bytes, len);
            let written = &out[..want.len()];
            assert_eq!(written, want.as_bytes(), "{len} digits");
            assert!(out[want.len()..].iter().all(|&c| c == b'.'), "{len}");
        }
    }
}
