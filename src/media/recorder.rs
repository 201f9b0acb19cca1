//! One call's recording: RTP packets of both directions in, a WAV out.
//! Ties [`rtp`], [`g711`], [`timeline`] and [`wav`] together so that the
//! relay only hands over what it relays. G.711 is decoded and written;
//! RFC 4733 events become a DTMF list for the call record, not audio;
//! comfort noise is silence; anything else is counted and left out. A
//! write error stops the recording (never the call) and is reported.
//!
//! [`rtp`]: super::rtp
//! [`g711`]: super::g711
//! [`timeline`]: super::timeline
//! [`wav`]: super::wav

use std::io::{Seek, Write};

use super::g711;
use super::rtp::{RtpPacket, TelephoneEvent};
use super::sdp::Media;
use super::timeline::{Side, SideStats, Timeline};
use super::wav::{WavError, WavWriter};

/// What a payload type carries, as far as recording goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
    TelephoneEvent,
    ComfortNoise,
}

/// Payload type → codec for one call, from its offer and answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payloads {
    map: [Option<Codec>; 128],
}

impl Default for Payloads {
    /// The static RFC 3551 assignments siptrack records.
    fn default() -> Payloads {
        let mut map = [None; 128];
        map[0] = Some(Codec::Pcmu);
        map[8] = Some(Codec::Pcma);
        map[13] = Some(Codec::ComfortNoise);
        Payloads { map }
    }
}

fn codec_of(encoding: &[u8], clock_rate: u32) -> Option<Codec> {
    let is = |name: &[u8]| encoding.eq_ignore_ascii_case(name) && clock_rate == 8000;
    if is(b"PCMU") {
        Some(Codec::Pcmu)
    } else if is(b"PCMA") {
        Some(Codec::Pcma)
    } else if is(b"telephone-event") {
        Some(Codec::TelephoneEvent)
    } else if is(b"CN") {
        Some(Codec::ComfortNoise)
    } else {
        None
    }
}

/// Why a call has no recording (logged, counted and kept in the call record).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoRecording {
    #[error("codec not recorded: {0}")]
    Codec(String),
    #[error("no free media ports")]
    NoPorts,
    #[error("out of file descriptors (raise the open files limit, ulimit -n)")]
    NoDescriptors,
    #[error(
        "the media ports tried are held by other programs (give media a port range of its own)"
    )]
    PortsHeldElsewhere,
    #[error("recording file: {0}")]
    Disk(String),
    #[error("recording reached the WAV size limit")]
    TooLong,
    /// Answered, but no audio packet came either way: no file is kept.
    #[error("no media received")]
    NoMedia,
}

impl From<WavError> for NoRecording {
    fn from(e: WavError) -> NoRecording {
        match e {
            WavError::TooLong => NoRecording::TooLong,
            e => NoRecording::Disk(e.to_string()),
        }
    }
}

impl Payloads {
    /// The map for the audio streams of an offer and its answer: static
    /// types, overridden by each `a=rtpmap`.
    pub fn from_media<'a>(streams: impl IntoIterator<Item = &'a Media<'a>>) -> Payloads {
        let mut p = Payloads::default();
        for m in streams {
            for r in &m.rtpmaps {
                p.map[usize::from(r.payload_type)] = codec_of(r.encoding, r.clock_rate);
            }
        }
        p
    }

    pub fn codec(&self, payload_type: u8) -> Option<Codec> {
        self.map.get(usize::from(payload_type)).copied().flatten()
    }

    /// Whether the answered audio stream can be recorded: it must allow
    /// PCMU or PCMA. If not, the reason names what it uses instead.
    pub fn check(&self, answer: &Media) -> Result<(), NoRecording> {
        let pts: Vec<u8> = answer.payload_types().collect();
        if pts
            .iter()
            .any(|&pt| matches!(self.codec(pt), Some(Codec::Pcmu | Codec::Pcma)))
        {
            return Ok(());
        }
        let name = |pt: u8| match answer.rtpmaps.iter().find(|r| r.payload_type == pt) {
            Some(r) => String::from_utf8_lossy(r.encoding).into_owned(),
            None => format!("payload type {pt}"),
        };
        let audio: Vec<String> = pts
            .iter()
            .filter(|&&pt| self.codec(pt).is_none())
            .map(|&pt| name(pt))
            .collect();
        Err(NoRecording::Codec(if audio.is_empty() {
            "none".to_string()
        } else {
            audio.join(", ")
        }))
    }
}

