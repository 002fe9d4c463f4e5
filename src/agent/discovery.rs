//! Home Assistant discovery on the agent's side: announcing on every
//! connect, answering HA's birth message, and remembering what was
//! announced so that what left the config leaves Home Assistant too.
//!
//! The messages themselves come from [`crate::homeassistant`]; they go
//! through the outbox like every state (QoS 1, retained, in order, so a
//! removal always reaches the broker before the config that replaces it).
//!
//! What was announced is kept in `homeassistant-announced.json` next to the
//! spool (0600, written whole through a temporary file and a rename). It is
//! written *before* anything is queued and holds the union of what was
//! there and what is announced now, until every removal has been
//! acknowledged (the outbox is empty): a crash in between means the next
//! start removes those again, never that an entity is forgotten and left
//! behind as a ghost.
//!
//! The rename puts the record on the kernel's side, which a crash of the
//! process does not lose; the fsync that makes it durable runs on a
//! [`Syncer`] thread, best effort, so a slow disk never holds up the event
//! loop. Only a power cut before that sync can lose a write: a lost
//! confirmation repeats a removal at the next start (harmless), a lost
//! record from the start can leave an entity announced in that run behind
//! if it leaves the config before the next start (it can be deleted in Home
//! Assistant). A failed sync is logged.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::syncer::{self, SyncStep, Syncer};
use crate::config::Config;
use crate::homeassistant::{self, Announced, Plan};

pub(super) const FILE_NAME: &str = "homeassistant-announced.json";
/// Larger than any record pinpost writes (topics of a few hundred entities).
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// After answering HA's birth message, the states go again this much
/// later: HA subscribes to an entity's topics only once it has processed
/// its config, and sensor readings are not retained.
pub(super) const STATES_AFTER: Duration = Duration::from_secs(2);
/// Least time between two answers to birth messages: whoever may publish
/// on HA's status topic cannot make the agent re-send everything in a loop.
pub(super) const MIN_ANSWER_GAP: Duration = Duration::from_secs(10);
/// For the syncer's log lines.
const WHAT: &str = "the record of Home Assistant entities announced";
const IF_SYNC_FAILS: &str = "after a power cut, entities taken out of the config may stay in \
                             Home Assistant (delete them there); check the storage";

#[derive(Debug)]
pub(super) struct Discovery {
    path: PathBuf,
    plan: Plan,
    /// The record on disk still lists removals not yet acknowledged.
    unconfirmed: bool,
    /// HA's status topic, when discovery is on (not just cleaning up).
    status_topic: Option<String>,
    birth_delay: Duration,
    /// When to announce again (HA said `online`).
    announce_at: Option<Instant>,
    /// When to publish the states again after that.
    states_at: Option<Instant>,
    /// When the last answer to a birth message went out.
    answered_at: Option<Instant>,
    syncer: Syncer,
}

/// What the agent should do now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Due {
    Announce,
    States,
}

impl Discovery {
    /// `None` when discovery is off and nothing was ever announced. The
    /// text is a problem for the log.
    pub(super) fn start(config: &Config, dir: &Path) -> (Option<Discovery>, Vec<String>) {
        Discovery::start_with(config, dir, syncer::fsync())
    }

