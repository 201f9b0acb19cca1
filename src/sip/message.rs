//! The message index: start line, header spans and body span over the
//! original buffer.
//!
//! Structural parsing is deliberately permissive: it records the first
//! [`Defect`] it meets instead of failing, so that the proxy can still answer
//! 400 to a broken request (it needs only the raw Via/From/To/Call-ID/CSeq
//! lines for that). Whether a message is acceptable is decided by
//! [`super::validate`].

use std::cell::OnceCell;

use bytes::Bytes;

use super::addrs::{AddrSpan, Names, Routes, Users};
#[cfg(test)]
use super::chars::trim_lws;
use super::chars::{all_token, eq_ic, is_lws, is_token, parse_u64};
use super::header::HeaderName;
use super::lines;

/// A byte range in the message buffer. `u32` keeps the index small; messages
/// are limited far below 4 GiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        // Callers only build spans inside buffers that passed the size check.
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// Request methods a proxy treats specially; the rest are `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Invite,
    Ack,
    Cancel,
    Bye,
    Options,
    Register,
    Other,
}

impl Method {
    /// Methods are case-sensitive (RFC 3261 7.1).
    pub fn classify(m: &[u8]) -> Method {
        match m {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"CANCEL" => Method::Cancel,
            b"BYE" => Method::Bye,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            _ => Method::Other,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request {
        method: Method,
        method_span: Span,
        uri: Span,
        version: Span,
    },
    Response {
        code: u16,
        reason: Span,
        version: Span,
    },
}

/// One header line as it appeared, folded continuation lines included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderField {
    pub name: HeaderName,
    /// The name as written (case and compact form preserved).
    pub name_span: Span,
    /// The value with surrounding LWS trimmed; may contain folded CRLFs.
    pub value: Span,
    /// From the first byte of the name to the end of the line terminator.
    pub line: Span,
}

/// Something structurally wrong that makes the message unacceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    /// A header line without a colon, or with an invalid name.
    BadHeaderLine,
    /// The header section is not closed by an empty line.
    UnterminatedHeaders,
    /// Content-Length is not a number, is repeated, or disagrees with the datagram.
    BadContentLength,
    /// Content-Length says more than the datagram holds.
    ContentLengthExceedsBody,
}

/// Why a buffer could not be indexed at all (no usable start line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty message")]
    Empty,
    #[error("start line is not a SIP request or response line")]
    BadStartLine,
    #[error("message is larger than allowed")]
    TooLarge,
}

/// An indexed SIP message. Cheap to clone (the buffer is reference counted).
#[derive(Clone, Debug)]
pub struct Message {
    buf: Bytes,
    pub start: StartLine,
    /// The start line without its line terminator.
    pub start_line: Span,
    pub headers: Vec<HeaderField>,
    /// Where the empty line that ends the headers begins.
    pub headers_end: u32,
    pub body: Span,
    /// The first structural defect, if any.
    pub defect: Option<Defect>,
    /// The Request-URI and From/To values, parsed once (by validation or
    /// the first caller that needs them): see [`super::addrs`]. A
    /// `OnceCell`, not a `OnceLock`: a message is only ever moved between
    /// threads, never shared, and the lock's `Once` cost ~90 instructions
    /// per table per INVITE.
    names: OnceCell<Names>,
    /// The From/To/PAI/RPID user parts, parsed once by the first caller
    /// that needs one (the tracking rules).
    users: OnceCell<Users>,
    /// The top Via value, parsed once (by validation): the core's
    /// transaction key, stamp and response matching read it again.
    top_via: OnceCell<Option<super::via::TopVia>>,
    /// The first Contact value as a name-addr, parsed once (by
    /// validation): the dialog's target.
    contact: OnceCell<Option<AddrSpan>>,
    /// The first Route values as name-addrs, parsed once (by validation):
    /// the core checks they are its own and takes the next hop from them.
    routes: OnceCell<Routes>,
    /// The CSeq number and method, decoded once (by validation): the core
    /// asks for them up to three times per message.
    cseq: OnceCell<Option<(u64, Span)>>,
}

