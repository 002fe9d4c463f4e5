//! pinpost: Raspberry Pi GPIO and sensors over MQTT with mutual TLS.
//!
//! Data flows one way: [`board`] and `sensors` → [`outbox`] → [`link`] →
//! broker, and broker → [`link`] → [`control`] → outputs on the [`board`].
//! The outbox owns every message until the broker acknowledges it, spilling
//! to disk when offline; the link is the only code that talks to rumqttc;
//! `control` is the only code that decides what the network may do to a
//! pin. [`agent`] wires it together for `pinpost run`, in one loop.
//!
//! Around the flow: [`config`] is the TOML file, checked once at start-up;
//! [`tls`] builds the rustls config and explains handshake failures in
//! words; `topics` is the topic layout and every payload; [`cli`] is the
//! command line and its subcommands. Beside it, `certs` makes a fleet's
//! certificates, `preflight` reads a config's certificate files before
//! `pinpost check` connects, `homeassistant` turns a config into Home
//! Assistant's discovery messages, `updater` is the root helper that
//! installs a release the agent fetched (and rolls it back), and `demo`
//! runs it all on one machine.
//!
//! Start reading at `docs/ARCHITECTURE.md` (module boundaries, the topic
//! contract, a reading's and a command's path through the code, and the
//! facts about rumqttc, rustls, rppal and Mosquitto that cost us time),
//! then [`agent`], then [`link`]: its [`link::LinkEvent`]s are what every
//! network-facing command consumes.

#![warn(missing_docs)]

pub mod agent;
pub mod board;
pub(crate) mod boot;
pub(crate) mod certs;
pub mod cli;
pub(crate) mod clock;
pub mod config;
pub mod control;
pub(crate) mod counter;
pub(crate) mod demo;
pub(crate) mod digest;
pub(crate) mod header;
pub(crate) mod health;
pub(crate) mod hex;
pub(crate) mod homeassistant;
pub(crate) mod i2c_bus;
pub(crate) mod level;
pub mod link;
pub mod logging;
pub mod outbox;
pub(crate) mod preflight;
pub(crate) mod release;
pub(crate) mod sensors;
pub mod tls;
pub(crate) mod topics;
pub(crate) mod updater;
pub mod utc;
pub(crate) mod whole_file;
pub(crate) mod words;
