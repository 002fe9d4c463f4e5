//! pinpost: Raspberry Pi GPIO and sensors over MQTT with mutual TLS.
//!
//! Data flows one way: board → readings → outbox → link → broker, and
//! broker → commands → outputs. Today the crate has the edges of that flow:
//! [`config`] (the TOML file, checked once at start-up), [`tls`] (rustls
//! set-up and handshake failures in words) and [`link`] (the one supervised
//! MQTT connection, the only code that talks to rumqttc), driven by the
//! `publish` and `subscribe` commands in [`cmd`].
//!
//! Start reading at [`link`]: its [`link::LinkEvent`]s are what every
//! command consumes, and its failures are explained by `link::diagnose`
//! and `tls::explain`.

pub mod agent;
pub mod board;
pub mod cli;
pub mod cmd;
pub mod commands;
pub mod config;
pub mod link;
pub mod logging;
pub mod tls;
pub mod topics;
pub mod utc;
