//! The configuration: the TOML schema, its defaults, and validation whose
//! errors name the file, the line and the key, and say what is allowed.
//!
//! Parsing goes in two stages (as ripgrep does with its flags): serde reads
//! the text into `raw` structs that only know types, then [`build`] turns them
//! into a [`Config`] of checked values (`Duration`s, ports, existing files).
//! Command-line flags are applied between the two, so a bad flag is reported
//! the same way as a bad key. This module knows nothing of rumqttc or rustls.

mod build;
pub mod endpoints;
mod homeassistant;
mod outbox;
pub mod pins;
mod profile;
mod raw;
mod sensors;
pub mod source;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use build::Overrides;
pub use endpoints::{Endpoint, Order};
pub use homeassistant::{
    Component, DiscoveryForm, Entity, EntityCategory, HomeAssistant, Published, SensorEntity,
};
pub use profile::{AWS_ALPN, Profile};
pub use raw::RawConfig;
pub use source::{CONFIG_ENV, Chosen, SYSTEM_CONFIG};

/// A checked configuration, made once at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    pub device: Device,
    pub broker: Broker,
    pub reconnect: Reconnect,
    pub board: Board,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
    pub commands: CommandRules,
    pub outbox: Outbox,
    pub sensors: Vec<Sensor>,
    pub homeassistant: HomeAssistant,
    /// The file this came from, if any.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Device {
    /// The device's name in topics; never contains `+`, `#` or `/`.
    pub id: String,
    pub topic_prefix: String,
}

#[derive(Debug, Clone)]
pub struct Broker {
    /// The first of [`Broker::endpoints`]: where a single broker is, and
    /// the name the words use when there is one.
    pub host: String,
    pub port: u16,
    /// Every broker to try, in the order this device tries them (`hosts`,
    /// arranged by `order`); one entry, `host:port`, for a single broker.
    pub endpoints: Vec<Endpoint>,
    /// Which endpoint a device tries first.
    pub order: Order,
    /// A service with rules of its own (AWS IoT Core), or any MQTT broker.
    pub profile: Profile,
    /// Where `publish`, `subscribe` and `check` connect instead of `port`:
    /// the broker's second listener, where a certificate's client id is its
    /// subject, so they run beside the agent (whose id is the device id)
    /// without taking its place. `None` after `-p`, which wins.
    pub cli_port: Option<u16>,
    /// `None` lets the caller choose (the agent uses the device id).
    pub client_id: Option<String>,
    pub credentials: Option<Credentials>,
    /// Zero turns keep-alive pings off.
    pub keep_alive: Duration,
    pub clean_session: bool,
    pub connect_timeout: Duration,
    pub max_packet_size: usize,
    /// `None` is plain MQTT over TCP.
    pub tls: Option<Tls>,
}

/// Username and password; the password's `Debug` shows `***`.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Option<Secret>,
    /// Where the password came from (`broker.password_file`), for `check`.
    pub password_file: Option<PathBuf>,
    /// The password is written in the config file itself.
    pub password_inline: bool,
}

/// A password: shown as `***` in logs and debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone)]
pub struct Tls {
    /// `None` trusts the system's certificate authorities.
    pub ca_file: Option<SourcedPath>,
    pub cert_file: Option<SourcedPath>,
    pub key_file: Option<SourcedPath>,
    /// The name TLS sends (SNI) and checks the broker's certificate
    /// against, when it differs from the host connected to.
    pub server_name: Option<String>,
    /// ALPN protocols offered in the handshake (AWS IoT Core on 443 needs
    /// `x-amzn-mqtt-ca`); empty offers none.
    pub alpn: Vec<String>,
    pub min_version: TlsVersion,
    pub legacy_common_name: bool,
    /// Skip the name check only (`--insecure`); the chain is still verified.
    pub skip_name_check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::V1_2 => "TLS 1.2",
            TlsVersion::V1_3 => "TLS 1.3",
        })
    }
}

/// A file path with where it was set, so a later error about the file's
/// contents can point back at the line or flag that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcedPath {
    pub path: PathBuf,
    pub origin: String,
}

impl SourcedPath {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Display for SourcedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.origin)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reconnect {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    /// Up to this fraction of each delay is randomly taken off, 0.0 to 0.9.
    pub jitter: f64,
}

/// Which GPIO backend drives the pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoardKind {
    /// rppal on a Raspberry Pi; refused elsewhere with a hint.
    Auto,
    Rppal,
    Sim,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    pub kind: BoardKind,
    /// Simulated wires: setting output pin `.0` drives input pin `.1`.
    pub wires: Vec<(u8, u8)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pull {
    Up,
    Down,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub name: String,
    /// BCM GPIO number.
    pub pin: u8,
    pub pull: Pull,
    /// A change must hold this long before it is published.
    pub debounce: Duration,
    /// Publish `true` when the pin is low (buttons to ground with pull-up).
    pub invert: bool,
    /// Read the pin on this interval too, for pins whose interrupts are unreliable.
    pub poll_interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub name: String,
    pub pin: u8,
    /// Level set before the pin becomes an output, so relays do not click at start.
    pub initial: bool,
    /// Level set on shutdown, if any.
    pub safe_state: Option<bool>,
    /// Whether `pwm` commands are allowed on this output.
    pub pwm: bool,
}

