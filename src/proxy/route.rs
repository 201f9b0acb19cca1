//! Via, Record-Route and Route handling (RFC 3261 16.6, 16.4, 16.12;
//! RFC 3581; RFC 5658 double record-routing), as pure functions over
//! messages and the proxy's own addresses.

use bytes::Bytes;
use std::net::{IpAddr, SocketAddr};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::ListenAddr;
use crate::sip::chars::split_commas;
use crate::sip::via::via_values;
use crate::sip::{HeaderName, Message, NameAddr, Patch, Span, Uri, Via};

use super::{Peer, Transport};

/// The message's top Via, parsed once (by validation) and kept in the
/// message.
pub use crate::sip::via::TopVia;

/// The proxy's own addresses and the key that signs its routes.
#[derive(Clone)]
pub struct Identity {
    pub listen: Vec<ListenAddr>,
    /// Host written in Via/Record-Route instead of the listen IP.
    pub advertised_host: Option<String>,
    key: Hmac<Sha256>,
    /// The route tokens' SipHash key, derived from `key` (see
    /// [`Identity::token_hex`]).
    token_key: (u64, u64),
    /// `host:port` of each listen address, in `listen`'s order.
    host_ports: Vec<String>,
}

fn host_port(advertised_host: Option<&str>, l: &ListenAddr) -> String {
    match advertised_host {
        Some(h) => format!("{h}:{}", l.addr.port()),
        None => match l.addr.ip() {
            IpAddr::V6(ip) => format!("[{ip}]:{}", l.addr.port()),
            IpAddr::V4(ip) => format!("{ip}:{}", l.addr.port()),
        },
    }
}

/// How many hex digits a Record-Route token carries (64 bits).
const TOKEN_HEX: usize = 16;

/// A Record-Route token: the hex digits of [`Identity::token`], on the
/// stack (the core keeps one per dialog, see `Dialog::token`).
pub type Token = [u8; TOKEN_HEX];

