//! Memory during a long outage: `pinpost run` sampling a sensor at 100
//! readings/s while the broker is unreachable, its resident memory and the
//! outbox's spool sampled from /proc, then the broker returns and the
//! backlog is timed out of the spool.
//!
//! `cargo bench --bench outage_memory` runs the 10 minutes; set
//! `PINPOST_OUTAGE_SECS` for a shorter run. Figures, not pass/fail: the
//! bound is judged by a person reading them (see the closing note of
//! issue 6 and BENCHMARKS.md).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "shared/process.rs"]
mod process;

use process::{dir_bytes, memory};

const PINPOST: &str = env!("CARGO_BIN_EXE_pinpost");

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| fail(&format!("cannot find a free loopback port: {e}")))
}

fn fail(why: &str) -> ! {
    eprintln!("outage_memory: {why}");
    std::process::exit(1)
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let seconds: u64 = std::env::var("PINPOST_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let port = free_port();
    let spool = dir.path().join("spool");
    let config = dir.path().join("pinpost.toml");
    let memory_limit = "1MiB";
    let max_bytes = "64MiB";
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"bench\"\n[broker]\nhost = \"127.0.0.1\"\nport = {port}\n\
             allow_insecure = true\n[reconnect]\ninitial = \"1s\"\nmax = \"5s\"\n\
             [board]\nkind = \"sim\"\n[outbox]\npath = \"{}\"\nmemory_limit = \"{memory_limit}\"\n\
             max_bytes = \"{max_bytes}\"\nstats_interval = \"1s\"\n[[sensor]]\nname = \"t\"\nkind = \"sim\"\n\
             interval = \"10ms\"\nunit = \"°C\"\n",
            spool.display()
        ),
    )
    .unwrap_or_else(|e| fail(&format!("write config: {e}")));
    let mut agent = Command::new(PINPOST)
        .args(["run", "--config", &config.display().to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start {PINPOST}: {e}")));
    let pid = agent.id();
    println!(
        "outage of {seconds} s at 100 readings/s, outbox.memory_limit = {memory_limit}, \
         max_bytes = {max_bytes}"
    );
    println!(
        "{:>8} {:>10} {:>10} {:>12}",
        "elapsed", "RSS KiB", "peak KiB", "spool bytes"
    );
    let started = Instant::now();
    let mut next_report = Duration::ZERO;
    let mut peak = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let (rss, hwm) = memory(pid);
        peak = peak.max(hwm);
        if started.elapsed() >= next_report {
            println!(
                "{:>7}s {rss:>10} {hwm:>10} {:>12}",
                started.elapsed().as_secs(),
                dir_bytes(&spool)
            );
            next_report += Duration::from_secs((seconds / 10).max(1));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let backlog = dir_bytes(&spool);
    let (rss, _) = memory(pid);
    println!(
        "after the outage: RSS {rss} KiB, peak {peak} KiB, spool {backlog} bytes \
         ({:.0} readings kept)",
        seconds as f64 * 100.0
    );
    let drained = drain(port, &spool, &mut agent);
    let (_, hwm) = memory(pid);
    println!(
        "broker back: backlog sent in {:.1} s; peak RSS over the whole run {hwm} KiB",
        drained.as_secs_f64()
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

/// Starts a Mosquitto on the agent's port and times until the agent's stats
/// say nothing is queued (stats come every second, so to within a second).
fn drain(port: u16, _spool: &Path, agent: &mut Child) -> Duration {
    let mut broker = Command::new("mosquitto")
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            fail(&format!(
                "cannot run mosquitto (apt-get install mosquitto): {e}"
            ))
        });
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let mut sub = Command::new("stdbuf")
        .args([
            "-oL",
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(["-t", "pinpost/bench/stats"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot run mosquitto_sub: {e}")));
    let out = sub.stdout.take().unwrap_or_else(|| fail("no stdout"));
    let mut took = None;
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            // A few readings are always in flight at 100/s.
            if v["spooled"].as_u64() == Some(0) && v["queued"].as_u64().is_some_and(|q| q < 200) {
                took = Some(started.elapsed());
                break;
            }
        }
        if started.elapsed() > Duration::from_secs(600) {
            break;
        }
        if let Ok(Some(status)) = agent.try_wait() {
            fail(&format!("the agent exited: {status}"));
        }
    }
    let _ = sub.kill();
    let _ = sub.wait();
    let _ = broker.kill();
    let _ = broker.wait();
    took.unwrap_or_else(|| fail("the backlog was not sent within 10 minutes"))
}