/// Limits on what the command topic may ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRules {
    pub max_pulse: Duration,
    /// Commands stamped (`"ts"`) earlier than this, and retained commands, are refused.
    pub max_age: Duration,
    /// Clock skew allowed: commands stamped further ahead than this are refused.
    pub max_future: Duration,
    pub max_payload: usize,
    /// With `clean_session = false`, apply commands without `"ts"` anyway
    /// (the broker may have queued them for any length of time).
    pub allow_unstamped: bool,
    /// The least time between two changes of one output; a command inside
    /// it waits for the rest (only the latest one waits).
    pub min_interval: Duration,
}

/// How much the outbox may hold and where it spills to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbox {
    /// Directory of the spool (`StateDirectory` under systemd).
    pub path: PathBuf,
    /// Unacknowledged bytes kept in memory while connected before spilling.
    pub memory_limit: u64,
    /// Everything unacknowledged, memory and disk together.
    pub max_bytes: u64,
    /// Messages older than this are dropped rather than sent.
    pub max_age: Duration,
    pub policy: DropPolicy,
    /// How often `<prefix>/<id>/stats` is published.
    pub stats_interval: Duration,
}

/// What gives when the outbox is full, within the stream that is adding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropPolicy {
    /// Keep the newest readings: the stream's oldest message makes room.
    DropOldest,
    /// Keep the history already queued: the new message is dropped.
    DropNewest,
}

/// A sensor sampled on a schedule; published on `sensor/<name>` (or
/// `sensor/<name>/<measurement>` for sensors that measure several things).
#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    pub name: String,
    pub interval: Duration,
    /// A read that takes longer is reported as failed.
    pub timeout: Duration,
    /// Extra attempts after a failed read, before it is reported.
    pub retries: u32,
    /// Publish only when a value moved at least this much...
    pub change_threshold: Option<f64>,
    /// ...or this long has passed since it was last published.
    pub report_every: Option<Duration>,
    pub kind: SensorKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SensorKind {
    /// A made-up value: `start`, then `step` more on each reading.
    Sim {
        start: f64,
        step: f64,
        unit: String,
    },
    /// A number in a file (sysfs, IIO, hwmon): `value * scale + offset`.
    File {
        path: PathBuf,
        /// Where in the text the number is: the first capture group, or
        /// the whole match.
        regex: Option<String>,
        scale: f64,
        offset: f64,
        unit: String,
    },
    /// 1-Wire DS18B20 thermometers under `dir` (one, or all found).
    Ds18b20 {
        dir: PathBuf,
        id: Option<String>,
    },
    /// The SoC temperature from a thermal zone (millidegrees).
    CpuTemperature {
        path: PathBuf,
    },
    /// Load, memory, disk and uptime, from `proc` and `statvfs(disk)`.
    System {
        proc: PathBuf,
        disk: PathBuf,
    },
    Bme280 {
        bus: u8,
        address: u8,
    },
    Bmp280 {
        bus: u8,
        address: u8,
    },
    Ads1115 {
        bus: u8,
        address: u8,
        channels: Vec<u8>,
        /// Full-scale range in volts: 6.144, 4.096, 2.048, 1.024, 0.512, 0.256.
        gain: f64,
    },
    Sht3x {
        bus: u8,
        address: u8,
    },
}

impl SensorKind {
    /// The I2C bus this sensor uses, if any (one owner thread per bus).
    pub fn i2c_bus(&self) -> Option<u8> {
        match self {
            SensorKind::Bme280 { bus, .. }
            | SensorKind::Bmp280 { bus, .. }
            | SensorKind::Ads1115 { bus, .. }
            | SensorKind::Sht3x { bus, .. } => Some(*bus),
            _ => None,
        }
    }
}

/// Where a bad value was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    File { path: PathBuf, line: Option<usize> },
    Flag(&'static str),
    Default,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::File {
                path,
                line: Some(l),
            } => write!(f, "{} line {l}", path.display()),
            Place::File { path, line: None } => write!(f, "{}", path.display()),
            Place::Flag(flag) => write!(f, "flag {flag}"),
            Place::Default => f.write_str("default value"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no config file: none given with --config or ${CONFIG_ENV}, and none found at {}. \
         Pass --config PATH, or copy deploy/config.example.toml to /etc/pinpost/config.toml",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or ")
    )]
    NotFound { searched: Vec<PathBuf> },
    #[error("cannot read config file {}: {reason}. {hint}", path.display())]
    Read {
        path: PathBuf,
        reason: String,
        hint: &'static str,
    },
    #[error("{place}: {what}")]
    Syntax { place: Place, what: String },
    #[error("{place}: {key}: {problem}")]
    Invalid {
        place: Place,
        key: String,
        problem: String,
    },
}

/// Reads the chosen file (or none) and builds a checked config with the
/// command-line overrides applied.
pub fn load(chosen: Option<&Chosen>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let Some(chosen) = chosen else {
        return build::build("", None, overrides);
    };
    let path = chosen.path();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        reason: io_words(&e),
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

/// An I/O error in plain words, without Rust's "(os error 2)" noise.
pub fn io_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => "no such file".into(),
        PermissionDenied => "permission denied".into(),
        IsADirectory => "it is a directory, not a file".into(),
        InvalidData => "it is not UTF-8 text".into(),
        _ => e.to_string(),
    }
}

/// The host name, the default device id.
pub fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Whether traffic to `host` stays on this machine.
/// Whether `host` is an IP address (to which TLS cannot send a server name).
pub fn is_ip(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok()
}

pub fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}
