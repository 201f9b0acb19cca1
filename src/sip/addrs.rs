//! The URI-bearing values of a message parsed once: the Request-URI, From,
//! To, P-Asserted-Identity and Remote-Party-ID.
//!
//! Validation parses the Request-URI and every From/To value; the tracking
//! rules then want the user parts of the Request-URI, From, To, PAI and
//! RPID, and used to parse each of them again two or three times per
//! INVITE. Here the spans are kept in fixed-size tables inside the
//! [`Message`] (no allocation), filled on first use. The tables have room
//! for the usual message; a value beyond them is parsed where it is asked
//! for, with the same answer.

use super::chars::{split_commas, trim_lws};
use super::header::HeaderName;
use super::message::{Message, Span};
use super::nameaddr::NameAddr;
use super::uri::{Uri, UriSpans};

/// A name-addr / addr-spec value's URI, in message coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrSpan {
    /// The URI without its angle brackets.
    pub uri: Span,
    /// True when the URI was written in `<>`.
    pub angle: bool,
    /// The header parameters after the URI, raw (from the first `;`; empty
    /// when there are none): the dialog's tags are read from here.
    pub params: Span,
}

/// The Request-URI decoded as a `sip:`/`sips:` URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestUriSpans {
    pub user: Option<Span>,
    /// It carries `?headers` (forbidden in a Request-URI).
    pub has_headers: bool,
}

/// From/To values a message can have cached. A valid message has one of
/// each; more are refused by validation (and parsed on demand until then).
const NAME_SLOTS: usize = 2;
/// From, and up to two of P-Asserted-Identity / Remote-Party-ID. The To
/// user part is asked for only when the Request-URI has none or the To URI
/// is rewritten: parsing it for every INVITE would cost more than it saves.
const USER_SLOTS: usize = 3;

/// What validation parses anyway: the Request-URI and the From/To values.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Names {
    /// None when there is no Request-URI or it is no valid SIP URI. All
    /// of it: the core takes an in-dialog request's next hop from it, and
    /// the router the dialed user.
    request_uri: Option<UriSpans>,
    /// (header index, the value as a name-addr; None when malformed).
    slots: [(u32, Option<AddrSpan>); NAME_SLOTS],
    /// Each slot's `tag` parameter value, found in the same pass that
    /// validated the parameters (None: no tag, an empty one, or a
    /// malformed value): [`Message::tag`]'s answer.
    tags: [Option<Span>; NAME_SLOTS],
    len: u8,
}

/// The user parts of the From, PAI and RPID URIs (None: no name-addr,
/// no SIP URI, or no user part). Only the tracking rules need them.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Users {
    slots: [(u32, Option<Span>); USER_SLOTS],
    len: u8,
}

fn is_name_header(n: HeaderName) -> bool {
    matches!(n, HeaderName::From | HeaderName::To)
}

fn is_user_header(n: HeaderName) -> bool {
    matches!(
        n,
        HeaderName::From | HeaderName::PAssertedIdentity | HeaderName::RemotePartyId
    )
}

fn offset(base: Span, (a, b): (usize, usize)) -> Span {
    let s = base.start as usize;
    Span::new(s + a, s + b)
}

/// The whole header value as one name-addr (a list is not one).
fn name_addr(msg: &Message, value: Span) -> Option<AddrSpan> {
    let na = NameAddr::parse(msg.bytes(value)).ok()?;
    Some(AddrSpan {
        uri: offset(value, na.uri),
        angle: na.angle,
        params: offset(value, na.params),
    })
}

/// [`name_addr`] and the value's non-empty `tag` parameter.
fn name_addr_tagged(msg: &Message, value: Span) -> Option<(AddrSpan, Option<Span>)> {
    let (na, tag) = NameAddr::parse_tagged(msg.bytes(value)).ok()?;
    let addr = AddrSpan {
        uri: offset(value, na.uri),
        angle: na.angle,
        params: offset(value, na.params),
    };
    Some((addr, tag.filter(|(a, b)| b > a).map(|r| offset(value, r))))
}

