//! Character classes of RFC 3261 section 25 and small scanning helpers.

/// `token` characters: alphanum and `-.!%*_+`'~`.
pub fn is_token(b: u8) -> bool {
    TOKEN[b as usize]
}

const TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        c += 1;
    }
    t
};

/// Linear white space, including the CR/LF of folded lines.
pub fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Whether every byte of `s` is a token character (`s.iter().all(is_token)`).
/// Header names are letters, digits and '-' nearly always: eight bytes at
/// a time are tested for those (`word_is_alnum_dash`), the last word
/// overlapping the one before; a name with other bytes, or shorter than a
/// word, gets the table. The byte loop cost ~7 instructions a byte for
/// every header name `classify` does not know (Allow, Supported,
/// Session-Expires …), ~45 bytes per trunk INVITE.
#[inline]
pub fn all_token(s: &[u8]) -> bool {
    if let (Some(first), Some(last)) = (s.first_chunk::<8>(), s.last_chunk::<8>()) {
        let mut i = 8;
        let mut ok = word_is_alnum_dash(u64::from_le_bytes(*first))
            && word_is_alnum_dash(u64::from_le_bytes(*last));
        while ok && i + 8 < s.len() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&s[i..i + 8]);
            ok = word_is_alnum_dash(u64::from_le_bytes(w));
            i += 8;
        }
        if ok {
            return true;
        }
    }
    // No early exit: the names are short and a branch a byte cost more.
    s.iter().fold(true, |all, &c| all & is_token(c))
}

/// Whether each byte of `x` is an ASCII letter, digit or '-' (all token
/// characters). For bytes below 0x80, `x + (0x80 - lo)` has the high bit
/// set exactly where the byte is `>= lo`, and no byte carries into the
/// next; a byte with the high bit set is never accepted.
#[inline]
fn word_is_alnum_dash(x: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let in_range = |v: u64, lo: u8, hi: u8| {
        v.wrapping_add(LO * u64::from(0x80 - lo)) & !v.wrapping_add(LO * u64::from(0x7f - hi))
    };
    // OR 0x20 maps exactly 'A'..='Z' and 'a'..='z' into 'a'..='z'.
    let letter = in_range(x | (LO * 0x20), b'a', b'z');
    let digit = in_range(x, b'0', b'9');
    let dash = {
        let y = x ^ (LO * u64::from(b'-'));
        // High bit where y's byte is zero (for bytes below 0x80).
        !(y.wrapping_add(LO * 0x7f))
    };
    (letter | digit | dash) & !x & HI == HI
}

/// Index of the first byte at or after `i` that is not LWS.
pub fn skip_lws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_lws(s[i]) {
        i += 1;
    }
    i
}

/// `s` with LWS removed from both ends.
pub fn trim_lws(s: &[u8]) -> &[u8] {
    let start = skip_lws(s, 0);
    let mut end = s.len();
    while end > start && is_lws(s[end - 1]) {
        end -= 1;
    }
    &s[start..end]
}

/// Case-insensitive ASCII comparison.
pub fn eq_ic(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Parses a decimal number of at most `max_digits` digits (no sign, no LWS).
pub fn parse_u64(s: &[u8], max_digits: usize) -> Option<u64> {
    if s.is_empty() || s.len() > max_digits {
        return None;
    }
    // Up to 19 digits cannot overflow (10^19 - 1 < 2^64): one pass, no
    // checked arithmetic. Content-Length and Max-Forwards of every
    // message come here.
    if s.len() <= 19 {
        let mut n = 0u64;
        for &c in s {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            n = n * 10 + u64::from(d);
        }
        return Some(n);
    }
    if !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Splits a header value at top-level commas (outside quotes and `<>`),
/// yielding each element's byte range within `s`.
pub fn split_commas(s: &[u8]) -> CommaSplit<'_> {
    CommaSplit {
        s,
        pos: 0,
        done: false,
    }
}

/// The bytes [`CommaSplit`] acts on: quotes, escapes, angle brackets, commas.
const COMMA_SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'\\' as usize] = true;
    t[b'"' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t[b',' as usize] = true;
    t
};

/// Iterator of [`split_commas`]; allocation-free because it runs for
/// every Via, Route and Contact value of every message.
pub struct CommaSplit<'a> {
    s: &'a [u8],
    pos: usize,
    done: bool,
}