    /// [`Discovery::start`], making the record durable with `sync`.
    pub(super) fn start_with(
        config: &Config,
        dir: &Path,
        sync: SyncStep,
    ) -> (Option<Discovery>, Vec<String>) {
        let path = dir.join(FILE_NAME);
        let mut problems = Vec::new();
        let previous = match read(&path) {
            Ok(previous) => previous,
            Err(why) => {
                problems.push(format!(
                    "the record of Home Assistant entities announced before, {}, {why}; \
                     entities taken out of the config since then stay in Home Assistant \
                     (delete them there)",
                    path.display()
                ));
                Announced::default()
            }
        };
        let ha = &config.homeassistant;
        if !ha.enabled && previous.is_empty() {
            return (None, problems);
        }
        let plan = homeassistant::plan(config, &previous);
        problems.extend(plan.notes.iter().cloned());
        let removes = removed_any(&previous, &plan.announced);
        let discovery = Discovery {
            path,
            plan,
            unconfirmed: removes,
            status_topic: ha.enabled.then(|| ha.status_topic.clone()),
            birth_delay: ha.birth_delay,
            announce_at: None,
            states_at: None,
            answered_at: None,
            syncer: Syncer::start(WHAT, IF_SYNC_FAILS, sync),
        };
        let record = if removes {
            union(&previous, &discovery.plan.announced)
        } else {
            discovery.plan.announced.clone()
        };
        if record != previous {
            if let Err(e) = discovery.write(&record) {
                problems.push(format!(
                    "cannot record the Home Assistant entities announced in {} ({e}); if they \
                     are taken out of the config later, they stay in Home Assistant",
                    discovery.path.display()
                ));
            }
        }
        (Some(discovery), problems)
    }

    /// HA's status topic, to subscribe to.
    pub(super) fn status_topic(&self) -> Option<&str> {
        self.status_topic.as_deref()
    }

    /// The messages to queue on connect (and when HA asks again).
    pub(super) fn messages(&self) -> &[homeassistant::Message] {
        &self.plan.messages
    }

    /// A message on HA's status topic: `online` (its birth message) means
    /// HA has just (re)started and needs everything again, after a random
    /// part of `birth_delay` so a fleet does not answer at once.
    pub(super) fn on_status(&mut self, payload: &[u8], now: Instant) -> bool {
        if payload.trim_ascii() != b"online" {
            return false;
        }
        // One answer pending at a time, and answers at least
        // MIN_ANSWER_GAP apart, however many birth messages arrive.
        if self.announce_at.is_some() {
            return true;
        }
        let delay = self.birth_delay.mul_f64(fastrand::f64());
        let earliest = self.answered_at.map(|at| at + MIN_ANSWER_GAP);
        self.announce_at = Some((now + delay).max(earliest.unwrap_or(now)));
        self.states_at = None;
        true
    }

    /// To the kernel now, to the disk soon (see the module's docs).
    fn write(&self, record: &Announced) -> std::io::Result<()> {
        let file = write(&self.path, record)?;
        if let Some(dir) = self.path.parent() {
            self.syncer.request(file, dir);
        }
        Ok(())
    }

    pub(super) fn next_due(&self) -> Option<Instant> {
        [self.announce_at, self.states_at]
            .into_iter()
            .flatten()
            .min()
    }

    pub(super) fn due(&mut self, now: Instant) -> Option<Due> {
        if self.announce_at.is_some_and(|at| at <= now) {
            self.announce_at = None;
            self.answered_at = Some(now);
            self.states_at = Some(now + STATES_AFTER);
            return Some(Due::Announce);
        }
        if self.states_at.is_some_and(|at| at <= now) {
            self.states_at = None;
            return Some(Due::States);
        }
        None
    }

    /// Called when the outbox has emptied: every removal queued before has
    /// been acknowledged, so the record may forget them.
    pub(super) fn confirmed(&mut self) -> Option<String> {
        if !self.unconfirmed {
            return None;
        }
        self.unconfirmed = false;
        let result = if self.plan.announced.is_empty() {
            match fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            self.write(&self.plan.announced)
        };
        result.err().map(|e| {
            format!(
                "cannot update the record of Home Assistant entities in {} ({e})",
                self.path.display()
            )
        })
    }
}

/// Whether `before` has a topic or component that `now` has not.
fn removed_any(before: &Announced, now: &Announced) -> bool {
    before.topics.iter().any(|(topic, components)| {
        now.topics
            .get(topic)
            .is_none_or(|kept| components.keys().any(|c| !kept.contains_key(c)))
    })
}

