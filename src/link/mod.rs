//! The link: one supervised MQTT connection, the only code that talks to
//! rumqttc. It connects, waits between attempts with backoff and jitter,
//! resubscribes after a session is lost, and reports what happens as
//! [`LinkEvent`]s, failures already explained in words.
//!
//! rumqttc reconnects only when polled again after an error, so `poll()`
//! runs in its own task and is never blocked by a caller's `publish()`. The
//! link knows nothing of pins, sensors or what messages mean.

mod backoff;
#[cfg(test)]
mod batching;
mod client;
mod diagnose;
mod prompt;
mod tracking;

use std::time::Duration;

use rumqttc::{
    AsyncClient, ClientError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Broker, Endpoint, Reconnect};
use crate::tls::TlsSetup;

use tracking::{Handed, Tracker};

pub use backoff::Backoff;
pub(crate) use client::Client;
pub use diagnose::{Failure, LostReason, Rejection, Target};
pub use prompt::PromptAcks;

/// Delivery guarantee of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

impl From<Qos> for QoS {
    fn from(q: Qos) -> QoS {
        match q {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Keep trying with backoff (the agent).
    Forever,
    /// Report the failure and stop (one-shot CLI commands).
    Never,
    /// Stop if the first attempt fails; once connected, keep trying (like
    /// mosquitto_sub: a wrong address fails at once, a dropped link heals).
    OnceConnected,
}

/// A message the broker publishes when the link dies without saying goodbye.
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

#[derive(Debug, Clone)]
pub struct LinkOptions {
    pub broker: Broker,
    pub client_id: String,
    pub reconnect: Reconnect,
    pub retry: Retry,
    pub will: Option<Will>,
    /// Filters subscribed on every connect that has no session.
    pub subscriptions: Vec<(String, Qos)>,
    /// The largest packet read from the broker (remaining length: topic,
    /// packet id and payload); `None` for `broker.max_packet_size`. A larger
    /// one closes the connection, as MQTT 3.1.1 gives no way to skip a
    /// packet unread, and the next connect starts a clean session so the
    /// broker does not send it again. It bounds what the broker can make
    /// this process hold: this times the event and packet queues.
    pub max_incoming: Option<usize>,
}

/// What the link reports, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    Connected {
        session_present: bool,
        /// Which broker (of several, the one that answered).
        broker: Endpoint,
    },
    Message {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    /// A publish was written to the network with this packet id (0 for
    /// QoS 0), carrying the token it was sent with.
    Sent {
        pkid: u16,
        token: Option<u64>,
    },
    /// The broker acknowledged the QoS 1 publish with this packet id.
    Acked {
        pkid: u16,
        token: Option<u64>,
    },
    Subscribed {
        refused: Vec<String>,
    },
    /// The connection failed or dropped. `retry_in` is `None` when the link
    /// has given up (with [`Retry::Never`]).
    Down {
        failure: Failure,
        retry_in: Option<Duration>,
        was_connected: bool,
    },
    /// A requested disconnect has been written; the link is finished.
    Closed,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "message too large: {size} bytes with its topic, over the {limit}-byte packet limit \
         (broker.max_packet_size); raise the limit if the broker accepts more"
    )]
    TooLarge { size: usize, limit: usize },
    #[error("invalid topic {topic:?}: {why}")]
    BadTopic { topic: String, why: &'static str },
    #[error("the link has stopped; nothing more can be sent")]
    Stopped,
    #[error("the link's queue is full (the broker has been unreachable for a while)")]
    Busy,
}

/// A running link. Dropping it stops the connection task.
pub struct Link {
    publisher: Publisher,
    events: mpsc::Receiver<LinkEvent>,
    task: JoinHandle<()>,
}

/// Queues messages on a link; cheap to clone into producer tasks.
#[derive(Clone)]
pub struct Publisher {
    client: AsyncClient,
    max_packet_size: usize,
    handed: Handed,
}

/// Room for events between the poll task and the consumer; when full the
/// poll task waits, which slows reading from the network instead of
/// growing memory.
const EVENT_BUFFER: usize = 256;
/// Requests queued towards rumqttc; publishers wait when it is full. The
/// outbox's window ([`WINDOW`]) plus room for subscribes and DISCONNECT.
const REQUEST_BUFFER: usize = WINDOW + 16;
/// Tracked publishes a caller should have unacknowledged at once: enough to
/// keep a loopback or LAN link busy, few enough that a reconnect resends
/// little. Below rumqttc's in-flight limit (100) so it never stalls.
pub const WINDOW: usize = 48;

