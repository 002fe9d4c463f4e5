//! The topic layout and payload encoding, in one place (documented in the
//! README and docs/ARCHITECTURE.md). With prefix `pinpost` and device
//! `pi-01`:
//!
//! | topic | payload |
//! |---|---|
//! | `pinpost/pi-01/status` | `online` / `offline` (retained; `offline` is also the Last Will) |
//! | `pinpost/pi-01/input/<name>` | `{"value":true,"ts":"…","seq":N}` (retained) |
//! | `pinpost/pi-01/button/<name>` | `{"event_type":"double","ts":"…","seq":N}`: `single`, `double`, `long`, `long_release` |
//! | `pinpost/pi-01/counter/<name>` | `{"value":12.345,"unit":"kWh","count":12345,"rate":0.36,"rate_unit":"kWh/h","ts":"…","seq":N}` (retained) |
//! | `pinpost/pi-01/output/<name>` | `{"value":true,"ts":"…","seq":N}` (+ `duty`, `hz` under PWM; retained) |
//! | `pinpost/pi-01/cmd/<name>` | commands in (see `control`) |
//! | `pinpost/pi-01/cmd/<name>/result` | `{"id":"…","ok":true}` / `{"id":"…","ok":false,"error":"…"}` |
//! | `pinpost/pi-01/sensor/<name>` | `{"value":21.4,"unit":"°C","ts":"…","seq":N}`; a sensor that measures several things publishes each on `sensor/<name>/<measurement>` |
//! | `pinpost/pi-01/stats` | outbox and link counters (retained, QoS 0, see `StatsReport`) |
//! | `pinpost/pi-01/cert/request` | a renewal request, `CertRequest` (retained; empty once renewed) |
//! | `pinpost/pi-01/cert/issued` | the operator's answer, `CertIssued` (retained) |
//! | `pinpost/pi-01/check` | the probe `pinpost check` publishes to itself |
//! | `pinpost/pi-01/release` | the signed manifest of the release meant for this device (retained, by the operator) |
//! | `pinpost/pi-01/update` | where this device's update is, `UpdateReport` (retained) |
//! | `pinpost/release/<sha256>/<n>` | chunk `n` of the package with that SHA-256, `RELEASE_CHUNK` bytes but the last (retained, by the operator) |
//!
//! Everything but `stats` is QoS 1. Every topic is built here. The broker's ACL (`certs::mosquitto`) must allow what a
//! device publishes here.
//!
//! It knows names and JSON, not the transport.

use serde::{Deserialize, Serialize};

use crate::clock::dating::{self, Dated};
use crate::config::RELEASE_LEVEL;

pub(crate) const ONLINE: &str = "online";
pub(crate) const OFFLINE: &str = "offline";

#[derive(Debug, Clone)]
pub(crate) struct Topics {
    prefix: String,
    base: String,
}

impl Topics {
    pub(crate) fn new(prefix: &str, device: &str) -> Topics {
        Topics {
            prefix: prefix.to_string(),
            base: format!("{prefix}/{device}"),
        }
    }

    /// Where the operator leaves the signed manifest of the release meant
    /// for this device (retained).
    pub(crate) fn release(&self) -> String {
        format!("{}/release", self.base)
    }

    /// Where this device says how its update goes (retained).
    pub(crate) fn update(&self) -> String {
        format!("{}/update", self.base)
    }

    /// Where the operator leaves this device's signed config (retained).
    pub(crate) fn config(&self) -> String {
        format!("{}/config", self.base)
    }

    /// Where this device says which config it runs, and how a signed one
    /// went (retained).
    pub(crate) fn config_state(&self) -> String {
        format!("{}/config/state", self.base)
    }

    /// Chunk `n` of the package whose SHA-256 is `sha256` (hex).
    pub(crate) fn release_chunk(&self, sha256: &str, n: u64) -> String {
        release_chunk(&self.prefix, sha256, n)
    }

