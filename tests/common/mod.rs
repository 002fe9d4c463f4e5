//! Test harness: certificates made for each test, a real Mosquitto on a free
//! loopback port, an independent `mosquitto_sub` as the witness of delivery,
//! and the `pinpost` binary run as a user would run it.
//!
//! Nothing here skips: a missing `mosquitto` is a failure that says how to
//! get it (the test script installs it).

#![allow(dead_code)]

pub mod front;
pub mod subscriber;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

pub const PINPOST: &str = env!("CARGO_BIN_EXE_pinpost");

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA that issues certificates into a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Files,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

/// How a leaf certificate should differ from a good one.
#[derive(Debug, Clone, Default)]
pub struct Leaf {
    pub common_name: String,
    /// "127.0.0.1" becomes an IP SAN, anything else a DNS SAN.
    pub alt_names: Vec<String>,
    pub expired: bool,
    pub not_yet_valid: bool,
}

impl Leaf {
    pub fn server(names: &[&str]) -> Leaf {
        Leaf {
            common_name: names.first().map_or("broker", |n| n).to_string(),
            alt_names: names.iter().map(|n| n.to_string()).collect(),
            ..Leaf::default()
        }
    }
    pub fn client(cn: &str) -> Leaf {
        Leaf {
            common_name: cn.to_string(),
            ..Leaf::default()
        }
    }
}

impl Pki {
    pub fn new(ca_name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&format!("pinpost test CA {ca_name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = params.self_signed(&ca_key).expect("CA certificate");
        let ca = write(dir.path(), "ca", &ca_cert.pem(), &ca_key.serialize_pem());
        Pki {
            dir,
            ca,
            ca_cert,
            ca_key,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Issues a server (with alt names) or client certificate named `file`.
    pub fn issue(&self, file: &str, leaf: &Leaf, server: bool) -> Files {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&leaf.common_name);
        params.subject_alt_names = leaf
            .alt_names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.clone().try_into().expect("DNS name")),
            })
            .collect();
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        if leaf.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        if leaf.not_yet_valid {
            params.not_before = rcgen::date_time_ymd(2099, 1, 1);
            params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .expect("leaf certificate");
        write(self.path(), file, &cert.pem(), &key.serialize_pem())
    }

    pub fn server(&self, names: &[&str]) -> Files {
        self.issue("server", &Leaf::server(names), true)
    }

