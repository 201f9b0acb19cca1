//! RTP and RTCP headers (RFC 3550 5.1, 6.4), telling them apart on one
//! port (rtcp-mux, RFC 5761 4) and RFC 4733 telephone-events (DTMF).
//! Every read is bounds-checked: packets come from anyone who finds the port.

/// Why a datagram is not a usable packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("packet shorter than its header")]
    Short,
    #[error("RTP version is not 2")]
    Version,
    #[error("CSRC list or header extension runs past the packet")]
    HeaderOverrun,
    #[error("padding count is 0 or longer than the payload")]
    BadPadding,
    #[error("RTCP length field runs past the packet")]
    RtcpLength,
}

/// An RTP packet: header fields and the payload (padding removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub csrc_count: u8,
    pub extension: bool,
    pub padding: bool,
    pub payload: &'a [u8],
}

fn be16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

fn be32(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(i)?,
        *b.get(i + 1)?,
        *b.get(i + 2)?,
        *b.get(i + 3)?,
    ]))
}

impl<'a> RtpPacket<'a> {
    pub fn parse(b: &'a [u8]) -> Result<RtpPacket<'a>, RtpError> {
        if b.len() < 12 {
            return Err(RtpError::Short);
        }
        if b[0] >> 6 != 2 {
            return Err(RtpError::Version);
        }
        let padding = b[0] & 0x20 != 0;
        let extension = b[0] & 0x10 != 0;
        let csrc_count = b[0] & 0x0f;
        let mut off = 12 + 4 * usize::from(csrc_count);
        if extension {
            // 16-bit profile id, 16-bit length in 32-bit words (RFC 3550 5.3.1).
            let words = be16(b, off + 2).ok_or(RtpError::HeaderOverrun)?;
            off += 4 + 4 * usize::from(words);
        }
        if off > b.len() {
            return Err(RtpError::HeaderOverrun);
        }
        let mut end = b.len();
        if padding {
            let pad = usize::from(b[end - 1]);
            if pad == 0 || pad > end - off {
                return Err(RtpError::BadPadding);
            }
            end -= pad;
        }
        Ok(RtpPacket {
            marker: b[1] & 0x80 != 0,
            payload_type: b[1] & 0x7f,
            sequence: be16(b, 2).ok_or(RtpError::Short)?,
            timestamp: be32(b, 4).ok_or(RtpError::Short)?,
            ssrc: be32(b, 8).ok_or(RtpError::Short)?,
            csrc_count,
            extension,
            padding,
            payload: &b[off..end],
        })
    }
}

/// What arrived on a port that may carry both (rtcp-mux).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Rtp,
    Rtcp,
    /// Not version 2 or too short: STUN, DTLS, ZRTP or garbage.
    Other,
}

/// RFC 5761 4: the second octet of RTCP (packet types 192–223) falls where
/// an RTP marker bit plus payload type 64–95 would, which RTP avoids.
pub fn demux(b: &[u8]) -> Kind {
    match b {
        [first, second, ..] if first >> 6 == 2 => {
            if (192..=223).contains(second) {
                Kind::Rtcp
            } else {
                Kind::Rtp
            }
        }
        _ => Kind::Other,
    }
}

/// The first RTCP header of a (compound) packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcpHeader {
    pub packet_type: u8,
    /// Report count / subtype (5 bits).
    pub count: u8,
    pub padding: bool,
    /// Length of this packet in bytes, header included.
    pub len: usize,
    /// The sender's SSRC (every RTCP packet type starts with one).
    pub ssrc: u32,
}

impl RtcpHeader {
    pub fn parse(b: &[u8]) -> Result<RtcpHeader, RtpError> {
        if b.len() < 8 {
            return Err(RtpError::Short);
        }
        if b[0] >> 6 != 2 {
            return Err(RtpError::Version);
        }
        let words = be16(b, 2).ok_or(RtpError::Short)?;
        let len = (usize::from(words) + 1) * 4;
        if len > b.len() {
            return Err(RtpError::RtcpLength);
        }
        Ok(RtcpHeader {
            packet_type: b[1],
            count: b[0] & 0x1f,
            padding: b[0] & 0x20 != 0,
            len,
            ssrc: be32(b, 4).ok_or(RtpError::Short)?,
        })
    }
}

/// An RFC 4733 2.3 telephone-event payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    pub end: bool,
    /// Power level in -dBm0 (0–63).
    pub volume: u8,
    /// In timestamp units (8 kHz for the usual `telephone-event/8000`).
    pub duration: u16,
}

impl TelephoneEvent {
    /// The first event block of the payload (RFC 2198 redundancy is not
    /// used on plain telephone-event streams).
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, RtpError> {
        match payload {
            [event, flags, d0, d1, ..] => Ok(TelephoneEvent {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3f,
                duration: u16::from_be_bytes([*d0, *d1]),
            }),
            _ => Err(RtpError::Short),
        }
    }

