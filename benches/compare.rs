//! How fast, how small, how frugal: pinpost measured beside the tools users
//! would pick instead, in one run on one machine, so ratios are comparable
//! even on a shared, noisy machine. `scripts/bench.sh` runs it (it installs
//! Mosquitto and the clients if missing); BENCHMARKS.md holds the figures.
//!
//! Everything talks to a real Mosquitto on 127.0.0.1 with mutual TLS, the
//! same harness the integration tests use. Figures, not pass/fail.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use pinpost::board::{PinPlan, SimBoard, SimHandle};
use pinpost::config::{Overrides, from_text};
use pinpost::link::{Link, LinkEvent, LinkOptions, Publisher, Qos, Retry};
use pinpost::outbox::{Limits, Outbox};

const EDGES: usize = 10_000;
const COMMANDS: usize = 1_000;
const READINGS: usize = 20_000;
const ONE_SHOTS: usize = 21;
const IDLE: Duration = Duration::from_secs(60);

struct Rig {
    pki: Pki,
    broker: Broker,
    operator: Files,
}

struct Row {
    figure: String,
    pinpost: String,
    reference: String,
    ratio: String,
}

fn row(figure: &str, pinpost: String, reference: &str, ratio: Option<f64>) -> Row {
    Row {
        figure: figure.into(),
        pinpost,
        reference: reference.into(),
        ratio: ratio.map_or("-".into(), |r| format!("{r:.2}x")),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99), samples[samples.len() - 1])
}

fn base_config(rig: &Rig, id: &str, body: &str) -> String {
    format!(
        r#"[device]
id = "{id}"

[broker]
host = "127.0.0.1"
port = {port}

[broker.tls]
ca_file = "ca.crt"
cert_file = "pi-01.crt"
key_file = "pi-01.key"

[reconnect]
initial = "1s"
max = "10s"

[board]
kind = "sim"

[outbox]
path = "{outbox}"

{body}
"#,
        port = rig.broker.port,
        outbox = rig.pki.path().join(format!("outbox-{id}")).display(),
    )
}

/// The agent in this process on a sim board; stopped by dropping `stop`.
fn start_agent(
    rig: &Rig,
    text: &str,
) -> (
    SimHandle,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let config = from_text(
        text,
        Some(&rig.pki.path().join("bench.toml")),
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("bench config: {e}"));
    let (edges_tx, edges) = tokio::sync::mpsc::unbounded_channel();
    let (board, pins) = SimBoard::new(
        &PinPlan::from_config(&config),
        &config.board.wires,
        edges_tx,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = pinpost::agent::run(config, Box::new(board), edges, async {
            let _ = stopped.await;
        })
        .await;
    });
    (pins, stop, task)
}

/// A client with the operator's certificate, subscribed to `filter`.
async fn operator(rig: &Rig, filter: &str) -> Link {
    client(
        rig,
        &rig.operator,
        "bench-operator",
        vec![(filter.to_string(), Qos::AtLeastOnce)],
    )
    .await
}

async fn client(rig: &Rig, files: &Files, id: &str, subs: Vec<(String, Qos)>) -> Link {
    let text = format!(
        "[device]\nid = \"{id}\"\n[broker]\nhost = \"127.0.0.1\"\nport = {}\n[broker.tls]\n\
         ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        rig.broker.port,
        rig.pki.ca.cert.display(),
        files.cert.display(),
        files.key.display()
    );
    let config = from_text(&text, None, &Overrides::default()).expect("client config");
    let tls = config
        .broker
        .tls
        .as_ref()
        .map(pinpost::tls::setup)
        .transpose()
        .expect("tls");
    let mut link = Link::start(
        LinkOptions {
            broker: config.broker.clone(),
            client_id: id.to_string(),
            reconnect: config.reconnect.clone(),
            retry: Retry::Forever,
            will: None,
            subscriptions: subs.clone(),
        },
        tls,
    );
    let mut subscribed = subs.is_empty();
    let mut connected = false;
    while !(connected && subscribed) {
        match link.next_event().await {
            Some(LinkEvent::Connected { .. }) => connected = true,
            Some(LinkEvent::Subscribed { .. }) => subscribed = true,
            Some(_) => {}
            None => panic!("link to the bench broker ended"),
        }
    }
    link
}