/// A DTMF key press seen in one direction (RFC 4733). Kept in the call
/// record as JSON (`{"side":"caller","digit":"5","at_ms":1200,"duration_ms":160}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dtmf {
    pub side: Side,
    /// `0`–`9`, `*`, `#`, `A`–`D`; other events (flash, tones) are not listed.
    pub digit: char,
    /// Milliseconds from the recording's start to the event's first packet.
    pub at_ms: u64,
    pub duration_ms: u64,
}

/// A call record does not need more key presses than this; the list stays bounded.
pub const MAX_DTMF: usize = 256;

/// What a finished recording reports for the call record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub duration_ms: u64,
    pub dtmf: Vec<Dtmf>,
    pub caller: SideStats,
    pub callee: SideStats,
    /// Packets of payload types that are neither G.711, events nor CN.
    pub unsupported_packets: u64,
    /// The first such packet's payload type.
    pub unsupported_type: Option<u8>,
    /// Datagrams that were not RTP.
    pub malformed_packets: u64,
    /// Set when writing failed; the file then holds what came before.
    pub failed: Option<NoRecording>,
    /// Packets the recorder never got: its queue was full (the disk or the
    /// CPU fell behind). The file has silence for them.
    pub lost_packets: u64,
}

/// One call's recorder over a `Write + Seek` (a file in production).
pub struct Recorder<W: Write + Seek> {
    payloads: Payloads,
    timeline: Timeline,
    wav: WavWriter<W>,
    summary: Summary,
    /// Per side, the (SSRC, timestamp) of the event in progress.
    event: [Option<(u32, u32)>; 2],
    decoded: Vec<i16>,
}

impl<W: Write + Seek> Recorder<W> {
    /// Starts a recording: writes the placeholder header.
    pub fn new(w: W, payloads: Payloads) -> Result<Recorder<W>, NoRecording> {
        Ok(Recorder {
            payloads,
            timeline: Timeline::new(),
            wav: WavWriter::new(w)?,
            summary: Summary::default(),
            event: [None; 2],
            decoded: Vec::with_capacity(320),
        })
    }

    /// Why writing failed, once it has (the file holds what came before).
    pub fn failed(&self) -> Option<&NoRecording> {
        self.summary.failed.as_ref()
    }

    /// One relayed RTP packet from `side`, `now_ms` after the recording started.
    pub fn on_rtp(&mut self, side: Side, packet: &[u8], now_ms: u64) {
        let Ok(p) = RtpPacket::parse(packet) else {
            self.summary.malformed_packets += 1;
            return;
        };
        self.decoded.clear();
        match self.payloads.codec(p.payload_type) {
            Some(Codec::Pcmu) => g711::decode_ulaw(p.payload, &mut self.decoded),
            Some(Codec::Pcma) => g711::decode_alaw(p.payload, &mut self.decoded),
            Some(Codec::TelephoneEvent) => return self.on_event(side, &p, now_ms),
            // Comfort noise: the gap it covers stays silent.
            Some(Codec::ComfortNoise) => return,
            None => {
                self.summary.unsupported_packets += 1;
                self.summary.unsupported_type.get_or_insert(p.payload_type);
                return;
            }
        }
        // After a write error the timeline still runs (its counts go to the
        // call record) but nothing more is written.
        let failed = self.summary.failed.is_some();
        let wav = &mut self.wav;
        let mut sink = |f: &[i16]| if failed { Ok(()) } else { wav.write_frames(f) };
        if let Err(e) = self.timeline.push(
            side,
            p.ssrc,
            p.timestamp,
            &self.decoded,
            now_ms.saturating_mul(8),
            &mut sink,
        ) {
            self.summary.failed = Some(e.into());
        }
    }

