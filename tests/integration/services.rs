//! Managed brokers without the cloud: a TLS front in front of Mosquitto
//! that behaves like AWS IoT Core (port 443, ALPN `x-amzn-mqtt-ca`, SNI, a
//! client certificate, a policy it enforces by closing the connection
//! without a word) or like HiveMQ Cloud (SNI, a login, no client
//! certificate). `pinpost run`, `publish` and `check` work through them with
//! nothing but their config, and each silent refusal is explained.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::front::{Front, FrontSetup, Policy};
use crate::common::*;

const AWS_NAME: &str = "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com";
const HIVEMQ_NAME: &str = "0123abcd.s1.eu.hivemq.cloud";
const WAIT: Duration = Duration::from_secs(20);

/// AWS IoT Core's config as a user writes it, reaching the front at
/// 127.0.0.1 by `server_name` (a test has no DNS for the endpoint).
fn aws_config(dir: &Path, port: u16, extra_broker: &str, extra_tls: &str) -> PathBuf {
    let path = dir.join(format!(
        "aws-{port}-{}.toml",
        extra_broker.len() + extra_tls.len()
    ));
    std::fs::write(
        &path,
        format!(
            "{head}[board]\nkind = \"sim\"\n\n\
             [reconnect]\ninitial = \"100ms\"\nmax = \"500ms\"\n\n\
             [outbox]\npath = \"{spool}\"\n\n\
             [[sensor]]\nname = \"temp\"\nkind = \"sim\"\ninterval = \"200ms\"\nunit = \"°C\"\n",
            head = ConfigHead::new(port)
                .broker("profile = \"aws-iot\"")
                .broker(extra_broker)
                .tls(&format!("server_name = \"{AWS_NAME}\""))
                .tls(extra_tls),
            spool = dir.join(format!("spool-{port}")).display()
        ),
    )
    .unwrap();
    path
}

/// pi-01's three files alone in a folder, as on a Pi (`check` refuses
/// the CA's and the front's keys beside them), where the configs go.
fn device_folder(pki: &Pki) -> PathBuf {
    let dir = pki.path().join("pi-01");
    std::fs::create_dir_all(&dir).unwrap();
    let files = pki.client("pi-01");
    std::fs::copy(&pki.ca.cert, dir.join("ca.crt")).unwrap();
    std::fs::copy(&files.cert, dir.join("pi-01.crt")).unwrap();
    std::fs::copy(&files.key, dir.join("pi-01.key")).unwrap();
    dir
}

fn run(args: &[&str]) -> std::process::Output {
    pinpost(&strings(args), WAIT)
}

fn said(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out))
}

/// The front AWS IoT Core is to pinpost: 443, ALPN, SNI, a client
/// certificate, and a policy for pi-01's own topics.
fn aws_front(pki: &Pki, backend: &Broker, port: Option<u16>) -> Front {
    Front::start(
        FrontSetup {
            name: AWS_NAME.into(),
            alpn: Some("x-amzn-mqtt-ca".into()),
            client_ca: Some(pki.ca.cert.clone()),
            policy: Some(Policy {
                clients: vec!["pi-01".into()],
                publish: vec!["pinpost/pi-01/".into()],
                subscribe: vec!["pinpost/pi-01/".into()],
                retain: true,
            }),
            port,
            fault: None,
        },
        &pki.server(&[AWS_NAME]),
        backend.port,
    )
}

