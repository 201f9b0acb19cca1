//! Recording end to end (issue 13): SIPp signals, the test's own RTP endpoints
//! (tests/common/media.rs) stream a 440 Hz tone from the caller and a
//! 1000 Hz tone from the callee through siptrack's relay, and the WAV
//! siptrack writes is read back: caller left, callee right (Goertzel),
//! as long as the call. Then the faults: a third party's packets, a
//! silent call, too few relay ports, an unwritable recordings directory,
//! a crash mid-recording.
//!
//! The `harness_*` tests check the helpers themselves, and
//! `scenarios_carry_media_without_siptrack` runs every media scenario
//! caller → callee directly, so a failure further down is siptrack's.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::checks::get;
use common::media::*;
use common::{free_port, Dir, Sipp, SippRun, Siptrack};

const TOKEN: &str = "media-token-7d31";
const CALLER_HZ: f64 = 440.0;
const CALLEE_HZ: f64 = 1000.0;
const AMPLITUDE: f64 = 8000.0;

/// /metrics series of siptrack's relay and recorder.
const DROPPED: &str = "siptrack_media_dropped_packets_total{reason=\"other_source\"}";
const NO_PORTS: &str = "siptrack_unrecorded_calls_total{reason=\"no_ports\"}";
const NO_DISK: &str = "siptrack_unrecorded_calls_total{reason=\"disk\"}";
const WRITE_ERRORS: &str = "siptrack_recording_write_errors_total";

// ---------------------------------------------------------------------------
// harness self-tests
// ---------------------------------------------------------------------------

#[test]
fn harness_g711_encoders_match_g711_and_siptrack_decoders() {
    // Fixed points of G.711: silence, the clip level, the sign.
    assert_eq!(ulaw(0), 0xFF);
    assert_eq!(ulaw(-1), 0x7F);
    assert_eq!(ulaw(32767), 0x80);
    assert_eq!(ulaw(-32768), 0x00);
    assert_eq!(alaw(0), 0xD5);
    assert_eq!(alaw(-1), 0x55);
    assert_eq!(alaw(32767), 0xAA);
    assert_eq!(alaw(-32768), 0x2A);
    for s in (-32768..=32767).step_by(7) {
        let s = s as i16;
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let back = codec.decode(codec.encode(s));
            // Quantisation error is at most half a step: 1/16 of the value
            // plus the smallest step.
            let err = (i32::from(back) - i32::from(s)).abs();
            assert!(
                err <= i32::from(s).abs() / 16 + 40,
                "{codec:?} {s} -> {back}"
            );
            // siptrack's decoders read our codes as we do.
            let mut theirs = Vec::new();
            match codec {
                Codec::Pcmu => siptrack::media::g711::decode_ulaw(&[codec.encode(s)], &mut theirs),
                Codec::Pcma => siptrack::media::g711::decode_alaw(&[codec.encode(s)], &mut theirs),
            }
            assert_eq!(theirs, vec![back], "{codec:?} {s}");
        }
    }
}

#[test]
fn harness_goertzel_finds_the_tone_its_length_and_its_gaps() {
    let tone = Tone::new(CALLER_HZ, Codec::Pcmu);
    let mut x: Vec<i16> = tone
        .payload(0, 8000)
        .into_iter()
        .map(ulaw_to_linear)
        .collect();
    x.extend(std::iter::repeat_n(0, 2400)); // 300 ms gap
    x.extend(tone.payload(10400, 4000).into_iter().map(ulaw_to_linear));
    let r = report(&x, AMPLITUDE);
    assert!(
        (r.dominant_hz.expect("a tone") - CALLER_HZ).abs() <= 1.0,
        "{r:?}"
    );
    assert!((r.audible_s - 1.5).abs() < 0.01, "{r:?}");
    assert!((r.longest_gap_s - 0.3).abs() < 0.01, "{r:?}");
    let (a, b) = r.span_s.expect("span");
    assert!(a < 0.01 && (b - 1.8).abs() < 0.01, "{r:?}");
    assert_eq!(dominant(&[0; 800]), None);
    let hi: Vec<i16> = Tone::new(CALLEE_HZ, Codec::Pcma)
        .payload(0, 1600)
        .into_iter()
        .map(alaw_to_linear)
        .collect();
    assert!((dominant(&hi).expect("tone") - CALLEE_HZ).abs() <= 1.0);
    // A quiet hiss is not sound.
    let hiss: Vec<i16> = (0..8000).map(|i| ((i * 7919) % 200 - 100) as i16).collect();
    assert_eq!(audible_seconds(&hiss, AMPLITUDE), 0.0);
}

fn stereo_wav(frames: &[(i16, i16)], finished: bool) -> Vec<u8> {
    let data = frames.len() as u32 * 4;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(if finished { data + 36 } else { 0 }).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&32000u32.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(if finished { data } else { 0 }).to_le_bytes());
    for (l, r) in frames {
        b.extend_from_slice(&l.to_le_bytes());
        b.extend_from_slice(&r.to_le_bytes());
    }
    b
}

#[test]
fn harness_wav_reader_reads_channels_and_tells_unfinished_files() {
    let frames: Vec<(i16, i16)> = (0..800).map(|i| (i as i16, -(i as i16))).collect();
    let w = read_wav(&stereo_wav(&frames, true)).expect("wav");
    assert_eq!(
        (w.channels, w.rate, w.bits, w.complete),
        (2, 8000, 16, true)
    );
    assert_eq!(w.channel(0)[799], 799);
    assert_eq!(w.channel(1)[799], -799);
    assert!((w.seconds() - 0.1).abs() < 1e-9);
    // Sizes left at 0 (never finalised): read to the end, not complete.
    let w = read_wav(&stereo_wav(&frames, false)).expect("wav");
    assert_eq!(
        (w.complete, w.lies(), w.channel(0).len()),
        (false, false, 800)
    );
    // Sizes that claim more than the file holds: not complete either.
    let mut cut = stereo_wav(&frames, true);
    cut.truncate(cut.len() - 6);
    let w = read_wav(&cut).expect("wav");
    assert_eq!(
        (w.complete, w.lies(), w.channel(0).len()),
        (false, true, 798)
    );
    assert!(read_wav(b"RIFF\0\0\0\0WAVEjunk").is_err());
    // A file siptrack's writer finalised reads as complete.
    let mut cur = std::io::Cursor::new(Vec::new());
    let mut ww = siptrack::media::wav::WavWriter::new(&mut cur).expect("writer");
    ww.write_frames(&[1, 2, 3, 4]).expect("frames");
    ww.finalise().expect("finalise");
    let w = read_wav(cur.get_ref()).expect("wav");
    assert_eq!((w.complete, w.channel(1).to_vec()), (true, vec![2, 4]));
}

