//! A real distributed broker: `pinpost run` against a 3-node RabbitMQ 3.10
//! cluster (Debian's package, its MQTT plugin, installed by
//! scripts/rabbitmq.sh) with the settings the README's "RabbitMQ" section
//! gives: `mqtt.durable_queue_type = quorum` and a persistent session
//! (`clean_session = false`, so only stamped commands). The node the agent
//! is connected to is killed (SIGKILL, a power cut); the agent fails over
//! to another. An independent subscriber with a persistent session on a
//! node that stays up counts every `seq` of every stream: none missing up
//! to the clean stop, which keeps nothing unacknowledged. A stamped command
//! sent after the failover is applied and answered `ok:true`, and the
//! retained `status` on the node the agent is then connected to is
//! `online` (RabbitMQ keeps retained messages per node: what the others
//! show is printed, not asserted; the README says what they may show).
//! A signed release published through that node is fetched and checked.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::rabbitmq::Cluster;
use crate::common::subscriber::{Subscriber, tally};
use crate::common::*;

/// The whole test, cluster start included, stays under this.
const DEADLINE: Duration = Duration::from_secs(300);

/// Bounds every wait by what is left of [`DEADLINE`].
struct Clock(Instant);

impl Clock {
    fn within(&self, wait: Duration) -> Duration {
        let left = DEADLINE.saturating_sub(self.0.elapsed());
        assert!(
            !left.is_zero(),
            "the test ran past its deadline of {DEADLINE:?}"
        );
        wait.min(left)
    }
}

fn config(dir: &Path, hosts: &[String], spool: &Path) -> PathBuf {
    let path = dir.join("pinpost.toml");
    // The laptop's release key: the agent takes releases it signed.
    let out = pinpost(
        &strings(&[
            "certs",
            "--dir",
            &dir.join("release").display().to_string(),
            "release-key",
        ]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // A persistent session: the broker keeps pinpost's subscription (a
    // quorum queue, on every node) while it moves, and queues commands.
    let head = ConfigHead::with_hosts(hosts)
        .broker("keep_alive = \"5s\"\nconnect_timeout = \"2s\"\nclean_session = false");
    std::fs::write(
        &path,
        format!(
            r#"{head}[reconnect]
initial = "100ms"
max = "1s"

[board]
kind = "sim"
wires = [[27, 17]]

[[input]]
name = "door"
pin = 17
debounce = "0ms"

[[output]]
name = "relay"
pin = 27

[outbox]
path = "{spool}"

[update]
release_key = "{release_key}"

[[sensor]]
name = "load"
kind = "sim"
interval = "20ms"
unit = "V"

[[sensor]]
name = "temp"
kind = "sim"
interval = "50ms"
unit = "°C"
"#,
            spool = spool.display(),
            release_key = dir.join("release/release.pub").display()
        ),
    )
    .expect("write config");
    path
}

/// The broker named by the last `connected broker=…` line of `log`.
fn connected_to(log: &str) -> String {
    log.lines()
        .filter_map(|l| l.split("connected broker=").nth(1))
        .next_back()
        .map(|rest| rest.split_whitespace().next().unwrap_or(rest).to_string())
        .expect("a connected line")
}

fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis()
}

/// Connection flags for the operator's mosquitto tools on one node.
fn operator_args(port: u16, pki: &Pki, operator: &Files) -> Vec<String> {
    let mut args = strings(&["-h", "127.0.0.1", "-p", &port.to_string()]);
    args.extend(tls_args(&pki.ca.cert, Some(operator)));
    args
}

/// Publishes a stamped command to the relay, as an operator would.
fn command(args: &[String], id: &str, action: &str) {
    let payload = format!(
        r#"{{"action":"{action}","id":"{id}","ts":{}}}"#,
        now_millis()
    );
    let out = Command::new("mosquitto_pub")
        .args(args)
        .args(["-q", "1", "-t", "pinpost/pi-01/cmd/relay", "-m", &payload])
        .output()
        .expect("run mosquitto_pub");
    assert!(out.status.success(), "mosquitto_pub: {out:?}");
}

/// Waits for the result of command `id` and returns it as JSON.
fn result_of(results: &Witness, id: &str, wait: Duration) -> serde_json::Value {
    let seen = results.wait_until(&format!("the result of {id}"), wait, |line| {
        line.contains(&format!("\"id\":\"{id}\""))
    });
    let line = seen.last().expect("the result line");
    let (_, body) = line.split_once(' ').expect("topic and payload");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("result not JSON: {body}: {e}"))
}

