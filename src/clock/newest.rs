//! The newest trusted time pinpost has seen, kept beside the spool
//! (`clock-newest`, Unix milliseconds as text), so that a clock which
//! later reads earlier than that (a real-time clock that lost its battery
//! or drifted back) is not trusted on its own word (`clock.trust =
//! "system"`; a time source's word still beats it).
//!
//! Written only while the clock is trusted, a few times an hour and at a
//! clean stop, without waiting for the disk: a power cut loses at most the
//! last few minutes of it, which only makes the check a little weaker.
//! It knows the file, not what trust is.

use std::io;
use std::path::Path;

const FILE: &str = "clock-newest";

/// The time kept in `dir`, if there is a readable one.
pub(crate) fn read(dir: &Path) -> Option<i64> {
    crate::whole_file::read_number(&dir.join(FILE))
}

/// Keeps `ms` in `dir`, through a temporary file and a rename.
pub(crate) fn write(dir: &Path, ms: i64) -> io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    crate::whole_file::replace(&dir.join(FILE), &tmp, ms.to_string().as_bytes(), false).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_keeps_a_time_and_ignores_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        write(dir.path(), 1_796_560_000_000).unwrap();
        assert_eq!(read(dir.path()), Some(1_796_560_000_000));
        std::fs::write(dir.path().join(FILE), "yesterday").unwrap();
        assert_eq!(read(dir.path()), None);
        std::fs::write(dir.path().join(FILE), "1".repeat(100)).unwrap();
        assert_eq!(read(dir.path()), None);
    }
}
