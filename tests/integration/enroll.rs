//! Keys born on the device: `pinpost enroll` makes the key and a request
//! where the config says, `pinpost certs sign` on the "laptop" checks the
//! request and issues the certificate, and only certificates travel. The
//! enrolled device then publishes through a real Mosquitto with mutual TLS,
//! witnessed by the operator's subscriber. Requests the CA must not sign
//! (made by openssl, as a careless or hostile sender would) are refused in
//! words, and nothing is written.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(60);

/// `pinpost certs --dir <laptop> ARGS`, which must succeed.
fn laptop(dir: &Path, args: &[&str]) -> String {
    let mut all = strings(&["certs", "--dir", &dir.display().to_string()]);
    all.extend(strings(args));
    let out = pinpost(&all, WAIT);
    assert!(out.status.success(), "certs {args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A laptop folder with a CA, a broker certificate for 127.0.0.1 and the
/// operator's certificate.
fn fleet() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    laptop(&certs, &["ca"]);
    laptop(&certs, &["broker", "--host", "127.0.0.1"]);
    laptop(&certs, &["device", "operator"]);
    (root, certs)
}

/// The device's own folder and config: files beside the config.
fn device(root: &Path, id: &str, port: u16) -> (PathBuf, PathBuf) {
    let pi = root.join(id);
    std::fs::create_dir_all(&pi).unwrap();
    let config = pi.join("pinpost.toml");
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"{id}\"\n[broker]\nhost = \"127.0.0.1\"\nport = {port}\n\
             [broker.tls]\nca_file = \"ca.crt\"\ncert_file = \"{id}.crt\"\nkey_file = \"{id}.key\"\n"
        ),
    )
    .unwrap();
    (pi, config)
}

fn enroll(config: &Path) -> String {
    let out = pinpost(
        &strings(&["enroll", "--config", &config.display().to_string()]),
        WAIT,
    );
    assert!(out.status.success(), "enroll: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_device_enrolled_with_a_request_connects_and_its_key_never_leaves_it() {
    require_tool("mosquitto", "mosquitto");
    let (root, certs) = fleet();
    let broker = Broker::start(&BrokerSetup {
        tls: Some((
            certs.join("ca.crt"),
            Files {
                cert: certs.join("broker/broker.crt"),
                key: certs.join("broker/broker.key"),
            },
        )),
        require_certificate: true,
        use_identity_as_username: true,
        ..BrokerSetup::default()
    });
    let (pi, config) = device(root.path(), "pi-07", broker.port);
    let said = enroll(&config);
    assert!(said.contains("It never leaves this device"), "{said}");
    let key = pi.join("pi-07.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key is the device's alone");
    let key_before = std::fs::read(&key).unwrap();
    let waiting = pinpost(
        &strings(&[
            "check",
            "--offline",
            "--config",
            &config.display().to_string(),
        ]),
        WAIT,
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&waiting.stdout),
        stderr(&waiting)
    );
    assert!(
        said.contains("this device has enrolled")
            && said.contains("`pinpost certs sign pi-07.csr`"),
        "before its certificate comes: {said}"
    );

    // On the laptop: only the request came.
    let request = root.path().join("pi-07.csr");
    std::fs::copy(pi.join("pi-07.csr"), &request).unwrap();
    let said = laptop(&certs, &["sign", &request.display().to_string()]);
    assert!(said.contains("its own key stays on the device"), "{said}");
    let folder = certs.join("devices/pi-07");
    let mut held: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    held.sort();
    assert_eq!(
        held,
        ["ca.crt", "pi-07.crt", "pi-07.csr"],
        "no key on the laptop"
    );
    let verify = pinpost(
        &strings(&[
            "certs",
            "verify",
            &folder.display().to_string(),
            "--device",
            "pi-07",
        ]),
        WAIT,
    );
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // Back on the Pi: the certificates only. Enrolling again keeps the key.
    for name in ["ca.crt", "pi-07.crt"] {
        std::fs::copy(folder.join(name), pi.join(name)).unwrap();
    }
    let said = enroll(&config);
    assert!(said.starts_with("Kept "), "{said}");
    assert_eq!(std::fs::read(&key).unwrap(), key_before);

    let operator = Files {
        cert: certs.join("devices/operator/operator.crt"),
        key: certs.join("devices/operator/operator.key"),
    };
    let mut args = strings(&["-h", "127.0.0.1", "-p", &broker.port.to_string()]);
    args.extend(tls_args(&certs.join("ca.crt"), Some(&operator)));
    let witness = Witness::start(&broker, "pinpost/pi-07/#", &args);
    let out = pinpost(
        &strings(&[
            "publish",
            "--config",
            &config.display().to_string(),
            "-t",
            "pinpost/pi-07/check",
            "-m",
            "enrolled",
        ]),
        WAIT,
    );
    assert!(out.status.success(), "publish: {}", stderr(&out));
    witness.wait_for("pinpost/pi-07/check enrolled", Duration::from_secs(10));
    assert!(
        witness
            .messages(Duration::from_millis(10))
            .iter()
            .all(|l| !l.contains("PRIVATE KEY")),
        "nothing private on the wire"
    );
}

