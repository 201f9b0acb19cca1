//! URIs: full decoding of `sip:`/`sips:` (RFC 3261 19.1, RFC 5118 for IPv6
//! references), scheme-only checks for everything else.

use std::net::{IpAddr, Ipv6Addr};

use super::chars::is_token;

/// A decoded SIP URI. Ranges are byte offsets into the slice it was parsed
/// from, so callers can turn them into message spans for in-place edits.
#[derive(Clone, Debug)]
pub struct Uri<'a> {
    pub src: &'a [u8],
    pub scheme: (usize, usize),
    /// `user[:password]` before `@`, if present (escapes not decoded).
    pub userinfo: Option<(usize, usize)>,
    /// The user part alone.
    pub user: Option<(usize, usize)>,
    /// Host as written: hostname, IPv4, or `[IPv6]` with brackets.
    pub host: (usize, usize),
    pub port: Option<u16>,
    /// Where `host[:port]` ends.
    pub hostport_end: usize,
    /// `;params` (raw, starting with `;`), up to `?` or the end.
    pub params: (usize, usize),
    /// `?headers` (raw, after `?`), if present.
    pub headers: Option<(usize, usize)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("URI has no scheme")]
    NoScheme,
    #[error("URI scheme is not sip or sips")]
    UnsupportedScheme,
    #[error("URI host is malformed")]
    BadHost,
    #[error("URI port is malformed")]
    BadPort,
    #[error("URI contains an illegal character")]
    IllegalChar,
    #[error("URI parameters are malformed")]
    BadParams,
}

/// Characters allowed in a SIP URI outside the host (unreserved, escaped
/// and the reserved set of RFC 3261 25.1, without the separators we split
/// on), as a table: every URI of every message goes through it.
const URI_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_'
                    | b'.'
                    | b'!'
                    | b'~'
                    | b'*'
                    | b'\''
                    | b'('
                    | b')'
                    | b'%'
                    | b'&'
                    | b'='
                    | b'+'
                    | b'$'
                    | b','
                    | b';'
                    | b'?'
                    | b'/'
                    | b':'
                    | b'@'
                    | b'['
                    | b']'
            );
        c += 1;
    }
    t
};

/// [`URI_CLASS`] values: what the one pass of [`Uri::parse`] does with a byte.
const ILLEGAL: u8 = 0;
const PLAIN: u8 = 1;
/// '@', ':' and '?': the delimiters it notes.
const MARK: u8 = 2;

/// [`URI_CHAR`] with the delimiters [`Uri::parse`] looks for set apart.
const URI_CLASS: [u8; 256] = {
    let mut t = [ILLEGAL; 256];
    let mut c = 0;
    while c < 256 {
        if URI_CHAR[c] {
            t[c] = match c as u8 {
                b'@' | b':' | b'?' => MARK,
                _ => PLAIN,
            };
        }
        c += 1;
    }
    t
};

/// [`URI_CLASS`] bytes that are not [`PLAIN`] (illegal or a delimiter).
const NOT_PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = URI_CLASS[c] != PLAIN;
        c += 1;
    }
    t
};

/// The first byte at or after `i` that is not [`PLAIN`] (`s.len()` when
/// none): eight table look-ups and one test a step over the plain run
/// (user digits, host, parameters), then byte by byte.
fn plain_end(s: &[u8], mut i: usize) -> usize {
    while let Some(w) = s.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let mut any = false;
        for &c in w {
            any |= NOT_PLAIN[c as usize];
        }
        if any {
            break;
        }
        i += 8;
    }
    while i < s.len() && !NOT_PLAIN[s[i] as usize] {
        i += 1;
    }
    i
}

