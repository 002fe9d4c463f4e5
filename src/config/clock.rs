//! `[clock]`: what tells pinpost that this device's clock is set. Until it
//! is, stamped commands are refused (their freshness cannot be judged) and
//! readings say their `ts` is the device's guess (see `crate::clock`).

use std::path::PathBuf;
use std::str::FromStr;

use super::error::ConfigError;
use super::origins::Origins;
use super::raw::RawConfig;
use super::values::word;

/// systemd-timesyncd makes this once it has synchronised the clock.
pub(crate) const TIMESYNCD_MARK: &str = "/run/systemd/timesync/synchronized";

/// `[clock]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    /// What says the clock is set.
    pub trust: ClockTrust,
    /// The file whose existence says a time source has set the clock.
    pub mark: PathBuf,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock {
            trust: ClockTrust::TimeSource,
            mark: PathBuf::from(TIMESYNCD_MARK),
        }
    }
}

/// `clock.trust`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClockTrust {
    /// Once a time source has set it: `clock.mark` exists (by default the
    /// mark systemd-timesyncd makes on a Raspberry Pi OS or Debian).
    #[default]
    TimeSource,
    /// The system clock as it is: a Pi with a battery-backed real-time
    /// clock, a laptop, a container whose host keeps time. Still not before
    /// this pinpost was written, nor before the newest time it has written.
    System,
}

impl FromStr for ClockTrust {
    type Err = String;

    fn from_str(word: &str) -> Result<Self, String> {
        match word {
            "time-source" => Ok(ClockTrust::TimeSource),
            "system" => Ok(ClockTrust::System),
            other => Err(format!(
                "{other:?} is not a choice; allowed: \"time-source\" (trust the clock once \
                 clock.mark exists: systemd-timesyncd's mark by default) or \"system\" (this \
                 device keeps time from boot: a real-time clock with a battery)"
            )),
        }
    }
}

pub(super) fn build(raw: &RawConfig, o: &Origins<'_>) -> Result<Clock, ConfigError> {
    let r = &raw.clock;
    let trust = word(r.trust.as_deref(), "clock.trust", o)?.unwrap_or_default();
    let mark = match &r.mark {
        Some(p) if p.as_os_str().is_empty() => {
            return Err(o.invalid(
                "clock.mark",
                format!("is empty; name the file a time source makes ({TIMESYNCD_MARK} for systemd-timesyncd)"),
            ));
        }
        Some(p) => o.resolve("clock.mark", p),
        None => PathBuf::from(TIMESYNCD_MARK),
    };
    Ok(Clock { trust, mark })
}
