//! Taking a release out of the agent's folder (`<spool>/update/ready/`):
//! the `.deb` and its `.deb.manifest` are copied into the helper's own
//! `incoming/` and the originals removed, so what is checked and installed
//! is a file the agent can no longer change; a signed config
//! (`config.signed`) is read into memory the same way.
//!
//! The agent owns every folder on the way (its state directory), so none
//! is trusted: each is opened without following a symbolic link, only
//! regular files are read, each no further than the most a package or a
//! manifest may be. A link placed to `/etc/shadow`, a FIFO, or an endless
//! file is refused in words, never followed, waited on or read to the end.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, openat, unlinkat};

use crate::release::config::MAX_SIGNED_CONFIG;
use crate::release::manifest::{MAX_MANIFEST, MAX_PACKAGE};

const MANIFEST_SUFFIX: &str = ".manifest";
/// The signed config the agent hands over.
pub(crate) const CONFIG: &str = "config.signed";

/// A release taken: the copied package, and its signed manifest's bytes.
#[derive(Debug)]
pub(crate) struct Taken {
    /// `<package>_<version>_<arch>.deb`, as the agent named it.
    pub(crate) name: String,
    pub(crate) deb: PathBuf,
    pub(crate) envelope: Vec<u8>,
}

/// What was ready: a package, a signed config, each or both, or why one
/// was refused.
#[derive(Debug, Default)]
pub(crate) struct Ready {
    pub(crate) package: Option<Result<Taken, String>>,
    pub(crate) config: Option<Result<Vec<u8>, String>>,
}

/// What `ready` holds, taken; every file of ours there is removed, taken
/// or not (the path unit starts the helper while one is there).
pub(crate) fn take_all(ready: &Path, into: &Path) -> Ready {
    let config = match open_dir(ready) {
        Ok(dir) => {
            let mut bytes = Vec::new();
            let read = copy_limited(&dir, ready, CONFIG, MAX_SIGNED_CONFIG as u64, &mut bytes);
            match read {
                Err(e) if e.ends_with(" is missing") => None,
                Err(e) => Some(Err(e)),
                Ok(()) => Some(Ok(bytes)),
            }
            .inspect(|_| {
                let _ = unlinkat(&dir, CONFIG, AtFlags::empty());
            })
        }
        Err(_) => None,
    };
    Ready {
        package: take(ready, into).transpose(),
        config,
    }
}