    /// Whether `topic` is a package chunk (of any release).
    pub(crate) fn is_release_chunk(&self, topic: &str) -> bool {
        topic
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|rest| rest.strip_prefix(RELEASE_LEVEL))
            .is_some_and(|rest| rest.starts_with('/'))
    }

    /// Every topic of this device, as a filter (what its ACL must let it read).
    pub(crate) fn own(&self) -> String {
        format!("{}/#", self.base)
    }

    pub(crate) fn status(&self) -> String {
        format!("{}/status", self.base)
    }

    pub(crate) fn input(&self, name: &str) -> String {
        format!("{}/input/{name}", self.base)
    }

    /// A button's presses (`button = true`).
    pub(crate) fn button(&self, name: &str) -> String {
        format!("{}/button/{name}", self.base)
    }

    /// A counting input's total (`count = true`).
    pub(crate) fn counter(&self, name: &str) -> String {
        format!("{}/counter/{name}", self.base)
    }

    pub(crate) fn output(&self, name: &str) -> String {
        format!("{}/output/{name}", self.base)
    }

    /// A sensor's topic; a sensor that measures several things publishes
    /// each `measurement` one level below it.
    pub(crate) fn sensor(&self, name: &str, measurement: Option<&str>) -> String {
        match measurement {
            Some(part) => format!("{}/sensor/{name}/{part}", self.base),
            None => format!("{}/sensor/{name}", self.base),
        }
    }

    /// Where `pinpost check` publishes its probe (and listens for it).
    pub(crate) fn check(&self) -> String {
        format!("{}/check", self.base)
    }

    pub(crate) fn stats(&self) -> String {
        format!("{}/stats", self.base)
    }

    /// The filter the agent subscribes to; `+` is one level, so results
    /// (`cmd/<name>/result`) never come back as commands.
    pub(crate) fn commands(&self) -> String {
        format!("{}/cmd/+", self.base)
    }

    /// Where the agent asks for a renewed certificate (retained).
    pub(crate) fn cert_request(&self) -> String {
        format!("{}/cert/request", self.base)
    }

    /// Where the operator answers a renewal request (retained).
    pub(crate) fn cert_issued(&self) -> String {
        format!("{}/cert/issued", self.base)
    }

    pub(crate) fn result(&self, name: &str) -> String {
        format!("{}/cmd/{name}/result", self.base)
    }

    /// The output name in a command topic, if it is one of ours.
    pub(crate) fn command_name<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let rest = topic.strip_prefix(&self.base)?.strip_prefix("/cmd/")?;
        (!rest.is_empty() && !rest.contains('/')).then_some(rest)
    }

    /// Words when `topic` is one of this device's topics with each `.` of
    /// its prefix or id turned into `/`: the broker rewrote it on the way
    /// (RabbitMQ's MQTT plugin maps `.` and `/` to each other), so what is
    /// sent to this device's topics reaches it under other names.
    pub(crate) fn rewritten_dots(&self, topic: &str) -> Option<String> {
        if !self.base.contains('.') {
            return None;
        }
        let mapped = self.base.replace('.', "/");
        let rest = topic.strip_prefix(&mapped)?;
        (rest.is_empty() || rest.starts_with('/')).then(|| {
            format!(
                "the broker delivered {topic} for {base}{rest}: it turns `.` in topics into `/` \
                 (RabbitMQ does), so commands sent to this device's topics reach it under \
                 other names and are never carried out; choose a device.id and \
                 device.topic_prefix without `.`",
                base = self.base
            )
        })
    }
}

/// A pin's state as published on `input/…` and `output/…`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PinState {
    pub(crate) value: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) duty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hz: Option<f64>,
    #[serde(flatten)]
    pub(crate) when: Dated,
    pub(crate) seq: u64,
}

impl PinState {
    pub(crate) fn level(value: bool, seq: u64) -> PinState {
        PinState {
            value,
            duty: None,
            hz: None,
            when: dating::now(),
            seq,
        }
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A counting input's total as published on `counter/<name>`: `value` is
/// the total in the meter's unit (as a sensor's), `count` the pulses it is
/// made of, `rate` the unit per hour over the counter's window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CounterTotal<'a> {
    pub(crate) value: f64,
    pub(crate) unit: &'a str,
    pub(crate) count: u64,
    pub(crate) rate: f64,
    pub(crate) rate_unit: String,
    #[serde(flatten)]
    pub(crate) when: Dated,
    pub(crate) seq: u64,
}

impl CounterTotal<'_> {
    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The words of a button's presses, in `event_type`.
pub(crate) const BUTTON_PRESSES: [&str; 4] = ["single", "double", "long", "long_release"];

/// A button's press as published on `button/<name>`: `event_type` is
/// `single`, `double`, `long` or `long_release` (the key Home Assistant's
/// event entities read).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ButtonPress {
    pub(crate) event_type: &'static str,
    #[serde(flatten)]
    pub(crate) when: Dated,
    pub(crate) seq: u64,
}