#[test]
fn harness_sdp_audio_takes_c_and_m_from_sip_messages() {
    let msg = "SIP/2.0 200 OK\r\nContent-Type: application/sdp\r\n\r\nv=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30002 RTP/AVP 8 101\r\na=rtcp:30003\r\na=sendonly\r\n";
    let a = sdp_audio(msg).expect("audio");
    assert_eq!(a.addr(), "127.0.0.1:30002".parse::<SocketAddr>().unwrap());
    assert_eq!(
        (a.payload_types.clone(), a.direction.as_str(), a.rtcp),
        (vec![8, 101], "sendonly", Some(30003))
    );
    // A media-level c= wins; a video stream after audio is ignored.
    let body = "v=0\nc=IN IP4 10.1.1.1\nt=0 0\nm=audio 4000 RTP/AVP 0\nc=IN IP4 0.0.0.0\nm=video 5000 RTP/AVP 96\nc=IN IP4 10.9.9.9\n";
    let a = sdp_audio(body).expect("audio");
    assert_eq!((a.ip.to_string(), a.port), ("0.0.0.0".to_string(), 4000));
    assert_eq!(
        sdp_audio("INVITE sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n"),
        None
    );
    assert_eq!(
        Event::parse("rtp 24000 127.0.0.1 30000 recvonly"),
        Some(Event::Far {
            own_port: 24000,
            ip: "127.0.0.1".parse().unwrap(),
            port: 30000,
            direction: "recvonly".into()
        })
    );
    assert_eq!(
        Event::parse("bye 24000"),
        Some(Event::Bye { own_port: 24000 })
    );
    assert!(!sends_toward("127.0.0.1".parse().unwrap(), "sendonly"));
    assert!(!sends_toward("0.0.0.0".parse().unwrap(), "sendrecv"));
    assert!(sends_toward("127.0.0.1".parse().unwrap(), "recvonly"));
}

#[test]
fn harness_rtp_endpoint_streams_pauses_and_counts_by_source() {
    let a = RtpEndpoint::bind(
        StreamSpec::new(Tone::new(CALLER_HZ, Codec::Pcmu)).loss(Loss::EveryNth(20)),
    );
    let b = RtpEndpoint::bind(StreamSpec::new(Tone::new(CALLEE_HZ, Codec::Pcma)));
    assert_eq!(a.port() % 2, 0, "RTP on an even port");
    a.send_to(b.local());
    std::thread::sleep(Duration::from_millis(1000));
    a.pause();
    std::thread::sleep(Duration::from_millis(300));
    a.send_to(b.local());
    a.press('#', 5);
    std::thread::sleep(Duration::from_millis(500));
    a.stop();
    std::thread::sleep(Duration::from_millis(100));
    let s = a.sent();
    // 1.8 s = 90 slots: ~15 paused, 5 a key press, 1 in 20 of the rest skipped.
    assert!(
        (85..=92).contains(&(s.packets + s.skipped + s.paused + s.dtmf_slots)),
        "{s:?}"
    );
    assert_eq!(s.dtmf_slots, 5, "{s:?}");
    assert!((12..=17).contains(&s.paused), "{s:?}");
    // One slot in 20 is skipped; some of those fell in the pause.
    let meant = s.packets + s.skipped;
    assert!(s.skipped.abs_diff(meant / 20) <= 1, "{s:?}");
    let got = b.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let ((from, ssrc), flow) = got.iter().next().unwrap();
    assert_eq!((*from, *ssrc), (a.local(), a.spec().ssrc));
    // The press: 4 event packets, then the end packet three times.
    assert_eq!(flow.packets, s.packets + 4 + 3);
    assert_eq!(
        flow.payload_types.iter().copied().collect::<Vec<_>>(),
        vec![0, TELEPHONE_EVENT]
    );
    assert_eq!(event_code('#'), Some(11));
    assert_eq!(telephone_event(11, true, 800), [11, 0x8A, 0x03, 0x20]);
    // An intruder elsewhere on loopback is told apart by its source.
    let c = RtpEndpoint::bind_ip(
        Ipv4Addr::new(127, 0, 0, 3),
        StreamSpec::new(Tone::new(300.0, Codec::Pcmu)),
    );
    c.burst(b.local(), 3);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(b.received_ssrc(c.spec().ssrc), 3);
    assert!(b.sources().contains(&c.local()));
}

// ---------------------------------------------------------------------------
// one media call (or N), through siptrack or straight
// ---------------------------------------------------------------------------

/// Which scenarios, codec, loss, talk time and how many calls.
#[derive(Clone, Debug)]
struct Plan {
    uac: &'static str,
    uas: &'static str,
    codec: Codec,
    caller_loss: Loss,
    callee_loss: Loss,
    talk_ms: u64,
    calls: u32,
    /// SIPp's bound on the whole run (None: three talk times and 20 s).
    limit: Option<Duration>,
}

impl Plan {
    fn new(uac: &'static str, uas: &'static str) -> Plan {
        Plan {
            uac,
            uas,
            codec: Codec::Pcmu,
            caller_loss: Loss::None,
            callee_loss: Loss::None,
            talk_ms: 3000,
            calls: 1,
            limit: None,
        }
    }
}

/// What a run of the plan left: both SIPps, the endpoints and the events.
struct Done {
    uac: SippRun,
    uas: SippRun,
    callers: Vec<Arc<RtpEndpoint>>,
    callees: Vec<Arc<RtpEndpoint>>,
    events: Vec<(Instant, Event)>,
}

impl Done {
    fn context(&self) -> String {
        format!(
            "{}\n{}\nevents: {:?}",
            self.uac.summary(),
            self.uas.summary(),
            self.events
        )
    }
}

/// Runs `plan` from a SIPp caller at `target` (siptrack, or the UAS
/// itself) to a SIPp callee on `uas_port`, the endpoints streaming as the
/// scenarios log.
fn run_plan(plan: &Plan, target: SocketAddr, uas_port: u16) -> Done {
    run_plan_with(plan, target, uas_port, |_, _, _| {})
}

/// As [`run_plan`], calling `during` once both SIPps are running with the
/// conductor (its events say how far the calls are), the callers' and the
/// callees' endpoints.
fn run_plan_with(
    plan: &Plan,
    target: SocketAddr,
    uas_port: u16,
    during: impl FnOnce(&Conductor, &[Arc<RtpEndpoint>], &[Arc<RtpEndpoint>]),
) -> Done {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = plan.calls as usize;
    let callers: Vec<Arc<RtpEndpoint>> = (0..n)
        .map(|_| {
            Arc::new(RtpEndpoint::bind(
                StreamSpec::new(Tone::new(CALLER_HZ, plan.codec)).loss(plan.caller_loss),
            ))
        })
        .collect();
    let callees: Vec<Arc<RtpEndpoint>> = (0..n)
        .map(|_| {
            Arc::new(RtpEndpoint::bind(
                StreamSpec::new(Tone::new(CALLEE_HZ, plan.codec)).loss(plan.callee_loss),
            ))
        })
        .collect();
    let ports = |v: &[Arc<RtpEndpoint>]| v.iter().map(|e| e.port()).collect::<Vec<_>>();
    let uac_inf = inf_file(dir.path(), "uac.csv", &ports(&callers));
    let uas_inf = inf_file(dir.path(), "uas.csv", &ports(&callees));
    let uac_log = dir.path().join("uac_media.log");
    let uas_log = dir.path().join("uas_media.log");
    let conductor = Conductor::start(
        vec![uac_log.clone(), uas_log.clone()],
        callers.iter().chain(&callees).cloned().collect(),
    );
    let pt = plan.codec.payload_type().to_string();
    let media_args = |s: Sipp, inf: &Path, log: &Path| {
        s.arg("-inf")
            .arg(inf.to_string_lossy())
            .arg("-key")
            .arg("pt")
            .arg(pt.clone())
            .arg("-key")
            .arg("codec")
            .arg(plan.codec.name())
            .arg("-trace_logs")
            .arg("-log_file")
            .arg(log.to_string_lossy())
    };
    let limit = plan
        .limit
        .unwrap_or(Duration::from_millis(plan.talk_ms * 3 + 20_000));
    let uas = media_args(Sipp::uas(plan.uas), &uas_inf, &uas_log)
        .port(uas_port)
        .calls(plan.calls)
        .pause_ms(1000)
        .time_limit(limit + Duration::from_secs(10))
        .spawn();
    let uac = media_args(Sipp::uac(plan.uac, target), &uac_inf, &uac_log)
        .calls(plan.calls)
        .rate(50)
        .arg("-l")
        .arg(plan.calls.to_string())
        .pause_ms(plan.talk_ms)
        .time_limit(limit)
        .spawn();
    during(&conductor, &callers, &callees);
    let uac = uac.wait();
    let uas = uas.wait_at_most(Duration::from_secs(10));
    // The last packets in flight.
    std::thread::sleep(Duration::from_millis(100));
    for e in callers.iter().chain(&callees) {
        e.stop();
    }
    let events = conductor.events();
    drop(conductor);
    Done {
        uac,
        uas,
        callers,
        callees,
        events,
    }
}

