//! What a link is asked to be: the [`LinkOptions`] a caller fills in, the
//! [`Qos`] and [`Retry`] choices and the [`Will`], and how they become
//! rumqttc's `MqttOptions` for one broker.
//!
//! It must not know how a connection is driven or what happens on it.

use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

use crate::config::{Broker, Endpoint, Reconnect};
use crate::tls::TlsSetup;

/// Delivery guarantee of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// QoS 0: sent once, lost if the connection drops on the way.
    AtMostOnce,
    /// QoS 1: resent until the broker acknowledges it (so it may arrive
    /// twice).
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
    /// Where the broker publishes it.
    pub topic: String,
    /// What it publishes.
    pub payload: Vec<u8>,
    /// Published with the retain flag.
    pub retain: bool,
}

/// What a [`Link`](super::Link) connects to and how it behaves: everything
/// [`Link::start`](super::Link::start) needs besides TLS.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// The broker (or brokers) and the connection's settings.
    pub broker: Broker,
    /// The MQTT client id.
    pub client_id: String,
    /// The backoff between attempts.
    pub reconnect: Reconnect,
    /// Whether to try again after a failure.
    pub retry: Retry,
    /// The Last Will, if any.
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

/// The MQTT options for one broker of the config's.
pub(super) fn mqtt_options(
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
