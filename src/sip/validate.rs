//! Acceptance rules: whether a parsed message may be processed, and the
//! response a request that may not gets (RFC 3261 8.2, 16.3; RFC 4475).
//!
//! Only what a proxy relies on is checked, but it is checked in full: every
//! Via value, the From/To/Contact/Route values, CSeq, Call-ID,
//! Max-Forwards, Date, and the request line.

use super::chars::{is_token, parse_u64, trim_lws};
use super::header::HeaderName;
use super::message::{Defect, Message, Span, StartLine};
use super::nameaddr::NameAddr;
use super::uri::scheme_of;
use super::via::{via_values, Via};

/// Why a message is refused: the status code to answer a request with
/// (responses are dropped) and a reason for logs and the Warning text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: u16,
    pub reason: &'static str,
}

const fn bad(reason: &'static str) -> Rejection {
    Rejection { code: 400, reason }
}

// `validate` keeps header names as bits of a u32.
const _: () = assert!((HeaderName::Other as u32) < 32);

const fn bit(n: HeaderName) -> u32 {
    1 << (n as u32)
}

/// The names `validate` has a rule for (the arms of its `match`).
const CHECKED: u32 = bit(HeaderName::Via)
    | bit(HeaderName::From)
    | bit(HeaderName::To)
    | bit(HeaderName::Contact)
    | bit(HeaderName::Route)
    | bit(HeaderName::RecordRoute)
    | bit(HeaderName::CallId)
    | bit(HeaderName::MaxForwards)
    | bit(HeaderName::Date);

/// Checks a message; `Ok` means a proxy may process it.
pub fn validate(msg: &Message) -> Result<(), Rejection> {
    if let Some(d) = msg.defect {
        return Err(bad(match d {
            Defect::BadHeaderLine => "Malformed header line",
            Defect::UnterminatedHeaders => "Header section not terminated",
            Defect::BadContentLength => "Invalid Content-Length",
            Defect::ContentLengthExceedsBody => "Content-Length exceeds message body",
        }));
    }
    let version = match msg.start {
        StartLine::Request { version, .. } | StartLine::Response { version, .. } => {
            msg.bytes(version)
        }
    };
    if version != b"SIP/2.0" {
        return Err(
            if version.starts_with(b"SIP/") && !version.contains(&b' ') {
                Rejection {
                    code: 505,
                    reason: "Version Not Supported",
                }
            } else {
                bad("Malformed SIP version")
            },
        );
    }
    // One pass for the names present and those present twice: looking
    // each up again (five required, and every single-valued header asking
    // whether its name comes again) was a scan of all headers each time.
    let (mut present, mut repeated) = (0u32, 0u32);
    // The first CSeq value, for `cseq_value` below (what `msg.value`
    // would find by a second scan of the headers).
    let mut cseq_v = None;
    for h in &msg.headers {
        let b = bit(h.name);
        if h.name == HeaderName::CSeq && present & b == 0 {
            cseq_v = Some(h.value);
        }
        repeated |= present & b;
        present |= b;
    }
    for (name, missing) in [
        (HeaderName::Via, "Missing Via"),
        (HeaderName::From, "Missing From"),
        (HeaderName::To, "Missing To"),
        (HeaderName::CallId, "Missing Call-ID"),
        (HeaderName::CSeq, "Missing CSeq"),
    ] {
        if present & bit(name) == 0 {
            return Err(bad(missing));
        }
    }
    // The first Via and Contact headers: their first values are parsed
    // once for the message (`Message::top_via`, `Message::first_contact`),
    // where the core reads them again.
    let (mut first_via, mut first_contact) = (true, true);
    for (i, h) in msg.headers.iter().enumerate() {
        let b = bit(h.name);
        if repeated & b != 0 && h.name.is_single_valued() {
            return Err(bad("Header repeated that must appear once"));
        }
        // Most of a message's headers have no rule below: one test
        // passes them.
        if CHECKED & b == 0 {
            continue;
        }
        let v = msg.bytes(h.value);
        match h.name {
            HeaderName::Via => {
                let mut values = via_values(v);
                if std::mem::take(&mut first_via) {
                    // There is always one value (`split_commas` yields
                    // the empty value too): the top Via.
                    values.next();
                    msg.top_via().ok_or(bad("Malformed Via"))?;
                }
                for (a, b) in values {
                    Via::parse(&v[a..b]).map_err(|_| bad("Malformed Via"))?;
                }
            }
            HeaderName::From | HeaderName::To => {
                // Parsed once for the message: the tracking rules read
                // these spans again (see `super::addrs`).
                msg.addr(i).ok_or(bad("Malformed From/To"))?;
            }
            HeaderName::Contact => {
                let first = std::mem::take(&mut first_contact);
                // Header values are LWS-trimmed already (`Message::parse`).
                if v != b"*" {
                    // The first element parses as its trimmed form does
                    // (LWS around a name-addr changes nothing).
                    check_list(v, "Malformed Contact", |k, _| {
                        (first && k == 0).then(|| msg.first_contact().is_some())
                    })?;
                }
            }
            HeaderName::Route => check_list(v, "Malformed Route", |_, piece| {
                msg.route_checked(h.value, piece)
            })?,
            HeaderName::RecordRoute => check_list(v, "Malformed Route", |_, _| None)?,
            HeaderName::CallId
                if v.is_empty()
                    // ASCII white space and controls: every white space
                    // byte but SP is a control.
                    || super::scan::has_space_or_control(v) =>
            {
                return Err(bad("Malformed Call-ID"));
            }
            HeaderName::MaxForwards => {
                parse_u64(v, 10).ok_or(bad("Malformed Max-Forwards"))?;
            }
            HeaderName::Date => check_date(v)?,
            _ => {}
        }
    }
    // Kept in the message for `cseq` (the first CSeq header's value, as
    // `cseq` would find it).
    let kept = *msg
        .cseq_cell()
        .get_or_init(|| cseq_v.and_then(|v| cseq_span(msg, v)));
    let (cseq_num, cseq_method) = kept
        .map(|(n, m)| (n, msg.bytes(m)))
        .ok_or(bad("Malformed CSeq"))?;
    // RFC 3261 8.1.1.5: the sequence number must be less than 2**31.
    if cseq_num >= 1 << 31 {
        return Err(bad("CSeq number out of range"));
    }
    if let StartLine::Request { uri, .. } = msg.start {
        let method = msg.method_bytes().unwrap_or_default();
        if cseq_method != method {
            return Err(bad("CSeq method does not match the request method"));
        }
        request_uri(msg, msg.bytes(uri))?;
    }
    Ok(())
}

