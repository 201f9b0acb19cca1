//! `name-addr / addr-spec` values with header parameters: From, To,
//! Contact, Route, Record-Route, P-Asserted-Identity (RFC 3261 20.10, 25.1).

use super::chars::{end_of_quoted, is_token, skip_lws};
use super::scan;
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
        Self::parse_tagged(src).map(|(n, _)| n)
    }

    /// [`NameAddr::parse`], and the value range of the first `tag`
    /// parameter (what [`NameAddr::param`] would find) from the same pass
    /// over the parameters: the core reads the From/To tags of every
    /// message, and finding them walked the parameters a second time.
    pub fn parse_tagged(
        src: &'a [u8],
    ) -> Result<(NameAddr<'a>, Option<(usize, usize)>), NameAddrError> {
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
            // Eight bytes a step (`scan::bracket_stop`).
            let gt = scan::bracket_stop(src, i + 1);
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
        // The first `tag` parameter: (name seen, its value).
        let mut tag: Option<Option<(usize, usize)>> = None;
        let params = &src[after..];
        let walked = scan::walk_params(params, |((a, b), v)| {
            if tag.is_none() && params[a..b].eq_ignore_ascii_case(b"tag") {
                tag = Some(v.map(|(x, y)| (x + after, y + after)));
            }
            false
        });
        if walked.is_err() {
            return Err(NameAddrError::BadParams);
        }
        Ok((
            NameAddr {
                src,
                display,
                uri,
                angle,
                params: (after, src.len()),
            },
            tag.flatten(),
        ))
    }

    pub fn uri(&self) -> &'a [u8] {
        &self.src[self.uri.0..self.uri.1]
    }

    /// A header parameter's value (`Some(b"")` when present without value).
    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        let params = &self.src[self.params.0..self.params.1];
        scan::find_param(params, name).map(|(_, v)| v.map_or(&[][..], |(a, b)| &params[a..b]))
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

    /// NameAddr::parse as it was: the bracket loop and chars::params_valid.
    fn parse_old(src: &[u8]) -> Result<NameAddr<'_>, NameAddrError> {
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
        if !crate::sip::chars::params_valid(&src[after..]) {
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

    type Fields = (Option<(usize, usize)>, (usize, usize), bool, (usize, usize));

    fn fields(r: Result<NameAddr<'_>, NameAddrError>) -> Result<Fields, NameAddrError> {
        r.map(|n| (n.display, n.uri, n.angle, n.params))
    }

    #[test]
    fn parse_matches_the_old_form() {
        for v in [
            "<sip:a@h>",
            "\"8-916-123-45-67\" <sip:8-916-123-45-67@127.0.0.1:5061;user=phone>;tag=1234SIPpTag001",
            "<sip:74951234567@127.0.0.1:5070;user=phone>",
            "sip:u@h;tag=1",
            "sip:u@h ;tag=1",
            "x y <sip:a@h>;tag=1;x",
            "<sip:a@h>;tag=",
            "<sip:a@h>;;",
            "<sip:a@h> ; tag = 1 ",
            "<sip:a@h>x",
            "<sip:a@h\x01>",
            "<sip:a@h\x01\x02\x03\x04\x05\x06\x07\x08>",
            "<abcdefghijklmnopqrstuvwxyz0123456789>",
            "<abcdefghijklmnopqrstuvwxyz 0123456789>",
            "<abcdefghijklmnopqrstuvwxyz<0123456789>",
            "<x>",
            "<:x>",
            "\"unterminated <sip:a@h>",
            "sip:a@h?x",
            "",
            "<sip:a@h>;lr;x=\"q\"",
        ] {
            let src = v.as_bytes();
            assert_eq!(fields(NameAddr::parse(src)), fields(parse_old(src)), "{v:?}");
        }
    }

    /// The tag found in the validating pass is what `param` finds after.
    fn tag_by_param(src: &[u8]) -> Option<Option<(usize, usize)>> {
        let n = NameAddr::parse(src).ok()?;
        let params = &src[n.params.0..n.params.1];
        Some(
            crate::sip::chars::find_param(params, b"tag")
                .and_then(|p| p.value)
                .map(|(a, b)| (a + n.params.0, b + n.params.0)),
        )
    }

    #[test]
    fn tagged_parse_finds_what_param_finds() {
        for v in [
            "<sip:a@h>;tag=1",
            "<sip:a@h>;x=1;TAG=2;tag=3",
            "<sip:a@h>;tag;tag=3",
            "<sip:a@h>;tag=",
            "<sip:a@h;tag=u>",
            "\"tag=x\" <sip:a@h>",
            "sip:a@h;tag=9",
            "<sip:a@h>;tag=1;;",
            "<sip:a@h> ; tag = \"q\"",
        ] {
            let src = v.as_bytes();
            let tagged = NameAddr::parse_tagged(src).ok().map(|(_, t)| t);
            assert_eq!(tagged, tag_by_param(src), "{v:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn tagged_parse_matches_param_on_any_bytes(
            v in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(&b"<sip:a@h>"[..]), proptest::strategy::Just(&b";tag"[..]),
                    proptest::strategy::Just(&b"=1"[..]), proptest::strategy::Just(&b";TaG"[..]),
                    proptest::strategy::Just(&b";x"[..]), proptest::strategy::Just(&b" "[..]),
                    proptest::strategy::Just(&b"\""[..]), proptest::strategy::Just(&b";"[..]),
                    proptest::strategy::Just(&b"="[..]),
                ],
                0..8,
            ),
        ) {
            let src = v.concat();
            let tagged = NameAddr::parse_tagged(&src).ok().map(|(_, t)| t);
            proptest::prop_assert_eq!(tagged, tag_by_param(&src));
        }

        #[test]
        fn parse_matches_on_any_bytes(
            v in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b'<'), proptest::strategy::Just(b'>'),
                    proptest::strategy::Just(b'"'), proptest::strategy::Just(b' '),
                    proptest::strategy::Just(b's'), proptest::strategy::Just(b'i'),
                    proptest::strategy::Just(b'p'), proptest::strategy::Just(b':'),
                    proptest::strategy::Just(b';'), proptest::strategy::Just(b'='),
                    proptest::strategy::Just(b'a'), proptest::strategy::Just(b'@'),
                    proptest::strategy::Just(b'\r'), proptest::arbitrary::any::<u8>(),
                ],
                0..40,
            ),
        ) {
            proptest::prop_assert_eq!(fields(NameAddr::parse(&v)), fields(parse_old(&v)));
        }
    }

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
