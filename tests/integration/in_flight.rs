//! Never stuck in flight (issue 25): against brokers that acknowledge and
//! then close at once, close instead of acknowledging, acknowledge twice,
//! acknowledge ids never sent, refuse a subscription by closing, or stop
//! acknowledging altogether; against a real Mosquitto stopped while it
//! acknowledges; and with the agent frozen past its keep-alive. Each time
//! the proof is what an independent subscriber receives (every seq, no
//! gap) and that a SIGTERM afterwards keeps nothing.
//!
//! The misbehaving brokers are a TLS front (mutual TLS, as the agent
//! expects) before a real Mosquitto, playing a [`Fault`] on the first
//! connections.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::common::front::{Fault, Front, FrontSetup};
use crate::common::subscriber::{Subscriber, tally};
use crate::common::*;

/// The front's name, which the agent connects to (so it sends it as SNI).
const NAME: &str = "localhost";
/// Reconnects that leave the test quick.
const FAST: &str = "initial = \"10ms\"\nmax = \"100ms\"";
/// What SIGTERM says when it keeps unacknowledged messages for next time.
const KEPT: &str = "has not acknowledged";

/// A plain Mosquitto behind a front that plays `fault` on the first
/// `times` connections, and pi-01's certificate beside the config.
fn faulty(fault: Fault, times: usize) -> (Pki, Broker, Front) {
    let pki = Pki::new("faults");
    pki.client("pi-01");
    let backend = Broker::start(&BrokerSetup::default());
    let front = Front::start(
        FrontSetup {
            name: NAME.into(),
            client_ca: Some(pki.ca.cert.clone()),
            fault: Some((fault, times)),
            ..FrontSetup::default()
        },
        &pki.server(&[NAME]),
        backend.port,
    );
    (pki, backend, front)
}

/// pi-01 on a sim board with one sensor every `every`, stats every second.
fn config(dir: &Path, head: ConfigHead, reconnect: &str, every: &str) -> PathBuf {
    let path = dir.join("pinpost.toml");
    let spool = dir.join("spool");
    std::fs::write(
        &path,
        format!(
            r#"{head}[reconnect]
{reconnect}

[board]
kind = "sim"

[outbox]
path = "{spool}"
stats_interval = "1s"

[[sensor]]
name = "volts"
kind = "sim"
interval = "{every}"
unit = "V"

[[output]]
name = "relay"
pin = 27
"#,
            spool = spool.display()
        ),
    )
    .expect("write config");
    path
}

fn start(config: &Path) -> Background {
    let mut agent = Background::start_with_env(
        &strings(&["run", "--config", &config.display().to_string()]),
        &[("RUST_LOG", "pinpost=info".to_string())],
    );
    agent.wait_for("starting", Duration::from_secs(10));
    agent
}

fn signal(agent: &Background, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &agent.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal}");
}

/// SIGTERM, then the agent's whole log and how it exited.
fn stop(mut agent: Background) -> (String, ExitStatus) {
    signal(&agent, "-TERM");
    let log = agent.log(Duration::from_secs(20));
    let (status, _) = agent.finish(Duration::from_secs(5));
    (log, status)
}

