//! `pinpost certs` end to end: the files it writes run a real Mosquitto with
//! mutual TLS and its ACL, a device made with it connects and publishes,
//! and the ACL keeps each device inside its own topics.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

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
            certs(&certs_dir, &[&["device", device], key_kind].concat());
        }
        let cert_dir = certs_dir.display().to_string();
        let said = certs(&certs_dir, &["mosquitto", "--cert-dir", &cert_dir]);
        assert!(
            said.contains("/etc/mosquitto/conf.d/pinpost.conf"),
            "{said}"
        );

        for (file, mode) in [("ca.key", 0o600), ("pi-01.key", 0o600), ("ca.crt", 0o644)] {
            let found = std::fs::metadata(certs_dir.join(file))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(found, mode, "{file}");
        }
        let conf = std::fs::read_to_string(certs_dir.join("pinpost.conf"))
            .unwrap()
            .replace(
                "/etc/mosquitto/pinpost.acl",
                &certs_dir.join("pinpost.acl").display().to_string(),
            );
        let broker = Broker::start(&BrokerSetup {
            listener_conf: Some(conf),
            ..BrokerSetup::default()
        });
        Fleet { dir, broker }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join("certs").join(name)
    }

    fn as_client(&self, id: &str) -> Vec<String> {
        let mut args = strings(&["-h", "127.0.0.1", "-p", &self.broker.port.to_string()]);
        args.extend(strings(&[
            "--cafile",
            &self.file("ca.crt").display().to_string(),
            "--cert",
            &self.file(&format!("{id}.crt")).display().to_string(),
            "--key",
            &self.file(&format!("{id}.key")).display().to_string(),
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

    fn config(&self, id: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{id}.toml"));
        std::fs::write(
            &path,
            format!(
                "[device]\nid = \"{id}\"\n[broker]\nhost = \"127.0.0.1\"\nport = {}\n\
                 [broker.tls]\nca_file = \"certs/ca.crt\"\ncert_file = \"certs/{id}.crt\"\n\
                 key_file = \"certs/{id}.key\"\n",
                self.broker.port
            ),
        )
        .unwrap();
        path
    }
}

#[test]
fn a_device_made_by_pinpost_certs_publishes_and_stays_in_its_own_topics() {
    let fleet = Fleet::new(false);
    let witness = Witness::start(&fleet.broker, "#", &fleet.as_client("operator")[4..]);
    fleet.publish("pi-01", "pinpost/pi-01/hello", "mine");
    assert_eq!(
        witness.wait_for("pinpost/pi-01/hello mine", WAIT),
        ["pinpost/pi-01/hello mine"]
    );
    // Outside its subtree Mosquitto acknowledges and drops; the marker
    // after it proves the subscriber would have seen it by then.
    fleet.publish("pi-01", "pinpost/pi-02/cmd/relay", "on");
    fleet.publish("pi-01", "elsewhere", "x");
    fleet.publish("pi-01", "pinpost/pi-01/marker", "after");
    assert_eq!(
        witness.wait_for("pinpost/pi-01/marker after", WAIT),
        ["pinpost/pi-01/marker after"],
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
    let key = std::fs::read_to_string(fleet.file("pi-01.key")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    let witness = Witness::start(&fleet.broker, "#", &fleet.as_client("operator")[4..]);
    fleet.publish("pi-01", "pinpost/pi-01/hello", "rsa");
    assert_eq!(
        witness.wait_for("pinpost/pi-01/hello rsa", WAIT),
        ["pinpost/pi-01/hello rsa"]
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
    let before = std::fs::read(dir.path().join("ca.key")).unwrap();
    let out = pinpost(&strings(&["certs", "--dir", &d, "ca"]), WAIT);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ca.crt exists and was left alone; pass --force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(dir.path().join("ca.key")).unwrap(), before);
    certs(dir.path(), &["ca", "--force"]);
    assert_ne!(std::fs::read(dir.path().join("ca.key")).unwrap(), before);

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