#[test]
fn aws_iot_core_on_443_takes_run_publish_and_check_and_its_silent_refusals_are_explained() {
    let pki = Pki::new("aws");
    let dir = &device_folder(&pki);
    let backend = Broker::start(&BrokerSetup::default());
    // As the service is: on 443 (this machine's loopback).
    let front = aws_front(&pki, &backend, Some(443));
    let witness = Witness::start(&backend, "pinpost/pi-01/#", &[]);
    let config = aws_config(dir, 443, "", "");
    let config = config.display().to_string();

    // publish: the profile alone offers the ALPN and sends the name.
    let out = run(&[
        "publish",
        "--config",
        &config,
        "-t",
        "pinpost/pi-01/hello",
        "-m",
        "hi",
    ]);
    assert!(
        out.status.success(),
        "{}\nfront: {:?}",
        said(&out),
        front.refusals()
    );
    witness.wait_until("the publish", WAIT, |l| l == "pinpost/pi-01/hello hi");

    // check: subscribe and probe, within the policy.
    let out = run(&["check", "--config", &config]);
    let words = said(&out);
    assert!(
        words.contains("\u{2713} connected to 127.0.0.1:443 and logged in")
            && words.contains("\u{2713} published a probe to pinpost/pi-01/check"),
        "{words}\nfront: {:?}",
        front.refusals()
    );

    // run: readings and the retained status arrive.
    let mut agent = Background::start(&strings(&["run", "--config", &config]));
    witness.wait_until("online", WAIT, |l| l == "pinpost/pi-01/status online");
    witness.wait_until("a reading", WAIT, |l| {
        l.starts_with("pinpost/pi-01/sensor/temp {")
    });
    agent.wait_for("connected broker=127.0.0.1:443", WAIT);
    drop(agent);

    // A topic outside the policy: closed without a word, explained.
    let out = run(&[
        "publish",
        "--config",
        &config,
        "-t",
        "elsewhere/x",
        "-m",
        "no",
    ]);
    assert!(!out.status.success());
    let words = said(&out);
    assert!(
        words.contains("AWS IoT Core (127.0.0.1:443) closed the connection")
            && words.contains("iot:Publish"),
        "{words}"
    );
    assert!(
        front
            .refusals()
            .iter()
            .any(|r| r == "iot:Publish for elsewhere/x")
    );

    // A client id the policy does not name.
    let other = aws_config(dir, 443, "client_id = \"pi-02\"", "");
    let out = run(&[
        "publish",
        "--config",
        &other.display().to_string(),
        "-t",
        "pinpost/pi-01/x",
        "-m",
        "x",
    ]);
    assert!(!out.status.success());
    let words = said(&out);
    assert!(
        words.contains("closed the connection before accepting it (no CONNACK)")
            && words.contains("iot:Connect for client id \"pi-02\""),
        "{words}"
    );

    // Without the profile no ALPN is offered, and 443 closes.
    let plain = dir.join("plain-443.toml");
    std::fs::write(
        &plain,
        std::fs::read_to_string(aws_config(dir, 443, "", ""))
            .unwrap()
            .replace("profile = \"aws-iot\"\n", ""),
    )
    .unwrap();
    let out = run(&[
        "publish",
        "--config",
        &plain.display().to_string(),
        "-t",
        "pinpost/pi-01/x",
        "-m",
        "x",
    ]);
    assert!(!out.status.success());
    let words = said(&out);
    assert!(
        words.contains("pinpost offered no ALPN protocol")
            && words.contains("broker.profile = \"aws-iot\""),
        "{words}"
    );
    assert!(
        front
            .refusals()
            .iter()
            .any(|r| r == "no ALPN x-amzn-mqtt-ca")
    );
}

#[test]
fn the_aws_iot_profile_refuses_what_the_service_would_in_words() {
    let pki = Pki::new("aws-config");
    pki.client("pi-01");
    let dir = pki.path();
    let check = |config: &Path| {
        let out = run(&[
            "check",
            "--offline",
            "--config",
            &config.display().to_string(),
        ]);
        assert!(!out.status.success());
        said(&out)
    };
    let no_name = dir.join("no-name.toml");
    std::fs::write(
        &no_name,
        std::fs::read_to_string(aws_config(dir, 443, "", ""))
            .unwrap()
            .replace(&format!("server_name = \"{AWS_NAME}\"\n"), ""),
    )
    .unwrap();
    let words = check(&no_name);
    assert!(
        words.contains("AWS IoT Core: 127.0.0.1 is an IP address")
            && words.contains("broker.tls.server_name"),
        "{words}"
    );
    let words = check(&aws_config(dir, 443, "keep_alive = \"10s\"", ""));
    assert!(
        words.contains("broker.keep_alive") && words.contains("\"30s\" to \"1200s\""),
        "{words}"
    );
    let long = "x".repeat(129);
    let words = check(&aws_config(
        dir,
        443,
        &format!("client_id = \"{long}\""),
        "",
    ));
    assert!(
        words.contains("the client id is 129 bytes; it allows at most 128"),
        "{words}"
    );
    let words = check(&aws_config(dir, 443, "max_packet_size = 1048576", ""));
    assert!(words.contains("payloads of at most 128 KB"), "{words}");
    let words = check(&aws_config(dir, 443, "", "alpn = [\"mqtt\"]"));
    assert!(words.contains("ALPN \"x-amzn-mqtt-ca\""), "{words}");
    let words = check(&aws_config(dir, 443, "profile = \"azure\"", ""));
    assert!(
        words.contains("TOML") || words.contains("profile"),
        "{words}"
    );
}

