//! SDP (RFC 4566) as the media anchor needs it: where each side wants its
//! media (`c=`, `m=`, `a=rtcp`), whether it is on hold, and a rewrite that
//! points those at siptrack while every other byte stays as it came.
//!
//! The parser indexes the body without copying it and never fails on what it
//! does not use: unknown lines, odd attributes and line endings pass through.
//! It refuses (returns an error) only when a line it must rewrite cannot be
//! read, because anchoring half a description would break the call; the
//! caller then leaves the SDP alone and the call goes unrecorded.

use std::net::IpAddr;

use crate::sip::{HeaderName, Message, Patch};

/// Why a body cannot be anchored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP line {0} is not `<letter>=<value>`")]
    BadLine(usize),
    #[error("SDP line {0}: unreadable m= line")]
    BadMedia(usize),
    #[error("SDP line {0}: unreadable c= line")]
    BadConnection(usize),
    #[error("SDP line {0}: unreadable a=rtcp")]
    BadRtcp(usize),
    #[error("SDP body has no m= line")]
    NoMedia,
}

/// `sendrecv` / `sendonly` / `recvonly` / `inactive` (RFC 3264 5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn from_attr(a: &[u8]) -> Option<Direction> {
        match a {
            b"sendrecv" => Some(Direction::SendRecv),
            b"sendonly" => Some(Direction::SendOnly),
            b"recvonly" => Some(Direction::RecvOnly),
            b"inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// A `c=` line: `c=<nettype> <addrtype> <address>[/ttl[/n]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection<'a> {
    pub net_type: &'a [u8],
    pub addr_type: &'a [u8],
    pub address: &'a [u8],
    /// `<addrtype> <address>` in the body, without a `/ttl` suffix.
    span: (usize, usize),
}

impl Connection<'_> {
    /// The address as an IP, when it is one (not a FQDN).
    pub fn ip(&self) -> Option<IpAddr> {
        std::str::from_utf8(self.address).ok()?.parse().ok()
    }

    /// `0.0.0.0` (or `::`): the RFC 2543 way of putting a call on hold,
    /// still sent by many phones (RFC 3264 8.4).
    pub fn is_hold(&self) -> bool {
        self.ip().is_some_and(|ip| ip.is_unspecified())
    }

    /// A multicast group (RFC 4566 5.7: IPv4 ones carry a `/ttl`).
    pub fn is_multicast(&self) -> bool {
        self.ip().is_some_and(|ip| ip.is_multicast())
    }
}

/// An `a=rtcp:<port> [<nettype> <addrtype> <address>]` attribute (RFC 3605).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rtcp<'a> {
    pub port: u16,
    pub connection: Option<Connection<'a>>,
    port_span: (usize, usize),
}

/// One `m=` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media<'a> {
    pub media: &'a [u8],
    /// 0 means the stream is rejected or disabled (RFC 3264 6).
    pub port: u16,
    /// The `/<n>` after the port, when given.
    pub port_count: Option<u16>,
    pub proto: &'a [u8],
    /// The format list; for RTP profiles these are payload types.
    pub formats: Vec<&'a [u8]>,
    pub connection: Option<Connection<'a>>,
    pub rtcp: Option<Rtcp<'a>>,
    pub rtcp_mux: bool,
    pub direction: Option<Direction>,
    /// `a=rtpmap:<pt> <encoding>/<clock rate>` entries that could be read.
    pub rtpmaps: Vec<RtpMap<'a>>,
    port_span: (usize, usize),
}

/// An `a=rtpmap` attribute (RFC 4566 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpMap<'a> {
    pub payload_type: u8,
    pub encoding: &'a [u8],
    pub clock_rate: u32,
}

fn parse_rtpmap(v: &[u8]) -> Option<RtpMap<'_>> {
    let space = memchr::memchr(b' ', v)?;
    let payload_type: u8 = std::str::from_utf8(&v[..space]).ok()?.parse().ok()?;
    let mut parts = v[space + 1..].split(|&b| b == b'/');
    let encoding = parts.next().filter(|e| !e.is_empty())?;
    let clock_rate = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    (payload_type < 128).then_some(RtpMap {
        payload_type,
        encoding,
        clock_rate,
    })
}

impl Media<'_> {
    /// Numeric payload types of an RTP profile (`RTP/AVP`, `RTP/SAVP`, ...);
    /// other formats are skipped.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats
            .iter()
            .filter_map(|f| std::str::from_utf8(f).ok()?.parse::<u8>().ok())
            .filter(|pt| *pt < 128)
    }

    pub fn is_rtp(&self) -> bool {
        self.proto.starts_with(b"RTP/")
    }
}

/// A parsed body: borrowed slices and spans over the original bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sdp<'a> {
    body: &'a [u8],
    pub connection: Option<Connection<'a>>,
    pub direction: Option<Direction>,
    pub media: Vec<Media<'a>>,
}

