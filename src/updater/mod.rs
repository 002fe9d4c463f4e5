//! `pinpost install-update`: the root helper that installs a release the
//! agent fetched, and puts the previous one back when the new one does not
//! come up healthy. `pinpost-update.path` starts it (through
//! `pinpost-update.service`) when a package appears in the agent's
//! `update/ready/`, and the service runs once at every boot, to finish or
//! undo an install a power cut interrupted.
//!
//! It trusts nothing the agent hands it: it copies the package and its
//! manifest out of the agent's folder (`take`), opens the manifest with the
//! release key named in the config (root's file, not the agent's), and
//! checks the copy's size and SHA-256, the architecture, the version order,
//! replays and the versions rolled back here before, all itself. Then it
//! keeps the running package (repacked), installs the new one with dpkg,
//! restarts the agent and waits for it to connect and deliver (`gate`).
//! A release that does not is replaced by the previous package, and its
//! version is never tried again on this device. Each step is written to a
//! journal first (`files`), so a power cut at any moment leaves a step the
//! next boot finishes or undoes.
//!
//! It knows dpkg and systemd only through `System`; it does not know MQTT
//! (the agent reports what `outcome.json` says).

mod config;
mod files;
mod gate;
mod system;
mod take;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::release::key::Public;
use crate::release::manifest::{self, Installed};

pub(crate) use config::config_name;
pub(crate) use files::{Outcome, RolledBack};
pub(crate) use gate::Unit;
pub(crate) use system::Real;

/// The files `outcome.json` and `rolled-back.json`, for the agent.
pub(crate) const OUTCOME_FILE: &str = "outcome.json";
pub(crate) const ROLLED_BACK_FILE: &str = "rolled-back.json";

/// How often the agent's unit is looked at while the gate waits.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// What the helper needs of the machine.
pub(crate) trait System {
    /// The installed pinpost's version, if dpkg has it installed and
    /// configured.
    fn installed(&mut self) -> Result<Option<String>, String>;
    /// dpkg's architecture.
    fn architecture(&mut self) -> Result<String, String>;
    /// Finishes what dpkg left half done (`dpkg --configure -a`).
    fn repair(&mut self) -> Result<(), String>;
    /// The installed package rebuilt into `into`; its path.
    fn repack(&mut self, into: &Path) -> Result<PathBuf, String>;
    /// `dpkg -i`.
    fn install(&mut self, deb: &Path) -> Result<(), String>;
    /// Restarts the agent's unit, without waiting for it.
    fn restart(&mut self) -> Result<(), String>;
    fn unit(&mut self) -> Result<Unit, String>;
    /// The agent's last log lines: of its run `invocation` (systemd's
    /// id), else since then.
    fn log_tail(&mut self, since_unix: i64, invocation: &str) -> String;
    /// Copies this helper to `to` (the package's own may be replaced by a
    /// broken one before a boot needs it).
    fn save_helper(&mut self, to: &Path) -> Result<(), String>;
    fn sleep(&mut self, d: Duration);
    /// Time since the helper started.
    fn elapsed(&mut self) -> Duration;
}

/// What a run is given.
pub(crate) struct Plan {
    /// The release key's public half, from the config.
    pub(crate) key: Public,
    /// The agent's `update/ready/`.
    pub(crate) ready: PathBuf,
    /// The helper's own folder.
    pub(crate) dir: PathBuf,
    pub(crate) health_timeout: Duration,
    /// Whether the wall clock is set: a manifest's expiry is judged only
    /// then.
    pub(crate) clock_trusted: bool,
    /// The agent's config file (root's), which a signed config replaces,
    /// and the device id it names.
    pub(crate) config_file: PathBuf,
    pub(crate) device: String,
}

/// What a run did, in words for its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Did {
    pub(crate) outcome: Outcome,
}

