//! Every way a connection fails gets words that say what happened and what
//! to do. Each test makes the failure happen against a real Mosquitto (or a
//! real socket) and asserts the sentence pinpost prints and its exit code.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);

/// Publishes once to `host:port` with `extra` flags; returns (exit code, stderr).
fn publish(host: &str, port: u16, dir: &Path, extra: &[String]) -> (Option<i32>, String) {
    let mut args = strings(&[
        "publish",
        "-h",
        host,
        "-p",
        &port.to_string(),
        "-t",
        "t/x",
        "-m",
        "m",
    ]);
    args.extend(["--config".into(), device_config(dir).display().to_string()]);
    args.extend(extra.iter().cloned());
    let out = pinpost(&args, WAIT);
    (out.status.code(), stderr(&out))
}

fn assert_says(said: &str, words: &[&str]) {
    for w in words {
        assert!(said.contains(w), "expected {w:?} in:\n{said}");
    }
    assert!(!said.contains("Protocol error"), "{said}");
    assert_eq!(
        said.trim_end().lines().count(),
        1,
        "one line, not a dump:\n{said}"
    );
}

#[test]
fn nothing_listening_is_connection_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port("127.0.0.1");
    let (code, said) = publish("127.0.0.1", port, dir.path(), &[]);
    assert_eq!(code, Some(4));
    assert_says(
        &said,
        &[&format!(
            "connection refused by 127.0.0.1:{port}: nothing is listening there"
        )],
    );
}

#[test]
fn a_silent_server_is_a_timeout_that_says_the_port_answered() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and hold connections without ever answering.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let (code, said) = publish(
        "127.0.0.1",
        port,
        dir.path(),
        &strings(&["--connect-timeout", "2s"]),
    );
    assert_eq!(code, Some(4));
    assert_says(
        &said,
        &[&format!(
            "127.0.0.1:{port} accepted the connection but did not answer MQTT CONNECT within 2s"
        )],
    );
}

#[test]
fn an_unknown_ca_names_the_issuer_seen_and_the_ca_file_trusted() {
    let pki = Pki::new("main");
    let other = Pki::new("other");
    let broker = Broker::mutual(&other, other.server(&["127.0.0.1"]));
    let device = pki.client("pi-01");
    let (code, said) = publish(
        "127.0.0.1",
        broker.port,
        pki.path(),
        &tls_args(&pki.ca.cert, Some(&device)),
    );
    assert_eq!(code, Some(4));
    assert_says(
        &said,
        &[
            "the broker's certificate is issued by \"CN=pinpost test CA other\"",
            "pinpost trusts only \"CN=pinpost test CA main\" from",
            &pki.ca.cert.display().to_string(),
            "(--cafile)",
        ],
    );
}

#[test]
fn a_name_mismatch_says_which_names_the_certificate_is_valid_for() {
    let pki = Pki::new("main");
    let broker = Broker::mutual(&pki, pki.server(&["127.0.0.1"]));
    let device = pki.client("pi-01");
    let (code, said) = publish(
        "localhost",
        broker.port,
        pki.path(),
        &tls_args(&pki.ca.cert, Some(&device)),
    );
    assert_eq!(code, Some(4));
    assert_says(
        &said,
        &[
            "the broker's certificate is valid for 127.0.0.1, you connected to localhost: use -h 127.0.0.1",
        ],
    );
}

#[test]
fn a_common_name_only_certificate_is_explained_and_accepted_on_request() {
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
    let device = pki.client("pi-01");
    let watcher = pki.client("watcher");
    let args = tls_args(&pki.ca.cert, Some(&device));
    let (code, said) = publish("127.0.0.1", broker.port, pki.path(), &args);
    assert_eq!(code, Some(4));
    assert_says(
        &said,
        &[
            "names 127.0.0.1 only in its Common Name and has no subjectAltName",
            "broker.tls.legacy_common_name = true (--legacy-common-name)",
        ],
    );
    let mut witness_args = tls_args(&pki.ca.cert, Some(&watcher));
    witness_args.push("--insecure".into());
    let witness = Witness::start(&broker, "t/#", &witness_args);
    let mut legacy = args.clone();
    legacy.push("--legacy-common-name".into());
    let (code, said) = publish("127.0.0.1", broker.port, pki.path(), &legacy);
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(witness.wait_for("t/x m", WAIT), ["t/x m"]);
}

