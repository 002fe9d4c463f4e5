//! `pinpost check` against the mistakes people make with certificates: each
//! gets its own line saying what is wrong and what to do, and a non-zero
//! exit. A healthy setup prints none of those lines and exits 0.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(20);

/// What `check` printed and how it ended.
struct Checked {
    code: Option<i32>,
    said: String,
}

fn check(dir: &Path, host: &str, port: u16, ca: &Path, client: Option<&Files>) -> Checked {
    let mut config = format!(
        "[device]\nid = \"pi-01\"\n[broker]\nhost = \"{host}\"\nport = {port}\n\
         [broker.tls]\nca_file = \"{}\"\n",
        ca.display()
    );
    if let Some(files) = client {
        config += &format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\n",
            files.cert.display(),
            files.key.display()
        );
    }
    let path = dir.join("check.toml");
    std::fs::write(&path, config).unwrap();
    let out = pinpost(
        &strings(&["check", "--config", &path.display().to_string()]),
        WAIT,
    );
    Checked {
        code: out.status.code(),
        said: format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out)),
    }
}

/// The lines each fault must print, and that a healthy setup must not.
const FAULT_LINES: [&str; 9] = [
    "\u{2717} the device certificate",
    "expired on 2021-01-01",
    "is not valid until 2099-01-01",
    "was issued by CN=pinpost test CA other, not by the CA in ca_file",
    "does not belong to the certificate",
    "the broker's certificate is valid for 127.0.0.1, you connected to localhost",
    "names 127.0.0.1 only in its Common Name",
    "readable by every user on this machine",
    "has the same subject (CN=pinpost test CA main) as its CA",
];

fn assert_fault(c: &Checked, lines: &[&str]) {
    assert_eq!(c.code, Some(1), "{}", c.said);
    for line in lines {
        assert!(c.said.contains(line), "expected {line:?} in:\n{}", c.said);
    }
    assert!(
        c.said.contains("pinpost: check found"),
        "no summary: {}",
        c.said
    );
}

#[test]
fn a_healthy_setup_passes_every_step() {
    let pki = Pki::new("main");
    let broker = Broker::mutual(&pki, pki.server(&["127.0.0.1"]));
    let c = check(
        pki.path(),
        "127.0.0.1",
        broker.port,
        &pki.ca.cert,
        Some(&pki.client("pi-01")),
    );
    assert_eq!(c.code, Some(0), "{}", c.said);
    for fault in FAULT_LINES {
        assert!(
            !c.said.contains(fault),
            "{fault:?} in a healthy check:\n{}",
            c.said
        );
    }
    assert!(!c.said.contains('\u{2717}'), "{}", c.said);
    assert!(
        c.said.contains("\u{2713} connected to 127.0.0.1"),
        "{}",
        c.said
    );
    assert!(c.said.contains("belongs to"), "{}", c.said);
    assert!(
        c.said.contains("is signed by CN=pinpost test CA main"),
        "{}",
        c.said
    );
}

#[test]
fn an_expired_device_certificate() {
    let pki = Pki::new("main");
    let broker = Broker::mutual(&pki, pki.server(&["127.0.0.1"]));
    let device = pki.issue(
        "pi-01",
        &Leaf {
            expired: true,
            ..Leaf::client("pi-01")
        },
        false,
    );
    let c = check(
        pki.path(),
        "127.0.0.1",
        broker.port,
        &pki.ca.cert,
        Some(&device),
    );
    assert_fault(
        &c,
        &[
            "\u{2717} the device certificate",
            "expired on 2021-01-01 00:00 UTC; make a new one with `pinpost certs device pi-01`",
        ],
    );
}

#[test]
fn a_device_certificate_not_yet_valid() {
    let pki = Pki::new("main");
    let broker = Broker::mutual(&pki, pki.server(&["127.0.0.1"]));
    let device = pki.issue(
        "pi-01",
        &Leaf {
            not_yet_valid: true,
            ..Leaf::client("pi-01")
        },
        false,
    );
    let c = check(
        pki.path(),
        "127.0.0.1",
        broker.port,
        &pki.ca.cert,
        Some(&device),
    );
    assert_fault(
        &c,
        &["is not valid until 2099-01-01 00:00 UTC: this machine's clock says"],
    );
}

#[test]
fn a_device_certificate_from_another_ca() {
    let pki = Pki::new("main");
    let other = Pki::new("other");
    let broker = Broker::mutual(&pki, pki.server(&["127.0.0.1"]));
    let c = check(
        pki.path(),
        "127.0.0.1",
        broker.port,
        &pki.ca.cert,
        Some(&other.client("pi-01")),
    );
    assert_fault(
        &c,
        &[
            "! the device certificate",
            "was issued by CN=pinpost test CA other, not by the CA in ca_file (CN=pinpost test CA main)",
            "\u{2717} connecting: the broker rejected this device's certificate",
        ],
    );
}

