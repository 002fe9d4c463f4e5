//! Our users' two setups (shared/seeds/), reproduced with their own openssl
//! recipes, 127.0.0.x standing in for their real addresses. pinpost must
//! deliver in both, and say in words what went wrong where they hit
//! "Protocol error" and "peer did not return a certificate".

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);

fn openssl(dir: &Path, args: &[&str]) {
    require_tool("openssl", "openssl");
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn publish(dir: &Path, host: &str, port: u16, extra: &[&str]) -> std::process::Output {
    let mut args = strings(&["publish", "-h", host, "-p", &port.to_string()]);
    args.extend(["--config".into(), device_config(dir).display().to_string()]);
    args.extend(strings(extra));
    pinpost(&args, WAIT)
}

/// seeds/ec2-mosquitto-tls-userpass.md: a CA whose key is under a
/// passphrase, a server certificate with a v3.ext subjectAltName, TLS 1.2,
/// username and password.
#[test]
fn the_ec2_setup_delivers_over_tls_1_2_with_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ip = "127.0.0.3";
    std::fs::write(
        d.join("v3.ext"),
        format!(
            "authorityKeyIdentifier=keyid,issuer\nbasicConstraints=CA:FALSE\n\
             keyUsage = digitalSignature, keyEncipherment\nsubjectAltName=DNS:localhost, IP:{ip}\n"
        ),
    )
    .unwrap();
    let pass = "pass:ic_es_cw1";
    openssl(
        d,
        &[
            "genrsa", "-des3", "-passout", pass, "-out", "ca.key", "2048",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-key",
            "ca.key",
            "-passin",
            pass,
            "-out",
            "ca.csr",
            "-sha256",
            "-subj",
            "/C=GB/ST=London/L=Fulham/O=IC_ES_CA",
        ],
    );
    openssl(
        d,
        &[
            "x509", "-req", "-in", "ca.csr", "-signkey", "ca.key", "-passin", pass, "-out",
            "ca.crt", "-days", "365", "-sha256",
        ],
    );
    openssl(d, &["genrsa", "-out", "server.key", "2048"]);
    openssl(
        d,
        &[
            "req",
            "-new",
            "-key",
            "server.key",
            "-out",
            "server.csr",
            "-sha256",
            "-subj",
            &format!("/C=GB/ST=London/L=Fulham/O=IC_ES_Server/CN={ip}"),
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-extfile",
            "v3.ext",
            "-CAkey",
            "ca.key",
            "-passin",
            pass,
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "360",
        ],
    );

    let broker = Broker::start(&BrokerSetup {
        bind: Some(ip.into()),
        tls: Some((
            d.join("ca.crt"),
            Files {
                cert: d.join("server.crt"),
                key: d.join("server.key"),
            },
        )),
        users: vec![("user".into(), "user".into())],
        tls_version: Some("tlsv1.2"),
        tls_1_2_only: true,
        ..BrokerSetup::default()
    });
    let ca = d.join("ca.crt").display().to_string();
    let witness = Witness::start(
        &broker,
        "ic_es_test",
        &strings(&["--cafile", &ca, "-u", "user", "-P", "user"]),
    );
    let out = publish(
        d,
        ip,
        broker.port,
        &[
            "-t",
            "ic_es_test",
            "-m",
            "test",
            "--cafile",
            &ca,
            "-u",
            "user",
            "-P",
            "user",
        ],
    );
    assert_ok(&out, &broker);
    assert_eq!(
        witness.wait_for("ic_es_test test", WAIT),
        ["ic_es_test test"]
    );

    // Their CA key is encrypted; used by mistake as a client key, pinpost
    // says so and how to decrypt it.
    let ca_key = d.join("ca.key").display().to_string();
    let out = publish(
        d,
        ip,
        broker.port,
        &[
            "-t", "x", "-m", "y", "--cafile", &ca, "--cert", &ca, "--key", &ca_key,
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("is encrypted with a passphrase"),
        "{}",
        stderr(&out)
    );
}

/// seeds/lan-mosquitto-mutual-tls.md: the mosquitto-tls man page recipe,
/// whose server certificate has the address only in its Common Name, then
/// `require_certificate true` and a client certificate.
#[test]
fn the_lan_setup_is_explained_then_delivers_with_its_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ip = "127.0.0.2";
    let pass = "pass:capass";
    openssl(
        d,
        &[
            "req",
            "-new",
            "-x509",
            "-days",
            "365",
            "-extensions",
            "v3_ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-passout",
            pass,
            "-subj",
            "/C=US/O=DO_NOT_TRUST_mqttpi/CN=DO_NOT_TRUST_testca/emailAddress=ca@example.com",
        ],
    );
    openssl(d, &["genrsa", "-out", "server.key", "2048"]);
    openssl(
        d,
        &[
            "req",
            "-out",
            "server.csr",
            "-key",
            "server.key",
            "-new",
            "-subj",
            &format!("/C=US/O=TestServerForMQTT/CN={ip}/emailAddress=server@example.com"),
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-passin",
            pass,
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "365",
        ],
    );
    openssl(d, &["genrsa", "-out", "client.key", "2048"]);
    openssl(
        d,
        &[
            "req",
            "-out",
            "client.csr",
            "-key",
            "client.key",
            "-new",
            "-subj",
            "/C=US/O=mqttpi/CN=pi-01",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-passin",
            pass,
            "-CAcreateserial",
            "-out",
            "client.crt",
            "-days",
            "365",
        ],
    );

    let broker = Broker::start(&BrokerSetup {
        bind: Some(ip.into()),
        also_bind: Some("127.0.0.1".into()),
        tls: Some((
            d.join("ca.crt"),
            Files {
                cert: d.join("server.crt"),
                key: d.join("server.key"),
            },
        )),
        require_certificate: true,
        ..BrokerSetup::default()
    });
    let ca = d.join("ca.crt").display().to_string();
    let client = [
        "--cafile",
        ca.as_str(),
        "--cert",
        "client.crt",
        "--key",
        "client.key",
    ];
    let run_in_dir = |extra: &[&str]| {
        let mut args = strings(&[
            "publish",
            "-p",
            &broker.port.to_string(),
            "-t",
            "ssltopic",
            "-m",
            "testing",
        ]);
        args.extend(["--config".into(), device_config(d).display().to_string()]);
        args.extend(strings(extra));
        let mut cmd = Command::new(PINPOST);
        cmd.args(&args)
            .current_dir(d)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        run_limited(cmd, None, WAIT)
    };

    // Where they met "Protocol error" / "peer did not return a certificate".
    let out = run_in_dir(&["-h", ip, "--cafile", &ca, "--legacy-common-name"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("the broker requires a client certificate"),
        "{}",
        stderr(&out)
    );

    // Where rustls (unlike their OpenSSL clients) refuses the man page's
    // version 1 certificate, which can only name the host in its CN.
    let out = run_in_dir(&[&["-h", ip][..], &client[..]].concat());
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains(&format!(
            "the broker's certificate (CN={ip}) is an old X.509 version 1 certificate"
        )),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("--legacy-common-name"),
        "{}",
        stderr(&out)
    );

    // Where they met "unknown certificate": connecting by another name.
    let out = run_in_dir(
        &[
            &["-h", "localhost", "--legacy-common-name"][..],
            &client[..],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains(&format!(
            "its Common Name is {ip}, but you connected to localhost: use -h {ip}"
        )),
        "{}",
        stderr(&out)
    );

    // --legacy-common-name relaxes the name only: a CA pinpost does not
    // trust is still refused.
    openssl(
        d,
        &[
            "req",
            "-new",
            "-x509",
            "-days",
            "30",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.crt",
            "-subj",
            "/CN=someone else",
        ],
    );
    let other_ca = d.join("other.crt").display().to_string();
    let out = run_in_dir(&[
        "-h",
        ip,
        "--legacy-common-name",
        "--cafile",
        &other_ca,
        "--cert",
        "client.crt",
        "--key",
        "client.key",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("but pinpost trusts only \"CN=someone else\""),
        "{}",
        stderr(&out)
    );

    let witness = Witness::start(
        &broker,
        "ssltopic",
        &strings(&[
            "--cafile",
            &ca,
            "--cert",
            &d.join("client.crt").display().to_string(),
            "--key",
            &d.join("client.key").display().to_string(),
        ]),
    );
    let out = run_in_dir(&[&["-h", ip, "--legacy-common-name"][..], &client[..]].concat());
    assert_ok(&out, &broker);
    assert_eq!(
        witness.wait_for("ssltopic testing", WAIT),
        ["ssltopic testing"]
    );
}

/// PKCS#1, PKCS#8 and SEC1 keys as openssl writes them all connect.
#[test]
fn every_key_format_openssl_writes_connects() {
    let pki = Pki::new("main");
    let d = pki.path();
    let broker = Broker::start(&BrokerSetup {
        tls: Some((pki.ca.cert.clone(), pki.server(&["127.0.0.1"]))),
        require_certificate: true,
        ..BrokerSetup::default()
    });
    let watcher = pki.client("watcher");
    let witness = Witness::start(&broker, "keys/#", &tls_args(&pki.ca.cert, Some(&watcher)));
    let ca_key = pki.ca.key.display().to_string();
    let ca_crt = pki.ca.cert.display().to_string();
    let formats: [(&str, &[&str], &str); 3] = [
        (
            "pkcs1",
            &["genrsa", "-traditional", "-out", "pkcs1.key", "2048"],
            "BEGIN RSA PRIVATE KEY",
        ),
        (
            "pkcs8",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "pkcs8.key",
            ],
            "BEGIN PRIVATE KEY",
        ),
        (
            "sec1",
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "sec1.key",
            ],
            "BEGIN EC PRIVATE KEY",
        ),
    ];
    for (name, generate, header) in formats {
        openssl(d, generate);
        let key = format!("{name}.key");
        assert!(
            std::fs::read_to_string(d.join(&key))
                .unwrap()
                .contains(header),
            "{name}"
        );
        openssl(
            d,
            &[
                "req",
                "-new",
                "-key",
                &key,
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "30",
            ],
        );
        let crt = d.join(format!("{name}.crt")).display().to_string();
        let key = d.join(&key).display().to_string();
        let out = publish(
            d,
            "127.0.0.1",
            broker.port,
            &[
                "-t",
                &format!("keys/{name}"),
                "-m",
                header,
                "--cafile",
                &ca_crt,
                "--cert",
                &crt,
                "--key",
                &key,
            ],
        );
        assert_ok(&out, &broker);
        let expected = format!("keys/{name} {header}");
        assert_eq!(witness.wait_for(&expected, WAIT), vec![expected]);
    }
    // A key that belongs to another certificate is named before connecting.
    let out = publish(
        d,
        "127.0.0.1",
        broker.port,
        &[
            "-t",
            "keys/x",
            "-m",
            "x",
            "--cafile",
            &ca_crt,
            "--cert",
            &d.join("pkcs1.crt").display().to_string(),
            "--key",
            &d.join("sec1.key").display().to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("does not belong to the certificate in"),
        "{}",
        stderr(&out)
    );
}
