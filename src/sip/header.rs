//! Header names, with the compact forms of RFC 3261 7.3.3 (and the ones
//! later RFCs registered) mapped to the headers a proxy must understand.

#[cfg(test)]
use super::chars::is_token;

/// `name` equals `lower` ignoring ASCII case, where `lower` is a long
/// header name: lowercase letters and '-' only. Compared eight bytes at a
/// time (the last word overlapping the one before): a byte-by-byte
/// case-insensitive compare cost more than the rest of the header's
/// indexing. Letters in `lower` have bit 0x40 set and '-' has not, so
/// `(lower >> 1) & 0x20` is the case bit at exactly the letter positions;
/// a name byte OR that bit equals the letter only when it is that letter
/// in either case, and a '-' must match as is.
#[inline(always)]
fn eq_lower(name: &[u8], lower: &[u8]) -> bool {
    fn word(s: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    }
    fn word_eq(name: &[u8], lower: &[u8], at: usize) -> bool {
        let t = word(lower, at);
        word(name, at) | ((t >> 1) & 0x2020_2020_2020_2020) == t
    }
    let n = lower.len();
    if name.len() != n {
        return false;
    }
    if n < 4 {
        return name
            .iter()
            .zip(lower)
            .all(|(&a, &t)| a | ((t >> 1) & 0x20) == t);
    }
    if n < 8 {
        // Two four-byte words, overlapping when n < 8.
        let word4 = |s: &[u8], at: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&s[at..at + 4]);
            u32::from_le_bytes(w)
        };
        // Two calls, not an iterator over [0, n - 4]: that one compiled
        // to an out-of-line `Iter::all` and doubled classify's cost.
        let eq4 = |at: usize| {
            let t = word4(lower, at);
            word4(name, at) | ((t >> 1) & 0x2020_2020) == t
        };
        return eq4(0) && eq4(n - 4);
    }
    let mut at = 0;
    while at + 8 < n {
        if !word_eq(name, lower, at) {
            return false;
        }
        at += 8;
    }
    word_eq(name, lower, n - 8)
}

/// The headers siptrack decodes; everything else is `Other` and passes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    Route,
    RecordRoute,
    Contact,
    ContentLength,
    ContentType,
    ProxyRequire,
    Require,
    Date,
    PAssertedIdentity,
    RemotePartyId,
    Other,
}

impl HeaderName {
    /// Classifies a header name as written on the wire (any case, compact or long).
    /// Inlined: the indexer calls it for every header line (`#[inline]`
    /// left it a call, with the indexer's registers saved around it).
    #[inline(always)]
    pub fn classify(name: &[u8]) -> HeaderName {
        if name.len() <= 1 {
            let Some(&c) = name.first() else {
                return HeaderName::Other;
            };
            return match c.to_ascii_lowercase() {
                b'v' => HeaderName::Via,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'i' => HeaderName::CallId,
                b'm' => HeaderName::Contact,
                b'l' => HeaderName::ContentLength,
                b'c' => HeaderName::ContentType,
                _ => HeaderName::Other,
            };
        }
        // Dispatch on length and first letter: every message classifies
        // each of its header names, so this runs 15 to 25 times per
        // INVITE. At most one long name can then match, and it is
        // compared once (`eq_lower`); the Other names mostly stop at the
        // dispatch.
        use HeaderName as H;
        // Each arm compares with its own constant so that the compare is
        // unrolled for that length (`eq_lower` is inlined).
        let is = |long: &[u8], known: HeaderName| {
            if eq_lower(name, long) {
                known
            } else {
                H::Other
            }
        };
        match (name.len(), name[0].to_ascii_lowercase()) {
            (2, b't') => is(b"to", H::To),
            (3, b'v') => is(b"via", H::Via),
            (4, b'f') => is(b"from", H::From),
            (4, b'c') => is(b"cseq", H::CSeq),
            (4, b'd') => is(b"date", H::Date),
            (5, b'r') => is(b"route", H::Route),
            (7, b'c') if name[1].eq_ignore_ascii_case(&b'a') => is(b"call-id", H::CallId),
            (7, b'c') => is(b"contact", H::Contact),
            (7, b'r') => is(b"require", H::Require),
            (12, b'm') => is(b"max-forwards", H::MaxForwards),
            (12, b'r') => is(b"record-route", H::RecordRoute),
            (12, b'c') => is(b"content-type", H::ContentType),
            (13, b'p') => is(b"proxy-require", H::ProxyRequire),
            (14, b'c') => is(b"content-length", H::ContentLength),
            (15, b'r') => is(b"remote-party-id", H::RemotePartyId),
            (19, b'p') => is(b"p-asserted-identity", H::PAssertedIdentity),
            _ => H::Other,
        }
    }