/// Seconds from the caller's first received response `status` (CSeq
/// INVITE) to its BYE, from SIPp's own message log.
fn uac_time_from(uac: &SippRun, status: u16) -> f64 {
    let t0 = uac
        .messages
        .iter()
        .find(|m| {
            m.dir == Dir::Received
                && m.is_response(status)
                && m.cseq_method().as_deref() == Some("INVITE")
        })
        .map(|m| m.time)
        .unwrap_or_else(|| panic!("no {status} at the caller\n{}", uac.summary()));
    let t1 = uac
        .messages
        .iter()
        .find(|m| m.dir == Dir::Sent && m.is_request("BYE"))
        .map(|m| m.time)
        .unwrap_or_else(|| panic!("no BYE from the caller\n{}", uac.summary()));
    t1 - t0
}

#[test]
fn scenarios_carry_media_without_siptrack() {
    for (uac, uas) in [
        ("uac_record.xml", "uas_record.xml"),
        ("uac_record.xml", "uas_early.xml"),
        ("uac_late.xml", "uas_late.xml"),
        ("uac_hold.xml", "uas_hold.xml"),
    ] {
        let uas_port = free_port();
        let mut plan = Plan::new(uac, uas);
        plan.talk_ms = 1000;
        plan.codec = Codec::Pcma;
        let d = run_plan(
            &plan,
            SocketAddr::from(([127, 0, 0, 1], uas_port)),
            uas_port,
        );
        let ctx = d.context();
        assert_eq!(
            (d.uac.successful(), d.uac.failed()),
            (1, 0),
            "{uac}/{uas}\n{ctx}"
        );
        assert_eq!(
            (d.uas.successful(), d.uas.failed()),
            (1, 0),
            "{uac}/{uas}\n{ctx}"
        );
        let (caller, callee) = (&d.callers[0], &d.callees[0]);
        let (a, b) = (caller.sent(), callee.sent());
        assert!(
            a.packets > 40 && b.packets > 20,
            "{uac}/{uas}: {a:?} {b:?}\n{ctx}"
        );
        // Straight from one endpoint to the other, nothing lost on loopback.
        assert_eq!(
            callee.received_ssrc(caller.spec().ssrc),
            a.packets,
            "{uac}/{uas}"
        );
        assert_eq!(
            caller.received_ssrc(callee.spec().ssrc),
            b.packets,
            "{uac}/{uas}"
        );
        assert_eq!(callee.sources(), [caller.local()].into(), "{uac}/{uas}");
        if uas == "uas_hold.xml" {
            // Held for one -d: about 50 slots not sent by the callee.
            assert!((35..=65).contains(&b.paused), "{b:?}\n{ctx}");
            assert_eq!(a.paused, 0, "the caller keeps sending on hold: {a:?}");
        }
        if uas == "uas_early.xml" {
            // Both stream from the 183, 1.5 s before the answer.
            assert!(a.packets >= 110 && b.packets >= 110, "{a:?} {b:?}\n{ctx}");
        }
    }
}

// ---------------------------------------------------------------------------
// siptrack
// ---------------------------------------------------------------------------

/// A relay port range of `pairs` RTP/RTCP pairs, even start, free now.
fn relay_range(pairs: u16) -> (u16, u16) {
    loop {
        let start = common::free_ports(pairs * 2);
        if start.is_multiple_of(2) {
            return (start, start + pairs * 2 - 1);
        }
    }
}

fn config(uas_port: u16, ports: (u16, u16), recordings: &Path, media_extra: &str) -> String {
    format!(
        r#"[sip]
listen = ["udp:127.0.0.1:{{SIP_PORT}}"]
trusted_sources = ["127.0.0.0/8"]
route_secret = "e2e-media"

[sip.timers]
t1_ms = 100
t2_ms = 400

[tracking]
default_destination = "sip:pbx@127.0.0.1:{uas_port}"
record_calls = true

[media]
port_min = {}
port_max = {}
advertised_ip = "127.0.0.1"
recordings_dir = "{}"
{media_extra}

[http]
listen = "127.0.0.1:{{HTTP_PORT}}"
token = "{TOKEN}"

[storage]
url = "sqlite:siptrack.db"
"#,
        ports.0,
        ports.1,
        recordings.display()
    )
}

