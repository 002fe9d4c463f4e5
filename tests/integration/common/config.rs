//! How a test tells pinpost where things are: the head every test config
//! starts with, a config with only the device id, and the connection flags
//! shared by pinpost and the mosquitto tools. Knows the config file's
//! tables, not what pinpost does with them.

use std::fmt;
use std::path::{Path, PathBuf};

use super::pki::Files;

/// The `[device]`, `[broker]` and `[broker.tls]` tables a test config starts
/// with, ending in a blank line so the test's own tables follow. By default
/// device pi-01 at 127.0.0.1:`port`, with `ca.crt`, `pi-01.crt` and
/// `pi-01.key` read from the config's own folder; the methods change one
/// thing each. Written with `{}` (it is [`fmt::Display`]).
#[derive(Debug, Clone)]
pub struct ConfigHead {
    id: String,
    /// `host` and `port`, or `hosts` when `hosts` is set.
    host: String,
    port: Option<u16>,
    hosts: Option<Vec<String>>,
    broker: Vec<String>,
    /// `None`: no `[broker.tls]` table at all.
    tls: Option<Tls>,
    /// `clock.mark`; `None`: `clock.trust = "system"`, since this machine
    /// has no time source pinpost would believe.
    clock_mark: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct Tls {
    ca: String,
    /// `cert_file` and `key_file`; `None` for a broker that asks for none.
    client: Option<(String, String)>,
    more: Vec<String>,
}

impl ConfigHead {
    /// Device pi-01 at 127.0.0.1:`port`, its files beside the config.
    pub fn new(port: u16) -> ConfigHead {
        ConfigHead {
            id: "pi-01".into(),
            host: "127.0.0.1".into(),
            port: Some(port),
            hosts: None,
            broker: Vec::new(),
            tls: Some(Tls {
                ca: "ca.crt".into(),
                client: Some(("pi-01.crt".into(), "pi-01.key".into())),
                more: Vec::new(),
            }),
            clock_mark: None,
        }
    }

    /// The clock is trusted only once `mark` exists, as on a Pi where
    /// systemd-timesyncd makes its mark.
    pub fn clock_mark(mut self, mark: &Path) -> ConfigHead {
        self.clock_mark = Some(mark.to_path_buf());
        self
    }

    /// Another device id (the certificate file names stay as they are).
    pub fn id(mut self, id: &str) -> ConfigHead {
        self.id = id.into();
        self
    }

    /// Another broker host.
    pub fn host(mut self, host: &str) -> ConfigHead {
        self.host = host.into();
        self
    }

    /// No `port` line: pinpost's default port.
    pub fn no_port(mut self) -> ConfigHead {
        self.port = None;
        self
    }

    /// As [`ConfigHead::new`], with `hosts = [...]` (each `host:port`, tried
    /// in turn) instead of `host` and `port`.
    pub fn with_hosts(hosts: &[String]) -> ConfigHead {
        ConfigHead {
            hosts: Some(hosts.to_vec()),
            port: None,
            ..ConfigHead::new(0)
        }
    }

    /// A line (or several) at the end of `[broker]`.
    pub fn broker(mut self, lines: &str) -> ConfigHead {
        self.broker.push(lines.into());
        self
    }

    /// `ca_file`, as written (relative paths are read from the config's
    /// folder).
    pub fn ca(mut self, ca: impl AsRef<Path>) -> ConfigHead {
        self.tls_mut().ca = ca.as_ref().display().to_string();
        self
    }

    /// `cert_file` and `key_file` from `files`.
    pub fn client(self, files: &Files) -> ConfigHead {
        self.client_files(&files.cert, &files.key)
    }

    /// `cert_file` and `key_file`, as written.
    pub fn client_files(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> ConfigHead {
        self.tls_mut().client = Some((
            cert.as_ref().display().to_string(),
            key.as_ref().display().to_string(),
        ));
        self
    }

    /// No `cert_file` or `key_file`: server-side TLS only.
    pub fn no_client(mut self) -> ConfigHead {
        self.tls_mut().client = None;
        self
    }

    /// A line (or several) at the end of `[broker.tls]`.
    pub fn tls(mut self, lines: &str) -> ConfigHead {
        self.tls_mut().more.push(lines.into());
        self
    }

    /// No `[broker.tls]` table: plain MQTT.
    pub fn no_tls(mut self) -> ConfigHead {
        self.tls = None;
        self
    }

    fn tls_mut(&mut self) -> &mut Tls {
        self.tls
            .as_mut()
            .expect("a ConfigHead without TLS has no TLS files")
    }
}

impl fmt::Display for ConfigHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[device]\nid = \"{}\"\n", self.id)?;
        match &self.clock_mark {
            Some(mark) => writeln!(f, "[clock]\nmark = {:?}\n", mark.display().to_string())?,
            None => writeln!(f, "[clock]\ntrust = \"system\"\n")?,
        }
        writeln!(f, "[broker]")?;
        match &self.hosts {
            Some(hosts) => {
                let list: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
                writeln!(f, "hosts = [{}]", list.join(", "))?;
            }
            None => {
                writeln!(f, "host = \"{}\"", self.host)?;
                if let Some(port) = self.port {
                    writeln!(f, "port = {port}")?;
                }
            }
        }
        for line in &self.broker {
            writeln!(f, "{line}")?;
        }
        if let Some(tls) = &self.tls {
            writeln!(f, "\n[broker.tls]\nca_file = \"{}\"", tls.ca)?;
            if let Some((cert, key)) = &tls.client {
                writeln!(f, "cert_file = \"{cert}\"\nkey_file = \"{key}\"")?;
            }
            for line in &tls.more {
                writeln!(f, "{line}")?;
            }
        }
        writeln!(f)
    }
}

/// Connection flags for mosquitto tools and pinpost alike.
pub fn tls_args(ca: &Path, client: Option<&Files>) -> Vec<String> {
    let mut args = vec!["--cafile".to_string(), ca.display().to_string()];
    if let Some(c) = client {
        args.extend([
            "--cert".to_string(),
            c.cert.display().to_string(),
            "--key".to_string(),
            c.key.display().to_string(),
        ]);
    }
    args
}

/// A config file with only the device id, so tests never read the
/// machine's own /etc/pinpost/config.toml.
pub fn device_config(dir: &Path) -> PathBuf {
    let path = dir.join("pinpost.toml");
    std::fs::write(&path, "[device]\nid = \"test-pi\"\n").expect("write config");
    path
}

/// Connection flags for the operator of the laptop folder `certs` (made by
/// `pinpost certs`) on 127.0.0.1:`port`: its pair, and the CA bundle during
/// a rotation, else ca.crt.
pub fn operator_flags(certs: &Path, port: u16) -> Vec<String> {
    let mut args: Vec<String> = ["-h", "127.0.0.1", "-p", &port.to_string()]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let bundle = certs.join("ca-bundle.crt");
    args.extend(tls_args(
        &if bundle.exists() {
            bundle
        } else {
            certs.join("ca.crt")
        },
        Some(&Files {
            cert: certs.join("devices/operator/operator.crt"),
            key: certs.join("devices/operator/operator.key"),
        }),
    ));
    args
}
