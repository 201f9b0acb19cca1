//! The INVITE rules of SPEC section 3 (T-2 to T-5) as pure functions over
//! (message, call context, settings): they add edits to a [`Patch`] and
//! compute the forwarded Request-URI. The proxy core knows nothing of them;
//! the tracking router calls them where the next hop is chosen.

pub mod template;

use std::collections::HashMap;

use smol_str::SmolStr;

use crate::config::Destination;
use crate::phone::{is_withheld, normalize_user_append, normalize_user_smol, PhoneRules};
use crate::proxy::hooks::destination_uri_smol;
use crate::sip::chars::{lossy, utf8};
use crate::sip::{HeaderName, Message, NameAddr, Patch, Span, Uri};
use crate::tracking::VisitFields;

pub use template::{Placeholder, Template};

/// What is known about a call when its INVITE is forwarded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallContext {
    /// The tracking number dialed, normalised (T-5).
    pub dialed: SmolStr,
    /// The caller's number, normalised unless `normalize_caller = false`;
    /// empty when withheld (no phone, SPEC T-5).
    pub caller: SmolStr,
    pub visit_id: Option<SmolStr>,
    /// The visit's marker, or the static number's channel.
    pub marker: Option<SmolStr>,
    pub source: Option<SmolStr>,
    /// Other visit data: city, domain, page, utm_* (shared with the
    /// pools, not copied per call).
    pub visit: VisitFields,
}

impl CallContext {
    /// The value of a template placeholder; empty when unknown for this call.
    pub fn field(&self, name: &str) -> &str {
        match name {
            "dialed" => &self.dialed,
            "caller" => &self.caller,
            "visit_id" => self.visit_id.as_deref().unwrap_or_default(),
            "marker" => self.marker.as_deref().unwrap_or_default(),
            "source" => self.source.as_deref().unwrap_or_default(),
            other => self.visit.get(other).map_or("", String::as_str),
        }
    }

    /// [`CallContext::field`] for a placeholder resolved at config load:
    /// no name matching per call.
    pub fn placeholder(&self, p: Placeholder) -> &str {
        match p {
            Placeholder::Dialed => &self.dialed,
            Placeholder::Caller => &self.caller,
            Placeholder::VisitId => self.visit_id.as_deref().unwrap_or_default(),
            Placeholder::Marker => self.marker.as_deref().unwrap_or_default(),
            Placeholder::Source => self.source.as_deref().unwrap_or_default(),
            Placeholder::Visit(name) => self.visit.get(name).map_or("", String::as_str),
        }
    }
}

/// Settings of the rewrite rules, from `[rewrite]`, `[tracking]`, `[phone]`.
#[derive(Clone, Debug)]
pub struct RewriteSettings {
    /// T-2 header names.
    pub phone_header: String,
    pub marker_header: String,
    pub visit_header: String,
    /// T-3, in configuration order.
    pub extra_headers: Vec<(String, Template)>,
    /// T-4: normalised dialed number → number to send.
    pub number_substitution: HashMap<String, String>,
    /// T-4: SIP login → extension.
    pub sip_login_map: HashMap<String, String>,
    /// `tracking.send_sip_address_instead_of_dialed_number`.
    pub send_sip_address: bool,
    /// `tracking.normalize_caller`.
    pub normalize_caller: bool,
    pub phone: PhoneRules,
}

impl Default for RewriteSettings {
    fn default() -> Self {
        RewriteSettings {
            phone_header: "X-Roistat-Phone".into(),
            marker_header: "X-Roistat-Marker".into(),
            visit_header: "X-Roistat".into(),
            extra_headers: Vec::new(),
            number_substitution: HashMap::new(),
            sip_login_map: HashMap::new(),
            send_sip_address: false,
            normalize_caller: true,
            phone: PhoneRules::default(),
        }
    }
}

/// The user part of the URI of header `header` (From, To,
/// P-Asserted-Identity …), with its absolute span in the message. The
/// message parses each such value once for all the rules here.
fn uri_user(msg: &Message, header: usize) -> Option<(Span, &[u8])> {
    let span = msg.addr_user(header)?;
    Some((span, msg.bytes(span)))
}