/// siptrack with recording on, its relay on a free port range, recordings
/// under a fresh directory.
struct Rig {
    p: Siptrack,
    uas_port: u16,
    ports: (u16, u16),
    recordings: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start(pairs: u16, media_extra: &str) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let recordings = dir.path().join("recordings");
        Self::start_in(dir, recordings, pairs, media_extra)
    }

    /// With the recordings somewhere else (a mount the test holds).
    fn start_recording_to(recordings: &Path, pairs: u16) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, recordings.to_path_buf(), pairs, "")
    }

    fn start_in(dir: tempfile::TempDir, recordings: PathBuf, pairs: u16, media_extra: &str) -> Rig {
        let uas_port = free_port();
        let ports = relay_range(pairs);
        let p = Siptrack::start(&config(uas_port, ports, &recordings, media_extra));
        Rig {
            p,
            uas_port,
            ports,
            recordings,
            _dir: dir,
        }
    }

    fn run(&self, plan: &Plan) -> Done {
        run_plan(plan, self.p.sip_addr(), self.uas_port)
    }

    /// The recordings once `n` are there and finished (at most 10 s).
    fn recordings(&self, n: usize) -> Vec<(PathBuf, Wav)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let files = wav_files(&self.recordings);
            let read: Vec<(PathBuf, Result<Wav, String>)> = files
                .iter()
                .map(|f| (f.clone(), read_wav_file(f)))
                .collect();
            let complete = read
                .iter()
                .filter(|(_, w)| w.as_ref().is_ok_and(|w| w.complete))
                .count();
            if (files.len() >= n && complete >= n) || Instant::now() > deadline {
                assert_eq!(
                    (files.len(), complete),
                    (n, n),
                    "recordings under {} (found, complete): {read:?}\n{}",
                    self.recordings.display(),
                    self.p.log()
                );
                return read
                    .into_iter()
                    .map(|(f, w)| (f, w.expect("complete")))
                    .collect();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn metrics(&self) -> String {
        let (status, text) = get(self.p.api(), "/metrics", None);
        assert_eq!(status, 200, "{text}");
        text
    }

    /// A series of /metrics (see [`metric_sum`]).
    fn metric(&self, name: &str) -> f64 {
        metric_sum(&self.metrics(), name)
    }

    /// The series once it reaches `min` (/metrics is refreshed every
    /// second), at most 5 s; then whatever it is.
    fn metric_reaching(&self, name: &str, min: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.metric(name);
            if v >= min || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The value of one series (`name{labels}` as written), or the sum of
/// every series of a bare name; 0 when absent.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let wanted = if name.contains('{') {
                key == name
            } else {
                key.split('{').next() == Some(name)
            };
            wanted.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// The checks every recorded call passes: one complete stereo 8 kHz WAV,
/// the caller's tone alone on the left and the callee's alone on the
/// right, the WAV as long as `expected_s` and each tone audible as long
/// as its side sent it, within 100 ms.
fn check_recording(d: &Done, wav: &Wav, expected_s: f64) {
    let ctx = d.context();
    assert_eq!((wav.channels, wav.rate, wav.bits), (2, 8000, 16), "{ctx}");
    let (left, right) = (wav.channel(0), wav.channel(1));
    let (l, r) = (report(left, AMPLITUDE), report(right, AMPLITUDE));
    let near = |f: Option<f64>, want: f64| f.is_some_and(|f| (f - want).abs() <= 5.0);
    assert!(near(l.dominant_hz, CALLER_HZ), "left (caller) {l:?}\n{ctx}");
    assert!(
        near(r.dominant_hz, CALLEE_HZ),
        "right (callee) {r:?}\n{ctx}"
    );
    // Each side alone on its channel: the other tone 40 dB down at least.
    assert!(
        goertzel(left, CALLEE_HZ) * 1e4 < goertzel(left, CALLER_HZ),
        "callee heard on the left\n{ctx}"
    );
    assert!(
        goertzel(right, CALLER_HZ) * 1e4 < goertzel(right, CALLEE_HZ),
        "caller heard on the right\n{ctx}"
    );
    assert!(
        (wav.seconds() - expected_s).abs() <= 0.1,
        "WAV {:.3} s, call {expected_s:.3} s\n{ctx}",
        wav.seconds()
    );
    let (a, b) = (d.callers[0].sent(), d.callees[0].sent());
    let sent = |s: &Sent| s.audio().as_secs_f64();
    assert!(
        (l.audible_s - sent(&a)).abs() <= 0.1,
        "caller sent {:.3} s of tone, the left channel has {:.3} s\n{l:?}\n{ctx}",
        sent(&a),
        l.audible_s
    );
    assert!(
        (r.audible_s - sent(&b)).abs() <= 0.1,
        "callee sent {:.3} s of tone, the right channel has {:.3} s\n{r:?}\n{ctx}",
        sent(&b),
        r.audible_s
    );
}

/// The relay carried the media both ways: every packet each side sent
/// reached the other (but the last two, which may meet a call already
/// hung up), from one address, siptrack's, never from the other phone.
fn check_relayed(d: &Done, rig: &Rig) {
    let ctx = d.context();
    for (from, to) in [
        (&d.callers[0], &d.callees[0]),
        (&d.callees[0], &d.callers[0]),
    ] {
        let sent = from.sent().packets as usize;
        let missing = to.missing_from(from);
        assert!(
            sent > 0 && missing.iter().all(|&i| i + 2 >= sent),
            "{} sent {sent} packets, {} is missing #{missing:?}\n{ctx}",
            from.port(),
            to.port(),
        );
        let sources = to.sources();
        assert_eq!(sources.len(), 1, "{sources:?}\n{ctx}");
        let src = sources.iter().next().unwrap();
        assert!(
            (rig.ports.0..=rig.ports.1).contains(&src.port()) && src.port() != from.port(),
            "media reached {} from {src}, not from siptrack's ports {:?}\n{ctx}",
            to.port(),
            rig.ports
        );
    }
    // The SDP each side got names siptrack's relay, not the other phone.
    let invite = d
        .uas
        .messages
        .iter()
        .find(|m| m.dir == Dir::Received && m.is_request("INVITE"))
        .expect("INVITE at the UAS");
    if let Some(offer) = sdp_audio(&invite.text) {
        assert!(
            (rig.ports.0..=rig.ports.1).contains(&offer.port),
            "the callee was offered {offer:?}\n{ctx}"
        );
    }
}

/// A call record's recording: (state, reason) as the calls API shows it
/// (`recording`: recorded, partial, not_recorded; `recording_reason`).
fn recording_of(call: &serde_json::Value) -> (String, String) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    (s(&call["recording"]), s(&call["recording_reason"]))
}

fn one_recorded_call(plan: Plan) -> (Rig, Done, Wav) {
    let rig = Rig::start(8, "");
    let d = rig.run(&plan);
    let ctx = d.context();
    assert_eq!((d.uac.successful(), d.uac.failed()), (1, 0), "{ctx}");
    assert_eq!((d.uas.successful(), d.uas.failed()), (1, 0), "{ctx}");
    let mut recs = rig.recordings(1);
    let (_, wav) = recs.pop().expect("one recording");
    (rig, d, wav)
}

/// The calls API says the call was recorded.
fn check_call_record_says_recorded(rig: &Rig) {
    let calls = rig.p.wait_for("calls", 1, TOKEN);
    assert_eq!(recording_of(&calls[0]).0, "recorded", "{calls:#?}");
}

#[test]
fn recorded_call_pcmu_caller_left_callee_right() {
    let (rig, d, wav) = one_recorded_call(Plan::new("uac_record.xml", "uas_record.xml"));
    check_relayed(&d, &rig);
    check_recording(&d, &wav, uac_time_from(&d.uac, 200));
    check_call_record_says_recorded(&rig);
}

#[test]
fn recorded_call_pcma_caller_left_callee_right() {
    let mut plan = Plan::new("uac_record.xml", "uas_record.xml");
    plan.codec = Codec::Pcma;
    let (rig, d, wav) = one_recorded_call(plan);
    check_relayed(&d, &rig);
    check_recording(&d, &wav, uac_time_from(&d.uac, 200));
    check_call_record_says_recorded(&rig);
}

#[test]
fn recorded_call_with_5_percent_loss_each_way() {
    let mut plan = Plan::new("uac_record.xml", "uas_record.xml");
    plan.caller_loss = Loss::EveryNth(20);
    plan.callee_loss = Loss::EveryNth(20);
    let (rig, d, wav) = one_recorded_call(plan);
    check_relayed(&d, &rig);
    assert!(
        d.callers[0].sent().skipped >= 7,
        "{:?}",
        d.callers[0].sent()
    );
    check_recording(&d, &wav, uac_time_from(&d.uac, 200));
    // Loss is silence in place, not a shorter recording: 20 ms holes.
    let gap = longest_gap(wav.channel(0), AMPLITUDE);
    assert!(
        (0.015..=0.03).contains(&gap),
        "longest hole on the left {gap} s"
    );
    check_call_record_says_recorded(&rig);
}