/// The first release in `ready` (by name), copied into `into`; every
/// `.deb` and `.deb.manifest` there is removed, taken or not (the path unit
/// starts the helper while one is there). `Ok(None)`: nothing was ready.
pub(crate) fn take(ready: &Path, into: &Path) -> Result<Option<Taken>, String> {
    let dir = match open_dir(ready) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot open {} without following a link: {}",
                ready.display(),
                crate::words::io_words(&e)
            ));
        }
    };
    let listed = rustix::fs::Dir::read_from(&dir)
        .map_err(|e| format!("cannot list {}: {e}", ready.display()))?;
    let mut names = Vec::new();
    for entry in listed.flatten() {
        if let Ok(name) = entry.file_name().to_str() {
            if name.ends_with(".deb") || name.ends_with(".deb.manifest") {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    let debs: Vec<&String> = names.iter().filter(|n| n.ends_with(".deb")).collect();
    let chosen = debs.first().map(|n| n.to_string());
    let result = match &chosen {
        Some(name) => copy_pair(&dir, ready, name, into).map(Some),
        None => Ok(None),
    };
    for name in &names {
        // Gone already is fine; anything else would start the helper again
        // at once, and is said.
        if let Err(e) = unlinkat(&dir, name.as_str(), AtFlags::empty()) {
            if e != rustix::io::Errno::NOENT {
                tracing::warn!(
                    "cannot remove {}/{name}: {e}; the path unit will start the helper again",
                    ready.display()
                );
            }
        }
    }
    if debs.len() > 1 {
        tracing::warn!(
            "{} packages were ready ({}); only {} was taken, the others were removed",
            debs.len(),
            debs.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            chosen.as_deref().unwrap_or("")
        );
    }
    result
}

fn copy_pair(dir: &OwnedFd, ready: &Path, name: &str, into: &Path) -> Result<Taken, String> {
    if !plain_name(name) {
        return Err(format!(
            "{}/{name} is not a package's name",
            ready.display()
        ));
    }
    let manifest_name = format!("{name}{MANIFEST_SUFFIX}");
    let mut envelope = Vec::new();
    copy_limited(
        dir,
        ready,
        &manifest_name,
        MAX_MANIFEST as u64,
        &mut envelope,
    )?;
    let deb = into.join(name);
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&deb)
        .map_err(|e| {
            format!(
                "cannot write {}: {}",
                deb.display(),
                crate::words::io_words(&e)
            )
        })?;
    let copied = copy_limited(dir, ready, name, MAX_PACKAGE, &mut out).and_then(|()| {
        out.sync_all().map_err(|e| {
            format!(
                "cannot write {}: {}",
                deb.display(),
                crate::words::io_words(&e)
            )
        })
    });
    if let Err(why) = copied {
        let _ = std::fs::remove_file(&deb);
        return Err(why);
    }
    Ok(Taken {
        name: name.to_string(),
        deb,
        envelope,
    })
}

/// `<package>_<version>_<arch>.deb` in the characters Debian allows.
fn plain_name(name: &str) -> bool {
    name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-~".contains(c))
}

/// Copies the regular file `name` in `dir` to `out`, refusing it unread if
/// it is anything else or larger than `limit`.
fn copy_limited(
    dir: &OwnedFd,
    ready: &Path,
    name: &str,
    limit: u64,
    out: &mut impl Write,
) -> Result<(), String> {
    let shown = ready.join(name);
    let fd = openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => format!(
            "{} is a symbolic link: refused (only the agent's own files are taken)",
            shown.display()
        ),
        rustix::io::Errno::NOENT => format!("{} is missing", shown.display()),
        e => format!("cannot open {}: {e}", shown.display()),
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| format!("{}: {e}", shown.display()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(format!(
            "{} is not a regular file: refused",
            shown.display()
        ));
    }
    let size = u64::try_from(stat.st_size).unwrap_or(u64::MAX);
    if size > limit {
        return Err(format!(
            "{} is {size} bytes, more than any release's {limit}: refused unread",
            shown.display()
        ));
    }
    let mut file = File::from(fd).take(limit.saturating_add(1));
    let copied = io::copy(&mut file, out).map_err(|e| {
        format!(
            "cannot copy {}: {}",
            shown.display(),
            crate::words::io_words(&e)
        )
    })?;
    if copied > limit {
        return Err(format!(
            "{} grew past {limit} bytes while it was read: refused",
            shown.display()
        ));
    }
    Ok(())
}

/// Opens `path` as a folder, one component at a time, following no link.
fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = openat(rustix::fs::CWD, "/", flags, Mode::empty())?;
    if !path.is_absolute() {
        dir = openat(rustix::fs::CWD, ".", flags, Mode::empty())?;
    }
    for part in path.components() {
        match part {
            Component::Normal(name) => dir = openat(&dir, name, flags, Mode::empty())?,
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::other("the path goes up a folder (..)"));
            }
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let ready = tmp.path().join("ready");
        let into = tmp.path().join("incoming");
        std::fs::create_dir_all(&ready).unwrap();
        std::fs::create_dir_all(&into).unwrap();
        for (name, bytes) in files {
            std::fs::write(ready.join(name), bytes).unwrap();
        }
        (tmp, ready, into)
    }

    #[test]
    fn a_release_is_copied_out_and_the_agents_files_removed() {
        let (_tmp, ready, into) = ready_with(&[
            ("pinpost_0.2.0-1_arm64.deb", b"package"),
            ("pinpost_0.2.0-1_arm64.deb.manifest", b"manifest"),
        ]);
        let taken = take(&ready, &into).unwrap().unwrap();
        assert_eq!(taken.name, "pinpost_0.2.0-1_arm64.deb");
        assert_eq!(std::fs::read(&taken.deb).unwrap(), b"package");
        assert_eq!(taken.envelope, b"manifest");
        assert_eq!(std::fs::read_dir(&ready).unwrap().count(), 0);
        assert!(take(&ready, &into).unwrap().is_none());
    }

    #[test]
    fn a_link_planted_by_the_agent_is_refused_and_not_followed() {
        let (tmp, ready, into) = ready_with(&[("pinpost_0.2.0-1_arm64.deb.manifest", b"m")]);
        let secret = tmp.path().join("shadow");
        std::fs::write(&secret, b"root's secret").unwrap();
        std::os::unix::fs::symlink(&secret, ready.join("pinpost_0.2.0-1_arm64.deb")).unwrap();
        let err = take(&ready, &into).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&secret).unwrap(), b"root's secret");
        assert!(!into.join("pinpost_0.2.0-1_arm64.deb").exists());
        // The link is removed, so the path unit does not start the helper
        // again and again.
        assert_eq!(std::fs::read_dir(&ready).unwrap().count(), 0);
    }

    #[test]
    fn a_ready_folder_that_is_a_link_is_refused() {
        let (tmp, real, into) = ready_with(&[
            ("pinpost_0.2.0-1_arm64.deb", b"p"),
            ("pinpost_0.2.0-1_arm64.deb.manifest", b"m"),
        ]);
        let linked = tmp.path().join("linked");
        std::os::unix::fs::symlink(&real, &linked).unwrap();
        let err = take(&linked, &into).unwrap_err();
        assert!(err.contains("without following a link"), "{err}");
        assert_eq!(
            std::fs::read_dir(&real).unwrap().count(),
            2,
            "nothing removed through it"
        );
    }

    #[test]
    fn a_fifo_or_a_missing_manifest_is_refused_without_waiting() {
        let (_tmp, ready, into) = ready_with(&[("pinpost_0.2.0-1_arm64.deb", b"p")]);
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            ready.join("pinpost_0.2.0-1_arm64.deb.manifest"),
            Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let err = take(&ready, &into).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        let (_tmp, ready, into) = ready_with(&[("pinpost_0.2.0-1_arm64.deb", b"p")]);
        let err = take(&ready, &into).unwrap_err();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn a_manifest_larger_than_any_is_refused_unread() {
        let big = vec![b'x'; MAX_MANIFEST + 1];
        let (_tmp, ready, into) = ready_with(&[
            ("pinpost_0.2.0-1_arm64.deb", b"p"),
            ("pinpost_0.2.0-1_arm64.deb.manifest", &big),
        ]);
        let err = take(&ready, &into).unwrap_err();
        assert!(err.contains("refused unread"), "{err}");
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn a_signed_config_is_read_and_removed_and_a_link_in_its_place_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let ready = tmp.path().join("ready");
        std::fs::create_dir_all(&ready).unwrap();
        std::fs::write(ready.join(CONFIG), b"signed").unwrap();
        let got = take_all(&ready, tmp.path());
        assert_eq!(got.config.unwrap().unwrap(), b"signed");
        assert!(got.package.is_none());
        assert!(!ready.join(CONFIG).exists());

        std::os::unix::fs::symlink("/etc/shadow", ready.join(CONFIG)).unwrap();
        let err = take_all(&ready, tmp.path()).config.unwrap().unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(
            std::fs::symlink_metadata(ready.join(CONFIG)).is_err(),
            "removed"
        );
        assert!(take_all(&ready, tmp.path()).config.is_none());
    }
}
