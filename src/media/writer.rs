//! The recording writer: a thread of its own that owns every open
//! recording file, so a slow or full disk never holds up packet
//! forwarding. The relay hands it packets through a bounded queue and
//! never waits: when the queue is full the packet is left out of the
//! recording and counted. At a call's end the file's header is
//! finalised and the file fsynced. At start, [`repair_dir`] finalises the
//! files a crash left unfinished.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use bytes::Bytes;

use super::link;
use super::metrics::MediaMetrics;
use super::recorder::{NoRecording, Payloads, Recorder, Summary};
use super::relay::SessionId;
use super::timeline::Side;
use super::wav::{self, HeaderState};

/// Packets waiting for the disk, at most (about 2 MB of G.711).
pub const QUEUE: usize = 8192;

/// What the relay asks of the recordings. Times are milliseconds on the
/// relay's clock (the running relay's monotonic clock, or a capture's
/// time in `siptrack replay`): only their differences reach the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    Start {
        session: SessionId,
        call_id: Bytes,
        payloads: Payloads,
        at_ms: u64,
    },
    Packet {
        session: SessionId,
        side: Side,
        data: Vec<u8>,
        at_ms: u64,
    },
    Finish {
        session: SessionId,
        /// When the call ended (its BYE, CANCEL or timeout), on the
        /// relay's clock: the recording is as long as the call, silence
        /// after the last packet included. None when the relay stops or a
        /// capture ends (the end is not known).
        at_ms: Option<u64>,
    },
}

/// How a call's recording ended, for the log and the call record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub call_id: Bytes,
    pub file: PathBuf,
    pub result: Result<Summary, NoRecording>,
}

/// The relay's end of the queue.
#[derive(Clone)]
pub struct WriterHandle {
    tx: SyncSender<Job>,
    metrics: Arc<MediaMetrics>,
    lost: Lost,
}

/// Packets a full queue lost, per session: the writer takes its session's
/// count when the recording finishes, so the call's recording says it has
/// gaps (trial, 2026-12-02: 240 calls at once lost 9,245 packets and every
/// call read "recorded"; only the node-wide counter knew).
type Lost = Arc<std::sync::Mutex<HashMap<SessionId, u64>>>;

/// Sessions a loss is kept for at most: finished sessions take theirs
/// out, so only a writer that never finishes could fill it.
const LOST_SESSIONS_MAX: usize = 65_536;

impl WriterHandle {
    /// Never blocks: a full queue loses the packet (counted), not the call.
    pub fn packet(&self, session: SessionId, side: Side, data: &[u8], at_ms: u64) {
        let job = Job::Packet {
            session,
            side,
            data: data.to_vec(),
            at_ms,
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(job) {
            self.metrics.recorder_queue_overflow.fetch_add(1, Relaxed);
            if let Ok(mut lost) = self.lost.lock() {
                if lost.len() < LOST_SESSIONS_MAX || lost.contains_key(&session) {
                    *lost.entry(session).or_default() += 1;
                }
            }
        }
    }

    /// Start and finish must not be lost: they wait for room (the writer
    /// takes jobs as fast as the disk allows, packets of full calls only
    /// ever queue behind them).
    pub fn control(&self, job: Job) {
        let _ = self.tx.send(job);
    }
}

struct Open {
    call_id: Bytes,
    path: PathBuf,
    started_ms: u64,
    recorder: Recorder<BufWriter<File>>,
    /// Its write failure went to `/healthz` already.
    failure_told: bool,
}

/// Every open recording file of a node, by session: what the writer
/// thread runs for each job, and what `siptrack replay` runs directly, so
/// a live call and its replay write the same bytes.
pub struct Recordings {
    dir: PathBuf,
    metrics: Arc<MediaMetrics>,
    open: HashMap<SessionId, Open>,
    lost: Lost,
    /// A file already there for the Call-ID is written over (a replay,
    /// which makes the same file again); a live node keeps it.
    replace: bool,
}

impl Recordings {
    /// Recordings written to `dir` (as `link::file_name` of the Call-ID).
    pub fn new(dir: PathBuf, metrics: Arc<MediaMetrics>) -> Recordings {
        Recordings {
            dir,
            metrics,
            open: HashMap::new(),
            lost: Lost::default(),
            replace: false,
        }
    }

    /// Files already there are written over: `siptrack replay`, run again
    /// into the same directory, makes the same recordings again.
    pub fn replacing(mut self) -> Recordings {
        self.replace = true;
        self
    }

