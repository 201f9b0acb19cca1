use std::io::Cursor;

use super::*;
use crate::media::g711;
use crate::media::rtp::RtpPacket;
use crate::media::timeline::{Side, Timeline};

#[test]
fn header_bytes() {
    // A canonical 8 kHz stereo 16-bit header for 32000 bytes (one second).
    let want: [u8; 44] = [
        b'R', b'I', b'F', b'F', 0x24, 0x7d, 0, 0, b'W', b'A', b'V', b'E', b'f', b'm', b't', b' ',
        16, 0, 0, 0, 1, 0, 2, 0, 0x40, 0x1f, 0, 0, 0x00, 0x7d, 0, 0, 4, 0, 16, 0, b'd', b'a', b't',
        b'a', 0x00, 0x7d, 0, 0,
    ];
    assert_eq!(header(32000, true), want);
    let placeholder = header(32000, false);
    assert_eq!(&placeholder[4..8], &[0; 4]);
    assert_eq!(&placeholder[40..44], &[0; 4]);
}

#[test]
fn header_state_table() {
    let done = header(8, true);
    let open = header(0, false);
    let mut mono = header(8, true);
    mono[22] = 1;
    let mut riff_only = header(8, true);
    riff_only[40..44].copy_from_slice(&[0; 4]);
    // (name, header, file length, state)
    let rows: [(&str, &[u8], u64, HeaderState); 9] = [
        (
            "finalised",
            &done,
            52,
            HeaderState::Complete { data_bytes: 8 },
        ),
        (
            "finalised, empty call",
            &header(0, true),
            44,
            HeaderState::Complete { data_bytes: 0 },
        ),
        (
            "placeholder, no audio yet",
            &open,
            44,
            HeaderState::Partial { data_bytes: 0 },
        ),
        (
            "placeholder with audio",
            &open,
            44 + 4000,
            HeaderState::Partial { data_bytes: 4000 },
        ),
        (
            "torn last frame",
            &open,
            44 + 4003,
            HeaderState::Partial { data_bytes: 4000 },
        ),
        (
            "crash between the two size writes",
            &riff_only,
            52,
            HeaderState::Partial { data_bytes: 8 },
        ),
        (
            "finalised but longer on disk",
            &done,
            60,
            HeaderState::Partial { data_bytes: 16 },
        ),
        ("mono: not ours", &mono, 52, HeaderState::NotOurs),
        ("too short", &done[..20], 20, HeaderState::NotOurs),
    ];
    for (name, h, len, want) in rows {
        assert_eq!(header_state(h, len), want, "{name}");
    }
    assert_eq!(
        header_state(b"ID3\x03 not a wav at all, but long enough....", 100),
        HeaderState::NotOurs
    );
}

#[test]
fn writer_streams_and_finalises() {
    let mut w = WavWriter::new(Cursor::new(Vec::new())).expect("writer");
    w.write_frames(&[1, -1, 2, -2]).expect("frames");
    // An odd trailing sample is not half a frame on disk.
    w.write_frames(&[3, -3, 9]).expect("frames");
    let bytes = w.finalise().expect("finalise").into_inner();
    assert_eq!(bytes.len(), 44 + 12);
    assert_eq!(
        header_state(&bytes, bytes.len() as u64),
        HeaderState::Complete { data_bytes: 12 }
    );
    assert_eq!(samples(&bytes), Some(vec![1, -1, 2, -2, 3, -3]));
}

#[test]
fn partial_files_are_recognised_and_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("call.wav");
    let mut w = create(&path).expect("create");
    w.write_frames(&[5; 2000]).expect("frames");
    // The process dies here: no finalise. (Dropping the BufWriter flushes
    // the audio; a kill -9 could lose its tail, which is just less audio.)
    drop(w);
    // A torn last frame, as a write cut short would leave.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(&[7, 7, 7]))
        .expect("append");
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(
        samples(&bytes),
        None,
        "an unfinished file never passes as complete"
    );
    assert_eq!(
        finalise_partial(&path).expect("repair"),
        Repair::Repaired { data_bytes: 4000 }
    );
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(samples(&bytes), Some(vec![5; 2000]));
    assert_eq!(
        finalise_partial(&path).expect("again"),
        Repair::AlreadyComplete
    );

    let other = dir.path().join("notes.txt");
    std::fs::write(
        &other,
        b"not a recording, and long enough to have a header....",
    )
    .expect("write");
    assert!(matches!(finalise_partial(&other), Err(WavError::NotOurs)));
    assert_eq!(
        std::fs::read(&other).expect("read"),
        b"not a recording, and long enough to have a header...."
    );

    let done = dir.path().join("done.wav");
    let mut w = create(&done).expect("create");
    w.write_frames(&[1; 16]).expect("frames");
    finish_file(w).expect("finish");
    assert_eq!(
        finalise_partial(&done).expect("complete"),
        Repair::AlreadyComplete
    );
}