/// The scheme of any absolute URI: `ALPHA *(ALPHA / DIGIT / "+" / "-" / ".")` before `:`.
pub fn scheme_of(s: &[u8]) -> Option<&[u8]> {
    // `sip:` and `sips:` (any case) without the search for ':' and the
    // character test: nearly every URI of every message is one of them.
    if s.len() > 4 && s[0] | 0x20 == b's' && s[1] | 0x20 == b'i' && s[2] | 0x20 == b'p' {
        if s[3] == b':' {
            return Some(&s[..3]);
        }
        if s[3] | 0x20 == b's' && s[4] == b':' {
            return Some(&s[..4]);
        }
    }
    let colon = s.iter().position(|&c| c == b':')?;
    let scheme = &s[..colon];
    let ok = !scheme.is_empty()
        && scheme[0].is_ascii_alphabetic()
        && scheme
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
    ok.then_some(scheme)
}

impl<'a> Uri<'a> {
    pub fn parse(s: &'a [u8]) -> Result<Uri<'a>, UriError> {
        let scheme = scheme_of(s).ok_or(UriError::NoScheme)?;
        if !(scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips")) {
            return Err(UriError::UnsupportedScheme);
        }
        let rest_start = scheme.len() + 1;
        // One pass checks the characters and finds the '@': it can only
        // appear as the userinfo delimiter (RFC 3261 25.1: it is in none of
        // the user, password, parameter or header character sets), while
        // '?' and ';' may appear inside the user part (RFC 4475 3.1.1.2).
        // The same pass notes the first ':' before the '@' (the end of the
        // user) and the first '?' after where the host starts (the
        // headers): searched for afterwards, they read the URI twice more.
        let mut at = None;
        // The first ':' and '?' (at or after the scheme's colon) seen
        // while no '@' had been, and the first '?' after the '@'.
        let (mut colon_before, mut q_before, mut q_after) = (None, None, None);
        // The scheme and its ':' are legal characters (`scheme_of` checked
        // them) and no delimiter of the rest: the pass starts after them,
        // and passes plain bytes eight at a time (`plain_end`).
        let mut next = rest_start;
        loop {
            let i = plain_end(s, next);
            let Some(&c) = s.get(i) else { break };
            next = i + 1;
            match URI_CLASS[c as usize] {
                PLAIN => {}
                ILLEGAL => return Err(UriError::IllegalChar),
                _ if at.is_some() => {
                    if c == b'?' && q_after.is_none() {
                        q_after = Some(i);
                    }
                }
                _ => match c {
                    b'@' => at = Some(i),
                    b':' => {
                        colon_before.get_or_insert(i);
                    }
                    _ => {
                        q_before.get_or_insert(i);
                    }
                },
            }
        }
        let (userinfo, user, host_start) = match at {
            Some(at) => {
                if at == rest_start {
                    return Err(UriError::BadHost);
                }
                let ui = (rest_start, at);
                let user_end = colon_before.unwrap_or(at);
                (Some(ui), Some((rest_start, user_end)), at + 1)
            }
            None => (None, None, rest_start),
        };
        let hdr_q = if at.is_some() { q_after } else { q_before };
        let (host, mut i) = if s.get(host_start) == Some(&b'[') {
            let close = s[host_start..]
                .iter()
                .position(|&c| c == b']')
                .ok_or(UriError::BadHost)?
                + host_start;
            parse_v6_reference(&s[host_start + 1..close]).ok_or(UriError::BadHost)?;
            ((host_start, close + 1), close + 1)
        } else {
            let j = super::scan::host_end(s, host_start);
            if j == host_start {
                return Err(UriError::BadHost);
            }
            ((host_start, j), j)
        };
        let mut port = None;
        if s.get(i) == Some(&b':') {
            let p_start = i + 1;
            i = p_start;
            while i < s.len() && s[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &s[p_start..i];
            if digits.is_empty() || digits.len() > 5 {
                return Err(UriError::BadPort);
            }
            // At most five ASCII digits: no overflow in u32, and no
            // str round trip (every URI with a port comes here).
            let n = digits
                .iter()
                .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
            port = Some(u16::try_from(n).map_err(|_| UriError::BadPort)?);
        }
        let hostport_end = i;
        let params_end = hdr_q.unwrap_or(s.len());
        if i > params_end || (i < params_end && s[i] != b';') {
            return Err(UriError::BadHost);
        }
        let params = (i, params_end);
        if parse_params_loose(&s[params.0..params.1]).is_none() {
            return Err(UriError::BadParams);
        }
        let headers = hdr_q.map(|q| (q + 1, s.len()));
        Ok(Uri {
            src: s,
            scheme: (0, scheme.len()),
            userinfo,
            user,
            host,
            port,
            hostport_end,
            params,
            headers,
        })
    }

    fn get(&self, r: (usize, usize)) -> &'a [u8] {
        &self.src[r.0..r.1]
    }

    pub fn user(&self) -> Option<&'a [u8]> {
        self.user.map(|r| self.get(r))
    }