/// Waits until the front has forwarded `n` connections.
fn wait_connections(front: &Front, n: usize, agent: &mut Background) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while front.connections() < n {
        assert!(
            Instant::now() < deadline,
            "only {} connections in 90 s:\n{}",
            front.connections(),
            agent.log(Duration::ZERO)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every (seq, payload) of `topic` among a witness's `topic payload` lines.
fn seqs(lines: &[String], topic: &str) -> Vec<(u64, String)> {
    lines
        .iter()
        .filter_map(|line| line.strip_prefix(topic)?.strip_prefix(' '))
        .map(|payload| {
            let value: serde_json::Value =
                serde_json::from_str(payload).unwrap_or_else(|e| panic!("{payload}: {e}"));
            let seq = value["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("no seq: {payload}"));
            (seq, payload.to_string())
        })
        .collect()
}

/// The stream arrived whole from its first reading: no seq missing.
fn assert_no_reading_lost(topic: &str, seqs: &[(u64, String)]) -> u64 {
    let t = tally(topic, seqs);
    assert_eq!(t.first, 1, "{topic}: the first reading was lost");
    assert!(t.gaps.is_empty(), "{topic}: readings lost: {:?}", t.gaps);
    println!(
        "{topic}: seq 1..={} all received, {} duplicates",
        t.last, t.duplicates
    );
    t.unique
}

/// One scenario: the agent runs until the front has played its fault on
/// `times` connections, then three healthy seconds, and stops. Checked:
/// readings flowed on the healthy connection, none was lost, SIGTERM kept
/// nothing. Returns the agent's log and how many connections there were.
fn survive(fault: Fault, times: usize, reconnect: &str) -> (String, usize) {
    let (pki, backend, front) = faulty(fault, times);
    let topic = "pinpost/pi-01/sensor/volts";
    let witness = Witness::start(&backend, topic, &[]);
    let head = ConfigHead::new(front.port).host(NAME);
    let config = config(pki.path(), head, reconnect, "20ms");
    let mut agent = start(&config);
    // A fault that closes is followed by a healthy connection.
    let closes = matches!(fault, Fault::AckThenClose | Fault::CloseInsteadOfAck);
    wait_connections(&front, times + usize::from(closes), &mut agent);
    let mut all = witness.messages(Duration::from_millis(300));
    // The healthy connection: readings must flow on it.
    let healthy = witness.messages(Duration::from_secs(3));
    let flowing = seqs(&healthy, topic).len();
    assert!(
        flowing > 20,
        "only {flowing} readings in 3 s after the faults"
    );
    all.extend(healthy);
    let (log, status) = stop(agent);
    all.extend(witness.messages(Duration::from_secs(2)));
    assert!(status.success(), "exit {status}\n{log}");
    assert!(!log.contains(KEPT), "acknowledged messages kept:\n{log}");
    assert!(!log.contains("stalled"), "a stall after the faults:\n{log}");
    let connections = front.connections();
    println!(
        "{fault:?} on {times} connections, {connections} in all; {flowing} readings in the 3 \
         healthy seconds"
    );
    assert_no_reading_lost(topic, &seqs(&all, topic));
    (log, connections)
}

#[test]
fn forty_acknowledge_then_close_connections_leave_nothing_in_flight() {
    let (log, connections) = survive(Fault::AckThenClose, 40, FAST);
    assert!(connections > 40, "{log}");
}

#[test]
fn a_close_instead_of_an_acknowledgement_resends_and_loses_nothing() {
    survive(Fault::CloseInsteadOfAck, 10, FAST);
}

#[test]
fn duplicate_acknowledgements_are_ignored_on_a_connection_that_stays_up() {
    let (log, connections) = survive(Fault::DuplicateAcks, 1, FAST);
    assert!(log.contains("already acknowledged: ignored"), "{log}");
    assert_eq!(connections, 1, "the connection was dropped:\n{log}");
}

#[test]
fn an_acknowledgement_for_an_id_never_sent_is_ignored_and_said() {
    let (log, connections) = survive(Fault::UnknownAck, 1, FAST);
    assert!(log.contains("packet id 48879"), "{log}");
    assert_eq!(connections, 1, "the connection was dropped:\n{log}");
}

/// The delays in the log's "retrying in" for failures whose words contain
/// `because`.
fn retry_delays(log: &str, because: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains(because))
        .filter_map(|l| {
            l.split("retrying in ")
                .nth(1)?
                .strip_suffix('s')?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn a_broker_that_closes_at_every_subscribe_is_retried_ever_more_slowly_and_said_why() {
    let times = 6;
    let (pki, _backend, front) = faulty(Fault::CloseOnSubscribe, times);
    let head = ConfigHead::new(front.port).host(NAME);
    let reconnect = "initial = \"100ms\"\nmax = \"1600ms\"\nmultiplier = 2.0\njitter = 0.0";
    let config = config(pki.path(), head, reconnect, "1s");
    let mut agent = start(&config);
    wait_connections(&front, times + 1, &mut agent);
    // The healthy connection subscribes and stays.
    std::thread::sleep(Duration::from_secs(1));
    let (log, status) = stop(agent);
    assert!(status.success(), "exit {status}\n{log}");
    let delays = retry_delays(&log, "without answering the subscription");
    println!("retrying in {delays:?} s after closes that followed SUBSCRIBE");
    assert_eq!(delays, [0.1, 0.2, 0.4, 0.8, 1.6, 1.6], "{log}");
    assert!(
        !log.contains("another client connected with the same client id"),
        "a close after SUBSCRIBE blamed on a client id clash:\n{log}"
    );
}

#[test]
fn a_broker_that_stops_acknowledging_is_said_to_stall_and_why() {
    let (pki, _backend, front) = faulty(Fault::WithholdAcks, usize::MAX);
    let head = ConfigHead::new(front.port)
        .host(NAME)
        .broker("keep_alive = \"5s\"");
    let config = config(pki.path(), head, FAST, "20ms");
    let mut agent = start(&config);
    agent.wait_for("publishing has stalled", Duration::from_secs(30));
    let (log, _) = stop(agent);
    let said = log
        .lines()
        .find(|l| l.contains("publishing has stalled"))
        .unwrap_or_default();
    println!("{said}");
    assert!(said.contains("none of the 48 messages in flight"), "{said}");
    assert!(said.contains("the connection is up"), "{said}");
    assert_eq!(
        front.connections(),
        1,
        "a stall is not a lost connection:\n{log}"
    );
}

/// A Mosquitto with mutual TLS and persistence, an operator's subscriber
/// with a persistent session on the sensor, pi-01's config for it, and
/// the operator's `mosquitto_pub` flags.
fn mosquitto(
    head: impl FnOnce(u16) -> ConfigHead,
    every: &str,
) -> (Pki, Broker, Subscriber, PathBuf, Vec<String>) {
    let pki = Pki::new("main");
    let server = pki.server(&["127.0.0.1"]);
    pki.client("pi-01");
    let operator = pki.client("operator");
    let broker = Broker::start(&BrokerSetup {
        tls: Some((pki.ca.cert.clone(), server)),
        require_certificate: true,
        persistence: true,
        ..BrokerSetup::default()
    });
    let sub = Subscriber::start(
        None,
        "127.0.0.1",
        broker.port,
        &pki,
        &operator,
        "pinpost/pi-01/sensor/#",
    );
    let config = config(pki.path(), head(broker.port), FAST, every);
    let mut operator_args = strings(&["-h", "127.0.0.1", "-p", &broker.port.to_string()]);
    operator_args.extend(tls_args(&pki.ca.cert, Some(&operator)));
    (pki, broker, sub, config, operator_args)
}

/// Every stream the subscriber saw arrived whole.
fn assert_streams_whole(sub: &Subscriber) -> u64 {
    assert!(!sub.seen.is_empty(), "no reading arrived");
    sub.seen
        .iter()
        .map(|(topic, seqs)| assert_no_reading_lost(topic, seqs))
        .sum()
}

#[test]
fn mosquitto_stopped_while_acknowledging_leaves_nothing_in_flight() {
    let (_pki, mut broker, mut sub, config, _) = mosquitto(ConfigHead::new, "5ms");
    let mut agent = start(&config);
    sub.read(Duration::from_secs(2));
    // Stopped mid-stream, five times: each stop comes while PUBACKs for a
    // full window are on their way.
    for round in 0..5 {
        broker.terminate();
        sub.read(Duration::from_millis(300));
        broker.start_again();
        sub.wait_subscribed(round + 2);
        sub.read(Duration::from_secs(2));
    }
    let _ = agent.log(Duration::ZERO);
    let (log, status) = stop(agent);
    sub.drain(Duration::from_secs(2), Duration::from_secs(20));
    assert!(status.success(), "exit {status}\n{log}");
    assert!(!log.contains(KEPT), "acknowledged messages kept:\n{log}");
    let total = assert_streams_whole(&sub);
    println!("{total} readings through 5 broker stops, none lost, nothing kept at SIGTERM");
}

#[test]
fn four_freezes_past_the_keep_alive_leave_nothing_in_flight() {
    // Keep-alive 10 s, stats every second, 100 readings a second: a 20 s
    // SIGSTOP outlasts the broker's 15 s patience, four times.
    let head = |port| ConfigHead::new(port).broker("keep_alive = \"10s\"");
    let (_pki, broker, mut sub, config, operator_args) = mosquitto(head, "10ms");
    let results = Witness::start(&broker, "pinpost/pi-01/cmd/relay/result", &operator_args);
    let mut agent = start(&config);
    sub.read(Duration::from_secs(3));
    for freeze in 1..=4 {
        let before: usize = sub.seen.values().map(Vec::len).sum();
        signal(&agent, "-STOP");
        sub.read(Duration::from_secs(5));
        // A command while frozen waits in the agent's socket; the broker
        // gives up on the agent at 15 s, and the close comes after it.
        let level = if freeze % 2 == 1 { "on" } else { "off" };
        let mut publish = Command::new("mosquitto_pub");
        publish.args(&operator_args).args([
            "-q",
            "1",
            "-t",
            "pinpost/pi-01/cmd/relay",
            "-m",
            level,
        ]);
        let out = publish.output().expect("mosquitto_pub");
        assert!(out.status.success(), "mosquitto_pub: {out:?}");
        sub.read(Duration::from_secs(15));
        signal(&agent, "-CONT");
        let answered = results.messages(Duration::from_secs(10));
        assert!(
            answered.iter().any(|l| l.contains("\"ok\":true")),
            "freeze {freeze}: the command sent during it was not answered ({answered:?}):\n{}",
            agent.log(Duration::from_millis(500))
        );
        println!("freeze {freeze}: the command sent during it was answered");
        sub.read(Duration::from_secs(6));
        let after: usize = sub.seen.values().map(Vec::len).sum();
        println!(
            "freeze {freeze}: {} readings in the 6 s after it",
            after - before
        );
        assert!(
            after - before > 300,
            "freeze {freeze}: only {} readings in the 6 s after it:\n{}",
            after - before,
            agent.log(Duration::ZERO)
        );
    }
    let (log, status) = stop(agent);
    sub.drain(Duration::from_secs(2), Duration::from_secs(20));
    assert!(status.success(), "exit {status}\n{log}");
    assert!(
        !log.contains(KEPT),
        "messages kept after the freezes:\n{log}"
    );
    assert!(!log.contains("stalled"), "{log}");
    let total = assert_streams_whole(&sub);
    println!("{total} readings through four 20 s freezes, none lost, nothing kept at SIGTERM");
}

#[test]
fn publish_gives_up_on_a_broker_that_never_confirms_within_its_timeout() {
    let (pki, _backend, front) = faulty(Fault::WithholdAcks, usize::MAX);
    let device = pki.client("pi-01");
    let mut args = strings(&["publish", "-h", NAME, "-p", &front.port.to_string()]);
    args.extend(tls_args(&pki.ca.cert, Some(&device)));
    args.extend(strings(&[
        "-t",
        "pinpost/pi-01/probe",
        "-m",
        "hello",
        "--timeout",
        "2s",
    ]));
    let t0 = Instant::now();
    // Without --timeout, the keep-alive (60 s) would be the only limit.
    let out = pinpost(&args, Duration::from_secs(20));
    let took = t0.elapsed();
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{said}");
    assert!(
        said.contains("the broker accepted the connection but confirmed 0 of 1 message(s) and then nothing for 2 s (--timeout)"),
        "{said}"
    );
    println!("gave up after {took:?}: {said}");

    let help = pinpost(&strings(&["publish", "--help"]), Duration::from_secs(10));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--timeout <DURATION>") && help.contains("[default: 30s]"),
        "{help}"
    );
}