impl ButtonPress {
    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One sensor reading as published on `sensor/<name>`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Reading<'a> {
    /// A NaN or infinite value has no JSON form: it is published as null,
    /// not garbage.
    #[serde(serialize_with = "finite_or_null")]
    pub(crate) value: f64,
    pub(crate) unit: &'a str,
    #[serde(flatten)]
    pub(crate) when: Dated,
    pub(crate) seq: u64,
}

fn finite_or_null<S: serde::Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    value.is_finite().then_some(*value).serialize(s)
}

impl Reading<'_> {
    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A sensor that cannot be read, on its `sensor/<name>` topic (published
/// once per change of error, not every interval):
/// `{"value":null,"error":"…","ts":"…","seq":N}`. `value` is null so a
/// consumer plotting it sees a gap, not a number.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SensorFailure<'a> {
    /// Always null.
    pub(crate) value: (),
    pub(crate) error: &'a str,
    #[serde(flatten)]
    pub(crate) when: Dated,
    pub(crate) seq: u64,
}

impl SensorFailure<'_> {
    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What `stats` carries: how much is waiting to leave and what was lost.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StatsReport {
    /// Messages not yet acknowledged by the broker.
    pub(crate) queued: usize,
    pub(crate) queued_bytes: u64,
    pub(crate) in_flight: usize,
    /// Of `queued`, how many are only on disk.
    pub(crate) spooled: usize,
    /// Size of the spool file on disk.
    pub(crate) spool_bytes: u64,
    /// Dropped because the outbox was full (see `outbox.policy`).
    pub(crate) dropped: u64,
    /// Dropped because older than `outbox.max_age`.
    pub(crate) expired: u64,
    /// Connections made after the first.
    pub(crate) reconnects: u64,
    /// `"trusted"` once a time source has set the wall clock
    /// (`clock::trust`), `"untrusted"` before: `ts` is then the device's guess.
    pub(crate) clock: &'static str,
    /// When this device's certificate ends (RFC 3339), if it logs in with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cert_ends: Option<String>,
    pub(crate) ts: String,
}

impl StatsReport {
    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A renewal request: a new key's certificate request, and the current
/// certificate with a signature over the request by the current key, so the
/// operator signs only for whoever holds this device's key today.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CertRequest {
    /// The request (PEM), made out to the device id.
    pub(crate) csr: String,
    /// The certificate the device uses now (PEM).
    pub(crate) cert: String,
    /// How `proof` was made (`tls::Pair::prove`).
    pub(crate) scheme: String,
    /// The current key's signature over `csr`, hex.
    pub(crate) proof: String,
    pub(crate) ts: String,
}

/// The operator's answer: a certificate, or why there is none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CertIssued {
    /// The new certificate (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cert: Option<String>,
    /// Why the request was refused, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    pub(crate) ts: String,
}

/// The largest renewal request the operator reads: one with an RSA key
/// and its certificate is about 4 KiB.
pub(crate) const CERT_MESSAGE_MAX: usize = 16 * 1024;

/// The largest answer the agent reads on `cert/issued`: a certificate for
/// an RSA key is under 2 KiB as JSON. It sets the largest packet the agent
/// reads at all, so it stays small.
pub(crate) const CERT_ANSWER_MAX: usize = 4 * 1024;

/// The bytes in each package chunk but the last: well under AWS IoT Core's
/// 128 KB message limit and Mosquitto's defaults, and small enough that a
/// device that reads chunks this size bounds what a broker can make it
/// hold (the link's queues times this).
pub(crate) const RELEASE_CHUNK: usize = 32 * 1024;

/// Chunk `n` of the package whose SHA-256 is `sha256` (hex), under `prefix`.
pub(crate) fn release_chunk(prefix: &str, sha256: &str, n: u64) -> String {
    format!("{prefix}/{RELEASE_LEVEL}/{sha256}/{n}")
}

