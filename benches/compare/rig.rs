//! What every figure shares: the broker and certificates of one run, a row
//! of the table, and the clients and agents the figures drive. It knows
//! nothing of any one figure.

use std::collections::BTreeMap;
use std::time::Duration;

use pinpost::board::{PinPlan, SimBoard, SimHandle};
use pinpost::config::{Overrides, from_text};
pub use pinpost::link::Qos;
use pinpost::link::{Link, LinkEvent, LinkOptions, Retry};

use crate::common::*;

/// One Mosquitto with mutual TLS and the certificates every figure uses.
pub struct Rig {
    pub pki: Pki,
    pub broker: Broker,
    /// The Pi's certificate, as in `base_config`.
    pub device: Files,
    /// A second identity, for the clients that watch or command the Pi.
    pub operator: Files,
    /// The broker sends small packets at once (Mosquitto's
    /// `set_tcp_nodelay true`); pinpost's links always do.
    pub nodelay: bool,
}

impl Rig {
    /// Mosquitto as installed, apart from the queue limit.
    pub fn start() -> Rig {
        Rig::with(false)
    }

    /// Mosquitto as `pinpost certs mosquitto` sets it up: Nagle off.
    pub fn without_nagle() -> Rig {
        Rig::with(true)
    }

    /// Mosquitto as installed, keeping sessions and their queued messages
    /// across a graceful restart, so a subscriber with a session of its own
    /// misses nothing while the broker is down (the slow-disk outage).
    pub fn persistent() -> Rig {
        Rig::with_setup(false, true)
    }

    fn with(nodelay: bool) -> Rig {
        Rig::with_setup(nodelay, false)
    }

    fn with_setup(nodelay: bool, persistence: bool) -> Rig {
        let pki = Pki::new("bench");
        let server = pki.server(&["127.0.0.1"]);
        let device = pki.client("pi-01");
        let operator = pki.client("operator");
        // Mosquitto drops QoS 1 messages beyond 1000 queued for a subscriber
        // by default; the witness must see every one.
        let mut extra = vec!["max_queued_messages 0".to_string()];
        if nodelay {
            extra.push("set_tcp_nodelay true".into());
        }
        let broker = Broker::start(&BrokerSetup {
            tls: Some((pki.ca.cert.clone(), server)),
            require_certificate: true,
            extra,
            persistence,
            ..BrokerSetup::default()
        });
        Rig {
            pki,
            broker,
            device,
            operator,
            nodelay,
        }
    }
}

impl Rig {
    /// How the broker is set up, for a row's name.
    pub fn setup(&self) -> &'static str {
        if self.nodelay {
            "Nagle off (set_tcp_nodelay)"
        } else {
            "Mosquitto defaults"
        }
    }
}

pub struct Row {
    pub figure: String,
    pub pinpost: String,
    pub reference: String,
    pub ratio: String,
}

pub fn row(figure: &str, pinpost: String, reference: &str, ratio: Option<f64>) -> Row {
    Row {
        figure: figure.into(),
        pinpost,
        reference: reference.into(),
        ratio: ratio.map_or("-".into(), |r| format!("{r:.2}x")),
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99), samples[samples.len() - 1])
}

pub fn base_config(rig: &Rig, id: &str, body: &str) -> String {
    format!(
        r#"[device]
id = "{id}"

[broker]
host = "127.0.0.1"
port = {port}

[broker.tls]
ca_file = "ca.crt"
cert_file = "pi-01.crt"
key_file = "pi-01.key"

[reconnect]
initial = "1s"
max = "10s"

[board]
kind = "sim"

[outbox]
path = "{outbox}"

{body}
"#,
        port = rig.broker.port,
        outbox = rig.pki.path().join(format!("outbox-{id}")).display(),
    )
}

/// The agent in this process on a sim board; stopped by dropping `stop`.
pub fn start_agent(
    rig: &Rig,
    text: &str,
) -> (
    SimHandle,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let config = from_text(
        text,
        Some(&rig.pki.path().join("bench.toml")),
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("bench config: {e}"));
    let (edges_tx, edges) = pinpost::board::edges::channel(config.inputs.len());
    let (board, pins) = SimBoard::new(
        &PinPlan::from_config(&config),
        &config.board.wires,
        edges_tx,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = pinpost::agent::run(config, Box::new(board), edges, async {
            let _ = stopped.await;
        })
        .await;
    });
    (pins, stop, task)
}

/// A client with the operator's certificate, subscribed to `filter`.
pub async fn operator(rig: &Rig, filter: &str) -> Link {
    client(
        rig,
        &rig.operator,
        "bench-operator",
        vec![(filter.to_string(), Qos::AtLeastOnce)],
    )
    .await
}

pub async fn client(rig: &Rig, files: &Files, id: &str, subs: Vec<(String, Qos)>) -> Link {
    let text = format!(
        "[device]\nid = \"{id}\"\n[broker]\nhost = \"127.0.0.1\"\nport = {}\n[broker.tls]\n\
         ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        rig.broker.port,
        rig.pki.ca.cert.display(),
        files.cert.display(),
        files.key.display()
    );
    let config = from_text(&text, None, &Overrides::default()).expect("client config");
    let tls = config
        .broker
        .tls
        .as_ref()
        .map(pinpost::tls::setup)
        .transpose()
        .expect("tls");
    let mut link = Link::start(
        LinkOptions {
            broker: config.broker.clone(),
            client_id: id.to_string(),
            reconnect: config.reconnect.clone(),
            retry: Retry::Forever,
            will: None,
            subscriptions: subs.clone(),
            max_incoming: None,
        },
        tls,
    );
    let mut subscribed = subs.is_empty();
    let mut connected = false;
    while !(connected && subscribed) {
        match link.next_event().await {
            Some(LinkEvent::Connected { .. }) => connected = true,
            Some(LinkEvent::Subscribed { .. }) => subscribed = true,
            Some(_) => {}
            None => panic!("link to the bench broker ended"),
        }
    }
    link
}

/// Waits for a message on `topic` whose JSON `value` is `value`.
pub async fn message(link: &mut Link, topic: &str, value: bool) {
    loop {
        if let Some(LinkEvent::Message {
            topic: t, payload, ..
        }) = link.next_event().await
        {
            if t == topic {
                let v: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                if v["value"] == value {
                    return;
                }
            }
        }
    }
}

/// Reads a link's events and throws them away.
pub fn drain(mut link: Link) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while link.next_event().await.is_some() {} })
}

/// Counts messages per topic as they arrive, in its own task.
pub struct Counter {
    counts: tokio::sync::watch::Receiver<BTreeMap<String, usize>>,
    _task: tokio::task::JoinHandle<()>,
}

pub fn counter(mut link: Link) -> Counter {
    let (tx, counts) = tokio::sync::watch::channel(BTreeMap::new());
    let task = tokio::spawn(async move {
        while let Some(event) = link.next_event().await {
            if let LinkEvent::Message { topic, .. } = event {
                tx.send_modify(|c| *c.entry(topic).or_default() += 1);
            }
        }
    });
    Counter {
        counts,
        _task: task,
    }
}

impl Counter {
    /// How many arrived on `topic`: once `n` have, or none came for 5 s.
    pub async fn wait(&self, topic: &str, n: usize) -> usize {
        let mut counts = self.counts.clone();
        loop {
            let got = counts.borrow().get(topic).copied().unwrap_or(0);
            if got >= n {
                return got;
            }
            if tokio::time::timeout(Duration::from_secs(5), counts.changed())
                .await
                .is_err()
            {
                return got;
            }
        }
    }
}