#[test]
fn recorded_call_with_hold_and_resume() {
    let mut plan = Plan::new("uac_hold.xml", "uas_hold.xml");
    plan.talk_ms = 1500;
    let (rig, d, wav) = one_recorded_call(plan);
    check_relayed(&d, &rig);
    let callee = d.callees[0].sent();
    assert!(callee.paused >= 60, "the callee was held: {callee:?}");
    check_recording(&d, &wav, uac_time_from(&d.uac, 200));
    // The hold is a hole of about one talk time on the right, none on the left.
    let gap = longest_gap(wav.channel(1), AMPLITUDE);
    assert!(
        (1.3..=1.8).contains(&gap),
        "hold on the right: {gap} s\n{}",
        d.context()
    );
    assert!(longest_gap(wav.channel(0), AMPLITUDE) < 0.1);
    check_call_record_says_recorded(&rig);
}

#[test]
fn recorded_call_with_early_media() {
    let (rig, d, wav) = one_recorded_call(Plan::new("uac_record.xml", "uas_early.xml"));
    check_relayed(&d, &rig);
    // The recording starts with the early media: 183 → BYE.
    check_recording(&d, &wav, uac_time_from(&d.uac, 183));
    let (start, _) = audible_span(wav.channel(1), AMPLITUDE).expect("callee audible");
    assert!(
        start < 0.1,
        "early media at the start of the right channel: {start} s"
    );
    check_call_record_says_recorded(&rig);
}

#[test]
fn recorded_call_with_late_offer() {
    let (rig, d, wav) = one_recorded_call(Plan::new("uac_late.xml", "uas_late.xml"));
    check_relayed(&d, &rig);
    // The offer in the 200 was anchored too: the caller got siptrack's port.
    let ok = d
        .uac
        .messages
        .iter()
        .find(|m| m.dir == Dir::Received && m.is_response(200))
        .expect("200");
    let offer = sdp_audio(&ok.text).expect("offer in the 200");
    assert!(
        (rig.ports.0..=rig.ports.1).contains(&offer.port),
        "{offer:?}"
    );
    check_recording(&d, &wav, uac_time_from(&d.uac, 200));
    check_call_record_says_recorded(&rig);
}

/// The relay addresses the phones were given (their far side as logged):
/// waits until both sides of one call have one.
fn relay_addresses(c: &Conductor) -> Vec<SocketAddr> {
    c.wait_for(Duration::from_secs(10), |ev| {
        ev.iter()
            .filter(|(_, e)| matches!(e, Event::Far { .. }))
            .count()
            >= 2
    });
    let mut out: Vec<SocketAddr> = c
        .events()
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Far { ip, port, .. } => Some(SocketAddr::new(*ip, *port)),
            Event::Bye { .. } => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn rtp_from_a_third_address_is_dropped_and_counted() {
    let rig = Rig::start(8, "");
    let intruder = RtpEndpoint::bind_ip(
        Ipv4Addr::new(127, 0, 0, 3),
        StreamSpec::new(Tone::new(2500.0, Codec::Pcmu)),
    );
    let mut plan = Plan::new("uac_record.xml", "uas_record.xml");
    plan.talk_ms = 3000;
    let before = rig.metric(DROPPED);
    let mut targets = Vec::new();
    let d = run_plan_with(&plan, rig.p.sip_addr(), rig.uas_port, |c, _, _| {
        targets = relay_addresses(c);
        // Both phones are latched by now; then 25 packets to each relay port.
        std::thread::sleep(Duration::from_millis(500));
        for t in &targets {
            intruder.burst(*t, 25);
        }
    });
    let ctx = d.context();
    assert_eq!(targets.len(), 2, "relay ports in use: {targets:?}\n{ctx}");
    assert_eq!((d.uac.failed(), d.uas.failed()), (0, 0), "{ctx}");
    let ssrc = intruder.spec().ssrc;
    assert_eq!(d.callers[0].received_ssrc(ssrc), 0, "{ctx}");
    assert_eq!(d.callees[0].received_ssrc(ssrc), 0, "{ctx}");
    check_relayed(&d, &rig);
    let dropped = rig.metric_reaching(DROPPED, before + 50.0) - before;
    assert!(
        dropped >= 50.0,
        "50 packets from 127.0.0.3 dropped, {DROPPED} grew by {dropped}\n{}",
        rig.metrics()
    );
    let (_, wav) = rig.recordings(1).pop().expect("recording");
    assert!(goertzel(wav.channel(0), 2500.0) * 1e4 < goertzel(wav.channel(0), CALLER_HZ));
    assert!(goertzel(wav.channel(1), 2500.0) * 1e4 < goertzel(wav.channel(1), CALLEE_HZ));
}

#[test]
fn silent_call_is_ended_after_rtp_timeout_with_bye_both_ways() {
    let rig = Rig::start(8, "rtp_timeout_seconds = 2");
    let dir = tempfile::tempdir().expect("temp dir");
    // Ports in the SDP, but nobody sends: no media either way.
    let uac_inf = inf_file(dir.path(), "uac.csv", &[even_port()]);
    let uas_inf = inf_file(dir.path(), "uas.csv", &[even_port()]);
    let keys = |s: Sipp, inf: &Path| {
        s.arg("-inf")
            .arg(inf.to_string_lossy())
            .arg("-key")
            .arg("pt")
            .arg("0")
            .arg("-key")
            .arg("codec")
            .arg("PCMU")
    };
    let uas = keys(Sipp::uas("uas_record.xml"), &uas_inf)
        .port(rig.uas_port)
        .calls(1)
        .pause_ms(500)
        .time_limit(Duration::from_secs(25))
        .spawn();
    let started = Instant::now();
    let uac = keys(
        Sipp::uac("uac_record_timeout.xml", rig.p.sip_addr()),
        &uac_inf,
    )
    .calls(1)
    .time_limit(Duration::from_secs(20))
    .run();
    let took = started.elapsed();
    let uas = uas.wait_at_most(Duration::from_secs(5));
    let ctx = format!("{}\n{}", uac.summary(), uas.summary());
    // Both sides got a BYE from siptrack and answered it.
    assert_eq!((uac.successful(), uac.failed()), (1, 0), "{ctx}");
    assert_eq!((uas.successful(), uas.failed()), (1, 0), "{ctx}");
    assert!(!uac.received_requests("BYE").is_empty(), "{ctx}");
    assert!(!uas.received_requests("BYE").is_empty(), "{ctx}");
    let answered = uac
        .messages
        .iter()
        .find(|m| m.dir == Dir::Received && m.is_response(200))
        .expect("200")
        .time;
    let bye = uac.received_requests("BYE")[0].time;
    assert!(
        (2.0..=3.5).contains(&(bye - answered)),
        "BYE {:.2} s after the answer, rtp_timeout_seconds = 2\n{ctx}",
        bye - answered
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    let calls = rig.p.wait_for("calls", 1, TOKEN);
    assert_eq!(calls[0]["status"], "answered", "{calls:#?}");
    assert_eq!(calls[0]["hangup"], "timeout", "{calls:#?}");
}

#[test]
fn relay_ports_for_two_calls_ten_calls_all_complete_two_recorded() {
    // Issue 13 says "4 ports": one RTP/RTCP pair per call. siptrack gives
    // each side of a call its own pair (so each phone sees only siptrack),
    // so a call takes 4 ports and a range of 8 holds two calls. 10
    // concurrent calls: the two that get ports are recorded, the other 8
    // go through unrecorded, each counted and its record saying why.
    let rig = Rig::start(4, "");
    let mut plan = Plan::new("uac_record.xml", "uas_record.xml");
    plan.calls = 10;
    plan.talk_ms = 2000;
    let before = rig.metric(NO_PORTS);
    let d = rig.run(&plan);
    let ctx = d.context();
    assert_eq!((d.uac.successful(), d.uac.failed()), (10, 0), "{ctx}");
    assert_eq!((d.uas.successful(), d.uas.failed()), (10, 0), "{ctx}");
    // Every call's media got through, anchored or not.
    for (a, b) in d.callers.iter().zip(&d.callees) {
        assert!(
            b.received_ssrc(a.spec().ssrc) > 0 || a.sent().packets == 0,
            "{ctx}"
        );
    }
    let calls = rig.p.wait_for("calls", 10, TOKEN);
    assert!(
        calls.iter().all(|c| c["status"] == "answered"),
        "{calls:#?}"
    );
    let recs = wav_files(&rig.recordings);
    let unrecorded = rig.metric_reaching(NO_PORTS, before + 8.0) - before;
    assert_eq!(
        (recs.len(), unrecorded),
        (2, 8.0),
        "recorded files {recs:?}, unrecorded on /metrics\n{}",
        rig.metrics()
    );
    let states: Vec<(String, String)> = calls.iter().map(recording_of).collect();
    let recorded = states.iter().filter(|(s, _)| s == "recorded").count();
    let no_ports = states
        .iter()
        .filter(|(s, r)| s == "not_recorded" && r == "no free media ports")
        .count();
    assert_eq!((recorded, no_ports), (2, 8), "{states:#?}");
}

/// A tmpfs of `size` mounted at `dir`, unmounted on drop; `ro` makes it
/// read-only. The tests run as root (scripts/test, CI).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, options: &str) -> Mount {
        std::fs::create_dir_all(dir).expect("mount point");
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mount -t tmpfs -o {options} {}: {st} (the media tests need root)",
            dir.display()
        );
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn read_only_recordings_dir_costs_no_call_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recordings = dir.path().join("recordings");
    let _mount = Mount::tmpfs(&recordings, "ro,size=1m");
    // Dropped in reverse: siptrack stops, the tmpfs goes, then the directory.
    let rig = Rig::start_recording_to(&recordings, 8);
    let mut plan = Plan::new("uac_record.xml", "uas_record.xml");
    plan.talk_ms = 1500;
    let d = rig.run(&plan);
    let ctx = d.context();
    assert_eq!((d.uac.successful(), d.uac.failed()), (1, 0), "{ctx}");
    assert_eq!((d.uas.successful(), d.uas.failed()), (1, 0), "{ctx}");
    // The media still flowed.
    check_relayed(&d, &rig);
    let calls = rig.p.wait_for("calls", 1, TOKEN);
    assert_eq!(calls[0]["status"], "answered");
    assert!(wav_files(&rig.recordings).is_empty());
    let errors = (
        rig.metric_reaching(WRITE_ERRORS, 1.0),
        rig.metric_reaching(NO_DISK, 1.0),
    );
    assert!(
        errors.0 >= 1.0 && errors.1 >= 1.0,
        "write errors and unrecorded (disk) on /metrics\n{}",
        rig.metrics()
    );
    let log = rig.p.log();
    assert!(
        log.to_ascii_lowercase().contains("read-only"),
        "the log names the cause:\n{log}"
    );
    // Said at start, before any call.
    let started = log.find("recording calls").unwrap_or(log.len());
    assert!(
        log[..started].contains("media.recordings_dir cannot take recordings")
            && log[..started].contains("Read-only file system"),
        "the start says the directory is not writable:\n{log}"
    );
    let (state, reason) = recording_of(&calls[0]);
    assert_eq!(state, "not_recorded", "{calls:#?}");
    assert!(
        reason.contains("Read-only"),
        "the call record says why: {reason:?}"
    );
}

