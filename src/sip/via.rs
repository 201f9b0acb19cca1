//! Via values (RFC 3261 20.42, RFC 3581 rport, RFC 5118 4.5 received).

use super::chars::{is_token, skip_lws, split_commas, trim_lws};
use super::scan;

/// One Via value. Ranges are offsets into `src`.
#[derive(Clone, Debug)]
pub struct Via<'a> {
    pub src: &'a [u8],
    /// Transport token (`UDP`, `TCP`, …), as written.
    pub transport: (usize, usize),
    /// Sent-by host as written (IPv6 with brackets).
    pub host: (usize, usize),
    pub port: Option<u16>,
    /// Raw parameters, starting at the first `;`.
    pub params: (usize, usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ViaError {
    #[error("Via protocol is not SIP/2.0/<transport>")]
    BadProtocol,
    #[error("Via sent-by is malformed")]
    BadSentBy,
    #[error("Via parameters are malformed")]
    BadParams,
}

/// A (start, end) byte range.
pub type ByteRange = (usize, usize);

/// The magic cookie of RFC 3261 branches.
pub const BRANCH_COOKIE: &[u8] = b"z9hG4bK";

impl<'a> Via<'a> {
    /// Parses a single Via value (no commas).
    pub fn parse(src: &'a [u8]) -> Result<Via<'a>, ViaError> {
        // Nearly every Via starts `SIP/2.0/` with no LWS between the
        // parts: the token-by-token path would end at the same place.
        let mut i =
            if src.len() > 8 && src[..3].eq_ignore_ascii_case(b"SIP") && &src[3..8] == b"/2.0/" {
                8
            } else {
                protocol_end(src)?
            };
        let transport = expect_token(src, &mut i).ok_or(ViaError::BadProtocol)?;
        i = skip_lws(src, i);
        let host_start = i;
        if src.get(i) == Some(&b'[') {
            let close = src[i..]
                .iter()
                .position(|&c| c == b']')
                .ok_or(ViaError::BadSentBy)?
                + i;
            i = close + 1;
        } else {
            i = scan::host_end(src, i);
        }
        let host = (host_start, i);
        if host.0 == host.1 {
            return Err(ViaError::BadSentBy);
        }
        let mut port = None;
        let j = skip_lws(src, i);
        if src.get(j) == Some(&b':') {
            let p_start = skip_lws(src, j + 1);
            let mut k = p_start;
            while k < src.len() && src[k].is_ascii_digit() {
                k += 1;
            }
            let digits = &src[p_start..k];
            if digits.is_empty() || digits.len() > 5 {
                return Err(ViaError::BadSentBy);
            }
            // At most five ASCII digits: no overflow in u32, and no str
            // round trip (as in `Uri::parse`).
            let n = digits
                .iter()
                .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
            port = Some(u16::try_from(n).map_err(|_| ViaError::BadSentBy)?);
            i = k;
        }
        let params_start = skip_lws(src, i);
        let rest = &src[params_start..];
        if !trim_lws(rest).is_empty() && rest[0] != b';' {
            return Err(ViaError::BadSentBy);
        }
        if !scan::params_valid(rest) {
            return Err(ViaError::BadParams);
        }
        Ok(Via {
            src,
            transport,
            host,
            port,
            params: (params_start, src.len()),
        })
    }

    pub fn transport(&self) -> &'a [u8] {
        &self.src[self.transport.0..self.transport.1]
    }

    pub fn host(&self) -> &'a [u8] {
        &self.src[self.host.0..self.host.1]
    }

    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        let params = &self.src[self.params.0..self.params.1];
        scan::find_param(params, name).map(|(_, v)| v.map_or(&[][..], |(a, b)| &params[a..b]))
    }

    /// The parameter's (name, value) ranges in `src`.
    pub fn param_ranges(&self, name: &[u8]) -> Option<(ByteRange, Option<ByteRange>)> {
        let off = self.params.0;
        scan::find_param(&self.src[off..self.params.1], name)
            .map(|(n, v)| ((n.0 + off, n.1 + off), v.map(|(a, b)| (a + off, b + off))))
    }

    pub fn branch(&self) -> Option<&'a [u8]> {
        self.param(b"branch")
    }

    /// An RFC 3261 branch: the magic cookie followed by something unique.
    /// A bare cookie (RFC 4475 badbranch) does not count.
    pub fn rfc3261_branch(&self) -> Option<&'a [u8]> {
        self.branch()
            .filter(|b| b.len() > BRANCH_COOKIE.len() && b.starts_with(BRANCH_COOKIE))
    }
}

