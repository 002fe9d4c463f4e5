//! The wall clock watched against the kernel's boot-time clock, which no
//! clock setting moves. A Pi without a real-time clock starts at 1970 or at
//! the time fake-hwclock saved, and jumps when network time arrives; a jump
//! shows as the offset between the two clocks changing, and is said in
//! words (how far, which way) so a log that goes from 1970 to today, or
//! back an hour, explains itself.
//!
//! `JumpWatch` is pure: it is handed both clocks' readings. Whether the
//! clock can be trusted at all is [`trust`].

pub(crate) mod dating;
pub(crate) mod newest;
pub(crate) mod trust;

use std::time::Duration;

/// Time since the machine booted, suspend included (`CLOCK_BOOTTIME`);
/// only ever goes forward, whatever is done to the wall clock.
pub(crate) fn boot_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// [`boot_time`] in milliseconds.
pub(crate) fn uptime_ms() -> u64 {
    u64::try_from(boot_time().as_millis()).unwrap_or(u64::MAX)
}

/// A change of the offset smaller than this is drift or a slew, not a jump.
const JUMP_MS: i64 = 2_000;

/// Watches for jumps of the wall clock.
#[derive(Debug, Default)]
pub(crate) struct JumpWatch {
    /// Wall clock minus boot time at the last look, in ms.
    offset_ms: Option<i64>,
}

/// The wall clock was set: it read `from_ms` and now reads `to_ms` (Unix
/// ms), where it would have read `to_ms - by_ms` without the jump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Jump {
    pub(crate) by_ms: i64,
    pub(crate) to_ms: i64,
}

impl JumpWatch {
    /// Looks at both clocks; a jump since the last look is returned once.
    pub(crate) fn observe(&mut self, wall_ms: i64, boot_ms: i64) -> Option<Jump> {
        let offset = wall_ms.saturating_sub(boot_ms);
        let before = self.offset_ms.replace(offset)?;
        let by_ms = offset.saturating_sub(before);
        (by_ms.abs() >= JUMP_MS).then_some(Jump {
            by_ms,
            to_ms: wall_ms,
        })
    }
}

impl Jump {
    /// "the clock jumped forward by 56 years 338 days (it now reads …)".
    pub(crate) fn words(&self) -> String {
        let way = if self.by_ms > 0 { "forward" } else { "back" };
        format!(
            "the clock jumped {way} by {} (it now reads {}); times before this are on the old clock",
            span(self.by_ms.unsigned_abs()),
            crate::utc::rfc3339_millis(self.to_ms)
        )
    }
}

/// A span in its two largest units: "3 weeks 2 days", "1 hour", "4.2 s".
fn span(ms: u64) -> String {
    const UNITS: [(&str, u64); 6] = [
        // The mean Gregorian year, so leap days do not pile up as weeks:
        // 1970-01-01 to 2026-12-06 reads "56 years 48 weeks".
        ("year", 31_556_952_000),
        ("week", 7 * 86_400_000),
        ("day", 86_400_000),
        ("hour", 3_600_000),
        ("minute", 60_000),
        ("second", 1_000),
    ];
    if ms < 60_000 {
        return format!("{:.1} s", ms as f64 / 1000.0);
    }
    let mut left = ms;
    let mut parts = Vec::new();
    for (name, size) in UNITS {
        let n = left / size;
        if n > 0 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
            left -= n * size;
        }
        if parts.len() == 2 || (!parts.is_empty() && n == 0) {
            break;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_the_clock_from_1970_is_one_jump_forward_said_in_years() {
        let mut w = JumpWatch::default();
        assert_eq!(
            w.observe(3_000, 3_000),
            None,
            "the first look is the reference"
        );
        assert_eq!(w.observe(4_000, 4_000), None);
        let now = 1_796_560_000_000;
        let jump = w.observe(now, 5_000).unwrap();
        assert_eq!(jump.by_ms, now - 5_000);
        let words = jump.words();
        assert!(
            words.starts_with("the clock jumped forward by 56 years 48 weeks ("),
            "by the calendar, leap days included: {words}"
        );
        assert_eq!(w.observe(now + 1_000, 6_000), None, "said once");
    }

    #[test]
    fn a_backward_step_of_an_hour_and_small_drift() {
        let mut w = JumpWatch::default();
        w.observe(10_000_000, 1_000);
        assert_eq!(
            w.observe(10_001_500, 2_000),
            None,
            "500 ms of drift is no jump"
        );
        let back = w.observe(10_002_500 - 3_600_000, 3_000).unwrap();
        assert!(
            back.words().starts_with("the clock jumped back by 1 hour"),
            "{}",
            back.words()
        );
    }

    #[test]
    fn spans_read_in_their_two_largest_units() {
        assert_eq!(span(4_200), "4.2 s");
        assert_eq!(span(21 * 86_400_000), "3 weeks");
        assert_eq!(span(23 * 86_400_000 + 5 * 3_600_000), "3 weeks 2 days");
        assert_eq!(span(3_600_000 + 1_000), "1 hour");
    }
}
