//! `pinpost publish` and `pinpost subscribe` against a real Mosquitto in the
//! three setups users run: plain TCP, server-only TLS 1.2 with a password,
//! and mutual TLS. Delivery is what an independent subscriber receives.

use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(10);

fn publish_args(broker: &Broker, config: &std::path::Path, extra: &[String]) -> Vec<String> {
    let mut args = strings(&[
        "publish",
        "-h",
        &broker.host,
        "-p",
        &broker.port.to_string(),
    ]);
    args.extend(["--config".into(), config.display().to_string()]);
    args.extend(extra.iter().cloned());
    args
}

#[test]
fn plain_tcp_on_loopback_delivers() {
    let broker = Broker::start(&BrokerSetup::default());
    let witness = Witness::start(&broker, "plain/#", &[]);
    let config = device_config(broker.dir.path());
    let out = pinpost(
        &publish_args(
            &broker,
            &config,
            &strings(&["-t", "plain/a", "-m", "hello plain"]),
        ),
        WAIT,
    );
    assert_ok(&out, &broker);
    assert_eq!(
        witness.wait_for("plain/a hello plain", WAIT),
        ["plain/a hello plain"]
    );
}

#[test]
fn server_tls_1_2_with_password_delivers() {
    let pki = Pki::new("main");
    let server = pki.server(&["127.0.0.1", "localhost"]);
    let broker = Broker::start(&BrokerSetup {
        tls: Some((pki.ca.cert.clone(), server)),
        tls_version: Some("tlsv1.2"),
        tls_1_2_only: true,
        users: vec![
            ("pi".into(), "s3cret".into()),
            ("watcher".into(), "w".into()),
        ],
        ..BrokerSetup::default()
    });
    let mut watch = tls_args(&pki.ca.cert, None);
    watch.extend(strings(&["-u", "watcher", "-P", "w"]));
    let witness = Witness::start(&broker, "tls12/#", &watch);
    let mut extra = tls_args(&pki.ca.cert, None);
    extra.extend(strings(&[
        "-u", "pi", "-P", "s3cret", "-t", "tls12/a", "-m", "over 1.2",
    ]));
    let out = pinpost(
        &publish_args(&broker, &device_config(pki.path()), &extra),
        WAIT,
    );
    assert_ok(&out, &broker);
    assert_eq!(
        witness.wait_for("tls12/a over 1.2", WAIT),
        ["tls12/a over 1.2"]
    );
}

#[test]
fn mutual_tls_delivers_each_line_as_a_message() {
    let pki = Pki::new("main");
    let server = pki.server(&["127.0.0.1"]);
    let device = pki.client("pi-01");
    let watcher = pki.client("watcher");
    let broker = Broker::start(&BrokerSetup {
        tls: Some((pki.ca.cert.clone(), server)),
        require_certificate: true,
        use_identity_as_username: true,
        ..BrokerSetup::default()
    });
    let witness = Witness::start(&broker, "mtls/#", &tls_args(&pki.ca.cert, Some(&watcher)));
    let mut extra = tls_args(&pki.ca.cert, Some(&device));
    extra.extend(strings(&["-t", "mtls/lines", "-l"]));
    let out = pinpost_with_stdin(
        &publish_args(&broker, &device_config(pki.path()), &extra),
        Some("one\n\ntwo\nthree\n"),
        WAIT,
    );
    assert_ok(&out, &broker);
    assert_eq!(
        witness.wait_for("mtls/lines three", WAIT),
        ["mtls/lines one", "mtls/lines two", "mtls/lines three"]
    );
}

#[test]
fn the_config_file_alone_is_enough_on_a_deployed_pi() {
    let pki = Pki::new("main");
    let server = pki.server(&["127.0.0.1"]);
    pki.client("pi-01");
    let watcher = pki.client("watcher");
    let broker = Broker::start(&BrokerSetup {
        tls: Some((pki.ca.cert.clone(), server)),
        require_certificate: true,
        ..BrokerSetup::default()
    });
    let witness = Witness::start(
        &broker,
        "pinpost/#",
        &tls_args(&pki.ca.cert, Some(&watcher)),
    );
    // Relative paths in the file are read from the file's folder.
    let config = pki.path().join("config.toml");
    std::fs::write(&config, ConfigHead::new(broker.port).to_string()).unwrap();
    let out = pinpost(
        &strings(&[
            "publish",
            "--config",
            &config.display().to_string(),
            "-t",
            "pinpost/pi-01/test",
            "-m",
            "from config",
            "-q",
            "0",
        ]),
        WAIT,
    );
    assert_ok(&out, &broker);
    assert_eq!(
        witness.wait_for("pinpost/pi-01/test from config", WAIT),
        ["pinpost/pi-01/test from config"]
    );
}

