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
        const TABLE: &[(&[u8], HeaderName)] = &[
            (b"via", HeaderName::Via),
            (b"from", HeaderName::From),
            (b"to", HeaderName::To),
            (b"call-id", HeaderName::CallId),
            (b"cseq", HeaderName::CSeq),
            (b"max-forwards", HeaderName::MaxForwards),
            (b"route", HeaderName::Route),
            (b"record-route", HeaderName::RecordRoute),
            (b"contact", HeaderName::Contact),
            (b"content-length", HeaderName::ContentLength),
            (b"content-type", HeaderName::ContentType),
            (b"proxy-require", HeaderName::ProxyRequire),
            (b"require", HeaderName::Require),
            (b"date", HeaderName::Date),
            (b"p-asserted-identity", HeaderName::PAssertedIdentity),
            (b"remote-party-id", HeaderName::RemotePartyId),
        ];
        TABLE
            .iter()
            .find(|(long, _)| eq_ic(long, name))
            .map_or(HeaderName::Other, |(_, h)| *h)
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