/// HiveMQ Cloud's front: a name to route by, a login, no client certificate.
fn hivemq(pki: &Pki) -> (Broker, Front) {
    let backend = Broker::start(&BrokerSetup {
        users: vec![("pi-01".into(), "s3cret-Passw0rd".into())],
        ..BrokerSetup::default()
    });
    let front = Front::start(
        FrontSetup {
            name: HIVEMQ_NAME.into(),
            ..FrontSetup::default()
        },
        &pki.server(&[HIVEMQ_NAME]),
        backend.port,
    );
    (backend, front)
}

fn hivemq_config(dir: &Path, port: u16, server_name: Option<&str>) -> PathBuf {
    let path = dir.join(format!("hivemq-{}.toml", server_name.unwrap_or("none")));
    let mut head = ConfigHead::new(port)
        .broker("username = \"pi-01\"\npassword = \"s3cret-Passw0rd\"")
        .no_client();
    if let Some(n) = server_name {
        head = head.tls(&format!("server_name = \"{n}\""));
    }
    std::fs::write(&path, head.to_string()).unwrap();
    path
}

#[test]
fn a_name_based_broker_gets_its_name_by_server_name_and_an_address_alone_is_explained() {
    let pki = Pki::new("hivemq");
    let (backend, front) = hivemq(&pki);
    let witness = Witness::start(
        &backend,
        "t/#",
        &[
            "-u".into(),
            "pi-01".into(),
            "-P".into(),
            "s3cret-Passw0rd".into(),
        ],
    );
    let dir = pki.path();
    let good = hivemq_config(dir, front.port, Some(HIVEMQ_NAME));
    let out = run(&[
        "publish",
        "--config",
        &good.display().to_string(),
        "-t",
        "t/a",
        "-m",
        "by name",
    ]);
    assert!(
        out.status.success(),
        "{}\nfront: {:?}",
        said(&out),
        front.refusals()
    );
    witness.wait_until("the publish", WAIT, |l| l == "t/a by name");

    // By address alone: no SNI can be sent, and the front refuses.
    let bare = hivemq_config(dir, front.port, None);
    let out = run(&[
        "publish",
        "--config",
        &bare.display().to_string(),
        "-t",
        "t/a",
        "-m",
        "x",
    ]);
    assert!(!out.status.success());
    let words = said(&out);
    assert!(
        words.contains("127.0.0.1 is an IP address, so no server name (SNI) could be sent")
            && words.contains("set broker.tls.server_name"),
        "{words}"
    );
    // Another name: refused at the handshake too.
    let wrong = hivemq_config(dir, front.port, Some("other.s1.eu.hivemq.cloud"));
    let out = run(&[
        "publish",
        "--config",
        &wrong.display().to_string(),
        "-t",
        "t/a",
        "-m",
        "x",
    ]);
    assert!(!out.status.success(), "{}", said(&out));
    let refused = front.refusals();
    assert!(
        refused
            .iter()
            .filter(|r| r.starts_with("handshake"))
            .count()
            >= 2,
        "the missing and the wrong name were refused: {refused:?}"
    );
}