pub(super) fn names(msg: &Message) -> Names {
    let mut n = Names {
        request_uri: msg.request_uri_span().and_then(|span| {
            let u = Uri::parse(msg.bytes(span)).ok()?;
            Some(UriSpans::of(&u))
        }),
        ..Names::default()
    };
    for (i, h) in msg.headers.iter().enumerate() {
        if usize::from(n.len) == NAME_SLOTS {
            break;
        }
        if is_name_header(h.name) {
            let k = usize::from(n.len);
            let (addr, tag) = match name_addr_tagged(msg, h.value) {
                Some((a, t)) => (Some(a), t),
                None => (None, None),
            };
            n.slots[k] = (i as u32, addr);
            n.tags[k] = tag;
            n.len += 1;
        }
    }
    n
}

fn user_of(msg: &Message, header: usize) -> Option<Span> {
    let a = msg.addr(header)?;
    user_part(msg.bytes(a.uri)).map(|r| offset(a.uri, r))
}

/// The user part of a URI: RFC 3261's when it is a SIP URI
/// ([`Uri::parse`]), else as gateways write it ([`loose_user`]).
///
/// Both readings end the user part at the first `@`, and differ only when
/// a `:` (a password) comes before it: without one, a user part that is
/// clean for [`loose_user`] is its answer whether or not the rest of the
/// URI is RFC 3261's (every byte of a valid one is clean). So only a URI
/// with a password is decoded in full here; decoding the From and PAI
/// URIs of every INVITE to find the text up to their `@` cost ~660
/// instructions each (issue 15).
pub fn user_part(uri: &[u8]) -> Option<(usize, usize)> {
    let scheme = super::uri::scheme_of(uri)?;
    if !(scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips")) {
        return None;
    }
    let start = scheme.len() + 1;
    let at = start + uri.get(start..)?.iter().position(|&c| c == b'@')?;
    let user = &uri[start..at];
    if !user.contains(&b':') {
        return clean_user(user).then_some((start, at));
    }
    match Uri::parse(uri) {
        Ok(u) => u.user,
        Err(_) => loose_user(uri),
    }
}

/// A user part [`loose_user`] takes: not empty, no white space, angle
/// bracket or quote.
fn clean_user(user: &[u8]) -> bool {
    !user.is_empty() && !user.iter().any(|&c| NOT_IN_USER[usize::from(c)])
}

/// The bytes [`clean_user`] refuses, as a table: one look-up a byte where
/// the comparisons cost ~7 instructions (the From and PAI users of every
/// INVITE go through it).
const NOT_IN_USER: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = c <= b' ' as usize || matches!(c as u8, b'<' | b'>' | b'"' | 0x7f);
        c += 1;
    }
    t
};

/// The user part of a `sip:`/`sips:` URI that is not RFC 3261's, as
/// gateways write it: between the scheme and the first `@`, when that
/// holds no white space, angle bracket or quote. A bare `#` (the dial
/// key, `sip:9161234567#@gw`; RFC 3261 wants `%23`) made the caller
/// vanish: a withheld number, though the INVITE went on with it (trial,
/// 2026-12-03).
fn loose_user(uri: &[u8]) -> Option<(usize, usize)> {
    let scheme = super::uri::scheme_of(uri)?;
    if !(scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips")) {
        return None;
    }
    let start = scheme.len() + 1;
    let at = start + uri.get(start..)?.iter().position(|&c| c == b'@')?;
    clean_user(&uri[start..at]).then_some((start, at))
}

pub(super) fn users(msg: &Message) -> Users {
    let mut u = Users::default();
    for (i, h) in msg.headers.iter().enumerate() {
        if usize::from(u.len) == USER_SLOTS {
            break;
        }
        if is_user_header(h.name) {
            u.slots[usize::from(u.len)] = (i as u32, user_of(msg, i));
            u.len += 1;
        }
    }
    u
}

/// Route values the core asks about (the first, the second of a double
/// Record-Route, and the next hop after them).
const ROUTE_SLOTS: usize = 3;

/// The first Route values (across Route headers, in order, LWS trimmed,
/// empty ones skipped: what the core's route list holds) as name-addrs.
/// Validation parses every one; the core parsed them again, one to three
/// per in-dialog request.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Routes {
    /// (the value, its name-addr's URI; None when malformed).
    slots: [(Span, Option<Span>); ROUTE_SLOTS],
    len: u8,
}

