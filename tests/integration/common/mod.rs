//! Test harness: certificates made for each test, a real Mosquitto on a free
//! loopback port, an independent `mosquitto_sub` as the witness of delivery,
//! and the `pinpost` binary run as a user would run it.
//!
//! Nothing here skips: a missing `mosquitto` (or RabbitMQ) is a failure
//! that says how to get it (the test script installs it).
//!
//! One module each: [`pki`] (certificates), [`broker`] (Mosquitto),
//! [`witness`] and [`subscriber`] (what the broker delivers), [`process`]
//! (running pinpost), [`config`] (config files and flags), [`gate`] and
//! [`netns`] (the network between them), [`front`] (a managed service's TLS
//! front), [`rabbitmq`] (a real 3-node RabbitMQ cluster), [`deb`] (packages
//! to release), [`root`] (a throwaway Debian root, and the packages built). This file only
//! declares and re-exports them.

pub mod broker;
pub mod config;
pub mod deb;
mod faults;
pub mod front;
pub mod gate;
pub mod netns;
pub mod pki;
pub mod process;
pub mod rabbitmq;
pub mod root;
pub mod subscriber;
pub mod witness;

pub use broker::{Broker, BrokerSetup, free_port};
pub use config::{ConfigHead, device_config, operator_flags, tls_args};
pub use deb::deb;
pub use gate::Gate;
pub use netns::Netns;
pub use pki::{Files, Leaf, Pki};
pub use process::{
    Background, PINPOST, assert_ok, pinpost, pinpost_in, pinpost_with_stdin, require_tool,
    run_limited, stderr, strings,
};
pub use root::{Root, built_package, repo, text};
pub use witness::Witness;
