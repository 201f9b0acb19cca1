//! `media.retention_days`: recordings older than that are deleted, at
//! start and hourly. Age is the file's modification time, which is when
//! the recording was last written (its call's end). Only `.wav` files
//! directly in the directory are touched: nothing else an operator keeps
//! there, and no subdirectories.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whether a file last written at `modified_unix` is past retention at
/// `now_unix`.
pub fn expired(modified_unix: u64, now_unix: u64, retention_seconds: u64) -> bool {
    now_unix.saturating_sub(modified_unix) >= retention_seconds
}

/// Whether a directory entry is a recording the sweep may delete.
pub fn is_recording_name(name: &str) -> bool {
    name.ends_with(".wav") && !name.starts_with('.')
}

/// What the sweeps did, for `/metrics`.
#[derive(Debug, Default)]
pub struct RetentionMetrics {
    deleted: AtomicU64,
    failures: AtomicU64,
}

impl RetentionMetrics {
    pub fn deleted(&self) -> u64 {
        self.deleted.load(Ordering::Relaxed)
    }

    pub fn render(&self) -> String {
        format!(
            "# TYPE siptrack_recordings_deleted_total counter\nsiptrack_recordings_deleted_total {}\n\
             # TYPE siptrack_recordings_delete_failures_total counter\nsiptrack_recordings_delete_failures_total {}\n",
            self.deleted.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed)
        )
    }
}

/// One pass over `dir`: deletes expired recordings, counts what it did.
/// A directory that does not exist yet has nothing to delete.
pub fn sweep(dir: &Path, now: SystemTime, retention_seconds: u64, m: &RetentionMetrics) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            m.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(dir = %dir.display(), error = %e, "recordings retention: cannot list the directory");
            return;
        }
    };
    let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let now = unix(now);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_recording_name(name) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let Ok(modified) = meta.modified() else {
            continue;
        };
        if !meta.is_file() || !expired(unix(modified), now, retention_seconds) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => {
                m.deleted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(file = %entry.path().display(), "recording past media.retention_days deleted");
            }
            Err(e) => {
                m.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(file = %entry.path().display(), error = %e, "recordings retention: cannot delete");
            }
        }
    }
}

/// How often the sweep runs after the one at start.
pub const EVERY: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_expires() {
        let day = 86_400;
        for (modified, now, keep, gone) in [
            (0, 90 * day - 1, 90 * day, false),
            (0, 90 * day, 90 * day, true),
            (1000, 10, day, false), // a clock that went back: kept
        ] {
            assert_eq!(
                expired(modified, now, keep),
                gone,
                "{modified} {now} {keep}"
            );
        }
        for (name, ours) in [
            ("c1.wav", true),
            ("abc_40h.wav", true),
            (".hidden.wav", false),
            ("notes.txt", false),
            ("c1.wav.tmp", false),
        ] {
            assert_eq!(is_recording_name(name), ours, "{name}");
        }
    }

    #[test]
    fn a_sweep_deletes_only_old_recordings() {
        let dir = tempfile::tempdir().expect("dir");
        for n in ["old.wav", "new.wav", "old.txt"] {
            std::fs::write(dir.path().join(n), b"x").expect("write");
        }
        std::fs::create_dir(dir.path().join("sub.wav")).expect("subdir");
        let m = RetentionMetrics::default();
        // Files written now are 100 s old at now + 100 s.
        let later = SystemTime::now() + Duration::from_secs(100);
        sweep(dir.path(), later, 1000, &m);
        assert_eq!(m.deleted(), 0);
        let much_later = SystemTime::now() + Duration::from_secs(2000);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("new.wav"))
            .and_then(|f| f.set_modified(much_later))
            .expect("touch");
        sweep(dir.path(), much_later, 1000, &m);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["new.wav", "old.txt", "sub.wav"]);
        assert_eq!(m.deleted(), 1);
        assert!(m.render().contains("siptrack_recordings_deleted_total 1\n"));
        sweep(&dir.path().join("missing"), much_later, 1, &m);
    }
}
