//! The fetching itself: asking for one chunk at a time, writing it off
//! the loop, checking the whole package, and what a connection's coming
//! and going, a chunk that never comes and a failure's rest do to that.

use std::io;

use tokio::time::Instant;

use super::files::Shelf;
use super::{
    Asked, CHUNK_TRIES, CHUNK_WAIT, Done, Fetch, REST, Release, State, Updater, joined, percent,
};
use crate::config::Install;
use crate::link::Failure;
use crate::words::io_words;

impl Updater {
    /// Asks for the next chunk, or checks the whole package when every
    /// chunk is here.
    pub(super) fn next_step(&mut self) {
        let State::Fetching(fetch) = &mut self.state else {
            return;
        };
        if fetch.job.is_some() || fetch.asked.is_some() {
            return;
        }
        if fetch.next >= fetch.release.chunks() {
            let job = tokio::task::spawn_blocking(self.files.digest_job());
            let State::Fetching(fetch) = std::mem::replace(&mut self.state, State::Idle) else {
                return;
            };
            self.state = State::Verifying {
                release: fetch.release,
                job,
            };
            return;
        }
        if !self.connected {
            return;
        }
        let topic = self
            .topics
            .release_chunk(&fetch.release.manifest.sha256, fetch.next);
        if self.publisher.try_subscribe(&topic).is_ok() {
            fetch.tries += 1;
            fetch.asked = Some(Asked {
                topic,
                at: Instant::now(),
            });
        }
    }

    /// A message on a chunk topic.
    pub(in crate::agent) fn on_chunk(&mut self, topic: &str, payload: Vec<u8>) {
        let State::Fetching(fetch) = &mut self.state else {
            self.stray += 1;
            return;
        };
        if fetch.asked.as_ref().is_none_or(|a| a.topic != topic) {
            self.stray += 1;
            if self.stray == 1 {
                tracing::debug!("update: ignoring {topic}, not the chunk asked for");
            }
            return;
        }
        let _ = self.publisher.try_unsubscribe(topic);
        fetch.asked = None;
        let n = fetch.next;
        let want = fetch.release.chunk_len(n);
        if payload.len() as u64 != want {
            let reason = format!(
                "chunk {n} of the package is {} bytes where the manifest's package has {want}: \
                 the chunks on the broker are not this release's (run `pinpost release \
                 publish` again)",
                payload.len()
            );
            let release = fetch.release.clone();
            self.fail(release, reason);
            return;
        }
        fetch.tries = 0;
        fetch.job = Some(tokio::task::spawn_blocking(
            self.files.append_job(n, payload),
        ));
    }

    /// A blocking job is done: waits for it (pending when there is none).
    pub(in crate::agent) async fn done(&mut self) -> Done {
        match &mut self.state {
            State::Fetching(Fetch { job: Some(job), .. }) => Done::Written(joined(job.await)),
            State::Verifying { job, .. } => Done::Digest(joined(job.await)),
            _ => std::future::pending().await,
        }
    }

    pub(in crate::agent) fn on_done(&mut self, done: Done) {
        match (std::mem::replace(&mut self.state, State::Idle), done) {
            (State::Fetching(mut fetch), Done::Written(written)) => {
                fetch.job = None;
                if let Some(waiting) = self.deferred.take() {
                    self.state = State::Fetching(fetch);
                    self.judged = Some(waiting.clone()).filter(|w| !w.is_empty());
                    self.judge(waiting);
                    return;
                }
                if let Err(e) = written {
                    let reason = format!(
                        "cannot write the package to {}: {}",
                        self.files.path("package.part").display(),
                        io_words(&e)
                    );
                    self.fail(fetch.release, reason);
                    return;
                }
                fetch.next += 1;
                let percent = percent(fetch.next, fetch.release.chunks());
                let version = fetch.release.manifest.version.clone();
                let step = percent / 10 != fetch.said_percent / 10;
                if step {
                    fetch.said_percent = percent;
                }
                self.state = State::Fetching(fetch);
                if step && percent < 100 {
                    self.report("fetching", Some(&version), Some(percent));
                }
                self.next_step();
            }
            (State::Verifying { release, .. }, Done::Digest(digest)) => {
                // Checked first, whatever waits: a manifest that came
                // meanwhile is judged once this one is settled.
                self.verified(release, digest);
                if let Some(waiting) = self.deferred.take() {
                    self.judge(waiting);
                }
            }
            (state, _) => self.state = state,
        }
    }