#[test]
fn the_wrong_key_for_the_certificate() {
    let pki = Pki::new("main");
    let broker = Broker::mutual(&pki, pki.server(&["127.0.0.1"]));
    let device = pki.client("pi-01");
    let other = pki.client("pi-02");
    let mixed = Files {
        cert: device.cert,
        key: other.key,
    };
    let c = check(
        pki.path(),
        "127.0.0.1",
        broker.port,
        &pki.ca.cert,
        Some(&mixed),
    );
    assert_fault(
        &c,
        &[
            "\u{2717} ",
            "pi-02.key",
            "does not belong to the certificate in",
            "pi-01.crt",
        ],
    );
}

#[test]
fn a_broker_certificate_without_the_host() {
    let pki = Pki::new("main");
    let broker = Broker::mutual(&pki, pki.server(&["127.0.0.1"]));
    let c = check(
        pki.path(),
        "localhost",
        broker.port,
        &pki.ca.cert,
        Some(&pki.client("pi-01")),
    );
    assert_fault(
        &c,
        &[
            "\u{2717} connecting: the broker's certificate is valid for 127.0.0.1, you connected to localhost",
        ],
    );
}

#[test]
fn a_common_name_only_broker_certificate() {
    let pki = Pki::new("main");
    let cn_only = pki.issue(
        "server",
        &Leaf {
            common_name: "127.0.0.1".into(),
            ..Leaf::default()
        },
        true,
    );
    let broker = Broker::mutual(&pki, cn_only);
    let c = check(
        pki.path(),
        "127.0.0.1",
        broker.port,
        &pki.ca.cert,
        Some(&pki.client("pi-01")),
    );
    assert_fault(
        &c,
        &[
            "names 127.0.0.1 only in its Common Name",
            "broker.tls.legacy_common_name = true",
        ],
    );
}

#[test]
fn no_client_certificate_where_the_broker_requires_one() {
    let pki = Pki::new("main");
    let broker = Broker::mutual(&pki, pki.server(&["127.0.0.1"]));
    let c = check(pki.path(), "127.0.0.1", broker.port, &pki.ca.cert, None);
    assert_fault(
        &c,
        &[
            "! no client certificate (broker.tls.cert_file and key_file)",
            "\u{2717} connecting: the broker requires a client certificate (Mosquitto: require_certificate true)",
        ],
    );
}

#[test]
fn a_world_readable_key() {
    let pki = Pki::new("main");
    let broker = Broker::mutual(&pki, pki.server(&["127.0.0.1"]));
    let device = pki.client("pi-01");
    std::fs::set_permissions(
        &device.key,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let c = check(
        pki.path(),
        "127.0.0.1",
        broker.port,
        &pki.ca.cert,
        Some(&device),
    );
    assert_fault(
        &c,
        &[
            "\u{2717} the private key",
            "is readable by every user on this machine (mode 0644): `chmod 600",
        ],
    );
}

#[test]
fn a_device_certificate_named_like_its_ca() {
    let pki = Pki::new("main");
    let broker = Broker::mutual(&pki, pki.server(&["127.0.0.1"]));
    let twin = pki.issue("twin", &Leaf::client("pinpost test CA main"), false);
    let c = check(
        pki.path(),
        "127.0.0.1",
        broker.port,
        &pki.ca.cert,
        Some(&twin),
    );
    assert_fault(
        &c,
        &[
            "\u{2717} the device certificate",
            "has the same subject (CN=pinpost test CA main) as its CA",
            "handshake fails with obscure errors",
        ],
    );
}

#[test]
fn offline_checks_only_the_files() {
    let pki = Pki::new("main");
    let port = free_port("127.0.0.1");
    let path = pki.path().join("offline.toml");
    let device = pki.client("pi-01");
    std::fs::write(
        &path,
        format!(
            "[device]\nid = \"pi-01\"\n[broker]\nhost = \"127.0.0.1\"\nport = {port}\n\
             [broker.tls]\nca_file = \"ca.crt\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            device.cert.display(),
            device.key.display()
        ),
    )
    .unwrap();
    let out = pinpost(
        &strings(&[
            "check",
            "--offline",
            "--config",
            &path.display().to_string(),
        ]),
        WAIT,
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    assert!(!said.contains("connect"), "{said}");
    let out = pinpost(
        &strings(&[
            "check",
            "--config",
            &pki.path().join("missing.toml").display().to_string(),
        ]),
        WAIT,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with('\u{2717}'));
}
