//! Command-line flags that win over the file's keys (`-h`, `--cafile`,
//! `--board`, …): written into the raw config before it is checked, so a
//! bad flag is reported the same way as a bad key, naming the flag.
//!
//! It knows which flag sets which key; it must not check any value (the
//! sections do, once, for the file and the flags alike).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawConfig, RawTls};

/// Values given on the command line; each wins over the file's.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `-h`, given once or more (several brokers, tried in turn).
    pub hosts: Vec<String>,
    /// `-p`: `broker.port` (and no `cli_port`).
    pub port: Option<u16>,
    /// `-i`: `broker.client_id`.
    pub client_id: Option<String>,
    /// `-u`: `broker.username`.
    pub username: Option<String>,
    /// `-P`: `broker.password` (and no `password_file`).
    pub password: Option<String>,
    /// `--cafile`: `broker.tls.ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `--cert`: `broker.tls.cert_file`.
    pub cert_file: Option<PathBuf>,
    /// `--key`: `broker.tls.key_file`.
    pub key_file: Option<PathBuf>,
    /// `--tls-version`: `broker.tls.min_version` (`tlsv1.2` or `1.2`).
    pub tls_version: Option<String>,
    /// Use TLS even when no TLS file is named (system CAs).
    pub tls: bool,
    /// `--insecure`: skip the check that the broker's certificate names its host.
    pub skip_name_check: bool,
    /// `--legacy-common-name`: `broker.tls.legacy_common_name`.
    pub legacy_common_name: bool,
    /// `--allow-insecure`: `broker.allow_insecure`.
    pub allow_insecure: bool,
    /// `-k`/`--keepalive`: `broker.keep_alive`, parsed by the command line
    /// and range-checked with the file's value.
    pub keep_alive: Option<Duration>,
    /// `--connect-timeout`: `broker.connect_timeout`, a duration.
    pub connect_timeout: Option<String>,
    /// `--board`: `board.kind`.
    pub board: Option<String>,
    /// The config is checked on another machine than its device
    /// (`release sign-config` on the operator's laptop): the files it names
    /// for the broker (TLS certificates and key, the password file) are the
    /// device's, so they are not opened here. The device opens them when
    /// it checks the config again, before it is applied.
    pub elsewhere: bool,
}

/// Writes the flags into the raw config and returns which keys they set.
pub(super) fn apply(raw: &mut RawConfig, o: &Overrides) -> HashMap<&'static str, &'static str> {
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
