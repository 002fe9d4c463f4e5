//! When each sensor is next read: a fixed rate per sensor that does not
//! drift (the next time is the last planned time plus the interval), and
//! skips ahead rather than bursting when the agent fell behind.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(super) struct Sampling {
    plan: Vec<(Duration, Instant)>,
}

impl Sampling {
    /// The first reading of each sensor is due at once.
    pub(super) fn new(intervals: impl IntoIterator<Item = Duration>, now: Instant) -> Sampling {
        Sampling {
            plan: intervals.into_iter().map(|every| (every, now)).collect(),
        }
    }

    pub(super) fn next_due(&self) -> Option<Instant> {
        self.plan.iter().map(|(_, at)| *at).min()
    }

    /// Sensors to read now; each is rescheduled.
    pub(super) fn due(&mut self, now: Instant) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, (every, at)) in self.plan.iter_mut().enumerate() {
            if *at <= now {
                out.push(i);
                *at += *every;
                if *at <= now {
                    // More than a whole interval late: one reading, not a burst.
                    *at = now + *every;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_keep_their_rate_without_drift_or_bursts() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Sampling::new([ms(10), ms(25)], t0);
        assert_eq!(s.due(t0), [0, 1]);
        assert_eq!(s.next_due(), Some(t0 + ms(10)));
        // Woken 3 ms late: the next stays on the 10 ms grid.
        assert_eq!(s.due(t0 + ms(13)), [0]);
        assert_eq!(s.next_due(), Some(t0 + ms(20)));
        // Stalled for 100 ms: one reading each, then on time again.
        assert_eq!(s.due(t0 + ms(120)), [0, 1]);
        assert_eq!(s.next_due(), Some(t0 + ms(130)));
    }
}
