//! Line and colon search for the message indexer, eight bytes at a time.
//!
//! A header line is ~40 bytes: `memchr` per line spent more on its call
//! and set-up than on the search, and a byte loop costs ~4 instructions a
//! byte. Here the buffer is read 16 bytes at a time in safe code: a block
//! is first tested for the bytes sought as a whole ([`holds`]), and only
//! the block that holds one is searched for its offset, with the
//! zero-byte trick of "Bit Twiddling Hacks" on its two little-endian
//! words: `(v - 0x01…) & !v & 0x80…` sets bit 7 of the lowest byte of `v`
//! that is zero, and possibly of bytes above it (a borrow runs upwards),
//! never below; so its lowest set bit is exact, which is all a "first
//! occurrence" search reads. Blocks may run past the line (into the next
//! one): only the first match counts. The last bytes of the buffer (fewer
//! than 16) are searched one at a time.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;
const LFS: u64 = ONES * b'\n' as u64;
const COLONS: u64 = ONES * b':' as u64;

/// The 16 bytes at `i`, when the buffer has them.
#[inline(always)]
fn block(b: &[u8], i: usize) -> Option<&[u8; 16]> {
    b.get(i..)?.first_chunk()
}

/// Whether the block holds `x` or `y`. A fold over all 16 bytes with no
/// early exit: the compiler makes that one vector compare (on x86-64 the
/// baseline SSE2's pcmpeqb and pmovmskb, ~8 instructions per 16 bytes
/// with the loop), where an `any` became 16 compare-and-branch pairs and
/// the word trick ~27 instructions. The exact offset is then found once,
/// in the block that holds the byte ([`offset`]).
#[inline(always)]
fn holds(c: &[u8; 16], x: u8, y: u8) -> bool {
    c.iter()
        .fold(0u8, |a, &v| a | u8::from(v == x) | u8::from(v == y))
        != 0
}

/// Bit 7 set in the lowest zero byte of `v` (see the module comment).
#[inline(always)]
fn zero_bytes(v: u64) -> u64 {
    v.wrapping_sub(ONES) & !v & HIGHS
}

/// Offset in the block of its first byte equal to a byte of `x` or of `y`
/// (each eight copies of one byte); 16 when there is none.
#[inline(always)]
fn offset(c: &[u8; 16], x: u64, y: u64) -> usize {
    let w = u128::from_le_bytes(*c);
    let (lo, hi) = (w as u64, (w >> 64) as u64);
    // Each mask's lowest bit is exact, so the lower of the two is.
    let m = zero_bytes(lo ^ x) | zero_bytes(lo ^ y);
    if m != 0 {
        return (m.trailing_zeros() / 8) as usize;
    }
    let m = zero_bytes(hi ^ x) | zero_bytes(hi ^ y);
    8 + (m.trailing_zeros() / 8) as usize
}

/// Index of the first byte at or after `i` that is `'\n'`, else `b.len()`.
#[inline(always)]
pub fn find_lf(b: &[u8], mut i: usize) -> usize {
    while let Some(c) = block(b, i) {
        if holds(c, b'\n', b'\n') {
            return i + offset(c, LFS, LFS);
        }
        i += 16;
    }
    while i < b.len() && b[i] != b'\n' {
        i += 1;
    }
    i.min(b.len())
}

/// For the header line starting at `i`: the index of its first colon when
/// that comes before the first `'\n'` (RFC 3261 7.3.1 puts the colon on a
/// header's first line), and the index of that `'\n'` (`b.len()` when
/// none).
#[inline]
pub fn colon_and_lf(b: &[u8], mut i: usize) -> (Option<usize>, usize) {
    while let Some(c) = block(b, i) {
        if holds(c, b'\n', b':') {
            let k = offset(c, LFS, COLONS);
            if c.get(k) == Some(&b':') {
                return (Some(i + k), find_lf(b, i + k + 1));
            }
            return (None, i + k);
        }
        i += 16;
    }
    while i < b.len() && b[i] != b'\n' && b[i] != b':' {
        i += 1;
    }
    if i < b.len() && b[i] == b':' {
        (Some(i), find_lf(b, i + 1))
    } else {
        (None, i.min(b.len()))
    }
}

/// For the line starting at `i` whose `'\n'` is at `lf` (`b.len()` when
/// none): (end of its content, index after its terminator). A CR before
/// the LF is part of the terminator; without an LF the line runs to the
/// end of the buffer, CR included.
#[inline]
pub fn terminate(b: &[u8], i: usize, lf: usize) -> (usize, usize) {
    if lf >= b.len() {
        return (b.len(), b.len());
    }
    let end = if lf > i && b[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    (end, lf + 1)
}

/// End of the line starting at `i`: (index of its terminator, index after it).
#[inline]
pub fn line_end(b: &[u8], i: usize) -> (usize, usize) {
    terminate(b, i, find_lf(b, i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lf_by_bytes(b: &[u8], i: usize) -> usize {
        b[i..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(b.len(), |p| i + p)
    }

    fn colon_and_lf_by_bytes(b: &[u8], i: usize) -> (Option<usize>, usize) {
        let lf = lf_by_bytes(b, i);
        (b[i..lf].iter().position(|&c| c == b':').map(|p| i + p), lf)
    }

    /// Every start in buffers built from the bytes that matter and the
    /// bytes one below/above them (where a borrow could mislead the trick).
    #[test]
    fn searches_match_byte_loops_table() {
        let alphabet = [
            b'\n', b':', b'\r', b' ', 0x0b, 0x09, 0x3b, 0x39, 0, 0x80, 0xff, b'a',
        ];
        let mut bufs: Vec<Vec<u8>> = vec![Vec::new()];
        // Every buffer of length 0..=3 over the alphabet, padded on both
        // sides so that matches fall at every offset of a word.
        for len in 1..=3u32 {
            for n in 0..alphabet.len().pow(len) {
                let mut v = Vec::new();
                let mut k = n;
                for _ in 0..len {
                    v.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                for pad in [0usize, 3, 7, 8, 13, 15, 16, 17, 24, 31] {
                    let mut b = vec![b'x'; pad];
                    b.extend_from_slice(&v);
                    b.extend(std::iter::repeat_n(b'y', (pad * 5) % 11));
                    bufs.push(b);
                }
            }
        }
        for b in &bufs {
            for i in 0..=b.len() {
                assert_eq!(find_lf(b, i), lf_by_bytes(b, i), "{b:?} {i}");
                assert_eq!(colon_and_lf(b, i), colon_and_lf_by_bytes(b, i), "{b:?} {i}");
            }
        }
    }

    proptest! {
        #[test]
        fn searches_match_byte_loops(
            b in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b':'), Just(b'\r'), any::<u8>()], 0..80),
            start in 0usize..80,
        ) {
            let i = start.min(b.len());
            prop_assert_eq!(find_lf(&b, i), lf_by_bytes(&b, i));
            prop_assert_eq!(colon_and_lf(&b, i), colon_and_lf_by_bytes(&b, i));
        }
    }
}