    fn on_event(&mut self, side: Side, p: &RtpPacket, now_ms: u64) {
        let Ok(e) = TelephoneEvent::parse(p.payload) else {
            self.summary.malformed_packets += 1;
            return;
        };
        let Some(digit) = e.digit() else {
            return;
        };
        let key = Some((p.ssrc, p.timestamp));
        let duration_ms = u64::from(e.duration) / 8;
        if self.event[side as usize] == key {
            // A later packet (or a retransmitted end) of the same press.
            if let Some(d) = self.summary.dtmf.iter_mut().rev().find(|d| d.side == side) {
                d.duration_ms = d.duration_ms.max(duration_ms);
            }
            return;
        }
        self.event[side as usize] = key;
        if self.summary.dtmf.len() < MAX_DTMF {
            self.summary.dtmf.push(Dtmf {
                side,
                digit,
                at_ms: now_ms,
                duration_ms,
            });
        }
    }

    /// Writes what is left, finalises the header and hands back the writer
    /// (the caller fsyncs a file) with the summary. `end_ms`: when the
    /// call ended, after the recording's start: silence after the last
    /// packet is written up to it, so the file is as long as the call
    /// (trial, 2026-12-02: a call that ended in 2 s of silence had a WAV
    /// 2 s shorter than its duration). A recording that heard no audio
    /// gets none: its file is not kept.
    pub fn finish(mut self, end_ms: Option<u64>) -> (Option<W>, Summary) {
        if self.summary.failed.is_none() {
            let heard = self.timeline.stats(Side::Caller).packets
                + self.timeline.stats(Side::Callee).packets
                > 0;
            let end = end_ms
                .filter(|_| heard)
                .map_or(0, |ms| ms.saturating_mul(8));
            let wav = &mut self.wav;
            let mut sink = |f: &[i16]| wav.write_frames(f);
            if let Err(e) = self.timeline.finish_at(end, &mut sink) {
                self.summary.failed = Some(e.into());
            }
        }
        self.summary.caller = self.timeline.stats(Side::Caller);
        self.summary.callee = self.timeline.stats(Side::Callee);
        self.summary.duration_ms = self.wav.data_bytes() / 32;
        let w = match self.wav.finalise() {
            Ok(w) => Some(w),
            Err(e) => {
                self.summary.failed.get_or_insert(e.into());
                None
            }
        };
        (w, self.summary)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Cursor, SeekFrom};

    use super::*;
    use crate::media::sdp::Sdp;
    use crate::media::wav;

    fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn media(sdp: &'static [u8]) -> Sdp<'static> {
        Sdp::parse(sdp).expect("sdp")
    }

    #[test]
    fn codec_check_table() {
        let rows: [(&[u8], Result<(), NoRecording>); 6] = [
            (b"v=0\r\nm=audio 1 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n", Ok(())),
            (b"v=0\r\nm=audio 1 RTP/AVP 0\r\n", Ok(())),
            (b"v=0\r\nm=audio 1 RTP/AVP 18 8\r\n", Ok(())),
            (b"v=0\r\nm=audio 1 RTP/AVP 96\r\na=rtpmap:96 PCMU/8000\r\n", Ok(())),
            (
                b"v=0\r\nm=audio 1 RTP/AVP 18 101\r\na=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
                Err(NoRecording::Codec("G729".into())),
            ),
            (
                b"v=0\r\nm=audio 1 RTP/AVP 111 9\r\na=rtpmap:111 opus/48000/2\r\n",
                Err(NoRecording::Codec("opus, payload type 9".into())),
            ),
        ];
        for (body, want) in rows {
            let sdp = media(body);
            let p = Payloads::from_media(&sdp.media);
            assert_eq!(
                p.check(&sdp.media[0]),
                want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn audio_dtmf_and_other_codecs() {
        let offer =
            media(b"v=0\r\nm=audio 1 RTP/AVP 0 8 101 18\r\na=rtpmap:101 telephone-event/8000\r\n");
        let answer =
            media(b"v=0\r\nm=audio 1 RTP/AVP 0 96\r\na=rtpmap:96 telephone-event/8000\r\n");
        let payloads = Payloads::from_media(offer.media.iter().chain(&answer.media));
        let mut r = Recorder::new(Cursor::new(Vec::new()), payloads).expect("recorder");
        // One second of µ-law both ways (0x80 = +32124 left, 0x00 = -32124 right).
        for i in 0..50u32 {
            r.on_rtp(
                Side::Caller,
                &rtp(0, i as u16, i * 160, 1, &[0x80; 160]),
                u64::from(i) * 20,
            );
            r.on_rtp(
                Side::Callee,
                &rtp(0, i as u16, 5000 + i * 160, 2, &[0x00; 160]),
                u64::from(i) * 20,
            );
        }
        // Caller presses 1 (PT 101: start, update, end sent three times),
        // callee presses # (PT 96), then a G.729 packet, CN and garbage.
        for (d, flags) in [
            (160u16, 0x0a),
            (320, 0x0a),
            (480, 0x8a),
            (480, 0x8a),
            (480, 0x8a),
        ] {
            let [d0, d1] = d.to_be_bytes();
            r.on_rtp(
                Side::Caller,
                &rtp(101, 60, 8000, 1, &[1, flags, d0, d1]),
                1000,
            );
        }
        r.on_rtp(
            Side::Callee,
            &rtp(96, 61, 13000, 2, &[11, 0x8a, 3, 0x20]),
            1100,
        );
        r.on_rtp(Side::Caller, &rtp(18, 62, 8160, 1, &[0; 20]), 1120);
        r.on_rtp(Side::Caller, &rtp(13, 63, 8320, 1, &[40]), 1140);
        r.on_rtp(Side::Caller, &[0x80, 0], 1160);
        let (w, s) = r.finish(None);
        let bytes = w.expect("writer").into_inner();
        let pcm = wav::samples(&bytes).expect("complete wav");
        assert_eq!(pcm.len() / 2, 8000);
        assert!(pcm.chunks(2).all(|f| f == [32124, -32124]));
        assert_eq!(s.duration_ms, 1000);
        assert_eq!(
            s.dtmf,
            [
                Dtmf {
                    side: Side::Caller,
                    digit: '1',
                    at_ms: 1000,
                    duration_ms: 60
                },
                Dtmf {
                    side: Side::Callee,
                    digit: '#',
                    at_ms: 1100,
                    duration_ms: 100
                },
            ]
        );
        assert_eq!((s.unsupported_packets, s.malformed_packets), (1, 1));
        assert_eq!((s.caller.packets, s.callee.packets), (50, 50));
        assert_eq!(s.failed, None);
    }

    /// A disk that fills up after `room` bytes.
    struct Full {
        inner: Cursor<Vec<u8>>,
        room: usize,
    }
    impl Write for Full {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.inner.get_ref().len() + b.len() > self.room {
                return Err(io::Error::other("no space left on device"));
            }
            self.inner.write(b)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Seek for Full {
        fn seek(&mut self, p: SeekFrom) -> io::Result<u64> {
            self.inner.seek(p)
        }
    }

    #[test]
    fn a_full_disk_stops_the_recording_not_the_call() {
        let w = Full {
            inner: Cursor::new(Vec::new()),
            room: 44 + 4000,
        };
        let mut r = Recorder::new(w, Payloads::default()).expect("recorder");
        for i in 0..100u32 {
            r.on_rtp(
                Side::Caller,
                &rtp(8, i as u16, i * 160, 1, &[0xd5; 160]),
                u64::from(i) * 20,
            );
        }
        let (_, s) = r.finish(None);
        assert!(
            matches!(s.failed, Some(NoRecording::Disk(ref m)) if m.contains("no space")),
            "{s:?}"
        );
        assert_eq!(s.caller.packets, 100, "every packet was still taken");
    }
}
