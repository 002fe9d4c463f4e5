//! Figures 3 and 4: sustained QoS 1 readings through the outbox, and one
//! `pinpost publish`, each beside `mosquitto_pub` doing the same job.

use std::process::Command;
use std::time::{Duration, Instant};

use pinpost::link::LinkEvent;
use pinpost::outbox::{Limits, Outbox};

use crate::common::*;
use crate::rig::*;

const READINGS: usize = 20_000;
const ONE_SHOTS: usize = 21;

/// 3. QoS 1 readings through the outbox and link, against `mosquitto_pub -l`.
pub async fn sustained(rig: &Rig, rows: &mut Vec<Row>) {
    eprintln!("bench: throughput ({READINGS} readings each)");
    let device = &rig.device;
    let witness = counter(operator(rig, "bench/rate/#").await);
    let dir = tempfile::tempdir().expect("outbox dir");
    let limits = Limits {
        memory_limit: 64 << 20,
        max_bytes: 128 << 20,
        max_age: Duration::from_secs(3600),
        policy: pinpost::config::DropPolicy::DropOldest,
        window: pinpost::link::WINDOW,
    };
    let (mut outbox, _) = Outbox::open(dir.path(), limits);
    outbox.online();
    let mut link = client(rig, device, "bench-rate", vec![]).await;
    let publisher = link.publisher();
    let payload = |seq: u64| {
        format!(
            r#"{{"value":21.{seq:03},"unit":"°C","ts":"2026-11-23T12:00:00.000Z","seq":{seq}}}"#
        )
    };
    let t0 = Instant::now();
    for seq in 1..=READINGS as u64 {
        outbox.push(
            "bench/rate/pinpost",
            payload(seq).into_bytes(),
            false,
            Some(seq),
            0,
        );
    }
    let pump = |outbox: &mut Outbox| {
        while let Some(r) = outbox.next_to_send(0) {
            if publisher
                .try_send(r.id, &r.topic, r.payload, r.retain)
                .is_err()
            {
                outbox.requeue(r.id);
                break;
            }
        }
    };
    pump(&mut outbox);
    while !outbox.is_empty() {
        tokio::select! {
            event = link.next_event() => {
                if let Some(LinkEvent::Acked { token: Some(id), .. }) = event {
                    outbox.acked(id);
                    pump(&mut outbox);
                }
            }
            // Seq reservations (and any read back) come from the spool
            // thread, as in the agent.
            answer = outbox.next_answer() => {
                outbox.on_answer(answer);
                pump(&mut outbox);
            }
        }
    }
    let ours = t0.elapsed();
    let received = witness.wait("bench/rate/pinpost", READINGS).await;

    let lines: String = (1..=READINGS as u64).map(|s| payload(s) + "\n").collect();
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &rig.broker.port.to_string(),
        "-q",
        "1",
        "-l",
    ])
    .args([
        "-t",
        "bench/rate/mosquitto_pub",
        "-i",
        "bench-mosquitto-pub",
    ])
    .args(tls_args(&rig.pki.ca.cert, Some(device)))
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let t0 = Instant::now();
    let out = run_limited(cmd, Some(&lines), Duration::from_secs(120));
    let theirs = t0.elapsed();
    assert!(out.status.success(), "mosquitto_pub: {}", stderr(&out));
    let received_ref = witness.wait("bench/rate/mosquitto_pub", READINGS).await;
    let rate = |d: Duration| READINGS as f64 / d.as_secs_f64();
    rows.push(row(
        &format!("QoS 1 readings/s, {READINGS} messages (delivered {received} / {received_ref})"),
        format!("{:.0}/s", rate(ours)),
        &format!("mosquitto_pub -l -q 1: {:.0}/s", rate(theirs)),
        Some(rate(ours) / rate(theirs)),
    ));
}

/// 4. `pinpost publish` against `mosquitto_pub`, one message each, alternated.
pub fn one_shot(rig: &Rig, rows: &mut Vec<Row>) {
    eprintln!("bench: one-shot publish ({ONE_SHOTS} runs each)");
    let device = &rig.device;
    let config = device_config(rig.pki.path());
    let port = rig.broker.port.to_string();
    // The same message, certificates and QoS for both; only the program differs.
    let publish_args = strings(&[
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-q",
        "1",
        "-t",
        "bench/one",
        "-m",
        "hello",
    ]);
    let time = |mut cmd: Command, what: &str| {
        cmd.args(&publish_args)
            .args(tls_args(&rig.pki.ca.cert, Some(device)))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let t0 = Instant::now();
        let out = run_limited(cmd, None, Duration::from_secs(20));
        let took = t0.elapsed();
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        took
    };
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..ONE_SHOTS {
        let mut cmd = Command::new(PINPOST);
        cmd.args(["publish", "--config", &config.display().to_string()]);
        ours.push(time(cmd, "pinpost publish"));
        theirs.push(time(Command::new("mosquitto_pub"), "mosquitto_pub"));
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (a, b) = (median(ours), median(theirs));
    rows.push(row(
        &format!(
            "one-shot publish, {}, mutual TLS, QoS 1, median of {ONE_SHOTS}",
            rig.setup()
        ),
        ms(a),
        &format!("mosquitto_pub: {}", ms(b)),
        Some(a.as_secs_f64() / b.as_secs_f64()),
    ));
}
