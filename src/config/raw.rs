//! The config file as serde sees it: types only, every key optional, unknown
//! keys refused. Meaning and ranges are checked in `build`.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) device: RawDevice,
    #[serde(default)]
    pub(super) broker: RawBroker,
    #[serde(default)]
    pub(super) reconnect: RawReconnect,
    #[serde(default)]
    pub(super) board: RawBoard,
    #[serde(default)]
    pub(super) input: Vec<RawInput>,
    #[serde(default)]
    pub(super) output: Vec<RawOutput>,
    #[serde(default)]
    pub(super) commands: RawCommands,
    #[serde(default)]
    pub(super) outbox: RawOutbox,
    #[serde(default)]
    pub(super) sensor: Vec<RawSensor>,
    #[serde(default)]
    pub(super) homeassistant: RawHomeAssistant,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevice {
    pub(super) id: Option<String>,
    pub(super) topic_prefix: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBroker {
    pub(super) host: Option<String>,
    pub(super) hosts: Option<Vec<String>>,
    pub(super) order: Option<String>,
    pub(super) profile: Option<String>,
    pub(super) port: Option<i64>,
    pub(super) cli_port: Option<i64>,
    pub(super) client_id: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) keep_alive: Option<String>,
    pub(super) clean_session: Option<bool>,
    pub(super) connect_timeout: Option<String>,
    pub(super) allow_insecure: Option<bool>,
    pub(super) max_packet_size: Option<i64>,
    pub(super) tls: Option<RawTls>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) ca_file: Option<PathBuf>,
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) server_name: Option<String>,
    pub(super) alpn: Option<Vec<String>>,
    pub(super) min_version: Option<String>,
    pub(super) legacy_common_name: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReconnect {
    pub(super) initial: Option<String>,
    pub(super) max: Option<String>,
    pub(super) multiplier: Option<f64>,
    pub(super) jitter: Option<f64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBoard {
    pub(super) kind: Option<String>,
    pub(super) wires: Option<Vec<(i64, i64)>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInput {
    pub(super) name: Option<String>,
    pub(super) pin: Option<i64>,
    pub(super) pull: Option<String>,
    pub(super) debounce: Option<String>,
    pub(super) invert: Option<bool>,
    pub(super) poll_interval: Option<String>,
    pub(super) homeassistant: Option<RawEntity>,
}

/// `true`/`false` or `"on"`/`"off"`/`"high"`/`"low"`: people write both.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawLevel {
    Bool(bool),
    Text(String),
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutput {
    pub(super) name: Option<String>,
    pub(super) pin: Option<i64>,
    pub(super) initial: Option<RawLevel>,
    pub(super) safe_state: Option<RawLevel>,
    pub(super) pwm: Option<bool>,
    pub(super) homeassistant: Option<RawEntity>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommands {
    pub(super) max_pulse: Option<String>,
    pub(super) max_age: Option<String>,
    pub(super) max_future: Option<String>,
    pub(super) max_payload: Option<i64>,
    pub(super) allow_unstamped: Option<bool>,
    pub(super) min_interval: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutbox {
    pub(super) path: Option<PathBuf>,
    pub(super) memory_limit: Option<String>,
    pub(super) max_bytes: Option<String>,
    pub(super) max_age: Option<String>,
    pub(super) policy: Option<String>,
    pub(super) stats_interval: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSensor {
    pub(super) name: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) retries: Option<i64>,
    pub(super) change_threshold: Option<f64>,
    pub(super) report_every: Option<String>,
    pub(super) unit: Option<String>,
    pub(super) start: Option<f64>,
    pub(super) step: Option<f64>,
    pub(super) path: Option<PathBuf>,
    pub(super) regex: Option<String>,
    pub(super) scale: Option<f64>,
    pub(super) offset: Option<f64>,
    pub(super) id: Option<String>,
    pub(super) disk: Option<PathBuf>,
    pub(super) bus: Option<i64>,
    pub(super) address: Option<RawAddress>,
    pub(super) channels: Option<Vec<i64>>,
    pub(super) gain: Option<f64>,
    pub(super) homeassistant: Option<RawEntity>,
}

/// `0x76` is not TOML; people write `address = 0x76` (a TOML hex integer)
/// or `"0x76"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawAddress {
    Number(i64),
    Text(String),
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHomeAssistant {
    pub(super) enabled: Option<bool>,
    pub(super) discovery_prefix: Option<String>,
    pub(super) status_topic: Option<String>,
    pub(super) form: Option<String>,
    pub(super) name: Option<String>,
    pub(super) area: Option<String>,
    pub(super) model: Option<String>,
    pub(super) manufacturer: Option<String>,
    pub(super) configuration_url: Option<String>,
    pub(super) birth_delay: Option<String>,
    pub(super) diagnostics: Option<bool>,
}

/// `[output.homeassistant]` (and input, sensor): how one pin or sensor
/// appears in Home Assistant. `measurement` only under a sensor.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntity {
    pub(super) enabled: Option<bool>,
    pub(super) component: Option<String>,
    pub(super) device_class: Option<String>,
    pub(super) name: Option<String>,
    pub(super) icon: Option<String>,
    pub(super) entity_category: Option<String>,
    pub(super) unit: Option<String>,
    pub(super) pulse: Option<String>,
    pub(super) measurement: Option<std::collections::BTreeMap<String, RawEntity>>,
}