/// The span of `value[a..b]` without its surrounding LWS (empty at `a`
/// when it is all LWS), in message coordinates.
fn trimmed(msg: &Message, value: Span, (a, b): (usize, usize)) -> Span {
    let v = msg.bytes(value);
    let t = trim_lws(&v[a..b]);
    let off = if t.is_empty() {
        a
    } else {
        t.as_ptr() as usize - v.as_ptr() as usize
    };
    let start = value.start as usize + off;
    Span::new(start, start + t.len())
}

pub(super) fn routes(msg: &Message) -> Routes {
    let mut r = Routes::default();
    for h in msg.headers_named(HeaderName::Route) {
        for piece in split_commas(msg.bytes(h.value)) {
            if usize::from(r.len) == ROUTE_SLOTS {
                return r;
            }
            let value = trimmed(msg, h.value, piece);
            if value.is_empty() {
                continue;
            }
            let uri = name_addr(msg, value).map(|a| a.uri);
            r.slots[usize::from(r.len)] = (value, uri);
            r.len += 1;
        }
    }
    r
}

/// The first Contact value, trimmed, as a name-addr.
pub(super) fn first_contact(msg: &Message) -> Option<AddrSpan> {
    let h = msg.header(HeaderName::Contact)?;
    let piece = split_commas(msg.bytes(h.value)).next()?;
    name_addr(msg, trimmed(msg, h.value, piece))
}

impl Names {
    pub(super) fn request_uri(&self, msg: &Message) -> Option<RequestUriSpans> {
        let span = msg.request_uri_span()?;
        let u = self.request_uri?;
        Some(RequestUriSpans {
            user: u.user().map(|r| offset(span, r)),
            has_headers: u.has_headers(),
        })
    }
}

/// What a table kept for header `header` (None: the table has no slot
/// for it, so the caller parses the value itself).
fn kept<T: Copy>(slots: &[(u32, T)], header: usize) -> Option<T> {
    slots
        .iter()
        .find(|(i, _)| *i as usize == header)
        .map(|&(_, v)| v)
}

impl Message {
    /// The Request-URI as a SIP URI (None: a response, another scheme, or
    /// malformed).
    pub fn request_uri_spans(&self) -> Option<RequestUriSpans> {
        self.names().request_uri(self)
    }