/// Where `SIP / 2.0 /` (LWS allowed around each part) ends.
fn protocol_end(src: &[u8]) -> Result<usize, ViaError> {
    let mut i = skip_lws(src, 0);
    let name = expect_token(src, &mut i).ok_or(ViaError::BadProtocol)?;
    if !src[name.0..name.1].eq_ignore_ascii_case(b"SIP") {
        return Err(ViaError::BadProtocol);
    }
    expect_slash(src, &mut i)?;
    let version = expect_token(src, &mut i).ok_or(ViaError::BadProtocol)?;
    if &src[version.0..version.1] != b"2.0" {
        return Err(ViaError::BadProtocol);
    }
    expect_slash(src, &mut i)?;
    Ok(i)
}

fn expect_token(s: &[u8], i: &mut usize) -> Option<(usize, usize)> {
    *i = skip_lws(s, *i);
    let start = *i;
    while *i < s.len() && is_token(s[*i]) {
        *i += 1;
    }
    (*i > start).then_some((start, *i))
}

fn expect_slash(s: &[u8], i: &mut usize) -> Result<(), ViaError> {
    *i = skip_lws(s, *i);
    if s.get(*i) != Some(&b'/') {
        return Err(ViaError::BadProtocol);
    }
    *i += 1;
    Ok(())
}

