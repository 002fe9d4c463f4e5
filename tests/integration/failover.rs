//! Several brokers: `pinpost run` given `broker.hosts` streams readings to
//! one Mosquitto of a bridged pair; the cable to that node is cut (no clean
//! close) and the node later killed; the agent fails over to the other
//! node, and a witness on the other node counts every `seq`: none missing.
//! Also the one-shot tools, which try each broker once, at once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::subscriber::{Subscriber, tally};
use crate::common::*;

/// Three namespaces: the agent's and one per broker node, a cable from the
/// agent to each node and one between the nodes for their bridge.
struct Triangle {
    agent: String,
    n1: String,
    n2: String,
    /// The agent's cable to node 1, as node 1 sees it (to cut it).
    n1_side: String,
    /// Each node's address on its cable to the agent.
    n1_addr: String,
    n2_addr: String,
    /// Node 1's address on the cable between the nodes.
    bridge_addr: String,
}

impl Triangle {
    fn new() -> Triangle {
        require_tool("ip", "iproute2");
        let id = std::process::id() % 100_000;
        let net = id % 250;
        let t = Triangle {
            agent: format!("pp-fo-a-{id}"),
            n1: format!("pp-fo-1-{id}"),
            n2: format!("pp-fo-2-{id}"),
            n1_side: format!("fo1a{id}"),
            n1_addr: format!("10.214.{net}.1"),
            n2_addr: format!("10.215.{net}.1"),
            bridge_addr: format!("10.216.{net}.1"),
        };
        for ns in [&t.agent, &t.n1, &t.n2] {
            run_ip(&["netns", "add", ns]);
            run_ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let cables = [
            (&t.agent, format!("foa1{id}"), &t.n1, t.n1_side.clone(), 214),
            (
                &t.agent,
                format!("foa2{id}"),
                &t.n2,
                format!("fo2a{id}"),
                215,
            ),
            (&t.n2, format!("fo21{id}"), &t.n1, format!("fo12{id}"), 216),
        ];
        for (a, a_link, b, b_link, subnet) in cables {
            run_ip(&[
                "link", "add", &a_link, "netns", a, "type", "veth", "peer", "name", &b_link,
                "netns", b,
            ]);
            let a_addr = format!("10.{subnet}.{net}.2/24");
            let b_addr = format!("10.{subnet}.{net}.1/24");
            for (ns, link, addr) in [(a, &a_link, a_addr), (b, &b_link, b_addr)] {
                run_ip(&["-n", ns, "addr", "add", &addr, "dev", link]);
                run_ip(&["-n", ns, "link", "set", link, "up"]);
            }
        }
        t
    }

    /// Unplugs the agent's cable to node 1: packets are lost silently.
    fn cut_node1(&self) {
        run_ip(&["-n", &self.n1, "link", "set", &self.n1_side, "down"]);
    }
}

impl Drop for Triangle {
    fn drop(&mut self) {
        for ns in [&self.agent, &self.n1, &self.n2] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn run_ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One node: mutual TLS for clients on its cable to the agent, plain MQTT
/// for its peer on the cable between the nodes (only the two nodes are on
/// it), and for node 2 the bridge to node 1 that makes the pair one broker
/// to a subscriber on either.
fn node(pki: &Pki, server: &Files, netns: &str, addr: &str, extra: Vec<String>) -> Broker {
    Broker::start(&BrokerSetup {
        bind: Some(addr.to_string()),
        tls: Some((pki.ca.cert.clone(), server.clone())),
        require_certificate: true,
        netns: Some(netns.to_string()),
        extra,
        ..BrokerSetup::default()
    })
}

fn config(dir: &Path, hosts: &[String], spool: &Path) -> PathBuf {
    let path = dir.join("pinpost.toml");
    let head =
        ConfigHead::with_hosts(hosts).broker("keep_alive = \"5s\"\nconnect_timeout = \"2s\"");
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

[[sensor]]
name = "load"
kind = "sim"
interval = "10ms"
unit = "V"
"#,
            spool = spool.display()
        ),
    )
    .expect("write config");
    path
}

#[test]
fn a_node_cut_then_killed_costs_no_reading_the_other_node_takes_over() {
    let net = Triangle::new();
    let pki = Pki::new("failover");
    // One certificate for the cluster, naming both nodes.
    let server = pki.server(&[&net.n1_addr, &net.n2_addr]);
    pki.client("pi-01");
    let operator = pki.client("operator");
    let peer = format!("listener 1883 {}", net.bridge_addr);
    let mut n1 = node(&pki, &server, &net.n1, &net.n1_addr, vec![peer]);
    let bridge = vec![
        "connection to-node1".into(),
        format!("address {}:1883", net.bridge_addr),
        "topic # both 1".into(),
        "cleansession false".into(),
        "remote_clientid node2-bridge".into(),
        "restart_timeout 1 2".into(),
        "notifications false".into(),
    ];
    let n2 = node(&pki, &server, &net.n2, &net.n2_addr, bridge);
    let mut witness = Subscriber::start(
        Some(&net.n2),
        &net.n2_addr,
        n2.port,
        &pki,
        &operator,
        "pinpost/pi-01/sensor/#",
    );
    let spool = pki.path().join("spool");
    let hosts = [
        format!("{}:{}", net.n1_addr, n1.port),
        format!("{}:{}", net.n2_addr, n2.port),
    ];
    let config = config(pki.path(), &hosts, &spool);
    let mut cmd = Netns::exec(&net.agent, PINPOST);
    cmd.args(["run", "--config", &config.display().to_string()])
        .env("RUST_LOG", "pinpost=info");
    let mut agent = Background::spawn(cmd);
    agent.wait_for(
        &format!("connected broker={}", hosts[0]),
        Duration::from_secs(15),
    );
    witness.read(Duration::from_secs(3));

    net.cut_node1();
    let cut = Instant::now();
    agent.wait_for(
        &format!("connected broker={}", hosts[1]),
        Duration::from_secs(20),
    );
    let moved = cut.elapsed();
    witness.read(Duration::from_secs(3));
    // Node 1 gives up on the cut connection (1.5 x keep-alive) and
    // publishes the agent's Last Will, which the bridge carries to node 2:
    // a stale "offline" about an agent that is online there.
    witness.read((cut + Duration::from_secs(10)).saturating_duration_since(Instant::now()));
    let status = Netns::exec(&net.n2, "mosquitto_sub")
        .args(["-C", "1", "-W", "10", "-h", &net.n2_addr])
        .args(["-p", &n2.port.to_string(), "-t", "pinpost/pi-01/status"])
        .args(tls_args(&pki.ca.cert, Some(&operator)))
        .output()
        .expect("mosquitto_sub");
    assert_eq!(
        String::from_utf8_lossy(&status.stdout).trim(),
        "online",
        "the retained status on the node the agent uses"
    );
    // Node 1 dies for good; what it acknowledged has long been bridged.
    n1.stop();
    witness.read(Duration::from_secs(3));
    let status = Command::new("kill")
        .args(["-TERM", &agent.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let (exit, _) = agent.finish(Duration::from_secs(15));
    assert!(exit.success(), "agent exit {exit}");
    witness.drain(Duration::from_secs(3), Duration::from_secs(30));

    let seqs = witness
        .seen
        .get("pinpost/pi-01/sensor/load")
        .unwrap_or_else(|| panic!("no readings at all: {:?}", witness.seen.keys()));
    let t = tally("pinpost/pi-01/sensor/load", seqs);
    println!(
        "failed over {:.1} s after the cut; {} readings, seq {}..={}, {} duplicates",
        moved.as_secs_f64(),
        t.unique,
        t.first,
        t.last,
        t.duplicates
    );
    assert_eq!(t.first, 1, "the first reading was lost");
    assert!(t.gaps.is_empty(), "readings lost: {:?}", t.gaps);
    assert!(t.unique > 500, "readings flowed: {}", t.unique);
}

#[test]
fn publish_tries_each_broker_once_at_once_and_says_which_answered() {
    let pki = Pki::new("publish-hosts");
    let server = pki.server(&["127.0.0.1"]);
    pki.client("pi-01");
    let operator = pki.client("operator");
    let broker = Broker::mutual(&pki, server);
    let witness = Witness::start(&broker, "t/hosts", &tls_args(&pki.ca.cert, Some(&operator)));
    // A port nobody listens on first, then the broker.
    let dead = free_port("127.0.0.1");
    let out = Command::new(PINPOST)
        .current_dir(pki.path())
        .args([
            "publish",
            "-t",
            "t/hosts",
            "-m",
            "via the second",
            "-q",
            "1",
            "-d",
        ])
        .args(["-h", &format!("127.0.0.1:{dead}")])
        .args(["-h", &format!("127.0.0.1:{}", broker.port)])
        .args([
            "--cafile",
            "ca.crt",
            "--cert",
            "pi-01.crt",
            "--key",
            "pi-01.key",
        ])
        .output()
        .expect("run pinpost publish");
    assert_ok(&out, &broker);
    let said = stderr(&out);
    assert!(
        said.contains(&format!("127.0.0.1:{dead}")) && said.contains("trying the next broker"),
        "the dead one is tried, then the next at once: {said}"
    );
    let got = witness.wait_until("the message", Duration::from_secs(5), |line| {
        line.ends_with("via the second")
    });
    assert_eq!(got, ["t/hosts via the second"]);
}

#[test]
fn check_tries_every_broker_and_names_the_one_that_fails() {
    let pki = Pki::new("check-hosts");
    let server = pki.server(&["127.0.0.1"]);
    let device = pki.client("pi-01");
    let broker = Broker::mutual(&pki, server);
    let dead = free_port("127.0.0.1");
    let config = pki.path().join("check.toml");
    std::fs::write(
        &config,
        ConfigHead::with_hosts(&[
            format!("127.0.0.1:{}", broker.port),
            format!("127.0.0.1:{dead}"),
        ])
        .ca(&pki.ca.cert)
        .client(&device)
        .to_string(),
    )
    .unwrap();
    let out = pinpost(
        &strings(&["check", "--config", &config.display().to_string()]),
        Duration::from_secs(20),
    );
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "broker mqtts://127.0.0.1:{}, mqtts://127.0.0.1:{dead}",
            broker.port
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("\u{2713} connected to 127.0.0.1:{}", broker.port)),
        "the good one passes: {said}"
    );
    assert!(
        said.contains(&format!(
            "\u{2717} connecting to 127.0.0.1:{dead}: connection refused"
        )),
        "the dead one is named: {said}"
    );
}
