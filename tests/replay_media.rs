//! Captures with media replay through the relay and the recorder (issue
//! 13 item 6): each media case of pcaps/ is replayed twice; both give the
//! same lines and a WAV whose SHA-256 is the one committed here (and in
//! the case's expected.jsonl); the WAV holds the caller's tone on the left
//! and the callee's on the right (Goertzel), lasts as long as the call's
//! media did (within 100 ms), shows the capture's lost packets as silence
//! and its key presses in the call record. If the replay dropped the RTP,
//! there would be no WAV ("no media received") and every check here fails.

mod common;

use std::path::{Path, PathBuf};

use common::media::{dominant, read_wav, report};
use serde_json::Value;
use sha2::{Digest, Sha256};
use siptrack::config::Config;

struct Case {
    dir: &'static str,
    call_id: &'static str,
    /// The committed checksum of the WAV (README "Pcap replay").
    sha256: &'static str,
    /// RTP/RTCP datagrams of the capture that reach the relay.
    fed: u64,
    /// Caller's and callee's tones (Hz); `None` for a corpus capture of speech.
    tones: Option<(f64, f64)>,
    /// The longest silence (seconds) inside each side's audio: the
    /// capture's longest run of lost packets.
    longest_gap: Option<(f64, f64)>,
    /// Packets lost from each side's stream in the capture: the silence
    /// inside each side's audio is that many 20 ms packets (reordered
    /// packets are in their place, not lost).
    lost: Option<(u32, u32)>,
    /// A hold/resume in the middle: both sides' longest silence is the
    /// time between the hold and the resume re-INVITEs.
    hold: bool,
    dtmf: &'static [(&'static str, &'static str)],
}

const CASES: &[Case] = &[
    Case {
        dir: "own-media-pcmu-loss",
        call_id: "1-9717@127.0.0.1",
        sha256: "0ac7bdf105165d5b8f129dd504a1f50ef6e065e559022cd487c231073427a1ef",
        fed: 195,
        tones: Some((440.0, 1000.0)),
        // Caller: packets 20-22 lost (60 ms); callee: one packet (20 ms).
        longest_gap: Some((0.06, 0.02)),
        lost: Some((4, 1)),
        hold: false,
        dtmf: &[],
    },
    Case {
        dir: "own-media-pcma-early-dtmf",
        call_id: "1-10974@127.0.0.1",
        sha256: "65ffd59891e3544ed095a82c56a99eab4217fde56ef99236e770711c52d4743f",
        fed: 259,
        tones: Some((440.0, 1000.0)),
        longest_gap: None,
        lost: None,
        hold: false,
        dtmf: &[("5", "caller")],
    },
    Case {
        dir: "own-media-pcmu-hold",
        call_id: "1-26268@127.0.0.1",
        sha256: "a1c331d7c3d770c6401780b38d0f5bcc8cbb589aabc95dffdc4799748b22ccb5",
        fed: 195,
        tones: Some((440.0, 1000.0)),
        longest_gap: None,
        lost: None,
        hold: true,
        dtmf: &[],
    },
    Case {
        dir: "corpus-rtp-g711",
        call_id: "12013223@200.57.7.195",
        sha256: "bf6234e22b28eeee15da60d819890c819227b949359262cc80fd0692b069d805",
        fed: 1453,
        tones: None,
        longest_gap: None,
        lost: None,
        hold: false,
        dtmf: &[],
    },
];

fn case_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pcaps")
        .join(name)
}

/// The case's capture and config (its siptrack.toml, else the replay's default).
fn parts(dir: &Path) -> (PathBuf, Config) {
    let capture = std::fs::read_dir(dir)
        .expect("case dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension()
                .is_some_and(|x| x == "pcap" || x == "pcapng" || x == "cap")
        })
        .unwrap_or_else(|| panic!("{}: no capture", dir.display()));
    let toml = dir.join("siptrack.toml");
    let config = if toml.exists() {
        Config::load(&toml).unwrap_or_else(|e| panic!("{}: {e}", toml.display()))
    } else {
        Config::parse(siptrack::replay::DEFAULT_CONFIG).expect("default config")
    };
    (capture, config)
}

fn replay(capture: &Path, config: &Config, recordings: &Path) -> Vec<String> {
    let bytes = std::fs::read(capture).expect("capture");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(siptrack::replay::replay(
        "capture", &bytes, config, recordings,
    ))
    .unwrap_or_else(|(_, why)| panic!("{}: refused: {why}", capture.display()))
}

