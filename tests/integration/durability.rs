//! No reading lost: `pinpost run` publishing sensor streams at hundreds of
//! readings a second through broker restarts (with and without the
//! broker's persistence), a `kill -9` of the agent while offline, and a
//! network cut longer than the keep-alive; and no seq reused after a
//! `kill -9` while connected. The proof is what a subscriber
//! with a persistent session receives: every `seq` of every stream, in
//! order, duplicates counted, no gap.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::subscriber::{Subscriber, tally};
use crate::common::*;

fn config(dir: &Path, port: u16, host: &str, keep_alive: &str, spool: &Path) -> PathBuf {
    let path = dir.join("pinpost.toml");
    std::fs::write(
        &path,
        format!(
            r#"{head}[reconnect]
initial = "100ms"
max = "500ms"

[board]
kind = "sim"

[outbox]
path = "{spool}"
stats_interval = "1s"

[[sensor]]
name = "fast"
kind = "sim"
interval = "5ms"
unit = "V"

[[sensor]]
name = "slow"
kind = "sim"
interval = "10ms"
unit = "°C"
start = 20.0
step = 0.25
"#,
            head = ConfigHead::new(port).host(host).broker(&format!(
                "keep_alive = \"{keep_alive}\"\nclean_session = false"
            )),
            spool = spool.display()
        ),
    )
    .expect("write config");
    path
}

/// Starts the agent and waits for `line` in its log.
fn agent(config: &Path, line: &str) -> Background {
    let mut a = Background::start_with_env(
        &strings(&["run", "--config", &config.display().to_string()]),
        &[("RUST_LOG", "pinpost=info".to_string())],
    );
    a.wait_for(line, Duration::from_secs(10));
    a
}

