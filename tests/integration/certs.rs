//! `pinpost certs` end to end: the files it writes run a real Mosquitto with
//! mutual TLS and its ACL, a device made with it connects and publishes,
//! and the ACL keeps each device inside its own topics.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(15);

fn certs(dir: &Path, args: &[&str]) -> String {
    let mut all = strings(&["certs", "--dir", &dir.display().to_string()]);
    all.extend(strings(args));
    let out = pinpost(&all, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "pinpost certs {args:?}: {}",
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA, a broker certificate for 127.0.0.1, devices and Mosquitto's files,
/// all from `pinpost certs`, and a broker running on them.
struct Fleet {
    dir: tempfile::TempDir,
    broker: Broker,
}

impl Fleet {
    fn new(rsa: bool) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let certs_dir = dir.path().join("certs");
        let key_kind: &[&str] = if rsa { &["--rsa"] } else { &[] };
        let said = certs(&certs_dir, &[&["ca"], key_kind].concat());
        assert!(said.contains("keep it secret"), "{said}");
        let said = certs(
            &certs_dir,
            &[
                &["broker", "--host", "127.0.0.1", "--host", "localhost"],
                key_kind,
            ]
            .concat(),
        );
        assert!(said.contains("sudo install -m 0640 -g mosquitto"), "{said}");
        for device in ["pi-01", "pi-02", "operator"] {
            let said = certs(&certs_dir, &[&["device", device], key_kind].concat());
            assert!(
                said.contains(&format!(
                    "--certs {}",
                    certs_dir.join("devices").join(device).display()
                )),
                "{said}"
            );
        }
        let cert_dir = certs_dir.join("broker").display().to_string();
        let said = certs(
            &certs_dir,
            &["mosquitto", "--cert-dir", &cert_dir, "--homeassistant"],
        );
        assert!(
            said.contains("/etc/mosquitto/conf.d/pinpost.conf"),
            "{said}"
        );

        for (file, mode) in [
            ("private", 0o700),
            ("private/ca.key", 0o600),
            ("devices/pi-01/pi-01.key", 0o600),
            ("broker/broker.key", 0o600),
            ("ca.crt", 0o644),
        ] {
            let found = std::fs::metadata(certs_dir.join(file))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(found, mode, "{file}");
        }
        let conf = std::fs::read_to_string(certs_dir.join("broker/pinpost.conf"))
            .unwrap()
            .replace(
                "/etc/mosquitto/pinpost.acl",
                &certs_dir.join("broker/pinpost.acl").display().to_string(),
            );
        let broker = Broker::start(&BrokerSetup {
            listener_conf: Some(conf),
            ..BrokerSetup::default()
        });
        Fleet { dir, broker }
    }

    /// A file of device `id`'s folder.
    fn file(&self, id: &str, name: &str) -> PathBuf {
        self.dir.path().join("certs/devices").join(id).join(name)
    }

    /// The tools' listener (`broker.cli_port`).
    fn cli_port(&self) -> u16 {
        self.broker.more_ports[0]
    }

    /// Flags for `id`'s certificate on the agents' port.
    fn as_client(&self, id: &str) -> Vec<String> {
        self.on_port(id, self.broker.port)
    }

    /// Witness flags for `id` on the tools' port: `fleet.publish` uses the
    /// agents' port, and one certificate has one session on each.
    fn watching(&self, id: &str) -> Vec<String> {
        self.on_port(id, self.cli_port())[2..].to_vec()
    }

    fn on_port(&self, id: &str, port: u16) -> Vec<String> {
        let mut args = strings(&["-h", "127.0.0.1", "-p", &port.to_string()]);
        args.extend(strings(&[
            "--cafile",
            &self.file(id, "ca.crt").display().to_string(),
            "--cert",
            &self.file(id, &format!("{id}.crt")).display().to_string(),
            "--key",
            &self.file(id, &format!("{id}.key")).display().to_string(),
        ]));
        args
    }

    fn publish(&self, id: &str, topic: &str, message: &str) {
        let mut args = strings(&["publish", "--config"]);
        args.push(device_config(self.dir.path()).display().to_string());
        args.extend(self.as_client(id));
        args.extend(strings(&["-t", topic, "-m", message]));
        let out = pinpost(&args, WAIT);
        assert_ok(&out, &self.broker);
    }

    /// Device `id`'s config, as on its Pi: the agent on the agents' port,
    /// its tools on the tools' port.
    fn config(&self, id: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{id}.toml"));
        std::fs::write(
            &path,
            format!(
                "{head}[board]\nkind = \"sim\"\n[[output]]\nname = \"relay\"\npin = 27\n",
                head = ConfigHead::new(self.broker.port)
                    .id(id)
                    .broker(&format!("cli_port = {}", self.cli_port()))
                    .ca(format!("certs/devices/{id}/ca.crt"))
                    .client_files(
                        format!("certs/devices/{id}/{id}.crt"),
                        format!("certs/devices/{id}/{id}.key")
                    ),
            ),
        )
        .unwrap();
        // As install.sh leaves it (check warns of a config others can read).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        path
    }
}

#[test]
fn a_device_made_by_pinpost_certs_publishes_and_stays_in_its_own_topics() {
    let fleet = Fleet::new(false);
    let witness = Witness::start(&fleet.broker, "#", &fleet.watching("operator"));
    fleet.publish("pi-01", "pinpost/pi-01/sensor/hello", "mine");
    assert_eq!(
        witness.wait_for("pinpost/pi-01/sensor/hello mine", WAIT),
        ["pinpost/pi-01/sensor/hello mine"]
    );
    // Outside its subtree Mosquitto acknowledges and drops; the marker
    // after it proves the subscriber would have seen it by then.
    fleet.publish("pi-01", "pinpost/pi-02/cmd/relay", "on");
    fleet.publish("pi-01", "elsewhere", "x");
    fleet.publish("pi-01", "pinpost/pi-01/sensor/marker", "after");
    assert_eq!(
        witness.wait_for("pinpost/pi-01/sensor/marker after", WAIT),
        ["pinpost/pi-01/sensor/marker after"],
        "a publish outside pinpost/pi-01/# reached the subscriber"
    );
    // The operator may send commands to any device.
    fleet.publish("operator", "pinpost/pi-02/cmd/relay", "on");
    assert_eq!(
        witness.wait_for("pinpost/pi-02/cmd/relay on", WAIT),
        ["pinpost/pi-02/cmd/relay on"]
    );

    let out = pinpost(
        &strings(&[
            "check",
            "--config",
            &fleet.config("pi-01").display().to_string(),
        ]),
        WAIT,
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    assert!(
        said.contains("\u{2713} published a probe to pinpost/pi-01/check and received it back"),
        "{said}"
    );
    assert!(said.ends_with("all good\n"), "{said}");

    // A config whose id is not the certificate's name is kept out by the ACL.
    let wrong = fleet.config("pi-01");
    let text = std::fs::read_to_string(&wrong).unwrap();
    std::fs::write(&wrong, text.replace("id = \"pi-01\"", "id = \"pi-02\"")).unwrap();
    let out = pinpost(
        &strings(&["check", "--config", &wrong.display().to_string()]),
        WAIT,
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("is for \"pi-01\" but the device id is \"pi-02\""),
        "{said}"
    );
    assert!(
        said.contains("\u{2717} the probe published to pinpost/pi-02/check did not come back"),
        "{said}"
    );
}

#[test]
fn an_rsa_fleet_for_old_brokers_works_the_same() {
    let fleet = Fleet::new(true);
    let key = std::fs::read_to_string(fleet.file("pi-01", "pi-01.key")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    let witness = Witness::start(&fleet.broker, "#", &fleet.watching("operator"));
    fleet.publish("pi-01", "pinpost/pi-01/sensor/hello", "rsa");
    assert_eq!(
        witness.wait_for("pinpost/pi-01/sensor/hello rsa", WAIT),
        ["pinpost/pi-01/sensor/hello rsa"]
    );
}

#[test]
fn certs_never_replace_a_key_without_force_and_need_a_ca_first() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let out = pinpost(&strings(&["certs", "--dir", &d, "device", "pi-01"]), WAIT);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Make the CA first with `pinpost certs ca`"),
        "{}",
        stderr(&out)
    );
    certs(dir.path(), &["ca"]);
    let before = std::fs::read(dir.path().join("private/ca.key")).unwrap();
    let out = pinpost(&strings(&["certs", "--dir", &d, "ca"]), WAIT);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ca.crt exists and was left alone; pass --force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(dir.path().join("private/ca.key")).unwrap(),
        before
    );
    certs(dir.path(), &["ca", "--force"]);
    assert_ne!(
        std::fs::read(dir.path().join("private/ca.key")).unwrap(),
        before
    );

    let out = pinpost(&strings(&["certs", "--dir", &d, "device", "../x"]), WAIT);
    assert!(
        stderr(&out).contains("cannot be a device id"),
        "{}",
        stderr(&out)
    );
    let out = pinpost(
        &strings(&["certs", "--dir", &d, "broker", "--host", "not a host"]),
        WAIT,
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("\"not a host\" is not a valid host name or IP address"),
        "{}",
        stderr(&out)
    );
}

