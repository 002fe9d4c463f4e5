//! pinpost: Raspberry Pi GPIO and sensors over MQTT with mutual TLS.
//!
//! Data flows one way: [`board`] and [`sensors`] → [`outbox`] → [`link`] →
//! broker, and broker → [`control`] → outputs. The outbox owns every
//! message until the broker acknowledges it, spilling to disk when offline.
//! [`config`] is the TOML file, checked once at start-up; [`tls`] sets up rustls and explains handshake failures in
//! words; [`link`] is the one supervised MQTT connection (the only code that
//! talks to rumqttc); [`topics`] is the topic layout and payloads; [`agent`]
//! wires it all together for `pinpost run`; [`cli`] is the command line and its subcommands.
//! Beside the data flow, [`certs`] makes a fleet's certificates,
//! [`preflight`] reads a config's certificate files before `pinpost check`
//! connects, and [`homeassistant`] turns a config into Home Assistant's
//! discovery messages (the agent publishes them, `pinpost ha` prints them).
//!
//! Start reading at [`agent`], then [`link`]: its [`link::LinkEvent`]s are
//! what every command consumes, and its failures are explained by
//! `link::diagnose` and `tls::explain`.

pub mod agent;
pub mod board;
pub mod certs;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod homeassistant;
pub(crate) mod level;
pub mod link;
pub mod logging;
pub mod outbox;
pub mod preflight;
pub mod sensors;
pub mod tls;
pub mod topics;
pub mod utc;