    pub fn client(&self, cn: &str) -> Files {
        self.issue(cn, &Leaf::client(cn), false)
    }
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn write(dir: &Path, stem: &str, cert: &str, key: &str) -> Files {
    let files = Files {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    std::fs::write(&files.cert, cert).expect("write cert");
    std::fs::write(&files.key, key).expect("write key");
    // As a careful user keeps them (pinpost check fails world-readable keys).
    std::fs::set_permissions(
        &files.key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod key");
    files
}

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
    command: Vec<(String, String)>,
    netns: Option<String>,
}

impl Broker {
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
            command: env,
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
            match spawn_mosquitto(&conf, &self.log, &self.command, self.netns.as_deref()) {
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

    fn wait_listening(&mut self) -> Result<(), String> {
        let port = self.port;
        let broker = self;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!("exited with {status}: {}", broker.log()));
            }
            let listening = match &broker.netns {
                None => TcpStream::connect((broker.host.as_str(), port)).is_ok(),
                Some(ns) => Command::new("ip")
                    .args(["netns", "exec", ns, "bash", "-c"])
                    .arg(format!("echo > /dev/tcp/{}/{port}", broker.host))
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
            };
            if listening {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("not listening after 10s: {}", broker.log()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

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

pub fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` is not installed: run the test script (scripts/test.sh), which installs it, \
         or `apt-get install {package}`"
    );
}

/// A `mosquitto_sub` that witnesses what the broker delivers.
pub struct Witness {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Witness {
    /// Subscribes to `topic` with `args` (connection flags) and returns once
    /// the broker has acknowledged the subscription.
    pub fn start(broker: &Broker, topic: &str, args: &[String]) -> Witness {
        require_tool("mosquitto_sub", "mosquitto-clients");
        // mosquitto_sub buffers stdout when it is a pipe; stdbuf makes it
        // line-buffered so each message is seen when it arrives.
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-d",
                "-v",
                "-q",
                "1",
                "-h",
                &broker.host,
                "-p",
                &broker.port.to_string(),
            ])
            .args(["-t", topic])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mosquitto_sub");
        let lines = lines_of(child.stdout.take().expect("stdout"));
        let mut witness = Witness { child, lines };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match witness.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("received SUBACK") => return witness,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = witness.child.kill();
        let mut err = String::new();
        if let Some(mut pipe) = witness.child.stderr.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut err);
        }
        panic!(
            "mosquitto_sub never subscribed: {err}\nbroker log:\n{}",
            broker.log()
        );
    }

    /// Messages (`topic payload`) received within `wait`, debug lines left out.
    pub fn messages(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if is_debug(&line) => {}
                Ok(line) => out.push(line),
                Err(_) => break,
            }
        }
        out
    }

    /// Waits until a line satisfies `done` and returns every message line
    /// seen up to it; panics naming `what` if none does within `wait`.
    pub fn wait_until(
        &self,
        what: &str,
        wait: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if is_debug(&line) => {}
                Ok(line) => {
                    let found = done(&line);
                    out.push(line);
                    if found {
                        return out;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "the subscriber never saw {what}; it saw:\n{}",
            out.join("\n")
        );
    }

    /// Waits until `expected` arrives (or `wait` passes) and returns all seen.
    pub fn wait_for(&self, expected: &str, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if is_debug(&line) => {}
                Ok(line) => {
                    let done = line == expected;
                    out.push(line);
                    if done {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        out
    }
}

/// Lines from a child's pipe, read on a thread as they arrive.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

fn is_debug(line: &str) -> bool {
    line.starts_with("Client ") || line.starts_with("Subscribed (mid")
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// Runs pinpost with `args`, killed after `limit`.
pub fn pinpost(args: &[String], limit: Duration) -> Output {
    pinpost_with_stdin(args, None, limit)
}

pub fn pinpost_with_stdin(args: &[String], stdin: Option<&str>, limit: Duration) -> Output {
    let mut cmd = Command::new(PINPOST);
    cmd.args(args)
        .env_remove("PINPOST_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run_limited(cmd, stdin, limit)
}

pub fn run_limited(mut cmd: Command, stdin: Option<&str>, limit: Duration) -> Output {
    let mut child = cmd.spawn().expect("start process");
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} did not finish within {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// pinpost running in the background, its stderr read line by line.
pub struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    _state: tempfile::TempDir,
}

impl Background {
    pub fn start(args: &[String]) -> Background {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[String], env: &[(&str, String)]) -> Background {
        let mut cmd = Command::new(PINPOST);
        cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
        Self::spawn(cmd)
    }

    /// Starts `cmd` (a pinpost, however it is launched) in the background.
    pub fn spawn(mut cmd: Command) -> Background {
        // Each agent gets its own outbox spool, never the machine's
        // /var/lib/pinpost (tests run as root), unless the test chose one.
        let state = tempfile::tempdir().expect("state dir");
        if !cmd.get_envs().any(|(k, _)| k == "STATE_DIRECTORY") {
            cmd.env("STATE_DIRECTORY", state.path());
        }
        let mut child = cmd
            .env_remove("PINPOST_CONFIG")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pinpost");
        let lines = lines_of(child.stderr.take().expect("stderr"));
        Background {
            child,
            lines,
            seen: Vec::new(),
            _state: state,
        }
    }

    /// Waits for a stderr line containing `needle`; panics with all seen.
    pub fn wait_for(&mut self, needle: &str, wait: Duration) {
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("never saw {needle:?} on stderr:\n{}", self.seen.join("\n"));
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stderr line so far, reading on until the process closes
    /// stderr or `wait` passes.
    pub fn log(&mut self, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => break,
            }
        }
        self.seen.join("\n")
    }

    /// Waits for the process to end by itself and returns its stdout.
    pub fn finish(mut self, wait: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + wait;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                panic!(
                    "pinpost did not finish within {wait:?}:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut out = Vec::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            std::io::Read::read_to_end(&mut stdout, &mut out).expect("read stdout");
        }
        (status, String::from_utf8_lossy(&out).into_owned())
    }
}

impl Drop for Background {
    /// A test that ends, passes or panics, takes its pinpost with it: none
    /// is left running to hold ports, spools or CPU for the tests after.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and explains the failure with pinpost's words and the broker's log.
pub fn assert_ok(out: &Output, broker: &Broker) {
    assert!(
        out.status.success(),
        "pinpost failed ({:?}): {}\nbroker log:\n{}",
        out.status,
        stderr(out),
        broker.log()
    );
}

/// A TCP forwarder in front of the broker that the test opens and closes:
/// while closed, connections are accepted and dropped at once, so an agent
/// can be kept away from a restarted broker until a witness is back.
pub struct Gate {
    pub port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Both ends of every connection let through, for [`Gate::cut`].
    through: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Gate {
    pub fn start(host: &str, target: u16) -> Gate {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind((host, 0)).expect("gate listens");
        let port = listener.local_addr().expect("gate address").port();
        let open = Arc::new(AtomicBool::new(true));
        let is_open = open.clone();
        let through = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = through.clone();
        let host = host.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !is_open.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect((host.as_str(), target)) else {
                    continue;
                };
                pipe(&client, &server);
                pipe(&server, &client);
                if let Ok(mut kept) = kept.lock() {
                    kept.extend([client, server]);
                }
            }
        });
        Gate {
            port,
            open,
            through,
        }
    }

    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn close(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes the gate and cuts every connection through it, as a cable
    /// pulled out would (the broker sees the socket close, not a
    /// DISCONNECT).
    pub fn cut(&self) {
        self.close();
        if let Ok(mut through) = self.through.lock() {
            for stream in through.drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// Copies `from` → `to` until either side closes, then closes both.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = from.shutdown(std::net::Shutdown::Both);
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

/// Two network namespaces joined by a veth pair, with addresses that exist
/// only inside them: traffic between them never touches this machine's own
/// interfaces. Removed on drop.
pub struct Netns {
    pub a: String,
    pub b: String,
    /// The b side's interface (in namespace b), to cut the cable.
    pub b_link: String,
    pub a_addr: String,
    pub b_addr: String,
}

impl Netns {
    pub fn pair(tag: &str) -> Netns {
        require_tool("ip", "iproute2");
        let id = std::process::id() % 100_000;
        let n = Netns {
            a: format!("pp-{tag}-a-{id}"),
            b: format!("pp-{tag}-b-{id}"),
            b_link: format!("ppb{id}"),
            a_addr: format!("10.213.{}.2", id % 250),
            b_addr: format!("10.213.{}.1", id % 250),
        };
        let a_link = format!("ppa{id}");
        ip(&["netns", "add", &n.a]);
        ip(&["netns", "add", &n.b]);
        ip(&[
            "link", "add", &a_link, "netns", &n.a, "type", "veth", "peer", "name", &n.b_link,
            "netns", &n.b,
        ]);
        for (ns, link, addr) in [(&n.a, &a_link, &n.a_addr), (&n.b, &n.b_link, &n.b_addr)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", link]);
            ip(&["-n", ns, "link", "set", link, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        n
    }

    /// Unplugs (`false`) or plugs back (`true`) the cable: packets are then
    /// silently lost, as on a dead Wi-Fi link; neither side is told.
    pub fn cable(&self, plugged: bool) {
        let state = if plugged { "up" } else { "down" };
        ip(&["-n", &self.b, "link", "set", &self.b_link, state]);
    }

    /// `cmd` run inside namespace `ns`.
    pub fn exec(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