/// [`dialed_raw`] without the copy.
pub fn dialed_user(msg: &Message) -> Option<&[u8]> {
    msg.request_uri_spans()
        .and_then(|u| u.user)
        .map(|s| msg.bytes(s))
        .or_else(|| {
            let to = msg.header_index(HeaderName::To)?;
            uri_user(msg, to).map(|(_, u)| u)
        })
}

/// The number dialed as it came: the Request-URI's user part, else the
/// To URI's (T-1).
pub fn dialed_raw(msg: &Message) -> Option<String> {
    dialed_user(msg).map(|u| lossy(u).into_owned())
}

/// The caller's number as it came: the From URI's user part, or a `tel:`
/// URI's number (trial, 2026-12-02: `<tel:+7-916-100-00-12>` made a
/// withheld caller).
pub fn caller_raw(msg: &Message) -> SmolStr {
    let Some(h) = msg.header_index(HeaderName::From) else {
        return SmolStr::default();
    };
    uri_user(msg, h)
        .map(|(_, u)| u)
        .or_else(|| tel_number(msg.bytes(msg.addr(h)?.uri)))
        .map(|u| SmolStr::new(lossy(u)))
        .unwrap_or_default()
}

/// The number of a `tel:` URI (its telephone-subscriber without
/// parameters); None for any other URI.
fn tel_number(uri: &[u8]) -> Option<&[u8]> {
    let rest = uri
        .get(..4)
        .filter(|s| s.eq_ignore_ascii_case(b"tel:"))
        .map(|_| &uri[4..])?;
    let end = rest.iter().position(|&c| c == b';').unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The caller as tracking sees it (SPEC T-5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The user part it was taken from, as it came (escapes and all).
    pub raw: SmolStr,
    /// The phone: normalised (when `normalize_caller` is on), or None when
    /// the number is withheld.
    pub phone: Option<SmolStr>,
}

/// Who called, for the call record and the lead: the From user part;
/// with `Privacy: id` (RFC 3323) the P-Asserted-Identity's number instead,
/// since siptrack sits inside the trust domain that asserted it, and no
/// phone at all when there is no usable one. `anonymous` and the other
/// words of [`is_withheld`] are no phone either.
pub fn caller(msg: &Message, rules: &PhoneRules, normalise: bool) -> Caller {
    caller_and_from(msg, rules, normalise).0
}

/// [`caller`], and whether its phone is what T-5 makes of the From user
/// part (normalised, or as it came when no number): then
/// [`rewrite_invite_from`] need not normalise the From again.
pub fn caller_and_from(msg: &Message, rules: &PhoneRules, normalise: bool) -> (Caller, bool) {
    let from = caller_raw(msg);
    // The number the network asserted, when the From does not give one:
    // (its user part as written, normalised), or a withheld caller.
    let identified = |found: Option<(SmolStr, SmolStr)>, from: SmolStr| match found {
        Some((raw, phone)) => Caller {
            phone: Some(if normalise { phone } else { raw.clone() }),
            raw,
        },
        None => Caller {
            raw: from,
            phone: None,
        },
    };
    if privacy_id(msg) {
        return (identified(asserted_number(msg, rules), from), false);
    }
    if is_withheld(&from) {
        // The From hides the number, the network's identity headers may
        // not: as with `Privacy: id`, theirs is the caller's number (trial,
        // 2026-12-02: From anonymous with a Remote-Party-ID number made a
        // withheld lead, though the INVITE carried the number on).
        let found = asserted_number(msg, rules).or_else(|| party_number(msg, rules));
        return (identified(found, from), false);
    }
    let phone = normalise
        .then(|| normalize_user_smol(&from, rules))
        .flatten()
        // Not normalised, or no number: the user part as it came.
        .unwrap_or_else(|| from.clone());
    let c = Caller {
        raw: from,
        phone: Some(phone),
    };
    (c, normalise)
}

/// A `Privacy` header asking for the identity to be withheld (`id`, any
/// case, among `;`-separated values).
fn privacy_id(msg: &Message) -> bool {
    msg.headers
        .iter()
        .filter(|h| msg.bytes(h.name_span).eq_ignore_ascii_case(b"privacy"))
        .flat_map(|h| msg.bytes(h.value).split(|&c| c == b';' || c == b','))
        .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"id"))
}

