//! UTC timestamps in the forms pinpost prints (certificate dates) and
//! publishes (reading times), without pulling in a calendar crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch now; 0 if the clock is before 1970.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `2026-11-23 08:58 UTC`: for people reading certificate dates.
pub fn human(unix: i64) -> String {
    let (y, m, d, hh, mm, _) = civil(unix);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02} UTC")
}

/// `2026-11-23T08:58:12Z`: RFC 3339, for payloads.
pub fn rfc3339(unix: i64) -> String {
    let (y, m, d, hh, mm, ss) = civil(unix);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// Days-to-civil from Howard Hinnant's public-domain date algorithms.
fn civil(unix: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates_format_as_a_calendar_would() {
        assert_eq!(human(0), "1970-01-01 00:00 UTC");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_430_292), "2026-11-23T10:38:12Z");
        assert_eq!(human(-86_400), "1969-12-31 00:00 UTC");
    }
}
