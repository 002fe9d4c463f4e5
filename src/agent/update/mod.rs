//! Signed releases fetched over MQTT. The operator leaves a signed manifest
//! on this device's `release` topic and the package, in chunks, on
//! `<prefix>/release/<sha256>/<n>` (`pinpost release publish`); the agent
//! opens the manifest with the release key it holds, judges it against
//! what it runs, then asks for the chunks one at a time (a subscription to
//! one chunk's topic, whose retained message is the chunk), writes each to
//! disk as it comes, and checks the whole package's size and SHA-256
//! against the manifest before calling it ready. How it goes is published,
//! retained, on `update`.
//!
//! One chunk is asked for at a time, so memory holds at most one (and the
//! link's limit on incoming packets bounds what a broker can push besides);
//! the part on disk says where to go on after a disconnect, a restart or a
//! power cut (`files`). Nothing of the package is trusted before its hash
//! matches a manifest the release key signed.
//!
//! Installing is the root helper's (`crate::updater`, started by
//! `pinpost-update.path` when a package lands in `ready/`): the agent
//! reports what the helper's `outcome.json` says (`installed`, `rolled
//! back`) and does not fetch a version the helper rolled back (`helper`).
//!
//! It owns the update's state and files; it does not know how a package is
//! installed, nor rumqttc (it subscribes through a `Publisher`).

mod fetching;
mod files;
mod helper;
mod installed;
mod installing;
mod reconfig;

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::link::Publisher;
use crate::release::key::Public;
use crate::release::manifest::{self, Installed, Manifest};
use crate::topics::{RELEASE_CHUNK, Topics, UpdateReport};
use crate::words::io_words;
use files::Files;
use helper::Helper;

/// How long a chunk asked for may take before it is asked for again.
const CHUNK_WAIT: Duration = Duration::from_secs(20);
/// Asks for one chunk before the release is called failed.
const CHUNK_TRIES: u32 = 3;
/// After a failure, how long before trying again (sooner if the manifest
/// is published again).
const REST: Duration = Duration::from_secs(600);

/// A release admitted: its manifest, and the signed bytes it came as.
#[derive(Clone)]
struct Release {
    manifest: Manifest,
    envelope: Vec<u8>,
}

impl Release {
    /// `<package>_<version>_<architecture>`, as Debian names its files.
    fn name(&self) -> String {
        let m = &self.manifest;
        format!("{}_{}_{}", m.package, m.version, m.architecture)
    }

    fn chunks(&self) -> u64 {
        self.manifest.size.div_ceil(RELEASE_CHUNK as u64)
    }

    /// The size chunk `n` must be.
    fn chunk_len(&self, n: u64) -> u64 {
        let start = n.saturating_mul(RELEASE_CHUNK as u64);
        self.manifest
            .size
            .saturating_sub(start)
            .min(RELEASE_CHUNK as u64)
    }
}

/// A chunk asked for: its topic, and since when.
struct Asked {
    topic: String,
    at: Instant,
}

struct Fetch {
    release: Release,
    /// The chunk asked for, or being written.
    next: u64,
    asked: Option<Asked>,
    /// Times the chunk `next` was asked for.
    tries: u32,
    job: Option<JoinHandle<io::Result<()>>>,
    said_percent: u8,
}

enum State {
    Idle,
    Fetching(Fetch),
    Verifying {
        release: Release,
        job: JoinHandle<io::Result<(u64, Vec<u8>)>>,
    },
    /// Checked, in `ready/`.
    Ready(Release),
    /// Failed; tried again at `at`, or when the manifest comes again.
    Failed {
        release: Release,
        at: Instant,
    },
}

/// What a blocking job came back with.
pub(super) enum Done {
    Written(io::Result<()>),
    Digest(io::Result<(u64, Vec<u8>)>),
}

