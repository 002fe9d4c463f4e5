//! The demo's built-in broker: rumqttd in this process, speaking plain MQTT
//! on 127.0.0.1 only, behind the TLS front (`front`) that gives the demo its
//! mutual TLS. rumqttd is built without its own TLS (no `use-rustls`), so
//! the tree holds one TLS stack, ours. Behind the `demo` cargo feature,
//! which Pi builds leave out.
//!
//! The plain listener requires the front's login (drawn anew for every
//! demo), so a local process that dials it directly, past the front's
//! certificate check, is refused. rumqttd binds the port it is given and
//! cannot say which it got, so a free port is picked first; it has no
//! shutdown, so it ends with the process. It must not know certificates:
//! the front holds them.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use super::front::Login;

/// Starts the broker's plain listener on a free loopback port, accepting
/// only `login`, and returns the port.
pub(crate) fn start(login: &Login) -> Result<u16, String> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))?;
    let server = ServerSettings {
        name: "pinpost-demo-broker".into(),
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        // TLS is the front's job.
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 5_000,
            max_payload_size: 256 * 1024,
            max_inflight_count: 100,
            auth: Some(HashMap::from([(
                login.user.clone(),
                login.password.clone(),
            )])),
            external_auth: None,
            // Without it a publish to a topic nobody subscribed to yet
            // disconnects the publisher.
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 16,
            max_outgoing_packet_count: 200,
            max_segment_size: 1024 * 1024,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("demo-broker".into())
        .spawn(move || {
            // Returns only if the listener failed (the port was taken).
            if let Err(e) = broker.start() {
                tracing::error!("the demo broker stopped: {e}");
            } else {
                tracing::error!("the demo broker stopped (its port was taken?)");
            }
        })
        .map_err(|e| format!("cannot start the broker thread: {e}"))?;
    Ok(port)
}
