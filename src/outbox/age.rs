//! The clock the outbox counts ages on: milliseconds that really passed
//! while pinpost ran, from the kernel's `CLOCK_BOOTTIME` (which no clock
//! setting moves), resumed at each start from the newest creation time in
//! the spool. So `max_age` is time that passed, not a wall-clock
//! subtraction: setting the clock forward (1970 to today, or a Pi three
//! weeks behind catching up) expires nothing, and setting it back keeps
//! nothing alive longer.
//!
//! Time while pinpost was stopped or the Pi off is not counted: nothing
//! trustworthy says how long it was (the wall clock of a Pi without a
//! real-time clock does not). A message kept across a long power cut is
//! sent late rather than dropped; its own `ts` says when it was made.
//!
//! A spool written before this clock holds Unix milliseconds; they are just
//! a larger start for the count, so such a spool resumes where it was.

use std::time::Duration;

use crate::clock::boot_time;

/// Counts from `base` (ms) at `started` (boot time).
#[derive(Debug, Clone, Copy)]
pub struct AgeClock {
    base_ms: u64,
    started: Duration,
}

impl AgeClock {
    /// Resumes after the newest of `created` (the spool's records), so
    /// every age stays positive and the order of creation is kept.
    pub fn resume(created: impl Iterator<Item = u64>) -> AgeClock {
        AgeClock {
            base_ms: created.max().unwrap_or(0),
            started: boot_time(),
        }
    }

    /// Now, on this clock.
    pub fn now_ms(&self) -> u64 {
        let ran = boot_time().saturating_sub(self.started);
        self.base_ms
            .saturating_add(u64::try_from(ran.as_millis()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_resumes_after_the_newest_record_and_counts_real_time() {
        let clock = AgeClock::resume([5_000, 90_000, 12].into_iter());
        let first = clock.now_ms();
        assert!((90_000..90_050).contains(&first), "{first}");
        std::thread::sleep(Duration::from_millis(120));
        let later = clock.now_ms();
        assert!((110..400).contains(&(later - first)), "{first} → {later}");
        assert!(AgeClock::resume(std::iter::empty()).now_ms() < 1_000);
    }
}
