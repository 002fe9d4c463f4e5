//! `[update]`: whether this device takes signed releases over MQTT, the
//! release key it trusts for them (`release_key`: the `release.pub` that
//! `pinpost certs release-key` made, shipped with the config), how long a
//! newly installed release has to prove itself before it is rolled back
//! (`health_timeout`), and where the root helper that installs releases
//! leaves its outcome (`helper_dir`), and whether a checked release is
//! installed at once or when asked (`install`: the `cmd/update` command,
//! Home Assistant's Install button). Without a key no release is fetched:
//! a device with nothing to check a signature against trusts nothing.

use std::path::PathBuf;
use std::time::Duration;

use super::error::ConfigError;
use super::origins::Origins;
use super::raw::RawConfig;
use super::values::{UPDATE_COMMAND, duration};

/// How long a new release has to connect and deliver, by default.
pub const HEALTH_TIMEOUT_DEFAULT: Duration = Duration::from_secs(120);
/// Shorter would roll back a release on a slow start or a broker's blip.
const HEALTH_TIMEOUT_MIN: Duration = Duration::from_secs(20);
/// Longer would leave a broken release running for most of an hour.
const HEALTH_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
/// `pinpost-update.service`'s folder.
pub const HELPER_DIR_DEFAULT: &str = "/var/lib/pinpost-update";

/// `update.install`: when a checked release goes to the install helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// As soon as it is checked: publishing a release is the operator's
    /// word to install it.
    Auto,
    /// When a `cmd/update` command (Home Assistant's Install) asks.
    WhenAsked,
}

impl std::str::FromStr for Install {
    type Err = String;
    fn from_str(text: &str) -> Result<Install, String> {
        match text {
            "auto" => Ok(Install::Auto),
            "when-asked" => Ok(Install::WhenAsked),
            other => Err(format!(
                "{other:?} is not a choice: \"auto\" installs a release once it is fetched and \
                 checked; \"when-asked\" keeps it until an install command (Home Assistant's \
                 Install, or {{\"action\":\"install\"}} on cmd/{UPDATE_COMMAND})"
            )),
        }
    }
}

/// `[update]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The release key's public half; `None`: updates are off.
    pub release_key: Option<PathBuf>,
    /// How long an installed release has to be running, connected and
    /// delivering before the helper puts the previous one back.
    pub health_timeout: Duration,
    /// Where `pinpost install-update` keeps its journal and says how the
    /// last install went (`outcome.json`, `rolled-back.json`).
    pub helper_dir: PathBuf,
    /// When a checked release is installed.
    pub install: Install,
}

impl Default for Update {
    fn default() -> Update {
        Update {
            release_key: None,
            health_timeout: HEALTH_TIMEOUT_DEFAULT,
            helper_dir: PathBuf::from(HELPER_DIR_DEFAULT),
            install: Install::Auto,
        }
    }
}

pub(super) fn build(raw: &RawConfig, o: &Origins<'_>) -> Result<Update, ConfigError> {
    let release_key = match &raw.update.release_key {
        Some(p) if p.as_os_str().is_empty() => {
            return Err(o.invalid(
                "update.release_key",
                "is empty; name the release.pub that `pinpost certs release-key` made, or \
                 leave the key out to turn updates off",
            ));
        }
        Some(p) => Some(o.resolve("update.release_key", p)),
        None => None,
    };
    let health_timeout = duration(&raw.update.health_timeout, "update.health_timeout", o)?
        .unwrap_or(HEALTH_TIMEOUT_DEFAULT);
    if !(HEALTH_TIMEOUT_MIN..=HEALTH_TIMEOUT_MAX).contains(&health_timeout) {
        return Err(o.invalid(
            "update.health_timeout",
            format!(
                "is {}; give a new release between {} and {} to connect and deliver (the \
                 default is {})",
                humantime::format_duration(health_timeout),
                humantime::format_duration(HEALTH_TIMEOUT_MIN),
                humantime::format_duration(HEALTH_TIMEOUT_MAX),
                humantime::format_duration(HEALTH_TIMEOUT_DEFAULT),
            ),
        ));
    }
    let helper_dir = match &raw.update.helper_dir {
        Some(p) if p.as_os_str().is_empty() || p.is_relative() => {
            return Err(o.invalid(
                "update.helper_dir",
                format!(
                    "is {p:?}; name the absolute folder of pinpost-update.service's state \
                     ({HELPER_DIR_DEFAULT} unless its unit was changed), or leave it out"
                ),
            ));
        }
        Some(p) => p.clone(),
        None => PathBuf::from(HELPER_DIR_DEFAULT),
    };
    let install = super::values::word(raw.update.install.as_deref(), "update.install", o)?
        .unwrap_or(Install::Auto);
    Ok(Update {
        release_key,
        health_timeout,
        helper_dir,
        install,
    })
}
