//! Pulse counters: the highest edge rate the sim board's meter reaches with
//! every pulse counted (the count a subscriber sees against the pulses
//! sent), and the CPU a counter at 100 pulses a second costs beside an
//! idle agent, measured over the same seconds. The sim board's meter is a
//! thread inside the agent, so its CPU is in the figure: on a Pi the
//! kernel's interrupt handling takes that part.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::process::cpu_ticks;
use crate::rig::*;

const RATES: [u64; 5] = [1_000, 10_000, 100_000, 300_000, 1_000_000];
const CPU_WINDOW: Duration = Duration::from_secs(30);

fn config(rig: &Rig, id: &str, pulses: &str) -> std::path::PathBuf {
    let body = "[[input]]\nname = \"meter\"\npin = 17\ndebounce = \"0ms\"\ncount = true\n\
                interval = \"1s\"\n";
    let text = base_config(rig, id, body).replacen(
        "kind = \"sim\"\n",
        &format!("kind = \"sim\"\npulses = [{pulses}]\n"),
        1,
    );
    let path = rig.pki.path().join(format!("{id}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

fn operator(rig: &Rig) -> Vec<String> {
    let mut args = strings(&["-h", "127.0.0.1", "-p", &rig.broker.port.to_string()]);
    args.extend(tls_args(&rig.pki.ca.cert, Some(&rig.operator)));
    args
}

fn count_of(line: &str) -> Option<u64> {
    let (_, payload) = line.split_once(' ')?;
    serde_json::from_str::<serde_json::Value>(payload).ok()?["count"].as_u64()
}

pub fn measure(rig: &Rig, rows: &mut Vec<Row>) {
    eprintln!("bench: counting (sim meter at {RATES:?} pulses/s, then CPU at 100/s)");
    for rate in RATES {
        let pulses = (rate * 2).clamp(10_000, 600_000);
        let id = format!("count{rate}");
        let witness = Witness::start(
            &rig.broker,
            &format!("pinpost/{id}/counter/meter"),
            &operator(rig),
        );
        let mut agent = Background::start(&strings(&[
            "run",
            "--config",
            &config(rig, &id, &format!("[17, {rate}.0, {pulses}]"))
                .display()
                .to_string(),
        ]));
        let started = Instant::now();
        let mut counted = 0;
        while started.elapsed() < Duration::from_secs(60) && counted < pulses {
            for line in witness.messages(Duration::from_millis(500)) {
                counted = counted.max(count_of(&line).unwrap_or(0));
            }
        }
        // A last look: a total after the meter stopped would be a count
        // beyond what was sent.
        for line in witness.messages(Duration::from_secs(2)) {
            counted = counted.max(count_of(&line).unwrap_or(0));
        }
        let log = agent.log(Duration::from_millis(200));
        let elapsed_ms: f64 = log
            .lines()
            .find(|l| l.contains("simulated pulses sent"))
            .and_then(|l| l.split("elapsed_ms=").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &agent.pid().to_string()])
            .status();
        rows.push(row(
            &format!("sim meter asked for {rate} pulses/s: sent (at the rate reached) / counted"),
            format!(
                "{pulses} ({:.0}/s) / {counted}",
                pulses as f64 / (elapsed_ms / 1000.0)
            ),
            "mqtt-io 2.7: no pulse counter",
            None,
        ));
    }
    // CPU: a counter at 100 pulses a second beside an agent with none.
    let start = |id: &str, pulses: &str| {
        Background::start(&strings(&[
            "run",
            "--config",
            &config(rig, id, pulses).display().to_string(),
        ]))
    };
    let mut counting = start("cpu-count", "[17, 100.0, 0]");
    let mut idle = start("cpu-idle", "");
    counting.wait_for("connected", Duration::from_secs(20));
    idle.wait_for("connected", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(5));
    let before = (cpu_ticks(counting.pid()), cpu_ticks(idle.pid()));
    std::thread::sleep(CPU_WINDOW);
    let after = (cpu_ticks(counting.pid()), cpu_ticks(idle.pid()));
    let hz = 100.0; // USER_HZ
    let secs = |ticks: u64| ticks as f64 / hz;
    let (ours, other) = (secs(after.0 - before.0), secs(after.1 - before.1));
    let pct = |s: f64| 100.0 * s / CPU_WINDOW.as_secs_f64();
    rows.push(row(
        &format!(
            "CPU time over {} s, counting 100 pulses/s (sim meter thread included)",
            CPU_WINDOW.as_secs()
        ),
        format!("{ours:.2} s ({:.2}%)", pct(ours)),
        &format!(
            "the same agent counting nothing: {other:.2} s ({:.2}%)",
            pct(other)
        ),
        (other > 0.0).then(|| ours / other),
    ));
    for agent in [&mut counting, &mut idle] {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &agent.pid().to_string()])
            .status();
        let _ = agent.log(Duration::from_secs(5));
    }
}
