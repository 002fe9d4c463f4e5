//! After a release is checked: handing it to the install helper (at once,
//! or when an install command asks), hearing back from the helper
//! (`outcome.json`), and what a manifest of a release that is installed
//! already, or was rolled back here, comes to. It does not fetch.

use super::{Release, State, Updater, files};
use crate::words::io_words;

impl Updater {
    /// A release installed already, or rolled back here before: said
    /// (once) rather than refused, its files dropped, nothing fetched.
    pub(super) fn done_with(&mut self, version: &str) -> bool {
        let (state, reason) = if crate::release::version::compare(version, &self.installed).is_eq()
        {
            ("installed", None)
        } else if let Some(why) = self.helper.rolled_back(version) {
            (
                "rolled back",
                Some(format!("{why}; it is not tried again on this device")),
            )
        } else {
            return false;
        };
        self.stop_asking();
        self.state = State::Idle;
        if let Err(e) = self.files.clear() {
            tracing::warn!("update: cannot remove {version}'s files: {}", io_words(&e));
        }
        if self.last_said != Some((state, Some(version.to_string()))) {
            tracing::info!("update: {version} is {state} on this device; nothing to fetch");
            let percent = (state == "installed").then_some(100);
            self.report_why(state, Some(version), percent, reason);
        }
        true
    }

    /// What the install helper says it did, reported; a release it put
    /// back or refused is dropped.
    pub(super) fn on_outcome(&mut self, outcome: crate::updater::Outcome) {
        if outcome.kind.as_deref() == Some("config") {
            return self.on_config_outcome(&outcome);
        }
        let version = outcome.version.as_str();
        let (state, reason) = match outcome.state.as_str() {
            "installed" => ("installed", outcome.reason.clone()),
            "rolled back" => ("rolled back", outcome.reason.clone()),
            "refused" => (
                "refused",
                Some(format!(
                    "the install helper refused it: {}",
                    outcome.reason.as_deref().unwrap_or("no reason given")
                )),
            ),
            "interrupted" => ("failed", outcome.reason.clone()),
            other => {
                tracing::warn!("update: the install helper says {other:?}, which is not known");
                return;
            }
        };
        match state {
            "installed" => tracing::info!("update: the install helper installed {version}"),
            _ => tracing::warn!(
                "update: the install helper: {state} {version}: {}",
                reason.as_deref().unwrap_or("")
            ),
        }
        if matches!(state, "rolled back" | "refused") {
            if let State::Ready(release) = &self.state {
                if release.manifest.version == version {
                    self.state = State::Idle;
                    let _ = self.files.clear();
                }
            }
        }
        let percent = (state == "installed").then_some(100);
        self.report_why(state, Some(version), percent, reason);
    }

    /// A checked release, said: held ones wait for a command.
    pub(super) fn report_verified(&mut self, release: &Release, shelf: files::Shelf) {
        let reason = (shelf == files::Shelf::Held).then(|| {
            "waiting for an install command (Home Assistant's Install, or \
             {\"action\":\"install\"} on cmd/update): [update] install = \"when-asked\""
                .to_string()
        });
        self.report_why(
            "verified",
            Some(&release.manifest.version),
            Some(100),
            reason,
        );
    }

    /// An install command: the held release goes to the install helper.
    /// `Ok` and `Err` are the words of the command's result.
    pub(in crate::agent) fn install_asked(
        &mut self,
        version: Option<&str>,
    ) -> Result<String, String> {
        let release = match &self.state {
            State::Ready(release) => release.clone(),
            State::Fetching(fetch) => {
                return Err(format!(
                    "{} is still being fetched; ask again once it is verified",
                    fetch.release.manifest.version
                ));
            }
            State::Verifying { release, .. } => {
                return Err(format!(
                    "{} is being checked; ask again once it is verified",
                    release.manifest.version
                ));
            }
            State::Idle | State::Failed { .. } => {
                return Err(format!(
                    "no release is fetched and checked here (this device runs {}): publish one \
                     for it with `pinpost release publish`",
                    self.installed
                ));
            }
        };
        let have = &release.manifest.version;
        if let Some(asked) = version.filter(|v| v != have) {
            return Err(format!(
                "{asked} is not the release checked here ({have}); nothing was installed"
            ));
        }
        match self.files.kept(&release.name()) {
            Some(files::Shelf::Ready) => {
                return Err(format!("{have} is with the install helper already"));
            }
            Some(files::Shelf::Held) => {}
            None => {
                return Err(format!(
                    "{have} was checked, but its package is no longer here; publish it again"
                ));
            }
        }
        self.files
            .release_held(&release.name())
            .map_err(|e| format!("cannot hand {have} to the install helper: {}", io_words(&e)))?;
        tracing::info!("update: installing {have}, as a command asked");
        self.report("installing", Some(have), None);
        Ok(format!("installing {have}"))
    }
}
