//! How many refused commands get an answer and a log line. Anyone allowed
//! to publish on the command topic can send refusals as fast as the broker
//! carries them (made-up output names, garbage, a storm inside
//! `commands.min_interval`); answering each would put one result per
//! refusal in the outbox, in front of the answer to the next good command,
//! and one warning per refusal in the journal.
//!
//! Token buckets: [`BURST`] at once, then one per [`REFILL_EVERY`]. One
//! bucket is shared by every refusal that is not about a configured output
//! (made-up names, inputs, garbage topics), and each configured output has
//! its own: a flood to made-up names cannot silence the answers that matter
//! on real outputs ("already applied", "replaced", stale, a record that
//! could not be written, "stopping"), and a storm on one output cannot
//! silence another. Refusals beyond a bucket are counted, not answered, and
//! summed up in one log line per [`SUMMARY_EVERY`]. Memory is fixed by the
//! config (one bucket per output, plus one), whatever the names.
//! Accepted commands never pass through here: their rate is bounded per
//! output by `commands.min_interval`.
//!
//! Pure state with times passed in, so it is tested without sleeping.

use std::time::Duration;

use tokio::time::Instant;

/// Refusals answered back to back, enough for a person trying things.
pub(super) const BURST: u32 = 20;
/// One more refusal is answered per this much time (5 a second).
pub(super) const REFILL_EVERY: Duration = Duration::from_millis(200);
/// At most one summary line of unanswered refusals per this much time.
pub(super) const SUMMARY_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(super) struct Refusals {
    /// Refusals about names that are not configured outputs.
    others: Bucket,
    /// One per configured output, in config order.
    outputs: Vec<Bucket>,
    /// Refused without an answer since the last summary.
    unanswered: u64,
    summary_at: Option<Instant>,
}

#[derive(Debug)]
struct Bucket {
    tokens: u32,
    refilled_at: Instant,
}

impl Refusals {
    /// Budgets for `outputs` configured outputs, plus one for the rest.
    pub(super) fn new(outputs: usize, now: Instant) -> Refusals {
        Refusals {
            others: Bucket::new(now),
            outputs: std::iter::repeat_with(|| Bucket::new(now))
                .take(outputs)
                .collect(),
            unanswered: 0,
            summary_at: None,
        }
    }

    /// Whether this refusal is answered and logged; if not, it is counted
    /// for the next summary. `output` is the configured output it is about,
    /// if any.
    pub(super) fn admit(&mut self, output: Option<usize>, now: Instant) -> bool {
        let bucket = match output.and_then(|i| self.outputs.get_mut(i)) {
            Some(bucket) => bucket,
            None => &mut self.others,
        };
        if bucket.take(now) {
            return true;
        }
        self.unanswered = self.unanswered.saturating_add(1);
        if self.summary_at.is_none() {
            self.summary_at = Some(now + SUMMARY_EVERY);
        }
        false
    }

    /// When the next summary is due, if refusals went unanswered.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.summary_at
    }

    /// How many refusals went unanswered since the last summary, if any,
    /// whether or not a summary is due (for the last one, at shutdown).
    pub(super) fn take_unanswered(&mut self) -> Option<u64> {
        self.summary_at = None;
        Some(std::mem::take(&mut self.unanswered)).filter(|n| *n > 0)
    }

    /// How many refusals went unanswered since the last summary, once a
    /// summary is due.
    pub(super) fn due(&mut self, now: Instant) -> Option<u64> {
        if self.summary_at.is_some_and(|at| at <= now) {
            self.summary_at = None;
            return Some(std::mem::take(&mut self.unanswered));
        }
        None
    }
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket {
            tokens: BURST,
            refilled_at: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            return true;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_answered_then_a_steady_trickle() {
        let t0 = Instant::now();
        let mut r = Refusals::new(1, t0);
        let answered = (0..1000).filter(|_| r.admit(None, t0)).count();
        assert_eq!(answered, BURST as usize);
        // One more per REFILL_EVERY, however many arrive.
        let t1 = t0 + REFILL_EVERY * 5;
        let answered = (0..1000).filter(|_| r.admit(None, t1)).count();
        assert_eq!(answered, 5);
        // A quiet minute refills the burst, and no more.
        let t2 = t1 + Duration::from_secs(60);
        let answered = (0..1000).filter(|_| r.admit(None, t2)).count();
        assert_eq!(answered, BURST as usize);
    }

    #[test]
    fn unanswered_refusals_are_summed_up_once_per_interval() {
        let t0 = Instant::now();
        let mut r = Refusals::new(1, t0);
        assert_eq!(r.next_due(), None, "nothing to say while all are answered");
        for _ in 0..100_000 {
            r.admit(None, t0);
        }
        assert_eq!(r.next_due(), Some(t0 + SUMMARY_EVERY));
        assert_eq!(r.due(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.due(t0 + SUMMARY_EVERY), Some(100_000 - u64::from(BURST)));
        assert_eq!(r.next_due(), None);
        assert_eq!(r.due(t0 + SUMMARY_EVERY * 2), None);
    }

    #[test]
    fn a_flood_to_made_up_names_does_not_silence_real_outputs() {
        let t0 = Instant::now();
        let mut r = Refusals::new(2, t0);
        let answered = (0..100_000).filter(|_| r.admit(None, t0)).count();
        assert_eq!(answered, BURST as usize);
        assert!(r.admit(Some(0), t0), "output 0 has its own budget");
        // A storm on output 0 leaves output 1 its answers too.
        let answered = (0..1000).filter(|_| r.admit(Some(0), t0)).count();
        assert_eq!(answered, BURST as usize - 1);
        assert!(r.admit(Some(1), t0));
        let unanswered = 100_000 - u64::from(BURST) + 1000 - u64::from(BURST - 1);
        assert_eq!(r.due(t0 + SUMMARY_EVERY), Some(unanswered));
    }
}