/// Every file under `dir`, relative, with its contents.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path.strip_prefix(dir).unwrap().to_path_buf(), bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_ca_key_stays_apart_and_each_device_folder_holds_exactly_its_own_files() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), &["ca"]);
    certs(dir.path(), &["broker", "--host", "127.0.0.1"]);
    let said = certs(dir.path(), &["device", "pi-01"]);
    assert!(
        said.contains(&format!(
            "deploy/push.sh HOST --certs {}",
            dir.path().join("devices/pi-01").display()
        )),
        "{said}"
    );
    certs(dir.path(), &["device", "operator"]);
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("devices/pi-01"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.crt", "pi-01.crt", "pi-01.key"]);
    assert_eq!(
        std::fs::read(dir.path().join("devices/pi-01/ca.crt")).unwrap(),
        std::fs::read(dir.path().join("ca.crt")).unwrap()
    );
    let mut top: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["broker", "ca.crt", "devices", "private"]);
    assert!(dir.path().join("private/ca.key").is_file());
    assert!(dir.path().join("broker/broker.key").is_file());

    // The folder passes the check the scripts run; the whole tree does not.
    let d = dir.path().display().to_string();
    let out = pinpost(
        &strings(&[
            "certs",
            "verify",
            &format!("{d}/devices/pi-01"),
            "--device",
            "pi-01",
        ]),
        WAIT,
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let out = pinpost(
        &strings(&["certs", "verify", &d, "--device", "pi-01"]),
        WAIT,
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    for name in ["broker", "devices", "private"] {
        assert!(
            said.contains(&format!(
                "holds {name}: a device gets exactly ca.crt, pi-01.crt and pi-01.key, \
                 nothing else"
            )),
            "{said}"
        );
    }
    assert!(said.contains("has no pi-01.crt"), "{said}");

    // An older layout's CA key is not used where it lies.
    let old = tempfile::tempdir().unwrap();
    certs(old.path(), &["ca"]);
    std::fs::rename(old.path().join("private/ca.key"), old.path().join("ca.key")).unwrap();
    let o = old.path().display().to_string();
    let out = pinpost(&strings(&["certs", "--dir", &o, "device", "pi-01"]), WAIT);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("move it apart first"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn no_device_name_overwrites_the_ca_or_the_broker_files_even_with_force() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), &["ca"]);
    certs(dir.path(), &["broker", "--host", "127.0.0.1"]);
    let before = snapshot(dir.path());
    let d = dir.path().display().to_string();
    for name in ["ca", "broker", "CA", "Broker"] {
        for force in [false, true] {
            let mut args = strings(&["certs", "--dir", &d, "device", name]);
            if force {
                args.push("--force".into());
            }
            let out = pinpost(&args, WAIT);
            assert_eq!(out.status.code(), Some(1), "device {name} --force {force}");
            assert!(
                stderr(&out).contains("would be taken for the"),
                "{}",
                stderr(&out)
            );
            let mut args = strings(&["certs", "--dir", &d, "mosquitto", "--operator", name]);
            if force {
                args.push("--force".into());
            }
            let out = pinpost(&args, WAIT);
            assert_eq!(
                out.status.code(),
                Some(1),
                "operator {name} --force {force}"
            );
            assert!(
                stderr(&out).contains("cannot be the operator's name"),
                "{}",
                stderr(&out)
            );
        }
    }
    assert_eq!(snapshot(dir.path()), before, "nothing changed");
}

