//! The checked configuration, section by section: what the rest of pinpost
//! reads once [`build`](super::build) has accepted a file. Every value here
//! is already in range and every enum-like key is an enum; the words each
//! enum accepts in the file are listed once, in its `FromStr`, with what to
//! write instead.
//!
//! It knows the shape of the values only: not TOML, not where a value was
//! set (that is `origins`), and not how a section is checked.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::endpoints::{Endpoint, Order};

/// `[device]`: who this device is in topics.
#[derive(Debug, Clone)]
pub struct Device {
    /// The device's name in topics; never contains `+`, `#` or `/`.
    pub id: String,
    /// The first level of every topic (`pinpost`); never contains `+`, `#` or `/`.
    pub topic_prefix: String,
}

/// `[broker]`: where the broker is and how pinpost connects and logs in.
#[derive(Debug, Clone)]
pub struct Broker {
    /// The first of [`Broker::endpoints`]: where a single broker is, and
    /// the name the words use when there is one.
    pub host: String,
    /// The port of [`Broker::host`] (the first endpoint's).
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
    /// Username and password; `None` logs in without (a client certificate may still identify it).
    pub credentials: Option<Credentials>,
    /// Zero turns keep-alive pings off.
    pub keep_alive: Duration,
    /// `false` asks the broker to keep this client's session (and queue its QoS 1 commands) while it is offline.
    pub clean_session: bool,
    /// How long one attempt to connect to the broker may take before it is given up.
    pub connect_timeout: Duration,
    /// The largest MQTT packet pinpost exchanges with the broker, in bytes.
    pub max_packet_size: usize,
    /// `None` is plain MQTT over TCP.
    pub tls: Option<Tls>,
}

/// Which broker pinpost talks to, where that changes the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Any MQTT 3.1.1 broker (Mosquitto, EMQX, HiveMQ, VerneMQ, …).
    #[default]
    Mqtt,
    /// AWS IoT Core.
    AwsIot,
}

impl FromStr for Profile {
    type Err = String;

    /// `broker.profile`: `"mqtt"` or `"aws-iot"`.
    fn from_str(word: &str) -> Result<Self, String> {
        match word {
            "mqtt" => Ok(Profile::Mqtt),
            "aws-iot" => Ok(Profile::AwsIot),
            other => Err(format!(
                "{other:?} is not a profile; allowed: \"mqtt\" (any MQTT broker, the default) \
                 or \"aws-iot\" (AWS IoT Core)"
            )),
        }
    }
}

/// Username and password; the password's `Debug` shows `***`.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The MQTT username.
    pub username: String,
    /// The password, if any, read from `password` or `password_file`.
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
    /// Wraps a password.
    pub(crate) fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The password itself, for the one place that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `[broker.tls]`: the files and rules of the TLS connection.
#[derive(Debug, Clone)]
pub struct Tls {
    /// `None` trusts the system's certificate authorities.
    pub ca_file: Option<SourcedPath>,
    /// The client certificate (PEM) this device logs in with, if any.
    pub cert_file: Option<SourcedPath>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<SourcedPath>,
    /// The name TLS sends (SNI) and checks the broker's certificate
    /// against, when it differs from the host connected to.
    pub server_name: Option<String>,
    /// ALPN protocols offered in the handshake (AWS IoT Core on 443 needs
    /// `x-amzn-mqtt-ca`); empty offers none.
    pub alpn: Vec<String>,
    /// The oldest TLS version accepted.
    pub min_version: TlsVersion,
    /// Accept a broker certificate that names its host only in the
    /// Common Name (no subjectAltName), as old Mosquitto guides make them.
    pub legacy_common_name: bool,
    /// Skip the name check only (`--insecure`); the chain is still verified.
    pub skip_name_check: bool,
    /// How long before the client certificate ends the agent asks for a
    /// new one over MQTT (`pinpost certs renew` answers).
    pub renew_before: Duration,
}

/// `broker.tls.renew_before` unless set: a month to notice that nobody
/// answers.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

/// The oldest TLS version pinpost accepts from the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 or 1.3 (the default).
    #[default]
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

impl FromStr for TlsVersion {
    type Err = String;

    /// `broker.tls.min_version`: `"1.2"` or `"1.3"` (`--tls-version` also
    /// takes mosquitto's `"tlsv1.2"`, trimmed before it comes here).
    fn from_str(word: &str) -> Result<Self, String> {
        match word {
            "1.2" => Ok(TlsVersion::V1_2),
            "1.3" => Ok(TlsVersion::V1_3),
            other => Err(format!(
                "{other:?} is not a TLS version pinpost speaks; allowed: \"1.2\" or \"1.3\""
            )),
        }
    }
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
    /// The file, resolved against the config file's folder.
    pub path: PathBuf,
    /// Where it was set, in words: a flag, or a key with file and line.
    pub origin: String,
}

impl SourcedPath {
    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Display for SourcedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.origin)
    }
}

/// `[reconnect]`: the back-off between attempts to reach the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconnect {
    /// The first wait after a connection is lost.
    pub initial: Duration,
    /// The longest wait, however many attempts failed.
    pub max: Duration,
    /// Each failed attempt multiplies the wait by this (1.0 to 10.0).
    pub multiplier: f64,
    /// Up to this fraction of each delay is randomly taken off, 0.0 to 0.9.
    pub jitter: f64,
}

/// Which GPIO backend drives the pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BoardKind {
    /// rppal where the Raspberry Pi kernel's `/dev/gpiomem` exists, the
    /// kernel's GPIO character device otherwise (`board::choose` says why).
    #[default]
    Auto,
    /// rppal, the Raspberry Pi's GPIO registers, asked for by name.
    Rppal,
    /// The kernel's GPIO character device (`/dev/gpiochipN`), by name.
    Cdev,
    /// A simulated board: no hardware, outputs may be wired to inputs.
    Sim,
}