fn events(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How long the call's media ran as the replay's own SIP shows it: from
/// the first answer with SDP siptrack sent the caller (183 or 200: where
/// recording starts) to the BYE it forwarded.
fn media_seconds(ev: &[Value], call_id: &str) -> f64 {
    let of_call = |e: &&Value| {
        e["event"] == "send"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("Call-ID: {call_id}\r\n")))
    };
    let start = ev
        .iter()
        .filter(of_call)
        .find(|e| {
            e["direction"] == "to-caller"
                && e["first_line"]
                    .as_str()
                    .is_some_and(|l| l.starts_with("SIP/2.0 183") || l.starts_with("SIP/2.0 200"))
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("application/sdp"))
        })
        .and_then(|e| e["t_ms"].as_u64())
        .expect("an answer with SDP");
    let end = ev
        .iter()
        .filter(of_call)
        .find(|e| {
            e["first_line"]
                .as_str()
                .is_some_and(|l| l.starts_with("BYE "))
        })
        .and_then(|e| e["t_ms"].as_u64())
        .expect("a BYE");
    (end - start) as f64 / 1000.0
}

/// How long the call was on hold: from the re-INVITE with `a=sendonly`
/// siptrack forwarded to the one with `a=sendrecv` after it.
fn hold_seconds(ev: &[Value]) -> f64 {
    let reinvite = |dir: &str| {
        ev.iter()
            .filter(|e| e["event"] == "send" && e["direction"] == "to-callee")
            .filter(|e| {
                e["message"].as_str().is_some_and(|m| {
                    // The initial INVITE says sendrecv too.
                    m.starts_with("INVITE ")
                        && !m.contains("CSeq: 1 INVITE")
                        && m.contains(&format!("a={dir}"))
                })
            })
            .find_map(|e| e["t_ms"].as_u64())
            .unwrap_or_else(|| panic!("a re-INVITE with a={dir}"))
    };
    (reinvite("sendrecv") - reinvite("sendonly")) as f64 / 1000.0
}

