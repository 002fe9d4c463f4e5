//! A real Mosquitto for each test: on a free loopback port (or inside a
//! network namespace), configured from a [`BrokerSetup`], restarted or
//! stopped as the test needs, killed on drop. Knows how Mosquitto is
//! configured, not what pinpost does with it.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pki::{Files, Pki};
use super::process::require_tool;

/// How the broker listens.
#[derive(Debug, Clone, Default)]
pub struct BrokerSetup {
    pub bind: Option<String>,
    /// A second loopback address for the same port and settings, so that
    /// one broker answers under two names (127.0.0.2 and localhost).
    pub also_bind: Option<String>,
    /// `cafile`, `certfile`, `keyfile` for a TLS listener.
    pub tls: Option<(PathBuf, Files)>,
    pub require_certificate: bool,
    pub use_identity_as_username: bool,
    pub tls_version: Option<&'static str>,
    /// Refuse TLS 1.3, as a broker on an older OpenSSL does. Mosquitto's own
    /// `tls_version tlsv1.2` is only a minimum, so this goes through
    /// OpenSSL's configuration instead.
    pub tls_1_2_only: bool,
    /// username → password; turns anonymous access off.
    pub users: Vec<(String, String)>,
    pub allow_anonymous: bool,
    pub extra: Vec<String>,
    /// A listener written elsewhere (`pinpost certs mosquitto`), used as
    /// it is except that its `listener` line gets this broker's port and
    /// address; it replaces the settings above.
    pub listener_conf: Option<String>,
    /// Keep sessions and queued messages across a graceful restart (in the
    /// broker's temp dir), with no limit on what is queued for a client.
    pub persistence: bool,
    /// Run inside this network namespace (listening on `bind` there).
    pub netns: Option<String>,
}

/// A running Mosquitto; killed on drop.
pub struct Broker {
    pub port: u16,
    /// The ports of a `listener_conf`'s second and later listeners.
    pub more_ports: Vec<u16>,
    pub host: String,
    child: Child,
    pub dir: tempfile::TempDir,
    log: PathBuf,
    /// Environment variables Mosquitto runs with, kept for a restart.
    env: Vec<(String, String)>,
    netns: Option<String>,
}