impl Iterator for CommaSplit<'_> {
    type Item = (usize, usize);
    fn next(&mut self) -> Option<(usize, usize)> {
        if self.done {
            return None;
        }
        let s = self.s;
        let start = self.pos;
        // Without a comma ahead the rest is one element, whatever its
        // quotes and brackets: memchr answers that faster than the scan
        // below (most Via, Contact and Route values are one element).
        if memchr::memchr(b',', &s[start..]).is_none() {
            self.done = true;
            return Some((start, s.len()));
        }
        let (mut in_quote, mut in_angle, mut i) = (false, false, start);
        while i < s.len() {
            // Most bytes are none of the five that matter: one table look-up
            // passes them (the match below tested each against all five).
            if !COMMA_SPECIAL[s[i] as usize] {
                i += 1;
                continue;
            }
            match s[i] {
                b'\\' if in_quote => i += 1,
                b'"' => in_quote = !in_quote,
                b'<' if !in_quote => in_angle = true,
                b'>' if !in_quote => in_angle = false,
                b',' if !in_quote && !in_angle => {
                    self.pos = i + 1;
                    return Some((start, i));
                }
                _ => {}
            }
            i += 1;
        }
        self.done = true;
        Some((start, s.len()))
    }
}

/// Parameters `;name[=value]` as they follow a URI or a header value.
/// Yields `Err(())` (and stops) at a parameter that is empty (`;;`) or not
/// a token.
pub fn params(s: &[u8]) -> Params<'_> {
    Params {
        s,
        i: skip_lws(s, 0),
        failed: false,
    }
}

/// Whether a whole parameter list is well formed.
pub fn params_valid(s: &[u8]) -> bool {
    params(s).all(|p| p.is_ok())
}

/// The parameter `name` (case-insensitive) of a list.
pub fn find_param<'a>(s: &'a [u8], name: &[u8]) -> Option<Param<'a>> {
    params(s)
        .map_while(Result::ok)
        .find(|p| p.name().eq_ignore_ascii_case(name))
}

pub struct Params<'a> {
    s: &'a [u8],
    i: usize,
    failed: bool,
}

impl<'a> Iterator for Params<'a> {
    type Item = Result<Param<'a>, ()>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.i >= self.s.len() {
            return None;
        }
        let r = self.step();
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }
}

impl<'a> Params<'a> {
    fn step(&mut self) -> Result<Param<'a>, ()> {
        let s = self.s;
        let mut i = self.i;
        if s[i] != b';' {
            return Err(());
        }
        i = skip_lws(s, i + 1);
        let name_start = i;
        while i < s.len() && is_token(s[i]) {
            i += 1;
        }
        if i == name_start {
            return Err(());
        }
        let name = (name_start, i);
        i = skip_lws(s, i);
        let mut value = None;
        if i < s.len() && s[i] == b'=' {
            i = skip_lws(s, i + 1);
            let v_start = i;
            if i < s.len() && s[i] == b'"' {
                i = end_of_quoted(s, i).ok_or(())?;
            } else if i < s.len() && s[i] == b'[' {
                i += memchr::memchr(b']', &s[i..]).ok_or(())? + 1;
            } else {
                while i < s.len() && (is_token(s[i]) || s[i] == b':') {
                    i += 1;
                }
            }
            if i == v_start {
                return Err(());
            }
            value = Some((v_start, i));
            i = skip_lws(s, i);
        }
        self.i = i;
        Ok(Param {
            src: s,
            name,
            value,
        })
    }
}

/// One `;name=value` parameter, as byte ranges into its source.
#[derive(Clone, Copy, Debug)]
pub struct Param<'a> {
    src: &'a [u8],
    /// Range of the name.
    pub name: (usize, usize),
    /// Range of the value, if any.
    pub value: Option<(usize, usize)>,
}

impl<'a> Param<'a> {
    pub fn name(&self) -> &'a [u8] {
        &self.src[self.name.0..self.name.1]
    }
    pub fn value(&self) -> Option<&'a [u8]> {
        self.value.map(|(a, b)| &self.src[a..b])
    }
}

/// Index just after the closing quote of the quoted string starting at `i`.
pub fn end_of_quoted(s: &[u8], mut i: usize) -> Option<usize> {
    debug_assert_eq!(s.get(i), Some(&b'"'));
    i += 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// RFC 3261 25.1 `user` characters, without escapes: what a configured SIP
/// login or extension may contain so it can be written into a URI as is.
pub fn is_user_str(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&c))
}

