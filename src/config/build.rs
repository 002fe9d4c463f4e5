//! Raw TOML values plus command-line overrides → a checked [`Config`].
//!
//! Every check names the key, where it was set (file and line, or flag) and
//! what is allowed, so a person can fix it without reading the source.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::endpoints::{self, Endpoint, Order};
use super::raw::{RawConfig, RawTls};
use super::source::{Layout, Step};
use super::{
    Broker, Config, ConfigError, Credentials, Device, Place, Reconnect, Secret, SourcedPath, Tls,
    TlsVersion, hostname, io_words, is_loopback,
};

/// Values given on the command line; each wins over the file's.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `-h`, given once or more (several brokers, tried in turn).
    pub hosts: Vec<String>,
    pub port: Option<u16>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub tls_version: Option<String>,
    /// Use TLS even when no TLS file is named (system CAs).
    pub tls: bool,
    pub skip_name_check: bool,
    pub legacy_common_name: bool,
    pub allow_insecure: bool,
    /// `-k`: parsed by the command line, checked here like the file's value.
    pub keep_alive: Option<Duration>,
    pub connect_timeout: Option<String>,
    pub board: Option<String>,
}

const KEEP_ALIVE_DEFAULT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// rumqttc's own default (10 KiB) tears the link down on a modest file;
/// Mosquitto accepts far more, so allow what a field check might send.
const MAX_PACKET_DEFAULT: i64 = 256 * 1024;
const ID_MAX_CHARS: usize = 64;

/// `input[1].pin` → key `input`, index 1, key `pin`.
fn steps_of(key: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for part in key.split('.') {
        match part.split_once('[') {
            Some((name, index)) => {
                steps.push(Step::Key(name));
                if let Ok(i) = index.trim_end_matches(']').parse() {
                    steps.push(Step::Index(i));
                }
            }
            None => steps.push(Step::Key(part)),
        }
    }
    steps
}

/// Where each key's value came from, to point errors at the right place.
pub(in crate::config) struct Origins<'t> {
    file: Option<PathBuf>,
    layout: Layout<'t>,
    flags: HashMap<&'static str, &'static str>,
}

impl Origins<'_> {
    fn place(&self, key: &str) -> Place {
        if let Some(flag) = self.flags.get(key) {
            return Place::Flag(flag);
        }
        match &self.file {
            Some(path) => {
                let steps = steps_of(key);
                Place::File {
                    path: path.clone(),
                    line: self.layout.line_of_path(&steps),
                }
            }
            None => Place::Default,
        }
    }

    pub(super) fn invalid(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            place: self.place(key),
            key: key.to_string(),
            problem: problem.into(),
        }
    }

    /// Relative paths in the file are relative to the file's folder, as a
    /// person reading the file would expect; on the command line, to the
    /// working directory.
    pub(super) fn resolve(&self, key: &str, path: &Path) -> PathBuf {
        match (&self.file, self.flags.contains_key(key)) {
            (Some(file), false) if path.is_relative() => file
                .parent()
                .map_or_else(|| path.to_path_buf(), |dir| dir.join(path)),
            _ => path.to_path_buf(),
        }
    }

    fn origin_words(&self, key: &str) -> String {
        match self.place(key) {
            Place::Flag(flag) => flag.to_string(),
            place => format!("{key} in {place}"),
        }
    }
}

pub(super) fn build(
    text: &str,
    file: Option<&Path>,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let layout = Layout::new(text);
    let mut raw: RawConfig = toml::from_str(text).map_err(|e| syntax_error(&e, file, &layout))?;
    let flags = apply(&mut raw, overrides);
    let origins = Origins {
        file: file.map(Path::to_path_buf),
        layout,
        flags,
    };
    let profile = super::profile::parse(&raw.broker, &origins)?;
    super::profile::defaults(profile, &mut raw.broker);
    let device = device(&raw, &origins)?;
    let mut broker = broker(&raw, overrides, &origins)?;
    super::profile::check(profile, &broker, &device.id, &origins)?;
    broker.profile = profile;
    let reconnect = reconnect(&raw, &origins)?;
    let pins = super::pins::build(&raw, &origins)?;
    let outbox = super::outbox::build(&raw, &origins)?;
    let sensors = super::sensors::build(&raw, &origins)?;
    let homeassistant = super::homeassistant::build(
        &raw,
        &super::homeassistant::Parts {
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
        file: file.map(Path::to_path_buf),
    })
}

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