/// The MQTT options for one broker of the config's.
fn mqtt_options(
    options: &LinkOptions,
    endpoint: &Endpoint,
    max_incoming: usize,
    tls: Option<&TlsSetup>,
) -> MqttOptions {
    let broker = &options.broker;
    let mut mqtt = MqttOptions::new(&options.client_id, &endpoint.host, endpoint.port);
    mqtt.set_keep_alive(broker.keep_alive)
        .set_clean_session(broker.clean_session)
        .set_max_packet_size(max_incoming, broker.max_packet_size);
    if let Some(c) = &broker.credentials {
        let password = c.password.as_ref().map_or("", |p| p.expose());
        mqtt.set_credentials(&c.username, password);
    }
    if let Some(will) = &options.will {
        mqtt.set_last_will(LastWill::new(
            &will.topic,
            will.payload.clone(),
            QoS::AtLeastOnce,
            will.retain,
        ));
    }
    if let Some(setup) = tls {
        mqtt.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            setup.config.clone(),
        )));
    }
    mqtt
}

/// The brokers a link may use, and which one it is on. It stays on a
/// broker while it works and moves to the next only when a connection to
/// it fails or dies, so it goes back to an earlier one only by going round:
/// no flapping between nodes.
struct Brokers {
    endpoints: Vec<Endpoint>,
    at: usize,
    /// Attempts that failed since the last connect.
    failed: usize,
    max_incoming: usize,
}

impl Brokers {
    fn current(&self) -> &Endpoint {
        &self.endpoints[self.at]
    }

    /// Whether every broker has failed once since the last connect.
    fn all_failed(&self) -> bool {
        self.failed >= self.endpoints.len()
    }

    /// After a failure: the next broker is the one to try.
    fn next(&mut self, eventloop: &mut EventLoop, options: &LinkOptions, target: &mut Target) {
        self.failed += 1;
        if self.endpoints.len() < 2 {
            return;
        }
        self.at = (self.at + 1) % self.endpoints.len();
        let endpoint = self.endpoints[self.at].clone();
        // The session choice of the moment (a one-off clean connect after
        // a packet too large to read) carries over.
        let clean = eventloop.mqtt_options.clean_session();
        let mut mqtt = mqtt_options(options, &endpoint, self.max_incoming, target.tls.as_ref());
        mqtt.set_clean_session(clean);
        eventloop.mqtt_options = mqtt;
        target.host = endpoint.host;
        target.port = endpoint.port;
    }
}

impl Link {
    /// Starts connecting in the background. `tls` is `None` for plain MQTT.
    pub fn start(options: LinkOptions, tls: Option<TlsSetup>) -> Link {
        let broker = &options.broker;
        let max_incoming = options
            .max_incoming
            .map_or(broker.max_packet_size, |m| m.min(broker.max_packet_size));
        let endpoints = broker.order.arrange(&broker.endpoints, &options.client_id);
        let first = endpoints.first().cloned().unwrap_or_else(|| Endpoint {
            host: broker.host.clone(),
            port: broker.port,
        });
        let mqtt = mqtt_options(&options, &first, max_incoming, tls.as_ref());
        let (client, mut eventloop) = AsyncClient::new(mqtt, REQUEST_BUFFER);
        let mut network = eventloop.network_options();
        // rumqttc counts in whole seconds; round up so "1500ms" is not 1s.
        network.set_connection_timeout(broker.connect_timeout.as_secs_f64().ceil() as u64);
        // Small packets go out at once and what arrives is acknowledged at
        // once: either alone still leaves 40 ms stalls against a broker
        // that keeps Nagle on (Mosquitto as installed); see `prompt`.
        network.set_tcp_nodelay(true);
        network.set_tcp_stream_wrapper(prompt::wrap);
        // A name-based service reached by address still gets its name.
        network.set_tls_server_name(broker.tls.as_ref().and_then(|t| t.server_name.clone()));
        eventloop.set_network_options(network);
        let target = Target {
            host: first.host.clone(),
            port: first.port,
            client_id: options.client_id.clone(),
            username: broker.credentials.as_ref().map(|c| c.username.clone()),
            connect_timeout: broker.connect_timeout,
            keep_alive: broker.keep_alive,
            tls,
            max_incoming,
            profile: broker.profile,
        };
        let (tx, events) = mpsc::channel(EVENT_BUFFER);
        let handed = Handed::default();
        let publisher = Publisher {
            client: client.clone(),
            max_packet_size: broker.max_packet_size,
            handed: handed.clone(),
        };
        let tracker = Tracker::new(handed);
        let brokers = Brokers {
            endpoints,
            at: 0,
            failed: 0,
            max_incoming,
        };
        let task = tokio::spawn(drive(
            eventloop, client, options, target, brokers, tracker, tx,
        ));
        Link {
            publisher,
            events,
            task,
        }
    }

    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// Sends DISCONNECT after everything queued before it; the link then
    /// reports [`LinkEvent::Closed`] and ends.
    pub async fn disconnect(&self) -> Result<(), LinkError> {
        self.publisher
            .client
            .disconnect()
            .await
            .map_err(|_: ClientError| LinkError::Stopped)
    }

