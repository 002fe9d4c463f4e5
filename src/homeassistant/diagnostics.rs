//! Home Assistant's entities for the device itself: the outbox's counters
//! from `stats`, when its certificate ends, the last command's result, and
//! its software as an update entity (from `update`).
//!
//! It knows the `stats`, `result` and `update` payloads' field names,
//! nothing of how they are produced.

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

/// The device's software as HA's update entity, read from `update`: the
/// installed version, the release being fetched or checked as the latest,
/// its progress, and what happened in words. No install command yet: a
/// checked release waits on the device for the installing helper.
pub(super) fn firmware(topics: &Topics, install: crate::config::Install) -> Spec {
    // HA reads a JSON object of these keys; 2025's checks them, so the
    // template makes exactly those from pinpost's report.
    let template = format!(
        "{{% set s = value_json.state %}}\
         {{% set busy = s in ['fetching', 'verified', 'waiting', 'installing'] and value_json.version %}}\
         {{{{ {{'installed_version': value_json.installed, \
         'latest_version': (value_json.version if busy else value_json.installed), \
         'in_progress': s in ['fetching', 'installing'], \
         'update_percentage': (value_json.percent if s == 'fetching' else none), \
         'release_summary': (s ~ (': ' ~ value_json.reason if value_json.reason else ''))[:{STATE_MAX_CHARS}]}} \
         | tojson }}}}"
    );
    let mut c = Map::new();
    c.insert("name".into(), json!("Firmware"));
    c.insert("state_topic".into(), json!(topics.update()));
    c.insert("value_template".into(), json!(template));
    c.insert("device_class".into(), json!("firmware"));
    c.insert("title".into(), json!("pinpost"));
    c.insert("qos".into(), json!(1));
    // Install works only on a release the device has fetched and checked
    // (it is the `cmd/update` command); with installs automatic there is
    // nothing for it to do, and HA shows no button.
    if install == crate::config::Install::WhenAsked {
        let command = topics
            .commands()
            .replace('+', crate::config::UPDATE_COMMAND);
        c.insert("command_topic".into(), json!(command));
        c.insert("payload_install".into(), json!("{\"action\":\"install\"}"));
    }
    spec(Component::Update, "update", "firmware", c)
}