/// Writes the flags into the raw config and returns which keys they set.
fn apply(raw: &mut RawConfig, o: &Overrides) -> HashMap<&'static str, &'static str> {
    let mut flags = HashMap::new();
    let mut set = |key, flag, given: bool| {
        if given {
            flags.insert(key, flag);
        }
    };
    set("broker.host", "-h/--host", !o.hosts.is_empty());
    set("broker.hosts", "-h/--host", !o.hosts.is_empty());
    set("broker.port", "-p/--port", o.port.is_some());
    set("broker.client_id", "-i/--id", o.client_id.is_some());
    set("broker.username", "-u/--username", o.username.is_some());
    set("broker.password", "-P/--pw", o.password.is_some());
    set("broker.tls.ca_file", "--cafile", o.ca_file.is_some());
    set("broker.tls.cert_file", "--cert", o.cert_file.is_some());
    set("broker.tls.key_file", "--key", o.key_file.is_some());
    set(
        "broker.tls.min_version",
        "--tls-version",
        o.tls_version.is_some(),
    );
    set("broker.keep_alive", "--keepalive", o.keep_alive.is_some());
    set(
        "broker.connect_timeout",
        "--connect-timeout",
        o.connect_timeout.is_some(),
    );
    set("board.kind", "--board", o.board.is_some());

    override_with(&mut raw.board.kind, &o.board);
    let b = &mut raw.broker;
    match &o.hosts[..] {
        [] => {}
        [one] => {
            b.host = Some(one.clone());
            b.hosts = None;
        }
        several => {
            b.host = None;
            b.hosts = Some(several.to_vec());
        }
    }
    override_with(&mut b.port, &o.port.map(i64::from));
    override_with(&mut b.client_id, &o.client_id);
    override_with(&mut b.username, &o.username);
    if o.password.is_some() {
        b.password = o.password.clone();
        b.password_file = None;
    }
    override_with(&mut b.connect_timeout, &o.connect_timeout);
    if o.allow_insecure {
        b.allow_insecure = Some(true);
    }
    let wants_tls = o.tls
        || o.ca_file.is_some()
        || o.cert_file.is_some()
        || o.key_file.is_some()
        || o.tls_version.is_some()
        || o.legacy_common_name;
    if wants_tls && b.tls.is_none() {
        b.tls = Some(RawTls::default());
    }
    if let Some(tls) = &mut b.tls {
        override_with(&mut tls.ca_file, &o.ca_file);
        override_with(&mut tls.cert_file, &o.cert_file);
        override_with(&mut tls.key_file, &o.key_file);
        if let Some(v) = &o.tls_version {
            // mosquitto_pub spells versions "tlsv1.2"; the file says "1.2".
            tls.min_version = Some(v.trim_start_matches("tlsv").to_string());
        }
        if o.legacy_common_name {
            tls.legacy_common_name = Some(true);
        }
    }
    flags
}

fn override_with<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        slot.clone_from(value);
    }
}

fn device(raw: &RawConfig, o: &Origins<'_>) -> Result<Device, ConfigError> {
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
    let topic_prefix = raw
        .device
        .topic_prefix
        .clone()
        .unwrap_or_else(|| "pinpost".into());
    check_topic_level(&topic_prefix, "device.topic_prefix", o)?;
    Ok(Device { id, topic_prefix })
}