impl Identity {
    pub fn new(
        listen: Vec<ListenAddr>,
        advertised_host: Option<String>,
        secret: &[u8],
    ) -> Identity {
        // HMAC accepts keys of any length; the error arm cannot happen.
        let key = Hmac::<Sha256>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("hmac takes any key length"));
        let host_ports = listen
            .iter()
            .map(|l| host_port(advertised_host.as_deref(), l))
            .collect();
        let mut id = Identity {
            listen,
            advertised_host,
            key,
            token_key: (0, 0),
            host_ports,
        };
        id.token_key = id.derived_key(&[b"route-token-key"]);
        id
    }

    /// The listen address to use towards `peer`: same transport and address
    /// family if possible.
    pub fn local_for(&self, peer: &Peer) -> Option<&ListenAddr> {
        let fam = |a: &SocketAddr| a.is_ipv4() == peer.addr.is_ipv4();
        self.listen
            .iter()
            .find(|l| l.transport == peer.transport && fam(&l.addr))
            .or_else(|| self.listen.iter().find(|l| l.transport == peer.transport))
    }

    /// `host:port` as written in our Via and Record-Route for `l`.
    fn host_port(&self, l: &ListenAddr) -> std::borrow::Cow<'_, str> {
        // Every forwarded request writes it: the listen addresses' own are
        // made once.
        match self.listen.iter().position(|x| x == l) {
            Some(i) if i < self.host_ports.len() => self.host_ports[i].as_str().into(),
            _ => host_port(self.advertised_host.as_deref(), l).into(),
        }
    }

    /// Our Via header line (with CRLF) for a request sent out on `l`.
    pub fn via_line(&self, l: &ListenAddr, branch: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(b"Via: SIP/2.0/");
        out.extend_from_slice(l.transport.via_token().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.host_port(l).as_bytes());
        out.extend_from_slice(b";branch=");
        out.extend_from_slice(branch);
        out.extend_from_slice(b"\r\n");
    }

    /// A Record-Route header line (with CRLF) for interface `l`, signed
    /// for the dialog `call_id` opened by the From tag `caller_tag`.
    pub fn record_route_line(
        &self,
        l: &ListenAddr,
        call_id: &[u8],
        caller_tag: &[u8],
        out: &mut Vec<u8>,
    ) {
        self.record_route_line_with(l, &self.token_hex(call_id, caller_tag), out);
    }

    /// [`Identity::record_route_line`] with the token already computed
    /// (one HMAC for both lines of a double Record-Route, kept for the
    /// dialog's in-dialog requests).
    pub fn record_route_line_with(&self, l: &ListenAddr, token: &Token, out: &mut Vec<u8>) {
        out.extend_from_slice(b"Record-Route: <sip:");
        out.extend_from_slice(token);
        out.push(b'@');
        out.extend_from_slice(self.host_port(l).as_bytes());
        if l.transport == Transport::Tcp {
            out.extend_from_slice(b";transport=tcp");
        }
        out.extend_from_slice(b";lr>\r\n");
    }

    /// The route token: SipHash-2-4 (a PRF made for short inputs, keyed
    /// from the route secret) over the Call-ID and the caller's From tag,
    /// 64 bits. Binding the tag means a token seen in one dialog opens no
    /// other dialog that shares its Call-ID. It was HMAC-SHA256, which
    /// cost 6 % of an INVITE's time in the core (issue 15); tokens of that
    /// kind are still accepted ([`Identity::is_token`]).
    pub fn token(&self, call_id: &[u8], caller_tag: &[u8]) -> String {
        String::from_utf8_lossy(&self.token_hex(call_id, caller_tag)).into_owned()
    }

    /// [`Identity::token`] without a String: the same digits.
    pub fn token_hex(&self, call_id: &[u8], caller_tag: &[u8]) -> Token {
        use std::hash::Hasher;
        let (k0, k1) = self.token_key;
        let mut h = siphasher::sip::SipHasher24::new_with_keys(k0, k1);
        // Length-prefixed, so no (Call-ID, tag) pair reads as another.
        let len = (call_id.len() as u64).to_le_bytes();
        // The three parts hashed in one go when they fit on the stack (as
        // they do but for a Call-ID of hundreds of bytes): the same
        // SipHash input, without the streaming hasher's tail buffering
        // and state updates (about 200 instructions per INVITE, issue 15).
        let mut buf = [0u8; 256];
        let total = len.len() + call_id.len() + caller_tag.len();
        let digest = match buf.get_mut(..total) {
            Some(whole) => {
                let (l, rest) = whole.split_at_mut(len.len());
                let (c, t) = rest.split_at_mut(call_id.len());
                l.copy_from_slice(&len);
                c.copy_from_slice(call_id);
                t.copy_from_slice(caller_tag);
                h.hash(whole)
            }
            None => {
                h.write(&len);
                h.write(call_id);
                h.write(caller_tag);
                h.finish()
            }
        };
        let mut out = [0u8; TOKEN_HEX];
        crate::hex::hex_into(&mut out, &digest.to_be_bytes());
        out
    }

    /// The token versions before this one wrote: HMAC-SHA256 over the
    /// Call-ID, a NUL and the tag, truncated to 64 bits.
    fn hmac_token_hex(&self, call_id: &[u8], caller_tag: &[u8]) -> Token {
        let mut mac = self.key.clone();
        mac.update(call_id);
        mac.update(b"\x00");
        mac.update(caller_tag);
        let mut out = [0u8; TOKEN_HEX];
        crate::hex::hex_into(&mut out, &mac.finalize().into_bytes());
        out
    }

    /// Whether `user` (a Route URI's user part) is a token of this route
    /// secret for `call_id` and `tag`: [`Identity::token_hex`], or the
    /// HMAC token of an older version, so that a dialog set up before an
    /// upgrade (and handed to an upgraded node, or reloaded) keeps its
    /// in-dialog requests. The HMAC is computed only when the first
    /// comparison fails.
    pub fn is_token(&self, call_id: &[u8], tag: &[u8], user: &[u8]) -> bool {
        constant_time_eq(user, &self.token_hex(call_id, tag))
            || (user.len() == TOKEN_HEX
                && constant_time_eq(user, &self.hmac_token_hex(call_id, tag)))
    }

    /// The HMAC of `parts`, each followed by a NUL: what every derived
    /// value below is made from.
    fn digest(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.key.clone();
        for p in parts {
            mac.update(p);
            mac.update(b"\x00");
        }
        mac.finalize().into_bytes().into()
    }

    /// A deterministic tag or branch suffix derived from `parts`.
    pub fn digest_hex(&self, parts: &[&[u8]], hex_len: usize) -> String {
        let mut s = String::with_capacity(hex_len);
        crate::hex::push_hex(&mut s, &self.digest(parts), hex_len);
        s
    }

    /// The first `N` digits of [`Identity::digest_hex`] (`N` even, at
    /// most 64), on the stack: the 2xx ACK's branch and the To tag of
    /// local replies took a `String` each.
    pub fn digest_hex_array<const N: usize>(&self, parts: &[&[u8]]) -> [u8; N] {
        let mut out = [0u8; N];
        crate::hex::hex_into(&mut out, &self.digest(parts));
        out
    }

    /// A 128-bit key (two halves, for SipHash) derived from `parts`: the
    /// first 32 digits of [`Identity::digest_hex`] read as two numbers.
    pub fn derived_key(&self, parts: &[&[u8]]) -> (u64, u64) {
        let d = self.digest(parts);
        let half = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&d[at..at + 8]);
            u64::from_be_bytes(b)
        };
        (half(0), half(8))
    }

    /// Whether a URI names this proxy (host and port of a listen address).
    pub fn is_own_uri(&self, uri: &Uri<'_>) -> bool {
        let port = uri.port.unwrap_or(5060);
        self.listen.iter().any(|l| {
            l.addr.port() == port
                && (crate::sip::uri::host_is_ip(uri.host(), l.addr.ip())
                    || self.advertised_host.as_deref().map(str::as_bytes) == Some(uri.host())
                    || (l.addr.ip().is_unspecified() && uri.host_ip().is_some()))
        })
    }

    /// Whether a Route value is a Record-Route this proxy issued for
    /// `call_id` and one of `tags` (the request's From and To tags: the
    /// caller's tag is From or To depending on who sends).
    pub fn is_own_route(&self, value: &[u8], call_id: &[u8], tags: &[&[u8]]) -> bool {
        self.is_own_route_by(value, tags, |t, u| self.is_token(call_id, t, u))
    }

    /// [`Identity::is_own_route`] with `is_token(tag, user)` deciding
    /// whether a URI's user part is the token of a tag (it must answer
    /// as [`Identity::is_token`] for the Call-ID; the core compares with
    /// its dialog's kept token first instead of computing one).
    pub fn is_own_route_by(
        &self,
        value: &[u8],
        tags: &[&[u8]],
        is_token: impl Fn(&[u8], &[u8]) -> bool,
    ) -> bool {
        let Ok(na) = NameAddr::parse(value) else {
            return false;
        };
        self.is_own_route_uri(na.uri(), tags, is_token)
    }

    /// [`Identity::is_own_route_by`] of a Route value whose name-addr's
    /// URI is `uri` (the core has it from the message: validation parsed
    /// the value).
    pub fn is_own_route_uri(
        &self,
        uri: &[u8],
        tags: &[&[u8]],
        is_token: impl Fn(&[u8], &[u8]) -> bool,
    ) -> bool {
        let Ok(uri) = Uri::parse(uri) else {
            return false;
        };
        self.is_own_uri(&uri)
            && uri
                .user()
                .is_some_and(|u| tags.iter().any(|t| is_token(t, u)))
    }

    /// Whether a Route value carries a token of this `route_secret` for
    /// `call_id` and one of `tags`, whichever node's address it names:
    /// with a shared database, a sibling node's Record-Route is one this
    /// node may act on once the sibling is gone (the token is the proof;
    /// the next hop is still only the dialog's other side).
    pub fn is_signed_route(&self, value: &[u8], call_id: &[u8], tags: &[&[u8]]) -> bool {
        is_signed_route_by(value, tags, |t, u| self.is_token(call_id, t, u))
    }

    /// Whether `addr` is one of this proxy's own listen addresses. A
    /// wildcard listener owns its port on loopback, on the wildcard and on
    /// the advertised host's IP; any other host's port 5060 is a peer.
    pub fn is_own_addr(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip();
        let advertised = self
            .advertised_host
            .as_deref()
            .and_then(|h| crate::sip::uri::host_to_ip(h.as_bytes()));
        self.listen.iter().any(|l| {
            l.addr.port() == addr.port()
                && (l.addr.ip() == ip
                    || (l.addr.ip().is_unspecified()
                        && (ip.is_loopback() || ip.is_unspecified() || advertised == Some(ip))))
        })
    }

    /// Whether a Via value was written by this proxy (its sent-by is ours).
    pub fn is_own_via(&self, via: &Via<'_>) -> bool {
        let port = via.port.unwrap_or(5060);
        let host = via.host();
        self.listen.iter().any(|l| {
            l.addr.port() == port
                && (crate::sip::uri::host_is_ip(host, l.addr.ip())
                    || self.advertised_host.as_deref().map(str::as_bytes) == Some(host))
        })
    }
}

