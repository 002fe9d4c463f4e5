//! The update's files, in `update/` beside the spool:
//!
//! | file | holds | written when |
//! |---|---|---|
//! | `manifest.json` | the signed manifest being fetched, as it came | a release is admitted |
//! | `newest` | when the newest admitted manifest was signed (Unix seconds) | a release is admitted |
//! | `config-newest` | when the newest signed config handed over was signed | a config is handed over |
//! | `ready/config.signed` | a signed config, checked, for the install helper | a config is handed over |
//! | `package.part` | the chunks so far, in order | each chunk (synced every MiB) |
//! | `ready/<package>_<version>_<arch>.deb` and `.manifest` | a package whose size, SHA-256 and signature held, for the install helper (`pinpost-update.path` watches this folder) | the last chunk is checked (`install = "auto"`), or an install command came |
//! | `held/…` | the same, kept until an install command (`install = "when-asked"`) | the last chunk is checked |
//!
//! `package.part` is only ever appended to at its end, so its length says
//! where to go on after a stop or a power cut (floored to a whole chunk);
//! nothing in it is trusted until the whole file's SHA-256 matches the
//! manifest. One release at a time: a new one, or a ready one, replaces
//! what was there, so the disk holds at most one package and one part; a
//! withdrawn one leaves neither.
//!
//! The appending and the hashing run off the loop (`spawn_blocking`): a
//! 20 MiB hash takes a second on a Pi Zero.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::topics::RELEASE_CHUNK;

pub(super) const MANIFEST: &str = "manifest.json";
const NEWEST: &str = "newest";
const CONFIG_NEWEST: &str = "config-newest";
/// A signed config handed to the install helper, in `ready/`.
const CONFIG: &str = "config.signed";
const PART: &str = "package.part";
const READY: &str = "ready";
const HELD: &str = "held";

/// Where a checked package is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shelf {
    /// For the install helper, now.
    Ready,
    /// Until an install command.
    Held,
}

impl Shelf {
    fn dir(self) -> &'static str {
        match self {
            Shelf::Ready => READY,
            Shelf::Held => HELD,
        }
    }
}

/// Sync the part file at least this often.
const SYNC_EVERY: u64 = 1024 * 1024;

/// The `update/` folder.
#[derive(Debug, Clone)]
pub(super) struct Files {
    dir: PathBuf,
}

impl Files {
    pub(super) fn new(state_dir: &Path) -> Files {
        Files {
            dir: state_dir.join("update"),
        }
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn make(&self) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let _ = fs::set_permissions(
            &self.dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        );
        Ok(())
    }

    /// The manifest being fetched, if one was admitted.
    pub(super) fn manifest(&self) -> io::Result<Option<Vec<u8>>> {
        crate::whole_file::read_small(
            &self.path(MANIFEST),
            crate::release::manifest::MAX_MANIFEST as u64,
            "a manifest",
        )
    }

    /// When the newest admitted manifest was signed.
    pub(super) fn newest(&self) -> Option<i64> {
        crate::whole_file::read_number(&self.path(NEWEST))
    }

    /// A release admitted: its manifest and date kept, an old part thrown
    /// away. Synced, in that order, before the first chunk is asked for.
    pub(super) fn begin(&self, envelope: &[u8], issued: i64) -> io::Result<()> {
        self.make()?;
        remove(&self.path(PART))?;
        let newest = self.newest().map_or(issued, |n| n.max(issued));
        crate::whole_file::replace(
            &self.path(NEWEST),
            &self.path("newest.tmp"),
            newest.to_string().as_bytes(),
            true,
        )?;
        crate::whole_file::replace(
            &self.path(MANIFEST),
            &self.path("manifest.tmp"),
            envelope,
            true,
        )?;
        sync_dir(&self.dir)
    }

    /// How many whole chunks `package.part` holds, a torn tail cut off.
    pub(super) fn chunks_here(&self) -> io::Result<u64> {
        let path = self.path(PART);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let whole = len / RELEASE_CHUNK as u64;
        if whole * RELEASE_CHUNK as u64 != len {
            OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(whole * RELEASE_CHUNK as u64)?;
        }
        Ok(whole)
    }