#[test]
fn subscribe_prints_what_another_client_publishes() {
    let pki = Pki::new("main");
    let server = pki.server(&["127.0.0.1"]);
    let device = pki.client("pi-01");
    let other = pki.client("other");
    let broker = Broker::start(&BrokerSetup {
        tls: Some((pki.ca.cert.clone(), server)),
        require_certificate: true,
        ..BrokerSetup::default()
    });
    let mut args = strings(&[
        "subscribe",
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port.to_string(),
        "-v",
        "-C",
        "2",
        "-W",
        "20",
        "-d",
    ]);
    args.extend([
        "--config".into(),
        device_config(pki.path()).display().to_string(),
    ]);
    args.extend(strings(&["-t", "sub/+/x", "-t", "other/#"]));
    args.extend(tls_args(&pki.ca.cert, Some(&device)));
    let mut sub = Background::start(&args);
    sub.wait_for("subscribed", WAIT);
    let pub_args = |topic: &str, msg: &str| {
        let mut a = strings(&[
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            msg,
        ]);
        a.extend(tls_args(&pki.ca.cert, Some(&other)));
        a
    };
    for (topic, msg) in [
        ("sub/a/x", "first"),
        ("sub/a/y", "not this"),
        ("other/z", "second"),
    ] {
        let status = std::process::Command::new("mosquitto_pub")
            .args(pub_args(topic, msg))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let (status, stdout) = sub.finish(WAIT);
    assert!(status.success());
    assert_eq!(stdout, "sub/a/x first\nother/z second\n");
}

#[test]
fn subscribe_gives_up_with_code_27_when_nothing_arrives() {
    let broker = Broker::start(&BrokerSetup::default());
    let config = device_config(broker.dir.path());
    let out = pinpost(
        &strings(&[
            "subscribe",
            "-p",
            &broker.port.to_string(),
            "--config",
            &config.display().to_string(),
            "-t",
            "quiet/#",
            "-W",
            "1",
        ]),
        WAIT,
    );
    assert_eq!(out.status.code(), Some(27), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("timed out after 1s with 0 message(s) received"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn subscribe_reconnects_and_resubscribes_after_the_broker_restarts() {
    let mut broker = Broker::start(&BrokerSetup::default());
    let config = device_config(broker.dir.path());
    let port = broker.port.to_string();
    let mut sub = Background::start(&strings(&[
        "subscribe",
        "-p",
        &port,
        "--config",
        &config.display().to_string(),
        "-t",
        "heal/#",
        "-v",
        "-C",
        "2",
        "-W",
        "60",
        "-d",
        "--keepalive",
        "5",
    ]));
    let publish = |msg: &str| {
        let status = std::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-q",
                "1",
                "-t",
                "heal/x",
                "-m",
                msg,
            ])
            .status()
            .unwrap();
        assert!(status.success());
    };
    sub.wait_for("subscribed", WAIT);
    publish("before");
    broker.restart();
    // The link reports the drop in words and retries with backoff...
    sub.wait_for("lost the connection to localhost:", WAIT);
    // ...and subscribes again on the new session (persistence is off).
    sub.wait_for("subscribed", WAIT);
    publish("after");
    let (status, stdout) = sub.finish(WAIT);
    assert!(status.success());
    assert_eq!(stdout, "heal/x before\nheal/x after\n");
}

/// The link's own socket to the broker, found among this process's open
/// files by its peer's port.
fn socket_to(port: u16) -> std::os::fd::OwnedFd {
    let fds = std::fs::read_dir("/proc/self/fd").expect("list open files");
    for entry in fds.flatten() {
        let Ok(n) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: `n` is open in this process (listed just now) and only
        // duplicated here, never closed; the duplicate is owned.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(n) };
        let peer = rustix::net::getpeername(fd)
            .ok()
            .flatten()
            .and_then(|a| std::net::SocketAddr::try_from(a).ok());
        if peer.is_some_and(|p| p.port() == port) {
            return fd.try_clone_to_owned().expect("duplicate the socket");
        }
    }
    panic!("no socket connected to port {port} in this process");
}

#[test]
fn the_link_to_mosquitto_as_installed_sends_and_acknowledges_at_once() {
    // Mosquitto as installed keeps Nagle on: a link that delays its ACKs
    // (or holds small packets) waits 40 ms for its CONNACK and commands.
    let pki = Pki::new("prompt");
    let broker = Broker::mutual(&pki, pki.server(&["127.0.0.1"]));
    let device = pki.client("pi-01");
    let text = ConfigHead::new(broker.port)
        .ca(&pki.ca.cert)
        .client(&device)
        .to_string();
    let config = pinpost::config::from_text(&text, None, &pinpost::config::Overrides::default())
        .expect("config");
    let tls = config
        .broker
        .tls
        .as_ref()
        .map(pinpost::tls::setup)
        .transpose();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut link = pinpost::link::Link::start(
            pinpost::link::LinkOptions {
                broker: config.broker.clone(),
                client_id: "pi-01".into(),
                reconnect: config.reconnect.clone(),
                retry: pinpost::link::Retry::Never,
                will: None,
                subscriptions: Vec::new(),
                max_incoming: None,
            },
            tls.expect("tls setup"),
        );
        let connected = tokio::time::timeout(WAIT, link.next_event()).await;
        assert!(
            matches!(
                connected,
                Ok(Some(pinpost::link::LinkEvent::Connected { .. }))
            ),
            "the link connects: {connected:?}"
        );
        // An interactive exchange, after which Linux turns to delayed ACKs
        // unless they are re-armed: publish, PUBACK, publish at once...
        let publisher = link.publisher();
        for _ in 0..5 {
            publisher
                .publish(
                    "prompt/t",
                    b"x".to_vec(),
                    pinpost::link::Qos::AtLeastOnce,
                    false,
                )
                .await
                .expect("queue a publish");
            loop {
                match tokio::time::timeout(WAIT, link.next_event()).await {
                    Ok(Some(pinpost::link::LinkEvent::Acked { .. })) => break,
                    Ok(Some(_)) => {}
                    other => panic!("waiting for a PUBACK: {other:?}"),
                }
            }
        }
        let socket = socket_to(broker.port);
        assert!(
            rustix::net::sockopt::tcp_nodelay(&socket).expect("getsockopt"),
            "small packets go out at once (TCP_NODELAY)"
        );
        // The last PUBACK's read must have re-armed quick ACKs.
        assert!(
            rustix::net::sockopt::tcp_quickack(&socket).expect("getsockopt"),
            "what arrived is acknowledged at once (TCP_QUICKACK re-armed)"
        );
    });
}
