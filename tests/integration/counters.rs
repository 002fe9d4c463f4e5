//! Pulse counters (`count = true`) as `pinpost run` publishes them to a
//! real Mosquitto: every pulse of a simulated meter counted, and a total
//! that survives a restart, a `kill -9` and a write torn by a power cut
//! without ever going backwards. Asserted on what a subscriber receives.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

struct Rig {
    pki: Pki,
    broker: Broker,
    operator: Files,
}

impl Rig {
    fn new() -> Rig {
        let pki = Pki::new("counters");
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

    /// A meter of 1000 impulses per kWh on GPIO17, fed by the sim board's
    /// `pulses` (pin, hz, count); its total kept under `state`.
    fn config(&self, pulses: &str, state: &Path) -> PathBuf {
        let path = self.pki.path().join("pinpost.toml");
        std::fs::write(
            &path,
            format!(
                r#"{head}[board]
kind = "sim"
pulses = [{pulses}]

[outbox]
path = "{state}"

[commands]
max_age = "10m"

[[input]]
name = "meter"
pin = 17
pull = "up"
invert = true
debounce = "0ms"
count = true
per_pulse = 0.001
unit = "kWh"
interval = "1s"
"#,
                head = ConfigHead::new(self.broker.port),
                state = state.display()
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

    fn witness(&self) -> Witness {
        Witness::start(
            &self.broker,
            "pinpost/pi-01/counter/meter",
            &self.operator_args(),
        )
    }

    /// A command to the counter, as an operator sends it.
    fn command(&self, payload: &str, retain: bool) {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args(self.operator_args()).args([
            "-q",
            "1",
            "-t",
            "pinpost/pi-01/cmd/meter",
            "-m",
            payload,
        ]);
        if retain {
            cmd.arg("-r");
        }
        let out = cmd.output().expect("mosquitto_pub");
        assert!(out.status.success(), "mosquitto_pub: {out:?}");
    }
}

fn totals(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(_, payload)| serde_json::from_str(payload).ok())
        .collect()
}

fn count_of(line: &str) -> Option<u64> {
    let (_, payload) = line.split_once(' ')?;
    serde_json::from_str::<serde_json::Value>(payload).ok()?["count"].as_u64()
}

fn run(config: &Path) -> Background {
    Background::start(&strings(&[
        "run",
        "--config",
        &config.display().to_string(),
    ]))
}

#[test]
fn ten_thousand_pulses_at_a_steady_rate_are_all_counted() {
    let rig = Rig::new();
    let state = tempfile::tempdir().unwrap();
    let witness = rig.witness();
    // 10,000 pulses at 1000 a second: 0.5 ms low, 0.5 ms high.
    let _agent = run(&rig.config("[17, 1000.0, 10000]", state.path()));
    let seen = witness.wait_until("a total of 10000", WAIT, |l| count_of(l) == Some(10_000));
    let all = totals(&seen);
    let last = all.last().unwrap();
    assert_eq!(last["unit"], "kWh");
    assert!(
        (last["value"].as_f64().unwrap() - 10.0).abs() < 1e-9,
        "{last}"
    );
    assert_eq!(last["rate_unit"], "kWh/h");
    assert!(last["rate"].as_f64().unwrap() > 0.0, "{last}");
    let counts: Vec<u64> = all.iter().filter_map(|t| t["count"].as_u64()).collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "never backwards: {counts:?}"
    );
    // And not one more: the meter has stopped.
    let after = witness.messages(Duration::from_secs(3));
    assert!(
        after
            .iter()
            .all(|l| count_of(l).is_none_or(|c| c == 10_000)),
        "{after:?}"
    );
}

#[test]
fn a_total_survives_a_restart_a_kill_9_and_a_torn_write_without_going_backwards() {
    let rig = Rig::new();
    let state = tempfile::tempdir().unwrap();
    let witness = rig.witness();
    let config = rig.config("[17, 200.0, 0]", state.path());
    let mut seen = Vec::new();
    let mut agent = run(&config);
    seen.extend(witness.wait_until("a total over 200", WAIT, |l| {
        count_of(l).is_some_and(|c| c > 200)
    }));
    // A kill -9 while it counts.
    let status = Command::new("kill")
        .args(["-9", &agent.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = agent.log(Duration::from_millis(200));
    let killed_at = seen.iter().filter_map(|l| count_of(l)).max().unwrap();
    // Back: it resumes at or above every total published.
    let mut agent = run(&config);
    agent.wait_for("counting from", WAIT);
    let back = witness.wait_until("a total after the restart", WAIT, |l| {
        count_of(l).is_some_and(|c| c > killed_at + 200)
    });
    seen.extend(back);
    drop(agent);
    // A power cut in the middle of the next write: the slot it was
    // writing is torn. The other slot holds the last total written.
    let file = state.path().join("counters/meter");
    let mut bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len(), 64);
    let generation =
        |slot: usize| u64::from_le_bytes(bytes[slot * 32 + 8..slot * 32 + 16].try_into().unwrap());
    let older = if generation(0) < generation(1) { 0 } else { 1 };
    bytes[older * 32 + 20] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let last_published = seen.iter().filter_map(|l| count_of(l)).max().unwrap();
    let mut agent = run(&config);
    agent.wait_for("one of its two copies was torn", WAIT);
    seen.extend(
        witness.wait_until("a total after the torn write", WAIT, |l| {
            count_of(l).is_some_and(|c| c > last_published)
        }),
    );
    let counts: Vec<u64> = seen.iter().filter_map(|l| count_of(l)).collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "a subscriber never sees the total go backwards: {counts:?}"
    );
}

#[test]
fn a_set_or_reset_is_applied_once_and_only_when_fresh() {
    let rig = Rig::new();
    let state = tempfile::tempdir().unwrap();
    let config = rig.config("", state.path());
    let totals = rig.witness();
    let results = Witness::start(
        &rig.broker,
        "pinpost/pi-01/cmd/meter/result",
        &rig.operator_args(),
    );
    // A reset left retained before the agent starts would reset the
    // counter at every reconnect: refused.
    rig.command("reset", true);
    let mut agent = run(&config);
    results.wait_until("the retained reset's refusal", WAIT, |l| {
        l.contains("retained command ignored")
    });
    rig.command("", true);
    totals.wait_until("the first total", WAIT, |l| count_of(l) == Some(0));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    // The meter was replaced: it reads 1234.5 kWh.
    let set = format!(r#"{{"action":"set","value":1234.5,"id":"new-meter","ts":{now}}}"#);
    rig.command(&set, false);
    results.wait_for(r#"{"id":"new-meter","ok":true}"#, WAIT);
    let seen = totals.wait_until("the set total", WAIT, |l| count_of(l) == Some(1_234_500));
    let (_, payload) = seen.last().unwrap().split_once(' ').unwrap();
    let total: serde_json::Value = serde_json::from_str(payload).unwrap();
    assert!(
        (total["value"].as_f64().unwrap() - 1234.5).abs() < 1e-6,
        "{total}"
    );
    // The same command again (a replay): already applied, nothing changes.
    rig.command(&set, false);
    let replay = results.wait_until("the replay's refusal", WAIT, |l| l.contains("new-meter"));
    assert!(
        replay.last().unwrap().contains("already applied"),
        "{replay:?}"
    );
    // A stale stamp, and one from an hour ahead.
    for (ts, words) in [(now - 3_600_000, "older than"), (now + 3_600_000, "ahead")] {
        rig.command(
            &format!(r#"{{"action":"reset","id":"r{ts}","ts":{ts}}}"#),
            false,
        );
        let said = results.wait_until(words, WAIT, |l| l.contains(&format!("r{ts}")));
        assert!(said.last().unwrap().contains(words), "{said:?}");
    }
    // After a restart the set total stands, and the replay is still refused.
    drop(agent);
    agent = run(&config);
    agent.wait_for("counting from 1234500 pulses", WAIT);
    rig.command(&set, false);
    let replay = results.wait_until("the replay after a restart", WAIT, |l| {
        l.contains("new-meter")
    });
    assert!(
        replay.last().unwrap().contains("already applied"),
        "{replay:?}"
    );
    assert!(
        totals
            .messages(Duration::from_secs(2))
            .iter()
            .all(|l| count_of(l).is_none_or(|c| c == 1_234_500)),
        "nothing but the set total"
    );
}
