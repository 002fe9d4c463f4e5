//! How many refused commands get an answer and a log line. Anyone allowed
//! to publish on the command topic can send refusals as fast as the broker
//! carries them (made-up output names, garbage, a storm inside
//! `commands.min_interval`); answering each would put one result per
//! refusal in the outbox, in front of the answer to the next good command,
//! and one warning per refusal in the journal.
//!
//! A token bucket shared by all refusals: [`BURST`] at once, then one per
//! [`REFILL_EVERY`]. Refusals beyond it are counted, not answered, and
//! summed up in one log line per [`SUMMARY_EVERY`]. Constant memory,
//! whatever the names. Accepted commands never pass through here: their
//! rate is bounded per output by `commands.min_interval`.
//!
//! Pure state with times passed in, so it is tested without sleeping.

use std::time::Duration;

use tokio::time::Instant;

/// Refusals answered back to back, enough for a person trying things.
pub const BURST: u32 = 20;
/// One more refusal is answered per this much time (5 a second).
pub const REFILL_EVERY: Duration = Duration::from_millis(200);
/// At most one summary line of unanswered refusals per this much time.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Refusals {
    tokens: u32,
    refilled_at: Instant,
    /// Refused without an answer since the last summary.
    unanswered: u64,
    summary_at: Option<Instant>,
}

impl Refusals {
    pub fn new(now: Instant) -> Refusals {
        Refusals {
            tokens: BURST,
            refilled_at: now,
            unanswered: 0,
            summary_at: None,
        }
    }

    /// Whether this refusal is answered and logged; if not, it is counted
    /// for the next summary.
    pub fn admit(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            return true;
        }
        self.unanswered = self.unanswered.saturating_add(1);
        if self.summary_at.is_none() {
            self.summary_at = Some(now + SUMMARY_EVERY);
        }
        false
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let earned = elapsed.as_nanos() / REFILL_EVERY.as_nanos();
        if earned == 0 {
            return;
        }
        let tokens = u128::from(self.tokens).saturating_add(earned);
        if tokens >= u128::from(BURST) {
            self.tokens = BURST;
            self.refilled_at = now;
        } else {
            // Below BURST, so both fit a u32.
            self.tokens = tokens as u32;
            self.refilled_at += REFILL_EVERY * earned as u32;
        }
    }

    /// When the next summary is due, if refusals went unanswered.
    pub fn next_due(&self) -> Option<Instant> {
        self.summary_at
    }

    /// How many refusals went unanswered since the last summary, if any,
    /// whether or not a summary is due (for the last one, at shutdown).
    pub fn take_unanswered(&mut self) -> Option<u64> {
        self.summary_at = None;
        Some(std::mem::take(&mut self.unanswered)).filter(|n| *n > 0)
    }

    /// How many refusals went unanswered since the last summary, once a
    /// summary is due.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        if self.summary_at.is_some_and(|at| at <= now) {
            self.summary_at = None;
            return Some(std::mem::take(&mut self.unanswered));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_answered_then_a_steady_trickle() {
        let t0 = Instant::now();
        let mut r = Refusals::new(t0);
        let answered = (0..1000).filter(|_| r.admit(t0)).count();
        assert_eq!(answered, BURST as usize);
        // One more per REFILL_EVERY, however many arrive.
        let t1 = t0 + REFILL_EVERY * 5;
        let answered = (0..1000).filter(|_| r.admit(t1)).count();
        assert_eq!(answered, 5);
        // A quiet minute refills the burst, and no more.
        let t2 = t1 + Duration::from_secs(60);
        let answered = (0..1000).filter(|_| r.admit(t2)).count();
        assert_eq!(answered, BURST as usize);
    }

    #[test]
    fn unanswered_refusals_are_summed_up_once_per_interval() {
        let t0 = Instant::now();
        let mut r = Refusals::new(t0);
        assert_eq!(r.next_due(), None, "nothing to say while all are answered");
        for _ in 0..100_000 {
            r.admit(t0);
        }
        assert_eq!(r.next_due(), Some(t0 + SUMMARY_EVERY));
        assert_eq!(r.due(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.due(t0 + SUMMARY_EVERY), Some(100_000 - u64::from(BURST)));
        assert_eq!(r.next_due(), None);
        assert_eq!(r.due(t0 + SUMMARY_EVERY * 2), None);
    }
}