/// Waits for a message on `topic` whose JSON `value` is `value`.
async fn message(link: &mut Link, topic: &str, value: bool) {
    loop {
        if let Some(LinkEvent::Message {
            topic: t, payload, ..
        }) = link.next_event().await
        {
            if t == topic {
                let v: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                if v["value"] == value {
                    return;
                }
            }
        }
    }
}

/// 1. A sim input edge to a subscriber holding the message.
async fn edge_latency(rig: &Rig, rows: &mut Vec<Row>) {
    let text = base_config(
        rig,
        "edges",
        "[[input]]\nname = \"edge\"\npin = 17\ndebounce = \"0ms\"\n",
    );
    let mut sub = operator(rig, "pinpost/edges/input/edge").await;
    let (pins, stop, task) = start_agent(rig, &text);
    message(&mut sub, "pinpost/edges/input/edge", false).await;
    let mut samples = Vec::with_capacity(EDGES);
    for i in 0..EDGES {
        let high = i % 2 == 0;
        let t0 = Instant::now();
        pins.set_input(17, high);
        message(&mut sub, "pinpost/edges/input/edge", high).await;
        samples.push(t0.elapsed());
    }
    let _ = stop.send(());
    let _ = task.await;
    let (p50, p99, max) = percentiles(samples);
    rows.push(row(
        &format!("edge → subscriber, {EDGES} edges, p50 / p99 / max"),
        format!("{} / {} / {}", ms(p50), ms(p99), ms(max)),
        "(no equivalent)",
        None,
    ));
}

/// 2. A command published by a client to the sim output changing.
async fn command_latency(rig: &Rig, rows: &mut Vec<Row>) {
    let text = base_config(rig, "cmds", "[[output]]\nname = \"relay\"\npin = 27\n");
    let link = operator(rig, "pinpost/cmds/output/relay").await;
    let publisher: Publisher = link.publisher();
    // Unread events would fill the link's queue and stall its connection.
    let draining = drain(link);
    let (pins, stop, task) = start_agent(rig, &text);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A thread watching the pin, so the moment it changes is seen at once.
    let (changed_tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let watcher = pins.clone();
    let watching = std::thread::spawn(move || {
        let mut last = watcher.level(27);
        for _ in 0..COMMANDS {
            loop {
                let now = watcher.level(27);
                if now != last {
                    last = now;
                    if changed_tx.send(Instant::now()).is_err() {
                        return;
                    }
                    break;
                }
                // Yield rather than spin: on two cores a spinning watcher
                // would take the CPU the agent needs.
                std::thread::yield_now();
            }
        }
    });
    let mut samples = Vec::with_capacity(COMMANDS);
    for i in 0..COMMANDS {
        let payload = if i % 2 == 0 { "on" } else { "off" };
        let t0 = Instant::now();
        publisher
            .publish(
                "pinpost/cmds/cmd/relay",
                payload.into(),
                Qos::AtLeastOnce,
                false,
            )
            .await
            .expect("publish a command");
        let at = changed.recv().await.expect("the pin changes");
        samples.push(at - t0);
    }
    let _ = watching.join();
    let _ = stop.send(());
    let _ = task.await;
    draining.abort();
    let (p50, p99, max) = percentiles(samples);
    rows.push(row(
        &format!("command → pin, {COMMANDS} commands, p50 / p99 / max"),
        format!("{} / {} / {}", ms(p50), ms(p99), ms(max)),
        "(no equivalent)",
        None,
    ));
}

/// 3. QoS 1 readings through the outbox and link, against `mosquitto_pub -l`.
async fn throughput(rig: &Rig, rows: &mut Vec<Row>) {
    let device = Files {
        cert: rig.pki.path().join("pi-01.crt"),
        key: rig.pki.path().join("pi-01.key"),
    };
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
    let mut link = client(rig, &device, "bench-rate", vec![]).await;
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
        if let Some(LinkEvent::Acked {
            token: Some(id), ..
        }) = link.next_event().await
        {
            outbox.acked(id);
            pump(&mut outbox);
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
    .args(tls_args(&rig.pki.ca.cert, Some(&device)))
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

/// Reads a link's events and throws them away.
fn drain(mut link: Link) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while link.next_event().await.is_some() {} })
}