/// A device id or prefix is one MQTT topic level: wildcards or a `/` in it
/// would make its topics match, or split into, other devices' topics.
pub(super) fn check_topic_level(
    value: &str,
    key: &str,
    o: &Origins<'_>,
) -> Result<(), ConfigError> {
    let bad = value
        .chars()
        .find(|c| matches!(c, '+' | '#' | '/') || c.is_control() || c.is_whitespace());
    let problem = if value.is_empty() {
        "is empty".to_string()
    } else if let Some(c) = bad {
        format!("{value:?} contains {c:?}")
    } else if value.chars().count() > ID_MAX_CHARS {
        format!("{value:?} is longer than {ID_MAX_CHARS} characters")
    } else {
        return Ok(());
    };
    Err(o.invalid(
        key,
        format!(
            "{problem}; it becomes one level of every topic, so use letters, digits, \
             '-', '_' or '.', with no '+', '#', '/' or spaces (e.g. \"pi-01\")"
        ),
    ))
}

fn broker(raw: &RawConfig, ov: &Overrides, o: &Origins<'_>) -> Result<Broker, ConfigError> {
    let b = &raw.broker;
    let tls = match &b.tls {
        Some(t) => Some(tls(t, ov, o)?),
        None => None,
    };
    if ov.skip_name_check {
        check_insecure(tls.as_ref())?;
    }
    let default_port = if tls.is_some() { 8883 } else { 1883 };
    let port = match b.port {
        None => default_port,
        Some(p) => u16::try_from(p).ok().filter(|p| *p != 0).ok_or_else(|| {
            o.invalid(
                "broker.port",
                format!("{p} is not a port; allowed: 1 to 65535"),
            )
        })?,
    };
    let (endpoints, key) = endpoints(b, port, o)?;
    let host = endpoints[0].host.clone();
    let port = endpoints[0].port;
    let order = match b.order.as_deref() {
        None | Some("in_order") => Order::InOrder,
        Some("spread") => Order::Spread,
        Some(other) => {
            return Err(o.invalid(
                "broker.order",
                format!(
                    "{other:?} is not an order; allowed: \"in_order\" (the first listed \
                     first, then the next: a primary and its standby) or \"spread\" (each \
                     device starts at its own node, so a fleet spreads over a cluster)"
                ),
            ));
        }
    };
    let insecure = endpoints
        .iter()
        .find(|e| !is_loopback(&e.host))
        .filter(|_| tls.is_none() && !b.allow_insecure.unwrap_or(false));
    if let Some(Endpoint { host, .. }) = insecure {
        return Err(o.invalid(
            key,
            format!(
                "plain MQTT without TLS to {host} would send readings, commands and passwords \
                 in clear. Add a [broker.tls] section (ca_file, cert_file, key_file) or \
                 --cafile/--cert/--key, or, on a network you trust, set \
                 broker.allow_insecure = true (--allow-insecure)"
            ),
        ));
    }
    let cli_port = match b.cli_port {
        // An explicit -p names the listener to use.
        _ if ov.port.is_some() => None,
        None => None,
        Some(p) => Some(u16::try_from(p).ok().filter(|p| *p != 0).ok_or_else(|| {
            o.invalid(
                "broker.cli_port",
                format!("{p} is not a port; allowed: 1 to 65535"),
            )
        })?),
    };
    let client_id = match &b.client_id {
        Some(id) if id.is_empty() || id.len() > 256 => {
            return Err(o.invalid(
                "broker.client_id",
                "must be 1 to 256 characters (leave it out to use the device id)",
            ));
        }
        other => other.clone(),
    };
    let keep_alive = match ov.keep_alive {
        Some(flag) => flag,
        None => duration(&b.keep_alive, "broker.keep_alive", o)?.unwrap_or(KEEP_ALIVE_DEFAULT),
    };
    if !keep_alive.is_zero()
        && (keep_alive < Duration::from_secs(5) || keep_alive > Duration::from_secs(65535))
    {
        return Err(o.invalid(
            "broker.keep_alive",
            format!(
                "{} is out of range; allowed: \"0s\" (off) or \"5s\" to \"65535s\"",
                humantime::format_duration(keep_alive)
            ),
        ));
    }
    let connect_timeout = duration(&b.connect_timeout, "broker.connect_timeout", o)?
        .unwrap_or(CONNECT_TIMEOUT_DEFAULT);
    if connect_timeout < Duration::from_secs(1) || connect_timeout > Duration::from_secs(300) {
        return Err(o.invalid(
            "broker.connect_timeout",
            "out of range; allowed: \"1s\" to \"300s\"",
        ));
    }
    let max_packet_size = b.max_packet_size.unwrap_or(MAX_PACKET_DEFAULT);
    if !(1024..=256 * 1024 * 1024).contains(&max_packet_size) {
        return Err(o.invalid(
            "broker.max_packet_size",
            format!("{max_packet_size} is out of range; allowed: 1024 to 268435456 (bytes)"),
        ));
    }
    Ok(Broker {
        host,
        port,
        endpoints,
        order,
        profile: super::Profile::Mqtt,
        cli_port,
        client_id,
        credentials: credentials(raw, o)?,
        keep_alive,
        clean_session: b.clean_session.unwrap_or(true),
        connect_timeout,
        max_packet_size: max_packet_size as usize,
        tls,
    })
}

