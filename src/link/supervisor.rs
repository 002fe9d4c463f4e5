//! The supervisor: the task that owns rumqttc's event loop, polls it,
//! turns what happens into [`LinkEvent`]s, declares a silent broker dead,
//! waits with backoff between attempts and moves round the brokers.
//!
//! It must not know pins, sensors or what messages mean, nor word failures
//! itself (`diagnose` does).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, Outgoing, Packet, SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::config::Endpoint;

use super::backoff::Backoff;
use super::diagnose::{self, Failure, Target};
use super::options::mqtt_options;
use super::tracking::{Ack, Tracker};
use super::{LinkEvent, LinkOptions, Qos, Retry};

/// The brokers a link may use, and which one it is on. It stays on a
/// broker while it works and moves to the next only when a connection to
/// it fails or dies, so it goes back to an earlier one only by going round:
/// no flapping between nodes.
pub(super) struct Brokers {
    pub(super) endpoints: Vec<Endpoint>,
    pub(super) at: usize,
    /// Attempts that failed since the last connect.
    pub(super) failed: usize,
    pub(super) max_incoming: usize,
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

/// Ends the current connection politely (DISCONNECT, so the broker does
/// not publish the will), reads the PUBACKs the broker still sends until it
/// closes (each reported acknowledged, so it is not sent again: QoS 1
/// allows the duplicate, a subscriber counting readings does not need it),
/// and drops it; the next poll connects again with the options as they are
/// now. Whatever rumqttc held unacknowledged is kept in `pending`, for the
/// tracker to take.
async fn renew_session(
    eventloop: &mut EventLoop,
    tracker: &mut Tracker,
    tx: &mpsc::Sender<LinkEvent>,
) {
    if let Some(network) = eventloop.network.as_mut() {
        // A DISCONNECT is two bytes: if they do not leave in this long, the
        // connection is as good as dead anyway.
        let sent = tokio::time::timeout(Duration::from_secs(5), async {
            network.write(Packet::Disconnect).await?;
            network.flush().await
        })
        .await;
        if matches!(sent, Ok(Ok(()))) {
            let state = &mut eventloop.state;
            let _ = tokio::time::timeout(DRAIN_LIMIT, async {
                while network.readb(state).await.is_ok() {}
            })
            .await;
        }
    }
    // The PUBACKs read now; anything else (a command that came meanwhile)
    // stays queued for the polls after the reconnect.
    let events = std::mem::take(&mut eventloop.state.events);
    for event in events {
        if let Event::Incoming(Packet::PubAck(ack)) = &event {
            report_ack(ack.pkid, tracker, tx).await;
        } else {
            eventloop.state.events.push_back(event);
        }
    }
    eventloop.clean();
}

/// What is known of the current connection, for the backoff and the words.
#[derive(Default)]
struct Connection {
    /// When its CONNACK came.
    since: Option<Instant>,
    /// Its subscriptions are in place (acknowledged, or kept by the session).
    subscribed: bool,
    /// A SUBSCRIBE went out and its SUBACK has not come.
    awaiting_suback: bool,
    /// A PUBACK for nothing in flight was already reported.
    unknown_ack_said: bool,
}

impl Connection {
    /// It held: subscribed and up for [`HELD_AFTER`]. Only then does the
    /// backoff start again from `reconnect.initial`: a broker that accepts
    /// and closes at once (refusing a subscription, or flapping) is retried
    /// ever more slowly, not every second forever.
    fn held(&self) -> bool {
        self.subscribed && self.since.is_some_and(|at| at.elapsed() >= HELD_AFTER)
    }
}

/// The supervisor's two ends towards its owner: the events it reports, and
/// the requests to reconnect ([`super::Reconnector`]).
pub(super) struct Ends {
    pub(super) events: mpsc::Sender<LinkEvent>,
    pub(super) reconnect: Arc<Notify>,
}

/// How long a subscribed connection must last to count as healthy.
const HELD_AFTER: Duration = Duration::from_secs(10);

/// The poll loop: owns the event loop, reports events, sleeps between
/// attempts. Ends on a requested disconnect, on giving up, or when nobody
/// listens any more.
pub(super) async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    options: LinkOptions,
    mut target: Target,
    mut brokers: Brokers,
    mut tracker: Tracker,
    ends: Ends,
) {
    let Ends {
        events: tx,
        reconnect,
    } = ends;
    let mut backoff = Backoff::new(options.reconnect.clone());
    let mut connected = false;
    let mut ever_connected = false;
    let mut connection = Connection::default();
    let silence_limit = silence_limit(target.keep_alive);
    let mut last_heard = Instant::now();
    // Set when the silence limit passed: one more look at the socket is
    // allowed until then (see SILENCE_GRACE).
    let mut grace_until: Option<Instant> = None;
    // Set when the link gave up on a silent broker: the error rumqttc then
    // returns (after what the connection still owed) is worded as silence.
    let mut silent_for: Option<Duration> = None;
    // A persistent session is set aside for one connect after a packet too
    // large to read: the broker would send it again, forever.
    let mut clean_once = false;
    loop {
        if !connected {
            if let Some(tls) = &target.tls {
                tls.observer.reset();
            }
        }
        let watch = silence_limit.filter(|_| connected && silent_for.is_none());
        let deadline = watch.map(|limit| grace_until.unwrap_or(last_heard + limit));
        let polled = tokio::select! {
            // The socket first: after the process was stopped (SIGSTOP,
            // a stalled disk) the deadline and the data that arrived
            // meanwhile are ready together, and a broker whose answer
            // waits unread is not silent.
            biased;
            polled = eventloop.poll() => Some(polled),
            () = sleep_until(deadline), if deadline.is_some() => None,
            () = reconnect.notified(), if connected => {
                // Asked for (a renewed certificate is offered from the next
                // handshake): a DISCONNECT, so no Last Will, and what was in
                // flight goes again on the new connection.
                tracing::debug!("reconnecting as asked");
                renew_session(&mut eventloop, &mut tracker, &tx).await;
                tracker.lost(&mut eventloop.pending);
                connected = false;
                connection = Connection::default();
                grace_until = None;
                continue;
            }
        };
        let event = match polled {
            Some(Ok(event)) => event,
            Some(Err(rumqttc::ConnectionError::RequestsDone)) => return,
            Some(Err(error)) => {
                let mut failure = match silent_for.take() {
                    Some(silence) => diagnose::silent(&target, silence),
                    None => diagnose::diagnose(&error, connected, &target).await,
                };
                if connected && connection.awaiting_suback {
                    failure = failure.after_subscribe();
                }
                tracing::debug!(error = %error, kind = failure.kind(), "connection failed");
                let too_large = failure.too_large();
                if too_large && !options.broker.clean_session {
                    eventloop.mqtt_options.set_clean_session(true);
                    clean_once = true;
                }
                // A retained packet too large to read comes back at every
                // subscribe, whatever the session: while drops keep being
                // for that, reconnects slow down to reconnect.max.
                if connected && connection.held() && !too_large {
                    backoff.reset();
                }
                connection = Connection::default();
                grace_until = None;
                let vanished = tracker.lost(&mut eventloop.pending);
                if !vanished.is_empty() {
                    tracing::error!(
                        "{} messages in flight were neither acknowledged nor kept by rumqttc; \
                         they stay counted as in flight until pinpost restarts, which sends them \
                         from the outbox (please report this)",
                        vanished.len()
                    );
                }
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
            None if grace_until.is_none() => {
                // A process resumed from SIGSTOP finds its deadline passed
                // and learns what its socket holds only on the runtime's
                // next turn: look once more before calling the broker
                // silent.
                grace_until = Some(Instant::now() + SILENCE_GRACE);
                continue;
            }
            None => {
                grace_until = None;
                // Given up on: rumqttc keeps every unacknowledged publish
                // and queued request, and hands over what the connection
                // had already read before its error.
                silent_for = Some(last_heard.elapsed());
                eventloop.abandon(rumqttc::ConnectionError::NetworkTimeout);
                continue;
            }
        };
        if matches!(event, Event::Incoming(_)) {
            last_heard = Instant::now();
            grace_until = None;
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
                renew_session(&mut eventloop, &mut tracker, &tx).await;
                tracker.lost(&mut eventloop.pending);
                continue;
            }
            Event::Incoming(Packet::ConnAck(ack)) => {
                connected = true;
                ever_connected = true;
                connection = Connection {
                    since: Some(Instant::now()),
                    subscribed: ack.session_present || options.subscriptions.is_empty(),
                    ..Connection::default()
                };
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
            Event::Incoming(Packet::PubAck(ack)) => match tracker.acked(ack.pkid) {
                Ack::Publish(token) => Some(LinkEvent::Acked {
                    pkid: ack.pkid,
                    token,
                }),
                Ack::Unknown => {
                    if !std::mem::replace(&mut connection.unknown_ack_said, true) {
                        tracing::warn!(
                            "the broker acknowledged packet id {}, which pinpost has not sent \
                             on this connection or was already acknowledged: ignored (a broker \
                             fault; nothing is lost, but tell its operator)",
                            ack.pkid
                        );
                    }
                    None
                }
            },
            // A SUBACK for one filter the owner subscribed on its own
            // (`Publisher::try_subscribe`, always one filter) is not the
            // answer to the config's subscriptions: only a SUBACK with as
            // many codes as those is.
            Event::Incoming(Packet::SubAck(ack))
                if ack.return_codes.len() != options.subscriptions.len() =>
            {
                connection.awaiting_suback = false;
                None
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                connection.awaiting_suback = false;
                connection.subscribed = true;
                Some(LinkEvent::Subscribed {
                    refused: refused_filters(&options.subscriptions, &ack.return_codes),
                })
            }
            Event::Outgoing(Outgoing::Subscribe(_)) => {
                connection.awaiting_suback = true;
                None
            }
            Event::Outgoing(Outgoing::Tagged { pkid, tag }) => Some(LinkEvent::Sent {
                pkid,
                token: tracker.sent(pkid, Some(tag)),
            }),
            Event::Outgoing(Outgoing::Publish(pkid)) => Some(LinkEvent::Sent {
                pkid,
                token: tracker.sent(pkid, None),
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

/// Sleeps until `deadline`; never wakes without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long the socket gets, once the silence limit has passed, to show
/// what it holds: a stopped process is woken with EINTR, and the runtime
/// sees the socket readable only on its next turn.
const SILENCE_GRACE: Duration = Duration::from_secs(1);

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
                Ok(Event::Incoming(Packet::PubAck(ack))) => report_ack(ack.pkid, tracker, tx).await,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_LIMIT, drain).await;
}

/// A PUBACK read while leaving a connection: its message is delivered.
async fn report_ack(pkid: u16, tracker: &mut Tracker, tx: &mpsc::Sender<LinkEvent>) {
    if let Ack::Publish(token) = tracker.acked(pkid) {
        let _ = tx.send(LinkEvent::Acked { pkid, token }).await;
    }
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
