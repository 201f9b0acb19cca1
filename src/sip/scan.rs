//! Single-pass scans behind the value parsers validation runs on every
//! message (name-addr brackets, header parameters, URI hosts).
//!
//! Each one answers exactly as the plain form it replaced (kept as the
//! oracle in the tests below); they exist because these loops ran for
//! every From, To, Contact, Route, Via and Request-URI of every message,
//! and iterator chains and multi-way `matches!` cost several instructions
//! per byte there.

use super::chars::end_of_quoted;

/// Bit classes of a byte, one table look-up for every question asked.
const TOKEN: u8 = 1;
const LWS: u8 = 2;
/// A host name character: alphanumeric, `-` or `.`.
const HOST: u8 = 4;
/// A bare parameter value character: a token character or `:`.
const PVALUE: u8 = 8;

const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let mut k = 0;
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            )
        {
            k |= TOKEN;
        }
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            k |= LWS;
        }
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' {
            k |= HOST;
        }
        if k & TOKEN != 0 || b == b':' {
            k |= PVALUE;
        }
        t[c] = k;
        c += 1;
    }
    t
};

#[inline]
fn is(c: u8, class: u8) -> bool {
    CLASS[c as usize] & class != 0
}

#[inline]
fn skip(s: &[u8], mut i: usize, class: u8) -> usize {
    while i < s.len() && is(s[i], class) {
        i += 1;
    }
    i
}

/// [`skip`] for runs that are often long (hosts, parameter values):
/// eight table look-ups and one test a step, then byte by byte.
#[inline]
fn skip_run(s: &[u8], mut i: usize, class: u8) -> usize {
    while let Some(w) = s.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let mut all = class;
        for &c in w {
            all &= CLASS[c as usize];
        }
        if all == 0 {
            break;
        }
        i += 8;
    }
    skip(s, i, class)
}

/// The end of a host name run (alphanumerics, `-`, `.`) starting at `i`.
pub(super) fn host_end(s: &[u8], i: usize) -> usize {
    skip_run(s, i, HOST)
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in the bytes of `x` below `n` (n ≤ 128). The lowest set
/// flag is exact: a borrow only starts at a byte that is below `n`.
#[inline]
fn bytes_below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(LO * u64::from(n)) & !x & HI
}

/// High bit set in the bytes of `x` equal to `b` (lowest flag exact).
#[inline]
fn bytes_eq(x: u64, b: u8) -> u64 {
    let y = x ^ (LO * u64::from(b));
    y.wrapping_sub(LO) & !y & HI
}

/// Whether `s` holds a byte that is ASCII white space or a control (below
/// `!`, or DEL): eight bytes a step.
pub(super) fn has_space_or_control(s: &[u8]) -> bool {
    let mut i = 0;
    while let Some(w) = s.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let x = u64::from_le_bytes(*w);
        if bytes_below(x, b'!') | bytes_eq(x, 0x7f) != 0 {
            return true;
        }
        i += 8;
    }
    s[i..].iter().any(|&c| c <= b' ' || c == 0x7f)
}

/// The bytes that end a bracketed URI: `>`, and the ones it may not hold.
#[inline]
fn is_bracket_stop(c: u8) -> bool {
    matches!(c, b'>' | b' ' | b'\t' | b'\r' | b'\n' | b'<')
}

/// The index of the first `>`, `<` or LWS byte at or after `i` (`s.len()`
/// when none): eight bytes a step. A word's candidates are the bytes below
/// `!` and `<`/`>` (`x | 2 == '>'`); a control byte that is no LWS is a
/// false candidate, passed over by the exact test.
pub(super) fn bracket_stop(s: &[u8], mut i: usize) -> usize {
    while let Some(w) = s.get(i..i + 8) {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let x = u64::from_le_bytes(b);
        let m = bytes_below(x, b'!') | bytes_eq(x | (LO * 2), b'>');
        if m == 0 {
            i += 8;
            continue;
        }
        let p = i + (m.trailing_zeros() / 8) as usize;
        if is_bracket_stop(s[p]) {
            return p;
        }
        i = p + 1;
    }
    while i < s.len() && !is_bracket_stop(s[i]) {
        i += 1;
    }
    i
}

/// One header parameter: (name, value) ranges.
pub(super) type ParamRanges = ((usize, usize), Option<(usize, usize)>);

/// Walks a header parameter list `;name[=value]…` exactly as
/// `chars::params` does, calling `f` for each parameter until it returns
/// true. `Err(())` at the first malformed parameter (after `f` saw the
/// ones before it); `Ok(Some(p))` with the parameter `f` stopped at.
#[inline]
pub(super) fn walk_params(
    s: &[u8],
    mut f: impl FnMut(ParamRanges) -> bool,
) -> Result<Option<ParamRanges>, ()> {
    let n = s.len();
    let mut i = skip(s, 0, LWS);
    while i < n {
        if s[i] != b';' {
            return Err(());
        }
        i = skip(s, i + 1, LWS);
        let name_start = i;
        i = skip(s, i, TOKEN);
        if i == name_start {
            return Err(());
        }
        let name = (name_start, i);
        i = skip(s, i, LWS);
        let mut value = None;
        if i < n && s[i] == b'=' {
            i = skip(s, i + 1, LWS);
            let v_start = i;
            if i < n && s[i] == b'"' {
                i = end_of_quoted(s, i).ok_or(())?;
            } else if i < n && s[i] == b'[' {
                i += memchr::memchr(b']', &s[i..]).ok_or(())? + 1;
            } else {
                i = skip_run(s, i, PVALUE);
            }
            if i == v_start {
                return Err(());
            }
            value = Some((v_start, i));
            i = skip(s, i, LWS);
        }
        if f((name, value)) {
            return Ok(Some((name, value)));
        }
    }
    Ok(None)
}