    pub(super) fn verified(&mut self, release: Release, digest: io::Result<(u64, Vec<u8>)>) {
        let (size, sha256) = match digest {
            Ok(d) => d,
            Err(e) => {
                let reason = format!("cannot read the package back: {}", io_words(&e));
                self.fail(release, reason);
                return;
            }
        };
        if let Err(e) = release.manifest.describes(size, &sha256) {
            let _ = self.files.discard_part();
            self.fail(release, format!("{e}; the part fetched was thrown away"));
            return;
        }
        let shelf = match self.install {
            Install::Auto => Shelf::Ready,
            Install::WhenAsked => Shelf::Held,
        };
        match self
            .files
            .promote(&release.name(), &release.envelope, shelf)
        {
            Ok(deb) => {
                tracing::info!(
                    "update: {} {} is here and checked (size, SHA-256 and signature): {}",
                    release.manifest.package,
                    release.manifest.version,
                    deb.display()
                );
                self.report_verified(&release, shelf);
                self.state = State::Ready(release);
            }
            Err(e) => {
                let reason = format!("cannot keep the checked package: {}", io_words(&e));
                self.fail(release, reason);
            }
        }
    }

    pub(super) fn fail(&mut self, release: Release, reason: String) {
        tracing::warn!(
            "update: {} {} failed: {reason}; trying again in {} min, or when it is published \
             again",
            release.manifest.package,
            release.manifest.version,
            REST.as_secs() / 60
        );
        self.report_why(
            "failed",
            Some(&release.manifest.version),
            None,
            Some(reason),
        );
        self.state = State::Failed {
            release,
            at: Instant::now() + REST,
        };
    }

    /// A connection is up: the chunk in hand is asked for on it.
    pub(in crate::agent) fn on_connected(&mut self) {
        self.connected = true;
        if let State::Fetching(fetch) = &mut self.state {
            fetch.asked = None;
        }
        self.next_step();
    }

    /// The connection dropped. A chunk too large to read is not one this
    /// release's publisher made: the release fails rather than asking for
    /// it again at each connect.
    pub(in crate::agent) fn on_down(&mut self, failure: &Failure) {
        self.connected = false;
        let State::Fetching(fetch) = &mut self.state else {
            return;
        };
        if fetch.asked.take().is_some() && failure.too_large() {
            let reason = format!(
                "chunk {} on the broker is larger than any chunk `pinpost release publish` \
                 sends ({failure})",
                fetch.next
            );
            let release = fetch.release.clone();
            self.fail(release, reason);
        }
    }

    /// Every second: the clock's trust, chunks that did not come, a
    /// failure's rest.
    pub(in crate::agent) fn tick(&mut self, trusted: bool, now: Instant) {
        self.trusted = trusted;
        if let Some(outcome) = self.helper.news() {
            self.on_outcome(outcome);
        }
        self.config_tick();
        if trusted && !self.busy() {
            if let Some(waiting) = self.deferred.take() {
                self.judge(waiting);
            }
        }
        match &mut self.state {
            State::Fetching(fetch) if self.connected => {
                let Some(asked) = &fetch.asked else {
                    self.next_step();
                    return;
                };
                if now.duration_since(asked.at) < CHUNK_WAIT {
                    return;
                }
                let _ = self.publisher.try_unsubscribe(&asked.topic);
                if fetch.tries >= CHUNK_TRIES {
                    let reason = format!(
                        "chunk {} of the package did not come (asked {} times, {} s each): \
                         it is not on the broker (run `pinpost release publish` again), or \
                         this device may not read it (the ACL from `pinpost certs mosquitto` \
                         lets devices read <prefix>/release/#)",
                        fetch.next,
                        fetch.tries,
                        CHUNK_WAIT.as_secs()
                    );
                    let release = fetch.release.clone();
                    self.fail(release, reason);
                } else {
                    fetch.asked = None;
                    self.next_step();
                }
            }
            State::Failed { release, at } if now >= *at => {
                let release = release.clone();
                self.resume(release);
            }
            _ => {}
        }
    }
}
