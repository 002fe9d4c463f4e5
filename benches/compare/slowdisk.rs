//! Figure 7: the agent on a disk whose every fsync is slow, as an SD card's
//! can be (hundreds of milliseconds). `pinpost run` on a sim board runs
//! under strace, which holds every `fsync` and `fdatasync` the agent makes
//! for 300 ms before returning (`-e inject=…:delay_exit=`); nothing else of
//! the disk changes. Each reading goes through the spool (`memory_limit =
//! "0"`), 100 a second from a sim sensor read every 10 ms, while
//!
//! - A, connected: a client sends commands, one every 50 ms at most and one
//!   at a time, stamped (`id` and a fresh `ts`, so the agent records them
//!   before the pin moves) and then unstamped (`id` only); each is timed
//!   from its publish to its result (`cmd/relay/result`, sent by the agent
//!   once the pin has moved) arriving back at the client;
//! - B, offline: the broker stops for 5 s and starts again on the same
//!   port; a `mosquitto_sub` with a session of its own (the broker keeps
//!   it across the restart) reads every reading's `seq`, and any missing
//!   seq up to the last one seen is a reading lost.
//!
//! strace stops the agent at each fsync and fdatasync (a seccomp filter
//! lets every other call through), delayed or not, so the same run is made
//! first with strace attached and no delay: the baseline the slow disk is
//! read against. It knows nothing of how the
//! agent does its I/O; the figure is what a user sees from outside.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pinpost::link::{Link, LinkEvent, Publisher};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::common::*;
use crate::rig::*;

/// How long strace holds every fsync and fdatasync: 300 ms.
const DELAY_US: u32 = 300_000;
/// At most one command every 50 ms (20 a second).
const PACE: Duration = Duration::from_millis(50);
/// Commands of each kind: this many, or as many as `COMMAND_TIME` allows.
const COMMANDS: usize = 400;
const COMMAND_TIME: Duration = Duration::from_secs(20);
/// A command not answered within this counts as unanswered.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
const OUTAGE: Duration = Duration::from_secs(5);
/// How long the backlog may take to arrive once the broker is back.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(120);
/// The sensor's reading rate.
const READINGS_PER_S: f64 = 100.0;

/// Figure 7: commands and readings with strace attached, without and then
/// with every fsync delayed.
pub async fn measure(rows: &mut Vec<Row>) {
    require_tool("strace", "strace");
    for delay in [None, Some(DELAY_US)] {
        run(delay, rows).await;
    }
}

