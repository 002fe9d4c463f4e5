//! Floods against `pinpost run` on a real Mosquitto with mutual TLS: what
//! anyone allowed to publish on the command topic can throw at the agent
//! (100,000 commands to made-up names, a storm of toggles, oversize
//! commands) costs bounded memory, does not chatter the relay, and the next
//! good command is still answered at once. Delivery is witnessed by an
//! independent `mosquitto_sub`; memory is the agent's own VmRSS.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

const WAIT: Duration = Duration::from_secs(20);
const FLOOD: usize = 100_000;

struct Rig {
    pki: Pki,
    broker: Broker,
    operator: Files,
}

impl Rig {
    fn new() -> Rig {
        let pki = Pki::new("flood");
        let server = pki.server(&["127.0.0.1"]);
        pki.client("pi-01");
        let operator = pki.client("operator");
        let broker = Broker::mutual(&pki, server);
        Rig {
            pki,
            broker,
            operator,
        }
    }

    fn config(&self, clean_session: bool) -> std::path::PathBuf {
        self.config_with(clean_session, "500ms")
    }

    fn config_with(&self, clean_session: bool, reconnect_max: &str) -> std::path::PathBuf {
        self.config_at(self.broker.port, clean_session, reconnect_max)
    }

    /// The config with the broker at `port` (a [`Gate`] in front of it).
    fn config_at(&self, port: u16, clean_session: bool, reconnect_max: &str) -> std::path::PathBuf {
        let path = self.pki.path().join("pinpost.toml");
        std::fs::write(
            &path,
            format!(
                r#"{head}[reconnect]
initial = "100ms"
max = "{reconnect_max}"

[board]
kind = "sim"

[[output]]
name = "relay"
pin = 27
safe_state = "off"

[commands]
max_payload = 256
# These tests send live commands without "ts"; with a persistent session
# pinpost otherwise refuses them (tests/integration/commands.rs proves that).
allow_unstamped = true
"#,
                head = ConfigHead::new(port).broker(&format!("clean_session = {clean_session}"))
            ),
        )
        .unwrap();
        path
    }

    fn operator_args(&self) -> Vec<String> {
        let mut args = strings(&["-h", "127.0.0.1", "-p", &self.broker.port.to_string()]);
        args.extend(tls_args(&self.pki.ca.cert, Some(&self.operator)));
        args
    }

    /// Publishes one command with mosquitto_pub, as an operator would.
    fn command(&self, output: &str, payload: &str) {
        let out = Command::new("mosquitto_pub")
            .args(self.operator_args())
            .args(["-q", "1", "-t", &format!("pinpost/pi-01/cmd/{output}")])
            .args(["-m", payload])
            .output()
            .expect("mosquitto_pub");
        assert!(out.status.success(), "mosquitto_pub: {out:?}");
    }

    /// Publishes `file`'s contents as one command on `output`, retained or not.
    fn command_from(&self, output: &str, file: &std::path::Path, retain: bool) {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args(self.operator_args())
            .args([
                "-q",
                "1",
                "-t",
                &format!("pinpost/pi-01/cmd/{output}"),
                "-f",
            ])
            .arg(file);
        if retain {
            cmd.arg("-r");
        }
        let out = cmd.output().expect("mosquitto_pub");
        assert!(out.status.success(), "mosquitto_pub: {out:?}");
    }