/// `String::from_utf8_lossy`, with the check for the usual case (valid
/// UTF-8: digits) done by the faster [`utf8`] first.
pub fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    match utf8(b) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// `std::str::from_utf8`, with the usual case (ASCII: a user part, a
/// number, a URI) checked a word at a time first: `from_utf8` took ~125
/// instructions per short user part, five times per INVITE (issue 15).
pub fn utf8(b: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if b.is_ascii() {
        // SAFETY: every ASCII byte is a whole UTF-8 character, so ASCII
        // bytes are valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(b) });
    }
    std::str::from_utf8(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ASCII shortcut of [`utf8`] answers as `from_utf8` does.
    #[test]
    fn utf8_matches_from_utf8() {
        for b in [
            &b""[..],
            b"89161234567",
            b"8-916-123-45-67 long enough for two words",
            b"\xff",
            b"abc\xc3",
            "Мос".as_bytes(),
            b"0123456\x80",
            b"\x7f\x00",
        ] {
            assert_eq!(utf8(b).ok(), std::str::from_utf8(b).ok(), "{b:?}");
            assert_eq!(lossy(b), String::from_utf8_lossy(b));
        }
    }

    /// `parse_u64` as it was: digits checked, then checked arithmetic.
    fn parse_u64_checked(s: &[u8], max_digits: usize) -> Option<u64> {
        if s.is_empty() || s.len() > max_digits || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        s.iter().try_fold(0u64, |acc, d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
    }

    #[test]
    fn parse_u64_table() {
        for s in [
            "",
            "0",
            "69",
            "007",
            "4294967296",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "1a",
            "/",
            ":",
            " 1",
            "1 ",
            "-1",
        ] {
            for max in [2, 10, 19, 20, 30] {
                assert_eq!(
                    parse_u64(s.as_bytes(), max),
                    parse_u64_checked(s.as_bytes(), max),
                    "{s:?} {max}"
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_u64_matches_checked(
            s in proptest::collection::vec(
                proptest::prop_oneof![b'0'..=b'9', proptest::prelude::any::<u8>()],
                0..24,
            ),
            max in 0usize..25,
        ) {
            proptest::prop_assert_eq!(parse_u64(&s, max), parse_u64_checked(&s, max));
        }
    }

    fn all_token_by_bytes(s: &[u8]) -> bool {
        s.iter().all(|&c| is_token(c))
    }

    /// Every byte value at every position of names of every length up to
    /// 24 (the word test, the overlapping last word and the table path).
    #[test]
    fn all_token_matches_bytes_table() {
        for len in 0..24 {
            for pos in 0..len.max(1) {
                for c in 0..=255u8 {
                    let mut s = b"Session-Expires-X9y-Z0ab".to_vec();
                    s.truncate(len);
                    if pos < len {
                        s[pos] = c;
                    }
                    assert_eq!(all_token(&s), all_token_by_bytes(&s), "{s:?}");
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn all_token_matches_bytes(
            s in proptest::collection::vec(
                proptest::prop_oneof![
                    b'a'..=b'z', b'A'..=b'Z', b'0'..=b'9', proptest::strategy::Just(b'-'),
                    proptest::prelude::any::<u8>(),
                ],
                0..40,
            ),
        ) {
            proptest::prop_assert_eq!(all_token(&s), all_token_by_bytes(&s));
        }
    }

    /// The comma split as a plain scan of every byte (the form before the
    /// table and the memchr shortcut).
    fn split_by_scanning(s: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let (mut in_quote, mut in_angle, mut start, mut i) = (false, false, 0, 0);
        while i < s.len() {
            match s[i] {
                b'\\' if in_quote => i += 1,
                b'"' => in_quote = !in_quote,
                b'<' if !in_quote => in_angle = true,
                b'>' if !in_quote => in_angle = false,
                b',' if !in_quote && !in_angle => {
                    out.push((start, i));
                    start = i + 1;
                    in_quote = false;
                    in_angle = false;
                }
                _ => {}
            }
            i += 1;
        }
        out.push((start, s.len()));
        out
    }

    #[test]
    fn comma_split_matches_scanning() {
        for v in [
            "",
            ",",
            ",,",
            "<sip:a@h>",
            "<sip:a@h>, <sip:b@h>",
            "\"a, b\" <sip:a@h>, c <sip:c@h>",
            "\"a\\\", b\" <sip:a@h>,x",
            "<sip:a@h;x=1,2>,<sip:b@h>",
            "\"unterminated, <sip:a@h>",
            "<unclosed, x",
            "SIP/2.0/UDP h;branch=z9hG4bK1, SIP/2.0/TCP g",
            "a\\,b",
            "\"x\\\"",
            "trailing,",
        ] {
            let got: Vec<_> = split_commas(v.as_bytes()).collect();
            assert_eq!(got, split_by_scanning(v.as_bytes()), "{v:?}");
        }
    }
}
