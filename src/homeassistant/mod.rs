//! Home Assistant MQTT discovery: a checked [`Config`] in, the retained
//! messages that make every pin and sensor appear in Home Assistant out.
//!
//! Pure: no MQTT, no files, no clock. The agent publishes the [`Plan`] and
//! keeps its [`Announced`] in the state directory; `pinpost ha` prints it.
//!
//! What HA is told follows pinpost's own topic contract (`topics`): states
//! are read from the JSON pinpost already publishes (`value_template`),
//! commands are payloads the command parser already accepts (`on`, `off`,
//! `{"action":"pulse","ms":N}`, `{"action":"pwm","duty":x}`), and the
//! device's availability is its `status` topic with its Last Will. Each
//! entity's `unique_id` comes from the device id and the pin's or sensor's
//! name only, so it is stable across restarts and reorderings; a rename is
//! a new entity, and the old one is removed through [`Announced`].
//! `object_id` is never sent (HA stops accepting it in 2026.4).
//!
//! This module places entities in messages (topics, device, availability,
//! unique ids, removals); each kind of entity is built in its own module:
//! [`pins`], [`sensors`], [`diagnostics`].

mod diagnostics;
mod pins;
mod sensors;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::{Component, Config, DiscoveryForm, Entity};
use crate::topics::{self, Topics};

/// One retained discovery message; an empty payload removes what was there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
}

/// What has been announced: each discovery topic and the components it
/// carries (object id → HA component), as the agent remembers it between
/// runs to remove what is no longer configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Announced {
    pub(crate) topics: BTreeMap<String, BTreeMap<String, String>>,
}

impl Announced {
    pub(crate) fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

/// The messages to publish, in order (removals first, so a component that
/// moved between topics is never briefly claimed twice), and what they
/// announce.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub(crate) messages: Vec<Message>,
    pub(crate) announced: Announced,
    /// Things a person should know: sensors left out, messages too large.
    pub(crate) notes: Vec<String>,
}

/// One entity's config, before it is placed in a message.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    component: Component,
    object_id: String,
    /// Where it came from (`output relay`), to tell collisions apart.
    origin: String,
    config: Map<String, Value>,
}

/// The discovery messages `config` produces, given what was announced
/// before (`Announced::default()` for none). With `[homeassistant]`
/// disabled, only removals of what was announced.
pub(crate) fn plan(config: &Config, previous: &Announced) -> Plan {
    let ha = &config.homeassistant;
    let mut notes = Vec::new();
    let mut current = Announced::default();
    let mut configs = Vec::new();
    if ha.enabled {
        let specs = entities(config, &mut notes);
        let node = node_id(&config.device.id);
        let device = device(config, &node);
        let origin = json!({ "name": "pinpost", "sw_version": env!("CARGO_PKG_VERSION") });
        let status = Topics::new(&config.device.topic_prefix, &config.device.id).status();
        match ha.form {
            DiscoveryForm::Entities => {
                for spec in specs {
                    let topic = format!(
                        "{}/{}/{node}/{}/config",
                        ha.discovery_prefix,
                        spec.component.as_str(),
                        spec.object_id
                    );
                    let mut body = spec.config;
                    availability(&mut body, &status);
                    body.insert("device".into(), device.clone());
                    body.insert("origin".into(), origin.clone());
                    current.topics.insert(
                        topic.clone(),
                        BTreeMap::from([(spec.object_id, spec.component.as_str().to_string())]),
                    );
                    configs.push((topic, Value::Object(body)));
                }
            }
            DiscoveryForm::Device => {
                let topic = format!("{}/device/{node}/config", ha.discovery_prefix);
                let mut components = Map::new();
                let mut announced = BTreeMap::new();
                for spec in specs {
                    let mut body = spec.config;
                    body.insert("p".into(), json!(spec.component.as_str()));
                    announced.insert(spec.object_id.clone(), spec.component.as_str().to_string());
                    components.insert(spec.object_id, Value::Object(body));
                }
                // A component announced before and gone now is removed by
                // naming only its platform (HA 2024.12's device discovery).
                if let Some(before) = previous.topics.get(&topic) {
                    for (object_id, component) in before {
                        if !announced.contains_key(object_id) {
                            components.insert(object_id.clone(), json!({ "p": component }));
                        }
                    }
                }
                let mut body = Map::new();
                body.insert("dev".into(), device);
                body.insert("o".into(), origin);
                availability(&mut body, &status);
                body.insert("qos".into(), json!(1));
                body.insert("cmps".into(), Value::Object(components));
                current.topics.insert(topic.clone(), announced);
                configs.push((topic, Value::Object(body)));
            }
        }
    }
    let mut messages: Vec<Message> = previous
        .topics
        .keys()
        .filter(|topic| !current.topics.contains_key(*topic))
        .map(|topic| Message {
            topic: topic.clone(),
            payload: Vec::new(),
        })
        .collect();
    for (topic, body) in configs {
        let payload = serde_json::to_vec(&body).unwrap_or_default();
        // Fixed header, topic length and packet id, as the link counts.
        let size = topic.len() + payload.len() + 9;
        if size > config.broker.max_packet_size {
            notes.push(format!(
                "{topic} is {size} bytes, over broker.max_packet_size ({}): raise it (Mosquitto \
                 accepts up to 256 MiB by default), or use form = \"entities\" (one small \
                 message per entity)",
                config.broker.max_packet_size
            ));
        }
        messages.push(Message { topic, payload });
    }
    Plan {
        messages,
        announced: current,
        notes,
    }
}