#[test]
fn full_disk_costs_no_call_and_leaves_no_lying_wav() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recordings = dir.path().join("recordings");
    // 64 KiB: a WAV of 8 kHz stereo 16-bit takes 32 kB/s, so 2 s in.
    let _mount = Mount::tmpfs(&recordings, "size=64k");
    let rig = Rig::start_recording_to(&recordings, 8);
    let mut plan = Plan::new("uac_record.xml", "uas_record.xml");
    plan.talk_ms = 4000;
    let d = rig.run(&plan);
    let ctx = d.context();
    assert_eq!((d.uac.successful(), d.uac.failed()), (1, 0), "{ctx}");
    assert_eq!((d.uas.successful(), d.uas.failed()), (1, 0), "{ctx}");
    check_relayed(&d, &rig);
    let calls = rig.p.wait_for("calls", 1, TOKEN);
    assert_eq!(calls[0]["status"], "answered");
    let errors = (
        rig.metric_reaching(WRITE_ERRORS, 1.0),
        rig.metric_reaching(NO_DISK, 1.0),
    );
    assert!(
        errors.0 >= 1.0 && errors.1 >= 1.0,
        "write errors and unrecorded (disk) on /metrics\n{}",
        rig.metrics()
    );
    // The cut file is no recording anything links to: it is gone, so it
    // neither keeps the disk full nor is taken for a crash's file at the
    // next start (trial, 2026-12-02).
    let left = wav_files(&rig.recordings);
    assert!(left.is_empty(), "files left on the full disk: {left:?}");
}

