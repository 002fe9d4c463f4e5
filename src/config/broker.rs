//! `[broker]` and `[broker.tls]`: where the broker is, how pinpost logs in,
//! and what TLS checks. Plain MQTT is refused off this machine unless the
//! config says the network is trusted.
//!
//! It checks what a person wrote; it must not open a connection or load a
//! certificate (the link and `tls` do, and `preflight` reads the files).

use std::path::PathBuf;
use std::time::Duration;

use super::endpoints::{self, Endpoint, is_loopback};
use super::error::{ConfigError, Place};
use super::model::{Broker, Credentials, Profile, Secret, SourcedPath, Tls};
use super::origins::Origins;
use super::overrides::Overrides;
use super::raw::{RawBroker, RawConfig, RawTls};
use super::values::{duration, word};
use crate::words::io_words;

const KEEP_ALIVE_DEFAULT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// rumqttc's own default (10 KiB) tears the link down on a modest file;
/// Mosquitto accepts far more, so allow what a field check might send.
const MAX_PACKET_DEFAULT: i64 = 256 * 1024;

/// The broker section, with the flags that change how it is checked
/// (`-p` over `cli_port`, `--insecure`). Its `profile` is left `Mqtt`: the
/// caller sets it once the profile's own rules have passed.
pub(super) fn build(
    raw: &RawConfig,
    ov: &Overrides,
    o: &Origins<'_>,
) -> Result<Broker, ConfigError> {
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
    let order = word(b.order.as_deref(), "broker.order", o)?.unwrap_or_default();
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
        profile: Profile::Mqtt,
        cli_port,
        client_id,
        credentials: credentials(raw, ov, o)?,
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
    b: &RawBroker,
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

fn credentials(
    raw: &RawConfig,
    ov: &Overrides,
    o: &Origins<'_>,
) -> Result<Option<Credentials>, ConfigError> {
    let b = &raw.broker;
    let password = match (&b.password, &b.password_file) {
        (Some(_), Some(_)) => {
            return Err(o.invalid(
                "broker.password_file",
                "both password and password_file are set; keep one",
            ));
        }
        (Some(p), None) => Some(Secret::new(p.clone())),
        // The device's file, read by the device (Overrides::elsewhere).
        (None, Some(_)) if ov.elsewhere => None,
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
            password_inline: b.password.is_some() && !o.set_by_flag("broker.password"),
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
        // The device's files, opened by the device (Overrides::elsewhere).
        let opened = if ov.elsewhere {
            Ok(())
        } else {
            std::fs::File::open(&path).map(drop)
        };
        if let Err(e) = opened {
            // A device that enrolled waits for its certificate: say so.
            let request = path.with_extension("csr");
            let waiting = format!(
                "; this device has enrolled ({} is there): the certificate comes once \
                 `pinpost certs sign {}` has run where the CA is, and ca.crt and the \
                 certificate are copied here",
                request.display(),
                request
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            );
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound
                    if key == "broker.tls.cert_file" && request.exists() =>
                {
                    waiting.as_str()
                }
                std::io::ErrorKind::NotFound if o.has_file() && !o.set_by_flag(key) => {
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
    let min_version =
        word(t.min_version.as_deref(), "broker.tls.min_version", o)?.unwrap_or_default();
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
    let renew_before = duration(&t.renew_before, "broker.tls.renew_before", o)?
        .unwrap_or(crate::config::model::RENEW_BEFORE);
    if renew_before.is_zero() {
        return Err(o.invalid(
            "broker.tls.renew_before",
            "0 would ask for a new certificate only once the current one has ended; write \
             e.g. \"30d\"",
        ));
    }
    Ok(Tls {
        renew_before,
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