#[test]
fn an_expired_broker_certificate_gives_its_date() {
    let pki = Pki::new("main");
    let expired = pki.issue(
        "server",
        &Leaf {
            expired: true,
            ..Leaf::server(&["127.0.0.1"])
        },
        true,
    );
    let broker = Broker::mutual(&pki, expired);
    let device = pki.client("pi-01");
    let (code, said) = publish(
        "127.0.0.1",
        broker.port,
        pki.path(),
        &tls_args(&pki.ca.cert, Some(&device)),
    );
    assert_eq!(code, Some(4));
    assert_says(
        &said,
        &[
            "the broker's certificate expired on 2021-01-01",
            "renew it on the broker",
        ],
    );
}

#[test]
fn a_not_yet_valid_broker_certificate_points_at_the_clock() {
    let pki = Pki::new("main");
    let future = pki.issue(
        "server",
        &Leaf {
            not_yet_valid: true,
            ..Leaf::server(&["127.0.0.1"])
        },
        true,
    );
    let broker = Broker::mutual(&pki, future);
    let device = pki.client("pi-01");
    let (code, said) = publish(
        "127.0.0.1",
        broker.port,
        pki.path(),
        &tls_args(&pki.ca.cert, Some(&device)),
    );
    assert_eq!(code, Some(4));
    assert_says(&said, &["valid only from 2099-01-01", "timedatectl"]);
}

fn missing_client_certificate(tls_version: Option<&'static str>) {
    let pki = Pki::new("main");
    let broker = Broker::start(&BrokerSetup {
        tls: Some((pki.ca.cert.clone(), pki.server(&["127.0.0.1"]))),
        require_certificate: true,
        tls_version,
        tls_1_2_only: tls_version.is_some(),
        ..BrokerSetup::default()
    });
    let (code, said) = publish(
        "127.0.0.1",
        broker.port,
        pki.path(),
        &tls_args(&pki.ca.cert, None),
    );
    assert_eq!(code, Some(4));
    assert_says(
        &said,
        &[
            "the broker requires a client certificate (Mosquitto: require_certificate true) and none was configured",
            "--cert and --key",
        ],
    );
}

#[test]
fn a_missing_client_certificate_is_named_with_tls_1_3() {
    // In TLS 1.3 the handshake completes and the broker closes afterwards.
    missing_client_certificate(None);
}

#[test]
fn a_missing_client_certificate_is_named_with_tls_1_2() {
    missing_client_certificate(Some("tlsv1.2"));
}

#[test]
fn a_client_certificate_from_another_ca_is_reported_as_rejected() {
    let pki = Pki::new("main");
    let other = Pki::new("other");
    let broker = Broker::mutual(&pki, pki.server(&["127.0.0.1"]));
    let stranger = other.client("stranger");
    let (code, said) = publish(
        "127.0.0.1",
        broker.port,
        pki.path(),
        &tls_args(&pki.ca.cert, Some(&stranger)),
    );
    assert_eq!(code, Some(4));
    assert_says(
        &said,
        &[
            "the broker rejected this device's certificate",
            "issued by \"CN=pinpost test CA other\"",
            "signed by the CA in the broker's cafile",
        ],
    );
}

#[test]
fn a_wrong_password_is_a_refused_login() {
    let broker = Broker::start(&BrokerSetup {
        users: vec![("pi".into(), "right".into())],
        ..BrokerSetup::default()
    });
    let (code, said) = publish(
        "127.0.0.1",
        broker.port,
        broker.dir.path(),
        &strings(&["-u", "pi", "-P", "wrong"]),
    );
    assert_eq!(code, Some(4));
    assert_says(&said, &["the broker refused", "user \"pi\"", "-u/-P"]);
}

#[test]
fn no_login_where_one_is_required_is_not_authorised() {
    let broker = Broker::start(&BrokerSetup {
        users: vec![("pi".into(), "right".into())],
        ..BrokerSetup::default()
    });
    let (code, said) = publish("127.0.0.1", broker.port, broker.dir.path(), &[]);
    assert_eq!(code, Some(4));
    assert_says(
        &said,
        &[
            "the broker refused the connection as not authorised: it requires a login (Mosquitto: allow_anonymous false)",
        ],
    );
}

