//! Responses the proxy generates itself (RFC 3261 8.2.6): 100 Trying,
//! errors, 200 for OPTIONS. Via, From, To, Call-ID and CSeq are copied
//! from the request as written.

use super::header::HeaderName;
use super::message::Message;

/// Builds a response to `req`. `to_tag` is added to To when the request had
/// none and the code is above 100; `extra` lines are full header lines
/// without CRLF.
pub fn response(
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: Option<&[u8]>,
    extra: &[&[u8]],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(response_max_len(req, reason, to_tag, extra));
    response_into(&mut out, req, code, reason, to_tag, extra);
    out
}

/// The end of every response the proxy writes itself.
const TRAILER: &[u8] = b"Server: siptrack\r\nContent-Length: 0\r\n\r\n";

/// Which request headers a response copies (RFC 3261 8.2.6.2).
fn copied(name: HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq | HeaderName::To
    )
}

/// At most how long [`response`] is for these arguments (any code): room
/// for it in one allocation, with the forwarded request when the core
/// writes both into one buffer.
pub fn response_max_len(
    req: &Message,
    reason: &str,
    to_tag: Option<&[u8]>,
    extra: &[&[u8]],
) -> usize {
    let status = b"SIP/2.0 65535 \r\n".len() + reason.len();
    let tag = b";tag=".len() + to_tag.map_or(0, <[u8]>::len);
    let headers: usize = req
        .headers
        .iter()
        .filter(|h| copied(h.name))
        .map(|h| h.line.len() + 2 + if h.name == HeaderName::To { tag } else { 0 })
        .sum();
    let extra: usize = extra.iter().map(|e| e.len() + 2).sum();
    status + headers + extra + TRAILER.len()
}