/// [`Identity::is_signed_route`] with `is_token` deciding (see
/// [`Identity::is_own_route_by`]).
pub fn is_signed_route_by(
    value: &[u8],
    tags: &[&[u8]],
    is_token: impl Fn(&[u8], &[u8]) -> bool,
) -> bool {
    let Ok(na) = NameAddr::parse(value) else {
        return false;
    };
    is_signed_route_uri(na.uri(), tags, is_token)
}

/// [`is_signed_route_by`] of a Route value whose name-addr's URI is `uri`.
pub fn is_signed_route_uri(
    uri: &[u8],
    tags: &[&[u8]],
    is_token: impl Fn(&[u8], &[u8]) -> bool,
) -> bool {
    let Ok(uri) = Uri::parse(uri) else {
        return false;
    };
    uri.user()
        .is_some_and(|u| tags.iter().any(|t| is_token(t, u)))
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Route values a message's list holds without allocating: an in-dialog
/// request carries one or two (our Record-Route), a few more after
/// other proxies.
const INLINE_ROUTES: usize = 4;

/// The list [`route_values`] gives: a slice of (header index, value
/// span), on the stack up to [`INLINE_ROUTES`] values (every in-dialog
/// request allocated one before).
#[derive(Clone, Debug, Default)]
pub struct RouteValues {
    inline: [(usize, Span); INLINE_ROUTES],
    len: usize,
    /// All of them once there are more than fit inline.
    more: Vec<(usize, Span)>,
}

impl RouteValues {
    fn push(&mut self, v: (usize, Span)) {
        if self.more.is_empty() && self.len < INLINE_ROUTES {
            self.inline[self.len] = v;
            self.len += 1;
            return;
        }
        if self.more.is_empty() {
            self.more.extend_from_slice(&self.inline[..self.len]);
        }
        self.more.push(v);
    }
}

impl std::ops::Deref for RouteValues {
    type Target = [(usize, Span)];
    fn deref(&self) -> &[(usize, Span)] {
        if self.more.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.more
        }
    }
}