#[test]
fn kill_9_mid_recording_leaves_no_wav_claiming_to_be_complete() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recordings = dir.path().join("recordings");
    let uas_port = free_port();
    let ports = relay_range(8);
    // The database outside siptrack's own directory: the restart is a
    // new process with a new one.
    let db = dir.path().join("siptrack.db");
    let cfg = config(uas_port, ports, &recordings, "").replace(
        "url = \"sqlite:siptrack.db\"",
        &format!("url = \"sqlite:{}\"", db.display()),
    );
    assert!(cfg.contains(&db.display().to_string()));
    let mut p = Siptrack::start(&cfg);
    let mut plan = Plan::new("uac_record.xml", "uas_record.xml");
    plan.talk_ms = 6000;
    // Its BYE goes unanswered: stop waiting for it soon after.
    plan.limit = Some(Duration::from_secs(12));
    let target = p.sip_addr();
    let d = run_plan_with(&plan, target, uas_port, |c, _, _| {
        relay_addresses(c);
        // 3 s into the call the recording holds about 3 s.
        std::thread::sleep(Duration::from_millis(3000));
        p.kill9();
    });
    let files = wav_files(&recordings);
    assert_eq!(
        files.len(),
        1,
        "the call's recording was started: {files:?}\n{}",
        d.context()
    );
    let cut = read_wav_file(&files[0]).expect("our WAV");
    assert!(
        !cut.lies(),
        "a WAV cut by kill -9 claims sizes it does not hold: {:?}",
        files[0]
    );
    // Restart on the same directory, database and ports.
    drop(p);
    let p = Siptrack::start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (done, marked) = loop {
        let done: Vec<(PathBuf, Wav)> = wav_files(&recordings)
            .iter()
            .filter_map(|f| read_wav_file(f).ok().map(|w| (f.clone(), w)))
            .filter(|(_, w)| w.complete)
            .collect();
        let marked = std::fs::read_dir(&recordings)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().contains("partial"))
            })
            .unwrap_or(false);
        if !done.is_empty() || marked || Instant::now() > deadline {
            break (done, marked);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !done.is_empty() || marked,
        "after the restart the cut recording is finalised or marked partial\n{}",
        p.log()
    );
    for (f, w) in &done {
        // Finalised from what was on disk: about the 3 s heard.
        assert!(
            w.seconds() > 1.5 && w.seconds() < 6.0,
            "{}: {:.2} s",
            f.display(),
            w.seconds()
        );
        let l = report(w.channel(0), AMPLITUDE);
        assert!(
            l.dominant_hz.is_some_and(|h| (h - CALLER_HZ).abs() < 5.0),
            "{l:?}"
        );
    }
    // The interrupted call's record says what it has: a partial recording.
    let calls = p.wait_for("calls", 1, TOKEN);
    // Answered seconds before the crash: the database had the answer.
    assert_eq!(
        (&calls[0]["status"], &calls[0]["hangup"]),
        (&"answered".into(), &"interrupted".into()),
        "{calls:#?}"
    );
    assert_eq!(recording_of(&calls[0]).0, "partial", "{calls:#?}");
}

/// Header lines of a traced message without the ones a proxy may change
/// (S-5: Via, Record-Route, Route, Max-Forwards) and the call-tracking
/// headers siptrack adds (section 3), in order; the start line left out.
fn kept_lines(text: &str) -> Vec<String> {
    let head = text.split("\n\n").next().unwrap_or("");
    head.lines()
        .skip(1)
        .filter(|l| {
            let name = l
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            !matches!(
                name.as_str(),
                "via" | "v" | "record-route" | "route" | "max-forwards"
            ) && !name.starts_with("x-roistat")
        })
        .map(str::to_string)
        .collect()
}

/// The UDP ports in `range` that something holds (cannot be bound now).
fn held_ports(range: (u16, u16)) -> Vec<u16> {
    (range.0..=range.1)
        .filter(|p| std::net::UdpSocket::bind(("127.0.0.1", *p)).is_err())
        .collect()
}

#[test]
fn record_calls_false_passes_sdp_and_media_untouched_and_opens_no_port() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recordings = dir.path().join("recordings");
    let uas_port = free_port();
    let ports = relay_range(8);
    let cfg = config(uas_port, ports, &recordings, "")
        .replace("record_calls = true", "record_calls = false");
    let p = Siptrack::start(&cfg);
    let mut plan = Plan::new("uac_record.xml", "uas_record.xml");
    plan.talk_ms = 2000;
    let mut held = Vec::new();
    let d = run_plan_with(&plan, p.sip_addr(), uas_port, |c, _, _| {
        relay_addresses(c);
        std::thread::sleep(Duration::from_millis(500));
        held = held_ports(ports);
    });
    let ctx = d.context();
    assert_eq!((d.uac.successful(), d.uas.successful()), (1, 1), "{ctx}");
    assert!(
        held.is_empty(),
        "siptrack holds media ports {held:?} with record_calls = false"
    );
    let sent = d.uac.sent_requests("INVITE")[0];
    let got = d.uas.received_requests("INVITE")[0];
    assert_eq!(
        body_of(&got.text),
        body_of(&sent.text),
        "INVITE body\n{ctx}"
    );
    assert_eq!(
        kept_lines(&got.text),
        kept_lines(&sent.text),
        "INVITE headers\n{ctx}"
    );
    let answered = d.uas.sent().find(|m| m.is_response(200)).expect("200 sent");
    let relayed = d.uac.received_responses(200)[0];
    assert_eq!(
        body_of(&relayed.text),
        body_of(&answered.text),
        "200 body\n{ctx}"
    );
    assert_eq!(
        kept_lines(&relayed.text),
        kept_lines(&answered.text),
        "200 headers\n{ctx}"
    );
    // The media went phone to phone.
    let (a, b) = (&d.callers[0], &d.callees[0]);
    assert_eq!(b.sources(), [a.local()].into(), "{ctx}");
    assert_eq!(a.sources(), [b.local()].into(), "{ctx}");
    assert!(wav_files(&recordings).is_empty());
    let calls = p.wait_for("calls", 1, TOKEN);
    assert_eq!(
        recording_of(&calls[0]),
        ("not_recorded".into(), "recording disabled".into()),
        "{calls:#?}"
    );
}

/// One HTTP/1.1 GET with extra header lines; (status, headers in lower
/// case, body bytes).
fn http_get(
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
) -> (u16, std::collections::BTreeMap<String, String>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect("connect to the HTTP API");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of the response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<std::collections::BTreeMap<_, _>>();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        body = unchunk(&body);
    }
    (status, headers, body)
}

fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// The path and query of a link (it may come as a whole URL).
fn link_path(link: &str) -> String {
    match link.find("/recordings/") {
        Some(i) => link[i..].to_string(),
        None => panic!("not a recording link: {link:?}"),
    }
}

/// `link` with its `sig` (last hex digit changed) or `exp` (one second
/// later) tampered with.
fn tampered(link: &str, what: &str) -> String {
    let (path, query) = link.split_once('?').expect("a query");
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some(("sig", v)) if what == "sig" => {
                let last = if v.ends_with('0') { '1' } else { '0' };
                format!("sig={}{last}", &v[..v.len() - 1])
            }
            Some(("exp", v)) if what == "exp" => {
                format!("exp={}", v.parse::<u64>().expect("exp") + 1)
            }
            _ => kv.to_string(),
        })
        .collect();
    format!("{path}?{}", parts.join("&"))
}