/// The first P-Asserted-Identity value that is a phone number: (its user
/// part or telephone-subscriber as written, normalised number).
fn asserted_number(msg: &Message, rules: &PhoneRules) -> Option<(SmolStr, SmolStr)> {
    msg.headers_named(HeaderName::PAssertedIdentity)
        .flat_map(|h| split_values(msg.bytes(h.value)))
        .find_map(|v| number_of(&NameAddr::parse(v).ok()?, rules))
}

/// The calling party's number from the first Remote-Party-ID that names
/// it (`party=calling`, the default), as [`asserted_number`].
fn party_number(msg: &Message, rules: &PhoneRules) -> Option<(SmolStr, SmolStr)> {
    msg.headers_named(HeaderName::RemotePartyId)
        .flat_map(|h| split_values(msg.bytes(h.value)))
        .find_map(|v| {
            let na = NameAddr::parse(v).ok()?;
            let called = na
                .param(b"party")
                .is_some_and(|p| p.eq_ignore_ascii_case(b"called"));
            if called {
                return None;
            }
            number_of(&na, rules)
        })
}

/// A name-addr's phone number: (its user part or `tel:` number as
/// written, normalised number); None for no number or a withheld word.
fn number_of(na: &NameAddr, rules: &PhoneRules) -> Option<(SmolStr, SmolStr)> {
    let uri = na.uri();
    let user = match tel_number(uri) {
        Some(number) => number,
        None => Uri::parse(uri).ok()?.user()?,
    };
    let user = std::str::from_utf8(user).ok()?;
    if is_withheld(user) {
        return None;
    }
    normalize_user_smol(user, rules).map(|d| (SmolStr::new(user), d))
}

