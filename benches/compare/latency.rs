//! Figures 1 and 2: how soon a GPIO edge reaches a subscriber, and how soon
//! a command reaches the pin, through the whole product path on a sim board.
//! Each runs against Mosquitto as installed and with Nagle off.

use std::time::{Duration, Instant};

use pinpost::link::Publisher;

use crate::rig::*;

const EDGES: usize = 10_000;
const COMMANDS: usize = 1_000;

/// 1. A sim input edge to a subscriber holding the message.
pub async fn edge(rig: &Rig, rows: &mut Vec<Row>) {
    eprintln!("bench: edge latency ({EDGES} edges)");
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
        &format!(
            "edge → subscriber, {}, {EDGES} edges, p50 / p99 / max",
            rig.setup()
        ),
        format!("{} / {} / {}", ms(p50), ms(p99), ms(max)),
        "(no equivalent)",
        None,
    ));
}

/// 2. A command published by a client to the sim output changing.
pub async fn command(rig: &Rig, rows: &mut Vec<Row>) {
    eprintln!("bench: command latency ({COMMANDS} commands)");
    // No min_interval: the figure is the path's latency, not the
    // anti-chatter hold a second command inside 100 ms would get.
    let text = base_config(
        rig,
        "cmds",
        "[[output]]\nname = \"relay\"\npin = 27\n[commands]\nmin_interval = \"0ms\"\n",
    );
    let link = operator(rig, "pinpost/cmds/output/relay").await;
    let publisher: Publisher = link.publisher();
    // Unread events would fill the link's queue and stall its connection.
    let draining = drain(link);
    let (pins, stop, task) = start_agent(rig, &text);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A thread watching the pin, so the moment it changes is seen at once.
    let (changed_tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let watcher = pins.clone();
    // Read before the thread starts: a command can change the pin before
    // a new thread first runs, which then waited for a change forever.
    let mut last = watcher.level(27);
    let watching = std::thread::spawn(move || {
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
        &format!(
            "command → pin, {}, {COMMANDS} commands, p50 / p99 / max",
            rig.setup()
        ),
        format!("{} / {} / {}", ms(p50), ms(p99), ms(max)),
        "(no equivalent)",
        None,
    ));
}
