//! No reading lost: `pinpost run` publishing sensor streams at hundreds of
//! readings a second through broker restarts (with and without the
//! broker's persistence), a `kill -9` of the agent while offline, and a
//! network cut longer than the keep-alive; and no seq reused after a
//! `kill -9` while connected. The proof is what a subscriber
//! with a persistent session receives: every `seq` of every stream, in
//! order, duplicates counted, no gap.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// A `mosquitto_sub` with a persistent session (`-c`), QoS 1: the broker
/// keeps what it misses while it reconnects. mosquitto_sub exits when a TLS
/// connection is cut abruptly, so it is started again with the same client
/// id, which resumes the session.
struct Subscriber {
    command: Vec<String>,
    netns: Option<String>,
    child: Child,
    lines: mpsc::Receiver<String>,
    tx: mpsc::Sender<String>,
    subacks: usize,
    /// The client's own lines (connects, subscribes), for a failure message.
    chatter: Vec<String>,
    /// Per stream: every (seq, payload) received, in arrival order.
    seen: BTreeMap<String, Vec<(u64, String)>>,
    last_message: Instant,
}

impl Subscriber {
    fn start(
        netns: Option<&str>,
        host: &str,
        port: u16,
        pki: &Pki,
        operator: &Files,
        topic: &str,
    ) -> Subscriber {
        require_tool("mosquitto_sub", "mosquitto-clients");
        let mut command = strings(&["-oL", "mosquitto_sub", "-d", "-v", "-q", "1", "-c"]);
        command.extend(["-i".to_string(), format!("witness-{}", std::process::id())]);
        command.extend(strings(&["-h", host, "-p", &port.to_string(), "-t", topic]));
        command.extend(tls_args(&pki.ca.cert, Some(operator)));
        let (tx, lines) = mpsc::channel();
        let netns = netns.map(str::to_string);
        let child = spawn_sub(netns.as_deref(), &command, &tx);
        let mut s = Subscriber {
            command,
            netns,
            child,
            lines,
            tx,
            subacks: 0,
            chatter: Vec::new(),
            seen: BTreeMap::new(),
            last_message: Instant::now(),
        };
        s.wait_subscribed(1);
        s
    }

    fn respawn_if_gone(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.chatter
                .push(format!("(mosquitto_sub exited: {status}; started again)"));
            std::thread::sleep(Duration::from_millis(200));
            self.child = spawn_sub(self.netns.as_deref(), &self.command, &self.tx);
        }
    }

    /// Reads what has arrived, for up to `wait`.
    fn read(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) => self.take(&line),
                Err(_) => self.respawn_if_gone(),
            }
        }
    }

    fn take(&mut self, line: &str) {
        if line.starts_with("Client ") || line.starts_with("Subscribed") {
            if line.contains("received SUBACK") {
                self.subacks += 1;
            }
            if !line.contains("PUBLISH") && !line.contains("PUBACK") {
                self.chatter.push(line.to_string());
            }
            return;
        }
        let Some((topic, payload)) = line.split_once(' ') else {
            return;
        };
        if !topic.contains("/sensor/") {
            return;
        }
        let v: serde_json::Value = serde_json::from_str(payload)
            .unwrap_or_else(|e| panic!("not JSON on {topic}: {payload:?}: {e}"));
        let seq = v["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq: {payload}"));
        self.seen
            .entry(topic.to_string())
            .or_default()
            .push((seq, payload.to_string()));
        self.last_message = Instant::now();
    }

    fn wait_subscribed(&mut self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.subacks < count {
            assert!(
                Instant::now() < deadline,
                "the subscriber did not subscribe a {count}th time ({:?}):\n{}",
                self.child.try_wait(),
                self.chatter.join("\n")
            );
            self.read(Duration::from_millis(50));
        }
    }

    /// Reads until nothing new has come for `quiet`.
    fn drain(&mut self, quiet: Duration, limit: Duration) {
        let deadline = Instant::now() + limit;
        self.last_message = Instant::now();
        while self.last_message.elapsed() < quiet && Instant::now() < deadline {
            self.read(Duration::from_millis(100));
        }
    }
}

fn spawn_sub(netns: Option<&str>, command: &[String], tx: &mpsc::Sender<String>) -> Child {
    let mut cmd = match netns {
        Some(ns) => Netns::exec(ns, "stdbuf"),
        None => Command::new("stdbuf"),
    };
    let mut child = cmd
        .args(command)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mosquitto_sub");
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    for (pipe, tag) in [
        (Box::new(out) as Box<dyn std::io::Read + Send>, ""),
        (Box::new(err), "Client stderr: "),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(format!("{tag}{line}")).is_err() {
                    return;
                }
            }
        });
    }
    child
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one stream's arrivals show.
#[derive(Debug)]
struct Tally {
    unique: u64,
    duplicates: u64,
    first: u64,
    last: u64,
    /// (last seq before, first seq after) for every jump forward.
    gaps: Vec<(u64, u64)>,
}

/// Every seq new to the stream must be higher than all before it (order);
/// a jump of more than one is a gap, recorded. A seq seen before is a
/// duplicate, and must be the very same reading (a seq reused for another
/// reading is a bug).
fn tally(topic: &str, seqs: &[(u64, String)]) -> Tally {
    let mut t = Tally {
        unique: 0,
        duplicates: 0,
        first: seqs.first().map_or(0, |(seq, _)| *seq),
        last: 0,
        gaps: Vec::new(),
    };
    let mut seen = std::collections::HashMap::new();
    for (i, (seq, payload)) in seqs.iter().enumerate() {
        let seq = *seq;
        if let Some(first) = seen.insert(seq, payload) {
            assert_eq!(
                first, payload,
                "{topic}: seq {seq} was used for two different readings"
            );
            t.duplicates += 1;
            continue;
        }
        if t.unique > 0 {
            assert!(
                seq > t.last,
                "{topic}: after seq {} came seq {seq} (arrival {i}): a reordering",
                t.last
            );
            if seq > t.last + 1 {
                t.gaps.push((t.last, seq));
            }
        }
        t.unique += 1;
        t.last = seq;
    }
    t
}

fn config(dir: &Path, port: u16, host: &str, keep_alive: &str, spool: &Path) -> PathBuf {
    let path = dir.join("pinpost.toml");
    std::fs::write(
        &path,
        format!(
            r#"[device]
id = "pi-01"

[broker]
host = "{host}"
port = {port}
keep_alive = "{keep_alive}"
clean_session = false

[broker.tls]
ca_file = "ca.crt"
cert_file = "pi-01.crt"
key_file = "pi-01.key"

[reconnect]
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