impl Message {
    /// Indexes one message. With `datagram = true` the buffer is one UDP
    /// datagram: the body is framed by Content-Length when present, else it
    /// runs to the end (RFC 3261 18.3). Stream transports pass exactly one
    /// framed message (see [`super::framing`]).
    pub fn parse(buf: Bytes, datagram: bool) -> Result<Message, ParseError> {
        let b = &buf[..];
        if b.len() > u32::MAX as usize / 2 {
            return Err(ParseError::TooLarge);
        }
        // RFC 3261 7.5: CRLFs before the start line are ignored.
        let mut i = 0;
        while i < b.len() && (b[i] == b'\r' || b[i] == b'\n') {
            i += 1;
        }
        if i == b.len() {
            return Err(ParseError::Empty);
        }
        let mut marks = lines::Marks::new(b);
        let (sl_end, mut next) = marks.line_end(i);
        let start_line = Span::new(i, sl_end);
        let start = parse_start_line(b, start_line)?;

        // A trunk INVITE carries 15 to 25 headers (Record-Route, Privacy,
        // P-Charging-Vector …): 32 spares the regrowth at 17, and at 28
        // bytes a field the 896-byte block costs malloc what 448 did.
        let mut headers: Vec<HeaderField> = Vec::with_capacity(32);
        let mut defect = None;
        let mut headers_end = None;
        // Content-Length headers seen, and the first one's value.
        let (mut lengths, mut length) = (0u32, None::<Span>);
        while next < b.len() {
            let line_start = next;
            // An empty line ends the headers.
            if b[line_start] == b'\n' {
                headers_end = Some((line_start, line_start + 1));
                break;
            }
            if b[line_start] == b'\r' && b.get(line_start + 1) == Some(&b'\n') {
                headers_end = Some((line_start, line_start + 2));
                break;
            }
            // The colon must be on the header's first physical line: one
            // on a continuation line would leave a CR or LF in the name.
            let (colon, lf) = marks.colon_and_lf(line_start);
            let (mut end, mut after) = lines::terminate(b, line_start, lf);
            // Folded continuation lines belong to this header.
            while after < b.len() && (b[after] == b' ' || b[after] == b'\t') {
                let (e, a) = marks.line_end(after);
                end = e;
                after = a;
            }
            match colon.and_then(|c| split_header(b, line_start, c, end)) {
                Some((name_span, value, name)) => {
                    if name == HeaderName::ContentLength {
                        // Noted here rather than searched for after the
                        // loop: one pass over the headers fewer.
                        lengths += 1;
                        length.get_or_insert(value);
                    }
                    headers.push(HeaderField {
                        name,
                        name_span,
                        value,
                        line: Span::new(line_start, after),
                    })
                }
                None => {
                    defect.get_or_insert(Defect::BadHeaderLine);
                }
            }
            next = after;
        }
        let (headers_end, body_start) = match headers_end {
            Some(h) => h,
            None => {
                defect.get_or_insert(Defect::UnterminatedHeaders);
                (b.len(), b.len())
            }
        };

        let mut body = Span::new(body_start, b.len());
        match (length, lengths) {
            (Some(_), 2..) => {
                defect.get_or_insert(Defect::BadContentLength);
            }
            // The value span is LWS-trimmed already (`split_header`).
            (Some(value), _) => match parse_u64(&b[value.range()], 10) {
                Some(n) => {
                    let n = n as usize;
                    let available = b.len() - body_start;
                    if n > available {
                        defect.get_or_insert(Defect::ContentLengthExceedsBody);
                    } else {
                        // Octets after the declared body are not part of the message.
                        body = Span::new(body_start, body_start + n);
                    }
                }
                None => {
                    defect.get_or_insert(Defect::BadContentLength);
                }
            },
            (None, _) if !datagram => body = Span::new(body_start, body_start),
            (None, _) => {}
        }
        Ok(Message {
            start,
            start_line,
            headers,
            headers_end: headers_end as u32,
            body,
            defect,
            buf,
            names: OnceCell::new(),
            users: OnceCell::new(),
            top_via: OnceCell::new(),
            contact: OnceCell::new(),
            routes: OnceCell::new(),
            cseq: OnceCell::new(),
        })
    }

    /// The top Via (the first value of the first Via header), parsed;
    /// None when it does not parse (validation refuses the message then).
    pub fn top_via(&self) -> Option<super::via::TopVia> {
        *self.top_via.get_or_init(|| super::via::TopVia::parse(self))
    }

    /// The first Contact value (the first element of the first Contact
    /// header, LWS trimmed) as a name-addr; None when there is none or it
    /// is no name-addr (`*`, or malformed: validation refuses the latter).
    pub fn first_contact(&self) -> Option<AddrSpan> {
        *self
            .contact
            .get_or_init(|| super::addrs::first_contact(self))
    }

    pub(super) fn cseq_cell(&self) -> &OnceCell<Option<(u64, Span)>> {
        &self.cseq
    }

