//! Lower-case hex, the one encoder for digests and tokens (branches,
//! route tokens, signed links, webhook signatures, session ids, checksums).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes, bytes.len() * 2);
    s
}

/// The first `digits` hex digits of `bytes` (all of them when it has
/// fewer), appended to `out` without an allocation of their own.
pub fn push_hex(out: &mut String, bytes: &[u8], digits: usize) {
    for (i, &b) in bytes.iter().enumerate() {
        if 2 * i >= digits {
            break;
        }
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        if 2 * i + 1 < digits {
            out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
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
}