/// The Request-URI rules. A `sip:`/`sips:` URI is decoded in full (and
/// kept for the tracking rules); the decoding refuses every byte the
/// quick test below refuses (all are outside RFC 3261's URI characters),
/// with the same answer, so only other schemes need that test.
fn request_uri(msg: &Message, uri: &[u8]) -> Result<(), Rejection> {
    if let Some(scheme) = scheme_of(uri) {
        if scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips") {
            let parsed = msg
                .request_uri_spans()
                .ok_or(bad("Malformed Request-URI"))?;
            if parsed.has_headers {
                return Err(bad("Request-URI must not carry headers"));
            }
            return Ok(());
        }
    }
    if uri.is_empty() || uri.iter().any(|&c| refused_in_request_uri(c)) {
        return Err(bad("Malformed Request-URI"));
    }
    let scheme = scheme_of(uri).ok_or(bad("Malformed Request-URI"))?;
    if scheme.eq_ignore_ascii_case(b"tel") {
        Ok(())
    } else {
        Err(Rejection {
            code: 416,
            reason: "Unsupported URI Scheme",
        })
    }
}

/// Bytes no Request-URI may hold whatever its scheme.
fn refused_in_request_uri(c: u8) -> bool {
    c <= b' ' || c == b'<' || c == b'>' || c == b'"'
}

/// Every element of a list parses as a name-addr. `kept(k, range)` may
/// answer for element `k` (at `range` in `v`) from what the message kept
/// (Some(whether it parses)); None parses it here.
fn check_list(
    v: &[u8],
    what: &'static str,
    mut kept: impl FnMut(usize, (usize, usize)) -> Option<bool>,
) -> Result<(), Rejection> {
    for (k, (a, b)) in super::chars::split_commas(v).enumerate() {
        let ok = match kept(k, (a, b)) {
            Some(ok) => ok,
            None => NameAddr::parse(&v[a..b]).is_ok(),
        };
        if !ok {
            return Err(bad(what));
        }
    }
    Ok(())
}

