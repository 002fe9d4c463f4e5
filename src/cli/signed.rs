//! The signed files on the laptop that `release sign`, `verify`,
//! `publish` and `withdraw` share: files read with a limit, a manifest
//! opened with the release key's public half, and the package beside it
//! checked against it.

use std::path::{Path, PathBuf};

use super::CliError;
use super::fleet::io;
use crate::release::key::Public;
use crate::release::manifest::{self, Manifest};

/// The most read of a key file.
pub(super) const KEY_LIMIT: usize = 64 * 1024;

/// A file's bytes, refused unread when it is larger than `limit`.
pub(super) fn read_limited(path: &Path, limit: usize, what: &str) -> Result<Vec<u8>, CliError> {
    let size = std::fs::metadata(path)
        .map_err(|e| {
            CliError::Input(format!(
                "cannot read {}: {}",
                path.display(),
                crate::words::io_words(&e)
            ))
        })?
        .len();
    if size > limit as u64 {
        return Err(CliError::Input(format!(
            "{} is {size} bytes, far larger than {what}",
            path.display()
        )));
    }
    std::fs::read(path).map_err(|e| io(path, e))
}

/// The package's size and SHA-256, read through once.
pub(super) fn digest(path: &Path) -> Result<(u64, Vec<u8>), CliError> {
    let file = std::fs::File::open(path).map_err(|e| {
        CliError::Input(format!(
            "cannot read {}: {}",
            path.display(),
            crate::words::io_words(&e)
        ))
    })?;
    crate::digest::sha256(file).map_err(|e| io(path, e))
}

/// The release key's public half in `key_file`.
pub(super) fn public_key(key_file: &Path) -> Result<Public, CliError> {
    Public::from_pem(&read_limited(key_file, KEY_LIMIT, "a key")?)
        .map_err(|e| CliError::Input(format!("{}: {e}", key_file.display())))
}

/// The manifest in `file` opened with `key`, as a device will, and the
/// signed bytes it came as.
pub(super) fn open(file: &Path, key: &Public) -> Result<(Manifest, Vec<u8>), CliError> {
    let envelope = read_limited(file, manifest::MAX_MANIFEST, "a manifest")?;
    let manifest = manifest::open(&envelope, key)
        .map_err(|e| CliError::Input(format!("{}: {e}", file.display())))?;
    Ok((manifest, envelope))
}

/// The package `manifest` (read from `manifest_file`) describes, checked:
/// `package`, or by default the manifest's name without `.manifest`.
pub(super) fn check_package(
    manifest: &Manifest,
    manifest_file: &Path,
    package: Option<&Path>,
) -> Result<PathBuf, CliError> {
    let package = package.map_or_else(
        || {
            let text = manifest_file.to_string_lossy();
            PathBuf::from(text.strip_suffix(".manifest").unwrap_or(&text))
        },
        Path::to_path_buf,
    );
    let (size, sha256) = digest(&package)?;
    manifest
        .describes(size, &sha256)
        .map_err(|e| CliError::Input(format!("{}: {e}", package.display())))?;
    Ok(package)
}
