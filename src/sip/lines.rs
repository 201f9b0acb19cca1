//! Line and colon search for the message indexer, 64 bytes at a time.
//!
//! A header line is ~40 bytes: `memchr` per line spent more on its call
//! and set-up than on the search, and a search per line, even 16 bytes at
//! a time, cost ~115 instructions a line (issue 15). Here the buffer is
//! read once, in windows of 64 bytes: for each window two bit masks mark
//! its '\n' and ':' bytes (bit k for the byte at `base + k`), and every
//! question about a line is then answered from the masks with a shift and
//! a count of trailing zeros. On x86-64 the masks come from SSE2 (part of
//! the baseline: a compare and a `pmovmskb` per 16 bytes); elsewhere from
//! a byte loop. The window past the end of the buffer is padded with
//! zero bytes, which are neither '\n' nor ':'.

const WINDOW: usize = 64;

/// The '\n' and ':' masks of the 64 bytes at `base` (zero-padded past the
/// end of `b`).
fn masks(b: &[u8], base: usize) -> (u64, u64) {
    match b.get(base..).and_then(<[u8]>::first_chunk::<WINDOW>) {
        Some(w) => window_masks(w),
        None => {
            let mut w = [0u8; WINDOW];
            let tail = b.get(base..).unwrap_or_default();
            w[..tail.len()].copy_from_slice(tail);
            window_masks(&w)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn window_masks(w: &[u8; WINDOW]) -> (u64, u64) {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    let (mut lf, mut colon) = (0u64, 0u64);
    for (k, chunk) in w.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of the x86-64 baseline, so the intrinsics
        // exist on every CPU this code runs on; the load reads the 16
        // bytes of `chunk` (unaligned loads are allowed).
        let (l, c) = unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            (
                _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8))),
                _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b':' as i8))),
            )
        };
        // The mask is the low 16 bits.
        lf |= u64::from(l as u16) << (16 * k);
        colon |= u64::from(c as u16) << (16 * k);
    }
    (lf, colon)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn window_masks(w: &[u8; WINDOW]) -> (u64, u64) {
    w.iter().enumerate().fold((0, 0), |(lf, colon), (k, &c)| {
        (
            lf | u64::from(c == b'\n') << k,
            colon | u64::from(c == b':') << k,
        )
    })
}

/// A buffer's '\n' and ':' positions, one window of masks at a time. The
/// indexer asks about positions in increasing order, so each window is
/// computed once; a position before the current window (no caller does
/// that) recomputes its window and is answered as well.
pub struct Marks<'a> {
    b: &'a [u8],
    /// Start of the window the masks describe: a multiple of 64.
    base: usize,
    lf: u64,
    colon: u64,
}

impl<'a> Marks<'a> {
    pub fn new(b: &'a [u8]) -> Marks<'a> {
        let (lf, colon) = masks(b, 0);
        Marks {
            b,
            base: 0,
            lf,
            colon,
        }
    }

    /// The masks of the window holding `i` (which is inside the buffer),
    /// the bits below `i` cleared.
    #[inline(always)]
    fn at(&mut self, i: usize) -> (u64, u64) {
        if i.wrapping_sub(self.base) >= WINDOW {
            self.base = i - i % WINDOW;
            (self.lf, self.colon) = masks(self.b, self.base);
        }
        let above = u64::MAX << (i - self.base);
        (self.lf & above, self.colon & above)
    }

    /// Index of the first '\n' at or after `i`, else `b.len()`.
    #[inline]
    pub fn lf_from(&mut self, mut i: usize) -> usize {
        while i < self.b.len() {
            let (lf, _) = self.at(i);
            if lf != 0 {
                return self.base + lf.trailing_zeros() as usize;
            }
            i = self.base + WINDOW;
        }
        self.b.len()
    }

    /// For the header line starting at `i`: the index of its first colon
    /// when that comes before the first '\n' (RFC 3261 7.3.1 puts the
    /// colon on a header's first line), and the index of that '\n'
    /// (`b.len()` when none).
    ///
    /// The '\n' after a colon is the window's first one when the window
    /// has any (none comes before the colon): taken from the mask in hand
    /// rather than asked of `lf_from`, whose window check and shift it
    /// repeated for every header line.
    #[inline]
    pub fn colon_and_lf(&mut self, mut i: usize) -> (Option<usize>, usize) {
        while i < self.b.len() {
            let (lf, colon) = self.at(i);
            // 64 when the mask is empty.
            let (first_lf, first_colon) = (lf.trailing_zeros(), colon.trailing_zeros());
            if first_colon < first_lf {
                let at = self.base + first_colon as usize;
                let lf = if lf != 0 {
                    self.base + first_lf as usize
                } else {
                    self.lf_from(self.base + WINDOW)
                };
                return (Some(at), lf);
            }
            if lf != 0 {
                return (None, self.base + first_lf as usize);
            }
            i = self.base + WINDOW;
        }
        (None, self.b.len())
    }

    /// End of the line starting at `i`: (index of its terminator, index
    /// after it).
    #[inline]
    pub fn line_end(&mut self, i: usize) -> (usize, usize) {
        let lf = self.lf_from(i);
        terminate(self.b, i, lf)
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
            // One `Marks` asked in increasing order, as the indexer asks,
            // and a fresh one per question.
            let mut marks = Marks::new(b);
            for i in 0..=b.len() {
                assert_eq!(marks.lf_from(i), lf_by_bytes(b, i), "{b:?} {i}");
                assert_eq!(
                    marks.colon_and_lf(i),
                    colon_and_lf_by_bytes(b, i),
                    "{b:?} {i}"
                );
                assert_eq!(Marks::new(b).lf_from(i), lf_by_bytes(b, i), "{b:?} {i}");
            }
        }
    }

    /// Lines that cross the 64-byte windows, and questions that go back to
    /// an earlier window.
    #[test]
    fn searches_across_windows_and_backwards() {
        let mut b = Vec::new();
        for n in 0..40 {
            b.extend_from_slice(format!("H{n}: {}\r\n", "v".repeat(n * 7 % 90)).as_bytes());
        }
        b.extend_from_slice(&[b'x'; 70]);
        let mut marks = Marks::new(&b);
        let mut i = 0;
        let mut starts = Vec::new();
        while i < b.len() {
            starts.push(i);
            let (colon, lf) = marks.colon_and_lf(i);
            assert_eq!((colon, lf), colon_and_lf_by_bytes(&b, i), "at {i}");
            i = lf + 1;
        }
        assert_eq!(starts.len(), 41);
        for &i in starts.iter().rev() {
            assert_eq!(
                marks.colon_and_lf(i),
                colon_and_lf_by_bytes(&b, i),
                "back at {i}"
            );
            assert_eq!(marks.line_end(i).1, (lf_by_bytes(&b, i) + 1).min(b.len()));
        }
    }

    proptest! {
        #[test]
        fn searches_match_byte_loops(
            b in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b':'), Just(b'\r'), any::<u8>()], 0..300),
            start in 0usize..300,
        ) {
            let i = start.min(b.len());
            let mut marks = Marks::new(&b);
            prop_assert_eq!(marks.lf_from(i), lf_by_bytes(&b, i));
            prop_assert_eq!(marks.colon_and_lf(i), colon_and_lf_by_bytes(&b, i));
            prop_assert_eq!(Marks::new(&b).colon_and_lf(i), colon_and_lf_by_bytes(&b, i));
        }
    }
}