#[test]
fn hostile_names_never_reach_the_brokers_files() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), &["ca"]);
    let d = dir.path().display().to_string();
    let cases: [(&[&str], &str); 7] = [
        (
            &["mosquitto", "--prefix", "pinpost\ntopic readwrite #"],
            "the topic prefix \"pinpost\\ntopic readwrite #\" cannot go into the broker's files: it holds a control character (a newline would start a new line of settings)",
        ),
        (
            &["mosquitto", "--prefix", "pin+post"],
            "it holds an MQTT wildcard",
        ),
        (
            &["mosquitto", "--prefix", "%u"],
            "which the ACL reads as a pattern",
        ),
        (
            &[
                "mosquitto",
                "--cert-dir",
                "/etc/mosquitto/certs\nlistener 1883\nallow_anonymous true",
            ],
            "the broker's certificate folder \"/etc/mosquitto/certs\\nlistener 1883\\nallow_anonymous true\" cannot go into the broker's files: it holds a space or a control character",
        ),
        (
            &["mosquitto", "--cert-dir", "/etc/../tmp"],
            "it climbs out with '..'",
        ),
        (
            &["mosquitto", "--operator", "op\nuser x"],
            "cannot be the operator's name: it holds a control character",
        ),
        (
            &["device", "pi-01\ntopic readwrite #"],
            "cannot be a device id: it holds a control character",
        ),
    ];
    for (args, words) in cases {
        let mut all = strings(&["certs", "--dir", &d]);
        all.extend(strings(args));
        let out = pinpost(&all, WAIT);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(words), "{args:?}: {}", stderr(&out));
    }
    // A device folder with a hostile name (made by hand) is refused too.
    std::fs::create_dir_all(dir.path().join("devices/pi 01")).unwrap();
    let out = pinpost(&strings(&["certs", "--dir", &d, "mosquitto"]), WAIT);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the device id \"pi 01\" cannot go into the broker's files"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("broker/pinpost.conf").exists());
    assert!(!dir.path().join("broker/pinpost.acl").exists());
}

