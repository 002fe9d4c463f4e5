//! A signed config, applied by the helper: opened with the release key,
//! admitted for this device (its id, in date, newer than the last one
//! taken), checked with the agent's own config checker, then written over
//! the config file with the file's mode and owner, the one it replaces kept
//! to go back to. The same health gate as a package decides whether it
//! stays: an agent that cannot connect and deliver with it gets the old
//! config back, and that config (by its SHA-256) is never applied again.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::files::{self, GOOD_CONFIG, Journal, Kind, Step};
use super::{Did, Job};
use crate::release::config::{self, sha256_hex};

/// How a config is named in the journal, the outcome and the rolled-back
/// list: `config:<sha256>`.
pub(crate) fn config_name(sha256: &str) -> String {
    format!("config:{sha256}")
}

impl Job<'_> {
    pub(super) fn apply_config(&mut self, sealed: &[u8]) -> Result<Did, String> {
        let signed = match config::open(sealed, &self.plan.key) {
            Ok(c) => c,
            Err(e) => {
                return self.end(
                    "refused",
                    "a signed config".into(),
                    None,
                    Some(e.to_string()),
                );
            }
        };
        let name = config_name(&signed.sha256());
        let file = self.plan.config_file.clone();
        let current = fs::read(&file).map_err(|e| {
            format!(
                "cannot read {}: {}",
                file.display(),
                crate::words::io_words(&e)
            )
        })?;
        let running = config_name(&sha256_hex(&current));
        let refuse = |job: &mut Self, why: String| {
            job.end("refused", name.clone(), Some(running.clone()), Some(why))
        };
        let now = if self.plan.clock_trusted {
            crate::utc::now_unix()
        } else {
            signed.issued
        };
        if let Err(e) = signed.admit(&self.plan.device, now, self.files.newest(Kind::Config)) {
            return refuse(self, e.to_string());
        }
        if name == running {
            return self.end(
                "applied",
                name,
                None,
                Some("it is the config running".into()),
            );
        }
        if let Some(bad) = self
            .files
            .rolled_back()
            .into_iter()
            .find(|r| r.version == name)
        {
            return refuse(
                self,
                format!(
                    "this config was rolled back on this device before ({})",
                    bad.reason
                ),
            );
        }
        // The device's own checker, as `pinpost check` says it.
        match crate::config::from_text(&signed.config, Some(&file), &Default::default()) {
            Err(e) => return refuse(self, e.to_string()),
            Ok(c) if c.device.id != self.plan.device => {
                return refuse(
                    self,
                    format!(
                        "it would make this device {} (its [device] id); a device's id does not \
                         change by config",
                        c.device.id
                    ),
                );
            }
            Ok(_) => {}
        }
        let good = self.files.path(GOOD_CONFIG);
        replace_like(&good, &current, &file).map_err(|e| {
            format!(
                "cannot keep the running config: {}",
                crate::words::io_words(&e)
            )
        })?;
        let mut journal = Journal {
            kind: Kind::Config,
            step: Step::Installing,
            version: name.clone(),
            issued: signed.issued,
            previous: running,
            previous_deb: good,
            reason: None,
        };
        self.journal(&journal)?;
        tracing::info!("applying the signed config {name} to {}", file.display());
        let started = crate::utc::now_unix();
        if let Err(e) = replace_like(&file, signed.config.as_bytes(), &file) {
            return self.roll_back(
                journal,
                format!("it could not be written: {}", crate::words::io_words(&e)),
            );
        }
        journal.step = Step::Checking;
        self.journal(&journal)?;
        self.check(journal, started, false)
    }

    /// The config kept before a signed one was written, put back.
    pub(super) fn restore_config(&mut self, journal: &Journal) -> Result<(), String> {
        let file = &self.plan.config_file;
        let good = fs::read(&journal.previous_deb).map_err(|e| {
            format!(
                "the signed config {} is not healthy, and the config kept before it ({}) cannot \
                 be read: {}. Put a working config in {} by hand",
                journal.version,
                journal.previous_deb.display(),
                crate::words::io_words(&e),
                file.display()
            )
        })?;
        replace_like(file, &good, file).map_err(|e| {
            format!(
                "cannot put the config that ran before back in {}: {}",
                file.display(),
                crate::words::io_words(&e)
            )
        })
    }

    /// Whether what the journal installs is what is in place now (after a
    /// cut): the package's version per dpkg, or the config file's hash.
    pub(super) fn is_in_place(&mut self, journal: &Journal) -> Result<bool, String> {
        match journal.kind {
            Kind::Package => {
                if let Err(why) = self.sys.repair() {
                    tracing::warn!("dpkg could not finish what was cut short: {why}");
                }
                Ok(self.sys.installed()?.as_deref() == Some(journal.version.as_str()))
            }
            Kind::Config => Ok(fs::read(&self.plan.config_file)
                .is_ok_and(|now| config_name(&sha256_hex(&now)) == journal.version)),
        }
    }
}

/// `bytes` written to `path` whole (a temporary file beside it, synced,
/// renamed, the folder synced), with the mode and owner of `like`.
fn replace_like(path: &Path, bytes: &[u8], like: &Path) -> std::io::Result<()> {
    let meta = fs::metadata(like)?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.pinpost-tmp"));
    let _ = fs::remove_file(&tmp);
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    out.write_all(bytes)?;
    // Owner first: a chown clears set-id bits, and the mode comes after.
    std::os::unix::fs::fchown(&out, Some(meta.uid()), Some(meta.gid()))?;
    out.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    out.sync_all()?;
    fs::rename(&tmp, path)?;
    files::sync_dir(dir)
}
