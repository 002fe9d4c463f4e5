//! `[update]`: whether this device takes signed releases over MQTT, and
//! the release key it trusts for them (`release_key`: the `release.pub`
//! that `pinpost certs release-key` made, shipped with the config). Without
//! a key no release is fetched: a device with nothing to check a signature
//! against trusts nothing.

use std::path::PathBuf;

use super::error::ConfigError;
use super::origins::Origins;
use super::raw::RawConfig;

/// `[update]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// The release key's public half; `None`: updates are off.
    pub release_key: Option<PathBuf>,
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
    Ok(Update { release_key })
}
