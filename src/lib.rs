//! pinpost: Raspberry Pi GPIO and sensors over MQTT with mutual TLS.
pub mod cli;
pub mod cmd;
pub mod config;
pub mod link;
pub mod logging;
pub mod tls;
pub mod utc;
