//! The spool's directory and files on disk: their names, their modes (the
//! directory 0700, every file 0600 whatever the umask), replacing the
//! spool file crash-safely (a new copy written beside it, synced, renamed
//! over it), keeping a damaged file aside under a name no earlier one has,
//! and syncing the directory so renames survive a power cut.
//!
//! # What it must not know
//! Frames or what the file holds: the only bytes it writes itself are a new
//! file's header, given by `format`; whatever else a new file holds is
//! written by the caller's `fill`.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::format::HEADER;
use super::{SpoolError, io_err};

pub(super) const FILE_NAME: &str = "outbox.wal";
pub(super) const TMP_NAME: &str = "outbox.wal.tmp";
pub(super) const DAMAGED_NAME: &str = "outbox.wal.damaged";

pub(super) fn file_len(file: &File, path: &Path) -> Result<u64, SpoolError> {
    Ok(file
        .metadata()
        .map_err(io_err("read the size of the outbox spool", path))?
        .len())
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync to disk the outbox spool directory", dir))
}

/// Writes a whole new spool file through `fill` into `outbox.wal.tmp`,
/// syncs it and renames it over `path`, so that `path` always holds either
/// the old file or the whole new one. Returns the new file, open. The
/// directory is not synced: callers do that once they have taken the file.
pub(super) fn install<T>(
    dir: &Path,
    path: &Path,
    fill: impl FnOnce(&File, &Path) -> Result<T, SpoolError>,
) -> Result<(File, T), SpoolError> {
    let tmp_path = dir.join(TMP_NAME);
    let tmp = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp_path)
        .map_err(io_err("create the new outbox spool", &tmp_path))?;
    let done = make_private(&tmp, &tmp_path)
        .and_then(|()| fill(&tmp, &tmp_path))
        .and_then(|filled| {
            tmp.sync_all()
                .map_err(io_err("sync to disk the new outbox spool", &tmp_path))?;
            fs::rename(&tmp_path, path)
                .map_err(io_err("rename the new outbox spool into place as", path))?;
            Ok(filled)
        });
    match done {
        Ok(filled) => Ok((tmp, filled)),
        Err(e) => {
            let _ = fs::remove_file(&tmp_path);
            Err(e)
        }
    }
}

/// Mode 0600 whatever the umask was when the file was made: it holds every
/// reading of an outage, for the service's user alone.
pub(in crate::outbox) fn make_private(file: &File, path: &Path) -> Result<(), SpoolError> {
    let mode = file
        .metadata()
        .map_err(io_err("read the mode of", path))?
        .permissions()
        .mode();
    if mode & 0o777 != 0o600 {
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err("make private (mode 0600)", path))?;
    }
    Ok(())
}

/// A new spool holding only the header (never a file with half a header).
pub(super) fn create_empty(dir: &Path, path: &Path) -> Result<File, SpoolError> {
    let (file, ()) = install(dir, path, |tmp, tmp_path| {
        tmp.write_all_at(HEADER, 0)
            .map_err(io_err("write the new outbox spool", tmp_path))
    })?;
    sync_dir(dir)?;
    Ok(file)
}

/// Renames a damaged spool to the first free `outbox.wal.damaged[.N]`, so no
/// earlier damaged file is overwritten.
pub(super) fn keep_aside(dir: &Path, path: &Path) -> Result<PathBuf, SpoolError> {
    let mut n = 0u64;
    loop {
        let aside = match n {
            0 => dir.join(DAMAGED_NAME),
            n => dir.join(format!("{DAMAGED_NAME}.{n}")),
        };
        let taken = fs::symlink_metadata(&aside).is_ok();
        if !taken {
            fs::rename(path, &aside)
                .map_err(io_err("keep the damaged outbox spool aside as", &aside))?;
            // Whoever made the file, what it holds stays private.
            fs::set_permissions(&aside, fs::Permissions::from_mode(0o600))
                .map_err(io_err("make private (mode 0600)", &aside))?;
            return Ok(aside);
        }
        n += 1;
    }
}
