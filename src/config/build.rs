//! Raw TOML values plus command-line overrides → a checked [`Config`]: the
//! order the sections are checked in, and nothing else. Each section's
//! rules live in its own module (`broker`, `pins`, `outbox`, …), and every
//! check names the key, where it was set (file and line, or flag) and what
//! is allowed, so a person can fix it without reading the source.

use std::path::{Path, PathBuf};

use super::clock::Clock;
use super::error::{ConfigError, Place};
use super::homeassistant::{self, HomeAssistant};
use super::model::{Board, Broker, CommandRules, Device, Input, Outbox, Output, Reconnect};
use super::origins::Origins;
use super::overrides::{self, Overrides};
use super::raw::RawConfig;
use super::sensor_model::Sensor;
use super::source::Layout;
use super::update::Update;
use super::values::word;
use super::{broker, clock, device, outbox, pins, profile, reconnect, sensors, update};

/// A checked configuration, made once at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[device]`.
    pub device: Device,
    /// `[broker]` and `[broker.tls]`.
    pub broker: Broker,
    /// `[reconnect]`.
    pub reconnect: Reconnect,
    /// `[board]`.
    pub board: Board,
    /// Every `[[input]]`, in the file's order.
    pub inputs: Vec<Input>,
    /// Every `[[output]]`, in the file's order.
    pub outputs: Vec<Output>,
    /// `[commands]`.
    pub commands: CommandRules,
    /// `[outbox]`.
    pub outbox: Outbox,
    /// Every `[[sensor]]`, in the file's order.
    pub sensors: Vec<Sensor>,
    /// `[homeassistant]` and each pin's and sensor's `homeassistant` table.
    pub homeassistant: HomeAssistant,
    /// `[clock]`: what says the device's clock is set.
    pub clock: Clock,
    /// `[update]`: the release key signed updates must carry.
    pub update: Update,
    /// The file this came from, if any.
    pub file: Option<PathBuf>,
}

/// Checks `text` (the file at `file`, if any) with the flags applied.
pub(super) fn build(
    text: &str,
    file: Option<&Path>,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let layout = Layout::new(text);
    let mut raw: RawConfig = toml::from_str(text).map_err(|e| syntax_error(&e, file, &layout))?;
    let flags = overrides::apply(&mut raw, overrides);
    let origins = Origins::new(file, layout, flags);
    let profile =
        word(raw.broker.profile.as_deref(), "broker.profile", &origins)?.unwrap_or_default();
    profile::defaults(profile, &mut raw.broker);
    let device = device::build(&raw, &origins)?;
    let mut broker = broker::build(&raw, overrides, &origins)?;
    profile::check(profile, &broker, &device.id, &origins)?;
    broker.profile = profile;
    let reconnect = reconnect::build(&raw, &origins)?;
    let pins = pins::build(&raw, &origins)?;
    let outbox = outbox::build(&raw, &origins)?;
    let sensors = sensors::build(&raw, &origins)?;
    let clock = clock::build(&raw, &origins)?;
    let update = update::build(&raw, &origins)?;
    let homeassistant = homeassistant::build(
        &raw,
        &homeassistant::Parts {
            broker: &broker,
            commands: &pins.commands,
            inputs: &pins.inputs,
            outputs: &pins.outputs,
            sensors: &sensors,
        },
        &origins,
    )?;
    Ok(Config {
        device,
        broker,
        reconnect,
        board: pins.board,
        inputs: pins.inputs,
        outputs: pins.outputs,
        commands: pins.commands,
        outbox,
        sensors,
        homeassistant,
        clock,
        update,
        file: file.map(Path::to_path_buf),
    })
}

/// A TOML or type error from serde, placed at its line and named by its key.
fn syntax_error(e: &toml::de::Error, file: Option<&Path>, layout: &Layout<'_>) -> ConfigError {
    let line = e.span().map(|s| layout.line_of(s.start));
    let key = e.span().and_then(|s| layout.key_at(s.start));
    let message = e.message().trim_end_matches('\n');
    let what = match key {
        Some(key) if !message.contains(&key) => format!("{key}: {message}"),
        _ => message.to_string(),
    };
    ConfigError::Syntax {
        place: Place::File {
            path: file.map_or_else(|| PathBuf::from("config"), Path::to_path_buf),
            line,
        },
        what,
    }
}