/// Counts messages per topic as they arrive, in its own task.
struct Counter {
    counts: tokio::sync::watch::Receiver<BTreeMap<String, usize>>,
    _task: tokio::task::JoinHandle<()>,
}

fn counter(mut link: Link) -> Counter {
    let (tx, counts) = tokio::sync::watch::channel(BTreeMap::new());
    let task = tokio::spawn(async move {
        while let Some(event) = link.next_event().await {
            if let LinkEvent::Message { topic, .. } = event {
                tx.send_modify(|c| *c.entry(topic).or_default() += 1);
            }
        }
    });
    Counter {
        counts,
        _task: task,
    }
}

impl Counter {
    /// How many arrived on `topic`: once `n` have, or none came for 5 s.
    async fn wait(&self, topic: &str, n: usize) -> usize {
        let mut counts = self.counts.clone();
        loop {
            let got = counts.borrow().get(topic).copied().unwrap_or(0);
            if got >= n {
                return got;
            }
            if tokio::time::timeout(Duration::from_secs(5), counts.changed())
                .await
                .is_err()
            {
                return got;
            }
        }
    }
}

/// 4. `pinpost publish` against `mosquitto_pub`, one message each, alternated.
fn one_shot(rig: &Rig, rows: &mut Vec<Row>) {
    let device = Files {
        cert: rig.pki.path().join("pi-01.crt"),
        key: rig.pki.path().join("pi-01.key"),
    };
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
            .args(tls_args(&rig.pki.ca.cert, Some(&device)))
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
        &format!("one-shot publish, mutual TLS, QoS 1, median of {ONE_SHOTS}"),
        ms(a),
        &format!("mosquitto_pub: {}", ms(b)),
        Some(a.as_secs_f64() / b.as_secs_f64()),
    ));
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of `pid`, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; fields start after its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// 5. Footprint of `pinpost run` with 8 inputs, 4 outputs and 4 sensors.
fn footprint(rig: &Rig, rows: &mut Vec<Row>) {
    let mut body = String::new();
    for (i, pin) in [4, 5, 6, 12, 13, 16, 17, 22].iter().enumerate() {
        body += &format!("[[input]]\nname = \"in{i}\"\npin = {pin}\n\n");
    }
    for (i, pin) in [23, 24, 25, 27].iter().enumerate() {
        body += &format!("[[output]]\nname = \"out{i}\"\npin = {pin}\n\n");
    }
    for i in 0..4 {
        body += &format!("[[sensor]]\nname = \"s{i}\"\nkind = \"sim\"\ninterval = \"10s\"\n\n");
    }
    let path = rig.pki.path().join("footprint.toml");
    std::fs::write(&path, base_config(rig, "footprint", &body)).expect("write config");
    let mut agent = Background::start(&strings(&["run", "--config", &path.display().to_string()]));
    agent.wait_for("connected", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(5));
    let pid = agent.pid();
    let idle_rss = proc_status(pid, "VmRSS:");
    let before = cpu_ticks(pid);
    std::thread::sleep(IDLE);
    let cpu = (cpu_ticks(pid) - before) as f64 / 100.0;
    let peak = proc_status(pid, "VmHWM:");
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = agent.log(Duration::from_secs(10));
    rows.push(row(
        "pinpost run, 8 inputs + 4 outputs + 4 sensors: idle RSS / peak RSS",
        format!("{idle_rss} KiB / {peak} KiB"),
        "(mqtt-io: not measured yet)",
        None,
    ));
    rows.push(row(
        &format!("CPU time over {} s idle", IDLE.as_secs()),
        format!("{cpu:.2} s ({:.3}%)", 100.0 * cpu / IDLE.as_secs_f64()),
        "-",
        None,
    ));
    for target in [
        "x86_64-unknown-linux-gnu",
        "aarch64-unknown-linux-gnu",
        "armv7-unknown-linux-gnueabihf",
    ] {
        let bin = Path::new("target/debian-rustc")
            .join(target)
            .join("release/pinpost");
        if !bin.exists() {
            let status = Command::new("scripts/cross-build.sh").arg(target).status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "scripts/cross-build.sh {target} failed; run it to see why"
            );
        }
        let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
        rows.push(row(
            &format!("stripped release binary, {target} (no demo)"),
            format!("{size} B ({:.2} MiB)", size as f64 / 1048576.0),
            "-",
            None,
        ));
    }
}