    /// Does one job; returns an outcome when a recording ended (or could
    /// not start).
    pub fn job(&mut self, job: Job) -> Option<Outcome> {
        let outcome = self.do_job(job)?;
        self.metrics.note_recording(&outcome.result);
        Some(outcome)
    }

    fn do_job(&mut self, job: Job) -> Option<Outcome> {
        let metrics = &self.metrics;
        match job {
            Job::Start {
                session,
                call_id,
                payloads,
                at_ms,
            } => {
                let path = self.dir.join(link::file_name(&call_id));
                match start(&path, payloads, self.replace) {
                    Ok(recorder) => {
                        metrics.recordings_started.fetch_add(1, Relaxed);
                        self.open.insert(
                            session,
                            Open {
                                call_id,
                                path,
                                started_ms: at_ms,
                                recorder,
                                failure_told: false,
                            },
                        );
                        None
                    }
                    Err(e) => {
                        metrics.recording_write_errors.fetch_add(1, Relaxed);
                        metrics.unrecorded_disk.fetch_add(1, Relaxed);
                        Some(Outcome {
                            call_id,
                            file: path,
                            result: Err(e),
                        })
                    }
                }
            }
            Job::Packet {
                session,
                side,
                data,
                at_ms,
            } => {
                if let Some(o) = self.open.get_mut(&session) {
                    let ms = at_ms.saturating_sub(o.started_ms);
                    o.recorder.on_rtp(side, &data, ms);
                    // A disk that fills during a call shows on /healthz
                    // now, not when the call ends (trial, 2026-12-02:
                    // calls last up to hours).
                    if let (false, Some(e)) = (o.failure_told, o.recorder.failed()) {
                        o.failure_told = true;
                        metrics.note_recording(&Err(e.clone()));
                    }
                }
                None
            }
            Job::Finish { session, at_ms } => {
                let o = self.open.remove(&session)?;
                let end_ms = at_ms.map(|at| at.saturating_sub(o.started_ms));
                let lost = self.lost.lock().ok().and_then(|mut l| l.remove(&session));
                let mut outcome = finish(o, metrics, end_ms);
                if let Ok(s) = outcome.result.as_mut() {
                    s.lost_packets = lost.unwrap_or(0);
                }
                Some(outcome)
            }
        }
    }

    /// Finishes every recording still open (the relay stopped, a replay
    /// ended), in session order.
    pub fn finish_all(&mut self) -> Vec<Outcome> {
        let mut open: Vec<(SessionId, Open)> = self.open.drain().collect();
        open.sort_by_key(|(s, _)| *s);
        open.into_iter()
            .map(|(_, o)| finish(o, &self.metrics, None))
            .inspect(|o| self.metrics.note_recording(&o.result))
            .collect()
    }
}

/// Starts the writer thread; `done` gets each recording's outcome.
pub fn spawn(
    dir: PathBuf,
    metrics: Arc<MediaMetrics>,
    done: impl Fn(Outcome) + Send + 'static,
) -> std::io::Result<WriterHandle> {
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let mut recordings = Recordings::new(dir, metrics.clone());
    let lost = recordings.lost.clone();
    std::thread::Builder::new()
        .name("recorder".into())
        .spawn(move || run(rx, &mut recordings, done))?;
    Ok(WriterHandle { tx, metrics, lost })
}

fn run(rx: Receiver<Job>, recordings: &mut Recordings, done: impl Fn(Outcome)) {
    // Ends when every handle is gone (the relay stopped): what is still
    // open is finished, so a clean stop leaves only complete files.
    while let Ok(job) = rx.recv() {
        if let Some(o) = recordings.job(job) {
            done(o);
        }
    }
    for o in recordings.finish_all() {
        done(o);
    }
}

fn start(
    path: &Path,
    payloads: Payloads,
    replace: bool,
) -> Result<Recorder<BufWriter<File>>, NoRecording> {
    let file = create(path, replace).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => NoRecording::Disk(KEPT.into()),
        _ => NoRecording::Disk(e.to_string()),
    })?;
    Recorder::new(BufWriter::with_capacity(32 * 1024, file), payloads).inspect_err(|_| {
        // Created, but not even its header fits: nothing to keep.
        let _ = std::fs::remove_file(path);
    })
}

