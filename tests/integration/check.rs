//! `pinpost check` against the mistakes people make with certificates: each
//! gets its own line saying what is wrong and what to do, and a non-zero
//! exit. A healthy setup prints none of those lines and exits 0.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);

/// What `check` printed and how it ended.
struct Checked {
    code: Option<i32>,
    said: String,
}

fn check(dir: &Path, host: &str, port: u16, ca: &Path, client: Option<&Files>) -> Checked {
    let head = ConfigHead::new(port).host(host).ca(ca);
    let config = match client {
        Some(files) => head.client(files),
        None => head.no_client(),
    }
    .to_string();
    let path = dir.join("check.toml");
    std::fs::write(&path, config).unwrap();
    // As install.sh leaves it (check warns of a config others can read).
    std::fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
    let out = pinpost(
        &strings(&["check", "--config", &path.display().to_string()]),
        WAIT,
    );
    Checked {
        code: out.status.code(),
        said: format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out)),
    }
}

/// `id`'s files alone in a folder of their own, as on a Pi: ca.crt,
/// `<id>.crt` and `<id>.key` (the Pki's folder also holds the CA's key).
fn device_folder(pki: &Pki, id: &str) -> (PathBuf, Files) {
    let dir = pki.path().join("devices").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let made = pki.client(id);
    let files = Files {
        cert: dir.join(format!("{id}.crt")),
        key: dir.join(format!("{id}.key")),
    };
    std::fs::copy(&pki.ca.cert, dir.join("ca.crt")).unwrap();
    std::fs::copy(&made.cert, &files.cert).unwrap();
    std::fs::copy(&made.key, &files.key).unwrap();
    std::fs::set_permissions(&files.key, Permissions::from_mode(0o600)).unwrap();
    (dir, files)
}