/// 6. N agents' links against one Mosquitto, which is then restarted.
async fn fleet(rig: &mut Rig, n: usize, rows: &mut Vec<Row>) {
    let device = Files {
        cert: rig.pki.path().join("pi-01.crt"),
        key: rig.pki.path().join("pi-01.key"),
    };
    let mut links = Vec::with_capacity(n);
    for i in 0..n {
        links.push(client(rig, &device, &format!("fleet-{n}-{i}"), vec![]).await);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut tasks = Vec::new();
    for mut link in links {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = link.next_event().await {
                if matches!(event, LinkEvent::Connected { .. }) && tx.send(Instant::now()).is_err()
                {
                    return;
                }
            }
        }));
    }
    drop(tx);
    let t0 = Instant::now();
    rig.broker.restart();
    let mut times = Vec::with_capacity(n);
    while times.len() < n {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(at)) => times.push(at.duration_since(t0)),
            _ => break,
        }
    }
    for t in tasks {
        t.abort();
    }
    let all = times.iter().max().copied().unwrap_or_default();
    let mut buckets: BTreeMap<u128, usize> = BTreeMap::new();
    for t in &times {
        *buckets.entry(t.as_millis() / 100).or_default() += 1;
    }
    let peak = buckets.values().max().copied().unwrap_or(0) * 10;
    rows.push(row(
        &format!("fleet of {n}: broker restarted, all reconnected / peak reconnects"),
        format!(
            "{}/{n} in {:.2} s / {peak} per s",
            times.len(),
            all.as_secs_f64()
        ),
        "(backoff 1 s..10 s, jitter 0.5)",
        None,
    ));
}

fn main() {
    for tool in ["mosquitto", "mosquitto_pub"] {
        require_tool(tool, "mosquitto mosquitto-clients");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let pki = Pki::new("bench");
    let server = pki.server(&["127.0.0.1"]);
    pki.client("pi-01");
    let operator = pki.client("operator");
    // Mosquitto drops QoS 1 messages beyond 1000 queued for a subscriber
    // by default; the witness must see every one.
    let broker = Broker::start(&BrokerSetup {
        tls: Some((pki.ca.cert.clone(), server)),
        require_certificate: true,
        extra: vec!["max_queued_messages 0".into()],
        ..BrokerSetup::default()
    });
    let mut rig = Rig {
        pki,
        broker,
        operator,
    };
    let started = Instant::now();
    let mut rows = Vec::new();
    runtime.block_on(async {
        eprintln!("bench: edge latency ({EDGES} edges)");
        edge_latency(&rig, &mut rows).await;
        eprintln!("bench: command latency ({COMMANDS} commands)");
        command_latency(&rig, &mut rows).await;
        eprintln!("bench: throughput ({READINGS} readings each)");
        throughput(&rig, &mut rows).await;
    });
    eprintln!("bench: one-shot publish ({ONE_SHOTS} runs each)");
    one_shot(&rig, &mut rows);
    eprintln!("bench: footprint ({} s idle)", IDLE.as_secs());
    footprint(&rig, &mut rows);
    runtime.block_on(async {
        for n in [100, 1000] {
            eprintln!("bench: fleet of {n}");
            fleet(&mut rig, n, &mut rows).await;
        }
    });
    let w = rows
        .iter()
        .map(|r| r.figure.chars().count())
        .max()
        .unwrap_or(10);
    let p = rows
        .iter()
        .map(|r| r.pinpost.chars().count())
        .max()
        .unwrap_or(10);
    let q = rows
        .iter()
        .map(|r| r.reference.chars().count())
        .max()
        .unwrap_or(10);
    println!(
        "\n| {:<w$} | {:<p$} | {:<q$} | ratio |",
        "figure", "pinpost", "reference"
    );
    println!(
        "|{}|{}|{}|-------|",
        "-".repeat(w + 2),
        "-".repeat(p + 2),
        "-".repeat(q + 2)
    );
    for r in &rows {
        println!(
            "| {:<w$} | {:<p$} | {:<q$} | {:>5} |",
            r.figure, r.pinpost, r.reference, r.ratio
        );
    }
    println!("\nwhole run: {:.0} s", started.elapsed().as_secs_f64());
}
