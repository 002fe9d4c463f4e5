//! pinpost's integration tests, in one binary (as ripgrep does): each
//! module is one subject, run against the real `pinpost` binary, real
//! Mosquitto brokers and real files; `common` is the harness they share.
//! One binary builds and links once instead of once per file, and keeps
//! both test threads busy across subjects.
//!
//! `cargo test --test integration -- failover::` runs one subject;
//! `cargo test --test integration -- --list` names them all. Tests run side
//! by side with other subjects' tests in this one process: nothing here may
//! change process-wide state (the umask, the environment, the current
//! directory) or take a fixed name or port (file_modes shows how a test
//! that must change the umask does it in a child of its own).

mod common;

mod agent;
mod arm;
mod audit;
mod buttons;
mod certs;
mod check;
mod clean_stop;
mod clock;
mod commands;
mod counters;
#[cfg(feature = "demo")]
mod demo;
mod deploy;
mod durability;
mod enroll;
mod expanders;
mod failover;
mod failures;
mod file_modes;
mod flood;
mod full_disk;
mod homeassistant;
mod hostile_spool;
mod in_flight;
mod package;
mod properties;
mod rabbitmq;
mod reconfig;
mod release;
mod renewal;
mod revocation;
mod rollout;
mod scripts;
mod security_policy;
mod seeds;
mod sensors;
mod services;
mod setups;
mod shape;
mod tls_strict;
mod update_helper;
