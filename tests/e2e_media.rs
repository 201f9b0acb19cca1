//! End-to-end media: a real siptrack between SIPp UAC and UAS on loopback,
//! with the RTP sent by test-side endpoints (tests/common/rtp.rs) to the
//! addresses siptrack put in the SDP it forwarded. The caller sends a
//! 440 Hz tone, the callee 1000 Hz; each must reach the other side through
//! siptrack's relay, and the call's WAV must hold the caller's tone on the
//! left and the callee's on the right. With `record_calls = false` the SDP
//! and the rest of the INVITE and 200 pass as they came and no media port
//! is opened.

mod common;

use std::time::{Duration, Instant};

use common::rtp::{goertzel, sdp_media_addr, udp_ports_of, RtpEndpoint};
use common::{free_port, free_ports, Dir, SipTrace, Sipp, SippProcess, Siptrack};

/// 20 ms packets each side sends: 2.5 s.
const PACKETS: u32 = 125;

fn config(uas_port: u16, record: bool, ports: (u16, u16), dir: &str) -> String {
    format!(
        r#"[storage]
url = "sqlite:{dir}.db"

[sip]
listen = ["udp:127.0.0.1:{{SIP_PORT}}"]
trusted_sources = ["127.0.0.0/8"]
route_secret = "e2e-media"

[tracking]
default_destination = "sip:127.0.0.1:{uas_port}"
record_calls = {record}

[media]
port_min = {min}
port_max = {max}
advertised_ip = "127.0.0.1"
recordings_dir = "{dir}"

[shutdown]
drain_seconds = 1

[http]
listen = "127.0.0.1:{{HTTP_PORT}}"
"#,
        min = ports.0,
        max = ports.1,
    )
}