/// `host`/`port`, or `hosts` (each `host` or `host:port`, `port` the
/// default), never both. Returns them with the key to name in words.
fn endpoints(
    b: &super::raw::RawBroker,
    port: u16,
    o: &Origins<'_>,
) -> Result<(Vec<Endpoint>, &'static str), ConfigError> {
    let Some(hosts) = &b.hosts else {
        let host = b.host.clone().unwrap_or_else(|| "localhost".into());
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(o.invalid(
                "broker.host",
                format!("{host:?} is not a host name or address"),
            ));
        }
        return Ok((vec![Endpoint { host, port }], "broker.host"));
    };
    if b.host.is_some() {
        return Err(o.invalid(
            "broker.hosts",
            "set broker.host (one broker) or broker.hosts (several), not both",
        ));
    }
    if hosts.is_empty() || hosts.len() > endpoints::MAX_ENDPOINTS {
        return Err(o.invalid(
            "broker.hosts",
            format!(
                "lists {} brokers; allowed: 1 to {}",
                hosts.len(),
                endpoints::MAX_ENDPOINTS
            ),
        ));
    }
    let mut parsed: Vec<Endpoint> = Vec::with_capacity(hosts.len());
    for text in hosts {
        let endpoint = endpoints::parse(text, port).map_err(|e| o.invalid("broker.hosts", e))?;
        if parsed.contains(&endpoint) {
            return Err(o.invalid(
                "broker.hosts",
                format!("names {endpoint} twice; list each broker once"),
            ));
        }
        parsed.push(endpoint);
    }
    Ok((parsed, "broker.hosts"))
}

fn credentials(raw: &RawConfig, o: &Origins<'_>) -> Result<Option<Credentials>, ConfigError> {
    let b = &raw.broker;
    let password = match (&b.password, &b.password_file) {
        (Some(_), Some(_)) => {
            return Err(o.invalid(
                "broker.password_file",
                "both password and password_file are set; keep one",
            ));
        }
        (Some(p), None) => Some(Secret::new(p.clone())),
        (None, Some(file)) => {
            let path = o.resolve("broker.password_file", file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                o.invalid(
                    "broker.password_file",
                    format!("cannot read {}: {}", path.display(), io_words(&e)),
                )
            })?;
            // Files written by `echo` end in a newline that is not part of it.
            Some(Secret::new(text.trim_end_matches(['\r', '\n'])))
        }
        (None, None) => None,
    };
    match (&b.username, password) {
        (Some(username), password) => Ok(Some(Credentials {
            username: username.clone(),
            password,
            password_file: b
                .password_file
                .as_ref()
                .map(|f| o.resolve("broker.password_file", f)),
            password_inline: b.password.is_some() && !o.flags.contains_key("broker.password"),
        })),
        (None, Some(_)) => Err(o.invalid(
            "broker.username",
            "a password is set but no username; MQTT 3.1.1 sends a password only with a \
             username (-u/--username)",
        )),
        (None, None) => Ok(None),
    }
}