/// Lines of the broker's log saying a client took an existing session.
fn takeovers(broker: &Broker) -> Vec<String> {
    broker
        .log()
        .lines()
        .filter(|l| l.contains("already connected, closing old connection"))
        .map(str::to_string)
        .collect()
}

#[test]
fn one_device_cannot_take_anothers_session_or_write_to_its_topics() {
    let fleet = Fleet::new(false);
    // pi-02's own client, subscribed to its commands.
    let mut as_pi_02 = fleet.as_client("pi-02")[4..].to_vec();
    as_pi_02.extend(strings(&["-i", "pi-02"]));
    let pi_02 = Witness::start(&fleet.broker, "pinpost/pi-02/#", &as_pi_02);
    let operator = Witness::start(&fleet.broker, "#", &fleet.watching("operator"));

    // pi-01's certificate asks for pi-02's client id, on both listeners,
    // and sends pi-02 a command.
    for port in [fleet.broker.port, fleet.cli_port()] {
        let mut args = fleet.on_port("pi-01", port);
        args.extend(strings(&[
            "-i",
            "pi-02",
            "-q",
            "1",
            "-t",
            "pinpost/pi-02/cmd/relay",
            "-m",
            "on",
        ]));
        let out = std::process::Command::new("mosquitto_pub")
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "mosquitto_pub: {}", stderr(&out));
    }
    fleet.publish("operator", "pinpost/pi-02/cmd/marker", "after");
    assert_eq!(
        pi_02.wait_for("pinpost/pi-02/cmd/marker after", WAIT),
        ["pinpost/pi-02/cmd/marker after"],
        "pi-01's command reached pi-02, or pi-02 lost its session"
    );
    assert_eq!(
        operator.wait_for("pinpost/pi-02/cmd/marker after", WAIT),
        ["pinpost/pi-02/cmd/marker after"],
    );
    assert!(
        takeovers(&fleet.broker).is_empty(),
        "a session was taken over:\n{}",
        fleet.broker.log()
    );
    // The broker knew pi-01's connections by pi-01's names, not pi-02's.
    let log = fleet.broker.log();
    assert!(log.contains("as pi-01 ("), "{log}");
    assert!(log.contains("as CN=pi-01 ("), "{log}");
}

