//! Reading frames out of the spool file: a window over the file, so a scan
//! costs one read per 64 KiB and resynchronising can look back without
//! re-reading, and the checks that say whether a whole frame with a
//! matching checksum starts at an offset.
//!
//! # What it must not know
//! What a frame's kind or body means, where the spool's live records are,
//! or what to do about damage: it only says why no whole frame is at an
//! offset, and the caller decides.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::format::{FRAME_HEAD, MAGIC, MAX_BODY};
use super::{SpoolError, io_err};

/// How much is read at once when the window moves.
pub(super) const READ_AHEAD: usize = 64 << 10;

/// Reads the file through a window, so a scan costs one read per 64 KiB and
/// resynchronising can look back without re-reading.
pub(super) struct Reader<'a> {
    file: &'a File,
    path: &'a Path,
    /// Where the file's bytes stop counting (its length when the reader
    /// was made).
    pub(super) end: u64,
    at: u64,
    buf: Vec<u8>,
}

impl<'a> Reader<'a> {
    /// A reader of the first `end` bytes of `file`, named `path` in errors.
    pub(super) fn new(file: &'a File, path: &'a Path, end: u64) -> Reader<'a> {
        Reader {
            file,
            path,
            end,
            at: 0,
            buf: Vec::new(),
        }
    }

    /// `len` bytes at `off`; callers keep `off + len` within `end`.
    pub(super) fn get(&mut self, off: u64, len: usize) -> Result<&[u8], SpoolError> {
        let cached = off >= self.at && off + len as u64 <= self.at + self.buf.len() as u64;
        if !cached {
            let n = (len.max(READ_AHEAD) as u64).min(self.end.saturating_sub(off));
            self.buf.resize(n as usize, 0);
            self.file
                .read_exact_at(&mut self.buf, off)
                .map_err(io_err("read the outbox spool", self.path))?;
            self.at = off;
        }
        let from = (off - self.at) as usize;
        self.buf.get(from..from + len).ok_or_else(|| {
            io_err("read the outbox spool", self.path)(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is shorter than it was",
            ))
        })
    }

    /// At least `min` bytes at `off`, and as many more as are buffered.
    pub(super) fn ahead(&mut self, off: u64, min: usize) -> Result<&[u8], SpoolError> {
        self.get(off, min)?;
        Ok(self.buf.get((off - self.at) as usize..).unwrap_or_default())
    }
}

/// Checks the frame at `off`: its kind and body length if it is whole and
/// its checksum holds, else why not.
pub(super) fn frame_at(r: &mut Reader, off: u64) -> Result<Result<(u8, u32), String>, SpoolError> {
    let (kind, len, crc) = match frame_head(r, off)? {
        Ok(head) => head,
        Err(why) => return Ok(Err(why)),
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(r.get(off + FRAME_HEAD, len as usize)?);
    if hasher.finalize() != crc {
        return Ok(Err(format!("a frame of {len} bytes fails its checksum")));
    }
    Ok(Ok((kind, len)))
}

/// Checks the head of the frame at `off` (not its checksum): its kind, body
/// length and checksum if it is a head whose body fits in the file, else
/// why not.
pub(super) fn frame_head(
    r: &mut Reader,
    off: u64,
) -> Result<Result<(u8, u32, u32), String>, SpoolError> {
    let room = r.end - off;
    if room < FRAME_HEAD {
        return Ok(Err(format!("an incomplete frame of {room} bytes")));
    }
    let h = r.get(off, FRAME_HEAD as usize)?;
    if h[..2] != MAGIC {
        return Ok(Err("no frame starts here".into()));
    }
    let kind = h[2];
    let len = u32::from_le_bytes([h[3], h[4], h[5], h[6]]);
    let crc = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
    if len > MAX_BODY {
        return Ok(Err(format!(
            "a frame claims {len} bytes, more than the 16 MiB a frame may hold"
        )));
    }
    if u64::from(len) > room - FRAME_HEAD {
        return Ok(Err(format!(
            "a frame of {len} bytes runs past the end of the file"
        )));
    }
    Ok(Ok((kind, len, crc)))
}
