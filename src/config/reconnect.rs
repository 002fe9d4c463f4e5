//! `[reconnect]`: how long the link waits between attempts to reach the
//! broker, growing from `initial` to `max` with some randomness so a fleet
//! does not come back at once.

use std::time::Duration;

use super::error::ConfigError;
use super::model::Reconnect;
use super::origins::Origins;
use super::raw::RawConfig;
use super::values::duration;

pub(super) fn build(raw: &RawConfig, o: &Origins<'_>) -> Result<Reconnect, ConfigError> {
    let r = &raw.reconnect;
    let initial = duration(&r.initial, "reconnect.initial", o)?.unwrap_or(Duration::from_secs(1));
    let max = duration(&r.max, "reconnect.max", o)?.unwrap_or(Duration::from_secs(60));
    if initial < Duration::from_millis(10) || initial > Duration::from_secs(3600) {
        return Err(o.invalid(
            "reconnect.initial",
            "out of range; allowed: \"10ms\" to \"1h\"",
        ));
    }
    if max < initial || max > Duration::from_secs(86400) {
        return Err(o.invalid(
            "reconnect.max",
            "must be at least reconnect.initial and at most \"24h\"",
        ));
    }
    let multiplier = r.multiplier.unwrap_or(2.0);
    if !(1.0..=10.0).contains(&multiplier) {
        return Err(o.invalid(
            "reconnect.multiplier",
            format!("{multiplier} is out of range; allowed: 1.0 to 10.0"),
        ));
    }
    let jitter = r.jitter.unwrap_or(0.5);
    // Up to 0.9, so no draw can make a delay zero and the loop tight.
    if !(0.0..=0.9).contains(&jitter) {
        return Err(o.invalid(
            "reconnect.jitter",
            format!("{jitter} is out of range; allowed: 0.0 (none) to 0.9 (up to 90% shorter)"),
        ));
    }
    Ok(Reconnect {
        initial,
        max,
        multiplier,
        jitter,
    })
}
