//! Header names, with the compact forms of RFC 3261 7.3.3 (and the ones
//! later RFCs registered) mapped to the headers a proxy must understand.

use super::chars::eq_ic;

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
    pub fn classify(name: &[u8]) -> HeaderName {
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
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
        // Dispatch on length first: every message classifies each of its
        // header names, so this runs ~10 times per message.
        let is = |long: &[u8]| eq_ic(long, name);
        match name.len() {
            2 if is(b"to") => HeaderName::To,
            3 if is(b"via") => HeaderName::Via,
            4 if is(b"from") => HeaderName::From,
            4 if is(b"cseq") => HeaderName::CSeq,
            4 if is(b"date") => HeaderName::Date,
            5 if is(b"route") => HeaderName::Route,
            7 if is(b"call-id") => HeaderName::CallId,
            7 if is(b"contact") => HeaderName::Contact,
            7 if is(b"require") => HeaderName::Require,
            12 if is(b"max-forwards") => HeaderName::MaxForwards,
            12 if is(b"record-route") => HeaderName::RecordRoute,
            12 if is(b"content-type") => HeaderName::ContentType,
            13 if is(b"proxy-require") => HeaderName::ProxyRequire,
            14 if is(b"content-length") => HeaderName::ContentLength,
            15 if is(b"remote-party-id") => HeaderName::RemotePartyId,
            19 if is(b"p-asserted-identity") => HeaderName::PAssertedIdentity,
            _ => HeaderName::Other,
        }
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