/// The values of a comma-separated header (commas inside quotes and
/// angle brackets belong to the value).
fn split_values(v: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut angle, mut i) = (0, false, false, 0);
    while i < v.len() {
        match v[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => {
                out.push(v[start..i].trim_ascii());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(v[start.min(v.len())..].trim_ascii());
    out
}

/// What happens to the To URI of the forwarded INVITE (T-4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToEdit {
    Keep,
    /// The dialed number was substituted: the To user part follows.
    User(String),
    /// The destination's SIP address replaces the URI.
    Uri(Vec<u8>),
}

/// T-4: the forwarded Request-URI and what becomes of the To URI.
///
/// Default mode: the dialed number (after `number_substitution`) at the
/// destination's host. `send_sip_address` mode, and destinations given as
/// a phone number: the destination's own address, its user part mapped
/// through `sip_login_map`.
pub fn request_uri(
    dest: &Destination,
    dialed: &str,
    phone_destination: bool,
    s: &RewriteSettings,
) -> (SmolStr, ToEdit) {
    if s.send_sip_address || phone_destination {
        let own = dest.user.clone().unwrap_or_default();
        let user = s.sip_login_map.get(&own).cloned().unwrap_or(own);
        let user = (!user.is_empty()).then_some(user.as_bytes());
        let uri = destination_uri_smol(dest, user);
        let mut to = uri.as_bytes().to_vec();
        // The transport parameter is for routing, not for the To URI.
        if let Some(p) = to.windows(14).position(|w| w == b";transport=tcp") {
            to.truncate(p);
        }
        return (uri, ToEdit::Uri(to));
    }
    match s.number_substitution.get(dialed) {
        Some(to) => (
            destination_uri_smol(dest, Some(to.as_bytes())),
            ToEdit::User(to.clone()),
        ),
        None => (
            destination_uri_smol(dest, (!dialed.is_empty()).then_some(dialed.as_bytes())),
            ToEdit::Keep,
        ),
    }
}

/// Every edit of T-2 to T-5 for one INVITE: the To URI, the caller's
/// number, the tracking headers (replacing any that came in, which a
/// caller could otherwise forge) and the extra headers.
pub fn rewrite_invite(
    msg: &Message,
    ctx: &CallContext,
    to: &ToEdit,
    s: &RewriteSettings,
    patch: &mut Patch,
) {
    rewrite_invite_from(msg, ctx, to, s, None, patch)
}

/// [`rewrite_invite`] with the From user part's T-5 form already known
/// (`from`: the caller's phone when [`caller_and_from`] said it is the
/// From's), so that the tracking router does not normalise it twice.
pub fn rewrite_invite_from(
    msg: &Message,
    ctx: &CallContext,
    to: &ToEdit,
    s: &RewriteSettings,
    from: Option<&str>,
    patch: &mut Patch,
) {
    rewrite_invite_prepared(msg, ctx, to, s, &Prepared::new(s), from, patch)
}

/// [`rewrite_invite_from`] with `prepared` made from `s` once (the
/// tracking router's, built with it).
pub fn rewrite_invite_prepared(
    msg: &Message,
    ctx: &CallContext,
    to: &ToEdit,
    s: &RewriteSettings,
    prepared: &Prepared,
    from: Option<&str>,
    patch: &mut Patch,
) {
    if let Some(h) = msg.header_index(HeaderName::To) {
        match to {
            ToEdit::Keep => {}
            ToEdit::User(user) => {
                if let Some((span, _)) = uri_user(msg, h) {
                    patch.replace(span, user.as_bytes());
                }
            }
            ToEdit::Uri(uri) => {
                if let Some(na) = msg.addr(h) {
                    let span = na.uri;
                    if na.angle {
                        patch.replace(span, uri);
                    } else {
                        // An addr-spec's parameters belong to the header;
                        // brackets keep them there (RFC 3261 20.10).
                        patch.replace_with(span, |o| {
                            o.push(b'<');
                            o.extend_from_slice(uri);
                            o.push(b'>');
                        });
                    }
                }
            }
        }
    }
    // One pass over the headers for T-5 (From, P-Asserted-Identity,
    // Remote-Party-ID) and for forged tracking headers, where there were
    // two. The edits' order does not matter: they are sorted by position
    // when applied, and those of one header keep their order.
    let mut from = from;
    for (i, h) in msg.headers.iter().enumerate() {
        // Named here, not only inside: a call per header cost more than
        // the second pass it saved.
        if s.normalize_caller && is_caller_header(h.name) {
            normalize_caller_at(msg, i, h.name, &s.phone, &mut from, patch);
        }
        // A header the parser knows (From, Via …) is one of ours only if
        // one of ours is configured with such a name: usually none is,
        // and most of an INVITE's headers need no comparing then; of the
        // rest, most have a length none of ours has.
        if (h.name == HeaderName::Other || prepared.known)
            && prepared.writes_header(msg.bytes(h.name_span))
        {
            patch.delete(h.line);
        }
    }
    patch.insert_with(msg.headers_end, |out| prepared.write(ctx, out));
}

/// What the INVITE rules need from [`RewriteSettings`] that depends on
/// the configuration alone, worked out once when the router is built
/// rather than per INVITE (issue 15): each header's `Name: `, the names a
/// forged header is recognised by, and whether one of them is a name the
/// SIP parser classifies.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// `Name: ` of the phone, marker and visit headers; empty when that
    /// header is not sent (its name is empty).
    heads: [Vec<u8>; 3],
    /// `Name: ` and value of each extra header, in configuration order.
    extra: Vec<(Vec<u8>, Template)>,
    /// The names of the headers written (non-empty ones).
    names: Vec<Vec<u8>>,
    /// Bit `n` set when one of `names` is `n` bytes long (bit 63: 63 or
    /// more): most headers of an INVITE are ruled out by length alone.
    lengths: u64,
    /// One of the names is one the SIP parser classifies (not `Other`).
    known: bool,
}

/// The bit of [`Prepared::lengths`] for a name of `len` bytes.
fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