/// The file for a new recording. The directory is made again when it is
/// gone (trial, 2026-12-02: after `rm -rf` of the recordings directory
/// every later call went unrecorded until an operator made it again).
///
/// A file already there (`replace` false) is another call's recording
/// under the same Call-ID, which a UA or SBC may reuse: it is kept, and
/// this call goes unrecorded (trial, 2026-12-03: the later call wrote over
/// it, so the first call's CRM link played another client's call, or,
/// with no media, deleted it).
fn create(path: &Path, replace: bool) -> std::io::Result<File> {
    let open = || {
        let mut o = File::options();
        o.write(true);
        if replace {
            o.create(true).truncate(true);
        } else {
            o.create_new(true);
        }
        o.open(path)
    };
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
                return Err(e);
            };
            std::fs::create_dir_all(dir)?;
            tracing::warn!(dir = %dir.display(), "the recordings directory was gone (deleted while running?); made it again");
            open()
        }
        other => other,
    }
}

/// The reason a call whose Call-ID names a recording already on disk
/// goes unrecorded.
const KEPT: &str = "a recording of an earlier call with this Call-ID is kept, not written over";

/// Why a finished file is no recording, when it was deleted while the
/// call was recorded: its last name is gone, so a link would answer 404
/// (trial, 2026-12-02: the record said "recorded").
fn unlinked(f: &File, path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = f.metadata() else { return Ok(()) };
    if m.nlink() == 0 {
        return Err("the file was deleted while the call was recorded".into());
    }
    // Moved or renamed away (QA, 2026-12-02): its name is another file's,
    // or nobody's.
    match std::fs::metadata(path) {
        Ok(at) if at.dev() == m.dev() && at.ino() == m.ino() => Ok(()),
        _ => Err("the file was moved away while the call was recorded".into()),
    }
}

fn finish(o: Open, metrics: &MediaMetrics, end_ms: Option<u64>) -> Outcome {
    let (w, mut summary) = o.recorder.finish(end_ms);
    if summary.failed.is_none() {
        let synced = w
            .ok_or_else(|| "no writer".to_string())
            .and_then(|w| w.into_inner().map_err(|e| e.error().to_string()))
            .and_then(|f| f.sync_all().map_err(|e| e.to_string()).map(|()| f))
            .and_then(|f| unlinked(&f, &o.path));
        if let Err(e) = synced {
            summary.failed = Some(NoRecording::Disk(e));
        }
    }
    metrics.recordings_finished.fetch_add(1, Relaxed);
    for (count, n) in [
        (
            &metrics.recording_late_samples,
            summary.caller.late_samples + summary.callee.late_samples,
        ),
        (
            &metrics.recording_rebases,
            summary.caller.rebases + summary.callee.rebases,
        ),
        (
            &metrics.recording_other_payload_packets,
            summary.unsupported_packets,
        ),
    ] {
        count.fetch_add(n, Relaxed);
    }
    if summary.failed.is_none() && summary.caller.packets + summary.callee.packets == 0 {
        // A WAV of silence only would give the CRM a link to nothing.
        let _ = std::fs::remove_file(&o.path);
        // Media came, of a codec the answer allowed besides G.711 (trial,
        // 2026-12-02: both sides sent G.729 and the record said "no media
        // received").
        let reason = match summary.unsupported_type {
            Some(pt) => {
                metrics.unrecorded_codec_in_media.fetch_add(1, Relaxed);
                NoRecording::Codec(format!("payload type {pt}"))
            }
            None => {
                metrics.unrecorded_no_media.fetch_add(1, Relaxed);
                NoRecording::NoMedia
            }
        };
        return Outcome {
            call_id: o.call_id,
            file: o.path,
            result: Err(reason),
        };
    }
    let result = match summary.failed.take() {
        None => Ok(summary),
        Some(e) => {
            metrics.recording_write_errors.fetch_add(1, Relaxed);
            metrics.unrecorded_disk.fetch_add(1, Relaxed);
            // What was written is no recording the call record links to:
            // left, it kept a full disk full and was taken for a crash's
            // file at the next start (trial, 2026-12-02).
            let _ = std::fs::remove_file(&o.path);
            Err(e)
        }
    };
    Outcome {
        call_id: o.call_id,
        file: o.path,
        result,
    }
}