/// `--insecure` trusts any certificate the trusted CAs issued, whatever
/// host it names. With one's own CA that is every certificate of one's own
/// fleet; with the system's public CAs it would be every certificate on the
/// Internet, so it is allowed only with a CA named explicitly.
fn check_insecure(tls: Option<&Tls>) -> Result<(), ConfigError> {
    let problem = match tls {
        None => "is not set, and this connection does not use TLS at all: --insecure relaxes a \
                 TLS check and means nothing here; leave it out"
            .to_string(),
        Some(t) if t.ca_file.is_none() => "is not set: --insecure skips the check that the \
                 broker's certificate names the host you connect to, and with this system's \
                 public CAs any certificate any public CA ever issued, to anyone, would then be \
                 accepted as the broker's. Name the broker's own CA with --cafile (or \
                 broker.tls.ca_file), or leave out --insecure"
            .to_string(),
        Some(_) => return Ok(()),
    };
    Err(ConfigError::Invalid {
        place: Place::Flag("--insecure"),
        key: "broker.tls.ca_file".into(),
        problem,
    })
}

fn tls(t: &RawTls, ov: &Overrides, o: &Origins<'_>) -> Result<Tls, ConfigError> {
    let file = |key: &str, value: &Option<PathBuf>| -> Result<Option<SourcedPath>, ConfigError> {
        let Some(given) = value else { return Ok(None) };
        let path = o.resolve(key, given);
        if let Err(e) = std::fs::File::open(&path) {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound if o.file.is_some() && !o.flags.contains_key(key) => {
                    "; relative paths are read from the config file's folder"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "; give the user that runs pinpost read access (group pinpost, mode 0640)"
                }
                _ => "",
            };
            return Err(o.invalid(
                key,
                format!("cannot open {}: {}{hint}", path.display(), io_words(&e)),
            ));
        }
        Ok(Some(SourcedPath {
            path,
            origin: o.origin_words(key),
        }))
    };
    let cert_file = file("broker.tls.cert_file", &t.cert_file)?;
    let key_file = file("broker.tls.key_file", &t.key_file)?;
    match (&cert_file, &key_file) {
        (Some(_), None) => {
            return Err(o.invalid(
                "broker.tls.key_file",
                "cert_file is set but key_file is not; a client certificate needs its key",
            ));
        }
        (None, Some(_)) => {
            return Err(o.invalid(
                "broker.tls.cert_file",
                "key_file is set but cert_file is not; a client key needs its certificate",
            ));
        }
        _ => {}
    }
    let min_version = match t.min_version.as_deref() {
        None | Some("1.2") => TlsVersion::V1_2,
        Some("1.3") => TlsVersion::V1_3,
        Some(other) => {
            return Err(o.invalid(
                "broker.tls.min_version",
                format!(
                    "{other:?} is not a TLS version pinpost speaks; allowed: \"1.2\" or \"1.3\""
                ),
            ));
        }
    };
    if let Some(name) = &t.server_name {
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(o.invalid(
                "broker.tls.server_name",
                format!("{name:?} is not a host name"),
            ));
        }
    }
    let alpn = t.alpn.clone().unwrap_or_default();
    if let Some(bad) = alpn
        .iter()
        .find(|p| p.is_empty() || p.len() > 255 || !p.is_ascii())
    {
        return Err(o.invalid(
            "broker.tls.alpn",
            format!("{bad:?} is not an ALPN protocol name (1 to 255 ASCII characters)"),
        ));
    }
    Ok(Tls {
        ca_file: file("broker.tls.ca_file", &t.ca_file)?,
        alpn,
        cert_file,
        key_file,
        server_name: t.server_name.clone(),
        min_version,
        legacy_common_name: t.legacy_common_name.unwrap_or(false),
        skip_name_check: ov.skip_name_check,
    })
}

