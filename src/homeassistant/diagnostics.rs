//! Home Assistant's diagnostic entities for the device itself: the
//! outbox's counters from `stats`, when its certificate ends, and the last
//! command's result.
//!
//! It knows the `stats` and `result` payloads' field names, nothing of how
//! they are produced.

use serde_json::{Map, json};

use super::{Spec, spec};
use crate::config::Component;
use crate::topics::Topics;

/// HA keeps at most 255 characters of a state.
const STATE_MAX_CHARS: usize = 250;

/// The outbox's counters from `stats`, the certificate's end (when the
/// device logs in with one), and the last command's result.
pub(super) fn diagnostics(topics: &Topics, has_cert: bool) -> Vec<Spec> {
    let stat = |key: &str, name: &str, state_class: &str, icon: &str| {
        let mut c = Map::new();
        c.insert("name".into(), json!(name));
        c.insert("state_topic".into(), json!(topics.stats()));
        c.insert(
            "value_template".into(),
            json!(format!("{{{{ value_json.{key} }}}}")),
        );
        c.insert("state_class".into(), json!(state_class));
        c.insert("entity_category".into(), json!("diagnostic"));
        c.insert("icon".into(), json!(icon));
        c.insert("qos".into(), json!(1));
        spec(Component::Sensor, "stats", key, c)
    };
    let results = topics.result("+");
    let mut last = Map::new();
    last.insert("name".into(), json!("Last command result"));
    last.insert("state_topic".into(), json!(results));
    last.insert(
        "value_template".into(),
        json!(format!(
            "{{{{ 'ok' if value_json.ok else (value_json.error | default('refused'))[:{STATE_MAX_CHARS}] }}}}"
        )),
    );
    last.insert("json_attributes_topic".into(), json!(results));
    last.insert("entity_category".into(), json!("diagnostic"));
    last.insert("icon".into(), json!("mdi:console-line"));
    last.insert("qos".into(), json!(1));
    let mut ends = Map::new();
    ends.insert("name".into(), json!("Certificate ends"));
    ends.insert("state_topic".into(), json!(topics.stats()));
    ends.insert("value_template".into(), json!("{{ value_json.cert_ends }}"));
    ends.insert("device_class".into(), json!("timestamp"));
    ends.insert("entity_category".into(), json!("diagnostic"));
    ends.insert("icon".into(), json!("mdi:certificate"));
    ends.insert("qos".into(), json!(1));
    let mut specs = vec![
        stat("queued", "Outbox queued", "measurement", "mdi:tray-full"),
        stat(
            "dropped",
            "Outbox dropped",
            "total_increasing",
            "mdi:delete-alert",
        ),
        // Dropped for age: with ages on the boot-time clock a clock jump
        // expires nothing, so a rise here is real time passing offline.
        stat(
            "expired",
            "Outbox expired",
            "total_increasing",
            "mdi:timer-sand-empty",
        ),
        stat(
            "reconnects",
            "Reconnects",
            "total_increasing",
            "mdi:lan-connect",
        ),
        spec(Component::Sensor, "last", "command_result", last),
    ];
    if has_cert {
        specs.push(spec(Component::Sensor, "stats", "cert_ends", ends));
    }
    specs
}