    /// The work of writing chunk `n`, for a blocking thread.
    pub(super) fn append_job(
        &self,
        n: u64,
        bytes: Vec<u8>,
    ) -> impl FnOnce() -> io::Result<()> + Send + use<> {
        let (dir, path) = (self.dir.clone(), self.path(PART));
        move || {
            fs::create_dir_all(&dir)?;
            let mut file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&path)?;
            let at = n * RELEASE_CHUNK as u64;
            // Whatever a cut left past this chunk's start goes.
            file.set_len(at)?;
            file.seek(SeekFrom::Start(at))?;
            file.write_all(&bytes)?;
            let end = at + bytes.len() as u64;
            if n == 0 || end / SYNC_EVERY != at / SYNC_EVERY {
                file.sync_data()?;
            }
            Ok(())
        }
    }

    /// The work of hashing the whole part file, for a blocking thread:
    /// its size and SHA-256.
    pub(super) fn digest_job(&self) -> impl FnOnce() -> io::Result<(u64, Vec<u8>)> + Send + use<> {
        let path = self.path(PART);
        move || {
            let file = File::open(&path)?;
            file.sync_all()?;
            crate::digest::sha256(file)
        }
    }

    /// The checked package moved to `ready/` (the only one there) beside
    /// its manifest; the path it has now.
    pub(super) fn promote(&self, name: &str, envelope: &[u8], shelf: Shelf) -> io::Result<PathBuf> {
        for old in [READY, HELD] {
            if self.path(old).exists() {
                fs::remove_dir_all(self.path(old))?;
            }
        }
        let ready = self.path(shelf.dir());
        fs::create_dir_all(&ready)?;
        let deb = ready.join(format!("{name}.deb"));
        crate::whole_file::replace(
            &ready.join(format!("{name}.deb.manifest")),
            &ready.join("manifest.tmp"),
            envelope,
            true,
        )?;
        fs::rename(self.path(PART), &deb)?;
        sync_dir(&ready)?;
        sync_dir(&self.dir)?;
        Ok(deb)
    }

    /// Where the checked package `name` is, if it is kept.
    pub(super) fn kept(&self, name: &str) -> Option<Shelf> {
        [Shelf::Ready, Shelf::Held]
            .into_iter()
            .find(|shelf| self.path(shelf.dir()).join(format!("{name}.deb")).is_file())
    }

    /// When the newest signed config handed over was signed.
    pub(super) fn config_newest(&self) -> Option<i64> {
        crate::whole_file::read_number(&self.path(CONFIG_NEWEST))
    }

    /// A checked signed config handed to the install helper (its arrival
    /// in `ready/` starts the helper), its date kept first.
    pub(super) fn hand_config(&self, sealed: &[u8], issued: i64) -> io::Result<()> {
        self.make()?;
        crate::whole_file::replace(
            &self.path(CONFIG_NEWEST),
            &self.path("config-newest.tmp"),
            issued.to_string().as_bytes(),
            true,
        )?;
        let ready = self.path(READY);
        fs::create_dir_all(&ready)?;
        crate::whole_file::replace(&ready.join(CONFIG), &ready.join("config.tmp"), sealed, true)?;
        sync_dir(&ready)
    }

    /// A held package handed to the install helper: its manifest, then the
    /// package (whose arrival starts the helper), moved into `ready/`.
    pub(super) fn release_held(&self, name: &str) -> io::Result<()> {
        let (held, ready) = (self.path(HELD), self.path(READY));
        fs::create_dir_all(&ready)?;
        let manifest = format!("{name}.deb.manifest");
        fs::rename(held.join(&manifest), ready.join(&manifest))?;
        fs::rename(
            held.join(format!("{name}.deb")),
            ready.join(format!("{name}.deb")),
        )?;
        sync_dir(&ready)?;
        sync_dir(&held)
    }

    /// A part that failed its check, gone.
    pub(super) fn discard_part(&self) -> io::Result<()> {
        remove(&self.path(PART))
    }

    /// The release withdrawn: manifest, part and a ready package gone
    /// (`newest` stays, so an older manifest stays refused).
    pub(super) fn clear(&self) -> io::Result<()> {
        remove(&self.path(PART))?;
        remove(&self.path(MANIFEST))?;
        for dir in [READY, HELD] {
            match fs::remove_dir_all(self.path(dir)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