/// Power of `freq` in `x` (Goertzel).
fn goertzel(x: &[f64], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(SAMPLE_RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The strongest frequency between 100 and 3500 Hz, in 20 Hz steps.
fn dominant(x: &[f64]) -> f64 {
    (5..=175)
        .map(|k| f64::from(k) * 20.0)
        .max_by(|a, b| goertzel(x, *a).total_cmp(&goertzel(x, *b)))
        .unwrap_or(0.0)
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// One side's 20 ms packets: (arrival in samples, packet bytes), with every
/// 17th lost and every 10th pair swapped on the wire.
fn stream(freq: f64, pt: u8, ssrc: u32, ts0: u32, start: u64, packets: u32) -> Vec<(u64, Vec<u8>)> {
    let encode = if pt == 0 {
        g711::encode_ulaw
    } else {
        g711::encode_alaw
    };
    let mut out: Vec<(u64, Vec<u8>)> = (0..packets)
        .filter(|i| i % 17 != 16)
        .map(|i| {
            let payload: Vec<u8> = (0..160)
                .map(|n| {
                    let t = f64::from(i * 160 + n) / f64::from(SAMPLE_RATE);
                    encode((12000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16)
                })
                .collect();
            // Arrival: on time plus up to 3 ms of jitter.
            let arrival = start + u64::from(i) * 160 + u64::from(i % 4) * 8;
            (
                arrival,
                rtp(pt, i as u16, ts0.wrapping_add(i * 160), ssrc, &payload),
            )
        })
        .collect();
    for k in (0..out.len().saturating_sub(1)).step_by(10) {
        let (a, b) = (out[k].0, out[k + 1].0);
        out.swap(k, k + 1);
        out[k].0 = a;
        out[k + 1].0 = b;
    }
    out
}

#[test]
fn two_tones_through_rtp_g711_timeline_and_wav() {
    // 3 s of 440 Hz µ-law from the caller, first packet 20 ms after the
    // recording starts; the callee's 100 ms later with 1000 Hz A-law, its
    // timestamps crossing the 32-bit wrap. Each side's first two packets
    // arrive swapped, so its base is the second packet.
    let caller = stream(440.0, 0, 0x1111, 12345, 160, 150);
    let callee = stream(1000.0, 8, 0x2222, u32::MAX - 4000, 960, 150);
    let mut packets: Vec<(u64, Side, Vec<u8>)> = caller
        .into_iter()
        .map(|(a, p)| (a, Side::Caller, p))
        .chain(callee.into_iter().map(|(a, p)| (a, Side::Callee, p)))
        .collect();
    packets.sort_by_key(|p| p.0);

    let mut wav = WavWriter::new(Cursor::new(Vec::new())).expect("writer");
    let mut timeline = Timeline::new();
    let mut decoded = Vec::with_capacity(160);
    let mut sink = |f: &[i16]| wav.write_frames(f);
    for (arrival, side, bytes) in &packets {
        let p = RtpPacket::parse(bytes).expect("rtp");
        decoded.clear();
        match p.payload_type {
            0 => g711::decode_ulaw(p.payload, &mut decoded),
            _ => g711::decode_alaw(p.payload, &mut decoded),
        }
        timeline
            .push(*side, p.ssrc, p.timestamp, &decoded, *arrival, &mut sink)
            .expect("write");
        assert!(timeline.buffered() <= 2 * 1760, "bounded memory");
    }
    timeline.finish(&mut sink).expect("finish");
    let bytes = wav.finalise().expect("finalise").into_inner();

    let pcm = samples(&bytes).expect("complete wav");
    let frames = pcm.len() / 2;
    // The callee's last packet ends 100 ms + 3 s in.
    assert_eq!(frames, 800 + 150 * 160);
    for side in [Side::Caller, Side::Callee] {
        assert_eq!(
            timeline.stats(side).late_samples,
            0,
            "{side:?}: reordering absorbed"
        );
        assert_eq!(timeline.stats(side).rebases, 0, "{side:?}: no rebase");
    }
    let left: Vec<f64> = pcm.iter().step_by(2).map(|&s| f64::from(s)).collect();
    let right: Vec<f64> = pcm
        .iter()
        .skip(1)
        .step_by(2)
        .map(|&s| f64::from(s))
        .collect();
    assert_eq!(dominant(&left), 440.0);
    assert_eq!(dominant(&right), 1000.0);
    // No crosstalk: each tone is far weaker on the other channel.
    assert!(goertzel(&left, 1000.0) * 1000.0 < goertzel(&right, 1000.0));
    assert!(goertzel(&right, 440.0) * 1000.0 < goertzel(&left, 440.0));
    // The callee channel is silent before it answered, lost packets are silence.
    assert!(right[..800].iter().all(|&s| s == 0.0));
    assert!(
        left[16 * 160..17 * 160].iter().all(|&s| s == 0.0),
        "lost packet 16"
    );
}