/// `chars::params_valid` in one pass (what `Via::parse` checks, now
/// through `walk_params` directly: kept for its table test).
#[cfg(test)]
pub(super) fn params_valid(s: &[u8]) -> bool {
    walk_params(s, |_| false).is_ok()
}

/// `chars::find_param` in one pass: the first parameter named `name`
/// (ASCII case-insensitive) before any malformed one.
pub(super) fn find_param(s: &[u8], name: &[u8]) -> Option<ParamRanges> {
    walk_params(s, |((a, b), _)| s[a..b].eq_ignore_ascii_case(name))
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::chars;
    use proptest::prelude::*;

    /// The bracket scan as NameAddr::parse wrote it.
    fn bracket_stop_bytewise(s: &[u8], mut i: usize) -> usize {
        while i < s.len() && !matches!(s[i], b'>' | b' ' | b'\t' | b'\r' | b'\n' | b'<') {
            i += 1;
        }
        i
    }

    fn find_param_old(s: &[u8], name: &[u8]) -> Option<ParamRanges> {
        chars::find_param(s, name).map(|p| (p.name, p.value))
    }

    const CASES: &[&str] = &[
        "",
        ";",
        " ;tag=1",
        ";tag=1234SIPpTag001",
        ";tag=a;x;y=\"q\\\"z\";z=[::1]",
        ";branch=z9hG4bK-1;rport;received=10.0.0.1",
        "; tag = a ;x",
        ";tag=",
        ";=a",
        ";;",
        ";a;",
        "x;a",
        ";a=\"unterminated",
        ";a=[::1",
        ";a=b:c;TAG=T",
        ";a b",
        ";a=b c",
        "\r\n ;maddr=h",
        ";a=\"x\\",
        "<sip:a@h>",
        "sip:8-916-123-45-67@127.0.0.1:5061;user=phone>;tag=1",
        "sip:a@h\x01>\x7f",
        "sip:a@h\x01\x02\x03\x04\x05\x06\x07\x08\x09",
        "0123456789abcdef0123456789<",
        "1-bench-3f2a9c1d7e@127.0.0.1",
        "1-bench-3f2a9c1d7e@127.0.0.1\x7f",
        "1-bench-3f2a9c1d7e@127\u{80}0.0.1",
        "abcdefgh abcdefgh",
        "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}>",
    ];

    #[test]
    fn table_scans_match_the_old_forms() {
        for c in CASES {
            let s = c.as_bytes();
            for i in 0..=s.len() {
                assert_eq!(bracket_stop(s, i), bracket_stop_bytewise(s, i), "{c:?} {i}");
                assert_eq!(
                    host_end(s, i),
                    i + s[i..]
                        .iter()
                        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'-' || c == b'.'))
                        .unwrap_or(s.len() - i),
                    "{c:?} {i}"
                );
            }
            assert_eq!(
                has_space_or_control(s),
                s.iter().any(|&c| c <= b' ' || c == 0x7f),
                "{c:?}"
            );
            assert_eq!(params_valid(s), chars::params_valid(s), "{c:?}");
            for name in ["tag", "TAG", "x", "a", "z", "branch", "rport", "maddr"] {
                assert_eq!(
                    find_param(s, name.as_bytes()),
                    find_param_old(s, name.as_bytes()),
                    "{c:?} {name}"
                );
            }
        }
    }

    #[test]
    fn class_table_matches_the_char_predicates() {
        for c in 0..=255u8 {
            assert_eq!(is(c, TOKEN), chars::is_token(c), "{c}");
            assert_eq!(is(c, LWS), chars::is_lws(c), "{c}");
            assert_eq!(is(c, PVALUE), chars::is_token(c) || c == b':', "{c}");
        }
    }

    proptest! {
        #[test]
        fn scans_match_on_any_bytes(
            v in proptest::collection::vec(
                prop_oneof![
                    Just(b';'), Just(b'='), Just(b'"'), Just(b'\\'), Just(b'['), Just(b']'),
                    Just(b' '), Just(b'\t'), Just(b'\r'), Just(b'\n'), Just(b'<'), Just(b'>'),
                    Just(b':'), Just(b't'), Just(b'a'), Just(b'g'), Just(b'1'), any::<u8>(),
                ],
                0..40,
            ),
            i in 0usize..41,
        ) {
            let i = i.min(v.len());
            prop_assert_eq!(bracket_stop(&v, i), bracket_stop_bytewise(&v, i));
            prop_assert_eq!(params_valid(&v), chars::params_valid(&v));
            prop_assert_eq!(
                has_space_or_control(&v),
                v.iter().any(|&c| c <= b' ' || c == 0x7f)
            );
            prop_assert_eq!(find_param(&v, b"tag"), find_param_old(&v, b"tag"));
        }
    }
}