/// (recording, recording_reason, dtmf) of a call, from the database
/// (next to the recordings directory, see [`config`]).
fn recording_of(dir: &std::path::Path, call_id: &str) -> Option<(String, String, String)> {
    let db = rusqlite::Connection::open_with_flags(
        format!("{}.db", dir.display()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    db.query_row(
        "SELECT recording, recording_reason, dtmf FROM calls WHERE call_id = ?1",
        [call_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .ok()
}

/// Polls [`recording_of`] for at most 10 s.
fn wait_recording(dir: &std::path::Path, call_id: &str) -> (String, String, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = recording_of(dir, call_id) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "call {call_id} not recorded within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn body(m: &SipTrace) -> &str {
    m.text.split_once("\n\n").map_or("", |(_, b)| b)
}

/// Waits (at most 10 s) for a message `sipp` traced that `want` matches.
fn wait_for(sipp: &SippProcess, what: &str, want: impl Fn(&SipTrace) -> bool) -> SipTrace {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(m) = sipp.messages().into_iter().find(|m| want(m)) {
            return m;
        }
        assert!(Instant::now() < deadline, "no {what} within 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line_start} not in /metrics:\n{text}"))
}

/// /metrics once `ok` holds for it (they are published every second), at most 5 s.
fn metrics_when(st: &Siptrack, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = get_metrics(st);
        if ok(&m) || Instant::now() >= deadline {
            return m;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn get_metrics(st: &Siptrack) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(st.api()).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// (status, hangup, recording) of a call's record, polled for at most
/// 10 s (the database is next to the recordings directory: [`config`]).
fn status_hangup_recording(
    rec_dir: &std::path::Path,
    call_id: &str,
    st: &Siptrack,
) -> (String, String, String) {
    let db = format!("{}.db", rec_dir.display());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .ok()
                .and_then(|c| {
                    c.query_row(
                        "SELECT status, hangup, recording FROM calls WHERE call_id = ?1",
                        [call_id],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .ok()
                });
        if let Some(r) = r {
            return r;
        }
        assert!(Instant::now() < deadline, "no call record\n{}", st.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// First and last sample index louder than a quiet floor.
fn span(x: &[f64]) -> Option<(usize, usize)> {
    let loud = |v: &f64| v.abs() > 500.0;
    Some((x.iter().position(loud)?, x.iter().rposition(loud)?))
}

/// A recorded call's parts: siptrack with 8 media ports from `base`,
/// the caller's and the callee's RTP endpoints, and SIPp on both sides
/// (the callee answers after 0.5 s, the caller hangs up 3.5 s after the
/// 200).
struct MediaCall {
    _dir: tempfile::TempDir,
    rec_dir: std::path::PathBuf,
    base: u16,
    st: Siptrack,
    caller: RtpEndpoint,
    callee: RtpEndpoint,
    uas: SippProcess,
    uac: SippProcess,
}

fn media_call() -> MediaCall {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec_dir = dir.path().join("recordings");
    let base = free_ports(8);
    let uas_port = free_port();
    let st = Siptrack::start(&config(
        uas_port,
        true,
        (base, base + 7),
        &rec_dir.display().to_string(),
    ));
    let caller = RtpEndpoint::bind(free_port());
    let callee = RtpEndpoint::bind(free_port());
    let uas = Sipp::uas("uas_media.xml")
        .port(uas_port)
        .arg("-key")
        .arg("rtp_port")
        .arg(callee.port().to_string())
        .pause_ms(500)
        .spawn();
    let uac = Sipp::uac("uac_media.xml", st.sip_addr())
        .calls(1)
        .arg("-key")
        .arg("rtp_port")
        .arg(caller.port().to_string())
        .pause_ms(3500)
        .spawn();
    MediaCall {
        _dir: dir,
        rec_dir,
        base,
        st,
        caller,
        callee,
        uas,
        uac,
    }
}

#[test]
fn a_call_is_relayed_both_ways_and_recorded_left_caller_right_callee() {
    let MediaCall {
        _dir: _keep,
        rec_dir,
        base,
        st,
        caller,
        callee,
        uas,
        uac,
    } = media_call();

    // Where siptrack tells each side to send: its own ports, not the
    // other side's.
    let invite = wait_for(&uas, "INVITE at the UAS", |m| {
        m.dir == Dir::Received && m.is_request("INVITE")
    });
    let ok = wait_for(&uac, "200 at the UAC", |m| {
        m.dir == Dir::Received && m.is_response(200) && m.cseq_method().as_deref() == Some("INVITE")
    });
    let to_siptrack_from_callee = sdp_media_addr(body(&invite)).expect("SDP in the INVITE");
    let to_siptrack_from_caller = sdp_media_addr(body(&ok)).expect("SDP in the 200");
    for a in [to_siptrack_from_callee, to_siptrack_from_caller] {
        assert!(
            (base..=base + 7).contains(&a.port()) && a.ip().is_loopback(),
            "SDP points at siptrack's media range {base}..{}: {a}\n{}\n{}",
            base + 7,
            invite.text,
            ok.text
        );
    }
    assert_eq!(to_siptrack_from_callee.port() % 2, 0, "RTP on an even port");
    assert!(
        body(&invite).contains("a=rtpmap:101 telephone-event/8000\n"),
        "everything else as it came: {}",
        invite.text
    );
    let call_id = invite.call_id().expect("Call-ID");
    let media_open = udp_ports_of(st.pid());
    assert!(
        media_open
            .iter()
            .filter(|p| (base..=base + 7).contains(p))
            .count()
            == 4,
        "two RTP/RTCP pairs bound during the call: {media_open:?}"
    );

    let a = caller.send_tone(to_siptrack_from_caller, 440.0, PACKETS, 0x1111);
    let b = callee.send_tone(to_siptrack_from_callee, 1000.0, PACKETS, 0x2222);
    let (a_start, a_end) = a.join().expect("caller tone");
    let (b_start, b_end) = b.join().expect("callee tone");
    let uac_run = uac.wait();
    let uas_run = uas.wait_at_most(Duration::from_secs(5));
    assert_eq!(
        uac_run.successful(),
        1,
        "{}\n{}",
        uac_run.summary(),
        uas_run.summary()
    );

    // Each side heard the other's tone, from siptrack's address.
    for (name, ep, from, hears, not) in [
        ("caller", &caller, to_siptrack_from_caller, 1000.0, 440.0),
        ("callee", &callee, to_siptrack_from_callee, 440.0, 1000.0),
    ] {
        let got = ep.received();
        assert!(
            got.len() as u32 >= PACKETS * 9 / 10,
            "{name} got {} of {PACKETS} packets",
            got.len()
        );
        assert!(
            got.iter().all(|(src, _)| *src == from),
            "{name}: relayed from siptrack's port {from}"
        );
        let pcm = ep.received_pcm();
        assert!(
            goertzel(&pcm, hears) > 100.0 * goertzel(&pcm, not),
            "{name} hears {hears} Hz"
        );
    }

    // The WAV: finalised at the call's end, caller left, callee right.
    let file = rec_dir.join(siptrack::media::link::file_name(call_id.as_bytes()));
    let deadline = Instant::now() + Duration::from_secs(5);
    let pcm = loop {
        if let Some(p) = std::fs::read(&file)
            .ok()
            .and_then(|b| siptrack::media::wav::samples(&b))
        {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no finished WAV at {}\n{}",
            file.display(),
            st.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let left: Vec<f64> = pcm.iter().step_by(2).map(|&s| f64::from(s)).collect();
    let right: Vec<f64> = pcm
        .iter()
        .skip(1)
        .step_by(2)
        .map(|&s| f64::from(s))
        .collect();
    assert!(
        goertzel(&left, 440.0) > 100.0 * goertzel(&left, 1000.0),
        "left is the caller (440 Hz)"
    );
    assert!(
        goertzel(&right, 1000.0) > 100.0 * goertzel(&right, 440.0),
        "right is the callee (1000 Hz)"
    );
    for (name, ch, start, end) in [
        ("left", &left, a_start, a_end),
        ("right", &right, b_start, b_end),
    ] {
        let (first, last) = span(ch).unwrap_or_else(|| panic!("{name} channel is silent"));
        let recorded_ms = ((last - first + 1) as f64 / 8.0) as i64;
        let sent_ms = (end - start).as_millis() as i64 + 20;
        assert!(
            (recorded_ms - sent_ms).abs() <= 100,
            "{name}: {recorded_ms} ms of tone recorded for {sent_ms} ms sent"
        );
    }
    let total_ms = (left.len() as f64 / 8.0) as i64;
    let (_, last_left) = span(&left).unwrap_or_default();
    let (_, last_right) = span(&right).unwrap_or_default();
    let audio_end_ms = (last_left.max(last_right) as f64 / 8.0) as i64;
    // The file is as long as the call: from the answer to the BYE
    // (SIPp's 3.5 s pause), the second after the tones silent.
    assert!(
        total_ms >= audio_end_ms && (total_ms - 3_500).abs() <= 300,
        "the file runs to the BYE: {total_ms} ms long, audio to {audio_end_ms} ms"
    );

    // After the BYE the media ports are closed; the counters say what happened.
    let deadline = Instant::now() + Duration::from_secs(3);
    while udp_ports_of(st.pid())
        .iter()
        .any(|p| (base..=base + 7).contains(p))
    {
        assert!(
            Instant::now() < deadline,
            "media ports still open: {:?}",
            udp_ports_of(st.pid())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = metrics_when(&st, |m| m.contains("siptrack_media_sessions 0\n"));
    assert!(
        metric(&m, "siptrack_media_relayed_packets_total ") >= u64::from(PACKETS) * 18 / 10,
        "{m}"
    );
    assert_eq!(metric(&m, "siptrack_media_sessions "), 0, "{m}");
    assert_eq!(
        metric(&m, "siptrack_recordings_total{state=\"finished\"} "),
        1,
        "{m}"
    );
    for reason in ["no_ports", "codec", "disk", "disabled"] {
        assert_eq!(
            metric(
                &m,
                &format!("siptrack_unrecorded_calls_total{{reason=\"{reason}\"}} ")
            ),
            0,
            "{reason}: {m}"
        );
    }
    assert!(st.log().contains("recording finished"), "{}", st.log());
    // The call record says so.
    let (state, reason, _) = wait_recording(&rec_dir, &call_id);
    assert_eq!((state.as_str(), reason.as_str()), ("recorded", ""));
}

/// RTP bleed: a stranger (127.0.0.9) who sprays a call's relay ports
/// before either side's first packet (and first RTCP) must not become a
/// leg's source: it hears nothing, injects nothing, and the call's media
/// goes where the SDP and the signalling said (trials, 2026-12-02: the
/// stranger took over the callee's leg and got the caller's audio).
#[test]
fn a_stranger_spraying_the_relay_ports_first_takes_over_no_leg() {
    let MediaCall {
        _dir: _keep,
        st,
        caller,
        callee,
        uas,
        uac,
        ..
    } = media_call();
    let stranger = RtpEndpoint::bind_on("127.0.0.9", 0);
    let invite = wait_for(&uas, "INVITE at the UAS", |m| {
        m.dir == Dir::Received && m.is_request("INVITE")
    });
    let ok = wait_for(&uac, "200 at the UAC", |m| {
        m.dir == Dir::Received && m.is_response(200) && m.cseq_method().as_deref() == Some("INVITE")
    });
    let to_siptrack_from_callee = sdp_media_addr(body(&invite)).expect("SDP in the INVITE");
    let to_siptrack_from_caller = sdp_media_addr(body(&ok)).expect("SDP in the 200");
    // RTP and RTCP to every port of the call, before anybody talks.
    let rtp = [0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0x99, 0x99];
    let rtcp = [0x80, 201, 0, 1, 0, 0, 0x99, 0x99];
    for a in [to_siptrack_from_callee, to_siptrack_from_caller] {
        let rtcp_port = std::net::SocketAddr::new(a.ip(), a.port() + 1);
        for _ in 0..5 {
            stranger.send_raw(a, &rtp);
            stranger.send_raw(rtcp_port, &rtcp);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let a = caller.send_tone(to_siptrack_from_caller, 440.0, PACKETS, 0x1111);
    let b = callee.send_tone(to_siptrack_from_callee, 1000.0, PACKETS, 0x2222);
    // Their first RTCP: relayed to the other side's SDP address, not to
    // the stranger who came first.
    for (ep, rtcp_to) in [
        (&caller, to_siptrack_from_caller),
        (&callee, to_siptrack_from_callee),
    ] {
        ep.send_raw(
            std::net::SocketAddr::new(rtcp_to.ip(), rtcp_to.port() + 1),
            &rtcp,
        );
    }
    a.join().expect("caller tone");
    b.join().expect("callee tone");
    let uac_run = uac.wait();
    let uas_run = uas.wait_at_most(Duration::from_secs(5));
    assert_eq!(
        uac_run.successful(),
        1,
        "{}\n{}",
        uac_run.summary(),
        uas_run.summary()
    );
    assert!(
        stranger.received().is_empty(),
        "the stranger got {} datagrams",
        stranger.received().len()
    );
    for (name, ep, from, hears) in [
        ("caller", &caller, to_siptrack_from_caller, 1000.0),
        ("callee", &callee, to_siptrack_from_callee, 440.0),
    ] {
        let got = ep.received();
        let audio = got.iter().filter(|(src, _)| *src == from).count() as u32;
        assert!(
            audio >= PACKETS * 9 / 10,
            "{name} got {audio} of {PACKETS} packets from {from}"
        );
        assert!(
            got.iter().all(|(_, d)| d.len() != rtp.len()),
            "{name} got the stranger's packets"
        );
        let pcm = ep.received_pcm();
        assert!(goertzel(&pcm, hears) > 0.0, "{name} hears {hears} Hz");
    }
    let m = metrics_when(&st, |m| m.contains("siptrack_media_sessions 0\n"));
    assert!(
        metric(
            &m,
            "siptrack_media_dropped_packets_total{reason=\"other_source\"} "
        ) >= 20,
        "{m}"
    );
}

#[test]
fn kill_9_mid_call_leaves_a_file_that_is_finalised_as_partial_at_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec_dir = dir.path().join("recordings");
    let base = free_ports(8);
    let uas_port = free_port();
    let text = config(
        uas_port,
        true,
        (base, base + 7),
        &rec_dir.display().to_string(),
    );
    let mut st = Siptrack::start(&text);
    let caller = RtpEndpoint::bind(free_port());
    let callee = RtpEndpoint::bind(free_port());
    let uas = Sipp::uas("uas_media.xml")
        .port(uas_port)
        .arg("-key")
        .arg("rtp_port")
        .arg(callee.port().to_string())
        .pause_ms(500)
        .spawn();
    let uac = Sipp::uac("uac_media.xml", st.sip_addr())
        .calls(1)
        .arg("-key")
        .arg("rtp_port")
        .arg(caller.port().to_string())
        .pause_ms(20_000)
        .spawn();
    let invite = wait_for(&uas, "INVITE at the UAS", |m| {
        m.dir == Dir::Received && m.is_request("INVITE")
    });
    let ok = wait_for(&uac, "200 at the UAC", |m| {
        m.dir == Dir::Received && m.is_response(200) && m.cseq_method().as_deref() == Some("INVITE")
    });
    let call_id = invite.call_id().expect("Call-ID");
    let a = caller.send_tone(sdp_media_addr(body(&ok)).expect("SDP"), 440.0, 75, 1);
    let b = callee.send_tone(sdp_media_addr(body(&invite)).expect("SDP"), 1000.0, 75, 2);
    a.join().expect("caller tone");
    b.join().expect("callee tone");
    // The writer flushes its 32 KB buffer as it fills: 1.5 s of stereo
    // is 48 KB, so some audio is on disk when the process dies.
    std::thread::sleep(Duration::from_millis(200));
    st.kill9();
    let file = rec_dir.join(siptrack::media::link::file_name(call_id.as_bytes()));
    let bytes = std::fs::read(&file).expect("the WAV of the call in progress");
    assert!(
        siptrack::media::wav::samples(&bytes).is_none(),
        "a file cut by kill -9 does not claim to be complete"
    );
    assert!(bytes.len() > 44, "audio was written during the call");
    drop(uac);
    drop(uas);

    let st = Siptrack::start(&text);
    let fixed = std::fs::read(&file).expect("the WAV after restart");
    let pcm = siptrack::media::wav::samples(&fixed).expect("finalised at start");
    assert_eq!(pcm.len() * 2 + 44, fixed.len());
    let left: Vec<f64> = pcm.iter().step_by(2).map(|&s| f64::from(s)).collect();
    assert!(
        goertzel(&left, 440.0) > 100.0 * goertzel(&left, 1000.0),
        "what was written is kept"
    );
    assert!(st.log().contains("finalised as partial"), "{}", st.log());
    let m = metrics_when(&st, |m| {
        m.contains("siptrack_recordings_repaired_total 1\n")
    });
    assert_eq!(metric(&m, "siptrack_recordings_repaired_total "), 1, "{m}");
    // The interrupted call's record says partial.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = recording_of(&rec_dir, &call_id);
        if r.as_ref().is_some_and(|r| r.0 == "partial") {
            break;
        }
        assert!(Instant::now() < deadline, "{r:?}\n{}", st.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lines of a message without the headers the proxy adds or edits
/// (and the tracking header the call-tracking rewrite adds, SPEC T-2).
fn without_proxy_headers(m: &SipTrace) -> Vec<String> {
    m.text
        .lines()
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
                "via" | "v" | "record-route" | "max-forwards" | "x-roistat-phone"
            )
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn record_calls_false_passes_sdp_byte_for_byte_and_opens_no_media_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec_dir = dir.path().join("recordings");
    let base = free_ports(8);
    let uas_port = free_port();
    let st = Siptrack::start(&config(
        uas_port,
        false,
        (base, base + 7),
        &rec_dir.display().to_string(),
    ));
    let before = udp_ports_of(st.pid());
    let uas = Sipp::uas("uas_media.xml")
        .port(uas_port)
        .arg("-key")
        .arg("rtp_port")
        .arg("40002")
        .pause_ms(500)
        .spawn();
    let uac = Sipp::uac("uac_media.xml", st.sip_addr())
        .calls(1)
        .arg("-key")
        .arg("rtp_port")
        .arg("40000")
        .pause_ms(1000)
        .spawn();
    wait_for(&uac, "200 at the UAC", |m| {
        m.dir == Dir::Received && m.is_response(200)
    });
    let during = udp_ports_of(st.pid());
    let uac_run = uac.wait();
    let uas_run = uas.wait_at_most(Duration::from_secs(5));
    assert_eq!(
        uac_run.successful(),
        1,
        "{}\n{}",
        uac_run.summary(),
        uas_run.summary()
    );
    assert_eq!(during, before, "no socket opened for the call");
    assert_eq!(before, vec![st.sip_port], "only SIP");

    let pick = |run: &common::SippRun, dir: Dir, f: &dyn Fn(&SipTrace) -> bool| -> SipTrace {
        run.messages
            .iter()
            .find(|m| m.dir == dir && f(m))
            .cloned()
            .unwrap_or_else(|| panic!("message missing\n{}", run.summary()))
    };
    let sent_invite = pick(&uac_run, Dir::Sent, &|m| m.is_request("INVITE"));
    let got_invite = pick(&uas_run, Dir::Received, &|m| m.is_request("INVITE"));
    let sent_ok = pick(&uas_run, Dir::Sent, &|m| {
        m.is_response(200) && m.cseq_method().as_deref() == Some("INVITE")
    });
    let got_ok = pick(&uac_run, Dir::Received, &|m| {
        m.is_response(200) && m.cseq_method().as_deref() == Some("INVITE")
    });
    assert_eq!(
        body(&got_invite),
        body(&sent_invite),
        "INVITE's SDP untouched"
    );
    assert_eq!(body(&got_ok), body(&sent_ok), "200's SDP untouched");
    assert!(body(&got_invite).contains("m=audio 40000 RTP/AVP 0 8 101\n"));
    assert_eq!(
        without_proxy_headers(&got_invite),
        without_proxy_headers(&sent_invite)
    );
    assert_eq!(
        without_proxy_headers(&got_ok),
        without_proxy_headers(&sent_ok)
    );
    let m = metrics_when(&st, |m| {
        m.contains("siptrack_unrecorded_calls_total{reason=\"disabled\"} 1\n")
    });
    assert_eq!(
        metric(&m, "siptrack_unrecorded_calls_total{reason=\"disabled\"} "),
        1,
        "{m}"
    );
    assert_eq!(
        metric(&m, "siptrack_media_relayed_packets_total "),
        0,
        "{m}"
    );
    assert!(!rec_dir.exists(), "no recordings directory made");
}

/// A recorded call with `rtp_timeout_seconds = 2`, the callee answering
/// after 0.5 s: siptrack between SIPp `uac` (its `-d` pause
/// `uac_pause_ms`) and `uas`, each side's RTP endpoint sending half a
/// second of tone through siptrack once the call is up. Returns when the
/// tones are sent.
struct TimedCall {
    _dir: tempfile::TempDir,
    rec_dir: std::path::PathBuf,
    st: Siptrack,
    caller: RtpEndpoint,
    uas: SippProcess,
    uac: SippProcess,
    call_id: String,
    /// When the last tone packet left: silence both ways from here.
    silent_from: Instant,
}

fn timed_call(uas: &str, uac: &str, uac_pause_ms: Option<u64>) -> TimedCall {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec_dir = dir.path().join("recordings");
    let base = free_ports(8);
    let uas_port = free_port();
    let text = config(
        uas_port,
        true,
        (base, base + 7),
        &rec_dir.display().to_string(),
    )
    .replace("[media]\n", "[media]\nrtp_timeout_seconds = 2\n");
    let st = Siptrack::start(&text);
    let caller = RtpEndpoint::bind(free_port());
    let callee = RtpEndpoint::bind(free_port());
    let uas = Sipp::uas(uas)
        .port(uas_port)
        .arg("-key")
        .arg("rtp_port")
        .arg(callee.port().to_string())
        .pause_ms(500)
        .spawn();
    let mut uac = Sipp::uac(uac, st.sip_addr())
        .calls(1)
        .arg("-key")
        .arg("rtp_port")
        .arg(caller.port().to_string())
        .time_limit(Duration::from_secs(20));
    if let Some(ms) = uac_pause_ms {
        uac = uac.pause_ms(ms);
    }
    let uac = uac.spawn();
    let invite = wait_for(&uas, "INVITE at the UAS", |m| {
        m.dir == Dir::Received && m.is_request("INVITE")
    });
    let ok = wait_for(&uac, "200 at the UAC", |m| {
        m.dir == Dir::Received && m.is_response(200) && m.cseq_method().as_deref() == Some("INVITE")
    });
    let call_id = invite.call_id().expect("Call-ID");
    let a = caller.send_tone(sdp_media_addr(body(&ok)).expect("SDP"), 440.0, 25, 1);
    let b = callee.send_tone(sdp_media_addr(body(&invite)).expect("SDP"), 1000.0, 25, 2);
    let (_, a_end) = a.join().expect("caller tone");
    let (_, b_end) = b.join().expect("callee tone");
    TimedCall {
        _dir: dir,
        rec_dir,
        st,
        caller,
        uas,
        uac,
        call_id,
        silent_from: a_end.max(b_end),
    }
}

#[test]
fn a_call_silent_for_the_rtp_timeout_is_ended_with_a_bye_to_both_sides() {
    // Half a second of media, then silence both ways.
    let TimedCall {
        _dir,
        rec_dir,
        st,
        uas,
        uac,
        call_id,
        silent_from,
        ..
    } = timed_call("uas_media.xml", "uac_media_timeout.xml", None);
    let bye_at_uac = wait_for(&uac, "BYE at the UAC", |m| {
        m.dir == Dir::Received && m.is_request("BYE")
    });
    let waited = silent_from.elapsed();
    let uac_run = uac.wait();
    let uas_run = uas.wait_at_most(Duration::from_secs(5));
    assert_eq!(
        uac_run.successful(),
        1,
        "{}\n{}",
        uac_run.summary(),
        uas_run.summary()
    );
    assert!(
        uas_run
            .messages
            .iter()
            .any(|m| m.dir == Dir::Received && m.is_request("BYE")),
        "the callee got a BYE too\n{}",
        uas_run.summary()
    );
    assert!(
        waited >= Duration::from_millis(1900) && waited <= Duration::from_millis(4000),
        "BYE {waited:?} after the last packet (timeout 2 s)"
    );
    assert!(
        bye_at_uac.text.contains("Reason: SIP;cause=408"),
        "{}",
        bye_at_uac.text
    );
    let row = status_hangup_recording(&rec_dir, &call_id, &st);
    assert_eq!(
        (row.0.as_str(), row.1.as_str(), row.2.as_str()),
        ("answered", "timeout", "recorded"),
        "{}",
        st.log()
    );
}

/// A re-INVITE siptrack cannot anchor (it adds a BFCP stream over TCP, as
/// a video phone sharing its screen does) takes the media around siptrack
/// from then on: the silence at siptrack's ports that follows must not end
/// the call, and the recording holds the call up to the re-INVITE
/// (`partial`). Trial, 2026-12-02: both sides got a BYE "RTP timeout"
/// `rtp_timeout_seconds` later, and the record said `recorded`.
#[test]
fn a_re_invite_taking_the_media_around_siptrack_does_not_time_the_call_out() {
    // Half a second of media through siptrack before the re-INVITE.
    let TimedCall {
        _dir,
        rec_dir,
        st,
        caller,
        uas,
        uac,
        call_id,
        ..
    } = timed_call("uas_bfcp.xml", "uac_bfcp.xml", Some(1000));
    let reinvite = wait_for(&uas, "re-INVITE at the UAS", |m| {
        m.dir == Dir::Received && m.is_request("INVITE") && m.text.contains("TCP/BFCP")
    });
    assert!(
        reinvite
            .text
            .contains(&format!("m=audio {} ", caller.port())),
        "the re-INVITE passes as it came\n{}",
        reinvite.text
    );
    let uac_run = uac.wait();
    let uas_run = uas.wait_at_most(Duration::from_secs(5));
    assert_eq!(
        uac_run.successful(),
        1,
        "{}\n{}\n{}",
        uac_run.summary(),
        uas_run.summary(),
        st.log()
    );
    for (side, run) in [("caller", &uac_run), ("callee", &uas_run)] {
        assert!(
            !run.messages
                .iter()
                .any(|m| m.dir == Dir::Received && m.text.contains("RTP timeout")),
            "siptrack hung up on the {side}\n{}",
            run.summary()
        );
    }
    let row = status_hangup_recording(&rec_dir, &call_id, &st);
    assert_eq!(
        (row.0.as_str(), row.1.as_str(), row.2.as_str()),
        ("answered", "caller", "partial"),
        "{}",
        st.log()
    );
}
