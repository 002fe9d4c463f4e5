//! The sending side of a link: the [`Publisher`] that queues publishes
//! towards rumqttc without waiting on the network, and what it refuses
//! before queueing ([`LinkError`], [`check_topic`]).
//!
//! It must not know connections, reconnects or what a message means.

use rumqttc::{AsyncClient, ClientError, Publish};

use super::Qos;

/// Why a publish was not queued.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Over the broker's packet limit: it would never be accepted.
    #[error(
        "message too large: {size} bytes with its topic, over the {limit}-byte packet limit \
         (broker.max_packet_size); raise the limit if the broker accepts more"
    )]
    TooLarge {
        /// The packet's size, topic included.
        size: usize,
        /// `broker.max_packet_size`.
        limit: usize,
    },
    /// MQTT does not allow publishing to this topic.
    #[error("invalid topic {topic:?}: {why}")]
    BadTopic {
        /// The topic as given.
        topic: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The link has ended (given up, disconnected or dropped).
    #[error("the link has stopped; nothing more can be sent")]
    Stopped,
    /// The queue towards rumqttc is full; try again later.
    #[error("the link's queue is full (the broker has been unreachable for a while)")]
    Busy,
}

/// Queues messages on a link; cheap to clone into producer tasks.
#[derive(Clone)]
pub struct Publisher {
    pub(super) client: AsyncClient,
    pub(super) max_packet_size: usize,
}

impl Publisher {
    /// Queues a publish without waiting: [`LinkError::Busy`] when the queue
    /// towards rumqttc is full. For a loop that must never stall on the
    /// network (the agent).
    pub(crate) fn try_publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        qos: Qos,
        retain: bool,
    ) -> Result<(), LinkError> {
        self.try_queue(None, topic, payload, qos, retain)
    }

    /// Queues a QoS 1 publish whose [`LinkEvent::Acked`](super::LinkEvent::Acked) carries `token`.
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

    /// Subscribes to one more filter, beyond the config's, for this
    /// connection (a session kept by the broker keeps it too; after a
    /// clean connect the caller subscribes again). Retained messages on it
    /// arrive as [`LinkEvent::Message`](super::LinkEvent::Message)s; its
    /// SUBACK is not reported, so the caller gives up on a filter that
    /// brings nothing after a while of its own choosing.
    pub(crate) fn try_subscribe(&self, filter: &str) -> Result<(), LinkError> {
        self.client
            .try_subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .map_err(|e| match e {
                ClientError::TryRequest(_) => LinkError::Busy,
                _ => LinkError::Stopped,
            })
    }

    /// Ends a subscription made with [`Publisher::try_subscribe`].
    pub(crate) fn try_unsubscribe(&self, filter: &str) -> Result<(), LinkError> {
        self.client.try_unsubscribe(filter).map_err(|e| match e {
            ClientError::TryRequest(_) => LinkError::Busy,
            _ => LinkError::Stopped,
        })
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
        let mut publish = Publish::new(topic, qos.into(), payload);
        publish.retain = retain;
        // The token rides inside the publish, so whatever happens to the
        // connection it comes back with the right acknowledgement.
        publish.tag = token;
        self.client
            .try_publish_tagged(publish)
            .map_err(|e| match e {
                ClientError::TryRequest(_) => LinkError::Busy,
                _ => LinkError::Stopped,
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
    /// [`LinkEvent::Acked`](super::LinkEvent::Acked) for that.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        qos: Qos,
        retain: bool,
    ) -> Result<(), LinkError> {
        self.check(topic, &payload)?;
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

#[cfg(test)]
impl Publisher {
    /// A publisher on no connection, for unit tests of code that publishes
    /// or subscribes: its requests queue in the returned event loop, which
    /// the test keeps alive and never polls.
    pub(crate) fn detached() -> (Publisher, rumqttc::EventLoop) {
        let options = rumqttc::MqttOptions::new("test", "127.0.0.1", 1883);
        let (client, eventloop) = AsyncClient::new(options, 256);
        (
            Publisher {
                client,
                max_packet_size: 256 * 1024,
            },
            eventloop,
        )
    }
}