impl Prepared {
    pub fn new(s: &RewriteSettings) -> Prepared {
        let head = |name: &str| {
            if name.is_empty() {
                Vec::new()
            } else {
                [name.as_bytes(), b": "].concat()
            }
        };
        let heads = [
            head(&s.phone_header),
            head(&s.marker_header),
            head(&s.visit_header),
        ];
        // Extra headers are written even with an empty name, as before
        // (config load refuses one).
        let extra: Vec<(Vec<u8>, Template)> = s
            .extra_headers
            .iter()
            .map(|(n, t)| ([n.as_bytes(), b": "].concat(), t.clone()))
            .collect();
        let all = || {
            [&s.phone_header, &s.marker_header, &s.visit_header]
                .into_iter()
                .chain(s.extra_headers.iter().map(|(n, _)| n))
        };
        let names: Vec<Vec<u8>> = all()
            .filter(|n| !n.is_empty())
            .map(|n| n.as_bytes().to_vec())
            .collect();
        Prepared {
            lengths: names.iter().fold(0, |m, n| m | length_bit(n.len())),
            known: all().any(|n| HeaderName::classify(n.as_bytes()) != HeaderName::Other),
            heads,
            extra,
            names,
        }
    }

    /// Whether `name` is one of the headers siptrack writes into an
    /// INVITE (tracking and extra headers): one that came in is a forgery.
    fn writes_header(&self, name: &[u8]) -> bool {
        self.lengths & length_bit(name.len()) != 0
            && self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// T-2 and T-3: every header to add as `Name: value\r\n` lines
    /// appended to `out`; empty values are left out.
    pub fn write(&self, ctx: &CallContext, out: &mut Vec<u8>) {
        let visit = ctx.visit_id.as_deref().or(ctx.marker.as_deref());
        for (head, value) in
            self.heads
                .iter()
                .zip([Some(ctx.dialed.as_str()), ctx.marker.as_deref(), visit])
        {
            if !head.is_empty() {
                header_line(out, head, |o| {
                    template::header_safe_into(value.unwrap_or_default(), o)
                });
            }
        }
        for (head, t) in &self.extra {
            header_line(out, head, |o| t.render_into(ctx, o));
        }
    }
}

/// T-2 and T-3: every header to add as `Name: value\r\n` lines appended
/// to `out`; empty values are left out.
pub fn write_tracking_headers(ctx: &CallContext, s: &RewriteSettings, out: &mut Vec<u8>) {
    Prepared::new(s).write(ctx, out)
}

/// Appends `head` (`Name: `), the value and CRLF when `value` writes
/// something, else nothing.
fn header_line(out: &mut Vec<u8>, head: &[u8], value: impl FnOnce(&mut Vec<u8>) -> bool) {
    let start = out.len();
    out.extend_from_slice(head);
    if value(out) {
        out.extend_from_slice(b"\r\n");
    } else {
        out.truncate(start);
    }
}

/// T-2 and T-3 as (name, value) pairs: what [`write_tracking_headers`]
/// writes, read back (for tests and callers that want the values).
pub fn tracking_headers(ctx: &CallContext, s: &RewriteSettings) -> Vec<(String, String)> {
    let mut block = Vec::new();
    write_tracking_headers(ctx, s, &mut block);
    String::from_utf8_lossy(&block)
        .split("\r\n")
        .filter_map(|line| line.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// T-5: the user parts of From, P-Asserted-Identity and Remote-Party-ID,
/// normalised where they are phone numbers.
pub fn normalize_caller(msg: &Message, rules: &PhoneRules, patch: &mut Patch) {
    normalize_caller_from(msg, rules, None, patch)
}

/// [`normalize_caller`] with the first From's user part already
/// normalised (`from`: [`normalize_user_smol`]'s answer, or the user part
/// as it came when it is no number).
fn normalize_caller_from(msg: &Message, rules: &PhoneRules, from: Option<&str>, patch: &mut Patch) {
    let mut from = from;
    for (i, h) in msg.headers.iter().enumerate() {
        if is_caller_header(h.name) {
            normalize_caller_at(msg, i, h.name, rules, &mut from, patch);
        }
    }
}

/// The headers T-5 normalises: From, P-Asserted-Identity, Remote-Party-ID.
fn is_caller_header(name: HeaderName) -> bool {
    matches!(
        name,
        HeaderName::From | HeaderName::PAssertedIdentity | HeaderName::RemotePartyId
    )
}

/// T-5 for header `i` (named `name`) when it is a From,
/// P-Asserted-Identity or Remote-Party-ID. `from` is the first From's
/// user part already normalised, taken by the first From (the caller's,
/// as `header_index` finds it).
fn normalize_caller_at(
    msg: &Message,
    i: usize,
    name: HeaderName,
    rules: &PhoneRules,
    from: &mut Option<&str>,
    patch: &mut Patch,
) {
    let known = match name {
        HeaderName::From => from.take(),
        HeaderName::PAssertedIdentity | HeaderName::RemotePartyId => None,
        _ => return,
    };
    let Some((span, user)) = uri_user(msg, i) else {
        if name != HeaderName::From {
            normalize_listed(msg, i, rules, patch);
        }
        return;
    };
    let Ok(raw) = utf8(user) else {
        return;
    };
    if let Some(known) = known {
        if !raw.bytes().any(|c| c == b';') {
            if known != raw {
                patch.replace(span, known.as_bytes());
            }
            return;
        }
        patch.replace_if(span, |out| {
            let start = out.len();
            out.extend_from_slice(known.as_bytes());
            append_kept_params(raw, out, start);
            out[start..] != *raw.as_bytes()
        });
        return;
    }
    replace_normalised(span, raw, rules, patch);
}

/// The user part `raw` at `span` replaced by its T-5 form. Escapes are
/// decoded first (`8%20916…`); what is no number after that
/// (`anonymous`, a login) stays as it came. Written straight into the
/// edit, taken back when it is the same.
fn replace_normalised(span: Span, raw: &str, rules: &PhoneRules, patch: &mut Patch) {
    patch.replace_if(span, |out| {
        let start = out.len();
        normalize_user_append(raw, rules, out) && {
            append_kept_params(raw, out, start);
            out[start..] != *raw.as_bytes()
        }
    });
}

/// T-5 for each value of a P-Asserted-Identity or Remote-Party-ID header
/// that lists several: RFC 3325 9.1 allows a `sip:` and a `tel:` URI in
/// one header, and such a header went on as it came (trial, 2026-12-03).
/// As for one value, a SIP URI's user part is normalised.
fn normalize_listed(msg: &Message, i: usize, rules: &PhoneRules, patch: &mut Patch) {
    let Some(h) = msg.headers.get(i) else {
        return;
    };
    let base = msg.buf().as_ptr() as usize;
    for piece in split_values(msg.bytes(h.value)) {
        let Ok(na) = NameAddr::parse(piece) else {
            continue;
        };
        let uri = na.uri();
        let Some((a, b)) = crate::sip::addrs::user_part(uri) else {
            continue;
        };
        let Ok(raw) = utf8(&uri[a..b]) else {
            continue;
        };
        // The URI is a slice of the message: its place in it.
        let at = uri.as_ptr() as usize - base;
        replace_normalised(Span::new(at + a, at + b), raw, rules, patch);
    }
}

/// A telephone-subscriber's parameters after its number (RFC 3966,
/// RFC 4694: `;npdi;rn=+79160000000`, `;cic=…`, `;ext=…`) go on with
/// the normalised number (`out[number_at..]`): a PBX may route on them
/// (trial, 2026-12-02: they were dropped). `phone-context` goes only
/// when that number is not the subscriber's number as it came: it said
/// that number was local to the context, and the normalised one no
/// longer is; a number left as it was keeps its context.
fn append_kept_params(raw: &str, out: &mut Vec<u8>, number_at: usize) {
    // A byte search: `split_once(';')` set up a char searcher for every
    // caller's number, nearly all of which have no parameters (~100
    // instructions an INVITE, issue 15).
    let Some(semi) = raw.bytes().position(|c| c == b';') else {
        return;
    };
    let (subscriber, params) = (&raw[..semi], &raw[semi + 1..]);
    let expanded = out.get(number_at..) != Some(subscriber.as_bytes());
    for p in params.split(';') {
        let name = p.split('=').next().unwrap_or(p);
        if p.is_empty() || (expanded && name.eq_ignore_ascii_case("phone-context")) {
            continue;
        }
        out.push(b';');
        out.extend_from_slice(p.as_bytes());
    }
}

#[cfg(test)]
mod tests;