async fn run(delay: Option<u32>, rows: &mut Vec<Row>) {
    let setup = match delay {
        None => "strace, no delay".to_string(),
        Some(us) => format!("fsync +{} ms", us / 1000),
    };
    eprintln!("bench: slow disk ({setup})");
    let mut rig = Rig::persistent();
    let device = if delay.is_some() { "slow" } else { "traced" };
    let witness = Readings::watch(&rig, device);
    let link = operator(&rig, &format!("pinpost/{device}/cmd/relay/result")).await;
    let publisher = link.publisher();
    let (mut answers, answering) = answers(link);
    let mut agent = start_traced(&rig, device, delay);
    tokio::task::block_in_place(|| agent.wait_for("connected", Duration::from_secs(60)));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A: commands while connected and spooling.
    let stamped = commands(&publisher, &mut answers, device, true).await;
    let unstamped = commands(&publisher, &mut answers, device, false).await;

    // The pin moved when the agent logged "applied" (right after the
    // board write); its log line carries the time to the microsecond.
    let applied = applied_times(&tokio::task::block_in_place(|| {
        agent.log(Duration::from_millis(300))
    }));
    let to_pin = pin_latencies(&[&stamped, &unstamped], &applied);

    // B: the broker away for OUTAGE, the agent spooling all the while.
    tokio::task::block_in_place(|| {
        // SIGTERM: Mosquitto saves the witness's session and what is queued
        // for it, so a reading the broker acknowledged is not lost by the
        // broker. The agent sees its connection close either way.
        rig.broker.terminate();
        std::thread::sleep(OUTAGE);
        rig.broker.start_again();
    });
    let back = Instant::now();
    let back_ms = pinpost::utc::now_unix_millis();
    // Caught up once a reading made after the broker came back arrives:
    // the outbox sends in order, so the backlog went before it.
    let caught_up = loop {
        if let Some(at) = witness.first_made_after(back_ms) {
            break Some(at.saturating_duration_since(back));
        }
        if back.elapsed() > CATCH_UP_WITHIN {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A second of live readings after that, then stop producing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ran = started.elapsed();
    stop_traced(&mut agent);
    // Whatever the agent sent on its way out.
    tokio::time::sleep(Duration::from_secs(1)).await;
    answering.abort();
    let seen = witness.finish();

    let target = "target: p99 ≤ 5 ms";
    for (kind, samples) in ["stamped", "unstamped"].into_iter().zip(&to_pin) {
        let figure = match samples {
            Some(samples) if !samples.is_empty() => {
                let (p50, p99, max) = percentiles(samples.clone());
                format!("{} / {} / {}", ms(p50), ms(p99), ms(max))
            }
            Some(_) => "no command applied".to_string(),
            None => format!(
                "unmatched: {} applied lines for {} commands",
                applied.len(),
                stamped.sent_us.len() + unstamped.sent_us.len()
            ),
        };
        let over = samples
            .iter()
            .flatten()
            .filter(|d| **d > Duration::from_millis(5))
            .count();
        rows.push(row(
            &format!(
                "slow disk ({setup}): command → pin, {kind}, {} applied ({over} over 5 ms), p50 / p99 / max",
                samples.as_ref().map_or(0, Vec::len)
            ),
            figure,
            target,
            None,
        ));
    }
    for (kind, answered) in [("stamped", &stamped), ("unstamped", &unstamped)] {
        let figure = if answered.samples.is_empty() {
            "no command answered".to_string()
        } else {
            let (p50, p99, max) = percentiles(answered.samples.clone());
            format!("{} / {} / {}", ms(p50), ms(p99), ms(max))
        };
        // How often a command met a stall, beside how long the worst took.
        let over = answered
            .samples
            .iter()
            .filter(|d| **d > Duration::from_millis(5))
            .count();
        rows.push(row(
            &format!(
                "slow disk ({setup}): command → result (through the spool), {kind}, {} answered ({over} over 5 ms){}, p50 / p99 / max",
                answered.samples.len(),
                answered.trouble()
            ),
            figure,
            "no target: the result is spooled too",
            None,
        ));
    }
    let produced = seen.seqs.last().copied().unwrap_or(0);
    let delivered = seen.seqs.len() as u64;
    let missing = produced.saturating_sub(delivered);
    let rate = produced as f64 / ran.as_secs_f64();
    rows.push(row(
        &format!(
            "slow disk ({setup}): readings over a {} s outage, produced ({rate:.0}/s of {READINGS_PER_S:.0}/s) / delivered / missing",
            OUTAGE.as_secs()
        ),
        format!("{produced} / {delivered} / {missing}"),
        "target: 0 missing, 100/s",
        None,
    ));
    rows.push(row(
        &format!("slow disk ({setup}): backlog delivered after the broker returned"),
        caught_up.map_or_else(
            || format!("not within {} s", CATCH_UP_WITHIN.as_secs()),
            |d| format!("{:.2} s", d.as_secs_f64()),
        ),
        &format!("{} duplicates", seen.duplicates),
        None,
    ));
}

/// `pinpost run` under strace, with every fsync and fdatasync held for
/// `delay` microseconds, or none (strace's own cost alone).
fn start_traced(rig: &Rig, device: &str, delay: Option<u32>) -> Background {
    // `base_config` ends its `[outbox]` table with `path`; these first lines
    // of the body land in it. No memory: every message goes to the spool.
    let body = "memory_limit = \"0\"\n\n\
        [[output]]\nname = \"relay\"\npin = 27\n\n\
        [commands]\nmin_interval = \"0ms\"\n\n\
        [[sensor]]\nname = \"load\"\nkind = \"sim\"\ninterval = \"10ms\"\n\
        unit = \"n\"\nstart = 1.0\nstep = 1.0\n";
    let config = rig.pki.path().join(format!("{device}.toml"));
    std::fs::write(&config, base_config(rig, device, body)).expect("write config");
    let mut cmd = Command::new("strace");
    // Only fsync and fdatasync stop the agent: the seccomp filter lets every
    // other system call through untraced. Tracing all of them (strace's
    // default) costs each one ~28 µs here, which alone put the command p99
    // above 5 ms with no delay at all.
    cmd.args([
        "-f",
        "--seccomp-bpf",
        "-e",
        "trace=fsync,fdatasync",
        "-o",
        "/dev/null",
    ]);
    if let Some(us) = delay {
        for call in ["fdatasync", "fsync"] {
            cmd.arg("-e").arg(format!("inject={call}:delay_exit={us}"));
        }
    }
    cmd.arg(PINPOST).args(["run", "--config"]).arg(&config);
    Background::spawn(cmd)
}

/// Stops the agent as systemd would (SIGTERM to pinpost itself); strace
/// ends with it.
fn stop_traced(agent: &mut Background) {
    let strace = agent.pid();
    tokio::task::block_in_place(|| {
        if let Some(pid) = child_of(strace) {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        // Until strace closes stderr (it exits when pinpost has).
        let _ = agent.log(Duration::from_secs(15));
        let _ = Command::new("kill")
            .args(["-KILL", &strace.to_string()])
            .status();
    });
}

/// The first process whose parent is `parent`.
fn child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat =
                std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat"))
                    .ok()?;
            // Fields after the command name (which may hold spaces): state, ppid.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
}

/// What came back for one kind of command.
#[derive(Default)]
struct Answered {
    samples: Vec<Duration>,
    /// When each command answered `ok` was published (Unix µs), in order:
    /// matched to the agent's "applied" log lines for command → pin.
    sent_us: Vec<i64>,
    refused: usize,
    unanswered: usize,
}

impl Answered {
    fn trouble(&self) -> String {
        let mut out = String::new();
        if self.refused > 0 {
            out += &format!(", {} refused", self.refused);
        }
        if self.unanswered > 0 {
            out += &format!(
                ", {} unanswered in {} s",
                self.unanswered,
                ANSWER_WITHIN.as_secs()
            );
        }
        out
    }
}

/// Sends `on`/`off` commands one at a time, each once the previous one is
/// answered and at most one every `PACE`, for `COMMANDS` or `COMMAND_TIME`.
async fn commands(
    publisher: &Publisher,
    answers: &mut UnboundedReceiver<(String, bool, Instant)>,
    device: &str,
    stamped: bool,
) -> Answered {
    let topic = format!("pinpost/{device}/cmd/relay");
    let kind = if stamped { "s" } else { "u" };
    let begun = Instant::now();
    let mut out = Answered::default();
    for i in 0..COMMANDS {
        if begun.elapsed() >= COMMAND_TIME {
            break;
        }
        let id = format!("{kind}{i}");
        let action = if i % 2 == 0 { "on" } else { "off" };
        let payload = if stamped {
            let ts = pinpost::utc::now_unix_millis();
            format!(r#"{{"action":"{action}","id":"{id}","ts":{ts}}}"#)
        } else {
            format!(r#"{{"action":"{action}","id":"{id}"}}"#)
        };
        let t0 = Instant::now();
        let sent_us = unix_us();
        publisher
            .publish(&topic, payload.into(), Qos::AtLeastOnce, false)
            .await
            .expect("publish a command");
        let deadline = tokio::time::Instant::from_std(t0 + ANSWER_WITHIN);
        loop {
            match tokio::time::timeout_at(deadline, answers.recv()).await {
                Ok(Some((answered, ok, at))) if answered == id => {
                    if ok {
                        out.samples.push(at - t0);
                        out.sent_us.push(sent_us);
                    } else {
                        out.refused += 1;
                    }
                    break;
                }
                // A late answer to an earlier command.
                Ok(Some(_)) => {}
                Ok(None) => panic!("the operator's link to the bench broker ended"),
                Err(_) => {
                    out.unanswered += 1;
                    break;
                }
            }
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(t0 + PACE)).await;
    }
    out
}

/// Each command result as it arrives: its id, whether it was applied, when.
fn answers(
    mut link: Link,
) -> (
    UnboundedReceiver<(String, bool, Instant)>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(event) = link.next_event().await {
            if let LinkEvent::Message { payload, .. } = event {
                let at = Instant::now();
                let v: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                if let Some(id) = v["id"].as_str() {
                    let _ = tx.send((id.to_string(), v["ok"] == true, at));
                }
            }
        }
    });
    (rx, task)
}

/// What the witness has seen of the sensor's readings.
#[derive(Default)]
struct Seen {
    seqs: BTreeSet<u64>,
    duplicates: usize,
    /// When a reading made (its `ts`, Unix ms) at or after a time arrived:
    /// (ts, arrival) of every reading, in arrival order.
    arrivals: Vec<(i64, Instant)>,
}

/// A `mosquitto_sub` on the sensor's topic, read on a thread of its own.
struct Readings {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Readings {
    fn watch(rig: &Rig, device: &str) -> Readings {
        let mut args = tls_args(&rig.pki.ca.cert, Some(&rig.operator));
        // A session the broker keeps (and persists) across its restart.
        args.extend(strings(&["-c", "-i", &format!("bench-witness-{device}")]));
        let witness = Witness::start(&rig.broker, &format!("pinpost/{device}/sensor/load"), &args);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (into, stopped) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                for line in witness.messages(Duration::from_millis(50)) {
                    let at = Instant::now();
                    let Some((_, payload)) = line.split_once(' ') else {
                        continue;
                    };
                    let v: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
                    let Some(seq) = v["seq"].as_u64() else {
                        continue;
                    };
                    let made = v["ts"]
                        .as_str()
                        .and_then(pinpost::utc::parse_rfc3339_millis)
                        .unwrap_or(0);
                    let mut seen = into.lock().unwrap_or_else(|p| p.into_inner());
                    if !seen.seqs.insert(seq) {
                        seen.duplicates += 1;
                    }
                    seen.arrivals.push((made, at));
                }
            }
        });
        Readings { seen, stop, thread }
    }

    /// When the first reading made at or after `unix_ms` arrived, if one has.
    fn first_made_after(&self, unix_ms: i64) -> Option<Instant> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.arrivals
            .iter()
            .find(|(made, _)| *made >= unix_ms)
            .map(|(_, at)| *at)
    }

    fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *seen)
    }
}

