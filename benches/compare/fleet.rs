//! Figure 6: a fleet's reconnect storm after a broker restart, and how the
//! reconnect jitter spreads it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pinpost::link::LinkEvent;

use crate::rig::*;

/// 6. N agents' links against one Mosquitto, which is then restarted.
pub async fn storm(rig: &mut Rig, n: usize, rows: &mut Vec<Row>) {
    eprintln!("bench: fleet of {n}");
    let device = &rig.device;
    let mut links = Vec::with_capacity(n);
    for i in 0..n {
        links.push(client(rig, device, &format!("fleet-{n}-{i}"), vec![]).await);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut tasks = Vec::new();
    for mut link in links {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = link.next_event().await {
                if matches!(event, LinkEvent::Connected { .. }) && tx.send(Instant::now()).is_err()
                {
                    return;
                }
            }
        }));
    }
    drop(tx);
    let t0 = Instant::now();
    rig.broker.restart();
    let mut times = Vec::with_capacity(n);
    while times.len() < n {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(at)) => times.push(at.duration_since(t0)),
            _ => break,
        }
    }
    for t in tasks {
        t.abort();
    }
    let all = times.iter().max().copied().unwrap_or_default();
    let mut buckets: BTreeMap<u128, usize> = BTreeMap::new();
    for t in &times {
        *buckets.entry(t.as_millis() / 100).or_default() += 1;
    }
    let peak = buckets.values().max().copied().unwrap_or(0) * 10;
    rows.push(row(
        &format!("fleet of {n}: broker restarted, all reconnected / peak reconnects"),
        format!(
            "{}/{n} in {:.2} s / {peak} per s",
            times.len(),
            all.as_secs_f64()
        ),
        "(backoff 1 s..10 s, jitter 0.5)",
        None,
    ));
}