    pub fn host(&self) -> &'a [u8] {
        self.get(self.host)
    }

    /// The host as an IP address, when it is one (brackets removed).
    pub fn host_ip(&self) -> Option<IpAddr> {
        host_to_ip(self.host())
    }

    pub fn is_sips(&self) -> bool {
        self.get(self.scheme).eq_ignore_ascii_case(b"sips")
    }

    /// Value of a URI parameter (`None` if absent, `Some(b"")` if it has no value).
    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        uri_param(self.get(self.params), name)
    }
}

/// A decoded [`Uri`]'s ranges as `u32`, to be kept in a [`Message`]
/// (see `super::addrs`) and turned back into the same [`Uri`] over the
/// same bytes without parsing them again.
///
/// [`Message`]: super::Message
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UriSpans {
    len: u32,
    scheme: (u32, u32),
    userinfo: Option<(u32, u32)>,
    user: Option<(u32, u32)>,
    host: (u32, u32),
    port: Option<u16>,
    hostport_end: u32,
    params: (u32, u32),
    headers: Option<(u32, u32)>,
}

/// Messages are far below 4 GiB (`Message::parse` refuses larger), so
/// the offsets into one fit.
fn n32(n: usize) -> u32 {
    n as u32
}

fn r32((a, b): (usize, usize)) -> (u32, u32) {
    (n32(a), n32(b))
}

fn wide((a, b): (u32, u32)) -> (usize, usize) {
    (a as usize, b as usize)
}

impl UriSpans {
    pub fn of(u: &Uri<'_>) -> UriSpans {
        UriSpans {
            len: n32(u.src.len()),
            scheme: r32(u.scheme),
            userinfo: u.userinfo.map(r32),
            user: u.user.map(r32),
            host: r32(u.host),
            port: u.port,
            hostport_end: n32(u.hostport_end),
            params: r32(u.params),
            headers: u.headers.map(r32),
        }
    }

    /// The [`Uri`] these spans were taken from, over `src` (the bytes it
    /// was parsed from); None for bytes of another length.
    pub fn uri<'a>(&self, src: &'a [u8]) -> Option<Uri<'a>> {
        (src.len() == self.len as usize).then(|| Uri {
            src,
            scheme: wide(self.scheme),
            userinfo: self.userinfo.map(wide),
            user: self.user.map(wide),
            host: wide(self.host),
            port: self.port,
            hostport_end: self.hostport_end as usize,
            params: wide(self.params),
            headers: self.headers.map(wide),
        })
    }

    /// The user part's range in the URI.
    pub fn user(&self) -> Option<(usize, usize)> {
        self.user.map(wide)
    }

    /// Whether it carries `?headers`.
    pub fn has_headers(&self) -> bool {
        self.headers.is_some()
    }
}

/// Value of the parameter `name` in a raw `;a=b;c` list.
pub fn uri_param<'s>(params: &'s [u8], name: &[u8]) -> Option<&'s [u8]> {
    params.split(|&c| c == b';').skip(1).find_map(|p| {
        let (n, v) = match p.iter().position(|&c| c == b'=') {
            Some(eq) => (&p[..eq], &p[eq + 1..]),
            None => (p, &p[p.len()..]),
        };
        n.eq_ignore_ascii_case(name).then_some(v)
    })
}