/// Now, in Unix microseconds.
fn unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The times (Unix µs) of the agent's "applied" log lines, in order. A line
/// starts with its RFC 3339 time to the microsecond (tracing's default).
fn applied_times(log: &str) -> Vec<i64> {
    log.lines()
        .filter(|line| line.contains(" applied"))
        .filter_map(|line| {
            let stamp = line.split_whitespace().next()?;
            let (seconds, fraction) = stamp.trim_end_matches('Z').split_once('.')?;
            let whole = pinpost::utc::parse_rfc3339_millis(&format!("{seconds}Z"))?;
            let digits: String = fraction.chars().take(6).collect();
            let micros: i64 = format!("{digits:0<6}").parse().ok()?;
            Some(whole * 1000 + micros)
        })
        .collect()
}

/// Command → pin for each kind, pairing the commands answered `ok`, in the
/// order sent, with the "applied" lines in order; `None` for both when the
/// counts differ (a line lost or an extra one: no honest pairing).
fn pin_latencies(kinds: &[&Answered], applied: &[i64]) -> Vec<Option<Vec<Duration>>> {
    let total: usize = kinds.iter().map(|a| a.sent_us.len()).sum();
    if total != applied.len() {
        return vec![None; kinds.len()];
    }
    let mut at = applied.iter();
    kinds
        .iter()
        .map(|a| {
            Some(
                a.sent_us
                    .iter()
                    .zip(at.by_ref())
                    .map(|(sent, done)| {
                        Duration::from_micros(u64::try_from(done - sent).unwrap_or(0))
                    })
                    .collect(),
            )
        })
        .collect()
}
