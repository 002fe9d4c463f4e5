//! Figures 6 and 7: a fleet's reconnect storm after a broker restart, and
//! how the reconnect jitter spreads it; and a fleet spread over two nodes
//! when one dies.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pinpost::config::{Overrides, from_text};
use pinpost::link::{Link, LinkEvent, LinkOptions, Retry};

use crate::common::*;
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

/// Figure 7: N links spread (`order = "spread"`) over two Mosquitto nodes;
/// the node holding about half of them is killed. How long until every one
/// of those is connected again (on the other node), and the peak reconnect
/// rate the surviving node takes.
pub async fn failover(rig: &Rig, n: usize, rows: &mut Vec<Row>) {
    eprintln!("bench: fleet of {n} over two nodes, one killed");
    let mut doomed = Broker::start(&BrokerSetup {
        tls: Some((rig.pki.ca.cert.clone(), rig.pki.server(&["127.0.0.1"]))),
        require_certificate: true,
        extra: vec!["max_queued_messages 0".to_string()],
        ..BrokerSetup::default()
    });
    let hosts = [rig.broker.port, doomed.port];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u16, Instant)>();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let mut link = spread_client(rig, &hosts, &format!("spread-{n}-{i}"));
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = link.next_event().await {
                if let LinkEvent::Connected { broker, .. } = event {
                    if tx.send((i, broker.port, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        }));
    }
    drop(tx);
    // Where each link landed first.
    let mut on: BTreeMap<usize, u16> = BTreeMap::new();
    while on.len() < n {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some((i, port, _))) => {
                on.insert(i, port);
            }
            _ => break,
        }
    }
    let victims: Vec<usize> = on
        .iter()
        .filter(|(_, port)| **port == doomed.port)
        .map(|(i, _)| *i)
        .collect();
    let t0 = Instant::now();
    doomed.stop();
    let mut back: BTreeMap<usize, Duration> = BTreeMap::new();
    while back.len() < victims.len() {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some((i, port, at))) if port == rig.broker.port => {
                back.entry(i).or_insert(at.duration_since(t0));
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    for t in tasks {
        t.abort();
    }
    let all = back.values().max().copied().unwrap_or_default();
    let mut buckets: BTreeMap<u128, usize> = BTreeMap::new();
    for t in back.values() {
        *buckets.entry(t.as_millis() / 100).or_default() += 1;
    }
    let peak = buckets.values().max().copied().unwrap_or(0) * 10;
    rows.push(row(
        &format!("fleet of {n} over 2 nodes: one killed, its links back on the other / peak"),
        format!(
            "{}/{} in {:.2} s / {peak} per s",
            back.len(),
            victims.len(),
            all.as_secs_f64()
        ),
        &format!("{} of {n} were on the killed node", victims.len()),
        None,
    ));
}

/// A link given both nodes, spread over them by its client id.
fn spread_client(rig: &Rig, ports: &[u16], id: &str) -> Link {
    let hosts = ports
        .iter()
        .map(|p| format!("\"127.0.0.1:{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "[device]\nid = \"{id}\"\n[broker]\nhosts = [{hosts}]\norder = \"spread\"\n\
         [broker.tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        rig.pki.ca.cert.display(),
        rig.device.cert.display(),
        rig.device.key.display()
    );
    let config = from_text(&text, None, &Overrides::default()).expect("client config");
    let tls = config
        .broker
        .tls
        .as_ref()
        .map(pinpost::tls::setup)
        .transpose()
        .expect("tls");
    Link::start(
        LinkOptions {
            broker: config.broker.clone(),
            client_id: id.to_string(),
            reconnect: config.reconnect.clone(),
            retry: Retry::Forever,
            will: None,
            subscriptions: vec![],
            max_incoming: None,
        },
        tls,
    )
}