#[test]
fn the_cli_runs_beside_the_agent_with_the_same_certificate() {
    let fleet = Fleet::new(false);
    let config = fleet.config("pi-01");
    let witness = Witness::start(&fleet.broker, "#", &fleet.watching("operator"));
    let mut agent = Background::start(&strings(&[
        "run",
        "--config",
        &config.display().to_string(),
    ]));
    witness.wait_until("pi-01 online", WAIT, |l| l == "pinpost/pi-01/status online");

    let c = config.display().to_string();
    let out = pinpost(
        &strings(&[
            "publish",
            "--config",
            &c,
            "-t",
            "pinpost/pi-01/sensor/hello",
            "-m",
            "beside",
        ]),
        WAIT,
    );
    assert_ok(&out, &fleet.broker);
    let checked = pinpost(&strings(&["check", "--config", &c]), WAIT);
    let out = pinpost(
        &strings(&[
            "subscribe",
            "--config",
            &c,
            "-t",
            "pinpost/pi-01/status",
            "-C",
            "1",
            "-W",
            "10",
        ]),
        WAIT,
    );
    assert_ok(&out, &fleet.broker);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "online");

    // The agent still answers, on its first and only connection.
    fleet.publish("operator", "pinpost/pi-01/cmd/relay", "on");
    let seen = witness.wait_until("the relay switched on", WAIT, |l| {
        l.starts_with("pinpost/pi-01/output/relay {\"value\":true")
    });
    assert!(
        seen.contains(&"pinpost/pi-01/sensor/hello beside".to_string()),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|l| l == "pinpost/pi-01/status offline"),
        "the agent went offline: {seen:?}"
    );
    assert_eq!(
        seen.iter()
            .filter(|l| *l == "pinpost/pi-01/status online")
            .count(),
        0,
        "the agent connected again: {seen:?}"
    );
    assert!(
        takeovers(&fleet.broker).is_empty(),
        "a session was taken over:\n{}",
        fleet.broker.log()
    );
    let log = agent.log(Duration::from_millis(200));
    assert!(!log.contains("retrying"), "{log}");
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{said}{}", stderr(&checked));
    assert!(
        said.contains(&format!("connected to 127.0.0.1:{}", fleet.cli_port())),
        "{said}"
    );
}

#[test]
fn a_device_missing_from_the_acl_is_told_how_to_reach_the_tools_port() {
    let fleet = Fleet::new(false);
    // pi-03 comes after the ACL was written: its agent's port works, the
    // tools' port does not know it yet.
    certs(&fleet.dir.path().join("certs"), &["device", "pi-03"]);
    let out = pinpost(
        &strings(&[
            "check",
            "--config",
            &fleet.config("pi-03").display().to_string(),
        ]),
        WAIT,
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "On the tools' port ({}, broker.cli_port) the ACL must also name this certificate: \
             `user CN=pi-03` with `topic read pinpost/pi-03/#` and `topic write \
             pinpost/pi-03/check`, which `pinpost certs \
             mosquitto --force` writes",
            fleet.cli_port()
        )),
        "{said}"
    );
}

/// `mosquitto_pub` with `id`'s certificate on `port`, retained, QoS 1.
fn mosquitto_pub(fleet: &Fleet, id: &str, port: u16, topic: &str, message: &str) {
    let mut args = fleet.on_port(id, port);
    args.extend(strings(&["-q", "1", "-r", "-t", topic, "-m", message]));
    let out = std::process::Command::new("mosquitto_pub")
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success(), "mosquitto_pub: {}", stderr(&out));
}

