//! The delay between connection attempts: exponential, capped, jittered.
//!
//! A pure schedule (no clock, no sleeping) so it can be tested exactly. The
//! jitter spreads a fleet's reconnects after a broker restart instead of
//! having every Pi knock at the same instant.

use std::time::Duration;

use crate::config::Reconnect;

#[derive(Debug, Clone)]
pub(super) struct Backoff {
    settings: Reconnect,
    /// The un-jittered delay the next attempt waits.
    next: Duration,
}

impl Backoff {
    pub fn new(settings: Reconnect) -> Self {
        let next = settings.initial;
        Backoff { settings, next }
    }

    /// Back to the initial delay: called when the broker accepts us.
    pub fn reset(&mut self) {
        self.next = self.settings.initial;
    }

    /// The delay before the next attempt. `random` is uniform in [0, 1); the
    /// jittered part is taken off the delay, never added, so `max` holds.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let base = self.next;
        let grown = base.as_secs_f64() * self.settings.multiplier;
        self.next = Duration::from_secs_f64(grown.min(self.settings.max.as_secs_f64()));
        let cut = self.settings.jitter * random.clamp(0.0, 1.0);
        base.mul_f64(1.0 - cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(jitter: f64) -> Reconnect {
        Reconnect {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut b = Backoff::new(settings(0.0));
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay(0.5).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn a_successful_connect_starts_over() {
        let mut b = Backoff::new(settings(0.0));
        b.next_delay(0.0);
        b.next_delay(0.0);
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_secs(1));
    }

    #[test]
    fn jitter_only_shortens_and_stays_within_its_fraction() {
        let mut b = Backoff::new(settings(0.5));
        for _ in 0..5 {
            b.next_delay(0.0);
        }
        assert_eq!(b.next_delay(0.0), Duration::from_secs(30));
        assert_eq!(b.next_delay(0.999_999).as_secs(), 15);
        assert_eq!(b.next_delay(0.5), Duration::from_millis(22_500));
    }

    #[test]
    fn the_largest_jitter_still_waits() {
        let mut b = Backoff::new(settings(0.9));
        let shortest = b.next_delay(0.999_999);
        assert!(shortest >= Duration::from_millis(100), "{shortest:?}");
    }
}