    /// When `line` begins with one of the long names above followed by a
    /// byte that cannot continue a token: that name and its length. It is
    /// then what scanning the name's token characters and classifying
    /// them gives (every long name is a token), without the scan: most
    /// header lines of a call are these. `None` leaves the line to that
    /// scan (compact forms, other names, a longer token).
    /// Kept for the tests: the indexer's oracle (the old scan) uses it;
    /// the indexer now classifies the name it finds before the colon.
    #[cfg(test)]
    pub fn known_prefix(line: &[u8]) -> Option<(usize, HeaderName)> {
        use HeaderName as H;
        let candidates: &[(&[u8], HeaderName)] = match line.first()?.to_ascii_lowercase() {
            b'v' => &[(b"via", H::Via)],
            b'f' => &[(b"from", H::From)],
            b't' => &[(b"to", H::To)],
            b'c' => &[
                (b"call-id", H::CallId),
                (b"cseq", H::CSeq),
                (b"contact", H::Contact),
                (b"content-type", H::ContentType),
                (b"content-length", H::ContentLength),
            ],
            b'm' => &[(b"max-forwards", H::MaxForwards)],
            b'r' => &[
                (b"route", H::Route),
                (b"record-route", H::RecordRoute),
                (b"require", H::Require),
                (b"remote-party-id", H::RemotePartyId),
            ],
            b'p' => &[
                (b"p-asserted-identity", H::PAssertedIdentity),
                (b"proxy-require", H::ProxyRequire),
            ],
            b'd' => &[(b"date", H::Date)],
            _ => return None,
        };
        candidates.iter().find_map(|&(long, name)| {
            let n = long.len();
            (line.len() > n && !is_token(line[n]) && eq_lower(&line[..n], long))
                .then_some((n, name))
        })
    }