#[test]
fn a_device_key_cannot_command_its_own_device_but_publishes_what_the_agent_does() {
    let fleet = Fleet::new(false);
    let witness = Witness::start(&fleet.broker, "#", &fleet.watching("operator"));
    // A key lifted from pi-01, on both listeners: a command to pi-01 itself
    // (retained, to wait for the agent), and another device's discovery.
    for port in [fleet.broker.port, fleet.cli_port()] {
        mosquitto_pub(&fleet, "pi-01", port, "pinpost/pi-01/cmd/relay", "on");
        mosquitto_pub(&fleet, "pi-01", port, "pinpost/pi-01/cmd/relay/extra", "on");
        mosquitto_pub(
            &fleet,
            "pi-01",
            port,
            "homeassistant/switch/pi-02/relay/config",
            "{}",
        );
    }
    // What the agent and its tools publish is still delivered.
    let allowed = [
        "pinpost/pi-01/status",
        "pinpost/pi-01/input/door",
        "pinpost/pi-01/output/relay",
        "pinpost/pi-01/sensor/room/temperature",
        "pinpost/pi-01/stats",
        "pinpost/pi-01/check",
        "pinpost/pi-01/cmd/relay/result",
        "homeassistant/switch/pi-01/relay/config",
        "homeassistant/device/pi-01/config",
    ];
    for topic in allowed {
        mosquitto_pub(&fleet, "pi-01", fleet.broker.port, topic, "x");
    }
    mosquitto_pub(
        &fleet,
        "pi-01",
        fleet.cli_port(),
        "pinpost/pi-01/check",
        "tools",
    );
    mosquitto_pub(
        &fleet,
        "pi-01",
        fleet.broker.port,
        "pinpost/pi-01/sensor/marker",
        "after",
    );
    let seen = witness.wait_for("pinpost/pi-01/sensor/marker after", WAIT);
    for topic in allowed {
        assert!(seen.contains(&format!("{topic} x")), "{topic} in {seen:?}");
    }
    assert!(
        seen.contains(&"pinpost/pi-01/check tools".to_string()),
        "{seen:?}"
    );
    for line in &seen {
        assert!(
            !line.contains("/cmd/relay on")
                && !line.contains("/cmd/relay/extra")
                && !line.contains("pi-02"),
            "pi-01's key reached {line:?}: {seen:?}"
        );
    }

    // The agent works end to end under this ACL, and no command of its own
    // key's was kept for it.
    let config = fleet.config("pi-01");
    let mut agent = Background::start(&strings(&[
        "run",
        "--config",
        &config.display().to_string(),
    ]));
    witness.wait_until("pi-01 online", WAIT, |l| l == "pinpost/pi-01/status online");
    fleet.publish(
        "operator",
        "pinpost/pi-01/cmd/relay",
        r#"{"action":"on","id":"a1"}"#,
    );
    let is_result =
        |l: &str| l.starts_with("pinpost/pi-01/cmd/relay/result ") && l.contains("\"a1\"");
    let mut seen = witness.wait_until("the relay on", WAIT, |l| {
        l.starts_with("pinpost/pi-01/output/relay {\"value\":true")
    });
    if !seen.iter().any(|l| is_result(l)) {
        seen.extend(witness.wait_until("the command's result", WAIT, is_result));
    }
    let result = seen
        .iter()
        .find(|l| is_result(l))
        .cloned()
        .unwrap_or_default();
    assert!(result.contains("\"ok\":true"), "{seen:?}");
    // Before the operator's command the relay was never switched on.
    let first_on = seen
        .iter()
        .position(|l| l.starts_with("pinpost/pi-01/output/relay {\"value\":true"));
    let command = seen
        .iter()
        .position(|l| l.starts_with("pinpost/pi-01/cmd/relay {"));
    assert!(first_on > command, "{seen:?}");
    let log = agent.log(Duration::from_millis(300));
    assert!(!log.contains("refused"), "{log}");
    assert!(!log.contains("retrying"), "{log}");
}

#[test]
fn a_tool_says_when_it_is_in_the_agents_place_without_cli_port() {
    let fleet = Fleet::new(false);
    let config = fleet.config("pi-01");
    let text = std::fs::read_to_string(&config).unwrap();
    let upgraded = fleet.dir.path().join("upgraded.toml");
    let cli = format!("cli_port = {}\n", fleet.cli_port());
    assert!(text.contains(&cli));
    std::fs::write(&upgraded, text.replace(&cli, "")).unwrap();
    let publish = |config: &Path| {
        pinpost(
            &strings(&[
                "publish",
                "--config",
                &config.display().to_string(),
                "-t",
                "pinpost/pi-01/sensor/hello",
                "-m",
                "x",
            ]),
            WAIT,
        )
    };
    // A subscriber with the device's own certificate on the agents' port:
    // nothing is said before anything happens, since only a broker that
    // ties client ids to certificates (this one) makes it matter.
    let mut subscriber = Background::start(&strings(&[
        "subscribe",
        "--config",
        &upgraded.display().to_string(),
        "-t",
        "pinpost/pi-01/sensor/#",
    ]));
    let _ = subscriber.log(Duration::from_secs(2));
    // Another connection with that certificate (as the agent coming back)
    // takes the subscriber's place: now it says why, once.
    let out = publish(&upgraded);
    assert_ok(&out, &fleet.broker);
    assert!(!stderr(&out).contains("cli_port"), "{}", stderr(&out));
    let said = subscriber.log(Duration::from_secs(3));
    assert!(
        said.contains(&format!(
            "pinpost: warning: broker.cli_port is not set: pinpost publish, subscribe and \
             check then use the agents' port {}",
            fleet.broker.port
        )),
        "{said}"
    );
    assert!(
        said.contains("drops the agent's session on this device"),
        "{said}"
    );
    drop(subscriber);
    // With cli_port, or with another certificate than the device's, nothing.
    let out = publish(&config);
    assert_ok(&out, &fleet.broker);
    assert!(!stderr(&out).contains("cli_port"), "{}", stderr(&out));
    let operator = fleet.dir.path().join("operator-no-cli.toml");
    std::fs::write(
        &operator,
        text.replace(&cli, "").replace(
            "certs/devices/pi-01/pi-01",
            "certs/devices/operator/operator",
        ),
    )
    .unwrap();
    let out = pinpost(
        &strings(&[
            "publish",
            "--config",
            &operator.display().to_string(),
            "-t",
            "pinpost/pi-01/cmd/relay",
            "-m",
            "on",
        ]),
        WAIT,
    );
    assert_ok(&out, &fleet.broker);
    assert!(!stderr(&out).contains("cli_port"), "{}", stderr(&out));
}