/// Route values in order across all Route headers: (header index, value span).
pub fn route_values(msg: &Message) -> RouteValues {
    let mut out = RouteValues::default();
    for (i, h) in msg.headers.iter().enumerate() {
        if h.name != HeaderName::Route {
            continue;
        }
        let v = msg.bytes(h.value);
        for (a, b) in split_commas(v) {
            let t = crate::sip::chars::trim_lws(&v[a..b]);
            if t.is_empty() {
                continue;
            }
            let off = t.as_ptr() as usize - v.as_ptr() as usize;
            let start = h.value.start as usize + off;
            out.push((i, Span::new(start, start + t.len())));
        }
    }
    out
}

/// Removes the first `n` Route values, deleting whole header lines where
/// all their values go.
pub fn pop_routes(msg: &Message, values: &[(usize, Span)], n: usize, patch: &mut Patch) {
    let mut k = 0;
    while k < n {
        let header = values[k].0;
        let popped_here = values[k..n].iter().filter(|(h, _)| *h == header).count();
        // The header's values after those popped (no list of them: this
        // runs for every in-dialog request).
        let next_kept = values.iter().filter(|(h, _)| *h == header).nth(popped_here);
        match next_kept {
            None => patch.delete(msg.headers[header].line),
            Some(&(_, kept)) => patch.delete(Span {
                start: values[k].1.start,
                end: kept.start,
            }),
        }
        k += popped_here;
    }
}

/// The address to send a request to for a URI (Route or Request-URI).
/// Only IP literals are accepted: DNS on the call path would stall every
/// call behind one slow lookup.
pub fn uri_peer(uri: &Uri<'_>) -> Option<Peer> {
    let ip = uri.host_ip()?;
    let transport = match uri.param(b"transport") {
        Some(t) if t.eq_ignore_ascii_case(b"tcp") => Transport::Tcp,
        _ if uri.is_sips() => Transport::Tcp,
        _ => Transport::Udp,
    };
    Some(Peer {
        transport,
        addr: SocketAddr::new(ip, uri.port.unwrap_or(5060)),
    })
}

/// RFC 3261 18.2.1 and RFC 3581: adds `received` (when the sent-by differs
/// from the source) and fills in an empty `rport` on the top Via.
pub fn stamp_top_via(msg: &Message, source: &Peer, patch: &mut Patch) {
    if let Some(top) = TopVia::of(msg) {
        stamp_via(msg, &top, source, patch);
    }
}

/// A response the proxy wrote itself to a request from `to`, its top Via
/// stamped as the request's is when forwarded (RFC 3581 4: `rport` gets
/// the source port, `received` the source address, a forged `received`
/// replaced): a trunk behind NAT learns its public address from the
/// answers to its OPTIONS keepalives (trial, 2026-12-03: they carried
/// `rport` empty). Off the INVITE's path: refusals and local answers.
pub fn stamped_reply(reply: Vec<u8>, to: &Peer) -> Vec<u8> {
    let bytes = Bytes::from(reply);
    let Ok(msg) = Message::parse(bytes.clone(), true) else {
        return bytes.into();
    };
    let mut patch = Patch::new();
    stamp_top_via(&msg, to, &mut patch);
    if patch.is_empty() {
        return bytes.into();
    }
    patch.apply(msg.buf(), msg.body.end as usize)
}