/// Every entity the config describes, with unique object ids.
fn entities(config: &Config, notes: &mut Vec<String>) -> Vec<Spec> {
    let ha = &config.homeassistant;
    let topics = Topics::new(&config.device.topic_prefix, &config.device.id);
    let node = node_id(&config.device.id);
    let mut specs = Vec::new();
    pins::outputs(config, &topics, &mut specs);
    pins::inputs(config, &topics, &mut specs);
    sensors::sensors(config, &topics, &mut specs, notes);
    if ha.diagnostics {
        let has_cert = config
            .broker
            .tls
            .as_ref()
            .is_some_and(|t| t.cert_file.is_some());
        specs.extend(diagnostics::diagnostics(&topics, has_cert));
    }
    if config.update.release_key.is_some() {
        specs.push(diagnostics::firmware(&topics, config.update.install));
    }
    unique(&node, specs)
}

/// `name`, `icon`, `device_class`, `entity_category` and QoS 1 both ways.
fn common(e: &Entity, default_name: &str) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert(
        "name".into(),
        json!(e.name.as_deref().unwrap_or(default_name)),
    );
    c.insert("qos".into(), json!(1));
    if let Some(class) = &e.device_class {
        c.insert("device_class".into(), json!(class));
    }
    if let Some(icon) = &e.icon {
        c.insert("icon".into(), json!(icon));
    }
    if let Some(category) = e.entity_category {
        c.insert("entity_category".into(), json!(category.as_str()));
    }
    c
}

fn spec(component: Component, kind: &str, name: &str, config: Map<String, Value>) -> Spec {
    Spec {
        component,
        object_id: format!("{kind}_{}", sanitize(name)),
        origin: format!("{kind} {name}"),
        config,
    }
}

/// Object ids (and so `unique_id`s) must differ; two names that sanitize
/// alike (`a.b` and `a_b`) get a checksum of their real name appended.
fn unique(node: &str, specs: Vec<Spec>) -> Vec<Spec> {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for s in &specs {
        *count.entry(s.object_id.clone()).or_default() += 1;
    }
    specs
        .into_iter()
        .map(|mut s| {
            if count.get(&s.object_id).copied().unwrap_or(0) > 1 {
                s.object_id = format!(
                    "{}_{:08x}",
                    s.object_id,
                    crc32fast::hash(s.origin.as_bytes())
                );
            }
            s.config.insert(
                "unique_id".into(),
                json!(format!("pinpost_{node}_{}", s.object_id)),
            );
            s
        })
        .collect()
}

/// HA's discovery topics allow only `[a-zA-Z0-9_-]` in the node and object
/// ids; anything else becomes `_`, with a checksum of the original so two
/// names that differ only there stay apart.
fn sanitize(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == name {
        clean
    } else {
        format!("{clean}_{:08x}", crc32fast::hash(name.as_bytes()))
    }
}

fn node_id(device_id: &str) -> String {
    sanitize(device_id)
}

fn device(config: &Config, node: &str) -> Value {
    let ha = &config.homeassistant;
    let mut d = Map::new();
    d.insert("identifiers".into(), json!([format!("pinpost_{node}")]));
    d.insert(
        "name".into(),
        json!(ha.name.as_deref().unwrap_or(&config.device.id)),
    );
    d.insert(
        "sw_version".into(),
        json!(format!("pinpost {}", env!("CARGO_PKG_VERSION"))),
    );
    for (key, value) in [
        ("model", &ha.model),
        ("manufacturer", &ha.manufacturer),
        ("suggested_area", &ha.area),
        ("configuration_url", &ha.configuration_url),
    ] {
        if let Some(v) = value {
            d.insert(key.into(), json!(v));
        }
    }
    Value::Object(d)
}

/// Unavailable when the device's `status` says `offline` (a clean stop,
/// or the broker's Last Will when the Pi or its link is gone).
fn availability(body: &mut Map<String, Value>, status: &str) {
    body.insert("availability_topic".into(), json!(status));
    body.insert("payload_available".into(), json!(topics::ONLINE));
    body.insert("payload_not_available".into(), json!(topics::OFFLINE));
}

#[cfg(test)]
mod tests;