#[test]
fn certs_mosquitto_says_devices_may_write_discovery_only_when_its_acl_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), &["ca"]);
    certs(dir.path(), &["broker", "--host", "127.0.0.1"]);
    let said = certs(dir.path(), &["mosquitto"]);
    let acl = std::fs::read_to_string(dir.path().join("broker/pinpost.acl")).unwrap();
    assert!(!acl.contains("homeassistant"), "{acl}");
    assert!(
        !said.contains("plus its Home Assistant discovery configs"),
        "the ACL written does not allow discovery: {said}"
    );
    assert!(
        said.contains("run this again with --homeassistant --force"),
        "{said}"
    );
    let said = certs(dir.path(), &["mosquitto", "--homeassistant", "--force"]);
    let acl = std::fs::read_to_string(dir.path().join("broker/pinpost.acl")).unwrap();
    assert!(
        acl.contains("pattern write homeassistant/device/%u/config"),
        "{acl}"
    );
    assert!(
        said.contains("plus its Home Assistant discovery configs under homeassistant/"),
        "{said}"
    );
}

#[test]
fn a_revoked_device_is_refused_by_mosquitto_and_check_says_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    for args in [
        &["ca"][..],
        &["broker", "--host", "127.0.0.1"],
        &["device", "pi-01"],
        &["device", "pi-02"],
        &["device", "operator"],
    ] {
        certs(&certs_dir, args);
    }
    let broker_dir = certs_dir.join("broker").display().to_string();
    certs(&certs_dir, &["mosquitto", "--cert-dir", &broker_dir]);
    // What the stolen Pi still holds after its folder leaves the laptop's
    // devices/.
    let stolen = dir.path().join("stolen");
    std::fs::create_dir(&stolen).unwrap();
    for name in ["ca.crt", "pi-01.crt", "pi-01.key"] {
        std::fs::copy(
            certs_dir.join("devices/pi-01").join(name),
            stolen.join(name),
        )
        .unwrap();
    }
    let said = certs(&certs_dir, &["revoke", "pi-01"]);
    assert!(said.contains("Revoked pi-01's certificate"), "{said}");
    assert!(said.contains("sudo systemctl restart mosquitto"), "{said}");
    let conf = std::fs::read_to_string(certs_dir.join("broker/pinpost.conf")).unwrap();
    assert!(
        conf.contains(&format!("crlfile {broker_dir}/crl.pem")),
        "{conf}"
    );
    let acl = std::fs::read_to_string(certs_dir.join("broker/pinpost.acl")).unwrap();
    assert!(!acl.contains("pi-01"), "{acl}");
    assert!(!certs_dir.join("devices/pi-01").exists());

    let broker = Broker::start(&BrokerSetup {
        listener_conf: Some(conf.replace(
            "/etc/mosquitto/pinpost.acl",
            &certs_dir.join("broker/pinpost.acl").display().to_string(),
        )),
        ..BrokerSetup::default()
    });
    let config = dir.path().join("pi-01.toml");
    std::fs::write(
        &config,
        ConfigHead::new(broker.port)
            .broker(&format!("cli_port = {}", broker.more_ports[0]))
            .ca(stolen.join("ca.crt").display().to_string())
            .client_files(
                stolen.join("pi-01.crt").display().to_string(),
                stolen.join("pi-01.key").display().to_string(),
            )
            .to_string(),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = pinpost(
        &strings(&[
            "publish",
            "--config",
            &config.display().to_string(),
            "-t",
            "pinpost/pi-01/check",
            "-m",
            "x",
        ]),
        WAIT,
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("this certificate has been revoked"),
        "{}",
        stderr(&out)
    );
    let out = pinpost(
        &strings(&["check", "--config", &config.display().to_string()]),
        WAIT,
    );
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("this certificate has been revoked"), "{said}");

    // The rest of the fleet is untouched.
    let pi02 = certs_dir.join("devices/pi-02");
    let out = publish_as(&broker, &pi02, "pi-02", &pi02.join("ca.crt"), dir.path());
    assert_ok(&out, &broker);
}