/// `check --offline` on a config naming `files` (and `extra` lines in
/// [broker]), written with `mode`.
fn offline(dir: &Path, files: &Files, extra: &str, mode: u32) -> Checked {
    let path = dir.join("offline.toml");
    std::fs::write(
        &path,
        ConfigHead::new(0)
            .no_port()
            .broker(extra)
            .ca(dir.join("ca.crt"))
            .client(files)
            .to_string(),
    )
    .unwrap();
    std::fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
    let out = pinpost(
        &strings(&[
            "check",
            "--offline",
            "--config",
            &path.display().to_string(),
        ]),
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
    let (folder, device) = device_folder(&pki, "pi-01");
    let c = check(
        &folder,
        "127.0.0.1",
        broker.port,
        &folder.join("ca.crt"),
        Some(&device),
    );
    assert_eq!(c.code, Some(0), "{}", c.said);
    assert!(
        c.said.contains("holds no private key but pi-01's own"),
        "{}",
        c.said
    );
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
    let (folder, device) = device_folder(&pki, "pi-01");
    let path = folder.join("offline.toml");
    std::fs::write(&path, ConfigHead::new(port).client(&device).to_string()).unwrap();
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

#[test]
fn a_ca_key_or_another_devices_key_in_the_device_folder_is_a_failure() {
    let pki = Pki::new("main");
    let (folder, device) = device_folder(&pki, "pi-01");
    let clean = offline(&folder, &device, "", 0o640);
    assert_eq!(clean.code, Some(0), "{}", clean.said);

    // The CA's key, under its own name and renamed.
    std::fs::copy(&pki.ca.key, folder.join("ca.key")).unwrap();
    std::fs::copy(&pki.ca.key, folder.join("backup.pem")).unwrap();
    // Another device's key, with and without its certificate.
    let other = pki.client("pi-02");
    std::fs::copy(&other.key, folder.join("pi-02.key")).unwrap();
    std::fs::copy(&other.cert, folder.join("pi-02.crt")).unwrap();
    let stray = pki.client("pi-03");
    std::fs::copy(&stray.key, folder.join("pi-03.key")).unwrap();
    let c = offline(&folder, &device, "", 0o640);
    assert_fault(
        &c,
        &[
            "ca.key is the private key of the CA CN=pinpost test CA main: whoever holds this \
             device can make certificates for every device and the operator; remove it",
            "backup.pem is the private key of the CA",
            "pi-02.key is the private key of pi-02 (certificate CN=pi-02), not of this device \
             (pi-01): whoever holds this device can act as pi-02",
            "pi-03.key is a private key of no certificate here",
        ],
    );
    let failures = c.said.lines().filter(|l| l.starts_with('\u{2717}')).count();
    assert_eq!(failures, 4, "{}", c.said);
}

#[test]
fn files_others_can_change_or_read_are_flagged() {
    let pki = Pki::new("main");
    let (folder, device) = device_folder(&pki, "pi-01");
    let password = folder.join("password");
    std::fs::write(&password, "hunter2\n").unwrap();
    std::fs::set_permissions(&password, Permissions::from_mode(0o600)).unwrap();
    let login = format!(
        "username = \"pi-01\"\npassword_file = \"{}\"",
        password.display()
    );
    let fine = offline(&folder, &device, &login, 0o640);
    assert_eq!(fine.code, Some(0), "{}", fine.said);
    for words in ["writable by", "belongs to user", "readable by every user"] {
        assert!(!fine.said.contains(words), "{words:?} in:\n{}", fine.said);
    }

    // A password file others can read.
    std::fs::set_permissions(&password, Permissions::from_mode(0o644)).unwrap();
    let c = offline(&folder, &device, &login, 0o640);
    assert_fault(
        &c,
        &[
            "\u{2717} the password file",
            "holds the broker password and is readable by every user on this machine (mode 0644): `chmod o-r",
        ],
    );
    std::fs::set_permissions(&password, Permissions::from_mode(0o600)).unwrap();

    // A config others can read: worth fixing, and a failure once it holds
    // the password itself.
    let c = offline(&folder, &device, "", 0o644);
    assert_eq!(c.code, Some(0), "{}", c.said);
    assert!(c.said.contains("! the config"), "{}", c.said);
    assert!(
        c.said
            .contains("is readable by every user on this machine (mode 0644)"),
        "{}",
        c.said
    );
    let c = offline(
        &folder,
        &device,
        "username = \"u\"\npassword = \"hunter2\"",
        0o644,
    );
    assert_fault(&c, &["\u{2717} the config", "holds the broker password"]);

    // A key its group can write, a CA certificate anyone can write.
    std::fs::set_permissions(&device.key, Permissions::from_mode(0o620)).unwrap();
    std::fs::set_permissions(folder.join("ca.crt"), Permissions::from_mode(0o666)).unwrap();
    let c = offline(&folder, &device, "", 0o640);
    assert_fault(
        &c,
        &[
            "\u{2717} the private key",
            "is writable by its group (mode 0620): `chmod g-w",
            "\u{2717} the CA certificate",
            "is writable by every user on this machine (mode 0666): `chmod o-w",
        ],
    );
    std::fs::set_permissions(&device.key, Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(folder.join("ca.crt"), Permissions::from_mode(0o644)).unwrap();

    // A folder anyone can write to: anyone can replace the files in it.
    std::fs::set_permissions(&folder, Permissions::from_mode(0o777)).unwrap();
    let c = offline(&folder, &device, "", 0o640);
    assert_fault(
        &c,
        &[
            "\u{2717} the folder",
            "is writable by every user on this machine (mode 0777)",
        ],
    );
    std::fs::set_permissions(&folder, Permissions::from_mode(0o755)).unwrap();

    // A certificate another user owns (this test runs as root, or as the
    // files' owner: either way uid 54321 is someone else).
    std::os::unix::fs::chown(&device.cert, Some(54321), None).unwrap();
    let c = offline(&folder, &device, "", 0o640);
    assert_fault(
        &c,
        &[
            "\u{2717} the device certificate",
            "belongs to user ? (uid 54321), who can change it",
        ],
    );
}

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

#[test]
fn keys_hidden_in_any_form_in_the_device_folder_are_failures() {
    let pki = Pki::new("main");
    let (folder, device) = device_folder(&pki, "pi-01");
    let operator = pki.client("operator");
    let p = |path: &Path| path.display().to_string();
    let ca_key = std::fs::read_to_string(&pki.ca.key).unwrap();
    // (a) the CA's key appended to the device's own.
    let own = std::fs::read_to_string(&device.key).unwrap();
    std::fs::write(&device.key, format!("{own}{ca_key}")).unwrap();
    // (b) the CA's key in DER form.
    openssl(&[
        "pkey",
        "-in",
        &p(&pki.ca.key),
        "-outform",
        "DER",
        "-out",
        &p(&folder.join("backup.der")),
    ]);
    // (c) the operator's key and certificate as PKCS#12.
    openssl(&[
        "pkcs12",
        "-export",
        "-inkey",
        &p(&operator.key),
        "-in",
        &p(&operator.cert),
        "-passout",
        "pass:secret",
        "-out",
        &p(&folder.join("operator.p12")),
    ]);
    // (d) a 71 KB note ending in the CA's key.
    let notes = "meeting notes, nothing to see here\n".repeat(71 * 1024 / 35 + 1);
    std::fs::write(folder.join("notes.txt"), format!("{notes}{ca_key}")).unwrap();
    // (e) the operator's key, encrypted.
    openssl(&[
        "pkcs8",
        "-topk8",
        "-v2",
        "aes-256-cbc",
        "-in",
        &p(&operator.key),
        "-passout",
        "pass:secret",
        "-out",
        &p(&folder.join("operator.key")),
    ]);
    // And a file too large to look through.
    std::fs::write(folder.join("big.log"), vec![b'x'; 2 * 1024 * 1024]).unwrap();
    let c = offline(&folder, &device, "", 0o640);
    assert_fault(
        &c,
        &[
            "pi-01.key (key 2 of 2 in it) is the private key of the CA CN=pinpost test CA main",
            "backup.der is the private key of the CA",
            "operator.p12 holds a PKCS#12 bundle (.p12/.pfx), which holds a private key behind \
             a password: whose it is cannot be told",
            "notes.txt is the private key of the CA",
            "operator.key holds an encrypted private key",
            "big.log is 2097152 bytes, too large to be a certificate or a key, and was not \
             looked through",
        ],
    );
    let failures = c.said.lines().filter(|l| l.starts_with('\u{2717}')).count();
    assert_eq!(failures, 6, "{}", c.said);
    assert!(!c.said.contains("holds no private key but"), "{}", c.said);
}

#[test]
fn the_agents_certificate_without_cli_port_is_worth_fixing() {
    let pki = Pki::new("main");
    let (folder, device) = device_folder(&pki, "pi-01");
    let c = offline(&folder, &device, "", 0o640);
    assert_eq!(c.code, Some(0), "{}", c.said);
    assert!(
        c.said.contains(&format!(
            "! broker.cli_port is not set: pinpost publish, subscribe and check then use the \
             agents' port 8883 with {}, the certificate of pi-01, the agent's own",
            device.cert.display()
        )),
        "{}",
        c.said
    );
    // Not said before connecting: only some brokers tie client ids to
    // certificates (`subscribe` says it when the broker shows it does).
    assert!(
        !c.said
            .contains("pinpost: warning: broker.cli_port is not set"),
        "{}",
        c.said
    );
    let c = offline(&folder, &device, "cli_port = 8884", 0o640);
    assert_eq!(c.code, Some(0), "{}", c.said);
    assert!(!c.said.contains("cli_port"), "{}", c.said);
    // Another certificate than the device's takes no agent's place.
    let (_, other) = device_folder(&pki, "laptop");
    let c = offline(&folder, &other, "", 0o640);
    assert!(!c.said.contains("cli_port"), "{}", c.said);
}