    pub(super) fn routes(&self) -> &Routes {
        self.routes.get_or_init(|| super::addrs::routes(self))
    }

    pub(super) fn names(&self) -> &Names {
        self.names.get_or_init(|| super::addrs::names(self))
    }

    pub(super) fn users(&self) -> &Users {
        self.users.get_or_init(|| super::addrs::users(self))
    }

    /// The buffer the spans point into.
    pub fn buf(&self) -> &Bytes {
        &self.buf
    }

    pub fn bytes(&self, span: Span) -> &[u8] {
        &self.buf[span.range()]
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<Method> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn method_bytes(&self) -> Option<&[u8]> {
        match self.start {
            StartLine::Request { method_span, .. } => Some(self.bytes(method_span)),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn request_uri_span(&self) -> Option<Span> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&[u8]> {
        self.request_uri_span().map(|s| self.bytes(s))
    }

    /// The first header of that name.
    pub fn header(&self, name: HeaderName) -> Option<&HeaderField> {
        self.headers.iter().find(|h| h.name == name)
    }

    pub fn headers_named(&self, name: HeaderName) -> impl Iterator<Item = &HeaderField> {
        self.headers.iter().filter(move |h| h.name == name)
    }

    /// The value of the first header of that name.
    pub fn value(&self, name: HeaderName) -> Option<&[u8]> {
        self.header(name).map(|h| self.bytes(h.value))
    }

    /// The first header whose name matches `name` (long form, any case).
    pub fn other_header(&self, name: &[u8]) -> Option<&HeaderField> {
        self.headers
            .iter()
            .find(|h| eq_ic(self.bytes(h.name_span), name))
    }

    pub fn call_id(&self) -> Option<&[u8]> {
        self.value(HeaderName::CallId)
    }

    pub fn body_bytes(&self) -> &[u8] {
        self.bytes(self.body)
    }

    /// The whole message as framed (bytes after the body excluded).
    pub fn wire(&self) -> &[u8] {
        &self.buf[..self.body.end as usize]
    }
}

/// The name, the trimmed value and the name classified, for the header
/// line `start..end` whose first colon is at `colon`; None when the bytes
/// before the colon are not a token followed by optional SP/HT.
///
/// That is what scanning the token from the line start, skipping SP/HT
/// and requiring the colon gave (the oracle in the tests): the scan stops
/// at the first non-token byte, and a line whose name is a token has no
/// colon before the name's end. A long name classify knows is made of
/// letters and '-' (it compared every byte), so only the other names need
/// the token check.
fn split_header(
    b: &[u8],
    start: usize,
    colon: usize,
    end: usize,
) -> Option<(Span, Span, HeaderName)> {
    // Slices of the line, not indices into `b`: their bounds are known,
    // so the trims below run without a bounds check a byte.
    let mut name_bytes = &b[start..colon];
    while let [rest @ .., b' ' | b'\t'] = name_bytes {
        name_bytes = rest;
    }
    let name = HeaderName::classify(name_bytes);
    if name == HeaderName::Other && (name_bytes.is_empty() || !all_token(name_bytes)) {
        return None;
    }
    let name_end = start + name_bytes.len();
    // The value with LWS trimmed from both ends (folds included); an
    // empty value sits just after the colon.
    let raw = &b[colon + 1..end];
    // Nearly every value is one SP after the colon: that is tested first
    // (every LWS byte is at most SP).
    let lead = match raw {
        [b' ', c, ..] if *c > b' ' => 1,
        _ => match raw.iter().position(|&c| !is_lws(c)) {
            Some(lead) => lead,
            None => {
                return Some((
                    Span::new(start, name_end),
                    Span::new(colon + 1, colon + 1),
                    name,
                ));
            }
        },
    };
    // Some: raw[lead] is no LWS.
    let last = raw.iter().rposition(|&c| !is_lws(c)).unwrap_or(lead);
    let v_start = colon + 1 + lead;
    let v_end = colon + 1 + last + 1;
    Some((Span::new(start, name_end), Span::new(v_start, v_end), name))
}

fn parse_start_line(b: &[u8], line: Span) -> Result<StartLine, ParseError> {
    let l = &b[line.range()];
    let base = line.start as usize;
    if l.starts_with(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp1 = l
            .iter()
            .position(|&c| c == b' ')
            .ok_or(ParseError::BadStartLine)?;
        let rest = &l[sp1 + 1..];
        if rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
            return Err(ParseError::BadStartLine);
        }
        if rest.len() > 3 && rest[3] != b' ' {
            return Err(ParseError::BadStartLine);
        }
        let code = u16::from(rest[0] - b'0') * 100
            + u16::from(rest[1] - b'0') * 10
            + u16::from(rest[2] - b'0');
        if !(100..=699).contains(&code) {
            return Err(ParseError::BadStartLine);
        }
        let reason_start = (sp1 + 5).min(l.len());
        return Ok(StartLine::Response {
            code,
            reason: Span::new(base + reason_start, base + l.len()),
            version: Span::new(base, base + sp1),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version. Fields are split
    // on single spaces; extra spaces make a field empty or the version wrong,
    // which validation rejects.
    let sp1 = l
        .iter()
        .position(|&c| c == b' ')
        .ok_or(ParseError::BadStartLine)?;
    let sp2 = l
        .iter()
        .rposition(|&c| c == b' ')
        .ok_or(ParseError::BadStartLine)?;
    if sp1 == sp2 || sp1 == 0 || !l[..sp1].iter().all(|&c| is_token(c)) {
        return Err(ParseError::BadStartLine);
    }
    let method = &l[..sp1];
    Ok(StartLine::Request {
        method: Method::classify(method),
        method_span: Span::new(base, base + sp1),
        uri: Span::new(base + sp1 + 1, base + sp2),
        version: Span::new(base + sp2 + 1, base + l.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The indexer as it was before the word-at-a-time scan (memchr per
    /// line, the name's token scanned, `known_prefix`): the oracle that
    /// `Message::parse` must agree with on every input.
    mod oracle {
        use super::super::*;
        use bytes::Bytes;

        /// End of the line starting at `i`: (index of the terminator, index after it).
        fn line_end(b: &[u8], i: usize) -> (usize, usize) {
            match memchr_lf(&b[i..]) {
                Some(off) => {
                    let lf = i + off;
                    let end = if lf > i && b[lf - 1] == b'\r' {
                        lf - 1
                    } else {
                        lf
                    };
                    (end, lf + 1)
                }
                None => (b.len(), b.len()),
            }
        }

        fn memchr_lf(s: &[u8]) -> Option<usize> {
            memchr::memchr(b'\n', s)
        }

        pub(super) fn parse_oracle(buf: Bytes, datagram: bool) -> Result<Message, ParseError> {
            let b = &buf[..];
            if b.len() > u32::MAX as usize / 2 {
                return Err(ParseError::TooLarge);
            }
            // RFC 3261 7.5: CRLFs before the start line are ignored.
            let mut i = 0;
            while i < b.len() && (b[i] == b'\r' || b[i] == b'\n') {
                i += 1;
            }
            if i == b.len() {
                return Err(ParseError::Empty);
            }
            let (sl_end, mut next) = line_end(b, i);
            let start_line = Span::new(i, sl_end);
            let start = parse_start_line(b, start_line)?;

            // A trunk INVITE carries 15 to 25 headers (Record-Route, Privacy,
            // P-Charging-Vector …): 32 spares the regrowth at 17, and at 28
            // bytes a field the 896-byte block costs malloc what 448 did.
            let mut headers: Vec<HeaderField> = Vec::with_capacity(32);
            let mut defect = None;
            let mut headers_end = None;
            // Content-Length headers seen, and the first one's value.
            let (mut lengths, mut length) = (0u32, None::<Span>);
            while next < b.len() {
                let line_start = next;
                let (mut end, mut after) = line_end(b, line_start);
                if end == line_start {
                    headers_end = Some((line_start, after));
                    break;
                }
                // Folded continuation lines belong to this header.
                while after < b.len() && (b[after] == b' ' || b[after] == b'\t') {
                    let (e, a) = line_end(b, after);
                    end = e;
                    after = a;
                }
                match split_header(b, line_start, end) {
                    Some((name_span, value, name)) => {
                        if name == HeaderName::ContentLength {
                            // Noted here rather than searched for after the
                            // loop: one pass over the headers fewer.
                            lengths += 1;
                            length.get_or_insert(value);
                        }
                        headers.push(HeaderField {
                            name,
                            name_span,
                            value,
                            line: Span::new(line_start, after),
                        })
                    }
                    None => {
                        defect.get_or_insert(Defect::BadHeaderLine);
                    }
                }
                next = after;
            }
            let (headers_end, body_start) = match headers_end {
                Some(h) => h,
                None => {
                    defect.get_or_insert(Defect::UnterminatedHeaders);
                    (b.len(), b.len())
                }
            };

            let mut body = Span::new(body_start, b.len());
            match (length, lengths) {
                (Some(_), 2..) => {
                    defect.get_or_insert(Defect::BadContentLength);
                }
                (Some(value), _) => match parse_u64(trim_lws(&b[value.range()]), 10) {
                    Some(n) => {
                        let n = n as usize;
                        let available = b.len() - body_start;
                        if n > available {
                            defect.get_or_insert(Defect::ContentLengthExceedsBody);
                        } else {
                            // Octets after the declared body are not part of the message.
                            body = Span::new(body_start, body_start + n);
                        }
                    }
                    None => {
                        defect.get_or_insert(Defect::BadContentLength);
                    }
                },
                (None, _) if !datagram => body = Span::new(body_start, body_start),
                (None, _) => {}
            }
            Ok(Message {
                start,
                start_line,
                headers,
                headers_end: headers_end as u32,
                body,
                defect,
                buf,
                names: OnceCell::new(),
                users: OnceCell::new(),
                top_via: OnceCell::new(),
                contact: OnceCell::new(),
                routes: OnceCell::new(),
                cseq: OnceCell::new(),
            })
        }

        /// The name, the trimmed value and the name classified, for a header line.
        fn split_header(b: &[u8], start: usize, end: usize) -> Option<(Span, Span, HeaderName)> {
            let line = &b[start..end];
            // The long names siptrack decodes are recognised without the scan
            // below (which gives the same end for them).
            if let Some((name_end, name)) = HeaderName::known_prefix(line) {
                let (name_span, value) = split_at_name(start, line, name_end)?;
                return Some((name_span, value, name));
            }
            // One pass over the name: token characters, optional SP/HT, then the
            // colon. Any other character before the first colon would have made
            // the name no token, and a line without a colon is no header, so
            // stopping there gives what finding the colon first (memchr, which
            // costs more than the scan on names this short) and checking the name
            // after gave.
            let name_end = line
                .iter()
                .position(|&c| !is_token(c))
                .unwrap_or(line.len());
            let (name_span, value) = split_at_name(start, line, name_end)?;
            Some((
                name_span,
                value,
                HeaderName::classify(&b[name_span.range()]),
            ))
        }

        /// The name and value spans of header line `line` (starting at `start`)
        /// whose name token ends at `name_end`; None when no colon follows.
        fn split_at_name(start: usize, line: &[u8], name_end: usize) -> Option<(Span, Span)> {
            let mut colon = name_end;
            while colon < line.len() && (line[colon] == b' ' || line[colon] == b'\t') {
                colon += 1;
            }
            if name_end == 0 || line.get(colon) != Some(&b':') {
                return None;
            }
            let raw_value = &line[colon + 1..];
            let value = trim_lws(raw_value);
            let value_start = if value.is_empty() {
                start + colon + 1
            } else {
                start + colon + 1 + (value.as_ptr() as usize - raw_value.as_ptr() as usize)
            };
            Some((
                Span::new(start, start + name_end),
                Span::new(value_start, value_start + value.len()),
            ))
        }
    }

    type Index = (StartLine, Span, Vec<HeaderField>, u32, Span, Option<Defect>);

    fn index(r: Result<Message, ParseError>) -> Result<Index, ParseError> {
        r.map(|m| {
            (
                m.start,
                m.start_line,
                m.headers,
                m.headers_end,
                m.body,
                m.defect,
            )
        })
    }

    fn same_as_oracle(b: &[u8]) {
        for datagram in [true, false] {
            let got = index(Message::parse(Bytes::copy_from_slice(b), datagram));
            let want = index(oracle::parse_oracle(Bytes::copy_from_slice(b), datagram));
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(b));
        }
    }

    /// Pieces of header sections: names of every kind (known long and
    /// compact, other, bad), separators, value bytes, line ends, folds.
    const PIECES: &[&str] = &[
        "Via",
        "VIA",
        "v",
        "From",
        "f",
        "To",
        "t",
        "Call-ID",
        "i",
        "CSeq",
        "Contact",
        "m",
        "Content-Length",
        "content-length",
        "l",
        "Content-Type",
        "c",
        "Max-Forwards",
        "Route",
        "Record-Route",
        "Require",
        "Proxy-Require",
        "Date",
        "P-Asserted-Identity",
        "Remote-Party-ID",
        "Allow",
        "Supported",
        "Session-Expires",
        "X-A.b_c",
        "Min-SE",
        "User-Agent",
        "Tox",
        "Fro",
        "Contents",
        "x",
        "@",
        "\u{e9}",
        "\"",
        "(",
        ":",
        ": ",
        " :",
        "\t:",
        ":\t",
        " ",
        "\t",
        "  ",
        "\r\n",
        "\n",
        "\r",
        "\r\n ",
        "\r\n\t",
        "\n ",
        "\r\n\r\n",
        "\n\n",
        "0",
        "12",
        " 3 ",
        "-1",
        "99999999999",
        "<sip:a@h>",
        "SIP/2.0/UDP h;branch=z9hG4bK1",
        "a:b",
        "1 INVITE",
        "v=0\r\n",
        "\0",
        "\u{7f}",
        "Content-Length: 4\r\n",
    ];

    const START_LINES: &[&str] = &[
        "INVITE sip:a@h SIP/2.0\r\n",
        "OPTIONS sip:h SIP/2.0\n",
        "SIP/2.0 200 OK\r\n",
        "\r\nBYE sip:b@h SIP/2.0\r\n",
        "",
    ];

    fn assemble(start: usize, pieces: &[usize]) -> Vec<u8> {
        let mut b = START_LINES[start % START_LINES.len()].as_bytes().to_vec();
        for &p in pieces {
            b.extend_from_slice(PIECES[p % PIECES.len()].as_bytes());
        }
        b
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        #[test]
        fn parse_matches_oracle_on_pieces(
            start in 0usize..16,
            pieces in proptest::collection::vec(0usize..256, 0..40),
        ) {
            same_as_oracle(&assemble(start, &pieces));
        }

        #[test]
        fn parse_matches_oracle_on_bytes(
            start in 0usize..16,
            tail in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b'\n'),
                    proptest::strategy::Just(b'\r'),
                    proptest::strategy::Just(b':'),
                    proptest::strategy::Just(b' '),
                    proptest::strategy::Just(b'\t'),
                    proptest::prelude::any::<u8>(),
                    b'a'..=b'z',
                ],
                0..200,
            ),
        ) {
            let mut b = assemble(start, &[]);
            b.extend_from_slice(&tail);
            same_as_oracle(&b);
            same_as_oracle(&tail);
        }
    }

    /// The torture corpus, and every message of it cut short at each length
    /// and with each byte of its header section replaced by the bytes the
    /// scan looks for.
    #[test]
    fn parse_matches_oracle_on_corpus() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/torture");
        let mut files = Vec::new();
        for sub in ["rfc4475", "rfc5118", "rfc5118/clfix"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "sip") {
                    files.push(std::fs::read(e.path()).expect("read corpus file"));
                }
            }
        }
        assert!(files.len() >= 65, "corpus files found: {}", files.len());
        for f in &files {
            same_as_oracle(f);
            let head = f.len().min(400);
            for cut in 0..head {
                same_as_oracle(&f[..cut]);
            }
            for i in 0..head {
                for c in [b'\n', b'\r', b':', b' ', 0x80] {
                    let mut m = f.clone();
                    m[i] = c;
                    same_as_oracle(&m);
                }
            }
        }
    }

    #[test]
    fn header_lines_table() {
        // (line, Some((name, value)) when it is a header, None when it is
        // a malformed line).
        for (line, expected) in [
            ("From : <sip:a@h>", Some(("From", "<sip:a@h>"))),
            ("From\t:x", Some(("From", "x"))),
            ("v:SIP/2.0/UDP h", Some(("v", "SIP/2.0/UDP h"))),
            ("From:a:b", Some(("From", "a:b"))),
            ("X-Empty:", Some(("X-Empty", ""))),
            ("Fo o: x", None),
            ("From@: x", None),
            ("X-A b: c", None),
            ("NoColon", None),
            (": x", None),
            ("\u{e9}: x", None),
        ] {
            let text = format!("OPTIONS sip:h SIP/2.0\r\n{line}\r\n\r\n");
            let m = Message::parse(Bytes::from(text), true).expect("parses");
            let got = m.headers.first().map(|h| {
                (
                    String::from_utf8_lossy(m.bytes(h.name_span)).into_owned(),
                    String::from_utf8_lossy(m.bytes(h.value)).into_owned(),
                )
            });
            let want = expected.map(|(n, v)| (n.to_string(), v.to_string()));
            assert_eq!(got, want, "{line:?}");
            assert_eq!(
                m.defect,
                expected.is_none().then_some(Defect::BadHeaderLine),
                "{line:?}"
            );
        }
    }
}
