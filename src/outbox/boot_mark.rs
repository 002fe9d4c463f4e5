//! The spool's boot mark: a file beside the spool that says which boot
//! last had it open and whether that run stopped cleanly.
//!
//! A process killed while offline leaves every record it wrote in the
//! kernel, so its seqs continue exactly. A machine that lost power loses
//! what the group commit had not synced yet, and with it the newest seqs;
//! continuing from the newest durable one would hand those seqs out again
//! to different readings. Only the boot id tells the two apart, so the
//! mark is written (durably) before anything else at open, and marked
//! clean only after the stop's last sync.
//!
//! It knows files and the boot id; not the queue or the spool's format.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const FILE: &str = "boot";
/// A boot id is 36 characters; the mark is one line of it and a word.
const MARK_MOST: u64 = 256;

/// What the mark said about the run before this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Before {
    /// No mark: a first start, or a spool from before marks existed.
    Unknown,
    /// It stopped cleanly after its last sync.
    Clean,
    /// It did not stop cleanly, in this same boot: killed or crashed, but
    /// the kernel kept its writes.
    SameBoot,
    /// It did not stop cleanly and the machine has restarted since (or
    /// the boot cannot be told): unsynced writes may be lost.
    OtherBoot,
}

/// Reads the previous run's mark, then marks the spool as open in `boot`,
/// durably, before the caller hands out any seq.
pub(super) fn open(dir: &Path, boot: &str) -> io::Result<Before> {
    let before = match read_mark(&dir.join(FILE)) {
        Ok(text) => {
            let mut words = text.split_whitespace();
            match (words.next(), words.next()) {
                (Some(_), Some("clean")) => Before::Clean,
                (Some(id), Some("open")) if !boot.is_empty() && id == boot => Before::SameBoot,
                _ => Before::OtherBoot,
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Before::Unknown,
        // A mark that cannot be read is no proof of a clean stop.
        Err(_) => Before::OtherBoot,
    };
    write(dir, &format!("{} open\n", or_unknown(boot)))?;
    Ok(before)
}

/// Marks the spool as closed cleanly: only after the stop's last sync.
pub(super) fn clean(dir: &Path, boot: &str) -> io::Result<()> {
    write(dir, &format!("{} clean\n", or_unknown(boot)))
}

/// The mark's first bytes only: ours is one short line, and a file put
/// there by anyone else must not cost its size in memory at every start.
fn read_mark(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    File::open(path)?
        .take(MARK_MOST)
        .read_to_string(&mut text)?;
    Ok(text)
}

fn or_unknown(boot: &str) -> &str {
    if boot.is_empty() { "unknown" } else { boot }
}

/// Write, sync, rename into place, sync the directory: the mark is either
/// the old one or the new one, and durable once this returns.
fn write(dir: &Path, text: &str) -> io::Result<()> {
    let temporary = dir.join(format!("{FILE}.new"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&temporary, dir.join(FILE))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_left_open_tells_a_kill_from_a_restarted_machine() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(open(dir.path(), "boot-a").unwrap(), Before::Unknown);
        assert_eq!(open(dir.path(), "boot-a").unwrap(), Before::SameBoot);
        assert_eq!(open(dir.path(), "boot-b").unwrap(), Before::OtherBoot);
        clean(dir.path(), "boot-b").unwrap();
        assert_eq!(open(dir.path(), "boot-c").unwrap(), Before::Clean);
        // Without a boot id nothing proves the same boot.
        assert_eq!(open(dir.path(), "").unwrap(), Before::OtherBoot);
        assert_eq!(open(dir.path(), "").unwrap(), Before::OtherBoot);
    }

    #[test]
    fn a_damaged_mark_is_no_proof_of_a_clean_stop() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), b"\xff\xfe garbage").unwrap();
        assert_eq!(open(dir.path(), "boot-a").unwrap(), Before::OtherBoot);
    }

    #[test]
    fn a_huge_mark_is_read_only_as_far_as_a_mark_can_be() {
        let dir = tempfile::tempdir().unwrap();
        let mut huge = b"boot-a clean\n".to_vec();
        huge.resize(8 << 20, b'x');
        fs::write(dir.path().join(FILE), &huge).unwrap();
        // Its first line says clean: read within the limit, the rest ignored.
        assert_eq!(open(dir.path(), "boot-b").unwrap(), Before::Clean);
        assert!(fs::metadata(dir.path().join(FILE)).unwrap().len() < MARK_MOST);
    }
}