fn kill_9(agent: &Background) {
    let status = Command::new("kill")
        .args(["-KILL", &agent.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn report(sub: &Subscriber, seconds: f64) -> u64 {
    let mut total = 0;
    for (topic, seqs) in &sub.seen {
        let t = tally(topic, seqs);
        assert_eq!(t.first, 1, "{topic}: the first reading was lost");
        assert!(t.gaps.is_empty(), "{topic}: readings lost: {:?}", t.gaps);
        println!(
            "{topic}: seq {}..={} all {} received in order, {} duplicates, {:.0} readings/s",
            t.first,
            t.last,
            t.unique,
            t.duplicates,
            t.unique as f64 / seconds
        );
        total += t.unique;
    }
    total
}

#[test]
fn every_reading_arrives_through_broker_restarts_and_an_agent_kill() {
    let pki = Pki::new("main");
    let server = pki.server(&["127.0.0.1"]);
    pki.client("pi-01");
    let operator = pki.client("operator");
    let mut broker = Broker::start(&BrokerSetup {
        tls: Some((pki.ca.cert.clone(), server)),
        require_certificate: true,
        persistence: true,
        ..BrokerSetup::default()
    });
    // The agent reaches the broker through a gate the test can close.
    let gate = Gate::start("127.0.0.1", broker.port);
    let mut sub = Subscriber::start(
        None,
        "127.0.0.1",
        broker.port,
        &pki,
        &operator,
        "pinpost/pi-01/sensor/#",
    );
    let spool = pki.path().join("spool");
    let config = config(pki.path(), gate.port, "127.0.0.1", "5s", &spool);
    let started = Instant::now();
    let mut agent = agent(&config, "starting");
    let phase = |sub: &mut Subscriber, seconds: u64| sub.read(Duration::from_secs(seconds));

    phase(&mut sub, 5);
    // 1: a graceful broker restart; sessions are saved.
    broker.terminate();
    phase(&mut sub, 2);
    broker.start_again();
    sub.wait_subscribed(2);
    phase(&mut sub, 5);

    // 2: a crash without persistence: every session is gone, the agent's
    // and the subscriber's. The agent is held off until the subscriber has
    // subscribed again, so what it then sends has somewhere to go.
    gate.close();
    broker.stop();
    broker.forget_sessions();
    phase(&mut sub, 2);
    broker.start_again();
    sub.wait_subscribed(3);
    gate.open();
    phase(&mut sub, 5);

    // 3: the broker goes away, the agent is killed -9 while offline and
    // started again before the broker returns.
    broker.terminate();
    phase(&mut sub, 2);
    kill_9(&agent);
    let _ = agent.finish(Duration::from_secs(5));
    agent = self::agent(&config, "kept in");
    phase(&mut sub, 2);
    broker.start_again();
    sub.wait_subscribed(4);
    phase(&mut sub, 7);

    // A graceful stop sends what is left before it exits.
    terminate(&agent);
    let seconds = started.elapsed().as_secs_f64();
    let (exit, _) = agent.finish(Duration::from_secs(15));
    assert!(exit.success(), "agent exit {exit}");
    sub.drain(Duration::from_secs(3), Duration::from_secs(30));

    assert_eq!(
        sub.seen.len(),
        2,
        "both streams arrived: {:?}",
        sub.seen.keys()
    );
    println!(
        "{seconds:.1} s with 3 broker restarts (one without persistence) and a kill -9 of the \
         agent while offline:"
    );
    let total = report(&sub, seconds);
    println!(
        "{total} readings in total, {:.0} readings/s",
        total as f64 / seconds
    );
    assert!(
        total as f64 / seconds >= 100.0,
        "the test must run at 100+ readings/s"
    );
    // The graceful stop left nothing behind on disk for a next run.
    let restarted = agent_once_more(&config);
    assert!(!restarted.contains("by an earlier run"), "{restarted}");
}

/// Starts the agent briefly and returns its log: whether anything was left.
fn agent_once_more(config: &Path) -> String {
    let mut cmd = Command::new(PINPOST);
    cmd.args(["run", "--config", &config.display().to_string()])
        .env("RUST_LOG", "pinpost=info");
    let mut a = Background::spawn(cmd);
    a.wait_for("starting", Duration::from_secs(10));
    let _ = Command::new("kill")
        .args(["-TERM", &a.pid().to_string()])
        .status();
    a.log(Duration::from_secs(15))
}

fn terminate(agent: &Background) {
    let status = Command::new("kill")
        .args(["-TERM", &agent.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn a_cut_longer_than_the_keep_alive_is_noticed_in_time_and_loses_nothing() {
    const KEEP_ALIVE: Duration = Duration::from_secs(5);
    let net = Netns::pair("cut");
    let pki = Pki::new("main");
    let server = pki.server(&[&net.b_addr]);
    pki.client("pi-01");
    let operator = pki.client("operator");
    // The broker and the subscriber in one namespace, the agent in the
    // other, a veth cable between them.
    let broker = Broker::start(&BrokerSetup {
        bind: Some(net.b_addr.clone()),
        tls: Some((pki.ca.cert.clone(), server)),
        require_certificate: true,
        netns: Some(net.b.clone()),
        ..BrokerSetup::default()
    });
    let mut sub = Subscriber::start(
        Some(&net.b),
        &net.b_addr,
        broker.port,
        &pki,
        &operator,
        "pinpost/pi-01/sensor/#",
    );
    let spool = pki.path().join("spool");
    let config = config(pki.path(), broker.port, &net.b_addr, "5s", &spool);
    let mut cmd = Netns::exec(&net.a, PINPOST);
    cmd.args(["run", "--config", &config.display().to_string()])
        .env("RUST_LOG", "pinpost=info");
    let started = Instant::now();
    let mut agent = Background::spawn(cmd);
    agent.wait_for("connected broker=", Duration::from_secs(15));
    sub.read(Duration::from_secs(3));

    net.cable(false);
    let cut = Instant::now();
    agent.wait_for("lost the connection", Duration::from_secs(15));
    let noticed = cut.elapsed();
    // Stay cut well past the keep-alive (and the broker's 1.5x timeout).
    sub.read((cut + KEEP_ALIVE * 3).saturating_duration_since(Instant::now()));
    net.cable(true);
    let outage = cut.elapsed();
    agent.wait_for("connected broker=", Duration::from_secs(20));
    let back = cut.elapsed() - outage;
    sub.read(Duration::from_secs(4));
    // The stats message (published every second here) counts the outage.
    let out = Netns::exec(&net.b, "mosquitto_sub")
        .args(["-C", "1", "-W", "10", "-h", &net.b_addr])
        .args(["-p", &broker.port.to_string(), "-t", "pinpost/pi-01/stats"])
        .args(tls_args(&pki.ca.cert, Some(&operator)))
        .output()
        .expect("mosquitto_sub");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stats: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    println!("stats after the cut: {stats}");
    assert_eq!(stats["reconnects"], 1, "{stats}");
    assert_eq!(stats["dropped"], 0, "{stats}");
    assert!(stats["queued"].as_u64().is_some() && stats["spool_bytes"].as_u64().is_some());
    terminate(&agent);
    let seconds = started.elapsed().as_secs_f64();
    let (exit, _) = agent.finish(Duration::from_secs(15));
    assert!(exit.success(), "agent exit {exit}");
    sub.drain(Duration::from_secs(3), Duration::from_secs(30));

    assert_eq!(sub.seen.len(), 2, "both streams: {:?}", sub.seen.keys());
    println!(
        "cable cut for {:.1} s with keep-alive {} s: the agent noticed after {:.2} s \
         (limit {} s), was connected again {:.2} s after the cable returned",
        outage.as_secs_f64(),
        KEEP_ALIVE.as_secs(),
        noticed.as_secs_f64(),
        (KEEP_ALIVE * 2).as_secs(),
        back.as_secs_f64()
    );
    report(&sub, seconds);
    assert!(
        noticed < KEEP_ALIVE * 2,
        "the dead link was noticed after {noticed:?}, more than 2x keep-alive"
    );
}

/// A kill -9 while connected loses what was only in memory (up to a window
/// in flight), but the next run must never hand out a seq that the killed
/// one may have published: it continues after the seqs reserved on disk,
/// and says why there is a gap. A clean stop then continues with no gap.
#[test]
fn after_a_kill_while_connected_no_seq_is_reused_and_a_clean_stop_leaves_no_gap() {
    let pki = Pki::new("kill");
    let server = pki.server(&["127.0.0.1"]);
    pki.client("pi-01");
    let operator = pki.client("operator");
    let broker = Broker::start(&BrokerSetup {
        tls: Some((pki.ca.cert.clone(), server)),
        require_certificate: true,
        ..BrokerSetup::default()
    });
    let mut sub = Subscriber::start(
        None,
        "127.0.0.1",
        broker.port,
        &pki,
        &operator,
        "pinpost/pi-01/sensor/#",
    );
    let spool = pki.path().join("spool");
    let config = config(pki.path(), broker.port, "127.0.0.1", "5s", &spool);

    let first = agent(&config, "connected");
    sub.read(Duration::from_secs(3));
    kill_9(&first);
    let _ = first.finish(Duration::from_secs(5));
    let mut second = agent(&config, "connected");
    let log = second.log(Duration::from_millis(200));
    assert!(log.contains("did not stop cleanly"), "{log}");
    sub.read(Duration::from_secs(3));
    terminate(&second);
    let (exit, _) = second.finish(Duration::from_secs(15));
    assert!(exit.success(), "agent exit {exit}");
    let mut third = agent(&config, "connected");
    let log = third.log(Duration::from_millis(200));
    assert!(!log.contains("did not stop cleanly"), "{log}");
    sub.read(Duration::from_secs(2));
    terminate(&third);
    let _ = third.finish(Duration::from_secs(15));
    sub.drain(Duration::from_secs(2), Duration::from_secs(20));

    assert_eq!(sub.seen.len(), 2, "both streams: {:?}", sub.seen.keys());
    for (topic, seqs) in &sub.seen {
        // tally() fails on a seq reused for a different reading.
        let t = tally(topic, seqs);
        println!(
            "{topic}: {} readings, seq {}..={}, gaps {:?}",
            t.unique, t.first, t.last, t.gaps
        );
        assert_eq!(t.first, 1, "{topic}: the first reading was lost");
        assert_eq!(
            t.gaps.len(),
            1,
            "{topic}: one gap, at the kill; none at the clean stop: {:?}",
            t.gaps
        );
        let (before, after) = t.gaps[0];
        assert!(
            after - before <= pinpost::outbox::SEQ_RESERVE + pinpost::link::WINDOW as u64,
            "{topic}: the gap from {before} to {after} is larger than a reservation"
        );
    }
}
