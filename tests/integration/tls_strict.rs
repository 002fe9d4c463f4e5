//! TLS stays strict where a user relaxes it: `--insecure` needs the
//! broker's CA named and warns on every use, and the Common-Name path
//! (`--legacy-common-name`, for X.509 version 1 and version 3 certificates
//! without subjectAltName) refuses SHA-1 and MD5 signatures and RSA keys
//! under 2048 bits, saying which.
//! Against a real Mosquitto; the weak certificates are made here with the
//! openssl command line, as an old recipe would make them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);

fn openssl(dir: &Path, args: &[&str]) -> String {
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How the broker's version 1 certificate is made.
struct Recipe {
    ca_bits: &'static str,
    server_bits: &'static str,
    digest: &'static str,
}

/// A CA and a server certificate for 127.0.0.1 in its Common Name only,
/// written into `d`: version 1 as `openssl x509 -req` makes it without
/// -extfile, or version 3 with an -extfile that has no subjectAltName.
fn certificates(d: &Path, recipe: &Recipe, version: u8) -> Files {
    let rsa = |bits: &str| format!("rsa:{bits}");
    std::fs::write(d.join("v3.ext"), "basicConstraints=CA:FALSE\n").unwrap();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            &rsa(recipe.ca_bits),
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "30",
            "-sha256",
            "-subj",
            "/CN=old recipe CA",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-newkey",
            &rsa(recipe.server_bits),
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
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
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "30",
            &format!("-{}", recipe.digest),
            "-extfile",
            if version == 3 { "v3.ext" } else { "/dev/null" },
        ],
    );
    // The certificate is what the test says it is.
    let text = openssl(d, &["x509", "-in", "server.crt", "-noout", "-text"]);
    assert!(
        text.contains(&format!("Version: {version} (0x{})", version - 1)),
        "{text}"
    );
    assert!(!text.contains("Subject Alternative Name"), "{text}");
    assert!(
        text.contains(&format!(
            "Signature Algorithm: {}WithRSAEncryption",
            recipe.digest
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("Public-Key: ({} bit)", recipe.server_bits)),
        "{text}"
    );
    Files {
        cert: d.join("server.crt"),
        key: d.join("server.key"),
    }
}

/// A broker with that certificate. OpenSSL's default security level would
/// not even load a weak one ("ca md too weak"); an old broker's would.
fn old_broker(d: &Path, server: Files) -> Broker {
    Broker::start(&BrokerSetup {
        tls: Some((d.join("ca.crt"), server)),
        allow_anonymous: true,
        extra: vec!["ciphers DEFAULT:@SECLEVEL=0".into()],
        ..BrokerSetup::default()
    })
}

fn publish(d: &Path, port: u16, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = strings(&[
        "publish",
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-t",
        "t/x",
        "-m",
        "m",
    ]);
    args.extend(["--config".into(), device_config(d).display().to_string()]);
    args.extend(strings(extra));
    let out = pinpost(&args, WAIT);
    (out.status.code(), stderr(&out))
}

/// Publishes through the legacy path and returns what pinpost said.
fn legacy_publish(d: &Path, broker: &Broker) -> (Option<i32>, String) {
    let ca = d.join("ca.crt").display().to_string();
    publish(d, broker.port, &["--cafile", &ca, "--legacy-common-name"])
}

/// Both kinds of Common-Name-only certificate made by `recipe` are refused
/// with `words`, before any MQTT session starts.
fn assert_refused(recipe: &Recipe, words: &[&str]) {
    for version in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let broker = old_broker(d, certificates(d, recipe, version));
        let (code, said) = legacy_publish(d, &broker);
        assert_eq!(code, Some(4), "version {version}: {said}");
        for w in words.iter().chain(&[
            "the broker's certificate (CN=127.0.0.1) is refused",
            "SHA-256 or stronger",
            "at least 2048 bits",
        ]) {
            assert!(
                said.contains(w),
                "version {version}: expected {w:?} in:\n{said}"
            );
        }
        assert_eq!(said.trim_end().lines().count(), 1, "one line:\n{said}");
        assert!(
            !broker.log().contains("New client connected"),
            "no MQTT session may start:\n{}",
            broker.log()
        );
    }
}

#[test]
fn a_strong_v1_certificate_is_still_accepted_by_its_common_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let recipe = Recipe {
        ca_bits: "2048",
        server_bits: "2048",
        digest: "sha256",
    };
    let broker = old_broker(d, certificates(d, &recipe, 1));
    let mut witness_args = tls_args(&d.join("ca.crt"), None);
    witness_args.push("--insecure".into());
    let witness = Witness::start(&broker, "t/#", &witness_args);
    let (code, said) = legacy_publish(d, &broker);
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(witness.wait_for("t/x m", WAIT), ["t/x m"]);
}

#[test]
fn a_common_name_certificate_signed_with_sha1_is_refused_in_words() {
    let recipe = Recipe {
        ca_bits: "2048",
        server_bits: "2048",
        digest: "sha1",
    };
    assert_refused(
        &recipe,
        &["it is signed with SHA-1 (sha1WithRSAEncryption), a broken hash"],
    );
}

#[test]
fn a_common_name_certificate_signed_with_md5_is_refused_in_words() {
    let recipe = Recipe {
        ca_bits: "2048",
        server_bits: "2048",
        digest: "md5",
    };
    assert_refused(
        &recipe,
        &["it is signed with MD5 (md5WithRSAEncryption), a broken hash"],
    );
}

#[test]
fn a_common_name_certificate_with_a_1024_bit_rsa_key_is_refused_in_words() {
    let recipe = Recipe {
        ca_bits: "2048",
        server_bits: "1024",
        digest: "sha256",
    };
    assert_refused(
        &recipe,
        &["its RSA key has 1024 bits, fewer than the 2048 required"],
    );
}