/// Where siptrack wants one `m=` stream sent: its RTP and RTCP ports.
/// For a stream that keeps `a=rtcp-mux`, pass `rtcp == rtp` so that an
/// `a=rtcp` line names the muxed port (RFC 5761 5.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub rtp: u16,
    pub rtcp: u16,
}

/// Lines of the body: (line without terminator, start offset).
fn lines(body: &[u8]) -> impl Iterator<Item = (&[u8], usize)> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= body.len() {
            return None;
        }
        let start = pos;
        let (end, next) = match memchr::memchr(b'\n', &body[pos..]) {
            Some(off) => {
                let lf = pos + off;
                let end = if lf > start && body[lf - 1] == b'\r' {
                    lf - 1
                } else {
                    lf
                };
                (end, lf + 1)
            }
            None => (body.len(), body.len()),
        };
        pos = next;
        Some((&body[start..end], start))
    })
}

/// Splits on single spaces the way SDP fields are written, remembering
/// where each field starts relative to `s`.
fn fields(s: &[u8]) -> impl Iterator<Item = (&[u8], usize)> {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < s.len() && s[i] == b' ' {
            i += 1;
        }
        if i >= s.len() {
            return None;
        }
        let start = i;
        while i < s.len() && s[i] != b' ' {
            i += 1;
        }
        Some((&s[start..i], start))
    })
}

fn parse_port(s: &[u8]) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Parses `<nettype> <addrtype> <address>` starting at body offset `at`.
fn parse_connection(v: &[u8], at: usize) -> Option<Connection<'_>> {
    let mut f = fields(v);
    let (net_type, _) = f.next()?;
    let (addr_type, at_off) = f.next()?;
    let (addr_full, addr_off) = f.next()?;
    // Multicast `/ttl[/n]` suffixes are kept as they are.
    let address = match memchr::memchr(b'/', addr_full) {
        Some(slash) => &addr_full[..slash],
        None => addr_full,
    };
    if address.is_empty() {
        return None;
    }
    Some(Connection {
        net_type,
        addr_type,
        address,
        span: (at + at_off, at + addr_off + address.len()),
    })
}

impl<'a> Sdp<'a> {
    /// Indexes `body`. Never panics, whatever the bytes.
    pub fn parse(body: &'a [u8]) -> Result<Sdp<'a>, SdpError> {
        let mut sdp = Sdp {
            body,
            connection: None,
            direction: None,
            media: Vec::new(),
        };
        for (n, (line, start)) in lines(body).enumerate() {
            let n = n + 1;
            if line.is_empty() {
                // Blank lines (often a trailing CRLF too many) are tolerated
                // and copied as they are.
                continue;
            }
            if line.len() < 2 || line[1] != b'=' || !line[0].is_ascii_alphabetic() {
                return Err(SdpError::BadLine(n));
            }
            let value = &line[2..];
            let vat = start + 2;
            match line[0] {
                b'm' => sdp
                    .media
                    .push(parse_media(value, vat).ok_or(SdpError::BadMedia(n))?),
                b'c' => {
                    let c = parse_connection(value, vat).ok_or(SdpError::BadConnection(n))?;
                    match sdp.media.last_mut() {
                        Some(m) => m.connection = Some(c),
                        None => sdp.connection = Some(c),
                    }
                }
                b'a' => sdp.attribute(value, vat, n)?,
                _ => {}
            }
        }
        if sdp.media.is_empty() {
            return Err(SdpError::NoMedia);
        }
        Ok(sdp)
    }

    fn attribute(&mut self, value: &'a [u8], vat: usize, n: usize) -> Result<(), SdpError> {
        if let Some(d) = Direction::from_attr(value) {
            match self.media.last_mut() {
                Some(m) => m.direction = Some(d),
                None => self.direction = Some(d),
            }
        } else if value == b"rtcp-mux" {
            if let Some(m) = self.media.last_mut() {
                m.rtcp_mux = true;
            }
        } else if let Some(rest) = value.strip_prefix(b"rtpmap:") {
            // Only the recorder reads these; one it cannot read is skipped.
            if let (Some(m), Some(r)) = (self.media.last_mut(), parse_rtpmap(rest)) {
                m.rtpmaps.push(r);
            }
        } else if let Some(rest) = value.strip_prefix(b"rtcp:") {
            // a=rtcp is a media-level attribute; at session level it means nothing.
            if let Some(m) = self.media.last_mut() {
                m.rtcp = Some(parse_rtcp(rest, vat + 5).ok_or(SdpError::BadRtcp(n))?);
            }
        }
        Ok(())
    }

    /// The body this was parsed from.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The `c=` that applies to stream `i`: its own, else the session's.
    pub fn connection_of(&self, i: usize) -> Option<&Connection<'a>> {
        let m = self.media.get(i)?;
        m.connection.as_ref().or(self.connection.as_ref())
    }