fn reconnect(raw: &RawConfig, o: &Origins<'_>) -> Result<Reconnect, ConfigError> {
    let r = &raw.reconnect;
    let initial = duration(&r.initial, "reconnect.initial", o)?.unwrap_or(Duration::from_secs(1));
    let max = duration(&r.max, "reconnect.max", o)?.unwrap_or(Duration::from_secs(60));
    if initial < Duration::from_millis(10) || initial > Duration::from_secs(3600) {
        return Err(o.invalid(
            "reconnect.initial",
            "out of range; allowed: \"10ms\" to \"1h\"",
        ));
    }
    if max < initial || max > Duration::from_secs(86400) {
        return Err(o.invalid(
            "reconnect.max",
            "must be at least reconnect.initial and at most \"24h\"",
        ));
    }
    let multiplier = r.multiplier.unwrap_or(2.0);
    if !(1.0..=10.0).contains(&multiplier) {
        return Err(o.invalid(
            "reconnect.multiplier",
            format!("{multiplier} is out of range; allowed: 1.0 to 10.0"),
        ));
    }
    let jitter = r.jitter.unwrap_or(0.5);
    // Up to 0.9, so no draw can make a delay zero and the loop tight.
    if !(0.0..=0.9).contains(&jitter) {
        return Err(o.invalid(
            "reconnect.jitter",
            format!("{jitter} is out of range; allowed: 0.0 (none) to 0.9 (up to 90% shorter)"),
        ));
    }
    Ok(Reconnect {
        initial,
        max,
        multiplier,
        jitter,
    })
}