/// The retained status a fresh subscriber on one node gets ("" for none
/// within `wait`).
fn retained_status(args: &[String], wait: Duration) -> String {
    let out = Command::new("mosquitto_sub")
        .args(args)
        .args(["-C", "1", "-W", &wait.as_secs().max(1).to_string()])
        .args(["-t", "pinpost/pi-01/status"])
        .output()
        .expect("run mosquitto_sub");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A pin's state sent again on a reconnect keeps its `seq` (it is the same
/// reading) but carries the time it was sent again: compare those without
/// `ts`, so that only a seq reused for another value counts as a bug.
fn same_reading(seqs: &[(u64, String)]) -> Vec<(u64, String)> {
    seqs.iter()
        .map(|(seq, payload)| {
            let mut v: serde_json::Value = serde_json::from_str(payload).expect("JSON reading");
            if let Some(fields) = v.as_object_mut() {
                fields.remove("ts");
            }
            (*seq, v.to_string())
        })
        .collect()
}

/// A 300 KiB package (10 chunks) signed with the key in `release/`,
/// published for pi-01 through the node at `port`; waits for the agent's
/// `verified` and compares what it kept.
fn release_through(pki: &Pki, operator: &Files, port: u16, spool: &Path, wait: Duration) {
    let dir = pki.path().join("release");
    let deb = deb(&dir, "99.0", "amd64", 300 * 1024);
    let reports = Witness::at(
        "127.0.0.1",
        port,
        "pinpost/pi-01/update",
        &tls_args(&pki.ca.cert, Some(operator))
            .into_iter()
            .chain(["-i".to_string(), format!("updates-{}", std::process::id())])
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sign = pinpost(
        &strings(&[
            "release",
            "sign",
            &deb.display().to_string(),
            "--key",
            &dir.join("private/release.key").display().to_string(),
        ]),
        wait,
    );
    assert!(sign.status.success(), "{}", stderr(&sign));
    let mut publish = strings(&[
        "release",
        "publish",
        &format!("{}.manifest", deb.display()),
        "--devices",
        "pi-01",
        "--dir",
        &dir.display().to_string(),
    ]);
    publish.extend(operator_args(port, pki, operator));
    let started = Instant::now();
    let out = pinpost(&publish, wait);
    assert!(out.status.success(), "{}", stderr(&out));
    reports.wait_until("pi-01's release 99.0 verified", wait, |l| {
        l.contains("\"state\":\"verified\"") && l.contains("\"version\":\"99.0\"")
    });
    let kept = std::fs::read(spool.join("update/ready/pinpost_99.0_amd64.deb")).unwrap();
    assert_eq!(
        kept,
        std::fs::read(&deb).unwrap(),
        "the package kept is the one signed"
    );
    println!(
        "a {} byte release went through RabbitMQ and was checked {:.2} s after publish began",
        kept.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn the_node_pinpost_uses_is_killed_and_nothing_is_lost_or_left_unanswered() {
    let clock = Clock(Instant::now());
    let pki = Pki::new("rabbitmq");
    let server = pki.server(&["127.0.0.1", "localhost"]);
    pki.client("pi-01");
    let operator = pki.client("operator");
    let mut cluster = Cluster::start(&pki, &server, &["pi-01", "operator"]);
    let formed = clock.0.elapsed();
    for node in &cluster.nodes {
        println!(
            "{} started in {:.1} s (MQTT on {})",
            node.name,
            node.started_in.as_secs_f64(),
            node.address()
        );
    }
    println!(
        "3 nodes started side by side in {:.1} s, joined in {:.1} s; cluster ready {:.1} s after the test began",
        cluster.started_in.as_secs_f64(),
        cluster.joined_in.as_secs_f64(),
        formed.as_secs_f64()
    );

    // The operator's side lives on the last node; the agent tries the
    // nodes in order, so it starts on the first.
    let watch = cluster.nodes.len() - 1;
    let watch_args = operator_args(cluster.nodes[watch].mqtt_port, &pki, &operator);
    let mut witness = Subscriber::start(
        None,
        "127.0.0.1",
        cluster.nodes[watch].mqtt_port,
        &pki,
        &operator,
        "pinpost/pi-01/#",
    );
    let results = Witness::at(
        "127.0.0.1",
        cluster.nodes[watch].mqtt_port,
        "pinpost/pi-01/cmd/relay/result",
        &tls_args(&pki.ca.cert, Some(&operator))
            .into_iter()
            .chain(["-i".to_string(), format!("results-{}", std::process::id())])
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));

    let hosts: Vec<String> = cluster.nodes.iter().map(|n| n.address()).collect();
    let spool = pki.path().join("spool");
    let config = config(pki.path(), &hosts, &spool);
    let mut agent = Background::start_with_env(
        &strings(&["run", "--config", &config.display().to_string()]),
        &[("RUST_LOG", "pinpost=info".to_string())],
    );
    agent.wait_for("connected broker=", clock.within(Duration::from_secs(30)));
    let first = connected_to(&agent.log(Duration::ZERO));
    let victim = cluster
        .node_at(&first)
        .unwrap_or_else(|| panic!("connected to {first}, which is no node of {hosts:?}"));
    assert_ne!(
        victim, watch,
        "the agent should start on the first node, not the subscriber's"
    );
    // RabbitMQ's own view, to be sure which node holds the agent.
    let clients = cluster
        .mqtt_clients(watch)
        .unwrap_or_else(|e| panic!("{e}"));
    let held_by: Vec<&str> = clients
        .iter()
        .filter(|(id, _)| id.starts_with("pi-01"))
        .map(|(_, at)| at.map_or("no node", |i| cluster.nodes[i].name.as_str()))
        .collect();
    println!(
        "the agent says it is on {} ({first}); RabbitMQ has it on {held_by:?}",
        cluster.nodes[victim].name
    );
    assert_eq!(
        held_by,
        [cluster.nodes[victim].name.as_str()],
        "RabbitMQ's MQTT connections: {clients:?}"
    );

    // A command before the failover, so one after it is told apart from
    // a setup that never worked.
    command(&watch_args, "before", "on");
    let before = result_of(&results, "before", clock.within(Duration::from_secs(20)));
    assert_eq!(
        before["ok"], true,
        "the command before the failover: {before}"
    );
    witness.read(clock.within(Duration::from_secs(3)));

    cluster.kill(victim);
    let killed = Instant::now();
    agent.wait_for("connected broker=", clock.within(Duration::from_secs(60)));
    let moved = killed.elapsed();
    let now_on = connected_to(&agent.log(Duration::ZERO));
    let home = cluster
        .node_at(&now_on)
        .unwrap_or_else(|| panic!("connected to {now_on}, which is no node of {hosts:?}"));
    assert_ne!(home, victim, "reconnected to the node that was killed");
    println!(
        "killed {}; the agent connected to {} {:.2} s later",
        cluster.nodes[victim].name,
        cluster.nodes[home].name,
        moved.as_secs_f64()
    );
    witness.read(clock.within(Duration::from_secs(3)));

    let sent = Instant::now();
    command(&watch_args, "after-failover", "off");
    let after = result_of(
        &results,
        "after-failover",
        clock.within(Duration::from_secs(20)),
    );
    assert_eq!(after["ok"], true, "the command after the failover: {after}");
    println!(
        "the command after the failover was answered in {:.2} s",
        sent.elapsed().as_secs_f64()
    );

    let home_args = operator_args(cluster.nodes[home].mqtt_port, &pki, &operator);
    let status = retained_status(&home_args, clock.within(Duration::from_secs(10)));
    assert_eq!(
        status, "online",
        "the retained status on {}, the node the agent is connected to",
        cluster.nodes[home].name
    );
    for other in (0..cluster.nodes.len()).filter(|&i| i != home && i != victim) {
        let args = operator_args(cluster.nodes[other].mqtt_port, &pki, &operator);
        let shown = retained_status(&args, clock.within(Duration::from_secs(2)));
        println!(
            "the retained status on {} (not the agent's node): {:?}",
            cluster.nodes[other].name,
            if shown.is_empty() { "none" } else { &shown }
        );
    }

    // A signed release, published through the node the agent is on:
    // RabbitMQ keeps retained messages, and so the package's chunks, per
    // node (the README says so). The agent fetches it chunk by chunk and
    // checks it.
    release_through(
        &pki,
        &operator,
        cluster.nodes[home].mqtt_port,
        &spool,
        clock.within(Duration::from_secs(60)),
    );

    witness.read(clock.within(Duration::from_secs(2)));
    let stop = Command::new("kill")
        .args(["-TERM", &agent.pid().to_string()])
        .status()
        .expect("kill");
    assert!(stop.success());
    let stopping = Instant::now();
    let log = agent.log(clock.within(Duration::from_secs(15)));
    let (exit, _) = agent.finish(clock.within(Duration::from_secs(15)));
    assert!(exit.success(), "agent exit {exit}:\n{log}");
    let stopped_in = stopping.elapsed();
    assert!(
        !log.contains("the broker has not acknowledged are kept"),
        "after the failover the outbox did not drain: messages the broker acknowledged or \
         never got are still in flight at the clean stop ({:.1} s):\n{log}",
        stopped_in.as_secs_f64()
    );
    witness.drain(
        Duration::from_secs(3),
        clock.within(Duration::from_secs(30)),
    );

    let mut summary = Vec::new();
    for stream in ["sensor/load", "sensor/temp", "input/door", "output/relay"] {
        let topic = format!("pinpost/pi-01/{stream}");
        let seqs = witness
            .seen
            .get(&topic)
            .unwrap_or_else(|| panic!("nothing on {topic}: {:?}", witness.seen.keys()));
        let t = tally(&topic, &same_reading(seqs));
        summary.push(format!(
            "{stream}: {} readings, seq {}..={}, {} duplicates",
            t.unique, t.first, t.last, t.duplicates
        ));
        assert_eq!(t.first, 1, "{topic}: the first reading was lost");
        assert!(t.gaps.is_empty(), "{topic}: readings lost: {:?}", t.gaps);
    }
    println!("{}", summary.join("\n"));
    let load = tally(
        "pinpost/pi-01/sensor/load",
        &witness.seen["pinpost/pi-01/sensor/load"],
    );
    assert!(load.unique > 200, "readings flowed: {}", load.unique);
    println!(
        "stopped in {:.2} s; the test took {:.1} s",
        stopped_in.as_secs_f64(),
        clock.0.elapsed().as_secs_f64()
    );
}