/// [`response`] appended to `out`.
pub fn response_into(
    out: &mut Vec<u8>,
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: Option<&[u8]>,
    extra: &[&[u8]],
) {
    out.extend_from_slice(b"SIP/2.0 ");
    crate::decimal::push(out, code.into());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in req.headers.iter().filter(|h| copied(h.name)) {
        out.extend_from_slice(line_without_eol(req, h.line));
        if h.name == HeaderName::To {
            // Parsed only when a tag may be added (not for 100 Trying).
            let tag = to_tag.filter(|_| code > 100).filter(|_| {
                !super::nameaddr::NameAddr::parse(req.bytes(h.value))
                    .map(|n| n.tag().is_some())
                    .unwrap_or(true)
            });
            if let Some(tag) = tag {
                out.extend_from_slice(b";tag=");
                out.extend_from_slice(tag);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    for e in extra {
        out.extend_from_slice(e);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(TRAILER);
}

fn line_without_eol(msg: &Message, line: super::message::Span) -> &[u8] {
    let l = msg.bytes(line);
    let l = l.strip_suffix(b"\n").unwrap_or(l);
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// The most a refusal to an untrusted or unknown sender may be: it goes to
/// an address that may be spoofed, so it must never amplify.
pub const SMALL_RESPONSE_MAX: usize = 1024;

/// A refusal carrying only what routes and matches it: the top Via value,
/// From, To (tagged), Call-ID and CSeq; no body, no other copy of the
/// request. `None` when even that would exceed [`SMALL_RESPONSE_MAX`]
/// (a request with kilobyte headers gets no answer).
pub fn small_response(req: &Message, code: u16, reason: &str, to_tag: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"SIP/2.0 ");
    crate::decimal::push(&mut out, code.into());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let via = req.header(HeaderName::Via)?;
    let value = req.bytes(via.value);
    let (a, b) = super::via::via_values(value).next()?;
    out.extend_from_slice(b"Via: ");
    out.extend_from_slice(&value[a..b]);
    out.extend_from_slice(b"\r\n");
    for (name, label) in [
        (HeaderName::From, &b"From: "[..]),
        (HeaderName::To, b"To: "),
        (HeaderName::CallId, b"Call-ID: "),
        (HeaderName::CSeq, b"CSeq: "),
    ] {
        // A malformed request may lack some; answer with what it has.
        let Some(h) = req.header(name) else { continue };
        let v = req.bytes(h.value);
        out.extend_from_slice(label);
        out.extend_from_slice(v);
        if name == HeaderName::To
            && super::nameaddr::NameAddr::parse(v).is_ok_and(|n| n.tag().is_none())
        {
            out.extend_from_slice(b";tag=");
            out.extend_from_slice(to_tag);
        }
        out.extend_from_slice(b"\r\n");
        if out.len() > SMALL_RESPONSE_MAX {
            return None;
        }
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    (out.len() <= SMALL_RESPONSE_MAX).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn req(extra: &str, from: &str) -> Message {
        let text = format!(
            "INVITE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1, SIP/2.0/UDP 192.0.2.9\r\n\
             Via: SIP/2.0/UDP 192.0.2.8\r\nFrom: {from};tag=a\r\nTo: <sip:1@h>\r\nCall-ID: c@h\r\n\
             CSeq: 1 INVITE\r\n{extra}Content-Type: text/plain\r\nContent-Length: 4\r\n\r\nbody"
        );
        Message::parse(Bytes::from(text), true).expect("test message parses")
    }

    /// `response` as it was written before `response_into` (the oracle).
    fn old_response(
        req: &Message,
        code: u16,
        reason: &str,
        to_tag: Option<&[u8]>,
        extra: &[&[u8]],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"SIP/2.0 ");
        out.extend_from_slice(code.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        for h in &req.headers {
            match h.name {
                HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                    out.extend_from_slice(line_without_eol(req, h.line));
                    out.extend_from_slice(b"\r\n");
                }
                HeaderName::To => {
                    out.extend_from_slice(line_without_eol(req, h.line));
                    let has_tag = super::super::nameaddr::NameAddr::parse(req.bytes(h.value))
                        .map(|n| n.tag().is_some())
                        .unwrap_or(true);
                    if let (Some(tag), false, true) = (to_tag, has_tag, code > 100) {
                        out.extend_from_slice(b";tag=");
                        out.extend_from_slice(tag);
                    }
                    out.extend_from_slice(b"\r\n");
                }
                _ => {}
            }
        }
        for e in extra {
            out.extend_from_slice(e);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Server: siptrack\r\nContent-Length: 0\r\n\r\n");
        out
    }

    /// The same bytes as the old form, within `response_max_len`.
    #[test]
    fn response_as_before_and_within_its_bound() {
        let text = |to: &str, eol: &str| {
            format!(
                "INVITE sip:1@h SIP/2.0{eol}Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1{eol}\
                 To: {to}{eol}From: <sip:a@h>;tag=a{eol}Call-ID: c@h{eol}CSeq: 1 INVITE{eol}\
                 v: SIP/2.0/UDP 192.0.2.8{eol}X-Other: y{eol}Content-Length: 0{eol}{eol}"
            )
        };
        let mut seen = 0;
        for to in [
            "<sip:1@h>",
            "<sip:1@h>;tag=x",
            "<<bad",
            "sip:1@h;tag=",
            "\"A\" <sip:1@h>",
        ] {
            for eol in ["\r\n", "\n"] {
                let Ok(req) = Message::parse(Bytes::from(text(to, eol)), true) else {
                    continue;
                };
                seen += 1;
                for (code, reason) in [(100, "Trying"), (180, "Ringing"), (486, "Busy Here")] {
                    for tag in [None, Some(&b"t1"[..])] {
                        for extra in [&[][..], &[&b"Retry-After: 30"[..], b"Allow: INVITE"][..]] {
                            let new = response(&req, code, reason, tag, extra);
                            let old = old_response(&req, code, reason, tag, extra);
                            assert_eq!(new, old, "{to} {code} {tag:?}");
                            assert!(new.len() <= response_max_len(&req, reason, tag, extra));
                            let mut appended = b"x".to_vec();
                            response_into(&mut appended, &req, code, reason, tag, extra);
                            assert_eq!(&appended[1..], &old[..]);
                        }
                    }
                }
            }
        }
        assert!(seen >= 6, "only {seen} requests parsed");
    }

    #[test]
    fn small_response_carries_only_what_routes_it() {
        let r = small_response(
            &req("X-Pad: aaaa\r\n", "<sip:a@h>"),
            403,
            "Forbidden",
            b"t1",
        )
        .expect("small enough");
        assert_eq!(
            String::from_utf8(r).expect("ascii"),
            "SIP/2.0 403 Forbidden\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             From: <sip:a@h>;tag=a\r\nTo: <sip:1@h>;tag=t1\r\nCall-ID: c@h\r\nCSeq: 1 INVITE\r\n\
             Content-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn small_response_refuses_to_grow() {
        let big = format!("\"{}\" <sip:a@h>", "x".repeat(2_000));
        assert_eq!(small_response(&req("", &big), 403, "Forbidden", b"t"), None);
    }
}