    /// The next event; `None` once the link has ended.
    pub async fn next_event(&mut self) -> Option<LinkEvent> {
        self.events.recv().await
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Publisher {
    /// Queues a publish without waiting: [`LinkError::Busy`] when the queue
    /// towards rumqttc is full. For a loop that must never stall on the
    /// network (the agent).
    pub fn try_publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        qos: Qos,
        retain: bool,
    ) -> Result<(), LinkError> {
        self.try_queue(None, topic, payload, qos, retain)
    }

    /// Queues a QoS 1 publish whose [`LinkEvent::Acked`] carries `token`.
    /// The link keeps it across lost connections and sessions until it is
    /// acknowledged, and resends in token order: give increasing tokens.
    pub fn try_send(
        &self,
        token: u64,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), LinkError> {
        self.try_queue(Some(token), topic, payload, Qos::AtLeastOnce, retain)
    }

    fn try_queue(
        &self,
        token: Option<u64>,
        topic: &str,
        payload: Vec<u8>,
        qos: Qos,
        retain: bool,
    ) -> Result<(), LinkError> {
        self.check(topic, &payload)?;
        // Queue and record the token under one lock: the FIFO must match
        // the order rumqttc reads requests in.
        self.handed.with(|handed| {
            self.client
                .try_publish(topic, qos.into(), retain, payload)
                .map_err(|e| match e {
                    ClientError::TryRequest(_) => LinkError::Busy,
                    _ => LinkError::Stopped,
                })?;
            handed.push_back(token);
            Ok(())
        })
    }

    fn check(&self, topic: &str, payload: &[u8]) -> Result<(), LinkError> {
        check_topic(topic)?;
        // Fixed header (up to 5) + topic length (2) + packet id (2).
        let size = topic.len() + payload.len() + 9;
        if size > self.max_packet_size {
            return Err(LinkError::TooLarge {
                size,
                limit: self.max_packet_size,
            });
        }
        Ok(())
    }

    /// Queues a publish. Ok means queued, not delivered: wait for
    /// [`LinkEvent::Acked`] for that.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        qos: Qos,
        retain: bool,
    ) -> Result<(), LinkError> {
        self.check(topic, &payload)?;
        // Recorded before queueing (a lock cannot be held across the wait);
        // publishes from one task keep their order.
        self.handed.with(|h| h.push_back(None));
        self.client
            .publish(topic, qos.into(), retain, payload)
            .await
            .map_err(|_: ClientError| LinkError::Stopped)
    }
}

/// A topic to publish to: MQTT forbids wildcards and NUL in it.
pub fn check_topic(topic: &str) -> Result<(), LinkError> {
    let why = if topic.is_empty() {
        "it is empty"
    } else if topic.contains(['+', '#']) {
        "wildcards + and # are only for subscribing"
    } else if topic.contains('\0') {
        "it contains a NUL character"
    } else if topic.len() > 65_535 {
        "it is longer than 65535 bytes"
    } else {
        return Ok(());
    };
    Err(LinkError::BadTopic {
        topic: topic.to_string(),
        why,
    })
}