#[test]
fn tls_to_a_plain_port_says_the_port_is_plain() {
    let pki = Pki::new("main");
    let broker = Broker::start(&BrokerSetup::default());
    let (code, said) = publish(
        "127.0.0.1",
        broker.port,
        pki.path(),
        &tls_args(&pki.ca.cert, None),
    );
    assert_eq!(code, Some(4));
    assert_says(&said, &["this port probably speaks plain MQTT"]);
}

#[test]
fn plain_mqtt_to_a_tls_port_suggests_tls() {
    let pki = Pki::new("main");
    let broker = Broker::mutual(&pki, pki.server(&["127.0.0.1"]));
    let (code, said) = publish("127.0.0.1", broker.port, pki.path(), &[]);
    assert_eq!(code, Some(4));
    assert_says(
        &said,
        &[
            "closed the connection before accepting it (no CONNACK)",
            "add --cafile",
        ],
    );
}

#[test]
fn tls_1_3_only_against_a_broker_pinned_to_1_2_names_the_setting() {
    let pki = Pki::new("main");
    let broker = Broker::start(&BrokerSetup {
        tls: Some((pki.ca.cert.clone(), pki.server(&["127.0.0.1"]))),
        tls_version: Some("tlsv1.2"),
        tls_1_2_only: true,
        allow_anonymous: true,
        ..BrokerSetup::default()
    });
    let mut args = tls_args(&pki.ca.cert, None);
    args.extend(strings(&["--tls-version", "tlsv1.3"]));
    let (code, said) = publish("127.0.0.1", broker.port, pki.path(), &args);
    assert_eq!(code, Some(4));
    assert_says(&said, &["share no TLS version", "--tls-version tlsv1.2"]);
}

#[test]
fn an_unknown_host_is_a_dns_failure() {
    require_tool("ip", "iproute2");
    // A namespace of our own whose resolver is its own loopback: the lookup
    // fails there without any packet leaving this machine.
    let ns = format!("pinpost-dns-{}", std::process::id());
    let etc = Path::new("/etc/netns").join(&ns);
    std::fs::create_dir_all(&etc).expect("create /etc/netns/<ns> (tests run as root)");
    std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["netns", "add", &ns]);
    struct Cleanup(String, std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let _cleanup = Cleanup(ns.clone(), etc.clone());
    run(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let config = device_config(dir.path());
    let mut cmd = std::process::Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &ns,
        PINPOST,
        "publish",
        "-h",
        "broker.pinpost-test.invalid",
        "--allow-insecure",
    ])
    .args([
        "--config",
        &config.display().to_string(),
        "-t",
        "t/x",
        "-m",
        "m",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let out = run_limited(cmd, None, WAIT);
    assert_eq!(out.status.code(), Some(4));
    assert_says(
        &stderr(&out),
        &[
            "cannot find the broker's host \"broker.pinpost-test.invalid\"",
            "getent hosts",
        ],
    );
}

#[test]
fn a_bad_config_file_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[device]\nid = \"pi-01\"\n\n[broker]\nport = 70000\n",
    )
    .unwrap();
    let out = pinpost(
        &strings(&[
            "publish",
            "--config",
            &config.display().to_string(),
            "-t",
            "a",
            "-m",
            "b",
        ]),
        WAIT,
    );
    assert_eq!(out.status.code(), Some(3));
    assert_says(
        &stderr(&out),
        &[&format!(
            "{} line 5: broker.port: 70000 is not a port; allowed: 1 to 65535",
            config.display()
        )],
    );
}

#[test]
fn a_swapped_certificate_and_key_are_named_before_connecting() {
    let pki = Pki::new("main");
    let device = pki.client("pi-01");
    let swapped = Files {
        cert: device.key.clone(),
        key: device.cert.clone(),
    };
    let port = free_port("127.0.0.1");
    let (code, said) = publish(
        "127.0.0.1",
        port,
        pki.path(),
        &tls_args(&pki.ca.cert, Some(&swapped)),
    );
    assert_eq!(code, Some(3));
    assert_says(
        &said,
        &[
            "holds a private key, not a certificate: are cert_file and key_file (--cert and --key) swapped?",
        ],
    );
}
