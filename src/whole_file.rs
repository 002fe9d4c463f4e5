//! A small file replaced whole: written to a fresh temporary file (mode
//! 0600 from its creation, whatever was there), optionally synced, then
//! renamed over the old one, so a crash leaves the old file or the new one,
//! never half; and read back whole, if it is there and small. A leaf: it
//! imports nothing of ours.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces `path` with `bytes` through `tmp`; `durable` syncs the data
/// before the rename (the folder is the caller's to sync). Returns the
/// file, still open, for a caller that syncs later.
pub(crate) fn replace(path: &Path, tmp: &Path, bytes: &[u8], durable: bool) -> io::Result<File> {
    let _ = fs::remove_file(tmp);
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    out.write_all(bytes)?;
    if durable {
        out.sync_all()?;
    }
    fs::rename(tmp, path)?;
    Ok(out)
}

/// The whole number a small file holds (a date, a count), `None` when it
/// is missing, larger than a number, or not one.
pub(crate) fn read_number(path: &Path) -> Option<i64> {
    let bytes = read_small(path, 64, "a number").ok()??;
    String::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// `path`'s bytes, `None` when it is not there; refused unread when it is
/// larger than `limit` (`what` says what it should hold, for the words).
pub(crate) fn read_small(path: &Path, limit: u64, what: &str) -> io::Result<Option<Vec<u8>>> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if meta.len() > limit {
        return Err(io::Error::other(format!(
            "{} is {} bytes, far larger than {what}",
            path.display(),
            meta.len()
        )));
    }
    fs::read(path).map(Some)
}