/// [`stamp_top_via`] with the top Via already parsed.
pub fn stamp_via(msg: &Message, top: &TopVia, source: &Peer, patch: &mut Patch) {
    let via = top.via(msg);
    let span = top.span();
    let base = span.start as usize;
    let ip = source.addr.ip();
    let rport = top.rport();
    if let Some((name, None)) = rport {
        patch.insert_with((base + name.1) as u32, |o| {
            o.push(b'=');
            crate::decimal::push(o, source.addr.port().into());
        });
    }
    let sent_by_matches = crate::sip::uri::host_is_ip(via.host(), ip);
    match top.received() {
        // A `received` the sender wrote itself (RFC 5118 4.5) would send
        // our responses to an address the request never came from.
        Some((_, Some((va, vb)))) if !crate::sip::uri::host_is_ip(&via.src[va..vb], ip) => {
            patch.replace_with(Span::new(base + va, base + vb), |o| push_ip(o, ip));
        }
        Some(_) => {}
        None if rport.is_some() || !sent_by_matches => {
            patch.insert_with(span.end, |o| {
                o.extend_from_slice(b";received=");
                push_ip(o, ip);
            });
        }
        None => {}
    }
}

/// Writes `ip` as its `Display` does (IPv6 through it: rare here).
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // Up to 15 bytes on the stack, one copy out: the octets
            // through `decimal::push` (a 20-digit loop and an extend
            // each) cost about 200 instructions more per forwarded
            // request (issue 15).
            let mut buf = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                len = push_octet(&mut buf, len, octet);
            }
            out.extend_from_slice(&buf[..len]);
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// `octet` in decimal at `buf[at..]` (room for 3 there): where it ends.
/// Digit by digit, not a copy of a variable length (a `memcpy` call).
fn push_octet(buf: &mut [u8; 15], mut at: usize, octet: u8) -> usize {
    if octet >= 100 {
        buf[at] = b'0' + octet / 100;
        at += 1;
    }
    if octet >= 10 {
        buf[at] = b'0' + octet / 10 % 10;
        at += 1;
    }
    buf[at] = b'0' + octet % 10;
    at + 1
}

/// The address a response goes to per its (new) top Via (RFC 3261 18.2.2,
/// RFC 3581 4): received/rport when present, else the sent-by.
pub fn response_peer(via: &Via<'_>) -> Option<Peer> {
    let transport = if via.transport().eq_ignore_ascii_case(b"TCP") {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let ip = via
        .param(b"received")
        .and_then(crate::sip::uri::host_to_ip)
        .or_else(|| crate::sip::uri::host_to_ip(via.host()))?;
    let port = via
        .param(b"rport")
        .and_then(|p| std::str::from_utf8(p).ok()?.parse().ok())
        .or(via.port)
        .unwrap_or(5060);
    Some(Peer {
        transport,
        addr: SocketAddr::new(ip, port),
    })
}

/// What is left of a message's Vias once its top one (ours) is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViasLeft {
    /// Ours is deleted; others follow.
    Some,
    /// Ours was the only one: its header line, left in place for the
    /// caller to decide (RFC 3261 16.7 step 3: such a response goes no
    /// further as it is).
    None(Span),
}

/// Deletes the top Via value (the proxy's own) from a response, unless
/// it is the only one (see [`ViasLeft`]). None: no Via at all.
pub fn pop_top_via(msg: &Message, patch: &mut Patch) -> Option<ViasLeft> {
    let h = msg.header(HeaderName::Via)?;
    let value = msg.bytes(h.value);
    let mut values = via_values(value);
    let _first = values.next()?;
    match values.next() {
        Some((next_start, _)) => {
            patch.delete(Span::new(
                h.value.start as usize,
                h.value.start as usize + next_start,
            ));
        }
        None if msg.headers_named(HeaderName::Via).nth(1).is_some() => patch.delete(h.line),
        None => return Some(ViasLeft::None(h.line)),
    }
    Some(ViasLeft::Some)
}

