//! A clean stop (SIGTERM) while connected gives the outbox its five
//! seconds to empty, including what waits only on disk: the agent's spool
//! thread must still read it back during the stop. The proof is what a
//! subscriber receives, and what the next start finds left.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

fn config(dir: &Path, port: u16, spool: &Path, sensors: &str) -> std::path::PathBuf {
    let path = dir.join(format!("pinpost-{}.toml", sensors.len()));
    std::fs::write(
        &path,
        format!(
            r#"{head}[reconnect]
initial = "100ms"
max = "200ms"

[board]
kind = "sim"

[outbox]
path = "{spool}"
{sensors}"#,
            head = ConfigHead::new(port),
            spool = spool.display()
        ),
    )
    .expect("write config");
    path
}

fn run(config: &Path) -> Background {
    Background::start_with_env(
        &strings(&["run", "--config", &config.display().to_string()]),
        &[("RUST_LOG", "pinpost=info".to_string())],
    )
}

fn terminate(agent: &Background) {
    let status = Command::new("kill")
        .args(["-TERM", &agent.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// The number before `words` in the first log line holding them.
fn count_before(log: &str, words: &str) -> Option<usize> {
    let line = log.lines().find(|l| l.contains(words))?;
    let before = &line[..line.find(words)?];
    before.split_whitespace().last()?.parse().ok()
}

#[test]
fn a_stop_right_after_a_reconnect_still_sends_the_backlog_on_disk() {
    let pki = Pki::new("stop");
    let server = pki.server(&["127.0.0.1"]);
    pki.client("pi-01");
    let operator = pki.client("operator");
    let mut broker = Broker::mutual(&pki, server);
    let spool = pki.path().join("spool");

    // A first run, offline all along, leaves a backlog on disk.
    broker.terminate();
    let fast = "[[sensor]]\nname = \"fast\"\nkind = \"sim\"\ninterval = \"2ms\"\nunit = \"V\"\n";
    let mut first = run(&config(pki.path(), broker.port, &spool, fast));
    first.wait_for("starting", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    terminate(&first);
    let log = first.log(Duration::from_secs(15));
    let backlog = count_before(&log, "messages the broker has not acknowledged are kept in")
        .unwrap_or_else(|| panic!("the first run kept nothing:\n{log}"));
    assert!(
        backlog > 300,
        "a backlog of many read slices: {backlog}\n{log}"
    );

    // The broker returns; a second run with no sensor of its own is
    // stopped as soon as it is connected.
    broker.start_again();
    let witness = Witness::start(
        &broker,
        "pinpost/pi-01/sensor/#",
        &tls_args(&pki.ca.cert, Some(&operator)),
    );
    let mut second = run(&config(pki.path(), broker.port, &spool, ""));
    second.wait_for("connected", Duration::from_secs(10));
    terminate(&second);
    let stopping = Instant::now();
    let log = second.log(Duration::from_secs(15));
    let took = stopping.elapsed();
    assert_eq!(
        count_before(&log, "messages kept in"),
        Some(backlog),
        "{log}"
    );
    let received = witness.messages(Duration::from_secs(3)).len();
    assert_eq!(
        received, backlog,
        "the backlog reached the subscriber during the stop\n{log}"
    );
    assert!(
        !log.contains("broker has not acknowledged are kept in"),
        "nothing was left for the next start:\n{log}"
    );
    assert!(
        took < Duration::from_secs(4),
        "the stop ended when the outbox was empty, not at the deadline: {took:?}\n{log}"
    );
}
