//! When a certificate is due for renewal, and spans of time in words
//! (pure).

use std::time::Duration;

use crate::tls::Pair;

/// `renew_before` ahead of the end, but never before the middle of the
/// certificate's life: a `renew_before` longer than what the operator
/// issues would otherwise ask again the moment a new certificate arrives.
pub(crate) fn due_at(pair: &Pair, renew_before: Duration) -> i64 {
    due(pair.starts(), pair.ends(), renew_before)
}

fn due(starts: i64, ends: i64, renew_before: Duration) -> i64 {
    let before = i64::try_from(renew_before.as_secs()).unwrap_or(i64::MAX);
    let middle = starts.saturating_add(ends.saturating_sub(starts) / 2);
    ends.saturating_sub(before).max(middle)
}

/// A span of seconds for people: days when there are several.
pub(super) fn span(secs: i64) -> String {
    let secs = secs.max(0);
    if secs >= 2 * 86_400 {
        format!("{} days", secs / 86_400)
    } else {
        humantime::format_duration(Duration::from_secs(secs.unsigned_abs())).to_string()
    }
}

/// How often a renewal nobody answers is mentioned again: a tenth of
/// `renew_before`, at most daily (so a month's notice warns every day).
pub(super) fn nag_every(renew_before: Duration) -> i64 {
    i64::try_from(renew_before.as_secs() / 10)
        .unwrap_or(i64::MAX)
        .clamp(1, 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn a_long_certificate_is_due_renew_before_its_end() {
        let start = 1_800_000_000;
        let end = start + 825 * DAY;
        let due_at = due(start, end, Duration::from_secs(30 * DAY as u64));
        assert_eq!(due_at, end - 30 * DAY);
    }

    #[test]
    fn a_short_certificate_is_not_due_before_the_middle_of_its_life() {
        let start = 1_800_000_000;
        let end = start + 3600;
        let due_at = due(start, end, Duration::from_secs(30 * DAY as u64));
        assert_eq!(due_at, start + 1800);
    }

    #[test]
    fn ended_and_absurd_dates_do_not_overflow() {
        let far = due(i64::MIN, i64::MAX, Duration::MAX);
        assert!(far < i64::MAX, "{far}");
        assert_eq!(due(0, 10, Duration::from_secs(5)), 5);
    }
}