impl std::fmt::Display for Did {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.outcome;
        write!(f, "{} {}", o.state, o.version)?;
        if let Some(p) = &o.previous {
            write!(f, " (before: {p})")?;
        }
        if let Some(r) = &o.reason {
            write!(f, ": {r}")?;
        }
        Ok(())
    }
}

/// One run: an interrupted install finished or undone, then a ready
/// release, if any, installed. `Err`: the helper could not do its job and
/// the machine may need a person (said in words).
pub(crate) fn run(plan: &Plan, sys: &mut dyn System) -> Result<Vec<Did>, String> {
    let files = files::Files::new(&plan.dir);
    files.make().map_err(|e| {
        format!(
            "cannot make {}: {}",
            plan.dir.display(),
            crate::words::io_words(&e)
        )
    })?;
    let _lock = lock(&plan.dir)?;
    let mut did = Vec::new();
    let journal = files.journal().map_err(|e| {
        format!(
            "the journal of an install cannot be read ({}): remove {} after checking `dpkg -l \
             pinpost`",
            crate::words::io_words(&e),
            files.path("journal.json").display()
        )
    })?;
    let mut job = Job {
        plan,
        sys,
        files,
        kind: files::Kind::Package,
    };
    if let Some(journal) = journal {
        job.kind = journal.kind;
        did.push(job.recover(journal)?);
    }
    let ready = take::take_all(&plan.ready, &job.files.incoming());
    if let Some(config) = ready.config {
        job.kind = files::Kind::Config;
        did.push(match config {
            Ok(bytes) => job.apply_config(&bytes)?,
            Err(why) => job.end("refused", "a signed config".into(), None, Some(why))?,
        });
    }
    if let Some(package) = ready.package {
        job.kind = files::Kind::Package;
        did.push(match package {
            Ok(taken) => job.install(taken)?,
            Err(why) => job.end("refused", "a release".into(), None, Some(why))?,
        });
    }
    Ok(did)
}

fn lock(dir: &Path) -> Result<std::fs::File, String> {
    use rustix::fs::{FlockOperation, flock};
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| {
            format!(
                "cannot open {}: {}",
                path.display(),
                crate::words::io_words(&e)
            )
        })?;
    flock(&file, FlockOperation::LockExclusive)
        .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
    Ok(file)
}

struct Job<'a> {
    plan: &'a Plan,
    sys: &'a mut dyn System,
    files: files::Files,
    /// What the install under way is of.
    kind: files::Kind,
}