/// Ends the current connection politely (DISCONNECT, so the broker does
/// not publish the will) and drops it; the next poll connects again with
/// the options as they are now. Whatever rumqttc held for the connection
/// is kept in `pending`, for the tracker to take.
async fn renew_session(eventloop: &mut EventLoop) {
    if let Some(network) = eventloop.network.as_mut() {
        // A DISCONNECT is two bytes: if they do not leave in this long, the
        // connection is as good as dead anyway.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            network.write(Packet::Disconnect).await?;
            network.flush().await
        })
        .await;
    }
    eventloop.clean();
}

/// The poll loop: owns the event loop, reports events, sleeps between
/// attempts. Ends on a requested disconnect, on giving up, or when nobody
/// listens any more.
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    options: LinkOptions,
    mut target: Target,
    mut brokers: Brokers,
    mut tracker: Tracker,
    tx: mpsc::Sender<LinkEvent>,
) {
    let mut backoff = Backoff::new(options.reconnect.clone());
    let mut connected = false;
    let mut ever_connected = false;
    let silence_limit = silence_limit(target.keep_alive);
    let mut last_heard = tokio::time::Instant::now();
    // A persistent session is set aside for one connect after a packet too
    // large to read: the broker would send it again, forever.
    let mut clean_once = false;
    // A retained one comes back at every subscribe, whatever the session:
    // while drops keep being for that, the backoff is not reset on connect,
    // so reconnects (and their log lines) slow down to reconnect.max.
    let mut dropped_too_large = false;
    loop {
        if !connected {
            if let Some(tls) = &target.tls {
                tls.observer.reset();
            }
        }
        let polled = match silence_limit {
            Some(limit) if connected => tokio::select! {
                polled = eventloop.poll() => Some(polled),
                () = tokio::time::sleep_until(last_heard + limit) => None,
            },
            _ => Some(eventloop.poll().await),
        };
        let outcome = match polled {
            Some(Ok(event)) => Ok(event),
            Some(Err(rumqttc::ConnectionError::RequestsDone)) => return,
            Some(Err(error)) => {
                let failure = diagnose::diagnose(&error, connected, &target).await;
                tracing::debug!(error = %error, kind = failure.kind(), "connection failed");
                Err(failure)
            }
            None => {
                // Dropping the connection mid-poll is safe here because it
                // is discarded whole: clean() keeps every unacknowledged
                // publish and queued request for the next one.
                eventloop.clean();
                Err(diagnose::silent(&target, last_heard.elapsed()))
            }
        };
        let event = match outcome {
            Ok(event) => event,
            Err(failure) => {
                dropped_too_large = failure.too_large();
                if dropped_too_large && !options.broker.clean_session {
                    eventloop.mqtt_options.set_clean_session(true);
                    clean_once = true;
                }
                tracker.lost(&mut eventloop.pending);
                brokers.next(&mut eventloop, &options, &mut target);
                let down = down(
                    failure,
                    connected,
                    ever_connected,
                    brokers.all_failed(),
                    &options,
                    &mut backoff,
                    &tx,
                );
                match down.await {
                    Some(state) => connected = state,
                    None => return,
                }
                continue;
            }
        };
        if matches!(event, Event::Incoming(_)) {
            last_heard = tokio::time::Instant::now();
        }
        let report = match event {
            Event::Incoming(Packet::ConnAck(_)) if std::mem::take(&mut clean_once) => {
                // The clean connect threw the broker's session away, and
                // the session it made ends with this connection: commands
                // sent during the next outage would be lost too. Leave at
                // once (a DISCONNECT, so the will is not published) and
                // connect again with clean_session = false, which makes a
                // new persistent session before anything is subscribed.
                eventloop.mqtt_options.set_clean_session(false);
                tracing::warn!(
                    "the broker's session for pinpost was discarded to get rid of the packet too \
                     large to read; any commands it had queued were lost with it (MQTT does \
                     not say how many). Making a new persistent session"
                );
                renew_session(&mut eventloop).await;
                tracker.lost(&mut eventloop.pending);
                continue;
            }
            Event::Incoming(Packet::ConnAck(ack)) => {
                connected = true;
                ever_connected = true;
                if !dropped_too_large {
                    backoff.reset();
                }
                tracker.reconnected(&mut eventloop.pending);
                if !ack.session_present {
                    resubscribe(&client, &options.subscriptions);
                }
                brokers.failed = 0;
                Some(LinkEvent::Connected {
                    session_present: ack.session_present,
                    broker: brokers.current().clone(),
                })
            }
            Event::Incoming(Packet::Publish(p)) => Some(LinkEvent::Message {
                topic: p.topic,
                payload: p.payload.to_vec(),
                retain: p.retain,
            }),
            Event::Incoming(Packet::PubAck(ack)) => Some(LinkEvent::Acked {
                pkid: ack.pkid,
                token: tracker.acked(ack.pkid),
            }),
            Event::Incoming(Packet::SubAck(ack)) => Some(LinkEvent::Subscribed {
                refused: refused_filters(&options.subscriptions, &ack.return_codes),
            }),
            Event::Outgoing(Outgoing::Publish(pkid)) => Some(LinkEvent::Sent {
                pkid,
                token: tracker.sent(pkid),
            }),
            Event::Outgoing(Outgoing::Disconnect) => {
                drain_after_disconnect(&mut eventloop, &mut tracker, &tx).await;
                let _ = tx.send(LinkEvent::Closed).await;
                return;
            }
            _ => None,
        };
        if let Some(report) = report {
            if tx.send(report).await.is_err() {
                return;
            }
        }
    }
}

