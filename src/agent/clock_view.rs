//! The agent's view of its own clock, looked at every second: jumps are
//! said in the log, trust is judged ([`trust`](crate::clock::trust)) and
//! handed to the dating of messages ([`dating`](crate::clock::dating)),
//! and commands learn what is known of the clock ([`ClockState`]).
//!
//! It knows the clock and the state directory, not MQTT or pins.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::{JumpWatch, dating, newest, trust};
use crate::config::Clock;
use crate::control::ClockState;

/// A jump this recent is named as a possible cause in refusals of a `"ts"`.
const RECENT_JUMP: Duration = Duration::from_secs(600);
/// How often the newest trusted time is kept on disk.
const SAVE_EVERY: Duration = Duration::from_secs(900);
/// After a jump of the clock while it is not trusted, messages wait this
/// long for the time source's word: the jump is usually it setting the
/// clock, and its mark follows (timesyncd's within milliseconds, a hook
/// of another time service within a second or two). What waits then goes
/// dated instead of flagged.
const HOLD_AFTER_JUMP: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(super) struct ClockView {
    config: Clock,
    dir: PathBuf,
    jumps: JumpWatch,
    /// At the last look; `None` before the first.
    trusted: Option<bool>,
    why: String,
    jumped: Option<(Instant, String)>,
    /// Messages wait until then for the clock to be trusted (see
    /// [`HOLD_AFTER_JUMP`]).
    hold_until: Option<Instant>,
    /// The newest trusted time an earlier run kept.
    newest_earlier: Option<i64>,
    saved_at: Option<Instant>,
}

impl ClockView {
    /// Looks once, so the first message is already dated right.
    pub(super) fn new(config: &Clock, dir: &Path) -> ClockView {
        let mut view = ClockView {
            config: config.clone(),
            dir: dir.to_path_buf(),
            jumps: JumpWatch::default(),
            trusted: None,
            why: String::new(),
            jumped: None,
            hold_until: None,
            newest_earlier: newest::read(dir),
            saved_at: None,
        };
        view.look(Instant::now());
        view
    }

    /// Looks at the clock; true when it has just become trusted while
    /// pinpost ran (retained states then go again with a date).
    pub(super) fn look(&mut self, now: Instant) -> bool {
        let wall = crate::utc::now_unix_millis();
        let up = i64::try_from(crate::clock::uptime_ms()).unwrap_or(i64::MAX);
        let mut jumped_now = false;
        if let Some(jump) = self.jumps.observe(wall, up) {
            let words = jump.words();
            tracing::warn!("{words}");
            self.jumped = Some((now, words));
            jumped_now = true;
        }
        let signals = trust::signals(&self.config, false, self.newest_earlier);
        let judged = trust::judge(&signals);
        dating::set_trusted(judged.trusted);
        if jumped_now && !judged.trusted {
            self.hold_until = Some(now + HOLD_AFTER_JUMP);
        }
        let before = self.trusted.replace(judged.trusted);
        if before != Some(judged.trusted) {
            self.say(&judged, signals.wall_ms);
        }
        self.why = judged.why;
        if judged.trusted
            && self
                .saved_at
                .is_none_or(|at| now.duration_since(at) >= SAVE_EVERY)
        {
            // Off the event loop: a slow card must not hold up the agent.
            let dir = self.dir.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn_blocking(move || keep_newest(&dir, wall))),
                Err(_) => keep_newest(&dir, wall),
            }
            self.saved_at = Some(now);
        }
        judged.trusted && before == Some(false)
    }

    fn say(&self, judged: &trust::Trust, wall_ms: i64) {
        if judged.trusted {
            tracing::info!("the clock is trusted: {}", judged.why);
            return;
        }
        let then = "readings say \"clock\":\"untrusted\" beside their ts until it is, and commands \
                    stamped with \"ts\" are refused";
        if wall_ms < trust::NOT_BEFORE_MS {
            tracing::warn!("the clock is not trusted: {}; {then}", judged.why);
        } else {
            // A plausible clock no time source has confirmed (a laptop
            // with chrony, a container): worth knowing, not a warning.
            tracing::info!("the clock is not trusted: {}; {then}", judged.why);
        }
    }

    pub(super) fn trusted(&self) -> bool {
        self.trusted == Some(true)
    }

    /// Whether messages should wait a moment for the clock to be trusted:
    /// it jumped while untrusted a few seconds ago.
    pub(super) fn holding(&self, now: Instant) -> bool {
        !self.trusted() && self.hold_until.is_some_and(|until| now < until)
    }

    /// What a command arriving `now` is told of the clock.
    pub(super) fn state(&self, now: Instant) -> ClockState<'_> {
        if !self.trusted() {
            return ClockState::Untrusted(&self.why);
        }
        match &self.jumped {
            Some((at, words)) if now.duration_since(*at) < RECENT_JUMP => ClockState::Jumped(words),
            _ => ClockState::Trusted,
        }
    }

    /// At a clean stop: the newest trusted time, for the next start.
    pub(super) fn close(&mut self) {
        if self.trusted() {
            keep_newest(&self.dir, crate::utc::now_unix_millis());
        }
    }
}

fn keep_newest(dir: &Path, wall_ms: i64) {
    if let Err(e) = newest::write(dir, wall_ms) {
        tracing::debug!(
            "cannot keep the newest trusted time in {}: {e}",
            dir.display()
        );
    }
}
