//! Whether the files a config names can be written: the recordings
//! directory and the lead journal. `check-config` asks, with the key's
//! line, beside every other error of the file; a running node asks again
//! at start (`server`).

use std::path::Path;

/// Whether a file can be created in `dir` (and is removed again).
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".siptrack-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// Why siptrack could not write files into `dir` (the recordings, the
/// journal's directory), if it could not: it must be a directory
/// siptrack can write in, or, while it does not exist, the nearest
/// directory above it must be (siptrack makes it). Makes nothing but a
/// probe file, removed at once: `check-config` asks too (trial,
/// 2026-12-02: `/proc/forbidden` passed it, and `/healthz` said ok while
/// every call went unrecorded).
pub fn dir_write_problem(dir: &Path) -> Option<String> {
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Some(format!("{} is not a directory", at.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match at.parent() {
                Some(up) if !up.as_os_str().is_empty() => at = up,
                _ => {
                    at = Path::new(".");
                    break;
                }
            },
            Err(e) => return Some(format!("{}: {e}", at.display())),
        }
    }
    probe_writable(at).err().map(|e| {
        if at == dir {
            format!("cannot write in {}: {e}", at.display())
        } else {
            format!(
                "{} does not exist, and {} takes no new entry: {e}",
                dir.display(),
                at.display()
            )
        }
    })
}

/// Why siptrack could not append to the journal at `path` (None: it
/// can): a file it cannot open for appending, or a directory that takes
/// no new file. The journal is written only when the database fails, so
/// without this an unwritable one showed then, when calls were already at
/// stake (QA, 2026-12-02).
pub fn journal_problem(path: &Path) -> Option<String> {
    if path.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .err()
            .map(|e| format!("cannot append to {}: {e}", path.display()));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir_write_problem(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_must_be_one_siptrack_can_append_to_table() {
        let scratch = tempfile::tempdir().expect("scratch");
        let file = scratch.path().join("a-file");
        std::fs::write(&file, b"x").expect("file");
        // (journal, what the problem says; None: usable)
        for (path, says) in [
            (scratch.path().join("calls.journal"), None),
            (file.clone(), None),
            (scratch.path().join("new/calls.journal"), None),
            (scratch.path().to_path_buf(), Some("cannot append to")),
            (file.join("calls.journal"), Some("is not a directory")),
            (
                std::path::PathBuf::from("/proc/calls.journal"),
                Some("cannot write in /proc"),
            ),
        ] {
            let got = journal_problem(&path);
            match says {
                None => assert_eq!(got, None, "{}", path.display()),
                Some(s) => assert!(
                    got.as_deref().is_some_and(|g| g.contains(s)),
                    "{}: {got:?}",
                    path.display()
                ),
            }
        }
        assert!(!scratch.path().join("new").exists(), "nothing made");
    }

    #[test]
    fn a_recordings_directory_must_be_one_siptrack_can_write_in_table() {
        let scratch = tempfile::tempdir().expect("scratch");
        let file = scratch.path().join("a-file");
        std::fs::write(&file, b"x").expect("file");
        // (directory, what the problem says; None: usable)
        for (dir, says) in [
            (scratch.path().to_path_buf(), None),
            // Made at start, under a directory that takes files.
            (scratch.path().join("new/recordings"), None),
            (file.clone(), Some("is not a directory")),
            (file.join("under"), Some("Not a directory")),
            // procfs takes no files, whoever asks (root included).
            (
                std::path::PathBuf::from("/proc/forbidden"),
                Some("/proc/forbidden does not exist, and /proc takes no new entry"),
            ),
        ] {
            let got = dir_write_problem(&dir);
            match says {
                None => assert_eq!(got, None, "{}", dir.display()),
                Some(s) => assert!(
                    got.as_deref().is_some_and(|g| g.contains(s)),
                    "{}: {got:?}",
                    dir.display()
                ),
            }
        }
        // Nothing was made.
        assert!(!scratch.path().join("new").exists());
    }
}
