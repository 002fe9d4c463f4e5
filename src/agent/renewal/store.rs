//! The renewal's files, in `identity/` beside the spool (the config's own
//! pair under /etc/pinpost is read-only to the service and never touched):
//!
//! | file | holds | written when |
//! |---|---|---|
//! | `next.key` | the new key, waiting for its certificate | a renewal starts |
//! | `trial.pem` | the new certificate and key, checked, not yet connected with | the certificate arrives |
//! | `current.pem` | the pair that has connected, in use | the trial pair connects |
//! | `rejected.pem` | the last pair the broker refused, for a person to look at | a switch fails |
//!
//! Each file is written whole to a temporary file (0600), synced, renamed
//! into place and the folder synced, so a power cut at any moment leaves
//! each file old or new, never half; `current.pem` is replaced only by a
//! pair that has connected, and the config's pair is always there behind
//! it. These writes happen a few times in a certificate's life, so they
//! are done on the loop, in order, rather than on a thread.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::tls::Pair;

/// The `identity/` folder.
#[derive(Debug, Clone)]
pub(super) struct Store {
    dir: PathBuf,
}

/// The largest file read back: a pair with an RSA key is about 4 KiB.
const MAX_FILE: u64 = 64 * 1024;

impl Store {
    pub(super) fn new(state_dir: &Path) -> Store {
        Store {
            dir: state_dir.join("identity"),
        }
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A file's text, if it is there and of a sane size.
    pub(super) fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        crate::whole_file::read_small(&self.path(name), MAX_FILE, "a certificate and key")
    }

    /// Writes `name` durably (see the module's words).
    pub(super) fn write(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let _ = fs::set_permissions(
            &self.dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        );
        let tmp = self.path(&format!("{name}.tmp"));
        crate::whole_file::replace(&self.path(name), &tmp, bytes, true)?;
        self.sync_dir()
    }

    /// Renames `from` over `to` durably.
    pub(super) fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from), self.path(to))?;
        self.sync_dir()
    }

    /// Removes `name`; gone already is fine.
    pub(super) fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.path(name)) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn sync_dir(&self) -> io::Result<()> {
        fs::File::open(&self.dir)?.sync_all()
    }
}

pub(super) const NEXT_KEY: &str = "next.key";
pub(super) const TRIAL: &str = "trial.pem";
pub(super) const CURRENT: &str = "current.pem";
pub(super) const REJECTED: &str = "rejected.pem";

/// The pair the agent renewed and has connected with, when it is this
/// device's and ends later than the config's: what `pinpost check`,
/// `publish` and `subscribe` use instead of the config's files (it holds
/// the certificate and the key). `None` when there is none or it cannot be
/// read (only the agent's user and root can).
pub(crate) fn renewed_pair(config: &Config) -> Option<std::path::PathBuf> {
    let tls = config.broker.tls.as_ref()?;
    let configured = std::fs::read(tls.cert_file.as_ref()?.path()).ok()?;
    let configured_ends = crate::tls::ca_certificates(&configured)
        .first()
        .and_then(|der| crate::tls::CertSummary::from_der(der))
        .map_or(i64::MIN, |c| c.not_after);
    let path = Store::new(&config.outbox.path).path(CURRENT);
    let pem = std::fs::read(&path).ok()?;
    let pair = Pair::from_pem(&pem, &pem).ok()?;
    (pair.name() == Some(config.device.id.as_str()) && pair.ends() > configured_ends)
        .then_some(path)
}
