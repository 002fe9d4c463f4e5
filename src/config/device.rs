//! `[device]`: the device's id and topic prefix, each one level of every
//! topic it publishes. The id defaults to the host name.

use super::error::ConfigError;
use super::model::Device;
use super::origins::Origins;
use super::raw::RawConfig;
use super::values::check_topic_level;

/// The topic level under the prefix where the fleet's release packages
/// are published (`topics::release_chunk`): no device may be called so.
pub(crate) const RELEASE_LEVEL: &str = "release";

pub(super) fn build(raw: &RawConfig, o: &Origins<'_>) -> Result<Device, ConfigError> {
    let id = match &raw.device.id {
        Some(id) => id.clone(),
        None => hostname().ok_or_else(|| {
            o.invalid(
                "device.id",
                "not set, and the host name could not be read to use instead; \
                 set device.id = \"pi-01\" (any name without +, # or /)",
            )
        })?,
    };
    check_topic_level(&id, "device.id", o)?;
    if id == RELEASE_LEVEL {
        return Err(o.invalid(
            "device.id",
            "\"release\" is the topic level the fleet's release packages are published under; \
             choose another id, like pi-01",
        ));
    }
    let topic_prefix = raw
        .device
        .topic_prefix
        .clone()
        .unwrap_or_else(|| "pinpost".into());
    check_topic_level(&topic_prefix, "device.topic_prefix", o)?;
    Ok(Device { id, topic_prefix })
}

/// The host name, the default device id.
pub(crate) fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}