pub(super) fn duration(
    value: &Option<String>,
    key: &str,
    o: &Origins<'_>,
) -> Result<Option<Duration>, ConfigError> {
    let Some(text) = value else { return Ok(None) };
    humantime::parse_duration(text.trim())
        .map(Some)
        .map_err(|_| {
            o.invalid(
                key,
                format!("{text:?} is not a duration; write it like \"500ms\", \"30s\" or \"2m\""),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        build(
            text,
            Some(Path::new("/etc/pinpost/config.toml")),
            &Overrides::default(),
        )
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_empty_file_gives_working_defaults() {
        let c = parse("[device]\nid = \"pi-01\"\n").unwrap();
        assert_eq!(c.device.topic_prefix, "pinpost");
        assert_eq!(c.broker.host, "localhost");
        assert_eq!(c.broker.port, 1883);
        assert_eq!(c.broker.keep_alive, Duration::from_secs(60));
        assert_eq!(c.reconnect.initial, Duration::from_secs(1));
    }

    #[test]
    fn tls_changes_the_default_port() {
        let c = parse("[device]\nid = \"a\"\n[broker.tls]\n").unwrap();
        assert_eq!(c.broker.port, 8883);
    }

    #[test]
    fn an_unknown_key_names_file_line_and_allowed_keys() {
        let e = error("[device]\nid = \"a\"\n\n[broker]\nhots = \"x\"\n");
        assert!(e.contains("/etc/pinpost/config.toml line 5"), "{e}");
        assert!(e.contains("unknown field `hots`"), "{e}");
        assert!(e.contains("`host`"), "{e}");
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let e = error("[broker]\nport = \"8883\"\n");
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("broker.port"), "{e}");
    }

    #[test]
    fn an_out_of_range_port_says_what_is_allowed() {
        let e = error("[device]\nid = \"a\"\n[broker]\nport = 70000\n");
        assert_eq!(
            e,
            "/etc/pinpost/config.toml line 4: broker.port: 70000 is not a port; allowed: 1 to 65535"
        );
    }

    #[test]
    fn wildcards_and_slashes_in_ids_are_refused() {
        for bad in ["pi+1", "pi#", "site/pi", "pi 1", ""] {
            let e = error(&format!("[device]\nid = {bad:?}\n"));
            assert!(e.contains("line 2: device.id"), "{bad}: {e}");
        }
        let e = error("[device]\nid = \"a\"\ntopic_prefix = \"home/pi\"\n");
        assert!(e.contains("line 3: device.topic_prefix"), "{e}");
        assert!(e.contains("contains '/'"), "{e}");
    }

    #[test]
    fn a_bad_duration_shows_how_to_write_one() {
        let e = error("[device]\nid = \"a\"\n[reconnect]\ninitial = \"soon\"\n");
        assert!(e.contains("line 4: reconnect.initial"), "{e}");
        assert!(e.contains("\"500ms\""), "{e}");
    }

    #[test]
    fn a_missing_certificate_file_names_key_line_and_path() {
        let e = error("[device]\nid = \"a\"\n[broker.tls]\nca_file = \"certs/ca.crt\"\n");
        assert!(e.contains("line 4: broker.tls.ca_file"), "{e}");
        assert!(e.contains("/etc/pinpost/certs/ca.crt: no such file"), "{e}");
    }

    #[test]
    fn plain_mqtt_leaves_loopback_only_when_allowed() {
        let e = error("[device]\nid = \"a\"\n[broker]\nhost = \"192.168.1.5\"\n");
        assert!(e.contains("line 4: broker.host"), "{e}");
        assert!(e.contains("allow_insecure"), "{e}");
        let ok = parse(
            "[device]\nid = \"a\"\n[broker]\nhost = \"192.168.1.5\"\nallow_insecure = true\n",
        );
        assert!(ok.is_ok());
        assert!(parse("[device]\nid = \"a\"\n[broker]\nhost = \"127.0.0.2\"\n").is_ok());
    }

    #[test]
    fn insecure_needs_a_ca_named_explicitly() {
        let insecure = Overrides {
            skip_name_check: true,
            ..Overrides::default()
        };
        let build_with = |text: &str| build(text, None, &insecure);
        let e = build_with("[device]\nid = \"a\"\n[broker.tls]\n").unwrap_err();
        let e = e.to_string();
        assert!(
            e.starts_with("flag --insecure: broker.tls.ca_file: is not set"),
            "{e}"
        );
        assert!(e.contains("public CAs"), "{e}");
        let e = build_with("[device]\nid = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not use TLS at all"), "{e}");
        let ca = tempfile::NamedTempFile::new().unwrap();
        let named = format!(
            "[device]\nid = \"a\"\n[broker.tls]\nca_file = {:?}\n",
            ca.path()
        );
        let tls = build_with(&named).unwrap().broker.tls.unwrap();
        assert!(tls.skip_name_check);
    }

    #[test]
    fn a_flag_error_names_the_flag() {
        let overrides = Overrides {
            tls_version: Some("tlsv1.1".into()),
            ..Overrides::default()
        };
        let e = build("[device]\nid = \"a\"\n", None, &overrides)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("flag --tls-version: broker.tls.min_version"),
            "{e}"
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let overrides = Overrides {
            hosts: vec!["127.0.0.9".into()],
            port: Some(1999),
            ..Overrides::default()
        };
        let c = build(
            "[device]\nid = \"a\"\n[broker]\nhost = \"x\"\n",
            None,
            &overrides,
        )
        .unwrap();
        assert_eq!((c.broker.host.as_str(), c.broker.port), ("127.0.0.9", 1999));
    }

    #[test]
    fn a_password_needs_a_username() {
        let e = error("[device]\nid = \"a\"\n[broker]\npassword = \"x\"\n");
        assert!(e.contains("broker.username"), "{e}");
    }

    #[test]
    fn passwords_never_show_in_debug_output() {
        let c = parse("[device]\nid = \"a\"\n[broker]\nusername = \"u\"\npassword = \"hunter2\"\n")
            .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}

#[cfg(test)]
mod example {
    use super::*;

    /// deploy/config.example.toml is what people copy: it must stay valid.
    #[test]
    fn the_example_config_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        for f in ["ca.crt", "pi-01.crt", "pi-01.key"] {
            std::fs::write(dir.path().join("certs").join(f), "").unwrap();
        }
        let text = include_str!("../../deploy/config.example.toml")
            .replace("/etc/pinpost/", &format!("{}/", dir.path().display()));
        let c = build(
            &text,
            Some(&dir.path().join("config.toml")),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.device.id, "pi-01");
        assert_eq!(c.broker.port, 8883);
        assert!(c.broker.tls.is_some());
    }
}
