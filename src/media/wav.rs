//! The recording file: RIFF/WAVE, PCM, 2 channels (left caller, right
//! callee), 8000 Hz, 16 bit, streamed to any `Write + Seek`.
//!
//! The header goes out first with both sizes 0 and gets its real sizes
//! only at [`WavWriter::finalise`], data size last. A file whose RIFF size
//! is 0 was therefore never finished (the process died mid-call):
//! [`header_state`] says so, and [`finalise_partial`] repairs it from the
//! file length at the next start. Players that read such a file before
//! repair see an empty recording, never a wrong length.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

pub const HEADER_LEN: u64 = 44;
pub const CHANNELS: u16 = 2;
pub const SAMPLE_RATE: u32 = 8000;
pub const BITS: u16 = 16;
const BLOCK_ALIGN: u16 = CHANNELS * BITS / 8;
/// The data chunk's size field is 32 bits, and RIFF's size adds 36 to it.
const MAX_DATA: u64 = (u32::MAX as u64 - 36) / BLOCK_ALIGN as u64 * BLOCK_ALIGN as u64;

#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("recording reached the WAV size limit (4 GiB, about 37 hours)")]
    TooLong,
    #[error("not a recording written by siptrack")]
    NotOurs,
}

/// The 44-byte header for `data_bytes` of audio; `finished = false` gives
/// the placeholder with both sizes 0.
pub fn header(data_bytes: u32, finished: bool) -> [u8; 44] {
    let (riff, data) = if finished {
        (data_bytes.saturating_add(36), data_bytes)
    } else {
        (0, 0)
    };
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&riff.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&(SAMPLE_RATE * u32::from(BLOCK_ALIGN)).to_le_bytes());
    h[32..34].copy_from_slice(&BLOCK_ALIGN.to_le_bytes());
    h[34..36].copy_from_slice(&BITS.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    h
}

/// What a file's first 44 bytes and its length say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderState {
    /// Finalised, sizes match the file.
    Complete { data_bytes: u64 },
    /// Our format, never finalised (or sizes that disagree with the file):
    /// `data_bytes` is what the file length says, in whole frames.
    Partial { data_bytes: u64 },
    /// Not a WAV this module wrote.
    NotOurs,
}

/// Classifies a recording from its header bytes and file length.
pub fn header_state(head: &[u8], file_len: u64) -> HeaderState {
    let Some(head) = head.get(..44) else {
        return HeaderState::NotOurs;
    };
    let placeholder = header(0, false);
    // Everything but the two size fields must be exactly ours.
    let same = |r: std::ops::Range<usize>| head[r.clone()] == placeholder[r];
    if !(same(0..4) && same(8..40)) || file_len < HEADER_LEN {
        return HeaderState::NotOurs;
    }
    let le32 = |i: usize| {
        u64::from(u32::from_le_bytes([
            head[i],
            head[i + 1],
            head[i + 2],
            head[i + 3],
        ]))
    };
    let (riff, data) = (le32(4), le32(40));
    let on_disk = file_len - HEADER_LEN;
    if riff != 0 && riff == data + 36 && data == on_disk {
        HeaderState::Complete { data_bytes: data }
    } else {
        let whole = (on_disk / u64::from(BLOCK_ALIGN) * u64::from(BLOCK_ALIGN)).min(MAX_DATA);
        HeaderState::Partial { data_bytes: whole }
    }
}

/// Streams interleaved 16-bit frames after a placeholder header.
#[derive(Debug)]
pub struct WavWriter<W: Write + Seek> {
    w: W,
    data_bytes: u64,
    scratch: Vec<u8>,
}

impl<W: Write + Seek> WavWriter<W> {
    /// Writes the placeholder header at the writer's start.
    pub fn new(mut w: W) -> Result<WavWriter<W>, WavError> {
        w.seek(SeekFrom::Start(0))?;
        w.write_all(&header(0, false))?;
        Ok(WavWriter {
            w,
            data_bytes: 0,
            scratch: Vec::with_capacity(4096),
        })
    }

    /// Appends interleaved left/right samples (an even count).
    pub fn write_frames(&mut self, interleaved: &[i16]) -> Result<(), WavError> {
        let frames = interleaved.len() / 2;
        let bytes = (frames * usize::from(BLOCK_ALIGN)) as u64;
        if self.data_bytes + bytes > MAX_DATA {
            return Err(WavError::TooLong);
        }
        self.scratch.clear();
        for s in &interleaved[..frames * 2] {
            self.scratch.extend_from_slice(&s.to_le_bytes());
        }
        self.w.write_all(&self.scratch)?;
        self.data_bytes += bytes;
        Ok(())
    }

    /// Audio bytes written so far.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Writes the real sizes (data size last, so a crash in between still
    /// reads as partial) and returns the writer, positioned at the end.
    pub fn finalise(mut self) -> Result<W, WavError> {
        self.w.flush()?;
        let h = header(self.data_bytes as u32, true);
        self.w.seek(SeekFrom::Start(4))?;
        self.w.write_all(&h[4..8])?;
        self.w.flush()?;
        self.w.seek(SeekFrom::Start(40))?;
        self.w.write_all(&h[40..44])?;
        self.w.flush()?;
        self.w.seek(SeekFrom::End(0))?;
        Ok(self.w)
    }
}

/// Creates (or truncates) a recording file at `path`.
pub fn create(path: &Path) -> Result<WavWriter<BufWriter<File>>, WavError> {
    WavWriter::new(BufWriter::with_capacity(32 * 1024, File::create(path)?))
}

/// Finalises a file-backed writer and fsyncs it: the call's end.
pub fn finish_file(w: WavWriter<BufWriter<File>>) -> Result<(), WavError> {
    let file = w.finalise()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}

/// What [`finalise_partial`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    AlreadyComplete,
    /// Sizes written from the file length; a torn last frame cut off.
    Repaired {
        data_bytes: u64,
    },
}

/// Repairs a recording left unfinished by a crash: cuts a torn last frame,
/// writes the sizes the file length gives, fsyncs. Complete files are left
/// alone; files that are not ours are refused.
pub fn finalise_partial(path: &Path) -> Result<Repair, WavError> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    let mut head = [0u8; 44];
    if len < HEADER_LEN {
        return Err(WavError::NotOurs);
    }
    f.read_exact(&mut head)?;
    match header_state(&head, len) {
        HeaderState::NotOurs => Err(WavError::NotOurs),
        HeaderState::Complete { .. } => Ok(Repair::AlreadyComplete),
        HeaderState::Partial { data_bytes } => {
            f.set_len(HEADER_LEN + data_bytes)?;
            let h = header(data_bytes as u32, true);
            f.seek(SeekFrom::Start(4))?;
            f.write_all(&h[4..8])?;
            f.seek(SeekFrom::Start(40))?;
            f.write_all(&h[40..44])?;
            f.sync_all()?;
            Ok(Repair::Repaired { data_bytes })
        }
    }
}

/// The interleaved samples of a complete recording (for the HTTP side and
/// tests); `None` when the bytes are not a finished siptrack WAV.
pub fn samples(bytes: &[u8]) -> Option<Vec<i16>> {
    match header_state(bytes, bytes.len() as u64) {
        HeaderState::Complete { .. } => Some(
            bytes[HEADER_LEN as usize..]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
#[path = "wav_tests.rs"]
mod tests;