impl Broker {
    /// Starts Mosquitto as `setup` says, trying again (a free port may be
    /// taken meanwhile) before failing with its log.
    pub fn start(setup: &BrokerSetup) -> Broker {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(setup) {
                Ok(b) => return b,
                Err(e) => last = e,
            }
        }
        panic!("mosquitto did not start: {last}");
    }

    fn try_start(setup: &BrokerSetup) -> Result<Broker, String> {
        require_tool("mosquitto", "mosquitto");
        let dir = tempfile::tempdir().expect("temp dir");
        let host = setup.bind.clone().unwrap_or_else(|| "127.0.0.1".into());
        // A namespace of the test's own has every port free.
        let port = if setup.netns.is_some() {
            8883
        } else {
            free_port(&host)
        };
        let mut conf = vec![
            // Run as root: dropping to the mosquitto user would lose read
            // access to the keys in this root-owned temp dir.
            "user root".to_string(),
            "log_dest stderr".into(),
            "log_type all".into(),
        ];
        if setup.persistence {
            conf.push("persistence true".into());
            conf.push(format!("persistence_location {}/", dir.path().display()));
            conf.push("max_queued_messages 0".into());
        } else {
            conf.push("persistence false".into());
        }
        // Listeners after the first in a `listener_conf` (pinpost's tools'
        // listener) get free ports of their own, in `more_ports`.
        let mut more_ports = Vec::new();
        if let Some(text) = &setup.listener_conf {
            for line in text.lines() {
                if line.starts_with("listener ") {
                    let this = if conf.iter().any(|l| l.starts_with("listener ")) {
                        let extra = free_port(&host);
                        more_ports.push(extra);
                        extra
                    } else {
                        port
                    };
                    conf.push(format!("listener {this} {host}"));
                } else {
                    conf.push(line.to_string());
                }
            }
        }
        let generated = setup.listener_conf.is_none();
        for address in std::iter::once(&host)
            .chain(&setup.also_bind)
            .filter(|_| generated)
        {
            conf.push(format!("listener {port} {address}"));
            if let Some((ca, server)) = &setup.tls {
                conf.push(format!("cafile {}", ca.display()));
                conf.push(format!("certfile {}", server.cert.display()));
                conf.push(format!("keyfile {}", server.key.display()));
            }
            if setup.require_certificate {
                conf.push("require_certificate true".into());
            }
            if setup.use_identity_as_username {
                conf.push("use_identity_as_username true".into());
            }
            if let Some(v) = setup.tls_version {
                conf.push(format!("tls_version {v}"));
            }
        }
        if !setup.users.is_empty() {
            let file = dir.path().join("passwords");
            std::fs::write(&file, "").expect("password file");
            for (user, pass) in &setup.users {
                let out = Command::new("mosquitto_passwd")
                    .args(["-b", &file.display().to_string(), user, pass])
                    .output()
                    .expect("mosquitto_passwd runs");
                assert!(out.status.success(), "mosquitto_passwd: {out:?}");
            }
            conf.push(format!("password_file {}", file.display()));
        }
        let anonymous =
            setup.allow_anonymous || (setup.users.is_empty() && !setup.use_identity_as_username);
        if generated {
            conf.push(format!("allow_anonymous {anonymous}"));
        }
        conf.extend(setup.extra.iter().cloned());
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf.join("\n") + "\n").expect("write conf");
        let log = dir.path().join("mosquitto.log");
        let mut env = Vec::new();
        if setup.tls_1_2_only {
            let openssl_conf = dir.path().join("openssl.cnf");
            std::fs::write(
                &openssl_conf,
                "openssl_conf = conf\n[conf]\nssl_conf = ssl\n[ssl]\nsystem_default = sys\n\
                 [sys]\nMaxProtocol = TLSv1.2\n",
            )
            .expect("write openssl.cnf");
            env.push((
                "OPENSSL_CONF".to_string(),
                openssl_conf.display().to_string(),
            ));
        }
        let child = spawn_mosquitto(&conf_path, &log, &env, setup.netns.as_deref())?;
        let mut broker = Broker {
            port,
            more_ports,
            host,
            child,
            dir,
            log,
            env,
            netns: setup.netns.clone(),
        };
        broker.wait_listening()?;
        Ok(broker)
    }

    /// A broker with mutual TLS: `server` as its certificate, and a client
    /// certificate from `pki`'s CA required of everyone.
    pub fn mutual(pki: &Pki, server: Files) -> Broker {
        Broker::start(&BrokerSetup {
            tls: Some((pki.ca.cert.clone(), server)),
            require_certificate: true,
            ..BrokerSetup::default()
        })
    }

    /// Stops the broker and starts it again on the same port, as an
    /// upgrade or a power cut would.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stops the broker as `systemctl stop` would (SIGTERM): with
    /// persistence on, it saves its sessions first.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
    }

    /// Deletes what persistence saved: the next start knows no session.
    pub fn forget_sessions(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("mosquitto.db"));
    }

    /// Starts a stopped broker again on the same port.
    pub fn start_again(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        for _ in 0..50 {
            match spawn_mosquitto(&conf, &self.log, &self.env, self.netns.as_deref()) {
                Ok(child) => {
                    self.child = child;
                    if self.wait_listening().is_ok() {
                        return;
                    }
                }
                Err(e) => panic!("{e}"),
            }
            // The old socket may linger for a moment.
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("mosquitto did not restart: {}", self.log());
    }

    /// Waits until every listener accepts connections: Mosquitto opens
    /// them one after another, and a test may use any of them first.
    fn wait_listening(&mut self) -> Result<(), String> {
        let ports: Vec<u16> = std::iter::once(self.port)
            .chain(self.more_ports.iter().copied())
            .collect();
        let broker = self;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!("exited with {status}: {}", broker.log()));
            }
            let listening = ports.iter().all(|port| match &broker.netns {
                None => TcpStream::connect((broker.host.as_str(), *port)).is_ok(),
                Some(ns) => Command::new("ip")
                    .args(["netns", "exec", ns, "bash", "-c"])
                    .arg(format!("echo > /dev/tcp/{}/{port}", broker.host))
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
            });
            if listening {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("not listening after 10s: {}", broker.log()))
    }

    /// Everything Mosquitto logged so far (every run, restarts included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the broker (SIGKILL), as a power cut would.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_mosquitto(
    conf: &Path,
    log: &Path,
    env: &[(String, String)],
    netns: Option<&str>,
) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("log file: {e}"))?;
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "mosquitto"]);
            c
        }
        None => Command::new("mosquitto"),
    };
    cmd.arg("-c")
        .arg(conf)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot run mosquitto: {e}"))
}

/// A port nobody listens on right now.
pub fn free_port(host: &str) -> u16 {
    let ip: Ipv4Addr = host.parse().unwrap_or(Ipv4Addr::LOCALHOST);
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}