/// CSeq as (number, method); `None` when malformed. Decoded once per
/// message (validation does it first).
pub fn cseq(msg: &Message) -> Option<(u64, &[u8])> {
    let kept = *msg
        .cseq_cell()
        .get_or_init(|| cseq_span(msg, msg.header(HeaderName::CSeq)?.value));
    kept.map(|(n, m)| (n, msg.bytes(m)))
}

/// [`cseq_value`] of the CSeq value at `value`, the method as a span.
fn cseq_span(msg: &Message, value: Span) -> Option<(u64, Span)> {
    let v = msg.bytes(value);
    let (n, m) = cseq_value(v)?;
    let start = value.start as usize + (m.as_ptr() as usize - v.as_ptr() as usize);
    Some((n, Span::new(start, start + m.len())))
}

/// A CSeq value as (number, method): at most 20 digits that fit a u64,
/// LWS, a token. One pass over the digits (the number is built as they
/// are found) where finding their end and converting them read them twice.
fn cseq_value(v: &[u8]) -> Option<(u64, &[u8])> {
    let (mut num, mut i) = (0u64, 0);
    while i < v.len() && v[i].is_ascii_digit() {
        num = num.checked_mul(10)?.checked_add(u64::from(v[i] - b'0'))?;
        i += 1;
    }
    if i == 0 || i > 20 || i == v.len() || !super::chars::is_lws(v[i]) {
        return None;
    }
    let method = trim_lws(&v[i..]);
    (!method.is_empty() && method.iter().all(|&c| is_token(c))).then_some((num, method))
}

