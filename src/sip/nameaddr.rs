//! `name-addr / addr-spec` values with header parameters: From, To,
//! Contact, Route, Record-Route, P-Asserted-Identity (RFC 3261 20.10, 25.1).

use super::chars::{end_of_quoted, find_param, is_token, params_valid, skip_lws};
use super::uri::scheme_of;

/// One decoded value. Ranges are offsets into `src`.
#[derive(Clone, Debug)]
pub struct NameAddr<'a> {
    pub src: &'a [u8],
    /// Display name as written (quoted or tokens), if any.
    pub display: Option<(usize, usize)>,
    /// The URI, without angle brackets.
    pub uri: (usize, usize),
    /// True when the URI was written in `<>`.
    pub angle: bool,
    /// Header parameters after the URI, raw (starts at the first `;`).
    pub params: (usize, usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameAddrError {
    #[error("display name is malformed")]
    BadDisplayName,
    #[error("angle brackets are unbalanced or contain white space")]
    BadBrackets,
    #[error("URI is not absolute")]
    BadUri,
    #[error("an addr-spec with '?' or ',' must be in angle brackets")]
    UnbracketedSpecial,
    #[error("header parameters are malformed")]
    BadParams,
}

impl<'a> NameAddr<'a> {
    pub fn parse(src: &'a [u8]) -> Result<NameAddr<'a>, NameAddrError> {
        let mut i = skip_lws(src, 0);
        let start = i;
        let mut display = None;
        if src.get(i) == Some(&b'"') {
            let end = end_of_quoted(src, i).ok_or(NameAddrError::BadDisplayName)?;
            display = Some((i, end));
            i = skip_lws(src, end);
            if src.get(i) != Some(&b'<') {
                return Err(NameAddrError::BadBrackets);
            }
        } else if let Some(lt) = find_unquoted(src, i, b'<') {
            // Display name as a sequence of tokens separated by LWS.
            let words = &src[i..lt];
            if !words
                .iter()
                .all(|&c| is_token(c) || matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
            {
                return Err(NameAddrError::BadDisplayName);
            }
            if lt > i {
                let mut end = lt;
                while end > i && matches!(src[end - 1], b' ' | b'\t' | b'\r' | b'\n') {
                    end -= 1;
                }
                display = Some((i, end));
            }
            i = lt;
        }
        let (uri, angle, after) = if src.get(i) == Some(&b'<') {
            // One pass to the first '>' or a byte the URI may not hold:
            // finding the '>' and then checking what it encloses read the
            // URI twice. A bad byte first means either no '>' at all or a
            // bad byte inside the brackets: both are BadBrackets.
            let mut gt = i + 1;
            while gt < src.len() && !matches!(src[gt], b'>' | b' ' | b'\t' | b'\r' | b'\n' | b'<') {
                gt += 1;
            }
            if src.get(gt) != Some(&b'>') || gt == i + 1 {
                return Err(NameAddrError::BadBrackets);
            }
            ((i + 1, gt), true, gt + 1)
        } else {
            let _ = start;
            // addr-spec: the URI runs to the first ';' (header params follow)
            // or the end; ',' and '?' would be ambiguous there.
            let mut j = i;
            while j < src.len() && !matches!(src[j], b';' | b' ' | b'\t' | b'\r' | b'\n') {
                if matches!(src[j], b'?' | b',' | b'"' | b'<' | b'>') {
                    return Err(NameAddrError::UnbracketedSpecial);
                }
                j += 1;
            }
            ((i, j), false, j)
        };
        if scheme_of(&src[uri.0..uri.1]).is_none() {
            return Err(NameAddrError::BadUri);
        }
        if !params_valid(&src[after..]) {
            return Err(NameAddrError::BadParams);
        }
        Ok(NameAddr {
            src,
            display,
            uri,
            angle,
            params: (after, src.len()),
        })
    }

    pub fn uri(&self) -> &'a [u8] {
        &self.src[self.uri.0..self.uri.1]
    }

    /// A header parameter's value (`Some(b"")` when present without value).
    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        find_param(&self.src[self.params.0..self.params.1], name).map(|p| p.value().unwrap_or(&[]))
    }

    pub fn tag(&self) -> Option<&'a [u8]> {
        self.param(b"tag").filter(|t| !t.is_empty())
    }
}

fn find_unquoted(s: &[u8], mut i: usize, needle: u8) -> Option<usize> {
    let mut in_quote = false;
    while i < s.len() {
        match s[i] {
            b'\\' if in_quote => i += 1,
            b'"' => in_quote = !in_quote,
            c if c == needle && !in_quote => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bracket scan as it was: the first '>', then what it encloses.
    fn brackets_by_two_scans(src: &[u8], i: usize) -> Result<(usize, usize), NameAddrError> {
        let gt = src[i..]
            .iter()
            .position(|&c| c == b'>')
            .ok_or(NameAddrError::BadBrackets)?
            + i;
        let inner = &src[i + 1..gt];
        if inner.is_empty()
            || inner
                .iter()
                .any(|&c| matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'<'))
        {
            return Err(NameAddrError::BadBrackets);
        }
        Ok((i + 1, gt))
    }

    #[test]
    fn bracket_scan_matches_two_scans() {
        for v in [
            "<sip:a@h>",
            "<sip:a@h>;tag=1",
            "\"x\" <sip:a@h;user=phone>;tag=1",
            "\"a\\\"<b\" <sip:a@h>",
            "x y <sip:a@[::1]:5060>",
            "<>",
            "<",
            "<sip:a@h",
            "<sip:a @h>",
            "<sip:a@h\r\n >",
            "<sip:<a@h>",
            "<sip:a@h>>",
            "<sip:a@h\t>",
            "<tel:+7495>;x",
            "<sip:a@h>, <sip:b@h>",
            "name <sip:%41@h?Subject=x>",
        ] {
            let src = v.as_bytes();
            let parsed = NameAddr::parse(src);
            let lt = find_unquoted(src, 0, b'<');
            if let Some(lt) = lt {
                let want = brackets_by_two_scans(src, lt);
                match (&parsed, want) {
                    (Ok(na), Ok(uri)) => assert_eq!(na.uri, uri, "{v:?}"),
                    (Err(e), Err(w)) if *e == w => {}
                    // The brackets were fine; a later check refused it.
                    (Err(e), Ok(_)) if *e != NameAddrError::BadBrackets => {}
                    (p, w) => panic!("{v:?}: parsed {p:?}, two scans {w:?}"),
                }
            }
        }
    }
}