    /// Sends `toggle` commands with an id until one is answered `ok`.
    fn until_answered(&self, witness: &Witness, agent: &mut Background) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.command("relay", r#"{"action":"toggle","id":"after"}"#);
            let lines = witness.messages(Duration::from_secs(1));
            if lines.iter().any(|l| {
                is("pinpost/pi-01/cmd/relay/result")(l)
                    && json(l)["id"] == "after"
                    && json(l)["ok"] == true
            }) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no answer to a good command:\n{}",
                agent.log(Duration::from_millis(300))
            );
        }
    }

    /// Publishes every line of `lines` as one command on `output`'s topic,
    /// from one mosquitto_pub (`-l`), as fast as it goes.
    fn commands(&self, output: &str, lines: &str) {
        let mut child = Command::new("mosquitto_pub")
            .args(self.operator_args())
            .args([
                "-q",
                "1",
                "-l",
                "-t",
                &format!("pinpost/pi-01/cmd/{output}"),
            ])
            .stdin(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(lines.as_bytes())
            .expect("write commands");
        let status = child.wait().expect("mosquitto_pub ends");
        assert!(status.success(), "mosquitto_pub -l: {status:?}");
    }

    /// `n` QoS 1 commands, each to a different made-up output name, from
    /// one client with the operator's certificate; returns once the broker
    /// has acknowledged every one.
    fn flood_distinct_names(&self, n: usize) {
        let text = ConfigHead::new(self.broker.port)
            .id("flooder")
            .ca(&self.pki.ca.cert)
            .client(&self.operator)
            .to_string();
        let config =
            pinpost::config::from_text(&text, None, &Default::default()).expect("flooder config");
        let tls = pinpost::tls::setup(config.broker.tls.as_ref().expect("tls")).expect("tls");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let mut options = MqttOptions::new("flooder", "127.0.0.1", self.broker.port);
            options
                .set_keep_alive(Duration::from_secs(30))
                .set_inflight(100)
                .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                    tls.config.clone(),
                )));
            let (client, mut eventloop) = AsyncClient::new(options, 1000);
            let sender = tokio::spawn(async move {
                for i in 0..n {
                    client
                        .publish(
                            format!("pinpost/pi-01/cmd/ghost-{i}"),
                            QoS::AtLeastOnce,
                            false,
                            "on",
                        )
                        .await
                        .expect("queue a flood command");
                }
                client
            });
            let mut acked = 0;
            while acked < n {
                match tokio::time::timeout(WAIT, eventloop.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => panic!("flooder lost the broker after {acked} acks: {e}"),
                    Err(_) => panic!("flooder stalled after {acked} acks"),
                }
            }
            let client = sender.await.expect("sender");
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await;
        });
    }
}

fn json(line: &str) -> serde_json::Value {
    let payload = line.split_once(' ').map_or("", |(_, p)| p);
    serde_json::from_str(payload).unwrap_or(serde_json::Value::Null)
}

fn is(topic: &str) -> impl Fn(&str) -> bool + '_ {
    move |line| line.split_once(' ').is_some_and(|(t, _)| t == topic)
}

/// The agent's resident memory, in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn run_args(config: &std::path::Path) -> Vec<String> {
    strings(&["run", "--config", &config.display().to_string()])
}

/// How many refusals the agent saw: those it logged one by one, plus those
/// its summary lines counted.
fn refusals_in(log: &str) -> (usize, u64) {
    let logged = log.matches("command refused:").count();
    let summed = log
        .lines()
        .filter_map(|l| {
            let (before, _) = l.split_once(" more commands were refused")?;
            before.rsplit(' ').next()?.parse::<u64>().ok()
        })
        .sum();
    (logged, summed)
}