/// URI parameters allow more characters than header parameters do
/// (`paramchar` includes `[]/:&+$` and escapes); only empty ones are refused.
fn parse_params_loose(s: &[u8]) -> Option<()> {
    if s.is_empty() {
        return Some(());
    }
    if s[0] != b';' {
        return None;
    }
    // No parameter may be empty or start with '=': every ';' is followed
    // by something other than ';' or '='. One pass, where splitting on
    // ';' and testing each piece walked the pieces twice.
    let mut prev_semi = false;
    for &c in s {
        if prev_semi && (c == b';' || c == b'=') {
            return None;
        }
        prev_semi = c == b';';
    }
    (!prev_semi).then_some(())
}

/// Accepts an IPv6 reference body (without brackets). RFC 5118 4.10: be
/// tolerant of the `:::` form the 3261 ABNF allows.
fn parse_v6_reference(s: &[u8]) -> Option<Ipv6Addr> {
    let text = std::str::from_utf8(s).ok()?;
    if let Ok(a) = text.parse::<Ipv6Addr>() {
        return Some(a);
    }
    text.replacen(":::", "::", 1).parse::<Ipv6Addr>().ok()
}

/// Parses a host as written in SIP (IPv6 in brackets) into an IP address.
pub fn host_to_ip(host: &[u8]) -> Option<IpAddr> {
    if host.first() == Some(&b'[') && host.last() == Some(&b']') {
        return parse_v6_reference(&host[1..host.len() - 1]).map(IpAddr::V6);
    }
    std::str::from_utf8(host).ok()?.parse::<IpAddr>().ok()
}

/// Whether `host` (as written in SIP, IPv6 in brackets) is the address
/// `ip`: what `host_to_ip(host) == Some(ip)` answers. For an IPv4 `ip`
/// that is a comparison with its dotted-quad text (std's parser takes
/// exactly that text for it: four decimal octets, no leading zeros, and
/// a bracketed host is IPv6), without std's parse (from_utf8, then IPv4
/// and IPv6 attempts): the core asks it of every
/// request's top Via (`received`), every response's top Via (ours?) and
/// every Route (ours?).
pub fn host_is_ip(host: &[u8], ip: IpAddr) -> bool {
    let IpAddr::V4(v4) = ip else {
        return host_to_ip(host) == Some(ip);
    };
    // Four octets of one to three digits, no leading zero, each the
    // address's, separated by dots and nothing after: compared as read
    // (writing the address's text first cost more than std's parse).
    let want = v4.octets();
    let mut i = 0;
    for (k, &octet) in want.iter().enumerate() {
        if k > 0 {
            if host.get(i) != Some(&b'.') {
                return false;
            }
            i += 1;
        }
        let start = i;
        let mut n = 0u32;
        while i < host.len() && i - start < 3 && host[i].is_ascii_digit() {
            n = n * 10 + u32::from(host[i] - b'0');
            i += 1;
        }
        let len = i - start;
        if len == 0 || (len > 1 && host[start] == b'0') || n != u32::from(octet) {
            return false;
        }
    }
    i == host.len()
}

