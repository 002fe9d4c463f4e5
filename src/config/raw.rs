//! The config file as serde sees it: types only, every key optional, unknown
//! keys refused. Meaning and ranges are checked in `build`.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub device: RawDevice,
    #[serde(default)]
    pub broker: RawBroker,
    #[serde(default)]
    pub reconnect: RawReconnect,
    #[serde(default)]
    pub board: RawBoard,
    #[serde(default)]
    pub input: Vec<RawInput>,
    #[serde(default)]
    pub output: Vec<RawOutput>,
    #[serde(default)]
    pub expander: Vec<RawExpander>,
    #[serde(default)]
    pub commands: RawCommands,
    #[serde(default)]
    pub outbox: RawOutbox,
    #[serde(default)]
    pub sensor: Vec<RawSensor>,
    #[serde(default)]
    pub homeassistant: RawHomeAssistant,
    #[serde(default)]
    pub clock: RawClock,
    #[serde(default)]
    pub update: RawUpdate,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpdate {
    pub release_key: Option<PathBuf>,
    pub health_timeout: Option<String>,
    pub helper_dir: Option<PathBuf>,
    pub install: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClock {
    pub trust: Option<String>,
    pub mark: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    pub id: Option<String>,
    pub topic_prefix: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBroker {
    pub host: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub order: Option<String>,
    pub profile: Option<String>,
    pub port: Option<i64>,
    pub cli_port: Option<i64>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub keep_alive: Option<String>,
    pub clean_session: Option<bool>,
    pub connect_timeout: Option<String>,
    pub allow_insecure: Option<bool>,
    pub max_packet_size: Option<i64>,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub alpn: Option<Vec<String>>,
    pub min_version: Option<String>,
    pub legacy_common_name: Option<bool>,
    pub renew_before: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReconnect {
    pub initial: Option<String>,
    pub max: Option<String>,
    pub multiplier: Option<f64>,
    pub jitter: Option<f64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBoard {
    pub kind: Option<String>,
    pub wires: Option<Vec<(RawPin, RawPin)>>,
    pub pulses: Option<Vec<(i64, f64, i64)>>,
    pub chip: Option<String>,
    pub unplugged: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpander {
    pub name: Option<String>,
    pub chip: Option<String>,
    pub bus: Option<i64>,
    pub address: Option<i64>,
    pub interrupt: Option<i64>,
    pub poll_interval: Option<String>,
}

/// A pin as written: a BCM number, or `"<expander>:<pin>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawPin {
    Number(i64),
    Named(String),
}

impl<'de> Deserialize<'de> for RawPin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawPin;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a BCM GPIO number (pin = 17) or an expander's pin (pin = \"mcp0:A3\")")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawPin, E> {
                Ok(RawPin::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawPin, E> {
                Ok(RawPin::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawPin, E> {
                Ok(RawPin::Named(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    pub name: Option<String>,
    pub pin: Option<RawPin>,
    pub line: Option<String>,
    pub pull: Option<String>,
    pub debounce: Option<String>,
    pub invert: Option<bool>,
    pub poll_interval: Option<String>,
    pub count: Option<bool>,
    pub edge: Option<String>,
    pub per_pulse: Option<f64>,
    pub unit: Option<String>,
    pub rate_window: Option<String>,
    pub interval: Option<String>,
    pub meter: Option<String>,
    pub button: Option<bool>,
    pub double_within: Option<String>,
    pub long_after: Option<String>,
    pub homeassistant: Option<RawEntity>,
}

/// `true`/`false`, or a level word of `crate::level` (`"on"`, `"off"`,
/// `"high"`, `"low"`, …): people write both.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawLevel {
    Bool(bool),
    Text(String),
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    pub name: Option<String>,
    pub pin: Option<RawPin>,
    pub line: Option<String>,
    pub initial: Option<RawLevel>,
    pub safe_state: Option<RawLevel>,
    pub pwm: Option<bool>,
    pub homeassistant: Option<RawEntity>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommands {
    pub max_pulse: Option<String>,
    pub max_age: Option<String>,
    pub max_future: Option<String>,
    pub max_payload: Option<i64>,
    pub allow_unstamped: Option<bool>,
    pub min_interval: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutbox {
    pub path: Option<PathBuf>,
    pub memory_limit: Option<String>,
    pub max_bytes: Option<String>,
    pub max_age: Option<String>,
    pub policy: Option<String>,
    pub stats_interval: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSensor {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<i64>,
    pub change_threshold: Option<f64>,
    pub report_every: Option<String>,
    pub unit: Option<String>,
    pub start: Option<f64>,
    pub step: Option<f64>,
    pub path: Option<PathBuf>,
    pub regex: Option<String>,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    pub id: Option<String>,
    pub disk: Option<PathBuf>,
    pub bus: Option<i64>,
    pub address: Option<RawAddress>,
    pub channels: Option<Vec<i64>>,
    pub gain: Option<f64>,
    pub resolution: Option<String>,
    pub shunt_ohms: Option<f64>,
    pub max_current: Option<f64>,
    pub homeassistant: Option<RawEntity>,
}

/// `0x76` is not TOML; people write `address = 0x76` (a TOML hex integer)
/// or `"0x76"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawAddress {
    Number(i64),
    Text(String),
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHomeAssistant {
    pub enabled: Option<bool>,
    pub discovery_prefix: Option<String>,
    pub status_topic: Option<String>,
    pub form: Option<String>,
    pub name: Option<String>,
    pub area: Option<String>,
    pub model: Option<String>,
    pub manufacturer: Option<String>,
    pub configuration_url: Option<String>,
    pub birth_delay: Option<String>,
    pub diagnostics: Option<bool>,
}

/// `[output.homeassistant]` (and input, sensor): how one pin or sensor
/// appears in Home Assistant. `measurement` only under a sensor.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntity {
    pub enabled: Option<bool>,
    pub component: Option<String>,
    pub device_class: Option<String>,
    pub name: Option<String>,
    pub icon: Option<String>,
    pub entity_category: Option<String>,
    pub unit: Option<String>,
    pub pulse: Option<String>,
    pub measurement: Option<std::collections::BTreeMap<String, RawEntity>>,
}
