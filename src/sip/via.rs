//! Via values (RFC 3261 20.42, RFC 3581 rport, RFC 5118 4.5 received).

use super::chars::{is_token, skip_lws, split_commas, trim_lws};
use super::header::HeaderName;
use super::message::{Message, Span};
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

/// A parameter's (name, value) ranges, as [`Via::param_ranges`] gives them.
pub type ParamRanges = (ByteRange, Option<ByteRange>);

/// The magic cookie of RFC 3261 branches.
pub const BRANCH_COOKIE: &[u8] = b"z9hG4bK";

impl<'a> Via<'a> {
    /// Parses a single Via value (no commas).
    pub fn parse(src: &'a [u8]) -> Result<Via<'a>, ViaError> {
        Self::parse_with(src, |_| {})
    }

    /// [`Via::parse`], handing `param` each parameter's (name, value)
    /// ranges in `src`, in order, from the pass that validates them (all
    /// of them when the value parses; what it found before a malformed
    /// one otherwise).
    pub fn parse_with(
        src: &'a [u8],
        mut param: impl FnMut(ParamRanges),
    ) -> Result<Via<'a>, ViaError> {
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
        // `rest` starts past LWS: it is empty or starts with no LWS, so
        // trimming it (a pass backwards over all the parameters) could
        // only empty an empty one.
        if rest.first().is_some_and(|&c| c != b';') {
            return Err(ViaError::BadSentBy);
        }
        let off = params_start;
        let walked = scan::walk_params(rest, |((a, b), v)| {
            param(((a + off, b + off), v.map(|(x, y)| (x + off, y + off))));
            false
        });
        if walked.is_err() {
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

/// A byte range as two `u32`: [`TopVia`] is kept in every [`Message`]
/// (messages are far below 4 GiB; `Message::parse` refuses larger).
type R32 = (u32, u32);

fn r32((a, b): ByteRange) -> R32 {
    (a as u32, b as u32)
}

fn wide((a, b): R32) -> ByteRange {
    (a as usize, b as usize)
}

type Param32 = (R32, Option<R32>);

fn param32((n, v): ParamRanges) -> Param32 {
    (r32(n), v.map(r32))
}

fn param_wide((n, v): Param32) -> ParamRanges {
    (wide(n), v.map(wide))
}

/// The top Via value of a message, parsed once for everything asked of
/// it: validation's check, the server transaction key, `received`/`rport`,
/// the stateless ACK's branch, a response's sent-by and branch. Offsets
/// into the message, so it outlives no borrow; kept in the [`Message`]
/// ([`Message::top_via`]), so validation's parse is the only one. The
/// core parsed the top Via again per request (and each of `branch`,
/// `rport` and `received` with a pass of its own over the parameters),
/// and per response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopVia {
    /// The value's span in the message.
    start: u32,
    end: u32,
    /// [`Via`]'s fields, relative to `start`.
    transport: R32,
    host: R32,
    port: Option<u16>,
    params: R32,
    /// The first `branch`, `rport` and `received` parameters, relative
    /// to `start` (what [`Via::param_ranges`] gives).
    branch: Option<Param32>,
    rport: Option<Param32>,
    received: Option<Param32>,
}

impl TopVia {
    /// The message's top Via (the first value of its first Via header),
    /// when it parses: kept in the message after the first ask.
    pub fn of(msg: &Message) -> Option<TopVia> {
        msg.top_via()
    }

    /// Parses the message's top Via (what [`TopVia::of`] keeps).
    pub(super) fn parse(msg: &Message) -> Option<TopVia> {
        let h = msg.header(HeaderName::Via)?;
        let value = msg.bytes(h.value);
        let (a, b) = via_values(value).next()?;
        let (mut branch, mut rport, mut received) = (None, None, None);
        let src = &value[a..b];
        // One pass for the three, each the first of its name, in the
        // pass that validates the parameters.
        let via = Via::parse_with(src, |p| {
            let ((na, nb), _) = p;
            let slot = match &src[na..nb] {
                n if n.eq_ignore_ascii_case(b"branch") => &mut branch,
                n if n.eq_ignore_ascii_case(b"rport") => &mut rport,
                n if n.eq_ignore_ascii_case(b"received") => &mut received,
                _ => return,
            };
            if slot.is_none() {
                *slot = Some(param32(p));
            }
        })
        .ok()?;
        let start = h.value.start as usize + a;
        Some(TopVia {
            start: start as u32,
            end: (start + src.len()) as u32,
            transport: r32(via.transport),
            host: r32(via.host),
            port: via.port,
            params: r32(via.params),
            branch,
            rport,
            received,
        })
    }

    /// The value's span in the message.
    pub fn span(&self) -> Span {
        Span {
            start: self.start,
            end: self.end,
        }
    }

    /// The parsed value, borrowed from `msg` (the message it came from).
    pub fn via<'m>(&self, msg: &'m Message) -> Via<'m> {
        Via {
            src: msg.bytes(self.span()),
            transport: wide(self.transport),
            host: wide(self.host),
            port: self.port,
            params: wide(self.params),
        }
    }

