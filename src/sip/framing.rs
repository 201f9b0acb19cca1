//! Message framing on stream transports (RFC 3261 18.3): headers end at the
//! first empty line, the body is exactly Content-Length octets.

use super::chars::{eq_ic, parse_u64, trim_lws};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFrame {
    /// The first `len` bytes are one complete message.
    Complete(usize),
    /// A keep-alive of `len` bytes: CRLFCRLF is a ping to answer with
    /// CRLF (RFC 5626 4.4.1); a lone CRLF is a pong or padding.
    KeepAlive { len: usize, ping: bool },
    /// More bytes are needed.
    Incomplete,
    /// The stream cannot be framed; the connection must be closed.
    Invalid(&'static str),
}

/// Frames the next message at the start of `buf`.
pub fn stream_frame(buf: &[u8], max_message_bytes: usize) -> StreamFrame {
    if buf.starts_with(b"\r\n\r\n") {
        return StreamFrame::KeepAlive { len: 4, ping: true };
    }
    if buf.starts_with(b"\r\n") {
        if buf.len() < 4 && b"\r\n\r\n".starts_with(buf) {
            return StreamFrame::Incomplete;
        }
        return StreamFrame::KeepAlive {
            len: 2,
            ping: false,
        };
    }
    let Some(hdr_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > max_message_bytes {
            StreamFrame::Invalid("header section too large")
        } else {
            StreamFrame::Incomplete
        };
    };
    let head = &buf[..hdr_end + 2];
    let mut length: Option<usize> = None;
    for line in head.split(|&c| c == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let name = trim_lws(&line[..colon]);
        if eq_ic(name, b"content-length") || eq_ic(name, b"l") {
            if length.is_some() {
                return StreamFrame::Invalid("multiple Content-Length headers");
            }
            match parse_u64(trim_lws(&line[colon + 1..]), 10) {
                Some(n) => length = Some(n as usize),
                None => return StreamFrame::Invalid("invalid Content-Length"),
            }
        }
    }
    // Content-Length is mandatory on streams; a message without it has no body.
    let total = hdr_end + 4 + length.unwrap_or(0);
    if total > max_message_bytes {
        return StreamFrame::Invalid("message too large");
    }
    if buf.len() < total {
        StreamFrame::Incomplete
    } else {
        StreamFrame::Complete(total)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