#[test]
fn a_flood_of_made_up_names_costs_bounded_memory_and_the_next_good_command_is_answered_at_once() {
    let rig = Rig::new();
    let witness = Witness::start(&rig.broker, "pinpost/pi-01/#", &rig.operator_args());
    let mut agent = Background::start(&run_args(&rig.config(true)));
    witness.wait_until("the initial relay state", WAIT, |l| {
        is("pinpost/pi-01/output/relay")(l) && json(l)["value"] == false
    });
    agent.wait_for("connected", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(agent.pid());

    let started = Instant::now();
    rig.flood_distinct_names(FLOOD);
    let flood_took = started.elapsed();

    let sent = Instant::now();
    rig.command("relay", r#"{"action":"on","id":"good"}"#);
    let seen = witness.wait_until("the good command's result", WAIT, |l| {
        is("pinpost/pi-01/cmd/relay/result")(l)
    });
    let answered_in = sent.elapsed();
    assert_eq!(
        json(seen.last().unwrap()),
        serde_json::json!({"id": "good", "ok": true})
    );
    let state = witness.wait_until("the relay on", WAIT, is("pinpost/pi-01/output/relay"));
    assert_eq!(
        json(state.last().unwrap())["value"],
        true,
        "the pin changed"
    );
    let after = rss_kib(agent.pid());
    let growth = after.saturating_sub(before);
    eprintln!(
        "flood of {FLOOD} distinct names sent in {:.1}s; VmRSS {before} KiB -> {after} KiB \
         (+{growth} KiB); good command answered in {} ms",
        flood_took.as_secs_f64(),
        answered_in.as_millis()
    );
    assert!(
        answered_in < Duration::from_secs(1),
        "the good command took {answered_in:?} to be answered after the flood"
    );
    assert!(
        growth < 2 * 1024,
        "the agent grew by {growth} KiB ({before} -> {after}) for {FLOOD} made-up names"
    );
    // The refusals the witness saw: a handful, not one per command.
    let answers = witness
        .messages(Duration::from_millis(500))
        .into_iter()
        .chain(seen)
        .filter(|l| {
            l.split_once(' ')
                .is_some_and(|(t, _)| t.contains("/cmd/ghost-") && t.ends_with("/result"))
        })
        .count();

    sigterm(agent.pid());
    let log = agent.log(WAIT);
    let (logged, summed) = refusals_in(&log);
    eprintln!("refusals: {logged} logged and answered, {summed} counted in summaries");
    let bound = 20 + 5 * (flood_took.as_secs() as usize + 3);
    assert!(
        logged <= bound,
        "{logged} refusal lines in the log (at most {bound} expected)"
    );
    assert!(answers <= bound, "{answers} refusals answered");
    // Mosquitto's default max_queued_messages (1000) may drop some on the
    // way when the machine is busy; most must have reached the agent.
    assert!(
        logged as u64 + summed >= FLOOD as u64 / 2,
        "the agent saw only {} of the {FLOOD} commands; the flood did not reach it:\n{log}",
        logged as u64 + summed
    );
    assert!(log.contains("more commands were refused without an answer"));
}

#[test]
fn a_storm_of_toggles_changes_the_relay_at_most_once_per_min_interval() {
    let rig = Rig::new();
    let witness = Witness::start(&rig.broker, "pinpost/pi-01/#", &rig.operator_args());
    let agent = Background::start(&run_args(&rig.config(true)));
    witness.wait_until("the initial relay state", WAIT, |l| {
        is("pinpost/pi-01/output/relay")(l) && json(l)["value"] == false
    });
    let started = Instant::now();
    let mut storm = "toggle\n".repeat(2000);
    storm.push_str("{\"action\":\"on\",\"id\":\"last\"}\n");
    rig.commands("relay", &storm);
    let seen = witness.wait_until("the last command's result", WAIT, |l| {
        is("pinpost/pi-01/cmd/relay/result")(l) && json(l)["id"] == "last"
    });
    let took = started.elapsed();
    assert_eq!(
        json(seen.last().unwrap())["ok"],
        true,
        "the latest one wins"
    );
    let seen: Vec<String> = seen
        .into_iter()
        .chain(witness.messages(Duration::from_millis(500)))
        .collect();
    let changes: Vec<bool> = seen
        .iter()
        .filter(|l| is("pinpost/pi-01/output/relay")(l))
        .map(|l| json(l)["value"].as_bool().unwrap())
        .collect();
    // min_interval is 100 ms by default: at most one change per 100 ms of
    // the storm, plus the first one.
    let bound = 1 + (took.as_millis() / 100) as usize;
    eprintln!(
        "2001 commands over {} ms changed the relay {} times",
        took.as_millis(),
        changes.len()
    );
    assert!(
        !changes.is_empty() && changes.len() <= bound,
        "{} changes in {took:?} (at most {bound})",
        changes.len()
    );
    assert_eq!(changes.last(), Some(&true), "left as the last command said");
    let replaced = seen
        .iter()
        .filter(|l| l.contains("replaced by a later command"))
        .count();
    // Answers to refusals are rate-limited too: 20 at once, 5 a second.
    let answered = 20 + 5 * (took.as_secs() as usize + 1);
    assert!(
        (1..=answered).contains(&replaced),
        "{replaced} answered as replaced (at most {answered})"
    );
    sigterm(agent.pid());
    assert!(agent.finish(WAIT).0.success());
}

/// One oversize command: the agent does not read it into memory, says why
/// it dropped the connection, comes back, and takes the next command.
fn oversize_command_is_refused_by_the_link(clean_session: bool) {
    let rig = Rig::new();
    let witness = Witness::start(&rig.broker, "pinpost/pi-01/#", &rig.operator_args());
    let mut agent = Background::start(&run_args(&rig.config(clean_session)));
    witness.wait_until(
        "the initial relay state",
        WAIT,
        is("pinpost/pi-01/output/relay"),
    );
    agent.wait_for("connected", WAIT);
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(agent.pid());
    let big = rig.pki.path().join("big.cmd");
    std::fs::write(&big, "x".repeat(200 * 1024)).unwrap();
    for _ in 0..5 {
        rig.command_from("relay", &big, false);
    }
    // The largest packet the agent reads: a certificate renewal's answer
    // (4 KiB and its topic), larger than any command it accepts here.
    agent.wait_for("over the 4125 bytes pinpost reads", WAIT);
    // Back online, and commands work again.
    rig.until_answered(&witness, &mut agent);
    let after = rss_kib(agent.pid());
    eprintln!(
        "clean_session = {clean_session}: 5 commands of 200 KiB; VmRSS {before} KiB -> {after} KiB"
    );
    assert!(
        after.saturating_sub(before) < 1024,
        "grew {before} -> {after} KiB"
    );
    sigterm(agent.pid());
    let log = agent.log(WAIT);
    assert!(
        !log.contains("command is 204800 bytes"),
        "the oversize command was read whole:\n{log}"
    );
    let drops = log.matches("pinpost reads").count();
    assert!(
        (1..=5).contains(&drops),
        "{drops} drops for 5 oversize commands: a persistent session must not replay one \
         forever:\n{log}"
    );
}

#[test]
fn an_oversize_command_is_not_read_and_the_agent_keeps_working() {
    oversize_command_is_refused_by_the_link(true);
}

#[test]
fn an_oversize_command_is_not_replayed_forever_by_a_persistent_session() {
    oversize_command_is_refused_by_the_link(false);
}

#[test]
fn after_an_oversize_command_the_session_is_persistent_again() {
    let rig = Rig::new();
    let gate = Gate::start("127.0.0.1", rig.broker.port);
    let witness = Witness::start(&rig.broker, "pinpost/pi-01/#", &rig.operator_args());
    let mut agent = Background::start(&run_args(&rig.config_at(gate.port, false, "500ms")));
    witness.wait_until(
        "the initial relay state",
        WAIT,
        is("pinpost/pi-01/output/relay"),
    );
    agent.wait_for("connected", WAIT);
    let big = rig.pki.path().join("big.cmd");
    std::fs::write(&big, "x".repeat(200 * 1024)).unwrap();
    rig.command_from("relay", &big, false);
    // The largest packet the agent reads: a certificate renewal's answer
    // (4 KiB and its topic), larger than any command it accepts here.
    agent.wait_for("over the 4125 bytes pinpost reads", WAIT);
    agent.wait_for("Making a new persistent session", WAIT);
    rig.until_answered(&witness, &mut agent);
    // The cable is pulled: the broker sees the connection drop, not a
    // DISCONNECT, and keeps the session only if it is persistent.
    gate.cut();
    witness.wait_until("the broker to see the agent gone (its will)", WAIT, |l| {
        l == "pinpost/pi-01/status offline"
    });
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    rig.command(
        "relay",
        &format!(r#"{{"action":"toggle","id":"queued","ts":{ts}}}"#),
    );
    std::thread::sleep(Duration::from_millis(500));
    gate.open();
    witness.wait_until("the command queued during the outage, applied", WAIT, |l| {
        is("pinpost/pi-01/cmd/relay/result")(l)
            && json(l)["id"] == "queued"
            && json(l)["ok"] == true
    });
    sigterm(agent.pid());
    let log = agent.log(WAIT);
    assert!(
        log.contains("any commands it had queued were lost with it"),
        "{log}"
    );
}

#[test]
fn an_oversize_retained_command_slows_reconnects_until_it_is_cleared() {
    let rig = Rig::new();
    let witness = Witness::start(&rig.broker, "pinpost/pi-01/#", &rig.operator_args());
    let mut agent = Background::start(&run_args(&rig.config_with(true, "2s")));
    witness.wait_until(
        "the initial relay state",
        WAIT,
        is("pinpost/pi-01/output/relay"),
    );
    agent.wait_for("connected", WAIT);
    let big = rig.pki.path().join("big.cmd");
    std::fs::write(&big, "x".repeat(200 * 1024)).unwrap();
    // Retained: the broker sends it again at every subscribe.
    rig.command_from("relay", &big, true);
    // The largest packet the agent reads: a certificate renewal's answer
    // (4 KiB and its topic), larger than any command it accepts here.
    agent.wait_for("over the 4125 bytes pinpost reads", WAIT);
    std::thread::sleep(Duration::from_secs(5));
    let log = agent.log(Duration::from_millis(300));
    let drops = log.matches("pinpost reads").count();
    eprintln!("a 200 KiB retained command: {drops} drops in about 5 s");
    // Backoff 100 ms doubling to 2 s: about 6. Reset at every connect, it
    // would be one every ~150 ms, over 30.
    assert!((2..=12).contains(&drops), "{drops} drops in 5 s:\n{log}");
    assert!(log.contains("mosquitto_sub -v --retained-only"), "{log}");
    let clear = Command::new("mosquitto_pub")
        .args(rig.operator_args())
        .args(["-q", "1", "-r", "-n", "-t", "pinpost/pi-01/cmd/relay"])
        .output()
        .expect("mosquitto_pub");
    assert!(clear.status.success(), "{clear:?}");
    rig.until_answered(&witness, &mut agent);
    sigterm(agent.pid());
    assert!(agent.finish(WAIT).0.success());
}