/// How long the broker may be silent before the link is declared dead.
/// rumqttc pings every keep-alive and only notices a missing answer at the
/// next ping, up to 2× keep-alive after the link died; the broker answers
/// every ping, so on a healthy link something arrives at least every
/// keep-alive (plus a round trip), and 1.5× is safely past that.
fn silence_limit(keep_alive: Duration) -> Option<Duration> {
    (!keep_alive.is_zero()).then(|| keep_alive.mul_f64(1.5))
}

/// Reports a failure and waits before the next attempt. `None` when the
/// link gives up (or nobody listens), else the new `connected` (false).
/// `all_failed`: every broker has failed since the last connect; a link
/// that would give up tries each of several brokers once first, at once.
async fn down(
    failure: Failure,
    connected: bool,
    ever_connected: bool,
    all_failed: bool,
    options: &LinkOptions,
    backoff: &mut Backoff,
    tx: &mpsc::Sender<LinkEvent>,
) -> Option<bool> {
    let would_give_up = match options.retry {
        Retry::Never => true,
        Retry::OnceConnected => !connected && !ever_connected,
        Retry::Forever => false,
    };
    let retry_in = match (would_give_up, all_failed) {
        (true, true) => None,
        (true, false) => Some(Duration::ZERO),
        (false, _) => Some(backoff.next_delay(fastrand::f64())),
    };
    let down = LinkEvent::Down {
        failure,
        retry_in,
        was_connected: connected,
    };
    tx.send(down).await.ok()?;
    tokio::time::sleep(retry_in?).await;
    Some(false)
}

/// After DISCONNECT, reads what the broker still sends (PUBACKs) until it
/// closes the connection. Closing a socket with unread data makes the kernel
/// reset it, and the broker may then lose the DISCONNECT and publish the
/// Last Will (Mosquitto logs "disconnected due to out of memory").
async fn drain_after_disconnect(
    eventloop: &mut EventLoop,
    tracker: &mut Tracker,
    tx: &mpsc::Sender<LinkEvent>,
) {
    let drain = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    let token = tracker.acked(ack.pkid);
                    let _ = tx
                        .send(LinkEvent::Acked {
                            pkid: ack.pkid,
                            token,
                        })
                        .await;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_LIMIT, drain).await;
}

/// How long to wait for the broker to close after DISCONNECT.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Subscribes from a separate task: awaiting the request channel inside the
/// poll loop would deadlock when it is full.
fn resubscribe(client: &AsyncClient, subscriptions: &[(String, Qos)]) {
    if subscriptions.is_empty() {
        return;
    }
    let filters: Vec<SubscribeFilter> = subscriptions
        .iter()
        .map(|(f, q)| SubscribeFilter::new(f.clone(), (*q).into()))
        .collect();
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(e) = client.subscribe_many(filters).await {
            tracing::debug!(error = %e, "subscribe not queued: the link is stopping");
        }
    });
}

fn refused_filters(subscriptions: &[(String, Qos)], codes: &[SubscribeReasonCode]) -> Vec<String> {
    subscriptions
        .iter()
        .zip(codes)
        .filter(|(_, code)| matches!(code, SubscribeReasonCode::Failure))
        .map(|((filter, _), _)| filter.clone())
        .collect()
}
