//! The configuration: the TOML schema, its defaults, and validation whose
//! errors name the file, the line and the key, and say what is allowed.
//!
//! Parsing goes in two stages (as ripgrep does with its flags): serde reads
//! the text into `raw` structs that only know types, then `build` turns them
//! into a [`Config`] of checked values (`Duration`s, ports, existing files,
//! enums for every enum-like key). Command-line flags ([`Overrides`]) are
//! applied between the two, so a bad flag is reported the same way as a bad
//! key. This module knows nothing of rumqttc or rustls.
//!
//! The modules form one-way layers, none importing one that imports it:
//! `raw`, `source`, `error` and `endpoints` know no other; `origins` (where
//! a key was set), `model` and `sensor_model` (the checked types) build on
//! those; `values` holds the parsers several sections share; one module per
//! section (`device`, `broker`, `profile`, `reconnect`, `pins`, `outbox`,
//! `sensors`, `clock`, `homeassistant`) checks its keys; `build` only runs
//! them in order, and this file only re-exports and reads the file.

mod broker;
mod build;
mod button;
mod clock;
mod counting;
pub use button::ButtonTimes;
pub use counting::{CountEdge, Counting, Meter};
mod device;
mod expanders;
pub use expanders::{Expander, ExpanderChip, ExpanderPin, PinAt};
pub(crate) mod endpoints;
mod error;
mod homeassistant;
mod model;
mod origins;
mod outbox;
mod overrides;
pub(crate) mod pins;
mod profile;
mod raw;
mod reconnect;
mod sensor_model;
mod sensors;
mod sim;
pub(crate) mod source;
mod update;
mod values;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use build::Config;
pub(crate) use clock::TIMESYNCD_MARK;
pub use clock::{Clock, ClockTrust};
pub(crate) use device::RELEASE_LEVEL;
pub(crate) use device::hostname;
pub(crate) use endpoints::is_ip;
pub use endpoints::{Endpoint, Order};
pub use error::{ConfigError, Place};
pub use homeassistant::{
    Component, DiscoveryForm, Entity, EntityCategory, HomeAssistant, SensorEntity,
};
pub use model::{
    Board, BoardKind, Broker, CommandRules, Credentials, Device, DropPolicy, Input, Outbox, Output,
    Profile, Pull, Reconnect, Secret, SimPulses, SourcedPath, Tls, TlsVersion,
};
pub use overrides::Overrides;
pub(crate) use sensor_model::Published;
pub use sensor_model::{LightResolution, Sensor, SensorKind};
pub(crate) use source::CONFIG_ENV;
pub(crate) use source::Chosen;
pub use update::{Install, Update};
pub(crate) use values::UPDATE_COMMAND;

/// Reads the chosen file (or none) and builds a checked config with the
/// command-line overrides applied.
pub(crate) fn load(chosen: Option<&Chosen>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let Some(chosen) = chosen else {
        return build::build("", None, overrides);
    };
    let path = chosen.path();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        reason: crate::words::io_words(&e),
        hint: match (chosen, e.kind()) {
            (Chosen::Env(_), std::io::ErrorKind::NotFound) => {
                "It is named by $PINPOST_CONFIG: fix or unset that variable"
            }
            (_, std::io::ErrorKind::PermissionDenied) => {
                "Run as a user that may read it (the service runs as `pinpost`)"
            }
            _ => "Check the path given with --config",
        },
    })?;
    build::build(&text, Some(path), overrides)
}

/// Builds a config from TOML text; `path` is only used in messages and to
/// resolve relative file names.
pub fn from_text(
    text: &str,
    path: Option<&Path>,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    build::build(text, path, overrides)
}