    /// The DTMF key for events 0–15 (RFC 4733 3.2): `0`–`9`, `*`, `#`, `A`–`D`.
    pub fn digit(&self) -> Option<char> {
        b"0123456789*#ABCD"
            .get(usize::from(self.event))
            .map(|&c| char::from(c))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn header(first: u8, second: u8) -> Vec<u8> {
        vec![
            first, second, 0x12, 0x34, 0, 0, 0x03, 0x20, 0xde, 0xad, 0xbe, 0xef,
        ]
    }

    #[test]
    fn rtp_table() {
        let plain = [header(0x80, 0x00), vec![0xff; 160]].concat();
        let marker_pcma = [header(0x80, 0x88), vec![0xd5; 160]].concat();
        let csrc = [header(0x82, 0x00), vec![0, 0, 0, 1, 0, 0, 0, 2], vec![7; 4]].concat();
        let ext = [
            header(0x90, 0x00),
            vec![0xbe, 0xde, 0, 1, 1, 2, 3, 4],
            vec![9; 3],
        ]
        .concat();
        let padded = [header(0xa0, 0x00), vec![5, 5, 0, 0, 3]].concat();
        let csrc_short = [header(0x83, 0x00), vec![0; 8]].concat();
        let ext_short = [header(0x90, 0x00), vec![0xbe, 0xde, 0, 9, 0, 0, 0, 0]].concat();
        let pad_zero = [header(0xa0, 0x00), vec![1, 0]].concat();
        let pad_long = [header(0xa0, 0x00), vec![1, 9]].concat();
        // (packet, Ok((pt, marker, payload)) or the error)
        type Row<'a> = (&'a [u8], Result<(u8, bool, &'a [u8]), RtpError>);
        let rows: [Row; 12] = [
            (&plain, Ok((0, false, &[0xff; 160]))),
            (&marker_pcma, Ok((8, true, &[0xd5; 160]))),
            (&csrc, Ok((0, false, &[7; 4]))),
            (&ext, Ok((0, false, &[9; 3]))),
            (&padded, Ok((0, false, &[5, 5]))),
            (&header(0x80, 0x00), Ok((0, false, &[]))),
            (&[0x80, 0, 0], Err(RtpError::Short)),
            (&header(0x40, 0x00), Err(RtpError::Version)),
            (&csrc_short, Err(RtpError::HeaderOverrun)),
            (&ext_short, Err(RtpError::HeaderOverrun)),
            (&pad_zero, Err(RtpError::BadPadding)),
            (&pad_long, Err(RtpError::BadPadding)),
        ];
        for (i, (b, want)) in rows.into_iter().enumerate() {
            let got = RtpPacket::parse(b).map(|p| (p.payload_type, p.marker, p.payload));
            assert_eq!(got, want, "row {i}");
        }
        let p = RtpPacket::parse(&plain).expect("plain");
        assert_eq!((p.sequence, p.timestamp, p.ssrc), (0x1234, 800, 0xdeadbeef));
    }

    #[test]
    fn demux_table() {
        let rows: [(&[u8], Kind); 8] = [
            (&[0x80, 0x00], Kind::Rtp),         // PCMU
            (&[0x80, 0x88], Kind::Rtp),         // PCMA with marker
            (&[0x80, 0xe5], Kind::Rtp),         // marker + PT 101 (telephone-event)
            (&[0x81, 200], Kind::Rtcp),         // SR
            (&[0x81, 201], Kind::Rtcp),         // RR
            (&[0x81, 203], Kind::Rtcp),         // BYE
            (&[0x00, 0x01, 0x00], Kind::Other), // STUN binding request
            (&[0x80], Kind::Other),
        ];
        for (b, want) in rows {
            assert_eq!(demux(b), want, "{b:?}");
        }
    }

    #[test]
    fn rtcp_table() {
        // A receiver report with no blocks, then the same claiming 2 more words.
        let rr = [0x80, 201, 0, 1, 0xca, 0xfe, 0xba, 0xbe];
        let h = RtcpHeader::parse(&rr).expect("rr");
        assert_eq!(
            (h.packet_type, h.count, h.len, h.ssrc),
            (201, 0, 8, 0xcafebabe)
        );
        assert_eq!(
            RtcpHeader::parse(&[0x80, 201, 0, 3, 0, 0, 0, 0]),
            Err(RtpError::RtcpLength)
        );
        assert_eq!(RtcpHeader::parse(&[0x80, 201, 0, 1]), Err(RtpError::Short));
        assert_eq!(
            RtcpHeader::parse(&[0x00, 201, 0, 1, 0, 0, 0, 0]),
            Err(RtpError::Version)
        );
    }

    #[test]
    fn telephone_events() {
        // (payload, event, end, volume, duration, digit)
        type Row = (&'static [u8], u8, bool, u8, u16, Option<char>);
        let rows: [Row; 5] = [
            (&[1, 0x0a, 0x00, 0xa0], 1, false, 10, 160, Some('1')),
            (&[11, 0x8a, 0x03, 0x20], 11, true, 10, 800, Some('#')),
            (&[10, 0x3f, 0, 0], 10, false, 63, 0, Some('*')),
            (&[15, 0x80, 0, 80, 9, 9], 15, true, 0, 80, Some('D')),
            (&[16, 0x00, 0, 80], 16, false, 0, 80, None), // flash
        ];
        for (b, event, end, volume, duration, digit) in rows {
            let e = TelephoneEvent::parse(b).expect("event");
            assert_eq!(
                (e.event, e.end, e.volume, e.duration),
                (event, end, volume, duration)
            );
            assert_eq!(e.digit(), digit);
        }
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), Err(RtpError::Short));
    }

    proptest! {
        #[test]
        fn never_panics(mut b in proptest::collection::vec(any::<u8>(), 0..80), v2 in any::<bool>()) {
            // Half the inputs claim version 2 so the deeper checks run.
            if let (true, Some(first)) = (v2, b.first_mut()) {
                *first = (*first & 0x3f) | 0x80;
            }
            if let Ok(p) = RtpPacket::parse(&b) {
                prop_assert!(p.payload.len() <= b.len() - 12);
            }
            let _ = RtcpHeader::parse(&b);
            let _ = TelephoneEvent::parse(&b);
            let _ = demux(&b);
        }
    }
}