pub(super) struct Updater {
    topics: Topics,
    key: Public,
    installed: String,
    files: Files,
    publisher: Publisher,
    state: State,
    /// The last manifest judged, as it came: a retained one delivered
    /// again at each connect is not news.
    judged: Option<Vec<u8>>,
    /// A manifest that waits: for the clock to be trusted, or for a write
    /// in progress to finish.
    deferred: Option<Vec<u8>>,
    trusted: bool,
    connected: bool,
    reports: Vec<UpdateReport>,
    /// Chunk messages that were not the one asked for, this run.
    stray: u64,
    /// The last refusal reported, so the same one is reported once.
    last_refusal: Option<(Option<String>, String)>,
    /// The last state reported, and for which version.
    last_said: Option<(&'static str, Option<String>)>,
    /// What the install helper says.
    helper: Helper,
    /// Whether a checked release goes to the helper at once.
    install: crate::config::Install,
    /// Signed configs for this device.
    configs: reconfig::Configs,
}

impl Updater {
    /// Reads the release key and what a stop left; `Err` in words when the
    /// key cannot be used (updates are then off).
    pub(super) fn start(
        key_file: &Path,
        state_dir: &Path,
        helper_dir: &Path,
        install: crate::config::Install,
        config: (&str, Option<&Path>),
        topics: Topics,
        publisher: Publisher,
    ) -> Result<Updater, String> {
        let pem = std::fs::read(key_file).map_err(|e| {
            format!(
                "updates are off: cannot read the release key {} ({})",
                key_file.display(),
                io_words(&e)
            )
        })?;
        let key = Public::from_pem(&pem)
            .map_err(|e| format!("updates are off: {}: {e}", key_file.display()))?;
        let files = Files::new(state_dir);
        let seen_file = files.path("outcome-seen");
        let mut updater = Updater {
            topics,
            key,
            installed: installed::version(Path::new(installed::DPKG_STATUS)),
            files,
            publisher,
            state: State::Idle,
            judged: None,
            deferred: None,
            trusted: false,
            connected: false,
            reports: Vec::new(),
            stray: 0,
            last_refusal: None,
            last_said: None,
            helper: Helper::new(helper_dir, seen_file),
            install,
            configs: reconfig::Configs::new(config.0, config.1.map(Path::to_path_buf)),
        };
        // How the last install went (a restart by the helper is how this
        // agent came to run), else what runs.
        let news = updater.helper.news();
        let told = news.is_some();
        if let Some(outcome) = news {
            updater.on_outcome(outcome);
        }
        match updater.files.manifest() {
            // Judged again once the clock is trusted (its expiry, the
            // installed version, the key may all have changed).
            Ok(Some(saved)) => updater.deferred = Some(saved),
            // Nothing under way: what runs, for the fleet's status and
            // Home Assistant.
            Ok(None) if !told => updater.report("idle", None, None),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("update: {}; starting over", io_words(&e));
                updater.report("idle", None, None);
            }
        }
        tracing::info!(
            "updates: releases signed by the key {} are fetched (this device runs {} {} for {})",
            updater.key.id(),
            installed::PACKAGE,
            updater.installed,
            installed::architecture()
        );
        Ok(updater)
    }

    /// The reports to publish on `update`, oldest first.
    pub(super) fn reports(&mut self) -> Vec<UpdateReport> {
        std::mem::take(&mut self.reports)
    }

    fn report(&mut self, state: &'static str, version: Option<&str>, percent: Option<u8>) {
        self.report_why(state, version, percent, None);
    }

    /// A release refused: said and reported, unless it is the refusal
    /// said last. Compared without digits, so a flood of junk whose
    /// parse errors differ only in a column number makes one report and
    /// one log line, not one each.
    fn refuse(&mut self, version: Option<&str>, why: String) {
        let key = (
            version.map(str::to_string),
            why.chars()
                .filter(|c| !c.is_ascii_digit())
                .collect::<String>(),
        );
        if self.last_refusal.as_ref() == Some(&key) {
            return;
        }
        self.last_refusal = Some(key);
        match version {
            Some(v) => tracing::warn!("update: refused {} {v}: {why}", installed::PACKAGE),
            None => tracing::warn!("update: refused a release: {why}"),
        }
        self.report_why("refused", version, None, Some(why));
    }

    fn report_why(
        &mut self,
        state: &'static str,
        version: Option<&str>,
        percent: Option<u8>,
        reason: Option<String>,
    ) {
        if state != "refused" {
            self.last_refusal = None;
        }
        self.last_said = Some((state, version.map(str::to_string)));
        self.reports.push(UpdateReport {
            state,
            installed: self.installed.clone(),
            version: version.map(str::to_string),
            percent,
            reason,
            when: crate::clock::dating::now(),
        });
    }

    /// A message on this device's `release` topic; `retained`: the broker
    /// kept it (sent at each subscribe), rather than someone publishing it
    /// now.
    pub(super) fn on_manifest(&mut self, payload: &[u8], retained: bool) {
        if payload.is_empty() {
            self.withdraw();
            return;
        }
        let again = self.judged.as_deref() == Some(payload);
        if again {
            // Published again by someone: a failed release is tried again
            // at once. (Not when only retained: that comes at each
            // connect, and a release that fails by dropping the connection
            // would be tried in a loop.)
            if let (State::Failed { release, .. }, false) = (&self.state, retained) {
                let release = release.clone();
                self.resume(release);
            }
            return;
        }
        self.judged = Some(payload.to_vec());
        self.judge(payload.to_vec());
    }