    /// [`Via::branch`].
    pub fn branch<'m>(&self, msg: &'m Message) -> Option<&'m [u8]> {
        let src = msg.bytes(self.span());
        self.branch.map(|(_, v)| {
            v.map_or(&[][..], |(a, b)| {
                src.get(a as usize..b as usize).unwrap_or_default()
            })
        })
    }

    /// [`Via::rfc3261_branch`].
    pub fn rfc3261_branch<'m>(&self, msg: &'m Message) -> Option<&'m [u8]> {
        self.branch(msg)
            .filter(|b| b.len() > BRANCH_COOKIE.len() && b.starts_with(BRANCH_COOKIE))
    }

    /// The first `rport` parameter's ranges, relative to the value.
    pub fn rport(&self) -> Option<ParamRanges> {
        self.rport.map(param_wide)
    }

    /// The first `received` parameter's ranges, relative to the value.
    pub fn received(&self) -> Option<ParamRanges> {
        self.received.map(param_wide)
    }
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

    /// `TopVia::parse` as it was (in the core): `Via::parse`, then one
    /// pass of `chars::params` for the first branch, rport and received.
    fn top_via_old(msg: &Message) -> Option<(Span, Fields, [Option<ParamRanges>; 3])> {
        let h = msg.header(HeaderName::Via)?;
        let value = msg.bytes(h.value);
        let (a, b) = via_values(value).next()?;
        let via = Via::parse(&value[a..b]).ok()?;
        let mut found: [Option<ParamRanges>; 3] = [None; 3];
        let off = via.params.0;
        for p in crate::sip::chars::params(&via.src[off..via.params.1]).map_while(Result::ok) {
            let k = match p.name() {
                n if n.eq_ignore_ascii_case(b"branch") => 0,
                n if n.eq_ignore_ascii_case(b"rport") => 1,
                n if n.eq_ignore_ascii_case(b"received") => 2,
                _ => continue,
            };
            if found[k].is_none() {
                found[k] = Some((
                    (p.name.0 + off, p.name.1 + off),
                    p.value.map(|(a, b)| (a + off, b + off)),
                ));
            }
        }
        let start = h.value.start as usize + a;
        let span = Span::new(start, start + (b - a));
        Some((span, fields(Ok(via)).ok()?, found))
    }

    fn top_via_new(msg: &Message) -> Option<(Span, Fields, [Option<ParamRanges>; 3])> {
        let top = msg.top_via()?;
        let via = top.via(msg);
        let branch = top.branch.map(param_wide);
        Some((
            top.span(),
            fields(Ok(via)).ok()?,
            [branch, top.rport(), top.received()],
        ))
    }

    fn same_top_via(vias: &str) {
        let text = format!(
            "OPTIONS sip:u@h SIP/2.0\r\n{vias}From: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\n\
             Call-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let Ok(msg) = Message::parse(bytes::Bytes::from(text), true) else {
            return;
        };
        assert_eq!(top_via_new(&msg), top_via_old(&msg), "{vias:?}");
        // Kept: asked again, the same.
        assert_eq!(top_via_new(&msg), top_via_old(&msg), "{vias:?}");
    }

    #[test]
    fn kept_top_via_is_what_parsing_gives() {
        for vias in [
            "Via: SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1\r\n",
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport=7;received=1.2.3.4\r\n",
            "v: SIP/2.0/TCP [2001:db8::1]:5061 ; BRANCH = z9hG4bKy ; Received=h\r\n",
            "Via: SIP/2.0/UDP h;branch=first;branch=second;rport;rport=5\r\n",
            "Via: SIP/2.0/UDP h;branch;received\r\n",
            "Via: SIP/2.0/UDP h:1;x=1;;branch=z9hG4bKafter-bad\r\n",
            "Via: SIP/2.0/UDP h, SIP/2.0/UDP second;branch=z9hG4bK2\r\n",
            "Via: , SIP/2.0/UDP second;branch=z9hG4bK2\r\n",
            "Via: SIP/2.0/UDP h;branch=\"q;x\"\r\nVia: SIP/2.0/UDP second\r\n",
            "X: 1\r\nVia: SIP/2.0/UDP h\r\nVia: SIP/2.0/UDP g;branch=z9hG4bK3\r\n",
            "Via: SIP/2.0/UDP\r\n",
            "Via:\r\n",
            "",
        ] {
            same_top_via(vias);
        }
    }

    proptest::proptest! {
        #[test]
        fn kept_top_via_matches_on_any_value(
            v in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(";branch=z9hG4bK1"),
                    proptest::strategy::Just(";rport"), proptest::strategy::Just(";rport=9"),
                    proptest::strategy::Just(";received=1.2.3.4"), proptest::strategy::Just(";RPORT"),
                    proptest::strategy::Just(" "), proptest::strategy::Just(";"),
                    proptest::strategy::Just("="), proptest::strategy::Just(","),
                    proptest::strategy::Just("SIP/2.0/UDP h"), proptest::strategy::Just(":5060"),
                    proptest::strategy::Just("\""), proptest::strategy::Just("x"),
                ],
                0..10,
            ),
        ) {
            same_top_via(&format!("Via: SIP/2.0/UDP h{}\r\n", v.concat()));
            same_top_via(&format!("Via: {}\r\n", v.concat()));
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