/// How a device's update goes, on `update` (retained).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct UpdateReport {
    /// `idle`, `fetching`, `verified`, `refused`, `failed`, `waiting` or
    /// `withdrawn`.
    pub(crate) state: &'static str,
    /// The version this device runs.
    pub(crate) installed: String,
    /// The release's version, when a manifest could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<String>,
    /// How much of the package is here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) percent: Option<u8>,
    /// Why it was refused or failed, or what it waits for, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    #[serde(flatten)]
    pub(crate) when: Dated,
}

impl UpdateReport {
    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What `config/state` says: the config this device runs, and how the
/// last signed one went.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConfigReport {
    /// `running` (at start), `applying`, `applied`, `refused`, `rolled
    /// back`, `failed` or `waiting`.
    pub(crate) state: &'static str,
    /// The SHA-256 of the config file this device runs.
    pub(crate) running: String,
    /// The signed config's SHA-256, when one could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) config: Option<String>,
    /// Why it was refused or rolled back, in words (`pinpost check`'s,
    /// for a config that does not pass).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    #[serde(flatten)]
    pub(crate) when: Dated,
}

impl ConfigReport {
    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[derive(Debug, Serialize)]
struct CommandResult<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// The answer to one command.
pub(crate) fn result_json(id: Option<&str>, outcome: Result<(), &str>) -> Vec<u8> {
    let r = CommandResult {
        id,
        ok: outcome.is_ok(),
        error: outcome.err(),
    };
    serde_json::to_vec(&r).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn when() -> Dated {
        Dated {
            ts: "2026-12-06T12:00:00.000Z".into(),
            guess: None,
        }
    }

    #[test]
    fn a_reading_with_no_json_number_and_a_failure_publish_a_null_value() {
        let reading = |value| Reading {
            value,
            unit: "V",
            when: when(),
            seq: 3,
        };
        assert_eq!(
            String::from_utf8(reading(1.5).to_json()).unwrap(),
            r#"{"value":1.5,"unit":"V","ts":"2026-12-06T12:00:00.000Z","seq":3}"#
        );
        for value in [f64::NAN, f64::INFINITY] {
            let json: serde_json::Value =
                serde_json::from_slice(&reading(value).to_json()).unwrap();
            assert!(json["value"].is_null() && json["seq"] == 3, "{json}");
        }
        let failure = SensorFailure {
            value: (),
            error: "no answer",
            when: when(),
            seq: 4,
        };
        let json: serde_json::Value = serde_json::from_slice(&failure.to_json()).unwrap();
        assert!(
            json["value"].is_null() && json["error"] == "no answer",
            "{json}"
        );
        assert_eq!(json["ts"], "2026-12-06T12:00:00.000Z");
    }

    #[test]
    fn a_topic_whose_dots_the_broker_turned_into_slashes_is_recognised() {
        let t = Topics::new("pinpost", "pi.01");
        let words = t
            .rewritten_dots("pinpost/pi/01/cmd/relay")
            .expect("rewritten");
        assert!(words.contains("for pinpost/pi.01/cmd/relay"), "{words}");
        assert_eq!(t.rewritten_dots("pinpost/pi.01/cmd/relay"), None);
        assert_eq!(t.rewritten_dots("pinpost/pi/012/cmd/relay"), None);
        assert_eq!(
            Topics::new("pinpost", "pi-01").rewritten_dots("pinpost/pi-01/x"),
            None
        );
    }

    #[test]
    fn the_layout_matches_the_contract() {
        let t = Topics::new("pinpost", "pi-01");
        assert_eq!(t.status(), "pinpost/pi-01/status");
        assert_eq!(t.input("door"), "pinpost/pi-01/input/door");
        assert_eq!(t.commands(), "pinpost/pi-01/cmd/+");
        assert_eq!(t.result("relay"), "pinpost/pi-01/cmd/relay/result");
        assert_eq!(t.command_name("pinpost/pi-01/cmd/relay"), Some("relay"));
        assert_eq!(t.command_name("pinpost/pi-01/cmd/relay/result"), None);
        assert_eq!(t.command_name("pinpost/pi-02/cmd/relay"), None);
    }

    #[test]
    fn results_echo_the_id_and_say_why() {
        assert_eq!(result_json(Some("a1"), Ok(())), br#"{"id":"a1","ok":true}"#);
        assert_eq!(
            result_json(None, Err("no")),
            br#"{"ok":false,"error":"no"}"#
        );
    }
}