    /// The operator cleared this device's manifest: whatever was being
    /// fetched is dropped.
    fn withdraw(&mut self) {
        let version = match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => return,
            State::Fetching(fetch) => {
                if let Some(asked) = &fetch.asked {
                    let _ = self.publisher.try_unsubscribe(&asked.topic);
                }
                if let Some(job) = fetch.job {
                    // Its write lands in a file about to go; let it finish.
                    self.state = State::Fetching(Fetch {
                        job: Some(job),
                        ..fetch
                    });
                    self.deferred = Some(Vec::new());
                    return;
                }
                fetch.release.manifest.version
            }
            State::Verifying { release, job } => {
                self.state = State::Verifying { release, job };
                self.deferred = Some(Vec::new());
                return;
            }
            State::Ready(r) | State::Failed { release: r, .. } => r.manifest.version,
        };
        self.judged = None;
        if let Err(e) = self.files.clear() {
            tracing::warn!(
                "update: cannot remove the withdrawn release's files: {}",
                io_words(&e)
            );
        }
        tracing::info!("update: the operator withdrew {version}");
        self.report("withdrawn", Some(&version), None);
    }

    fn busy(&self) -> bool {
        matches!(
            &self.state,
            State::Fetching(Fetch { job: Some(_), .. }) | State::Verifying { .. }
        )
    }

    fn judge(&mut self, envelope: Vec<u8>) {
        if self.busy() {
            self.deferred = Some(envelope);
            return;
        }
        if envelope.is_empty() {
            self.withdraw();
            return;
        }
        let manifest = match manifest::open(&envelope, &self.key) {
            Ok(m) => m,
            Err(e) => {
                self.refuse(None, e.to_string());
                return;
            }
        };
        if !self.trusted {
            tracing::info!(
                "update: {} {} waits for this device's clock to be set (its expiry cannot be \
                 judged before)",
                manifest.package,
                manifest.version
            );
            self.report_why(
                "waiting",
                Some(&manifest.version),
                None,
                Some("this device's clock is not set yet; the release waits for it".into()),
            );
            self.deferred = Some(envelope);
            return;
        }
        if self.done_with(&manifest.version) {
            return;
        }
        let resumed = self.files.manifest().ok().flatten().as_deref() == Some(&envelope[..]);
        let installed = Installed {
            package: installed::PACKAGE,
            version: &self.installed,
            architecture: installed::architecture(),
            // A manifest resumed is the newest itself.
            newest_issued: self.files.newest().filter(|_| !resumed),
        };
        if let Err(e) = manifest.admit(&installed, Some(crate::utc::now_unix())) {
            self.refuse(Some(&manifest.version), e.to_string());
            if resumed {
                let _ = self.files.clear();
            }
            return;
        }
        let release = Release { manifest, envelope };
        if let Some(current) = self.current() {
            if current.envelope == release.envelope && !resumed {
                return;
            }
        }
        self.stop_asking();
        if !resumed {
            if let Err(e) = self.files.begin(&release.envelope, release.manifest.issued) {
                let reason = format!("cannot keep the manifest on disk: {}", io_words(&e));
                self.fail(release, reason);
                return;
            }
        }
        self.resume(release);
    }

    fn current(&self) -> Option<&Release> {
        match &self.state {
            State::Idle => None,
            State::Fetching(f) => Some(&f.release),
            State::Verifying { release, .. }
            | State::Ready(release)
            | State::Failed { release, .. } => Some(release),
        }
    }

    fn stop_asking(&mut self) {
        if let State::Fetching(Fetch {
            asked: Some(asked), ..
        }) = &self.state
        {
            let _ = self.publisher.try_unsubscribe(&asked.topic);
        }
    }

    /// Goes on from what is on disk: ready already, every chunk here, or
    /// the next one asked for.
    fn resume(&mut self, release: Release) {
        if let Some(shelf) = self.files.kept(&release.name()) {
            self.report_verified(&release, shelf);
            self.state = State::Ready(release);
            return;
        }
        let next = match self.files.chunks_here() {
            Ok(n) => n.min(release.chunks()),
            Err(e) => {
                let reason = format!("cannot read the part fetched so far: {}", io_words(&e));
                self.fail(release, reason);
                return;
            }
        };
        tracing::info!(
            "update: fetching {} {} ({} bytes in {} chunks{})",
            release.manifest.package,
            release.manifest.version,
            release.manifest.size,
            release.chunks(),
            if next > 0 {
                format!("; {next} here already")
            } else {
                String::new()
            }
        );
        let percent = percent(next, release.chunks());
        self.report("fetching", Some(&release.manifest.version), Some(percent));
        self.stray = 0;
        self.state = State::Fetching(Fetch {
            release,
            next,
            asked: None,
            tries: 0,
            job: None,
            said_percent: percent,
        });
        self.next_step();
    }
}

fn joined<T>(result: Result<io::Result<T>, tokio::task::JoinError>) -> io::Result<T> {
    result.unwrap_or_else(|e| Err(io::Error::other(format!("the writer stopped: {e}"))))
}

fn percent(have: u64, of: u64) -> u8 {
    if of == 0 {
        return 100;
    }
    u8::try_from(have.saturating_mul(100) / of).unwrap_or(100)
}

#[cfg(test)]
mod tests;