    /// The direction that applies to stream `i` (media, session, default).
    pub fn direction_of(&self, i: usize) -> Direction {
        self.media
            .get(i)
            .and_then(|m| m.direction)
            .or(self.direction)
            .unwrap_or(Direction::SendRecv)
    }

    /// Whether stream `i` is put on hold by this offer: `sendonly`,
    /// `inactive` or a `c=` of `0.0.0.0`.
    pub fn is_hold(&self, i: usize) -> bool {
        matches!(
            self.direction_of(i),
            Direction::SendOnly | Direction::Inactive
        ) || self.connection_of(i).is_some_and(|c| c.is_hold())
    }

    /// The body with stream `i`'s port set to `anchors[i]` (when `Some`),
    /// its `a=rtcp` to that RTCP port, and every `c=` (and `a=rtcp`
    /// address) to `addr`. Everything else is copied byte for byte,
    /// line endings included. Ports of 0 (rejected streams) and hold
    /// addresses (`0.0.0.0`) stay as they are. Streams given `None` keep
    /// their port: the caller anchors every stream it lets through.
    pub fn rewrite(&self, addr: IpAddr, anchors: &[Option<Anchor>]) -> Vec<u8> {
        let (addr_type, addr_text): (&[u8], String) = match addr {
            IpAddr::V4(ip) => (b"IP4", ip.to_string()),
            IpAddr::V6(ip) => (b"IP6", ip.to_string()),
        };
        let mut edits: Vec<((usize, usize), Vec<u8>)> = Vec::new();
        let conn_edit = |c: &Connection, edits: &mut Vec<((usize, usize), Vec<u8>)>| {
            if !c.is_hold() {
                let mut v = addr_type.to_vec();
                v.push(b' ');
                v.extend_from_slice(addr_text.as_bytes());
                edits.push((c.span, v));
            }
        };
        if let Some(c) = &self.connection {
            conn_edit(c, &mut edits);
        }
        for (i, m) in self.media.iter().enumerate() {
            if let Some(c) = &m.connection {
                conn_edit(c, &mut edits);
            }
            let Some(Some(a)) = anchors.get(i) else {
                continue;
            };
            if m.port != 0 {
                edits.push((m.port_span, a.rtp.to_string().into_bytes()));
            }
            if let Some(r) = &m.rtcp {
                edits.push((r.port_span, a.rtcp.to_string().into_bytes()));
                if let Some(c) = &r.connection {
                    conn_edit(c, &mut edits);
                }
            }
        }
        edits.sort_by_key(|e| e.0);
        let mut out = Vec::with_capacity(self.body.len() + 64);
        let mut pos = 0;
        for ((s, e), v) in edits {
            out.extend_from_slice(&self.body[pos..s]);
            out.extend_from_slice(&v);
            pos = e;
        }
        out.extend_from_slice(&self.body[pos..]);
        out
    }
}

fn parse_media(v: &[u8], at: usize) -> Option<Media<'_>> {
    let mut f = fields(v);
    let (media, _) = f.next()?;
    let (port_full, port_off) = f.next()?;
    let (port_text, port_count) = match memchr::memchr(b'/', port_full) {
        Some(slash) => (
            &port_full[..slash],
            Some(parse_port(&port_full[slash + 1..])?),
        ),
        None => (port_full, None),
    };
    let port = parse_port(port_text)?;
    let (proto, _) = f.next()?;
    Some(Media {
        media,
        port,
        port_count,
        proto,
        formats: f.map(|(s, _)| s).collect(),
        connection: None,
        rtcp: None,
        rtcp_mux: false,
        direction: None,
        rtpmaps: Vec::new(),
        port_span: (at + port_off, at + port_off + port_text.len()),
    })
}

fn parse_rtcp(v: &[u8], at: usize) -> Option<Rtcp<'_>> {
    let end = v.iter().position(|&b| b == b' ').unwrap_or(v.len());
    let port = parse_port(&v[..end])?;
    let connection = if end < v.len() {
        Some(parse_connection(&v[end + 1..], at + end + 1)?)
    } else {
        None
    };
    Some(Rtcp {
        port,
        connection,
        port_span: (at, at + end),
    })
}

/// Adds to `patch` the edits that put `new_body` in place of `msg`'s body
/// and make Content-Length say its length (RFC 3261 20.14). A message
/// without Content-Length (UDP allows it) gets none: its body still runs
/// to the end of the datagram.
pub fn patch_body(msg: &Message, new_body: &[u8], patch: &mut Patch) {
    patch.replace(msg.body, new_body);
    if let Some(h) = msg.header(HeaderName::ContentLength) {
        // The value span is already trimmed of surrounding whitespace.
        patch.replace(h.value, new_body.len().to_string().as_bytes());
    }
}

#[cfg(test)]
#[path = "sdp_tests.rs"]
mod tests;