/// `pinpost publish` as `id` with the files in `folder`, on the agents' port.
fn publish_as(
    broker: &Broker,
    folder: &Path,
    id: &str,
    ca: &Path,
    dir: &Path,
) -> std::process::Output {
    let mut args = strings(&["publish", "--config"]);
    args.push(device_config(dir).display().to_string());
    args.extend(strings(&[
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port.to_string(),
    ]));
    args.extend(tls_args(
        ca,
        Some(&Files {
            cert: folder.join(format!("{id}.crt")),
            key: folder.join(format!("{id}.key")),
        }),
    ));
    args.extend(strings(&[
        "-t",
        &format!("pinpost/{id}/check"),
        "-m",
        "rotating",
    ]));
    pinpost(&args, WAIT)
}

#[test]
fn a_ca_is_replaced_with_both_trusted_until_every_certificate_is_reissued() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    for args in [
        &["ca"][..],
        &["broker", "--host", "127.0.0.1"],
        &["device", "pi-01"],
    ] {
        certs(&certs_dir, args);
    }
    let broker_dir = certs_dir.join("broker");
    certs(
        &certs_dir,
        &["mosquitto", "--cert-dir", &broker_dir.display().to_string()],
    );
    let old_ca = std::fs::read(certs_dir.join("ca.crt")).unwrap();
    let said = certs(&certs_dir, &["rotate-ca"]);
    assert!(
        said.contains("In this order:") && said.contains("rotate-ca --finish"),
        "{said}"
    );
    let bundle = std::fs::read(certs_dir.join("ca-bundle.crt")).unwrap();
    assert_eq!(std::fs::read(broker_dir.join("ca.crt")).unwrap(), bundle);
    assert_eq!(
        std::fs::read(certs_dir.join("devices/pi-01/ca.crt")).unwrap(),
        bundle
    );
    assert!(bundle.ends_with(&old_ca), "the bundle holds the old CA too");

    // Step 1: the broker trusts both; its own certificate is still the old CA's.
    let conf = std::fs::read_to_string(broker_dir.join("pinpost.conf"))
        .unwrap()
        .replace(
            "/etc/mosquitto/pinpost.acl",
            &broker_dir.join("pinpost.acl").display().to_string(),
        );
    let mut broker = Broker::start(&BrokerSetup {
        listener_conf: Some(conf),
        ..BrokerSetup::default()
    });
    let pi01 = certs_dir.join("devices/pi-01");
    let out = publish_as(&broker, &pi01, "pi-01", &pi01.join("ca.crt"), dir.path());
    assert_ok(&out, &broker);
    // A device issued by the new CA is let in too.
    certs(&certs_dir, &["device", "pi-02"]);
    let pi02 = certs_dir.join("devices/pi-02");
    let out = publish_as(&broker, &pi02, "pi-02", &pi02.join("ca.crt"), dir.path());
    assert_ok(&out, &broker);

    // Not finished while pi-01 and the broker hold old certificates.
    let all = strings(&[
        "certs",
        "--dir",
        &certs_dir.display().to_string(),
        "rotate-ca",
        "--finish",
    ]);
    let out = pinpost(&all, WAIT);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("broker, pi-01 still hold a certificate from the old CA"),
        "{}",
        stderr(&out)
    );

    // Step 2: the broker's certificate from the new CA; old-CA pi-01 still
    // connects, since it trusts both.
    certs(&certs_dir, &["broker", "--force", "--host", "127.0.0.1"]);
    broker.restart();
    let out = publish_as(&broker, &pi01, "pi-01", &pi01.join("ca.crt"), dir.path());
    assert_ok(&out, &broker);
    // Step 3 and 4.
    certs(&certs_dir, &["device", "pi-01", "--force"]);
    let out = pinpost(&all, WAIT);
    assert!(out.status.success(), "{}", stderr(&out));
    let new_ca = std::fs::read(certs_dir.join("ca.crt")).unwrap();
    assert_eq!(std::fs::read(pi01.join("ca.crt")).unwrap(), new_ca);
    assert_eq!(std::fs::read(broker_dir.join("ca.crt")).unwrap(), new_ca);
    assert!(
        !certs_dir.join("private/ca-old.key").exists(),
        "the old CA's key is gone"
    );
    broker.restart();
    let out = publish_as(&broker, &pi01, "pi-01", &pi01.join("ca.crt"), dir.path());
    assert_ok(&out, &broker);
}