/// RFC 1123 date, always in GMT (RFC 3261 20.17): `Sat, 13 Nov 2010 23:29:00 GMT`.
fn check_date(v: &[u8]) -> Result<(), Rejection> {
    let parts: Vec<&[u8]> = v.split(|&c| c == b' ').filter(|p| !p.is_empty()).collect();
    const DAYS: [&[u8]; 7] = [
        b"Mon,", b"Tue,", b"Wed,", b"Thu,", b"Fri,", b"Sat,", b"Sun,",
    ];
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let ok = parts.len() == 6
        && DAYS.contains(&parts[0])
        && parts[1].len() == 2
        && parse_u64(parts[1], 2).is_some()
        && MONTHS.contains(&parts[2])
        && parse_u64(parts[3], 4).is_some()
        && parts[4].len() == 8
        && parts[5] == b"GMT";
    if ok {
        Ok(())
    } else {
        Err(bad("Malformed Date"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// The Request-URI rules as they were written before the quick test
    /// was left to the decoding for `sip:`/`sips:`.
    fn request_uri_old(msg: &Message, uri: &[u8]) -> Result<(), Rejection> {
        if uri.is_empty()
            || uri
                .iter()
                .any(|&c| c <= b' ' || c == b'<' || c == b'>' || c == b'"')
        {
            return Err(bad("Malformed Request-URI"));
        }
        let scheme = scheme_of(uri).ok_or(bad("Malformed Request-URI"))?;
        if scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips") {
            let parsed = msg
                .request_uri_spans()
                .ok_or(bad("Malformed Request-URI"))?;
            if parsed.has_headers {
                return Err(bad("Request-URI must not carry headers"));
            }
        } else if !scheme.eq_ignore_ascii_case(b"tel") {
            return Err(Rejection {
                code: 416,
                reason: "Unsupported URI Scheme",
            });
        }
        Ok(())
    }

    /// CSeq as it was parsed before the one pass.
    fn cseq_old(v: &[u8]) -> Option<(u64, &[u8])> {
        let digits_end = v
            .iter()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(v.len());
        let num = parse_u64(&v[..digits_end], 20)?;
        let method = trim_lws(&v[digits_end..]);
        if digits_end == v.len() || !crate::sip::chars::is_lws(v[digits_end]) || method.is_empty() {
            return None;
        }
        method.iter().all(|&c| is_token(c)).then_some((num, method))
    }

    /// `cseq` (kept by validation, or decoded where asked) is the first
    /// CSeq header's value decoded.
    #[test]
    fn kept_cseq_is_the_first_value_decoded() {
        for cseqs in [
            "CSeq: 4711 BYE\r\n",
            "CSeq: 1  INVITE \r\nCSeq: 2 ACK\r\n",
            "CSeq: x\r\nCSeq: 2 ACK\r\n",
            "CSeq: 99999999999999999999 X\r\n",
            "",
        ] {
            let text = format!("BYE sip:u@h SIP/2.0\r\n{cseqs}\r\n");
            let want = |m: &Message| {
                m.value(HeaderName::CSeq)
                    .and_then(cseq_value)
                    .map(|(n, x)| (n, x.to_vec()))
            };
            let got = |m: &Message| cseq(m).map(|(n, x)| (n, x.to_vec()));
            let m = Message::parse(Bytes::from(text.clone()), true).expect("parses");
            assert_eq!(got(&m), want(&m), "{cseqs:?}");
            let m = Message::parse(Bytes::from(text), true).expect("parses");
            let _ = validate(&m);
            assert_eq!(got(&m), want(&m), "{cseqs:?} validated");
        }
    }

    #[test]
    fn cseq_matches_the_two_pass_form() {
        for v in [
            "1 INVITE",
            "4711 BYE",
            "0 ACK",
            "1  INVITE ",
            "1\tINVITE",
            "1INVITE",
            "INVITE",
            "1",
            "1 ",
            " 1 INVITE",
            "1 INV ITE",
            "1 INV;ITE",
            "18446744073709551615 X",
            "18446744073709551616 X",
            "99999999999999999999 X",
            "00000000000000000001 X",
            "000000000000000000001 X",
            "2147483648 INVITE",
            "1 \u{e9}",
        ] {
            assert_eq!(cseq_value(v.as_bytes()), cseq_old(v.as_bytes()), "{v:?}");
        }
    }

    fn check_request_uri(uri: &[u8]) {
        let mut text = b"OPTIONS ".to_vec();
        text.extend_from_slice(uri);
        text.extend_from_slice(b" SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        let Ok(m) = Message::parse(Bytes::from(text), true) else {
            return;
        };
        let Some(u) = m.request_uri() else {
            return;
        };
        assert_eq!(
            request_uri(&m, u),
            request_uri_old(&m, u),
            "{:?}",
            String::from_utf8_lossy(uri)
        );
    }

    #[test]
    fn request_uri_rules_match_the_old_order() {
        for uri in [
            "sip:u@h",
            "SIPS:u@h:5061;transport=tls",
            "sip:u@h?Subject=x",
            "sip:u@h>",
            "sip:<u@h",
            "sip:\"u\"@h",
            "sip:u\x01@h",
            "sip:u@h\x7f",
            "sip:u@h#x",
            "sip:",
            "sip:@h",
            "sips",
            "tel:+74951234567",
            "tel:+7495<",
            "TEL:1",
            "mailto:a@b",
            "mailto:a>b",
            "http://x",
            "1sip:u@h",
            ":x",
            "x",
            "sip:u@[::1]",
            "sip:u@[::1",
            "sipx:u@h",
            "sip:u@\u{e9}",
        ] {
            check_request_uri(uri.as_bytes());
        }
    }

    proptest::proptest! {
        #[test]
        fn request_uri_rules_match_on_any_bytes(
            v in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b's'), proptest::strategy::Just(b'i'),
                    proptest::strategy::Just(b'p'), proptest::strategy::Just(b':'),
                    proptest::strategy::Just(b'@'), proptest::strategy::Just(b'?'),
                    proptest::strategy::Just(b'<'), proptest::strategy::Just(b'"'),
                    proptest::strategy::Just(b't'), proptest::strategy::Just(b'e'),
                    proptest::strategy::Just(b'l'), proptest::strategy::Just(b'['),
                    proptest::arbitrary::any::<u8>(),
                ],
                0..24,
            ),
        ) {
            check_request_uri(&v);
        }

        #[test]
        fn cseq_matches_on_any_bytes(
            v in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b'0'), proptest::strategy::Just(b'9'),
                    proptest::strategy::Just(b'1'), proptest::strategy::Just(b' '),
                    proptest::strategy::Just(b'A'), proptest::strategy::Just(b'\t'),
                    proptest::arbitrary::any::<u8>(),
                ],
                0..26,
            ),
        ) {
            proptest::prop_assert_eq!(cseq_value(&v), cseq_old(&v));
        }
    }

    /// The Call-ID byte test is `is_ascii_whitespace || is_ascii_control`.
    #[test]
    fn call_id_refused_bytes_are_white_space_and_controls() {
        for c in 0..=255u8 {
            assert_eq!(
                c <= b' ' || c == 0x7f,
                c.is_ascii_whitespace() || c.is_ascii_control(),
                "{c}"
            );
        }
    }

    const BASE: &str = "INVITE sip:u@h SIP/2.0\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\n\
                        Call-ID: c\r\nCSeq: 1 INVITE\r\n";

    /// What validation decides when the top Via, the first Contact or
    /// the first Route values (kept in the message for the core) are
    /// malformed, in the first value or a later one, in the first header
    /// or a later one. That the kept values are what parsing gives is
    /// tested in `via.rs` and `addrs.rs`.
    #[test]
    fn malformed_kept_headers_are_refused_by_name() {
        let ok: Result<(), &str> = Ok(());
        let table: [(&str, Result<(), &str>); 17] = [
            ("Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n", ok),
            ("Via: SIP/2.0/UDP h;;\r\n", Err("Malformed Via")),
            ("Via: SIP/2.0/UDP h, bad\r\n", Err("Malformed Via")),
            ("Via: bad, SIP/2.0/UDP h\r\n", Err("Malformed Via")),
            ("Via: SIP/2.0/UDP h\r\nVia: \r\n", Err("Malformed Via")),
            ("Via: \r\nVia: SIP/2.0/UDP h\r\n", Err("Malformed Via")),
            (
                "Via: SIP/2.0/UDP h\r\nContact: *\r\nContact: <sip:a@\r\n",
                Err("Malformed Contact"),
            ),
            (
                "Via: SIP/2.0/UDP h\r\nContact: <sip:a@h> , <sip:b@\r\n",
                Err("Malformed Contact"),
            ),
            (
                "Via: SIP/2.0/UDP h\r\nContact: <sip:a@ , <sip:b@h>\r\n",
                Err("Malformed Contact"),
            ),
            (
                "Via: SIP/2.0/UDP h\r\nContact: <sip:a@h>\r\nContact: x\r\n",
                Err("Malformed Contact"),
            ),
            (
                "Via: SIP/2.0/UDP h\r\nContact: ,<sip:a@h>\r\n",
                Err("Malformed Contact"),
            ),
            (
                "Via: SIP/2.0/UDP h\r\nRoute: <sip:a@h;lr>, ,<sip:b@h>\r\n",
                Err("Malformed Route"),
            ),
            (
                "Via: SIP/2.0/UDP h\r\nRoute: <sip:a@h;lr>\r\nRoute: <sip:b@h> , x\r\n",
                Err("Malformed Route"),
            ),
            (
                "Via: SIP/2.0/UDP h\r\nRoute: <sip:1@h>,<sip:2@h>,<sip:3@h>,<sip:4@\r\n",
                Err("Malformed Route"),
            ),
            (
                "Via: SIP/2.0/UDP h\r\nRecord-Route: <sip:a@h\r\nRoute: <sip:a@h>\r\n",
                Err("Malformed Route"),
            ),
            // The first malformed header in message order is the one named.
            ("Route: <sip:a@h\r\nVia: x\r\n", Err("Malformed Route")),
            ("Contact: <sip:a@h\r\nVia: x\r\n", Err("Malformed Contact")),
        ];
        for (extra, want) in table {
            let text = format!("{BASE}{extra}\r\n");
            let m = Message::parse(Bytes::copy_from_slice(text.as_bytes()), true).expect("parses");
            assert_eq!(validate(&m).map_err(|r| r.reason), want, "{extra:?}");
        }
    }
}
