//! The local journal of call news the database did not take (a full disk,
//! a locked or broken database): JSON lines, appended and fsynced a batch
//! at a time, read back in order when the database works again, then
//! emptied. It is what keeps a storage failure from costing calls, in
//! memory bounded by what is not yet written here.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::pipeline::CallNews;

pub struct Journal {
    path: PathBuf,
    file: Option<File>,
    /// Entries in the file.
    len: usize,
}

impl Journal {
    /// The journal at `path`; an existing file's lines are counted (its
    /// entries are calls of an earlier run waiting for the database; they
    /// are parsed once, when they are replayed).
    pub fn open(path: &Path) -> io::Result<Journal> {
        let len = match File::open(path) {
            Ok(f) => {
                let mut n = 0;
                for line in BufReader::new(f).split(b'\n') {
                    if !line?.iter().all(u8::is_ascii_whitespace) {
                        n += 1;
                    }
                }
                n
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Journal {
            path: path.to_path_buf(),
            file: None,
            len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `news` and syncs the file: once this returns Ok the calls
    /// survive a crash.
    pub fn append(&mut self, news: &[CallNews]) -> io::Result<()> {
        let mut text = Vec::with_capacity(news.len() * 512);
        for n in news {
            serde_json::to_writer(&mut text, n).map_err(io::Error::other)?;
            text.push(b'\n');
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                self.file.insert(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&self.path)?,
                )
            }
        };
        let written = file.write_all(&text).and_then(|_| file.sync_data());
        if written.is_err() {
            // A partial line may be on disk; reopen next time so the next
            // append starts on a fresh line (the reader skips torn lines).
            self.file = None;
            return written;
        }
        self.len += news.len();
        Ok(())
    }

    /// Every entry, in order. A line that does not parse (torn by a crash
    /// mid-write) is skipped and logged.
    pub fn read_all(&self) -> io::Result<Vec<CallNews>> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
            let line = line?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<CallNews>(&line) {
                Ok(n) => out.push(n),
                Err(e) => tracing::error!(
                    journal = %self.path.display(),
                    line = i + 1,
                    error = %e,
                    "journal line skipped"
                ),
            }
        }
        Ok(out)
    }

    /// Empties the journal once its entries are in the database.
    pub fn clear(&mut self) -> io::Result<()> {
        self.file = None;
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::{CallInfo, CallRecord};
    use crate::crm::outbox::CallStart;

    fn news(i: u64) -> Vec<CallNews> {
        let info = CallInfo {
            caller: format!("7916000000{i}").into(),
            ..CallInfo::default()
        };
        vec![
            CallNews::Started(CallStart {
                call_id: format!("c{i}"),
                info: info.clone(),
                invite_at: 1_000 + i,
            }),
            CallNews::Ended(CallRecord::interrupted(
                format!("c{i}"),
                info,
                1_000 + i,
                None,
            )),
        ]
    }

    #[test]
    fn entries_come_back_in_order_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub").join("calls.journal");
        let mut j = Journal::open(&path).expect("open");
        assert!(j.is_empty());
        j.append(&news(1)).expect("append");
        j.append(&news(2)).expect("append");
        // A crash in the middle of a write.
        let mut f = OpenOptions::new().append(true).open(&path).expect("file");
        f.write_all(b"{\"Ended\":{\"call_id\":\"c3\",")
            .expect("torn");
        drop(f);
        let again = Journal::open(&path).expect("reopen");
        // Lines are counted at open; the torn one is skipped when read.
        assert_eq!(again.len(), 5);
        let mut want = news(1);
        want.extend(news(2));
        assert_eq!(again.read_all().expect("read"), want);
        j.clear().expect("clear");
        assert!(j.is_empty() && !path.exists());
        assert!(Journal::open(&path).expect("open").is_empty());
    }

    #[test]
    fn an_unwritable_journal_says_so() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut j = Journal::open(&dir.path().join("sub").join("calls.journal"))
            .expect("nothing to read yet");
        // Its directory cannot be made: a regular file stands there.
        std::fs::write(dir.path().join("sub"), b"").expect("file");
        assert!(j.append(&news(1)).is_err());
        assert!(j.is_empty());
        // Nor read: a path below a regular file does not exist, even for
        // root, and that is not the same as an empty journal.
        assert!(Journal::open(&dir.path().join("sub").join("calls.journal")).is_err());
    }
}