/// What `certs sign` says of a request openssl made with `args`.
fn refused(certs: &Path, name: &str, openssl_req: &[&str]) -> String {
    let dir = certs.parent().unwrap().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let request = dir.join("request.csr");
    let out = Command::new("openssl")
        .args(["req", "-new", "-nodes", "-keyout"])
        .arg(dir.join("k.pem"))
        .arg("-out")
        .arg(&request)
        .args(openssl_req)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = pinpost(
        &strings(&[
            "certs",
            "--dir",
            &certs.display().to_string(),
            "sign",
            &request.display().to_string(),
        ]),
        WAIT,
    );
    assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
    stderr(&out)
}

#[test]
fn certs_sign_refuses_what_a_device_must_not_get_and_writes_nothing() {
    require_tool("openssl", "openssl");
    let (_root, certs) = fleet();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "operator",
            [&ec[..], &["-subj", "/CN=operator"]].concat(),
            "it asks for a certificate named \"operator\", the operator's",
        ),
        (
            "ca",
            [&ec[..], &["-subj", "/CN=ca"]].concat(),
            "its files would be taken for the CA's",
        ),
        (
            "wildcard",
            [&ec[..], &["-subj", "/CN=pi#01"]].concat(),
            "cannot be a device id",
        ),
        (
            "weak-rsa",
            vec!["-newkey", "rsa:1024", "-subj", "/CN=pi-08"],
            "its RSA key has 1024 bits, fewer than the 2048 the CA requires",
        ),
        (
            "wants-ca",
            [
                &ec[..],
                &[
                    "-subj",
                    "/CN=pi-08",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                ],
            ]
            .concat(),
            "it asks for extensions (to be a certificate authority (basicConstraints CA:TRUE))",
        ),
        (
            "two-names",
            [&ec[..], &["-subj", "/CN=pi-08/O=fleet"]].concat(),
            "it must name exactly one device (one Common Name)",
        ),
        (
            "p384",
            vec![
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-subj",
                "/CN=pi-08",
            ],
            "not P-256",
        ),
    ];
    for (name, args, words) in cases {
        let said = refused(&certs, name, &args);
        assert!(said.contains("(nothing was written)"), "{name}: {said}");
        assert!(said.contains(words), "{name}: {said}");
    }
    assert!(!certs.join("devices/pi-08").exists(), "nothing was written");
    assert!(!certs.join("devices/ca").exists());

    // openssl's own request for a good key is signed: enroll is not the
    // only way, the checks are.
    let dir = certs.parent().unwrap().join("openssl");
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-nodes",
            "-newkey",
            "rsa:2048",
            "-subj",
            "/CN=pi-09",
            "-keyout",
        ])
        .arg(dir.join("k.pem"))
        .arg("-out")
        .arg(dir.join("pi-09.csr"))
        .output()
        .unwrap();
    assert!(status.status.success());
    let said = laptop(
        &certs,
        &["sign", &dir.join("pi-09.csr").display().to_string()],
    );
    assert!(said.contains("Signed pi-09's request"), "{said}");

    // A folder made by `certs device` keeps its key unless told.
    laptop(&certs, &["device", "pi-10"]);
    let key = ec
        .iter()
        .chain(&["-subj", "/CN=pi-10"])
        .copied()
        .collect::<Vec<_>>();
    let said = refused(&certs, "replaces-a-key", &key);
    assert!(
        said.contains("holds pi-10.key, a key made here by `certs device`"),
        "{said}"
    );
}
