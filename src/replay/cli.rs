//! `siptrack replay PCAP... [--config FILE] [--out FILE|-] [--recordings DIR]`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::Config;

/// Replays each capture in turn into `out`; false when one was refused
/// (its reason goes to stderr and to the output as a `refused` line).
/// WAVs go to `recordings`, else to a temporary directory removed at the end.
pub fn run(
    pcaps: &[PathBuf],
    config: &Config,
    out: &Path,
    recordings: Option<&Path>,
) -> anyhow::Result<bool> {
    let scratch;
    let recordings = match recordings {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir
        }
        None => {
            scratch = Scratch::new().context("creating a temporary recordings directory")?;
            scratch.0.as_path()
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut sink: Box<dyn Write> = if out == Path::new("-") {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
        ))
    };
    let mut all_ok = true;
    for path in pcaps {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let lines = match rt.block_on(super::replay(&name, &bytes, config, recordings)) {
            Ok(lines) => lines,
            Err((lines, reason)) => {
                eprintln!(
                    "siptrack replay: {}: not replayed: {reason}",
                    path.display()
                );
                all_ok = false;
                lines
            }
        };
        for l in lines {
            if let Err(e) = writeln!(sink, "{l}") {
                return reader_gone(e, all_ok);
            }
        }
    }
    if let Err(e) = sink.flush() {
        return reader_gone(e, all_ok);
    }
    Ok(all_ok)
}

/// `siptrack replay x.pcap | head`: the reader closing the pipe is not an
/// error worth a message.
fn reader_gone(e: std::io::Error, all_ok: bool) -> anyhow::Result<bool> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(all_ok)
    } else {
        Err(anyhow::Error::new(e).context("writing the output"))
    }
}

/// A directory of this process's own under the system's temporary
/// directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Scratch> {
        let base = std::env::temp_dir();
        let mut last = None;
        for n in 0..100 {
            let dir = base.join(format!("siptrack-replay-{}-{n}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(Scratch(dir)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no directory name left")))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
