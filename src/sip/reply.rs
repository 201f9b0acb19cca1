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
                let has_tag = super::nameaddr::NameAddr::parse(req.bytes(h.value))
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

fn line_without_eol(msg: &Message, line: super::message::Span) -> &[u8] {
    let l = msg.bytes(line);
    let l = l.strip_suffix(b"\n").unwrap_or(l);
    l.strip_suffix(b"\r").unwrap_or(l)
}