    /// The Request-URI decoded (None: a response, another scheme, or
    /// malformed), from the spans validation kept: what
    /// `Uri::parse(msg.request_uri()?)` gives.
    pub fn request_uri_parsed(&self) -> Option<Uri<'_>> {
        let spans = self.names().request_uri?;
        spans.uri(self.bytes(self.request_uri_span()?))
    }

    /// The URI (without its angle brackets) of the Route value at `value`
    /// (one element of a Route header, LWS trimmed, as the core lists
    /// them) as a name-addr; None when it is no name-addr.
    pub fn route_uri(&self, value: Span) -> Option<&[u8]> {
        let r = self.routes();
        let uri = match r.slots[..usize::from(r.len)]
            .iter()
            .find(|(v, _)| *v == value)
        {
            Some(&(_, uri)) => uri,
            None => name_addr(self, value).map(|a| a.uri),
        };
        uri.map(|u| self.bytes(u))
    }

    /// Whether validation may take the Route element `value[piece]` (of
    /// the Route header value `value`) as checked: Some(its answer) when
    /// the route table holds it (parsed as the core reads it: trimmed,
    /// which parses alike), None when it must be parsed.
    pub(super) fn route_checked(&self, value: Span, piece: (usize, usize)) -> Option<bool> {
        let v = trimmed(self, value, piece);
        if v.is_empty() {
            return None;
        }
        let r = self.routes();
        r.slots[..usize::from(r.len)]
            .iter()
            .find(|(s, _)| *s == v)
            .map(|(_, uri)| uri.is_some())
    }

    /// Header `header` (an index into `headers`) as one name-addr value.
    pub fn addr(&self, header: usize) -> Option<AddrSpan> {
        let n = self.names();
        match kept(&n.slots[..usize::from(n.len)], header) {
            Some(a) => a,
            None => name_addr(self, self.headers.get(header)?.value),
        }
    }

    /// The user part of header `header`'s SIP URI, for From, To,
    /// P-Asserted-Identity, Remote-Party-ID and any other name-addr header.
    pub fn addr_user(&self, header: usize) -> Option<Span> {
        let u = self.users();
        match kept(&u.slots[..usize::from(u.len)], header) {
            Some(s) => s,
            None => user_of(self, header),
        }
    }

    /// The `tag` parameter of the first From or To header (None when
    /// absent, empty or the value is malformed), from the spans validation
    /// kept: the core reads both tags of every message it matches to a
    /// dialog, and parsing the name-addr again each time was its largest
    /// parse after validation's own.
    pub fn tag(&self, name: HeaderName) -> Option<&[u8]> {
        let header = self.header_index(name)?;
        let n = self.names();
        let kept = n.slots[..usize::from(n.len)]
            .iter()
            .position(|&(i, _)| i as usize == header);
        if let Some(k) = kept {
            return n.tags[k].map(|s| self.bytes(s));
        }
        let a = self.addr(header)?;
        let params = self.bytes(a.params);
        let (_, value) = super::scan::find_param(params, b"tag")?;
        let (start, end) = value?;
        Some(&params[start..end]).filter(|t| !t.is_empty())
    }

    /// The index of the first header of that name.
    pub fn header_index(&self, name: HeaderName) -> Option<usize> {
        self.headers.iter().position(|h| h.name == name)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn msg(text: &str) -> Message {
        Message::parse(Bytes::from(text.to_string()), true).expect("parses")
    }

    #[test]
    fn a_gateways_user_part_is_found_where_rfc_3261_finds_none_table() {
        for (uri, user) in [
            ("sip:9161234567#@gw.example", Some("9161234567#")),
            ("SIPS:*21#@gw", Some("*21#")),
            ("sip:gw.example", None),
            ("sip:@gw", None),
            ("sip:a b@gw", None),
            ("sip:a\"b@gw", None),
            ("tel:+7916#", None),
            ("mailto:a#@b", None),
        ] {
            let got = loose_user(uri.as_bytes()).map(|(a, b)| &uri[a..b]);
            assert_eq!(got, user, "{uri}");
        }
        // In a message: the From's user part is there for T-5 and the lead.
        let m = msg(
            "INVITE sip:100@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
             From: <sip:9161234567#@gw>;tag=1\r\nTo: <sip:100@x>\r\nCall-ID: c\r\n\
             CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        );
        let from = m.header_index(HeaderName::From).expect("From");
        let span = m.addr_user(from).expect("a user part");
        assert_eq!(m.bytes(span), b"9161234567#");
    }

    /// The uncached answer: what every caller computed before the tables.
    fn parsed_user(m: &Message, header: usize) -> Option<Span> {
        let value = m.headers[header].value;
        let na = NameAddr::parse(m.bytes(value)).ok()?;
        let uri = Uri::parse(na.uri()).ok()?;
        let (a, b) = uri.user?;
        let s = value.start as usize + na.uri.0;
        Some(Span::new(s + a, s + b))
    }

    fn parsed_addr(m: &Message, header: usize) -> Option<AddrSpan> {
        let value = m.headers[header].value;
        let na = NameAddr::parse(m.bytes(value)).ok()?;
        let s = value.start as usize;
        Some(AddrSpan {
            uri: Span::new(s + na.uri.0, s + na.uri.1),
            angle: na.angle,
            params: Span::new(s + na.params.0, s + na.params.1),
        })
    }

    #[test]
    fn cached_spans_are_what_parsing_each_value_gives() {
        for text in [
            // A trunk INVITE: every table entry used.
            "INVITE sip:74951234567@h;user=phone SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
             From: \"8-916\" <sip:8-916-123-45-67@u;user=phone>;tag=1\r\nTo: <sip:74951234567@h>\r\n\
             Call-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:89161234567@u>\r\n\
             P-Asserted-Identity: <sip:89161234567@u;user=phone>\r\n\
             Remote-Party-ID: \"x\" <sip:8916@u>;party=calling\r\nContent-Length: 0\r\n\r\n",
            // More PAI/RPID than the table holds, a list, a tel: URI, addr-specs,
            // compact forms, no user parts, and a broken To.
            "INVITE sips:h SIP/2.0\r\nf: sip:u@h;tag=1\r\nt: <sip:h\r\n\
             P-Asserted-Identity: <tel:+74951234567>\r\nP-Asserted-Identity: <sip:a@h>, <sip:b@h>\r\n\
             Remote-Party-ID: <sip:1@h>\r\nRemote-Party-ID: <sip:2@h>\r\nP-Asserted-Identity: sip:3@h\r\n\r\n",
            // Three From headers (refused by validation, still answered alike).
            "INVITE tel:+7495 SIP/2.0\r\nFrom: <sip:1@h>\r\nFrom: x <sip:2@h>\r\nFrom: sip:3@h\r\nTo: sip:h\r\n\r\n",
            // A Request-URI with headers, and a response.
            "INVITE sip:u@h?Subject=x SIP/2.0\r\nFrom: <sip:%38916@h>\r\n\r\n",
            "SIP/2.0 200 OK\r\nFrom: <sip:1@h>;tag=a\r\nTo: <sip:2@h>;tag=b\r\n\r\n",
        ] {
            let m = msg(text);
            for i in 0..m.headers.len() + 1 {
                let expected = (i < m.headers.len()).then(|| parsed_user(&m, i)).flatten();
                assert_eq!(m.addr_user(i), expected, "user of header {i} in {text:?}");
                let expected = (i < m.headers.len()).then(|| parsed_addr(&m, i)).flatten();
                assert_eq!(m.addr(i), expected, "addr of header {i} in {text:?}");
            }
            let expected = m.request_uri().and_then(|u| {
                let base = m.request_uri_span()?.start as usize;
                let uri = Uri::parse(u).ok()?;
                Some(RequestUriSpans {
                    user: uri.user.map(|(a, b)| Span::new(base + a, base + b)),
                    has_headers: uri.headers.is_some(),
                })
            });
            assert_eq!(m.request_uri_spans(), expected, "{text:?}");
        }
        let m = msg("INVITE sip:u@h?Subject=x SIP/2.0\r\nFrom: <sip:%38916@h>\r\n\r\n");
        assert_eq!(m.request_uri_spans().map(|r| r.has_headers), Some(true));
        let from = m.addr_user(0).map(|s| m.bytes(s));
        assert_eq!(from, Some(&b"%38916"[..]));
    }

    type UriFields = (
        (usize, usize),
        Option<(usize, usize)>,
        Option<(usize, usize)>,
        (usize, usize),
        Option<u16>,
        usize,
        (usize, usize),
        Option<(usize, usize)>,
    );

    fn uri_fields(u: Uri<'_>) -> (usize, UriFields) {
        (
            u.src.as_ptr() as usize,
            (
                u.scheme,
                u.userinfo,
                u.user,
                u.host,
                u.port,
                u.hostport_end,
                u.params,
                u.headers,
            ),
        )
    }

    /// The Route values as the core lists them (`route::route_values`).
    fn route_values(m: &Message) -> Vec<(usize, (usize, usize), Span)> {
        let mut out = Vec::new();
        for (i, h) in m.headers.iter().enumerate() {
            if h.name != HeaderName::Route {
                continue;
            }
            let v = m.bytes(h.value);
            for (a, b) in split_commas(v) {
                let t = trim_lws(&v[a..b]);
                if t.is_empty() {
                    continue;
                }
                let off = t.as_ptr() as usize - v.as_ptr() as usize;
                let start = h.value.start as usize + off;
                out.push((i, (a, b), Span::new(start, start + t.len())));
            }
        }
        out
    }

    /// The kept Request-URI, first Contact and Route values answer what
    /// parsing them where asked gave; validation's answer for a Route
    /// element from the table is what parsing the element gives.
    fn kept_values_as_parsed(text: &str) {
        let m = msg(text);
        let parsed = m.request_uri().and_then(|u| Uri::parse(u).ok());
        assert_eq!(
            m.request_uri_parsed().map(uri_fields),
            parsed.map(uri_fields),
            "{text:?}"
        );
        let old_contact = m.value(HeaderName::Contact).and_then(|v| {
            let (a, b) = split_commas(v).next()?;
            let na = NameAddr::parse(trim_lws(&v[a..b])).ok()?;
            Some((na.uri().as_ptr() as usize, na.uri().len()))
        });
        let kept = m.first_contact().map(|a| {
            let u = m.bytes(a.uri);
            (u.as_ptr() as usize, u.len())
        });
        assert_eq!(kept, old_contact, "{text:?}");
        for (i, piece, value) in route_values(&m) {
            let old = NameAddr::parse(m.bytes(value))
                .ok()
                .map(|n| (n.uri().as_ptr() as usize, n.uri().len()));
            let kept = m.route_uri(value).map(|u| (u.as_ptr() as usize, u.len()));
            assert_eq!(kept, old, "{text:?} {value:?}");
            let untrimmed = NameAddr::parse(&m.bytes(m.headers[i].value)[piece.0..piece.1]).is_ok();
            if let Some(ok) = m.route_checked(m.headers[i].value, piece) {
                assert_eq!(ok, untrimmed, "{text:?} {value:?}");
            }
        }
    }

    #[test]
    fn kept_request_uri_contact_and_routes_are_what_parsing_gives() {
        for text in [
            "BYE sip:sipp@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
             Route: <sip:0123456789abcdef@127.0.0.1:5060;lr>\r\nFrom: <sip:a@h>;tag=1\r\n\
             To: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
            // Four routes over three headers (one beyond the table), LWS
            // around the elements, an empty element, a malformed one.
            "ACK sips:u:pw@[::1]:5061;transport=tcp;lr?Subject=x SIP/2.0\r\n\
             Route: <sip:a@1.2.3.4;lr> , <sip:b@h>\r\nRoute: ,<sip:c@h:1>\r\n\
             Route: <sip:d@h>, sip:e@h;x=1 ,x <sip:f@h>\r\n\
             Contact: \"A, B\" <sip:a@[2001:db8::1]:5070>;expires=60 , <sip:b@h>\r\n\r\n",
            "INVITE sip:h SIP/2.0\r\nRoute: <sip:a@h\r\nRoute: <sip:b@h>\r\nContact: *\r\n\r\n",
            "INVITE tel:+7495 SIP/2.0\r\nm: sip:u@h ;expires=1\r\nContact: <sip:2@h>\r\n\r\n",
            "OPTIONS sip:u@h;maddr=x SIP/2.0\r\nContact: <sip:a@\r\n\r\n",
            "OPTIONS sip:u@h@g SIP/2.0\r\nContact:\r\n\r\n",
            "SIP/2.0 200 OK\r\nContact: <sip:127.0.0.1:5070>\r\nRoute: <sip:r@h>\r\n\r\n",
        ] {
            kept_values_as_parsed(text);
        }
    }

    proptest::proptest! {
        /// The user part without decoding the whole URI is what decoding
        /// it (else the gateways' reading) gives.
        #[test]
        fn user_parts_as_a_full_decode_finds_them(
            v in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("sip:"), proptest::strategy::Just("SIPS:"),
                    proptest::strategy::Just("tel:"), proptest::strategy::Just("@"),
                    proptest::strategy::Just(":"), proptest::strategy::Just(";"),
                    proptest::strategy::Just("?"), proptest::strategy::Just("#"),
                    proptest::strategy::Just(" "), proptest::strategy::Just("\""),
                    proptest::strategy::Just("<"), proptest::strategy::Just("%20"),
                    proptest::strategy::Just("916"), proptest::strategy::Just("h.example"),
                    proptest::strategy::Just("[::1]"), proptest::strategy::Just(":5060"),
                    proptest::strategy::Just(";user=phone"), proptest::strategy::Just("\u{7f}"),
                    proptest::strategy::Just("é"), proptest::strategy::Just("="),
                ],
                0..8,
            ),
        ) {
            let s = v.concat();
            let b = s.as_bytes();
            let full = match Uri::parse(b) {
                Ok(u) => u.user,
                Err(_) => loose_user(b),
            };
            proptest::prop_assert_eq!(user_part(b), full, "{:?}", s);
        }

        /// LWS around a name-addr changes neither whether it parses nor
        /// its URI: validation parses list elements untrimmed, the core
        /// (and the kept tables) trimmed.
        #[test]
        fn trimmed_name_addr_parses_alike(
            v in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("<sip:a@h>"), proptest::strategy::Just("sip:a@h"),
                    proptest::strategy::Just(" "), proptest::strategy::Just("\t"),
                    proptest::strategy::Just("\r\n "), proptest::strategy::Just(";"),
                    proptest::strategy::Just(";tag=1"), proptest::strategy::Just("="),
                    proptest::strategy::Just("\""), proptest::strategy::Just("<"),
                    proptest::strategy::Just(">"), proptest::strategy::Just("x"),
                    proptest::strategy::Just("\\"), proptest::strategy::Just("[::1]"),
                ],
                0..8,
            ),
        ) {
            let s = v.concat();
            let uri_at = |p: &[u8]| {
                NameAddr::parse(p)
                    .ok()
                    .map(|n| (n.uri().as_ptr() as usize, n.uri().len()))
            };
            let b = s.as_bytes();
            proptest::prop_assert_eq!(uri_at(b), uri_at(trim_lws(b)), "{:?}", s);
        }

        #[test]
        fn kept_values_match_on_pieces(
            routes in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("<sip:a@1.2.3.4;lr>"), proptest::strategy::Just("sip:b@h"),
                    proptest::strategy::Just(" , "), proptest::strategy::Just(","),
                    proptest::strategy::Just(" "), proptest::strategy::Just("<sip:"),
                    proptest::strategy::Just("\r\nRoute: "), proptest::strategy::Just("\r\nContact: "),
                    proptest::strategy::Just("\"x\""), proptest::strategy::Just(";lr"),
                ],
                0..10,
            ),
        ) {
            kept_values_as_parsed(&format!(
                "BYE sip:u@h SIP/2.0\r\nRoute: {}\r\nContact: <sip:c@h>\r\n\r\n",
                routes.concat()
            ));
        }
    }

    /// The dialog's tags from the kept spans answer as parsing the value
    /// would (NameAddr::tag): the core matches dialogs by them.
    #[test]
    fn tags_match_parsing_each_value() {
        for (from, to) in [
            ("<sip:1@h>;tag=a", Some("b")),
            ("\"x;tag=no\" <sip:1@h;tag=uri>;tag=a", None),
            ("sip:1@h;TAG=a;x=1", Some("B")),
            ("<sip:1@h>;tag=", Some("")),
            ("<sip:1@h>;tag", None),
            ("<sip:1@h", Some("b")),
            ("<sip:1@h>;x=1;tag=a2;y", Some("b")),
        ] {
            let to_line = match to {
                Some(t) => format!("t: <sip:2@h>;tag={t}\r\n"),
                None => "To: <sip:2@h>\r\n".to_string(),
            };
            let m = msg(&format!("SIP/2.0 200 OK\r\nf: {from}\r\n{to_line}\r\n"));
            for name in [HeaderName::From, HeaderName::To] {
                let expected = m
                    .value(name)
                    .and_then(|v| NameAddr::parse(v).ok())
                    .and_then(|n| n.tag());
                assert_eq!(m.tag(name), expected, "{name:?} of {from:?} / {to:?}");
            }
        }
        // A From beyond the table (two To first): parsed where asked for.
        let m = msg("SIP/2.0 200 OK\r\nTo: <sip:2@h>;tag=b\r\nt: <sip:3@h>;tag=c\r\nf: <sip:1@h>;tag=a\r\n\r\n");
        assert_eq!(m.tag(HeaderName::From), Some(&b"a"[..]));
        assert_eq!(m.tag(HeaderName::To), Some(&b"b"[..]));
        let m = msg("SIP/2.0 200 OK\r\nFrom: <sip:1@h>;x=1;tag=a2;y\r\nTo: <sip:2@h>;tag=\r\n\r\n");
        assert_eq!(m.tag(HeaderName::From), Some(&b"a2"[..]));
        assert_eq!(m.tag(HeaderName::To), None);
    }
}