impl FromStr for BoardKind {
    type Err = String;

    /// `board.kind` and `--board`: `"auto"`, `"rppal"`, `"cdev"` or `"sim"`.
    fn from_str(word: &str) -> Result<Self, String> {
        match word {
            "auto" => Ok(BoardKind::Auto),
            "rppal" => Ok(BoardKind::Rppal),
            "cdev" => Ok(BoardKind::Cdev),
            "sim" => Ok(BoardKind::Sim),
            other => Err(format!(
                "{other:?} is not a board; allowed: \"auto\" (a Raspberry Pi when on one), \"rppal\" (its GPIO registers), \"cdev\" (the kernel's GPIO character device) or \"sim\""
            )),
        }
    }
}

/// `[board]`: which GPIO backend drives the pins.
#[derive(Debug, Clone, PartialEq)]
pub struct Board {
    /// The backend.
    pub kind: BoardKind,
    /// Simulated wires: setting output pin `.0` drives input pin `.1`.
    pub wires: Vec<(u8, u8)>,
    /// Every `[[expander]]`, by index (an `ExpanderPin`'s `expander`).
    pub expanders: Vec<super::expanders::Expander>,
    /// Simulated wires between expander pins: output `.0` drives input `.1`.
    pub expander_wires: Vec<(super::expanders::ExpanderPin, super::expanders::ExpanderPin)>,
    /// The sim board's simulated expanders named in this file (one per
    /// line) do not answer while it exists.
    pub unplugged: Option<PathBuf>,
    /// Simulated meters: pulses sent into input pins by the sim board.
    pub pulses: Vec<SimPulses>,
    /// The character device's chip (`gpiochip0`, `/dev/gpiochip0` or a
    /// label); `None`: the Raspberry Pi's own GPIO chip, found by label.
    pub chip: Option<String>,
}

/// A simulated meter (`[board] pulses = [[pin, hz, count]]`): `count`
/// pulses (0: endless) at `hz` into input pin `pin`, each a departure from
/// the pin's idle level and back, half a period each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimPulses {
    /// The input pin driven.
    pub pin: u8,
    /// Pulses per second.
    pub hz: f64,
    /// How many; 0 for no end.
    pub count: u64,
}

/// The resistor an input pin is pulled with while nothing drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pull {
    /// To 3.3 V: reads high until something pulls it to ground.
    Up,
    /// To ground: reads low until something drives it high.
    Down,
    /// Neither (the default): the circuit sets the level.
    #[default]
    None,
}

impl FromStr for Pull {
    type Err = String;

    /// `input.pull`: `"up"`, `"down"` or `"none"`.
    fn from_str(word: &str) -> Result<Self, String> {
        match word {
            "up" => Ok(Pull::Up),
            "down" => Ok(Pull::Down),
            "none" => Ok(Pull::None),
            other => Err(format!(
                "{other:?} is not a pull; allowed: \"up\", \"down\" or \"none\""
            )),
        }
    }
}

/// An `[[input]]`: a GPIO pin read and published on `input/<name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// Its name in topics (`input/<name>`), unique among inputs, outputs and sensors.
    pub name: String,
    /// A BCM GPIO, or an expander's pin.
    pub pin: super::expanders::PinAt,
    /// The character device's line, by the name the kernel gives it (on
    /// any chip, or on `[board] chip`); `None`: line `pin` of the chip.
    pub line: Option<String>,
    /// The pin's pull resistor.
    pub pull: Pull,
    /// A change must hold this long before it is published.
    pub debounce: Duration,
    /// Publish `true` when the pin is low (buttons to ground with pull-up).
    pub invert: bool,
    /// Read the pin on this interval too, for pins whose interrupts are unreliable.
    pub poll_interval: Option<Duration>,
    /// Counted instead of published level by level (`count = true`).
    pub count: Option<super::counting::Counting>,
    /// Presses published as events (`button = true`).
    pub button: Option<super::button::ButtonTimes>,
}

/// An `[[output]]`: a GPIO pin set by commands on `output/<name>/set`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Its name in topics (`output/<name>`), unique among inputs, outputs and sensors.
    pub name: String,
    /// A BCM GPIO, or an expander's pin.
    pub pin: super::expanders::PinAt,
    /// As an input's `line`.
    pub line: Option<String>,
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
    /// The longest pulse a command may ask for.
    pub max_pulse: Duration,
    /// Commands stamped (`"ts"`) earlier than this, and retained commands, are refused.
    pub max_age: Duration,
    /// Clock skew allowed: commands stamped further ahead than this are refused.
    pub max_future: Duration,
    /// Longer command payloads are refused unread (bytes).
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
    /// Whose message gives way when the outbox is full.
    pub policy: DropPolicy,
    /// How often `<prefix>/<id>/stats` is published.
    pub stats_interval: Duration,
}

/// What gives when the outbox is full, within the stream that is adding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DropPolicy {
    /// Keep the newest readings: the stream's oldest message makes room.
    #[default]
    DropOldest,
    /// Keep the history already queued: the new message is dropped.
    DropNewest,
}

impl FromStr for DropPolicy {
    type Err = String;

    /// `outbox.policy`: `"drop_oldest"` or `"drop_newest"`.
    fn from_str(word: &str) -> Result<Self, String> {
        match word {
            "drop_oldest" => Ok(DropPolicy::DropOldest),
            "drop_newest" => Ok(DropPolicy::DropNewest),
            other => Err(format!(
                "{other:?} is not a policy; allowed: \"drop_oldest\" (keep the newest \
                 readings) or \"drop_newest\" (keep what is already queued)"
            )),
        }
    }
}