#[test]
fn captures_with_media_give_the_same_wav_every_time() {
    for case in CASES {
        let name = case.dir;
        let (capture, config) = parts(&case_dir(name));
        let first_dir = tempfile::tempdir().expect("tempdir");
        let second_dir = tempfile::tempdir().expect("tempdir");
        let first = replay(&capture, &config, first_dir.path());
        let second = replay(&capture, &config, second_dir.path());
        assert!(first == second, "{name}: two replays, different lines");
        let ev = events(&first);

        let call = ev
            .iter()
            .find(|e| e["event"] == "call" && e["call_id"] == case.call_id)
            .unwrap_or_else(|| panic!("{name}: no call line for {}", case.call_id));
        assert_eq!(call["recording"], "recorded", "{name}: {call}");
        assert_eq!(call["wav"]["sha256"], case.sha256, "{name}: {call}");
        let summary = ev.last().expect("summary");
        assert_eq!(summary["media"]["datagrams_fed"], case.fed, "{name}");
        assert_eq!(
            summary["media"]["dropped_other_source"], 0,
            "{name}: {summary}"
        );

        // The files themselves, byte for byte, in both directories.
        let file = call["wav"]["file"].as_str().expect("file name");
        let bytes = std::fs::read(first_dir.path().join(file)).expect("the WAV");
        let again = std::fs::read(second_dir.path().join(file)).expect("the WAV again");
        assert_eq!(sha256_hex(&bytes), case.sha256, "{name}");
        assert!(bytes == again, "{name}: the two WAVs differ");
        // The header is the 44 bytes the sizes give and nothing else (no
        // LIST/INFO chunk with a date): no wall-clock data in the file.
        let data = bytes.len() as u32 - 44;
        assert_eq!(
            bytes[..44],
            siptrack::media::wav::header(data, true),
            "{name}: header"
        );

        let wav = read_wav(&bytes).expect("a WAV");
        assert!(
            wav.complete && wav.channels == 2 && wav.rate == 8000,
            "{name}"
        );
        let (left, right) = (wav.channel(0), wav.channel(1));
        match case.tones {
            Some((caller_hz, callee_hz)) => {
                for (side, x, hz) in [("left", left, caller_hz), ("right", right, callee_hz)] {
                    let got = dominant(x).unwrap_or_else(|| panic!("{name}: {side} silent"));
                    assert!(
                        (got - hz).abs() <= 5.0,
                        "{name}: {side} is {got} Hz, want {hz}"
                    );
                }
                let want = media_seconds(&ev, case.call_id);
                assert!(
                    (wav.seconds() - want).abs() <= 0.1,
                    "{name}: WAV {:.3} s, the call's media {want:.3} s",
                    wav.seconds()
                );
                println!(
                    "{name}: left {:?} Hz, right {:?} Hz, {:.3} s (media {want:.3} s)",
                    dominant(left),
                    dominant(right),
                    wav.seconds()
                );
            }
            None => {
                // Speech both ways: sound on each channel.
                for (side, x) in [("left", left), ("right", right)] {
                    assert!(
                        report(x, 2000.0).audible_s > 1.0,
                        "{name}: {side} has no audio"
                    );
                }
            }
        }
        if let Some((caller_gap, callee_gap)) = case.longest_gap {
            // Lost packets are silence of their length; reordered ones
            // are in their place (no gap of their own).
            for (side, x, want) in [("left", left, caller_gap), ("right", right, callee_gap)] {
                let gap = report(x, 12000.0).longest_gap_s;
                assert!(
                    (gap - want).abs() <= 0.006,
                    "{name}: {side}'s longest gap {gap} s, want {want} s"
                );
            }
        }
        if let Some((caller_lost, callee_lost)) = case.lost {
            for (side, x, n) in [("left", left, caller_lost), ("right", right, callee_lost)] {
                let r = report(x, 12000.0);
                let (from, to) = r.span_s.expect("audio");
                let silent = (to - from) - r.audible_s;
                let want = f64::from(n) * 0.02;
                assert!(
                    (silent - want).abs() <= 0.006,
                    "{name}: {side} silent {silent:.4} s inside its audio, want {want} s ({n} lost packets)"
                );
            }
        }
        if case.hold {
            // Both streams stopped while on hold: one silence of the hold's
            // length on each side (within two packets), the audio on both
            // sides of it.
            let want = hold_seconds(&ev);
            for (side, x) in [("left", left), ("right", right)] {
                let gap = report(x, 12000.0).longest_gap_s;
                assert!(
                    (gap - want).abs() <= 0.04,
                    "{name}: {side}'s longest gap {gap} s, the hold lasted {want} s"
                );
            }
        }
        let dtmf: Vec<(String, String)> = call["dtmf"]
            .as_array()
            .expect("dtmf list")
            .iter()
            .map(|d| {
                (
                    d["digit"].as_str().unwrap_or("").to_string(),
                    d["side"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = case
            .dtmf
            .iter()
            .map(|(d, s)| (d.to_string(), s.to_string()))
            .collect();
        assert_eq!(dtmf, want, "{name}: DTMF");
    }
}

/// With `record_calls = false` the same capture passes its media by:
/// no session, nothing fed, no WAV.
#[test]
fn without_recording_no_media_is_fed() {
    let (capture, mut config) = parts(&case_dir("own-media-pcmu-loss"));
    config.media.record_calls = false;
    let dir = tempfile::tempdir().expect("tempdir");
    let ev = events(&replay(&capture, &config, dir.path()));
    let call = ev.iter().find(|e| e["event"] == "call").expect("call");
    assert_eq!(call["recording"], "not_recorded");
    assert_eq!(call["recording_reason"], "recording disabled");
    assert_eq!(call["wav"], Value::Null);
    let summary = ev.last().expect("summary");
    assert_eq!(summary["media"]["datagrams_fed"], 0);
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        0,
        "no file"
    );
}

/// `siptrack replay --recordings DIR` keeps the WAVs there; without it
/// they go to a temporary directory of the process that is gone after.
#[test]
fn the_cli_keeps_the_wavs_only_where_it_is_told() {
    let case = &CASES[0];
    let dir = case_dir(case.dir);
    let (capture, _) = parts(&dir);
    let kept = tempfile::tempdir().expect("tempdir");
    let wavs = kept.path().join("wavs");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siptrack"))
        .arg("replay")
        .arg(&capture)
        .arg("--config")
        .arg(dir.join("siptrack.toml"))
        .arg("--recordings")
        .arg(&wavs)
        .output()
        .expect("siptrack replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<PathBuf> = std::fs::read_dir(&wavs)
        .expect("--recordings dir made")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let bytes = std::fs::read(&files[0]).expect("WAV");
    assert_eq!(sha256_hex(&bytes), case.sha256);

    let child = std::process::Command::new(env!("CARGO_BIN_EXE_siptrack"))
        .arg("replay")
        .arg(&capture)
        .arg("--config")
        .arg(dir.join("siptrack.toml"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("siptrack replay");
    let pid = child.id();
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(case.sha256), "the checksum is still reported");
    let scratch = std::env::temp_dir().join(format!("siptrack-replay-{pid}-0"));
    assert!(!scratch.exists(), "{} left behind", scratch.display());
}