impl Job<'_> {
    fn install(&mut self, taken: take::Taken) -> Result<Did, String> {
        let manifest = match manifest::open(&taken.envelope, &self.plan.key) {
            Ok(m) => m,
            Err(e) => return self.end("refused", taken.name, None, Some(e.to_string())),
        };
        let version = manifest.version.clone();
        let refuse =
            |job: &mut Self, why: String| job.end("refused", version.clone(), None, Some(why));
        let Some(installed) = self.sys.installed()? else {
            return refuse(
                self,
                "pinpost is not installed from a package here (install.sh, or a half-done \
                 dpkg), so there is nothing to go back to: install the .deb by hand"
                    .into(),
            );
        };
        if let Some(bad) = self
            .files
            .rolled_back()
            .into_iter()
            .find(|r| r.version == version)
        {
            return refuse(
                self,
                format!(
                    "{version} was rolled back on this device before ({}); it is not tried again",
                    bad.reason
                ),
            );
        }
        let architecture = self.sys.architecture()?;
        // Without a set clock the expiry cannot be judged: the agent judged
        // it on a trusted clock before it fetched the package, and the
        // signature, version order and replay checks below still hold.
        let now = if self.plan.clock_trusted {
            crate::utc::now_unix()
        } else {
            manifest.issued
        };
        let judged = manifest.admit(
            &Installed {
                package: "pinpost",
                version: &installed,
                architecture: &architecture,
                newest_issued: self.files.newest(files::Kind::Package),
            },
            Some(now),
        );
        if let Err(e) = judged {
            return refuse(self, e.to_string());
        }
        let expected = format!(
            "{}_{}_{}.deb",
            manifest.package, manifest.version, manifest.architecture
        );
        if taken.name != expected {
            return refuse(
                self,
                format!(
                    "the package was ready as {}, and its manifest names {expected}",
                    taken.name
                ),
            );
        }
        let checked = std::fs::File::open(&taken.deb)
            .and_then(crate::digest::sha256)
            .map_err(|e| {
                format!(
                    "cannot read {}: {}",
                    taken.deb.display(),
                    crate::words::io_words(&e)
                )
            });
        let (size, digest) = match checked {
            Ok(d) => d,
            Err(why) => return refuse(self, why),
        };
        if let Err(e) = manifest.describes(size, &digest) {
            return refuse(self, e.to_string());
        }
        let previous_deb = match self.sys.repack(&self.files.previous()) {
            Ok(p) => p,
            Err(why) => {
                return refuse(
                    self,
                    format!(
                        "the running {installed} could not be kept to go back to ({why}); nothing was installed"
                    ),
                );
            }
        };
        self.sys
            .save_helper(&self.files.path(files::SAVED_HELPER))?;
        let mut journal = files::Journal {
            kind: files::Kind::Package,
            step: files::Step::Installing,
            version: version.clone(),
            issued: manifest.issued,
            previous: installed.clone(),
            previous_deb,
            reason: None,
        };
        self.journal(&journal)?;
        tracing::info!("installing pinpost {version} over {installed}");
        let started = crate::utc::now_unix();
        if let Err(why) = self.sys.install(&taken.deb) {
            return self.roll_back(journal, format!("dpkg could not install it: {why}"));
        }
        journal.step = files::Step::Checking;
        self.journal(&journal)?;
        self.check(journal, started, false)
    }

    /// Restarts the agent and waits for it; keeps the release or rolls
    /// it back.
    pub(super) fn check(
        &mut self,
        journal: files::Journal,
        started: i64,
        after_boot: bool,
    ) -> Result<Did, String> {
        match self.gate(started) {
            Ok(()) => {
                if let Err(e) = self.files.set_newest(journal.kind, journal.issued) {
                    tracing::warn!(
                        "cannot keep the release's date: {}",
                        crate::words::io_words(&e)
                    );
                }
                let reason = after_boot.then(|| {
                    "a power cut or crash interrupted the install; it was finished at boot"
                        .to_string()
                });
                let state = match journal.kind {
                    files::Kind::Package => "installed",
                    files::Kind::Config => "applied",
                };
                self.end(
                    state,
                    journal.version.clone(),
                    Some(journal.previous.clone()),
                    reason,
                )
            }
            Err(why) => self.roll_back(journal, why),
        }
    }

    /// Restarts the agent and waits until it is healthy, has failed, or
    /// the health timeout passed; `Err` says why it is not healthy.
    fn gate(&mut self, started: i64) -> Result<(), String> {
        let before = self.sys.unit()?;
        self.sys.restart()?;
        let from = self.sys.elapsed();
        loop {
            let now = self.sys.unit()?;
            let why = match gate::judge(&before, &now) {
                gate::Health::Healthy => return Ok(()),
                gate::Health::Failed(why) => why,
                gate::Health::Waiting => {
                    if self.sys.elapsed().saturating_sub(from) < self.plan.health_timeout {
                        self.sys.sleep(LOOK_EVERY);
                        continue;
                    }
                    gate::not_in_time(&now, self.plan.health_timeout)
                }
            };
            let log = self.sys.log_tail(started, &now.invocation);
            return Err(if log.is_empty() {
                why
            } else {
                format!("{why}; its log: {log}")
            });
        }
    }

    /// Puts the previous package back, never to try this version again.
    pub(super) fn roll_back(
        &mut self,
        mut journal: files::Journal,
        why: String,
    ) -> Result<Did, String> {
        tracing::warn!(
            "pinpost {} is not healthy: {why}; putting {} back",
            journal.version,
            journal.previous
        );
        if let Err(e) = self.files.add_rolled_back(&journal.version, &why) {
            tracing::warn!("cannot record the rollback: {}", crate::words::io_words(&e));
        }
        journal.step = files::Step::RollingBack;
        journal.reason = Some(why.clone());
        self.journal(&journal)?;
        self.put_back(&journal)?;
        self.end(
            "rolled back",
            journal.version,
            Some(journal.previous),
            Some(why),
        )
    }

    /// The previous package (or config) back and its agent started; `Err` only
    /// when dpkg cannot (the journal stays: the next boot tries again).
    fn put_back(&mut self, journal: &files::Journal) -> Result<(), String> {
        let started = crate::utc::now_unix();
        match journal.kind {
            files::Kind::Config => self.restore_config(journal)?,
            files::Kind::Package => self.sys.install(&journal.previous_deb).map_err(|e| {
                format!(
                    "pinpost {} is not healthy, and putting {} back failed too: {e}. Install {} \
                     by hand (dpkg -i); the next boot tries again",
                    journal.version,
                    journal.previous,
                    journal.previous_deb.display()
                )
            })?,
        }
        if let Err(why) = self.gate(started) {
            tracing::error!(
                "{} is back, but not healthy either: {why}",
                journal.previous
            );
        }
        Ok(())
    }

    /// An install the journal says was under way when the helper stopped
    /// (a power cut, a crash): finished, or undone.
    fn recover(&mut self, mut journal: files::Journal) -> Result<Did, String> {
        tracing::warn!(
            "an install of pinpost {} over {} was cut short while {:?}; going on from there",
            journal.version,
            journal.previous,
            journal.step
        );
        let started = crate::utc::now_unix();
        match journal.step {
            files::Step::RollingBack => {
                let why = journal
                    .reason
                    .clone()
                    .unwrap_or_else(|| "it was not healthy".into());
                self.put_back(&journal)?;
                self.end(
                    "rolled back",
                    journal.version,
                    Some(journal.previous),
                    Some(why),
                )
            }
            files::Step::Installing | files::Step::Checking => {
                if self.is_in_place(&journal)? {
                    journal.step = files::Step::Checking;
                    self.journal(&journal)?;
                    return self.check(journal, started, true);
                }
                // Not the release's fault: put what ran back, and let the
                // agent fetch the release again.
                self.put_back(&journal)?;
                self.end(
                    "interrupted",
                    journal.version.clone(),
                    Some(journal.previous.clone()),
                    Some(format!(
                        "a power cut or crash interrupted the install; {} was put back, and the \
                         release is fetched and tried again",
                        journal.previous
                    )),
                )
            }
        }
    }

    pub(super) fn journal(&self, journal: &files::Journal) -> Result<(), String> {
        self.files.set_journal(journal).map_err(|e| {
            format!(
                "cannot write the install's journal: {}",
                crate::words::io_words(&e)
            )
        })
    }

    /// Says how it went, in `outcome.json` and the log, and clears the
    /// install's files.
    pub(super) fn end(
        &mut self,
        state: &str,
        version: String,
        previous: Option<String>,
        reason: Option<String>,
    ) -> Result<Did, String> {
        let outcome = Outcome {
            kind: (self.kind == files::Kind::Config).then(|| "config".to_string()),
            state: state.to_string(),
            version,
            previous,
            reason,
            ts: crate::utc::rfc3339_millis(crate::utc::now_unix_millis()),
        };
        let did = Did { outcome };
        match state {
            "installed" | "applied" => tracing::info!("{did}"),
            _ => tracing::warn!("{did}"),
        }
        self.files
            .set_outcome(&did.outcome)
            .and_then(|()| self.files.finish())
            .map_err(|e| {
                format!(
                    "{did}; but its record cannot be written: {}",
                    crate::words::io_words(&e)
                )
            })?;
        Ok(did)
    }
}

#[cfg(test)]
mod tests;