#[test]
fn a_common_name_certificate_from_a_ca_with_a_1024_bit_key_is_refused_in_words() {
    let recipe = Recipe {
        ca_bits: "1024",
        server_bits: "2048",
        digest: "sha256",
    };
    assert_refused(
        &recipe,
        &["the CA that signed it has an RSA key of 1024 bits, fewer than the 2048 required"],
    );
}

/// A broker whose certificate names broker.example, reached as 127.0.0.1:
/// only `--insecure` lets a client through.
struct Misnamed {
    pki: Pki,
    broker: Broker,
    device: Files,
}

impl Misnamed {
    fn new() -> Misnamed {
        let pki = Pki::new("main");
        let server = pki.server(&["broker.example"]);
        let device = pki.client("pi-01");
        let broker = Broker::mutual(&pki, server);
        Misnamed {
            pki,
            broker,
            device,
        }
    }

    fn run(&self, command: &[&str], extra: &[String]) -> (Option<i32>, String, String) {
        self.run_with(&device_config(self.pki.path()), command, extra)
    }

    fn run_with(
        &self,
        config: &Path,
        command: &[&str],
        extra: &[String],
    ) -> (Option<i32>, String, String) {
        let mut args = strings(command);
        args.extend(strings(&[
            "-h",
            "127.0.0.1",
            "-p",
            &self.broker.port.to_string(),
            "--config",
            &config.display().to_string(),
        ]));
        args.extend(extra.iter().cloned());
        let out = pinpost(&args, WAIT);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr(&out),
        )
    }

    fn device_files(&self) -> Vec<String> {
        strings(&[
            "--cert",
            &self.device.cert.display().to_string(),
            "--key",
            &self.device.key.display().to_string(),
        ])
    }
}

#[test]
fn insecure_without_a_named_ca_is_refused_before_connecting() {
    let rig = Misnamed::new();
    let publish = ["publish", "-t", "t/x", "-m", "m"];

    // TLS with the system's CAs: any public certificate would pass.
    let mut system_cas = rig.device_files();
    system_cas.extend(strings(&["--tls", "--insecure"]));
    let (code, _, said) = rig.run(&publish, &system_cas);
    assert_eq!(code, Some(3), "{said}");
    for w in [
        "flag --insecure: broker.tls.ca_file: is not set",
        "with this system's public CAs any certificate any public CA ever issued",
        "Name the broker's own CA with --cafile",
    ] {
        assert!(said.contains(w), "expected {w:?} in:\n{said}");
    }

    // The same through a config file whose [broker.tls] names no CA.
    let config = rig.pki.path().join("no-ca.toml");
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"pi-01\"\n[broker.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            rig.device.cert, rig.device.key
        ),
    )
    .unwrap();
    let (code, _, said) = rig.run_with(&config, &publish, &strings(&["--insecure"]));
    assert_eq!(code, Some(3), "{said}");
    assert!(
        said.contains("flag --insecure: broker.tls.ca_file: is not set"),
        "{said}"
    );

    // No TLS at all: there is nothing for it to relax.
    let (code, _, said) = rig.run(&publish, &strings(&["--insecure"]));
    assert_eq!(code, Some(3), "{said}");
    assert!(
        said.contains("this connection does not use TLS at all"),
        "{said}"
    );

    // Exit code 3 is a config refusal, before any connection (4 would be
    // a failed one); the broker saw no MQTT client either.
    assert!(
        !rig.broker.log().contains("New client connected"),
        "pinpost must refuse before connecting:\n{}",
        rig.broker.log()
    );
}

#[test]
fn insecure_warns_on_every_use_and_still_verifies_the_chain() {
    let rig = Misnamed::new();
    let mut args = tls_args(&rig.pki.ca.cert, Some(&rig.device));
    let mut witness_args = args.clone();
    witness_args.push("--insecure".into());
    let witness = Witness::start(&rig.broker, "t/#", &witness_args);

    // Without it, the name is checked and the broker refused.
    let (code, _, said) = rig.run(&["publish", "-t", "t/x", "-m", "m"], &args);
    assert_eq!(code, Some(4), "{said}");
    assert!(said.contains("valid for broker.example"), "{said}");

    args.push("--insecure".into());
    let warning = "pinpost: warning: --insecure: the broker's certificate is not checked against \
                   127.0.0.1";
    let (code, _, said) = rig.run(&["publish", "-t", "t/x", "-m", "m", "-r"], &args);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains(warning), "{said}");
    assert_eq!(witness.wait_for("t/x m", WAIT), ["t/x m"]);
    let (code, out, said) = rig.run(&["subscribe", "-t", "t/x", "-C", "1", "-W", "10"], &args);
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(out.trim(), "m");
    assert!(said.contains(warning), "every use warns:\n{said}");

    // The name check is skipped; the chain is not: another CA's broker
    // certificate is still refused.
    let other = Pki::new("other");
    let stranger = Broker::mutual(&other, other.server(&["broker.example"]));
    let mut args = strings(&[
        "publish",
        "-h",
        "127.0.0.1",
        "-p",
        &stranger.port.to_string(),
        "-t",
        "t/x",
        "-m",
        "m",
        "--config",
        &device_config(rig.pki.path()).display().to_string(),
        "--insecure",
    ]);
    args.extend(tls_args(&rig.pki.ca.cert, Some(&rig.device)));
    let out = pinpost(&args, WAIT);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is issued by \"CN=pinpost test CA other\""),
        "{}",
        stderr(&out)
    );
}
