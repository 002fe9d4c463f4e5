//! UTC timestamps in the forms pinpost prints (certificate dates) and
//! publishes (reading times), without pulling in a calendar crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch now; 0 if the clock is before 1970.
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch now.
pub fn now_unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `2026-11-23T08:58:12.345Z`: RFC 3339 with milliseconds, for readings.
pub(crate) fn rfc3339_millis(unix_millis: i64) -> String {
    let secs = unix_millis.div_euclid(1000);
    let (y, m, d, hh, mm, ss) = civil(secs);
    let ms = unix_millis.rem_euclid(1000);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z")
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` into Unix milliseconds.
/// Strict: every field is plain digits within its calendar range (no signs,
/// no 31 February, offsets under 24 h), so text from the network cannot
/// reach arithmetic that overflows.
pub fn parse_rfc3339_millis(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (digits(b, 0..4)?, digits(b, 5..7)?, digits(b, 8..10)?);
    let (h, mi, s) = (digits(b, 11..13)?, digits(b, 14..16)?, digits(b, 17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        // Only the first three digits count; the rest are below a millisecond.
        for i in 0..3 {
            millis = millis * 10
                + frac
                    .get(i)
                    .filter(|_| i < n)
                    .map_or(0, |c| i64::from(c - b'0'));
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (digits(rest, 1..3)?, digits(rest, 4..6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let minutes = oh * 60 + om;
            if *sign == b'-' {
                -minutes * 60
            } else {
                minutes * 60
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, u32::try_from(mo).ok()?, u32::try_from(d).ok()?);
    let secs = days
        .checked_mul(86_400)?
        .checked_add(h * 3600 + mi * 60 + s)?
        .checked_sub(offset)?;
    secs.checked_mul(1000)?.checked_add(millis)
}

/// A field of ASCII digits only (`str::parse` would also take a sign).
fn digits(b: &[u8], range: std::ops::Range<usize>) -> Option<i64> {
    let field = b.get(range)?;
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    field.iter().try_fold(0i64, |n, c| {
        n.checked_mul(10)?.checked_add(i64::from(c - b'0'))
    })
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-11-23 08:58 UTC`: for people reading certificate dates.
pub(crate) fn human(unix: i64) -> String {
    let (y, m, d, hh, mm, _) = civil(unix);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02} UTC")
}

/// `2026-11-23T08:58:12Z`: whole seconds, so tests can check the calendar
/// to the second.
#[cfg(test)]
fn rfc3339(unix: i64) -> String {
    let (y, m, d, hh, mm, ss) = civil(unix);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// The calendar date (year, month, day) of a Unix time, in UTC.
pub(crate) fn date(unix: i64) -> (i64, u32, u32) {
    let (y, m, d, _, _, _) = civil(unix);
    (y, m, d)
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

    #[test]
    fn rfc3339_round_trips() {
        let ms = 1_795_430_292_345;
        assert_eq!(rfc3339_millis(ms), "2026-11-23T10:38:12.345Z");
        assert_eq!(parse_rfc3339_millis("2026-11-23T10:38:12.345Z"), Some(ms));
        assert_eq!(
            parse_rfc3339_millis("2026-11-23T11:38:12.345+01:00"),
            Some(ms)
        );
        assert_eq!(parse_rfc3339_millis("2026-11-23T10:38:12Z"), Some(ms - 345));
        assert_eq!(parse_rfc3339_millis("yesterday"), None);
    }

    #[test]
    fn only_real_calendar_times_parse() {
        for bad in [
            "2026-02-30T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "+026-11-23T10:38:12Z",
            "2026-11-23T10:38:12+99:00",
            "2026-11-23T10:38:12.Z",
            "2026-11-23T10:38:12",
            "2026-11-23T10:38:1\u{e9}Z",
            "2026-11-23X10:38:12Z",
            "NaN",
            "2026-11-23T10:38:12ZZ",
        ] {
            assert_eq!(parse_rfc3339_millis(bad), None, "{bad}");
        }
        assert_eq!(
            parse_rfc3339_millis("2024-02-29T00:00:00.123456789Z"),
            Some(1_709_164_800_123)
        );
        assert_eq!(
            parse_rfc3339_millis("9999-12-31T23:59:59-23:59").map(|ms| ms > 0),
            Some(true),
            "the largest year still fits"
        );
    }
}
