//! pinpost: Raspberry Pi GPIO and sensors over MQTT with mutual TLS.
pub mod config;