/// Every topic and component in either record.
fn union(a: &Announced, b: &Announced) -> Announced {
    let mut out = a.clone();
    for (topic, components) in &b.topics {
        out.topics
            .entry(topic.clone())
            .or_default()
            .extend(components.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out
}

/// The record in `dir`, for `pinpost ha`: `Ok(default)` when there is none.
pub(crate) fn record(dir: &Path) -> Result<Announced, String> {
    read(&dir.join(FILE_NAME))
}

fn read(path: &Path) -> Result<Announced, String> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Announced::default()),
        Err(e) => return Err(format!("cannot be read ({})", crate::words::io_words(&e))),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "is {} bytes, larger than pinpost ever writes ({MAX_FILE_BYTES})",
            meta.len()
        ));
    }
    let text =
        fs::read(path).map_err(|e| format!("cannot be read ({})", crate::words::io_words(&e)))?;
    serde_json::from_slice(&text).map_err(|e| format!("is damaged ({e})"))
}

/// Writes `record` whole and renames it into place, without waiting for
/// the disk; returns the file, still open, for the syncer.
fn write(path: &Path, record: &Announced) -> std::io::Result<fs::File> {
    if let Some(dir) = path.parent() {
        // The spool's own directory, as the outbox makes it: ours alone.
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let text = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    crate::whole_file::replace(path, &path.with_extension("json.tmp"), &text, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::syncer::testing::{Gate, OpenOnDrop};
    use crate::config::{Overrides, from_text};
    use std::os::unix::fs::PermissionsExt;

    fn config(outputs: &[&str], enabled: bool) -> Config {
        let mut text = String::from("[device]\nid = \"pi\"\n");
        for (i, name) in outputs.iter().enumerate() {
            text.push_str(&format!("[[output]]\nname = \"{name}\"\npin = {}\n", i + 5));
        }
        text.push_str(&format!(
            "[homeassistant]\nenabled = {enabled}\ndiagnostics = false\n"
        ));
        from_text(&text, None, &Overrides::default()).unwrap()
    }

    fn on_disk(dir: &Path) -> Vec<String> {
        record(dir).unwrap().topics.keys().cloned().collect()
    }

    #[test]
    fn the_record_keeps_removals_until_they_are_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (first, problems) = Discovery::start(&config(&["relay", "fan"], true), dir.path());
        assert!(problems.is_empty(), "{problems:?}");
        let mut first = first.unwrap();
        assert_eq!(
            first.confirmed(),
            None,
            "nothing to remove, nothing to confirm"
        );
        let mode = fs::metadata(dir.path().join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            on_disk(dir.path()),
            [
                "homeassistant/switch/pi/output_fan/config",
                "homeassistant/switch/pi/output_relay/config"
            ]
        );

        // fan is gone: its removal is queued, and the record keeps it...
        let (second, _) = Discovery::start(&config(&["relay"], true), dir.path());
        let mut second = second.unwrap();
        let removal = &second.messages()[0];
        assert_eq!(removal.topic, "homeassistant/switch/pi/output_fan/config");
        assert!(removal.payload.is_empty());
        assert_eq!(on_disk(dir.path()).len(), 2, "until the broker has it");
        // ...and a crash now would remove it again at the next start.
        let (again, _) = Discovery::start(&config(&["relay"], true), dir.path());
        assert!(again.unwrap().messages()[0].payload.is_empty());
        assert_eq!(second.confirmed(), None);
        assert_eq!(
            on_disk(dir.path()),
            ["homeassistant/switch/pi/output_relay/config"]
        );
        let (third, _) = Discovery::start(&config(&["relay"], true), dir.path());
        assert!(
            third
                .unwrap()
                .messages()
                .iter()
                .all(|m| !m.payload.is_empty())
        );
    }

    #[test]
    fn the_record_is_written_without_waiting_for_a_stuck_disk() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Gate::default();
        let (first, _) =
            Discovery::start_with(&config(&["relay", "fan"], true), dir.path(), disk.step());
        let _first_release = OpenOnDrop(disk.clone());
        assert!(first.is_some());
        disk.wait_until_held();
        assert_eq!(on_disk(dir.path()).len(), 2, "on the kernel's side already");

        let stuck = Gate::default();
        let (second, problems) =
            Discovery::start_with(&config(&["relay"], true), dir.path(), stuck.step());
        assert!(problems.is_empty(), "{problems:?}");
        let mut second = second.unwrap();
        let _second_release = OpenOnDrop(stuck.clone());
        // The gate stays shut: waiting for the disk here would never return.
        assert_eq!(second.confirmed(), None, "returns with the disk stuck");
        stuck.wait_until_held();
        assert_eq!(
            on_disk(dir.path()),
            ["homeassistant/switch/pi/output_relay/config"]
        );
    }

    #[test]
    fn turned_off_it_removes_everything_once_and_then_stays_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = Discovery::start(&config(&["relay"], true), dir.path());
        assert!(first.is_some());
        let (off, _) = Discovery::start(&config(&["relay"], false), dir.path());
        let mut off = off.unwrap();
        assert_eq!(off.status_topic(), None, "no birth message to answer");
        assert_eq!(off.messages().len(), 1);
        assert!(off.messages()[0].payload.is_empty());
        assert_eq!(off.confirmed(), None);
        assert!(!dir.path().join(FILE_NAME).exists());
        let (quiet, _) = Discovery::start(&config(&["relay"], false), dir.path());
        assert!(quiet.is_none());
    }

    #[test]
    fn the_state_directory_is_made_ours_alone_when_discovery_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state/outbox");
        Discovery::start(&config(&["relay"], true), &state);
        let mode = fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_damaged_record_is_reported_and_discovery_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "{not json").unwrap();
        let (d, problems) = Discovery::start(&config(&["relay"], true), dir.path());
        assert!(d.is_some());
        assert!(problems[0].contains("is damaged"), "{problems:?}");
        assert!(
            problems[0].contains("stay in Home Assistant"),
            "{problems:?}"
        );
    }

    #[tokio::test]
    async fn the_birth_message_is_answered_within_the_delay_then_the_states_follow() {
        let dir = tempfile::tempdir().unwrap();
        let (d, _) = Discovery::start(&config(&["relay"], true), dir.path());
        let mut d = d.unwrap();
        let now = Instant::now();
        assert!(!d.on_status(b"offline", now), "HA's own last will");
        assert_eq!(d.next_due(), None);
        assert!(d.on_status(b"online", now));
        let at = d.next_due().unwrap();
        assert!(at <= now + Duration::from_secs(5), "within birth_delay");
        assert_eq!(
            d.due(at - Duration::from_millis(1)).filter(|_| at > now),
            None
        );
        assert_eq!(d.due(at), Some(Due::Announce));
        assert_eq!(d.next_due(), Some(at + STATES_AFTER));
        assert_eq!(d.due(at + STATES_AFTER), Some(Due::States));
        assert_eq!(d.next_due(), None);
    }

    #[test]
    fn a_flood_of_birth_messages_is_answered_once_per_gap() {
        let dir = tempfile::tempdir().unwrap();
        let (d, _) = Discovery::start(&config(&["relay"], true), dir.path());
        let mut d = d.unwrap();
        let t0 = Instant::now();
        let mut answers = Vec::new();
        // 1000 births a second for 30 s.
        for ms in 0..30_000u64 {
            let now = t0 + Duration::from_millis(ms);
            d.on_status(b"online", now);
            while let Some(due) = d.due(now) {
                if due == Due::Announce {
                    answers.push(ms);
                }
            }
        }
        assert!(
            (2..=3).contains(&answers.len()),
            "answered at {answers:?} ms"
        );
        for pair in answers.windows(2) {
            assert!(
                pair[1] - pair[0] >= MIN_ANSWER_GAP.as_millis() as u64,
                "{answers:?}"
            );
        }
    }
}