/// True when `s` is a token (used for methods and transports).
pub fn is_token_str(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&c| is_token(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPS: [&str; 8] = [
        "127.0.0.1",
        "0.0.0.0",
        "10.20.3.4",
        "255.255.255.255",
        "192.0.2.100",
        "1.10.100.0",
        "::1",
        "2001:db8::1",
    ];

    /// `host_is_ip` answers what parsing the host and comparing does.
    #[test]
    fn host_is_ip_as_parsing() {
        for ip in IPS {
            let ip: IpAddr = ip.parse().expect("test address");
            for host in [
                "127.0.0.1",
                "127.0.0.01",
                "127.000.0.1",
                "0127.0.0.1",
                "127.0.0.1.",
                "127.0.0",
                " 127.0.0.1",
                "0.0.0.0",
                "00.0.0.0",
                "10.20.3.4",
                "255.255.255.255",
                "256.255.255.255",
                "192.0.2.100",
                "1.10.100.0",
                "[::1]",
                "::1",
                "[0:0:0:0:0:0:0:1]",
                "[2001:db8::1]",
                "[::ffff:127.0.0.1]",
                "::ffff:127.0.0.1",
                "[127.0.0.1]",
                "localhost",
                "",
            ] {
                assert_eq!(
                    host_is_ip(host.as_bytes(), ip),
                    host_to_ip(host.as_bytes()) == Some(ip),
                    "{host} {ip}"
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn host_is_ip_matches_on_pieces(
            k in 0usize..8,
            v in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("0"), proptest::strategy::Just("1"),
                    proptest::strategy::Just("00"), proptest::strategy::Just("127"),
                    proptest::strategy::Just("255"), proptest::strategy::Just("256"),
                    proptest::strategy::Just("."), proptest::strategy::Just(":"),
                    proptest::strategy::Just("["), proptest::strategy::Just("]"),
                    proptest::strategy::Just("2"), proptest::strategy::Just("10"),
                    proptest::strategy::Just("100"), proptest::strategy::Just("20"),
                    proptest::strategy::Just("3"), proptest::strategy::Just("4"),
                ],
                0..10,
            ),
        ) {
            let ip: IpAddr = IPS[k].parse().expect("test address");
            let host = v.concat();
            proptest::prop_assert_eq!(
                host_is_ip(host.as_bytes(), ip),
                host_to_ip(host.as_bytes()) == Some(ip),
                "{} {}", host, ip
            );
        }
    }

    #[test]
    fn ports_table() {
        for (uri, port) in [
            (&b"sip:h:5060"[..], Ok(Some(5060))),
            (b"sip:h", Ok(None)),
            (b"sip:u@h:0", Ok(Some(0))),
            (b"sip:h:65535;transport=tcp", Ok(Some(65535))),
            (b"sip:h:00080", Ok(Some(80))),
            (b"sip:u@[::1]:5061?Subject=x", Ok(Some(5061))),
            (b"sip:h:65536", Err(UriError::BadPort)),
            (b"sip:h:99999", Err(UriError::BadPort)),
            (b"sip:h:065535", Err(UriError::BadPort)),
            (b"sip:h:", Err(UriError::BadPort)),
            (b"sip:h:50a", Err(UriError::BadHost)),
        ] {
            assert_eq!(
                Uri::parse(uri).map(|u| u.port),
                port,
                "{}",
                String::from_utf8_lossy(uri)
            );
        }
    }

    /// The '@', user end and '?' as the separate searches found them
    /// before the one pass did (for URIs whose characters are all legal).
    fn delimiters_by_searching(s: &[u8]) -> (Option<(usize, usize)>, Option<usize>) {
        let rest_start = scheme_of(s).map_or(0, |x| x.len() + 1);
        let at = s
            .iter()
            .enumerate()
            .position(|(i, &c)| c == b'@' && i >= rest_start);
        let (user, host_start) = match at {
            Some(at) => {
                let user_end = s[rest_start..at]
                    .iter()
                    .position(|&c| c == b':')
                    .map_or(at, |p| p + rest_start);
                (Some((rest_start, user_end)), at + 1)
            }
            None => (None, rest_start),
        };
        let q = s[host_start..]
            .iter()
            .position(|&c| c == b'?')
            .map(|p| p + host_start);
        (user, q)
    }

    #[test]
    fn one_pass_delimiters_match_searching() {
        for uri in [
            "sip:h",
            "sip:u@h",
            "sips:u:pw@h:5061;transport=tls",
            "sip:u@h?Subject=x&a=b",
            "sip:u?x@h?y",
            "sip:u;x=1@h;y=2?z",
            "sip:u:p:q@h",
            "sip:u@h@g",
            "sip:h?q@r",
            "sip:h:5060?a?b",
            "sip:u@[2001:db8::1]:5060;x?h=1",
            "sip:[::1]",
            "sip:%75ser@h",
            "SIP:U@H",
            "sip:@h",
            "sip:u@",
            "sip:u@h;p?",
            "sip:8-916-123-45-67@127.0.0.1:5061;user=phone",
        ] {
            let s = uri.as_bytes();
            let (user, q) = delimiters_by_searching(s);
            match Uri::parse(s) {
                Ok(u) => {
                    assert_eq!(u.user, user, "{uri}");
                    assert_eq!(u.headers.map(|h| h.0 - 1), q, "{uri}");
                }
                // Only an empty user is refused before the host is read.
                Err(UriError::BadHost) if user.is_some_and(|(a, b)| a == b) => {}
                Err(e) => {
                    // The delimiters were found; the host, port or params
                    // refused it. It must fail the same way from the
                    // searched delimiters, which are the old code's.
                    assert_ne!(e, UriError::IllegalChar, "{uri}");
                }
            }
        }
    }

    /// scheme_of before the `sip:`/`sips:` shortcut.
    fn scheme_of_old(s: &[u8]) -> Option<&[u8]> {
        let colon = s.iter().position(|&c| c == b':')?;
        let scheme = &s[..colon];
        let ok = !scheme.is_empty()
            && scheme[0].is_ascii_alphabetic()
            && scheme
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
        ok.then_some(scheme)
    }

    /// Uri::parse as it was (the oracle of the one below).
    fn parse_old(s: &[u8]) -> Result<Uri<'_>, UriError> {
        let scheme = scheme_of_old(s).ok_or(UriError::NoScheme)?;
        if !(scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips")) {
            return Err(UriError::UnsupportedScheme);
        }
        let rest_start = scheme.len() + 1;
        // One pass checks the characters and finds the '@': it can only
        // appear as the userinfo delimiter (RFC 3261 25.1: it is in none of
        // the user, password, parameter or header character sets), while
        // '?' and ';' may appear inside the user part (RFC 4475 3.1.1.2).
        // The same pass notes the first ':' before the '@' (the end of the
        // user) and the first '?' after where the host starts (the
        // headers): searched for afterwards, they read the URI twice more.
        let mut at = None;
        // The first ':' and '?' (at or after the scheme's colon) seen
        // while no '@' had been, and the first '?' after the '@'.
        let (mut colon_before, mut q_before, mut q_after) = (None, None, None);
        for (i, &c) in s.iter().enumerate() {
            match URI_CLASS[c as usize] {
                PLAIN => {}
                ILLEGAL => return Err(UriError::IllegalChar),
                _ if i < rest_start => {}
                _ if at.is_some() => {
                    if c == b'?' && q_after.is_none() {
                        q_after = Some(i);
                    }
                }
                _ => match c {
                    b'@' => at = Some(i),
                    b':' => {
                        colon_before.get_or_insert(i);
                    }
                    _ => {
                        q_before.get_or_insert(i);
                    }
                },
            }
        }
        let (userinfo, user, host_start) = match at {
            Some(at) => {
                if at == rest_start {
                    return Err(UriError::BadHost);
                }
                let ui = (rest_start, at);
                let user_end = colon_before.unwrap_or(at);
                (Some(ui), Some((rest_start, user_end)), at + 1)
            }
            None => (None, None, rest_start),
        };
        let hdr_q = if at.is_some() { q_after } else { q_before };
        let (host, mut i) = if s.get(host_start) == Some(&b'[') {
            let close = s[host_start..]
                .iter()
                .position(|&c| c == b']')
                .ok_or(UriError::BadHost)?
                + host_start;
            parse_v6_reference(&s[host_start + 1..close]).ok_or(UriError::BadHost)?;
            ((host_start, close + 1), close + 1)
        } else {
            let mut j = host_start;
            while j < s.len() && (s[j].is_ascii_alphanumeric() || s[j] == b'-' || s[j] == b'.') {
                j += 1;
            }
            if j == host_start {
                return Err(UriError::BadHost);
            }
            ((host_start, j), j)
        };
        let mut port = None;
        if s.get(i) == Some(&b':') {
            let p_start = i + 1;
            i = p_start;
            while i < s.len() && s[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &s[p_start..i];
            if digits.is_empty() || digits.len() > 5 {
                return Err(UriError::BadPort);
            }
            // At most five ASCII digits: no overflow in u32, and no
            // str round trip (every URI with a port comes here).
            let n = digits
                .iter()
                .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
            port = Some(u16::try_from(n).map_err(|_| UriError::BadPort)?);
        }
        let hostport_end = i;
        let params_end = hdr_q.unwrap_or(s.len());
        if i > params_end || (i < params_end && s[i] != b';') {
            return Err(UriError::BadHost);
        }
        let params = (i, params_end);
        if parse_params_loose(&s[params.0..params.1]).is_none() {
            return Err(UriError::BadParams);
        }
        let headers = hdr_q.map(|q| (q + 1, s.len()));
        Ok(Uri {
            src: s,
            scheme: (0, scheme.len()),
            userinfo,
            user,
            host,
            port,
            hostport_end,
            params,
            headers,
        })
    }

    type Fields = (
        (usize, usize),
        Option<(usize, usize)>,
        Option<(usize, usize)>,
        (usize, usize),
        Option<u16>,
        usize,
        (usize, usize),
        Option<(usize, usize)>,
    );

    fn fields(r: Result<Uri<'_>, UriError>) -> Result<Fields, UriError> {
        r.map(|u| {
            (
                u.scheme,
                u.userinfo,
                u.user,
                u.host,
                u.port,
                u.hostport_end,
                u.params,
                u.headers,
            )
        })
    }

    #[test]
    fn uri_parse_matches_the_old_form() {
        for s in [
            "sip:u@h",
            "SIP:u@h:5060",
            "sips:u:pw@[::1]:5061;transport=tls?x=y",
            "sip:h",
            "sip:8-916-123-45-67@127.0.0.1:5061;user=phone",
            "sip:u@h;;x",
            "sip:u@h;=x",
            "sip:u@h?",
            "sip:@h",
            "sip:u@",
            "sip:u@h:",
            "sip:u@h:99999",
            "sip:u h@h",
            "sip:u@h>",
            "tel:+1",
            "sipx:u@h",
            "sip",
            "sip:",
            "sips:",
            "s:u@h",
            "sip:u@[::1",
            "sip:u@h@g",
            "sip:u?x@h?y",
            "sip:a:b:c@h",
            "sip:h?q@r",
            "sip:h:5060?a?b",
        ] {
            let s = s.as_bytes();
            assert_eq!(
                fields(Uri::parse(s)),
                fields(parse_old(s)),
                "{:?}",
                String::from_utf8_lossy(s)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn uri_parse_matches_on_any_bytes(
            prefix in proptest::prop_oneof![
                proptest::strategy::Just("sip:"), proptest::strategy::Just("SIPS:"),
                proptest::strategy::Just("sIp:"), proptest::strategy::Just("tel:"),
                proptest::strategy::Just(""), proptest::strategy::Just("sips"),
            ],
            v in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b'u'), proptest::strategy::Just(b'@'),
                    proptest::strategy::Just(b':'), proptest::strategy::Just(b'?'),
                    proptest::strategy::Just(b';'), proptest::strategy::Just(b'='),
                    proptest::strategy::Just(b'['), proptest::strategy::Just(b']'),
                    proptest::strategy::Just(b'1'), proptest::strategy::Just(b'.'),
                    proptest::strategy::Just(b'-'), proptest::arbitrary::any::<u8>(),
                ],
                0..24,
            ),
        ) {
            let mut s = prefix.as_bytes().to_vec();
            s.extend_from_slice(&v);
            proptest::prop_assert_eq!(fields(Uri::parse(&s)), fields(parse_old(&s)));
        }
    }

    #[test]
    fn plain_end_matches_a_byte_scan() {
        for u in [
            "",
            "u",
            "12345678",
            "123456789",
            "8-916-123-45-67@127.0.0.1:5061;user=phone",
            "abcdefgh<",
            "abcdefghijklmnop?",
            "abcdefg\u{e9}",
            "a b",
            "@",
            "abcdefgh@abcdefgh",
        ] {
            let s = u.as_bytes();
            for i in 0..=s.len() {
                let want = i + s[i..]
                    .iter()
                    .position(|&c| URI_CLASS[c as usize] != PLAIN)
                    .unwrap_or(s.len() - i);
                assert_eq!(plain_end(s, i), want, "{u:?} {i}");
            }
        }
    }

    /// The `sip:`/`sips:` shortcut of scheme_of answers as the search did.
    #[test]
    fn scheme_shortcut_matches_the_search() {
        let by_search = |s: &[u8]| -> Option<usize> {
            let colon = s.iter().position(|&c| c == b':')?;
            let scheme = &s[..colon];
            let ok = !scheme.is_empty()
                && scheme[0].is_ascii_alphabetic()
                && scheme
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
            ok.then_some(colon)
        };
        for s in [
            "sip:", "sip:a", "SIP:a", "sips:a", "SiPs:a", "sipx:a", "sip", "sips", "sips:",
            "tel:1", "s1p:a", "sip+x:a", "sis:a", "sIp:", "sip;:a", "SIPS:", "xsip:a", ":a", "",
        ] {
            assert_eq!(
                scheme_of(s.as_bytes()).map(<[u8]>::len),
                by_search(s.as_bytes()),
                "{s:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn scheme_matches_on_any_bytes(
            v in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b'0'), proptest::strategy::Just(b'1'),
                    proptest::strategy::Just(b'2'), proptest::strategy::Just(b'5'),
                    proptest::strategy::Just(b'9'), proptest::strategy::Just(b'.'),
                    proptest::strategy::Just(b':'), proptest::strategy::Just(b's'),
                    proptest::strategy::Just(b'i'), proptest::strategy::Just(b'p'),
                    proptest::strategy::Just(b'S'), proptest::arbitrary::any::<u8>(),
                ],
                0..18,
            ),
        ) {
            let colon = v.iter().position(|&c| c == b':');
            let want = colon.filter(|&c| {
                c > 0
                    && v[0].is_ascii_alphabetic()
                    && v[..c].iter().all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'+' | b'-' | b'.'))
            });
            proptest::prop_assert_eq!(scheme_of(&v).map(<[u8]>::len), want);
        }
    }

    #[test]
    fn loose_params_match_splitting() {
        let by_splitting = |s: &[u8]| {
            if s.is_empty() {
                return Some(());
            }
            if s[0] != b';' {
                return None;
            }
            s[1..]
                .split(|&c| c == b';')
                .all(|p| !p.is_empty() && p[0] != b'=')
                .then_some(())
        };
        for p in [
            "",
            ";",
            ";;",
            ";a",
            ";a;",
            ";a;;b",
            ";=a",
            ";a=",
            ";a==b",
            ";a=b;c",
            "a;b",
            ";a;=b",
            ";user=phone",
            ";lr;transport=udp",
            ";a=;b",
            "=",
            ";a=b=c;d",
        ] {
            assert_eq!(
                parse_params_loose(p.as_bytes()),
                by_splitting(p.as_bytes()),
                "{p:?}"
            );
        }
    }
}
