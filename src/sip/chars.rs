//! Character classes of RFC 3261 section 25 and small scanning helpers.

/// `token` characters: alphanum and `-.!%*_+`'~`.
pub fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// Linear white space, including the CR/LF of folded lines.
pub fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
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
    if s.is_empty() || s.len() > max_digits || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Splits a header value at top-level commas (outside quotes and `<>`),
/// yielding each element's byte range within `s`.
pub fn split_commas(s: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(1);
    let (mut start, mut in_quote, mut in_angle, mut i) = (0, false, false, 0);
    while i < s.len() {
        match s[i] {
            b'\\' if in_quote => i += 1,
            b'"' => in_quote = !in_quote,
            b'<' if !in_quote => in_angle = true,
            b'>' if !in_quote => in_angle = false,
            b',' if !in_quote && !in_angle => {
                out.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push((start, s.len()));
    out
}

/// Parameters `;name[=value]` as they follow a URI or a header value.
/// Returns `None` when a parameter is empty (`;;`) or not a token.
pub fn parse_params(s: &[u8]) -> Option<Vec<Param<'_>>> {
    let mut out = Vec::new();
    let mut i = skip_lws(s, 0);
    while i < s.len() {
        if s[i] != b';' {
            return None;
        }
        i = skip_lws(s, i + 1);
        let name_start = i;
        while i < s.len() && is_token(s[i]) {
            i += 1;
        }
        if i == name_start {
            return None;
        }
        let name = (name_start, i);
        i = skip_lws(s, i);
        let mut value = None;
        if i < s.len() && s[i] == b'=' {
            i = skip_lws(s, i + 1);
            let v_start = i;
            if i < s.len() && s[i] == b'"' {
                i = end_of_quoted(s, i)?;
            } else if i < s.len() && s[i] == b'[' {
                while i < s.len() && s[i] != b']' {
                    i += 1;
                }
                if i == s.len() {
                    return None;
                }
                i += 1;
            } else {
                while i < s.len() && (is_token(s[i]) || s[i] == b':') {
                    i += 1;
                }
            }
            if i == v_start {
                return None;
            }
            value = Some((v_start, i));
            i = skip_lws(s, i);
        }
        out.push(Param {
            src: s,
            name,
            value,
        });
    }
    Some(out)
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
    /// The same parameter, its ranges shifted by `offset` into `src`
    /// (which must contain the original source at that offset).
    pub fn rebase(p: Param<'_>, src: &'a [u8], offset: usize) -> Param<'a> {
        Param {
            src,
            name: (p.name.0 + offset, p.name.1 + offset),
            value: p.value.map(|(a, b)| (a + offset, b + offset)),
        }
    }
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
