//! How fast, how small, how frugal: pinpost measured beside the tools users
//! would pick instead, in one run on one machine, so ratios are comparable
//! even on a shared, noisy machine. `scripts/bench.sh` runs it (it installs
//! Mosquitto, its clients and mqtt-io if missing); BENCHMARKS.md holds the
//! figures.
//!
//! Everything talks to a real Mosquitto on 127.0.0.1 with mutual TLS, the
//! same harness the integration tests use. Figures, not pass/fail.
//!
//! `cargo bench --bench compare -- command fleet` runs only the figures
//! named (edge, command, throughput, one-shot, footprint, fleet, slow-disk,
//! counting).

#[path = "../../tests/integration/common/mod.rs"]
#[allow(dead_code, unused_imports)] // the figures use part of the harness
mod common;
mod counting;
mod fleet;
mod footprint;
mod latency;
#[path = "../shared/process.rs"]
mod process;
mod rig;
mod slowdisk;
mod throughput;

use std::time::Instant;

use common::*;
use rig::{Rig, Row};

const FIGURES: [&str; 8] = [
    "edge",
    "command",
    "throughput",
    "one-shot",
    "footprint",
    "fleet",
    "slow-disk",
    "counting",
];

fn main() {
    // cargo bench passes `--bench`; anything else names figures to run.
    let chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let Some(unknown) = chosen.iter().find(|c| !FIGURES.contains(&c.as_str())) {
        eprintln!(
            "compare: no figure called {unknown:?}; the figures are {}",
            FIGURES.join(", ")
        );
        std::process::exit(2);
    }
    let wanted = |figure: &str| chosen.is_empty() || chosen.iter().any(|c| c == figure);
    for tool in ["mosquitto", "mosquitto_pub"] {
        require_tool(tool, "mosquitto mosquitto-clients");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut rig = Rig::start();
    // The latency figures and the one-shot run against both setups: the
    // broker as installed, and as `pinpost certs mosquitto` sets it up.
    let tuned = Rig::without_nagle();
    let started = Instant::now();
    let mut rows = Vec::new();
    if wanted("edge") {
        runtime.block_on(latency::edge(&rig, &mut rows));
        runtime.block_on(latency::edge(&tuned, &mut rows));
    }
    if wanted("command") {
        runtime.block_on(latency::command(&rig, &mut rows));
        runtime.block_on(latency::command(&tuned, &mut rows));
    }
    if wanted("throughput") {
        runtime.block_on(throughput::sustained(&rig, &mut rows));
    }
    if wanted("one-shot") {
        throughput::one_shot(&rig, &mut rows);
        throughput::one_shot(&tuned, &mut rows);
    }
    if wanted("footprint") {
        footprint::measure(&rig, &mut rows);
    }
    if wanted("fleet") {
        for n in [100, 1000] {
            runtime.block_on(fleet::storm(&mut rig, n, &mut rows));
        }
        for n in [100, 1000] {
            runtime.block_on(fleet::failover(&rig, n, &mut rows));
        }
    }
    if wanted("counting") {
        counting::measure(&rig, &mut rows);
    }
    if wanted("slow-disk") {
        // Its own broker, which it stops and starts again.
        runtime.block_on(slowdisk::measure(&mut rows));
    }
    print_table(&rows);
    println!("\nwhole run: {:.0} s", started.elapsed().as_secs_f64());
}

fn print_table(rows: &[Row]) {
    let width = |column: fn(&Row) -> &str| {
        rows.iter()
            .map(|r| column(r).chars().count())
            .max()
            .unwrap_or(10)
    };
    let w = width(|r| &r.figure);
    let p = width(|r| &r.pinpost);
    let q = width(|r| &r.reference);
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
    for r in rows {
        println!(
            "| {:<w$} | {:<p$} | {:<q$} | {:>5} |",
            r.figure, r.pinpost, r.reference, r.ratio
        );
    }
}