#[test]
fn recording_links_play_with_ranges_and_refuse_tampering() {
    let (rig, _d, _wav) = one_recorded_call(Plan::new("uac_record.xml", "uas_record.xml"));
    let calls = rig.p.wait_for("calls", 1, TOKEN);
    let link = link_path(
        calls[0]["link"]
            .as_str()
            .unwrap_or_else(|| panic!("no link: {calls:#?}")),
    );
    let file = std::fs::read(&rig.recordings(1)[0].0).expect("the WAV");
    // Whole file.
    let (status, h, body) = http_get(rig.p.api(), &link, &[]);
    assert_eq!(status, 200, "{h:?}");
    assert_eq!(h.get("content-type").map(String::as_str), Some("audio/wav"));
    assert!(
        body == file,
        "the link serves the WAV ({} vs {} bytes)",
        body.len(),
        file.len()
    );
    // A player seeking.
    let (status, h, body) = http_get(rig.p.api(), &link, &[("Range", "bytes=44-143")]);
    assert_eq!(status, 206, "{h:?}");
    assert_eq!(
        h.get("content-range").map(String::as_str),
        Some(format!("bytes 44-143/{}", file.len()).as_str())
    );
    assert_eq!(body, file[44..144]);
    let (status, _, body) = http_get(rig.p.api(), &link, &[("Range", "bytes=-10")]);
    assert_eq!((status, body.as_slice()), (206, &file[file.len() - 10..]));
    // Tampered: signature, expiry; a link of another call.
    for what in ["sig", "exp"] {
        let (status, _, _) = http_get(rig.p.api(), &tampered(&link, what), &[]);
        assert_eq!(status, 403, "{what} tampered");
    }
    let other = link.replacen("/recordings/", "/recordings/x", 1);
    let (status, _, _) = http_get(rig.p.api(), &other, &[]);
    assert_eq!(status, 403, "a signature for another Call-ID");
    // Signed with the database's key: expired → 403, no such recording → 404.
    let key: String = rusqlite::Connection::open(rig.p.dir().join("siptrack.db"))
        .and_then(|db| {
            db.query_row(
                "SELECT value FROM meta WHERE key = 'recording_link_key'",
                [],
                |r| r.get(0),
            )
        })
        .expect("the recording link key");
    let call_id = calls[0]["id"].as_str().expect("Call-ID").to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let signed =
        |id: &str, exp: u64| siptrack::media::link::link_path(key.as_bytes(), id.as_bytes(), exp);
    let (status, _, _) = http_get(rig.p.api(), &signed(&call_id, now - 1), &[]);
    assert_eq!(status, 403, "expired a second ago");
    let (status, _, _) = http_get(rig.p.api(), &signed(&call_id, now + 60), &[]);
    assert_eq!(status, 200, "a fresh link signed the same way plays");
    let (status, _, _) = http_get(rig.p.api(), &signed("no-such-call@x", now + 60), &[]);
    assert_eq!(
        status, 404,
        "a valid signature for a call without a recording"
    );
    // The bearer token is not needed (recording_links_require_auth = false).
    let (status, _, _) = http_get(
        rig.p.api(),
        &link,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(status, 200);
}

#[test]
fn recording_links_need_the_token_when_configured_and_reach_the_call_end_webhook() {
    let crm = common::crm::Crm::start(0, "media-crm-secret", common::crm::Mode::Ok);
    let extra = format!(
        "\n[crm]\nkind = \"webhook\"\nurl = \"{}\"\ncall_end_url = \"{}\"\nsecret = \"media-crm-secret\"\n",
        crm.url("/hook"),
        crm.url("/call-end")
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let recordings = dir.path().join("recordings");
    let uas_port = free_port();
    let ports = relay_range(8);
    let cfg = config(uas_port, ports, &recordings, "").replace(
        "record_calls = true",
        "record_calls = true\nrecording_links_require_auth = true",
    ) + &extra;
    let p = Siptrack::start(&cfg);
    let d = run_plan(
        &Plan::new("uac_record.xml", "uas_record.xml"),
        p.sip_addr(),
        uas_port,
    );
    assert_eq!(d.uac.successful(), 1, "{}", d.context());
    crm.wait_until(Duration::from_secs(15), "the call-end webhook", |s| {
        s.requests.iter().any(|r| r.path == "/call-end")
    });
    let link = {
        let s = crm.lock();
        let end = s
            .requests
            .iter()
            .find(|r| r.path == "/call-end")
            .expect("call end");
        end.json["link"]
            .as_str()
            .unwrap_or_else(|| panic!("no link in the call-end webhook: {}", end.body))
            .to_string()
    };
    let link = link_path(&link);
    let (status, _, _) = http_get(p.api(), &link, &[]);
    assert_eq!(
        status, 401,
        "recording_links_require_auth: the link alone is not enough"
    );
    let bearer = format!("Bearer {TOKEN}");
    let (status, h, body) = http_get(
        p.api(),
        &link,
        &[("Authorization", &bearer), ("Range", "bytes=0-3")],
    );
    assert_eq!(
        (status, body.as_slice()),
        (206, b"RIFF".as_slice()),
        "{h:?}"
    );
    let (status, _, _) = http_get(
        p.api(),
        &tampered(&link, "sig"),
        &[("Authorization", &bearer)],
    );
    assert_eq!(status, 403, "the token does not make a bad signature good");
}

#[test]
fn key_presses_are_listed_in_the_call_record_not_written_as_audio() {
    let rig = Rig::start(8, "");
    let mut plan = Plan::new("uac_record.xml", "uas_record.xml");
    plan.talk_ms = 3000;
    let d = run_plan_with(
        &plan,
        rig.p.sip_addr(),
        rig.uas_port,
        |c, callers, callees| {
            relay_addresses(c);
            std::thread::sleep(Duration::from_millis(800));
            // The caller presses 5 for 200 ms, later the callee # for 100 ms.
            callers[0].press('5', 10);
            std::thread::sleep(Duration::from_millis(800));
            callees[0].press('#', 5);
        },
    );
    let ctx = d.context();
    assert_eq!((d.uac.successful(), d.uas.successful()), (1, 1), "{ctx}");
    assert_eq!(
        (
            d.callers[0].sent().dtmf_slots,
            d.callees[0].sent().dtmf_slots
        ),
        (10, 5),
        "{ctx}"
    );
    check_relayed(&d, &rig);
    let (_, wav) = rig.recordings(1).pop().expect("recording");
    // The presses are holes in the audio, not sound: 200 ms on the left,
    // 100 ms on the right, and each tone audible as long as it was sent.
    check_recording(&d, &wav, uac_time_from(&d.uac, 200));
    let (l, r) = (
        longest_gap(wav.channel(0), AMPLITUDE),
        longest_gap(wav.channel(1), AMPLITUDE),
    );
    assert!((0.18..=0.23).contains(&l), "left hole {l} s\n{ctx}");
    assert!((0.08..=0.13).contains(&r), "right hole {r} s\n{ctx}");
    let calls = rig.p.wait_for("calls", 1, TOKEN);
    let dtmf = calls[0]["dtmf"].as_array().cloned().unwrap_or_default();
    let pressed: Vec<(String, String)> = dtmf
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            (s("side"), s("digit"))
        })
        .collect();
    assert_eq!(
        pressed,
        vec![
            ("caller".to_string(), "5".to_string()),
            ("callee".to_string(), "#".to_string())
        ],
        "{calls:#?}"
    );
    for (p, ms) in dtmf.iter().zip([200u64, 100]) {
        let got = p["duration_ms"].as_u64().unwrap_or(0);
        assert!(got.abs_diff(ms) <= 20, "{p}: {ms} ms pressed");
    }
    // In call order: the caller's press 0.8 s (and a slot) before the callee's.
    let at = |i: usize| dtmf[i]["at_ms"].as_u64().unwrap_or(0);
    assert!(
        (750..=950).contains(&at(1).saturating_sub(at(0))),
        "{dtmf:?}"
    );
}