    /// Headers that RFC 3261 allows only once per message.
    pub fn is_single_valued(self) -> bool {
        matches!(
            self,
            HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
                | HeaderName::MaxForwards
                | HeaderName::ContentLength
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious form the dispatch replaced: every long name compared.
    fn classify_by_comparing(name: &[u8]) -> HeaderName {
        use HeaderName as H;
        if name.len() == 1 {
            return HeaderName::classify(name);
        }
        [
            (&b"to"[..], H::To),
            (b"via", H::Via),
            (b"from", H::From),
            (b"cseq", H::CSeq),
            (b"date", H::Date),
            (b"route", H::Route),
            (b"call-id", H::CallId),
            (b"contact", H::Contact),
            (b"require", H::Require),
            (b"max-forwards", H::MaxForwards),
            (b"record-route", H::RecordRoute),
            (b"content-type", H::ContentType),
            (b"proxy-require", H::ProxyRequire),
            (b"content-length", H::ContentLength),
            (b"remote-party-id", H::RemotePartyId),
            (b"p-asserted-identity", H::PAssertedIdentity),
        ]
        .into_iter()
        .find(|(long, _)| long.eq_ignore_ascii_case(name))
        .map_or(H::Other, |(_, h)| h)
    }

    #[test]
    fn classify_matches_comparing_every_name() {
        let mut names: Vec<Vec<u8>> = [
            "",
            "v",
            "V",
            "f",
            "t",
            "i",
            "m",
            "l",
            "c",
            "x",
            "To",
            "tO",
            "TO",
            "Via",
            "VIA",
            "From",
            "CSeq",
            "cseq",
            "Date",
            "Route",
            "Call-ID",
            "call-id",
            "Contact",
            "CONTACT",
            "Require",
            "Max-Forwards",
            "Record-Route",
            "Content-Type",
            "Proxy-Require",
            "Content-Length",
            "Remote-Party-ID",
            "P-Asserted-Identity",
            "p-asserted-identity",
            "Allow",
            "Supported",
            "Session-Expires",
            "Min-SE",
            "User-Agent",
            "Call-Ix",
            "Cbntact",
            "Contacts",
            "Vib",
            "Tx",
            "Dat",
            "Froms",
            "Max_Forwards",
            "Content\rLength",
            "Call\rID",
            "Route-X",
            "Record-Routf",
            "Proxy-Requirf",
            "P-Preferred-Identity",
        ]
        .iter()
        .map(|n| n.as_bytes().to_vec())
        .collect();
        // Every name with one byte changed to its other case, or to a byte
        // that differs from a letter only in the case bit.
        for n in names.clone() {
            for i in 0..n.len() {
                for flip in [0x20u8, 0x40, 0x60, 0x01, 0x80, 0x0d ^ b'-'] {
                    let mut m = n.clone();
                    m[i] ^= flip;
                    names.push(m);
                }
            }
        }
        for n in names {
            assert_eq!(
                HeaderName::classify(&n),
                classify_by_comparing(&n),
                "{:?}",
                String::from_utf8_lossy(&n)
            );
        }
    }

    /// `known_prefix` answers what scanning the token and classifying it
    /// answers, whenever it answers.
    #[test]
    fn known_prefix_is_scan_and_classify() {
        let mut lines: Vec<Vec<u8>> = [
            "Via: SIP/2.0/UDP h",
            "VIA :x",
            "via\t:x",
            "From: <sip:a@h>",
            "To:x",
            "To",
            "to",
            "Tox: y",
            "Call-ID: c",
            "CSeq: 1 INVITE",
            "Contact: *",
            "Content-Type: a/b",
            "Content-Length: 0",
            "content-length:0",
            "Content-Lengths: 1",
            "Max-Forwards: 70",
            "Route: <sip:h;lr>",
            "Record-Route: <sip:h>",
            "Require: 100rel",
            "Remote-Party-ID: x",
            "P-Asserted-Identity: <sip:a@h>",
            "Proxy-Require: x",
            "Date: Sat",
            "Allow: INVITE",
            "Supported: timer",
            "Min-SE: 90",
            "User-Agent: x",
            "v: SIP/2.0/UDP h",
            "f: x",
            "t:x",
            "c: x",
            "m: x",
            "l: 0",
            "Cseq",
            "CSeq@: 1",
            "Call-ID.x: 1",
            "Via~: x",
            "Date%: x",
            "Route-Set: x",
            "Record-Route",
            "P-Asserted-Identity",
            "P-Asserted-Identity:",
            "",
            ":",
            "Fro: x",
            "From\r\n :x",
        ]
        .iter()
        .map(|l| l.as_bytes().to_vec())
        .collect();
        for l in lines.clone() {
            for i in 0..l.len() {
                for flip in [0x20u8, 0x01, 0x0d ^ b'-'] {
                    let mut m = l.clone();
                    m[i] ^= flip;
                    lines.push(m);
                }
            }
        }
        let mut known = 0;
        for l in &lines {
            let scanned = l.iter().position(|&c| !is_token(c)).unwrap_or(l.len());
            if let Some((n, name)) = HeaderName::known_prefix(l) {
                known += 1;
                assert_eq!(n, scanned, "{:?}", String::from_utf8_lossy(l));
                assert_eq!(
                    name,
                    HeaderName::classify(&l[..n]),
                    "{:?}",
                    String::from_utf8_lossy(l)
                );
            }
        }
        assert!(known > 100, "{known}");
        for l in [
            "Via: x",
            "CONTENT-LENGTH: 0",
            "p-asserted-identity:<sip:a@h>",
        ] {
            assert!(HeaderName::known_prefix(l.as_bytes()).is_some(), "{l}");
        }
    }
}