/// The Via header line a response to `forwarded` (a request as this
/// proxy sent it, its own Via on top) carries upstream: the request's
/// other Via values, in order. None when it has no other.
pub fn upstream_via_line(forwarded: &Message) -> Option<Vec<u8>> {
    let mut line = b"Via: ".to_vec();
    let (mut seen, mut wrote) = (0, 0);
    for h in forwarded.headers_named(HeaderName::Via) {
        let value = forwarded.bytes(h.value);
        for (a, b) in via_values(value) {
            seen += 1;
            if seen == 1 || a == b {
                continue;
            }
            if wrote > 0 {
                line.extend_from_slice(b", ");
            }
            line.extend_from_slice(&value[a..b]);
            wrote += 1;
        }
    }
    (wrote > 0).then(|| {
        line.extend_from_slice(b"\r\n");
        line
    })
}

/// The second Via value of a message (after ours), parsed.
pub fn second_via(msg: &Message) -> Option<Via<'_>> {
    let mut seen = 0;
    for h in msg.headers_named(HeaderName::Via) {
        let value = msg.bytes(h.value);
        for (a, b) in via_values(value) {
            if seen == 1 {
                return Via::parse(&value[a..b]).ok();
            }
            seen += 1;
        }
    }
    None
}

/// The top Via value, parsed.
pub fn top_via(msg: &Message) -> Option<Via<'_>> {
    let h = msg.header(HeaderName::Via)?;
    let value = msg.bytes(h.value);
    let (a, b) = via_values(value).next()?;
    Via::parse(&value[a..b]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// The inline list holds what a `Vec` collects, past its inline
    /// room too.
    #[test]
    fn route_values_as_a_vec_collects() {
        for n in 0..10usize {
            let want: Vec<(usize, Span)> = (0..n).map(|i| (i, Span::new(i, i + 1))).collect();
            let mut got = RouteValues::default();
            for &v in &want {
                got.push(v);
            }
            assert_eq!(&got[..], &want[..], "{n}");
        }
    }

    /// The writers that replaced `format!` write what `Display` writes.
    #[test]
    fn ip_written_as_display_does() {
        let ips = [
            "0.0.0.0",
            "127.0.0.1",
            "192.0.2.255",
            "10.20.3.4",
            "::1",
            "2001:db8::5",
        ];
        for ip in ips {
            let ip: IpAddr = ip.parse().expect("test address");
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().into_bytes(), "{ip}");
        }
        for o in 0..=255u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(o, 255 - o, o / 3, 9));
            let mut out = b"x".to_vec();
            push_ip(&mut out, ip);
            assert_eq!(out, format!("x{ip}").into_bytes(), "{ip}");
        }
    }

    fn stamped(via: &str, source: &str) -> String {
        let text = format!(
            "OPTIONS sip:u@example.com SIP/2.0\r\nVia: {via}\r\nVia: SIP/2.0/UDP 192.0.2.9\r\n\
             From: <sip:a@example.com>;tag=1\r\nTo: <sip:u@example.com>\r\nCall-ID: c\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let msg = Message::parse(Bytes::from(text), true).expect("test message parses");
        let source = Peer {
            transport: Transport::Udp,
            addr: source.parse().expect("test address"),
        };
        let mut patch = Patch::new();
        stamp_top_via(&msg, &source, &mut patch);
        let out = patch.apply(msg.buf(), msg.body.end as usize);
        let out = String::from_utf8(out).expect("ascii");
        out.lines().nth(1).unwrap_or_default().to_string()
    }

    /// `TopVia` answers what parsing the top Via and asking it does.
    #[test]
    fn top_via_agrees_with_via_parse() {
        let vias = [
            "SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1",
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport=7;received=1.2.3.4",
            "SIP/2.0/TCP [2001:db8::1]:5061 ; BRANCH = z9hG4bKy ; Received=h",
            "SIP/2.0/UDP host.example.com;branch=first;branch=second;rport;rport=5",
            "SIP/2.0/UDP h;branch;received",
            "SIP/2.0/UDP h;branch=z9hG4bK",
            "SIP/2.0/UDP h:1;x=1;;branch=z9hG4bKafter-bad",
            "SIP/2.0/UDP h, SIP/2.0/UDP second;branch=z9hG4bK2",
            "SIP/2.0/UDP h",
        ];
        let mut parsed = 0;
        for via in vias {
            let text = format!(
                "OPTIONS sip:u@example.com SIP/2.0\r\nVia: {via}\r\n\
                 From: <sip:a@example.com>;tag=1\r\nTo: <sip:u@example.com>\r\nCall-ID: c\r\n\
                 CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            );
            let msg = Message::parse(Bytes::from(text), true).expect("test message parses");
            // Both refuse the same values.
            let (Some(top), Some(old)) = (TopVia::of(&msg), top_via(&msg)) else {
                assert_eq!(TopVia::of(&msg).is_some(), top_via(&msg).is_some(), "{via}");
                continue;
            };
            parsed += 1;
            let new = top.via(&msg);
            assert_eq!(
                (new.src, new.transport(), new.host(), new.port, new.params),
                (old.src, old.transport(), old.host(), old.port, old.params),
                "{via}"
            );
            assert_eq!(top.branch(&msg), old.branch(), "{via}");
            assert_eq!(top.rfc3261_branch(&msg), old.rfc3261_branch(), "{via}");
            assert_eq!(top.rport(), old.param_ranges(b"rport"), "{via}");
            assert_eq!(top.received(), old.param_ranges(b"received"), "{via}");
        }
        assert!(parsed >= vias.len() - 2, "only {parsed} parsed");
    }

    /// The array form gives the digits of the `String` form.
    #[test]
    fn digest_hex_array_as_digest_hex() {
        let listen = vec![crate::config::parse_listen("udp:127.0.0.1:5060").expect("listen")];
        let id = Identity::new(listen, None, b"secret");
        let cases: [&[&[u8]]; 4] = [
            &[b"a84b4c76e66710@pc33", b"to-tag"],
            &[b"z9hG4bK776asdhds", b"c@h"],
            &[],
            &[b"", b""],
        ];
        for parts in cases {
            let ten: [u8; 10] = id.digest_hex_array(parts);
            let sixteen: [u8; 16] = id.digest_hex_array(parts);
            assert_eq!(&ten[..], id.digest_hex(parts, 10).as_bytes());
            assert_eq!(&sixteen[..], id.digest_hex(parts, 16).as_bytes());
        }
    }

    /// A derived key is the first 32 digits of the digest, read as two
    /// 64-bit halves: all 128 bits, not the 64 of 16 digits (the route
    /// token key was first made from 16, two 32-bit halves).
    #[test]
    fn derived_keys_hold_128_bits_of_the_digest() {
        let listen = vec![crate::config::parse_listen("udp:127.0.0.1:5060").expect("listen")];
        let id = Identity::new(listen, None, b"secret");
        for parts in [
            &[b"route-token-key".as_slice()][..],
            &[b"branch-key", b"\x00\x01"],
        ] {
            let hex = id.digest_hex(parts, 32);
            let want = (
                u64::from_str_radix(&hex[..16], 16).expect("hex"),
                u64::from_str_radix(&hex[16..], 16).expect("hex"),
            );
            assert_eq!(id.derived_key(parts), want, "{parts:?}");
        }
        assert_eq!(id.token_key, id.derived_key(&[b"route-token-key"]));
        assert!(id.token_key.0 > u64::from(u32::MAX) || id.token_key.1 > u64::from(u32::MAX));
    }

    /// The HMAC-SHA256 token versions before the SipHash one wrote,
    /// computed here from its definition (not by the code under test).
    fn hmac_era_token(secret: &[u8], call_id: &[u8], tag: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key");
        mac.update(call_id);
        mac.update(b"\x00");
        mac.update(tag);
        let digest = mac.finalize().into_bytes();
        let mut s = String::new();
        crate::hex::push_hex(&mut s, &digest, 16);
        s
    }

    /// A Route's user part is ours for exactly its Call-ID and caller tag;
    /// a token written before the upgrade (HMAC) still is, so dialogs set
    /// up then keep their BYE; anything else is not.
    /// The token of one write is the SipHash of the three parts written
    /// one by one (what tokens were, and what other nodes check), at
    /// every length, past the stack buffer's too.
    #[test]
    fn route_tokens_are_the_streamed_siphash() {
        use std::hash::Hasher;
        let listen = vec![crate::config::parse_listen("udp:127.0.0.1:5060").expect("listen")];
        let id = Identity::new(listen, None, b"secret");
        let long = vec![b'c'; 400];
        for call_len in [0, 1, 7, 8, 35, 200, 247, 248, 249, 400] {
            for tag_len in [0, 1, 9, 12] {
                let (call_id, tag) = (&long[..call_len], &b"0123456789ab"[..tag_len]);
                let (k0, k1) = id.token_key;
                let mut h = siphasher::sip::SipHasher24::new_with_keys(k0, k1);
                h.write(&(call_id.len() as u64).to_le_bytes());
                h.write(call_id);
                h.write(tag);
                let mut want = [0u8; TOKEN_HEX];
                crate::hex::hex_into(&mut want, &h.finish().to_be_bytes());
                assert_eq!(id.token_hex(call_id, tag), want, "{call_len} {tag_len}");
            }
        }
    }

    #[test]
    fn route_tokens_bind_call_and_tag_and_older_tokens_still_pass() {
        let listen = vec![crate::config::parse_listen("udp:127.0.0.1:5060").expect("listen")];
        let id = Identity::new(listen.clone(), None, b"secret");
        let token = id.token(b"call-1@h", b"tag-a");
        assert_eq!(token.len(), 16);
        assert!(token.bytes().all(|c| c.is_ascii_hexdigit()));
        let hmac = hmac_era_token(b"secret", b"call-1@h", b"tag-a");
        assert_ne!(token, hmac, "the SipHash token is a new one");
        let other_secret = Identity::new(listen, None, b"other").token(b"call-1@h", b"tag-a");
        let cases: [(&str, &[u8], &[u8], bool); 9] = [
            ("its own token", b"call-1@h", b"tag-a", true),
            ("the older HMAC token", b"call-1@h", b"tag-a", true),
            ("another call", b"call-2@h", b"tag-a", false),
            ("another tag", b"call-1@h", b"tag-b", false),
            // Length-prefixed: moving a byte across the boundary is
            // another input.
            ("a byte moved into the tag", b"call-1@", b"htag-a", false),
            (
                "the older token of another tag",
                b"call-1@h",
                b"tag-b",
                false,
            ),
            ("another secret's token", b"call-1@h", b"tag-a", false),
            ("a digit changed", b"call-1@h", b"tag-a", false),
            ("too short", b"call-1@h", b"tag-a", false),
        ];
        let mut changed = token.clone().into_bytes();
        changed[15] = if changed[15] == b'0' { b'1' } else { b'0' };
        let users: [Vec<u8>; 9] = [
            token.clone().into_bytes(),
            hmac.clone().into_bytes(),
            token.clone().into_bytes(),
            token.clone().into_bytes(),
            token.clone().into_bytes(),
            hmac.clone().into_bytes(),
            other_secret.into_bytes(),
            changed,
            token.as_bytes()[..15].to_vec(),
        ];
        for ((what, call, tag, ours), user) in cases.into_iter().zip(users) {
            assert_eq!(id.is_token(call, tag, &user), ours, "{what}");
            let route = format!("<sip:{}@127.0.0.1:5060;lr>", String::from_utf8_lossy(&user));
            assert_eq!(
                id.is_own_route(route.as_bytes(), call, &[b"x", tag]),
                ours,
                "{what}: {route}"
            );
        }
    }
    #[test]
    fn own_addresses_of_a_wildcard_listener() {
        let listen = vec![crate::config::parse_listen("udp:0.0.0.0:5060").expect("listen")];
        let id = Identity::new(listen, Some("198.51.100.7".into()), b"k");
        for (addr, own) in [
            ("127.0.0.1:5060", true),
            ("198.51.100.7:5060", true),
            ("0.0.0.0:5060", true),
            ("203.0.113.5:5060", false),
            ("127.0.0.1:5061", false),
        ] {
            let a: SocketAddr = addr.parse().expect("addr");
            assert_eq!(id.is_own_addr(a), own, "{addr}");
        }
        let listen = vec![crate::config::parse_listen("udp:192.0.2.10:5060").expect("listen")];
        let id = Identity::new(listen, None, b"k");
        assert!(id.is_own_addr("192.0.2.10:5060".parse().expect("addr")));
        assert!(!id.is_own_addr("192.0.2.11:5060".parse().expect("addr")));
    }

    #[test]
    fn matching_sent_by_is_left_alone() {
        assert_eq!(
            stamped(
                "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1",
                "127.0.0.1:5070"
            ),
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1"
        );
    }

    #[test]
    fn hostname_sent_by_gets_received() {
        assert_eq!(
            stamped(
                "SIP/2.0/UDP host.example.com;branch=z9hG4bK1",
                "127.0.0.1:5070"
            ),
            "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bK1;received=127.0.0.1"
        );
    }

    #[test]
    fn empty_rport_is_filled_and_received_added() {
        assert_eq!(
            stamped(
                "SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1",
                "127.0.0.1:40000"
            ),
            "Via: SIP/2.0/UDP 10.0.0.1:5060;rport=40000;branch=z9hG4bK1;received=127.0.0.1"
        );
    }

    #[test]
    fn received_written_by_the_sender_is_corrected() {
        assert_eq!(
            stamped(
                "SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bK1",
                "127.0.0.1:5060"
            ),
            "Via: SIP/2.0/UDP [2001:db8::9:1];received=127.0.0.1;branch=z9hG4bK1"
        );
        // Already the truth: untouched.
        assert_eq!(
            stamped(
                "SIP/2.0/UDP h.example.com;received=127.0.0.1",
                "127.0.0.1:5060"
            ),
            "Via: SIP/2.0/UDP h.example.com;received=127.0.0.1"
        );
    }
}
