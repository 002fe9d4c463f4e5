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
mod options;
mod prompt;
mod publisher;
mod supervisor;
mod tracking;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, ClientError};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::config::Endpoint;
use crate::tls::TlsSetup;

use diagnose::Target;
use options::mqtt_options;
use supervisor::{Brokers, Ends, drive};
use tracking::Tracker;

pub(crate) use client::Client;
pub use diagnose::{Failure, LostReason, Rejection};
pub use options::{LinkOptions, Qos, Retry, Will};
pub(crate) use publisher::check_topic;
pub use publisher::{LinkError, Publisher};

/// What the link reports, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// A connection is up (the broker sent its CONNACK).
    Connected {
        /// The broker kept the session (and so the subscriptions).
        session_present: bool,
        /// Which broker (of several, the one that answered).
        broker: Endpoint,
    },
    /// A message arrived on a subscribed topic.
    Message {
        /// Its topic.
        topic: String,
        /// Its body.
        payload: Vec<u8>,
        /// The broker sent it as a retained message.
        retain: bool,
    },
    /// A publish was written to the network with this packet id (0 for
    /// QoS 0), carrying the token it was sent with.
    Sent {
        /// The MQTT packet id.
        pkid: u16,
        /// The token given to [`Publisher::try_send`], if any.
        token: Option<u64>,
    },
    /// The broker acknowledged the QoS 1 publish with this packet id.
    Acked {
        /// The MQTT packet id.
        pkid: u16,
        /// The token given to [`Publisher::try_send`], if any.
        token: Option<u64>,
    },
    /// The broker answered the subscriptions made on a new session.
    Subscribed {
        /// The filters it refused.
        refused: Vec<String>,
    },
    /// The connection failed or dropped. `retry_in` is `None` when the link
    /// has given up (with [`Retry::Never`]).
    Down {
        /// What happened, ready to be put in words.
        failure: Failure,
        /// When the next attempt starts; `None` when the link gave up.
        retry_in: Option<Duration>,
        /// A working connection dropped (rather than an attempt failing).
        was_connected: bool,
    },
    /// A requested disconnect has been written; the link is finished.
    Closed,
}

/// A running link. Dropping it stops the connection task.
pub struct Link {
    publisher: Publisher,
    reconnect: Arc<Notify>,
    events: mpsc::Receiver<LinkEvent>,
    task: JoinHandle<()>,
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
        let publisher = Publisher {
            client: client.clone(),
            max_packet_size: broker.max_packet_size,
        };
        let tracker = Tracker::default();
        let reconnect = Arc::new(Notify::new());
        let brokers = Brokers {
            endpoints,
            at: 0,
            failed: 0,
            max_incoming,
        };
        let task = tokio::spawn(drive(
            eventloop,
            client,
            options,
            target,
            brokers,
            tracker,
            Ends {
                events: tx,
                reconnect: reconnect.clone(),
            },
        ));
        Link {
            publisher,
            reconnect,
            events,
            task,
        }
    }

    /// A handle that makes a connection that is up end politely and
    /// connect again (offering the TLS identity as it is then).
    pub fn reconnector(&self) -> Reconnector {
        Reconnector(self.reconnect.clone())
    }

    /// A handle to queue publishes on this link from any task.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// Sends DISCONNECT after everything queued before it; the link then
    /// reports [`LinkEvent::Closed`] and ends.
    pub(crate) async fn disconnect(&self) -> Result<(), LinkError> {
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

/// Asks a [`Link`] to reconnect (see [`Link::reconnector`]).
#[derive(Debug, Clone)]
pub struct Reconnector(Arc<Notify>);

impl Reconnector {
    /// Reconnects if a connection is up; otherwise the next connect comes
    /// anyway. The link reports the new connection (or its failure) as
    /// usual, with no `Down` for the polite end.
    pub fn reconnect(&self) {
        self.0.notify_one();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}