/// Iterates over the Via values inside one header value, as (start, end)
/// ranges with LWS trimmed.
pub fn via_values(value: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    split_commas(value).map(move |(a, b)| {
        let t = trim_lws(&value[a..b]);
        if t.is_empty() {
            (a, a)
        } else {
            let off = t.as_ptr() as usize - value.as_ptr() as usize;
            (off, off + t.len())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Via::parse as it was (token by token, chars::params_valid).
    fn parse_old(src: &[u8]) -> Result<Via<'_>, ViaError> {
        let mut i = skip_lws(src, 0);
        let name = expect_token(src, &mut i).ok_or(ViaError::BadProtocol)?;
        if !src[name.0..name.1].eq_ignore_ascii_case(b"SIP") {
            return Err(ViaError::BadProtocol);
        }
        expect_slash(src, &mut i)?;
        let version = expect_token(src, &mut i).ok_or(ViaError::BadProtocol)?;
        if &src[version.0..version.1] != b"2.0" {
            return Err(ViaError::BadProtocol);
        }
        expect_slash(src, &mut i)?;
        let transport = expect_token(src, &mut i).ok_or(ViaError::BadProtocol)?;
        i = skip_lws(src, i);
        let host_start = i;
        if src.get(i) == Some(&b'[') {
            let close = src[i..]
                .iter()
                .position(|&c| c == b']')
                .ok_or(ViaError::BadSentBy)?
                + i;
            i = close + 1;
        } else {
            while i < src.len()
                && (src[i].is_ascii_alphanumeric() || src[i] == b'-' || src[i] == b'.')
            {
                i += 1;
            }
        }
        let host = (host_start, i);
        if host.0 == host.1 {
            return Err(ViaError::BadSentBy);
        }
        let mut port = None;
        let j = skip_lws(src, i);
        if src.get(j) == Some(&b':') {
            let p_start = skip_lws(src, j + 1);
            let mut k = p_start;
            while k < src.len() && src[k].is_ascii_digit() {
                k += 1;
            }
            let digits = &src[p_start..k];
            if digits.is_empty() || digits.len() > 5 {
                return Err(ViaError::BadSentBy);
            }
            // At most five ASCII digits: no overflow in u32, and no str
            // round trip (as in `Uri::parse`).
            let n = digits
                .iter()
                .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
            port = Some(u16::try_from(n).map_err(|_| ViaError::BadSentBy)?);
            i = k;
        }
        let params_start = skip_lws(src, i);
        let rest = &src[params_start..];
        if !trim_lws(rest).is_empty() && rest[0] != b';' {
            return Err(ViaError::BadSentBy);
        }
        if !crate::sip::chars::params_valid(rest) {
            return Err(ViaError::BadParams);
        }
        Ok(Via {
            src,
            transport,
            host,
            port,
            params: (params_start, src.len()),
        })
    }

    type Fields = ((usize, usize), (usize, usize), Option<u16>, (usize, usize));

    fn fields(r: Result<Via<'_>, ViaError>) -> Result<Fields, ViaError> {
        r.map(|v| (v.transport, v.host, v.port, v.params))
    }

    #[test]
    fn parse_matches_the_old_form() {
        for v in [
            "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-bench-1;rport",
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;received=10.0.0.1;rport=5060",
            "sip/2.0/tcp h",
            "SIP / 2.0 / UDP h : 5060 ; branch = x",
            "SIP/2.0/UDP [::1]:5060",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP h:99999",
            "SIP/2.0/UDP h:",
            "SIP/2.0/UDP h x",
            "SIP/2.0/UDP h;;",
            "SIP/2.0/UDP",
            "SIP/2.0/",
            "SIP/2.1/UDP h",
            "SIPS/2.0/UDP h",
            "SIP/2.0/UDP h;branch=\"x\"",
        ] {
            let src = v.as_bytes();
            assert_eq!(fields(Via::parse(src)), fields(parse_old(src)), "{v:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_matches_on_any_bytes(
            prefix in proptest::prop_oneof![
                proptest::strategy::Just("SIP/2.0/UDP "), proptest::strategy::Just("sip/2.0/"),
                proptest::strategy::Just("SIP/2.0/"), proptest::strategy::Just(""),
                proptest::strategy::Just("SIP /2.0/UDP"),
            ],
            v in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b'h'), proptest::strategy::Just(b'1'),
                    proptest::strategy::Just(b'.'), proptest::strategy::Just(b':'),
                    proptest::strategy::Just(b';'), proptest::strategy::Just(b'='),
                    proptest::strategy::Just(b' '), proptest::strategy::Just(b'['),
                    proptest::strategy::Just(b']'), proptest::strategy::Just(b'/'),
                    proptest::arbitrary::any::<u8>(),
                ],
                0..30,
            ),
        ) {
            let mut s = prefix.as_bytes().to_vec();
            s.extend_from_slice(&v);
            proptest::prop_assert_eq!(fields(Via::parse(&s)), fields(parse_old(&s)));
        }
    }

    #[test]
    fn protocol_shortcut_ends_where_the_tokens_do() {
        for v in [
            "SIP/2.0/UDP h",
            "sip/2.0/udp h;branch=z9hG4bK1",
            "SIP/2.0/TCP [::1]:5060",
            "SIP/2.0/",
            "SIP/2.0/ UDP h",
            "SIP /2.0/UDP h",
            "SIP/2.0 /UDP h",
            "SIP/2.1/UDP h",
            "SIPS/2.0/UDP h",
            "XIP/2.0/UDP h",
            "SIP/2.0/UDP",
        ] {
            let src = v.as_bytes();
            if src.len() > 8 && src[..3].eq_ignore_ascii_case(b"SIP") && &src[3..8] == b"/2.0/" {
                assert_eq!(protocol_end(src), Ok(8), "{v:?}");
            }
        }
    }
}
