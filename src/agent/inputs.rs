//! Which input readings to publish: debounce, inversion, polling, and a
//! per-input sequence number. Pure state with times passed in, so the
//! schedule is tested without sleeping.
//!
//! After an edge the level must settle for `debounce`; then the pin is read
//! again and published only if it differs from the last published reading.
//! Reading after the wait (not trusting the interrupt's edge) is what keeps
//! a bouncing contact from publishing a stale level.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Input;

#[derive(Debug)]
struct Tracked {
    debounce: Duration,
    invert: bool,
    poll: Option<Duration>,
    /// Last published logical value and its sequence number.
    published: Option<(bool, u64)>,
    /// The last sequence number an earlier run published.
    resumed_from: u64,
    settle_at: Option<Instant>,
    poll_at: Option<Instant>,
}

#[derive(Debug)]
pub(super) struct Inputs {
    tracked: Vec<Tracked>,
}

impl Inputs {
    pub(super) fn new(inputs: &[Input], now: Instant) -> Inputs {
        Inputs {
            tracked: inputs
                .iter()
                .map(|i| Tracked {
                    debounce: i.debounce,
                    invert: i.invert,
                    poll: i.poll_interval,
                    published: None,
                    resumed_from: 0,
                    settle_at: None,
                    poll_at: i.poll_interval.map(|p| now + p),
                })
                .collect(),
        }
    }

    /// Input `i`'s changes come already debounced (the kernel did it): read
    /// it at once, as the wait has been waited.
    pub(super) fn settled_by_board(&mut self, i: usize) {
        if let Some(t) = self.tracked.get_mut(i) {
            t.debounce = Duration::ZERO;
        }
    }

    /// Input `i` may have changed: read it again once it has settled. A
    /// further edge before then restarts the wait.
    pub(super) fn edge(&mut self, i: usize, now: Instant) {
        if let Some(t) = self.tracked.get_mut(i) {
            t.settle_at = Some(now + t.debounce);
        }
    }

    /// The earliest moment something is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.tracked
            .iter()
            .flat_map(|t| [t.settle_at, t.poll_at])
            .flatten()
            .min()
    }

    /// Inputs to read now (settled or due for a poll); reschedules polls.
    pub(super) fn due(&mut self, now: Instant) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, t) in self.tracked.iter_mut().enumerate() {
            let mut read = false;
            if t.settle_at.is_some_and(|at| at <= now) {
                t.settle_at = None;
                read = true;
            }
            if let (Some(at), Some(every)) = (t.poll_at, t.poll) {
                if at <= now {
                    t.poll_at = Some(now + every);
                    read = true;
                }
            }
            if read {
                out.push(i);
            }
        }
        out
    }

    /// Continues input `i`'s sequence after `last` (from an earlier run), so
    /// consumers do not see numbers reused.
    pub(super) fn resume(&mut self, i: usize, last: u64) {
        if let Some(t) = self.tracked.get_mut(i) {
            t.resumed_from = last;
        }
    }

    /// Records the electrical level read from input `i`; returns the logical
    /// value and its sequence number when it is news worth publishing.
    pub(super) fn observe(&mut self, i: usize, high: bool) -> Option<(bool, u64)> {
        let t = self.tracked.get_mut(i)?;
        let value = high != t.invert;
        match t.published {
            Some((last, _)) if last == value => None,
            Some((_, seq)) => {
                t.published = Some((value, seq + 1));
                t.published
            }
            None => {
                t.published = Some((value, t.resumed_from + 1));
                t.published
            }
        }
    }

    /// The last published reading of input `i`, to publish again on a new
    /// connection (same seq: it is the same reading).
    pub(super) fn last(&self, i: usize) -> Option<(bool, u64)> {
        self.tracked.get(i).and_then(|t| t.published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pull;

    fn input(debounce_ms: u64, invert: bool, poll: Option<u64>) -> Input {
        Input {
            name: "b".into(),
            pin: crate::config::PinAt::Gpio(17),
            line: None,
            pull: Pull::Up,
            debounce: Duration::from_millis(debounce_ms),
            invert,
            poll_interval: poll.map(Duration::from_millis),
            count: None,
            button: None,
        }
    }

    #[test]
    fn an_input_the_kernel_debounces_is_read_at_its_event_not_a_debounce_later() {
        let t0 = Instant::now();
        let mut inputs = Inputs::new(&[input(50, false, None)], t0);
        inputs.settled_by_board(0);
        inputs.edge(0, t0 + Duration::from_millis(70));
        assert_eq!(inputs.due(t0 + Duration::from_millis(70)), vec![0]);
    }

    #[test]
    fn a_bouncing_contact_is_read_once_after_it_settles() {
        let t0 = Instant::now();
        let mut inputs = Inputs::new(&[input(50, false, None)], t0);
        for ms in [0, 5, 12, 30] {
            inputs.edge(0, t0 + Duration::from_millis(ms));
        }
        assert!(inputs.due(t0 + Duration::from_millis(60)).is_empty());
        assert_eq!(inputs.next_due(), Some(t0 + Duration::from_millis(80)));
        assert_eq!(inputs.due(t0 + Duration::from_millis(80)), vec![0]);
        assert!(inputs.due(t0 + Duration::from_millis(200)).is_empty());
    }

    #[test]
    fn only_changes_are_news_and_seq_counts_them() {
        let mut inputs = Inputs::new(&[input(0, false, None)], Instant::now());
        assert_eq!(inputs.observe(0, true), Some((true, 1)));
        assert_eq!(inputs.observe(0, true), None);
        assert_eq!(inputs.observe(0, false), Some((false, 2)));
        assert_eq!(inputs.last(0), Some((false, 2)));
    }

    #[test]
    fn invert_publishes_a_pressed_pull_up_button_as_true() {
        let mut inputs = Inputs::new(&[input(0, true, None)], Instant::now());
        assert_eq!(inputs.observe(0, false), Some((true, 1)));
    }

    #[test]
    fn polled_inputs_are_read_on_their_interval() {
        let t0 = Instant::now();
        let mut inputs = Inputs::new(&[input(0, false, Some(100))], t0);
        assert!(inputs.due(t0 + Duration::from_millis(99)).is_empty());
        assert_eq!(inputs.due(t0 + Duration::from_millis(100)), vec![0]);
        assert_eq!(inputs.next_due(), Some(t0 + Duration::from_millis(200)));
    }
}
