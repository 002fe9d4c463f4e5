//! Signed configs for this device: the operator leaves one, retained, on
//! `<prefix>/<id>/config`; the agent opens it with the release key, admits
//! it (this device's id, in date, newer than the last one handed over),
//! checks it with its own config checker, and hands it to the install
//! helper (`update/ready/config.signed`), which writes it over the config
//! file, restarts the agent and puts the old one back if the agent cannot
//! connect and deliver with it. What runs (the config file's SHA-256) and
//! how a signed one went is said, retained, on `config/state`.
//!
//! It cannot write the config file itself (root's, and the unit's
//! `ProtectSystem=strict`), and does not try.

use std::path::PathBuf;

use super::Updater;
use crate::release::config::{self, SignedConfig, sha256_hex};
use crate::topics::ConfigReport;
use crate::words::io_words;

/// This device's config, as the signed ones are judged against it.
pub(super) struct Configs {
    device: String,
    file: Option<PathBuf>,
    /// The SHA-256 of the config file read at start.
    running: String,
    /// The last signed config judged, as it came: a retained one is
    /// delivered again at each connect.
    judged: Option<Vec<u8>>,
    /// One waiting for the clock.
    deferred: Option<Vec<u8>>,
    reports: Vec<ConfigReport>,
    /// The last state said, and of which config.
    said: Option<(&'static str, Option<String>)>,
}

impl Configs {
    pub(super) fn new(device: &str, file: Option<PathBuf>) -> Configs {
        let running = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .map(|bytes| sha256_hex(&bytes))
            .unwrap_or_default();
        let mut configs = Configs {
            device: device.to_string(),
            file,
            running,
            judged: None,
            deferred: None,
            reports: Vec::new(),
            said: None,
        };
        configs.say("running", None, None);
        configs
    }

    fn say(&mut self, state: &'static str, config: Option<&str>, reason: Option<String>) {
        let key = (state, config.map(str::to_string));
        if state != "running" && self.said.as_ref() == Some(&key) {
            return;
        }
        self.said = Some(key);
        self.reports.push(ConfigReport {
            state,
            running: self.running.clone(),
            config: config.map(str::to_string),
            reason,
            when: crate::clock::dating::now(),
        });
    }

    pub(super) fn reports(&mut self) -> Vec<ConfigReport> {
        std::mem::take(&mut self.reports)
    }
}

impl Updater {
    /// The reports to publish on `config/state`, oldest first.
    pub(in crate::agent) fn config_reports(&mut self) -> Vec<ConfigReport> {
        self.configs.reports()
    }

    /// A message on this device's `config` topic.
    pub(in crate::agent) fn on_config(&mut self, payload: &[u8]) {
        if payload.is_empty() || self.configs.judged.as_deref() == Some(payload) {
            return;
        }
        self.configs.judged = Some(payload.to_vec());
        self.judge_config(payload.to_vec());
    }

    /// A config that waited for the clock, judged once it is trusted.
    pub(super) fn config_tick(&mut self) {
        if self.trusted {
            if let Some(waiting) = self.configs.deferred.take() {
                self.judge_config(waiting);
            }
        }
    }

    fn judge_config(&mut self, sealed: Vec<u8>) {
        let signed = match config::open(&sealed, &self.key) {
            Ok(c) => c,
            Err(e) => return self.refuse_config(None, e.to_string()),
        };
        let sha = signed.sha256();
        if !self.trusted {
            tracing::info!("config {sha}: waits for this device's clock to be set");
            self.configs.say(
                "waiting",
                Some(&sha),
                Some("this device's clock is not set yet; the config waits for it".into()),
            );
            self.configs.deferred = Some(sealed);
            return;
        }
        let newest = self.files.config_newest();
        if let Err(e) = signed.admit(&self.configs.device, crate::utc::now_unix(), newest) {
            return self.refuse_config(Some(&sha), e.to_string());
        }
        if sha == self.configs.running {
            self.configs.say("applied", Some(&sha), None);
            return;
        }
        if let Some(why) = self.helper.rolled_back(&crate::updater::config_name(&sha)) {
            self.configs.say(
                "rolled back",
                Some(&sha),
                Some(format!("{why}; it is not applied again on this device")),
            );
            return;
        }
        if let Err(why) = self.check_config(&signed) {
            return self.refuse_config(Some(&sha), why);
        }
        if let Err(e) = self.files.hand_config(&sealed, signed.issued) {
            return self.refuse_config(
                Some(&sha),
                format!("cannot hand it to the install helper: {}", io_words(&e)),
            );
        }
        tracing::info!("config {sha}: checked; the install helper applies it");
        self.configs.say("applying", Some(&sha), None);
    }

    /// The device's own config checker, in `pinpost check`'s words.
    fn check_config(&self, signed: &SignedConfig) -> Result<(), String> {
        let checked = crate::config::from_text(
            &signed.config,
            self.configs.file.as_deref(),
            &Default::default(),
        )
        .map_err(|e| e.to_string())?;
        if checked.device.id != self.configs.device {
            return Err(format!(
                "it would make this device {} (its [device] id); a device's id does not change \
                 by config",
                checked.device.id
            ));
        }
        Ok(())
    }

    fn refuse_config(&mut self, sha: Option<&str>, why: String) {
        tracing::warn!("config refused: {why}");
        self.configs.say("refused", sha, Some(why));
    }

    /// What the install helper says of a config.
    pub(super) fn on_config_outcome(&mut self, outcome: &crate::updater::Outcome) {
        let sha = outcome
            .version
            .strip_prefix("config:")
            .unwrap_or(&outcome.version);
        let state = match outcome.state.as_str() {
            "applied" => "applied",
            "rolled back" => "rolled back",
            "refused" => "refused",
            _ => "failed",
        };
        self.configs.say(state, Some(sha), outcome.reason.clone());
    }
}