/// What [`repair_dir`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Files a crash left unfinished, now finalised from their length
    /// (partial recordings).
    pub partial: Vec<PathBuf>,
    /// Files that died before their header was written: removed.
    pub removed: Vec<PathBuf>,
    /// Files that could not be read or repaired, with the reason.
    pub failed: Vec<(PathBuf, String)>,
}

/// Finalises every `.wav` in `dir` whose header says it was never
/// finished (the process died during its call). Run before the relay
/// starts: every file still being written then is one of these.
pub fn repair_dir(dir: &Path) -> Repaired {
    let mut out = Repaired::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "wav") {
            continue;
        }
        let mut head = [0u8; 44];
        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
        let read = File::open(&path).and_then(|mut f| f.read_exact(&mut head));
        if read.is_err() && len >= wav::HEADER_LEN {
            out.failed.push((path, "unreadable".into()));
            continue;
        }
        if read.is_ok() && !matches!(wav::header_state(&head, len), HeaderState::Partial { .. }) {
            continue;
        }
        if len < wav::HEADER_LEN {
            // Died before even the header was written: nothing to keep.
            if std::fs::remove_file(&path).is_ok() {
                out.removed.push(path);
            }
            continue;
        }
        match wav::finalise_partial(&path) {
            Ok(_) => out.partial.push(path),
            Err(e) => out.failed.push((path, e.to_string())),
        }
    }
    out.partial.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// A recording of G.711 (the default payloads) starting at 0.
    fn start_job(session: SessionId, call_id: &'static [u8]) -> Job {
        Job::Start {
            session,
            call_id: Bytes::from_static(call_id),
            payloads: Payloads::default(),
            at_ms: 0,
        }
    }

    fn rtp(seq: u16, ts: u32, payload: u8) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&7u32.to_be_bytes());
        p.extend_from_slice(&[payload; 160]);
        p
    }

    #[test]
    fn a_call_is_written_finalised_and_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(MediaMetrics::default());
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let w = spawn(dir.path().to_path_buf(), metrics.clone(), move |o| {
            if let Ok(mut v) = g.lock() {
                v.push(o);
            }
        })
        .expect("writer");
        w.control(start_job(1, b"a/b@c"));
        for i in 0..50u16 {
            let at = u64::from(i) * 20;
            w.packet(1, Side::Caller, &rtp(i, u32::from(i) * 160, 0x80), at);
            w.packet(1, Side::Callee, &rtp(i, u32::from(i) * 160, 0x00), at);
        }
        // The call ends 2 s after its last packet: the file runs to its end.
        w.control(Job::Finish {
            session: 1,
            at_ms: Some(3_000),
        });
        // Answered, and media came, all of it G.729: a codec reason.
        w.control(start_job(4, b"g729"));
        for i in 0..10u16 {
            let mut g729 = rtp(i, u32::from(i) * 160, 0);
            g729[1] = 18;
            w.packet(4, Side::Caller, &g729, u64::from(i) * 20);
        }
        w.control(Job::Finish {
            session: 4,
            at_ms: Some(1_000),
        });
        // Answered, but no packet came: no file, and why.
        w.control(start_job(3, b"silent"));
        w.control(Job::Finish {
            session: 3,
            at_ms: None,
        });
        // A file that cannot be created (a directory in its place).
        std::fs::create_dir(dir.path().join(link::file_name(b"blocked"))).expect("mkdir");
        w.control(start_job(2, b"blocked"));
        drop(w);
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.lock().map(|v| v.len()).unwrap_or(0) < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let got = got.lock().map(|v| v.clone()).unwrap_or_default();
        let ok = got
            .iter()
            .find(|o| o.call_id.as_ref() == b"a/b@c")
            .expect("outcome");
        assert_eq!(ok.file, dir.path().join("a_2Fb_40c.wav"));
        let summary = ok.result.as_ref().expect("recorded");
        assert_eq!(summary.duration_ms, 3000);
        let bytes = std::fs::read(&ok.file).expect("file");
        let pcm = wav::samples(&bytes).expect("a finished WAV");
        let (talk, silence) = pcm.split_at(2 * 8000);
        assert!(talk.chunks(2).all(|f| f == [32124, -32124]));
        assert!(silence.iter().all(|&s| s == 0) && silence.len() == 2 * 16_000);
        let g729 = got
            .iter()
            .find(|o| o.call_id.as_ref() == b"g729")
            .expect("outcome");
        assert_eq!(
            g729.result,
            Err(NoRecording::Codec("payload type 18".into()))
        );
        assert!(!g729.file.exists(), "no empty WAV kept");
        assert_eq!(metrics.unrecorded_codec_in_media.load(Relaxed), 1);
        assert_eq!(metrics.recording_other_payload_packets.load(Relaxed), 10);
        let bad = got
            .iter()
            .find(|o| o.call_id.as_ref() == b"blocked")
            .expect("outcome");
        assert!(matches!(bad.result, Err(NoRecording::Disk(_))), "{bad:?}");
        assert_eq!(metrics.unrecorded_disk.load(Relaxed), 1);
        let silent = got
            .iter()
            .find(|o| o.call_id.as_ref() == b"silent")
            .expect("outcome");
        assert_eq!(silent.result, Err(NoRecording::NoMedia));
        assert!(!silent.file.exists(), "no empty WAV kept");
        assert_eq!(metrics.unrecorded_no_media.load(Relaxed), 1);
        assert_eq!(metrics.recordings_finished.load(Relaxed), 3);
    }

    #[test]
    fn files_a_crash_left_are_finalised_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n);
        // Unfinished: header placeholder and 1000 frames and a torn byte.
        let mut partial = wav::header(0, false).to_vec();
        partial.extend(std::iter::repeat_n(1u8, 4001));
        std::fs::write(p("crashed.wav"), &partial).expect("write");
        let mut done = wav::header(8, true).to_vec();
        done.extend([0u8; 8]);
        std::fs::write(p("done.wav"), &done).expect("write");
        std::fs::write(p("empty.wav"), b"RIFF").expect("write");
        std::fs::write(p("notes.txt"), b"not a recording").expect("write");
        let r = repair_dir(dir.path());
        assert_eq!(r.partial, [p("crashed.wav")]);
        assert_eq!(r.removed, [p("empty.wav")]);
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        let fixed = std::fs::read(p("crashed.wav")).expect("read");
        assert_eq!(wav::samples(&fixed).map(|s| s.len()), Some(2000));
        assert_eq!(std::fs::read(p("done.wav")).expect("read"), done);
        assert!(!p("empty.wav").exists());
        assert!(
            repair_dir(dir.path()).partial.is_empty(),
            "a second start finds nothing"
        );
    }

    /// The recordings directory deleted while running: the next call's
    /// file makes it again; a file deleted while its call was recorded
    /// is no recording.
    #[test]
    fn a_deleted_directory_is_made_again_and_a_deleted_file_is_no_recording() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("recordings");
        let metrics = Arc::new(MediaMetrics::default());
        let mut r = Recordings::new(dir.clone(), metrics.clone());
        let mut call = |session: SessionId, id: &'static [u8], delete: &dyn Fn()| {
            let started = r.job(Job::Start {
                session,
                call_id: Bytes::from_static(id),
                payloads: Payloads::default(),
                at_ms: 0,
            });
            assert!(started.is_none(), "{started:?}");
            for i in 0..10u16 {
                r.job(Job::Packet {
                    session,
                    side: Side::Caller,
                    data: rtp(i, u32::from(i) * 160, 0),
                    at_ms: u64::from(i) * 20,
                });
            }
            delete();
            r.job(Job::Finish {
                session,
                at_ms: Some(200),
            })
            .expect("an outcome")
        };
        // What start-up found (say the directory was read-only then) is
        // cleared by the first complete recording: /healthz follows.
        *metrics.dir_problem.lock().expect("lock") = Some("cannot write in it".into());
        // Never made: the first call makes it.
        let first = call(1, b"first", &|| {});
        assert!(first.result.is_ok(), "{first:?}");
        assert!(first.file.exists());
        assert_eq!(metrics.dir_problem(), None);
        std::fs::remove_dir_all(&dir).expect("rm -rf");
        let second = call(2, b"second", &|| {});
        assert!(second.result.is_ok(), "{second:?}");
        assert!(second.file.exists());
        // Deleted while recorded.
        let third = call(3, b"third", &|| {
            std::fs::remove_dir_all(&dir).expect("rm -rf");
        });
        assert_eq!(
            third.result.map(|_| ()),
            Err(NoRecording::Disk(
                "the file was deleted while the call was recorded".into()
            ))
        );
        assert_eq!(metrics.unrecorded_disk.load(Relaxed), 1);
        assert_eq!(
            metrics.dir_problem().as_deref(),
            Some("the last recording failed: the file was deleted while the call was recorded")
        );
        // Renamed away while recorded.
        let fourth = call(4, b"fourth", &|| {
            let from = dir.join(link::file_name(b"fourth"));
            std::fs::rename(&from, base.path().join("moved.wav")).expect("mv");
        });
        assert_eq!(
            fourth.result.map(|_| ()),
            Err(NoRecording::Disk(
                "the file was moved away while the call was recorded".into()
            ))
        );
        assert!(metrics.dir_problem().is_some());
        // The next complete recording clears the problem.
        let sixth = call(6, b"sixth", &|| {});
        assert!(sixth.result.is_ok(), "{sixth:?}");
        assert_eq!(metrics.dir_problem(), None);
    }

    /// A disk that fills during a call (here the file is /dev/full, which
    /// answers every write "No space left on device") shows on /healthz
    /// while the call still runs, not only when it ends.
    #[test]
    fn a_write_failing_mid_call_is_told_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(MediaMetrics::default());
        // Written through the link already there (a live node keeps a
        // file it finds: `an_earlier_calls_recording_is_never_written_over`).
        let mut r = Recordings::new(dir.path().to_path_buf(), metrics.clone()).replacing();
        std::os::unix::fs::symlink("/dev/full", dir.path().join(link::file_name(b"full")))
            .expect("symlink");
        assert!(r.job(start_job(1, b"full")).is_none());
        let mut i = 0u16;
        while metrics.dir_problem().is_none() && i < 1_000 {
            let outcome = r.job(Job::Packet {
                session: 1,
                side: Side::Caller,
                data: rtp(i, u32::from(i) * 160, 0),
                at_ms: u64::from(i) * 20,
            });
            assert!(outcome.is_none(), "the call goes on");
            i += 1;
        }
        let told = metrics.dir_problem().unwrap_or_default();
        assert!(
            told.contains("No space left on device"),
            "{told:?} after {i} packets"
        );
    }

    /// A UA or SBC may reuse a Call-ID: the later call's recording must
    /// neither write over the earlier call's WAV (its CRM link then played
    /// another client's call) nor, with no media, delete it (trial,
    /// 2026-12-03). It goes unrecorded, saying why; a replay into the same
    /// directory still makes its files again.
    #[test]
    fn an_earlier_calls_recording_is_never_written_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(MediaMetrics::default());
        let mut r = Recordings::new(dir.path().to_path_buf(), metrics.clone());
        let file = dir.path().join(link::file_name(b"reused@h"));
        std::fs::write(&file, b"the earlier call's WAV").expect("write");
        let again = r.job(start_job(1, b"reused@h")).expect("refused at once");
        assert_eq!(
            again.result.map(|_| ()),
            Err(NoRecording::Disk(KEPT.into()))
        );
        // Its end (no media) touches nothing either.
        assert!(r
            .job(Job::Finish {
                session: 1,
                at_ms: Some(1_000)
            })
            .is_none());
        assert_eq!(
            std::fs::read(&file).expect("kept"),
            b"the earlier call's WAV"
        );
        let mut replay = Recordings::new(dir.path().to_path_buf(), metrics).replacing();
        assert!(
            replay.job(start_job(2, b"reused@h")).is_none(),
            "replays write again"
        );
    }

    /// Packets a full queue lost are the call's own count: its recording
    /// says so (and the record reads "partial").
    #[test]
    fn packets_a_full_queue_lost_are_counted_for_their_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(MediaMetrics::default());
        let mut r = Recordings::new(dir.path().to_path_buf(), metrics.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let w = WriterHandle {
            tx,
            metrics: metrics.clone(),
            lost: r.lost.clone(),
        };
        w.control(start_job(1, b"busy"));
        // One fits beside the start; five find the queue full.
        for i in 0..6u16 {
            w.packet(
                1,
                Side::Caller,
                &rtp(i, u32::from(i) * 160, 0),
                u64::from(i) * 20,
            );
        }
        while let Ok(job) = rx.try_recv() {
            assert!(r.job(job).is_none());
        }
        w.control(Job::Finish {
            session: 1,
            at_ms: Some(200),
        });
        let out = r.job(rx.recv().expect("finish")).expect("an outcome");
        assert_eq!(out.result.map(|s| s.lost_packets), Ok(5));
        assert_eq!(metrics.recorder_queue_overflow.load(Relaxed), 5);
        assert!(r.lost.lock().map(|l| l.is_empty()).unwrap_or(false));
    }
}
