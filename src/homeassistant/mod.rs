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

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::{
    Component, Config, DiscoveryForm, Entity, EntityCategory, Published, Sensor, SensorKind,
};
use crate::topics::{self, Topics};

/// At least this long before a sensor that stopped reporting is shown
/// unavailable, whatever its interval.
const EXPIRE_AFTER_MIN: Duration = Duration::from_secs(10);
/// HA keeps at most 255 characters of a state.
const STATE_MAX_CHARS: usize = 250;

/// One retained discovery message; an empty payload removes what was there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What has been announced: each discovery topic and the components it
/// carries (object id → HA component), as the agent remembers it between
/// runs to remove what is no longer configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announced {
    pub topics: BTreeMap<String, BTreeMap<String, String>>,
}

impl Announced {
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

/// The messages to publish, in order (removals first, so a component that
/// moved between topics is never briefly claimed twice), and what they
/// announce.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub messages: Vec<Message>,
    pub announced: Announced,
    /// Things a person should know: sensors left out, messages too large.
    pub notes: Vec<String>,
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
pub fn plan(config: &Config, previous: &Announced) -> Plan {
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
    let default = Entity::default();
    for output in &config.outputs {
        let e = ha.outputs.get(&output.name).unwrap_or(&default);
        if !e.enabled {
            continue;
        }
        let state = topics.output(&output.name);
        let command = topics.commands().replace('+', &output.name);
        let component = e.component.unwrap_or(if output.pwm {
            Component::Light
        } else {
            Component::Switch
        });
        let mut c = common(e, &output.name);
        c.insert("state_topic".into(), json!(state));
        c.insert("command_topic".into(), json!(command));
        match component {
            Component::Light => {
                c.insert("payload_on".into(), json!("on"));
                c.insert("payload_off".into(), json!("off"));
                c.insert(
                    "state_value_template".into(),
                    json!("{{ 'on' if value_json.value else 'off' }}"),
                );
                c.insert("brightness_state_topic".into(), json!(state));
                c.insert("brightness_command_topic".into(), json!(command));
                c.insert("brightness_scale".into(), json!(100));
                c.insert("brightness_value_template".into(), json!(DUTY_PERCENT));
                c.insert(
                    "brightness_command_template".into(),
                    json!(PWM_FROM_PERCENT),
                );
                // Turning on sends only the brightness: a plain `on` after it
                // would end the PWM at full power.
                c.insert("on_command_type".into(), json!("brightness"));
            }
            Component::Fan => {
                c.insert("payload_on".into(), json!("on"));
                c.insert("payload_off".into(), json!("off"));
                c.insert(
                    "state_value_template".into(),
                    json!("{{ 'on' if value_json.value else 'off' }}"),
                );
                c.insert("percentage_state_topic".into(), json!(state));
                c.insert("percentage_command_topic".into(), json!(command));
                c.insert("percentage_value_template".into(), json!(DUTY_PERCENT));
                c.insert(
                    "percentage_command_template".into(),
                    json!(PWM_FROM_PERCENT),
                );
            }
            Component::Number => {
                c.insert("value_template".into(), json!(DUTY_PERCENT));
                c.insert("command_template".into(), json!(PWM_FROM_PERCENT));
                c.insert("min".into(), json!(0));
                c.insert("max".into(), json!(100));
                c.insert("step".into(), json!(1));
                c.insert("unit_of_measurement".into(), json!("%"));
                c.insert("mode".into(), json!("slider"));
            }
            _ => {
                c.insert("payload_on".into(), json!("on"));
                c.insert("payload_off".into(), json!("off"));
                c.insert(
                    "value_template".into(),
                    json!("{{ 'on' if value_json.value else 'off' }}"),
                );
            }
        }
        specs.push(spec(component, "output", &output.name, c));
        if let Some(pulse) = e.pulse {
            let mut b = Map::new();
            b.insert(
                "name".into(),
                json!(format!(
                    "Pulse {}",
                    e.name.as_deref().unwrap_or(&output.name)
                )),
            );
            b.insert("command_topic".into(), json!(command));
            b.insert(
                "payload_press".into(),
                json!(format!(
                    "{{\"action\":\"pulse\",\"ms\":{}}}",
                    pulse.as_millis()
                )),
            );
            b.insert("icon".into(), json!("mdi:gesture-tap-button"));
            if let Some(category) = e.entity_category {
                b.insert("entity_category".into(), json!(category.as_str()));
            }
            specs.push(spec(Component::Button, "pulse", &output.name, b));
        }
    }
    for input in &config.inputs {
        let e = ha.inputs.get(&input.name).unwrap_or(&default);
        if !e.enabled {
            continue;
        }
        let mut c = common(e, &input.name);
        c.insert("state_topic".into(), json!(topics.input(&input.name)));
        // `value` is already inverted when `invert = true`: true is
        // "on" (a door open, motion seen) as the config means it.
        c.insert(
            "value_template".into(),
            json!("{{ 'ON' if value_json.value else 'OFF' }}"),
        );
        specs.push(spec(Component::BinarySensor, "input", &input.name, c));
    }
    for sensor in &config.sensors {
        let overrides = ha.sensors.get(&sensor.name);
        let whole = overrides.map_or(&default, |s| &s.entity);
        if !whole.enabled {
            continue;
        }
        let Some(published) = sensor.kind.published() else {
            notes.push(format!(
                "sensor {:?} is not announced: a ds18b20 without `id` names its chips only when \
                 it finds them; set id = \"28-…\" (one [[sensor]] per chip) to have it in Home \
                 Assistant",
                sensor.name
            ));
            continue;
        };
        for p in published {
            let (e, key, name, topic) = match &p.name {
                None => (
                    whole,
                    sensor.name.clone(),
                    whole.name.clone().unwrap_or_else(|| sensor.name.clone()),
                    topics.sensor(&sensor.name),
                ),
                Some(m) => {
                    let e = overrides
                        .and_then(|s| s.measurements.get(m))
                        .unwrap_or(&default);
                    let base = whole.name.clone().unwrap_or_else(|| sensor.name.clone());
                    (
                        e,
                        format!("{}_{m}", sensor.name),
                        e.name.clone().unwrap_or_else(|| format!("{base} {m}")),
                        format!("{}/{m}", topics.sensor(&sensor.name)),
                    )
                }
            };
            if !e.enabled {
                continue;
            }
            specs.push(spec(
                Component::Sensor,
                "sensor",
                &key,
                measurement(sensor, &p, e, whole, &name, &topic),
            ));
        }
    }
    if ha.diagnostics {
        specs.extend(diagnostics(&topics));
    }
    unique(&node, specs)
}

/// The duty as a percentage, from an output's state: its `duty` under PWM,
/// else 100 or 0 for a plain on or off.
const DUTY_PERCENT: &str = "{{ ((value_json.duty * 100) | round(0) | int) if value_json.duty \
     is defined else (100 if value_json.value else 0) }}";
/// A PWM command from a percentage (HA's brightness or speed, 0 to 100).
const PWM_FROM_PERCENT: &str =
    "{\"action\":\"pwm\",\"duty\":{{ (value | float(0) / 100) | round(4) }}}";

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

/// One sensor measurement: its unit and class from what pinpost knows,
/// overridable; `expire_after` from how often it reports.
fn measurement(
    sensor: &Sensor,
    p: &Published,
    e: &Entity,
    whole: &Entity,
    name: &str,
    topic: &str,
) -> Map<String, Value> {
    let mut c = common(e, name);
    c.insert("name".into(), json!(name));
    c.insert("state_topic".into(), json!(topic));
    // A failed read publishes `"value":null`, which renders as "None":
    // HA's sensor takes that as unknown, not as a number.
    c.insert("value_template".into(), json!("{{ value_json.value }}"));
    c.insert("state_class".into(), json!("measurement"));
    let unit = e
        .unit
        .as_deref()
        .or(whole.unit.as_deref())
        .unwrap_or(&p.unit);
    if !unit.is_empty() {
        c.insert("unit_of_measurement".into(), json!(unit));
    }
    let class = e
        .device_class
        .as_deref()
        .or(whole.device_class.as_deref())
        .or_else(|| device_class(&sensor.kind, unit));
    if let Some(class) = class {
        c.insert("device_class".into(), json!(class));
    }
    if let Some(icon) = e.icon.as_deref().or(whole.icon.as_deref()) {
        c.insert("icon".into(), json!(icon));
    }
    let category = e
        .entity_category
        .or(whole.entity_category)
        .or(match sensor.kind {
            // The Pi's own health is diagnostics, not the things it measures.
            SensorKind::CpuTemperature { .. } | SensorKind::System { .. } => {
                Some(EntityCategory::Diagnostic)
            }
            _ => None,
        });
    if let Some(category) = category {
        c.insert("entity_category".into(), json!(category.as_str()));
    }
    if let Some(expire) = expire_after(sensor) {
        c.insert("expire_after".into(), json!(expire.as_secs()));
    }
    c
}

/// HA's device class for a unit pinpost publishes (and whose unit HA
/// accepts for that class); `None` where a unit alone does not say.
pub fn device_class(kind: &SensorKind, unit: &str) -> Option<&'static str> {
    Some(match unit {
        "°C" | "°F" | "K" => "temperature",
        // The Pi's memory and disk use are percentages, not humidity.
        "%" if matches!(kind, SensorKind::System { .. }) => return None,
        "%" => "humidity",
        "hPa" | "Pa" | "kPa" | "mbar" | "bar" | "psi" | "inHg" | "mmHg" => "pressure",
        "V" | "mV" => "voltage",
        "A" | "mA" => "current",
        "W" | "kW" => "power",
        "lx" => "illuminance",
        "Hz" | "kHz" | "MHz" => "frequency",
        "s" | "min" | "h" | "ms" => "duration",
        "B" | "kB" | "KiB" | "MB" | "MiB" | "GB" | "GiB" => "data_size",
        "dBm" => "signal_strength",
        _ => return None,
    })
}

/// How long HA waits for a reading before showing the sensor unavailable:
/// twice the longest gap between two publications (the interval, or
/// `report_every` when only changes are published, plus the read's
/// timeouts and retries), at least `EXPIRE_AFTER_MIN` (10 s), in whole seconds.
/// `None` for a sensor that publishes only changes with no heartbeat: its
/// silence means "unchanged", never "gone" (availability covers that).
pub fn expire_after(sensor: &Sensor) -> Option<Duration> {
    let period = match (sensor.change_threshold, sensor.report_every) {
        (None, _) => sensor.interval,
        (Some(_), None) => return None,
        // report_every is checked at each reading: up to one interval late.
        (Some(_), Some(every)) => every.max(sensor.interval).saturating_add(sensor.interval),
    };
    let reading = sensor
        .timeout
        .saturating_mul(sensor.retries.saturating_add(1))
        .saturating_add(Duration::from_millis(100).saturating_mul(sensor.retries));
    let gap = period.saturating_add(reading).saturating_mul(2);
    let secs = gap.as_secs() + u64::from(gap.subsec_nanos() > 0);
    Some(Duration::from_secs(secs).max(EXPIRE_AFTER_MIN))
}

/// The outbox's counters from `stats`, and the last command's result.
fn diagnostics(topics: &Topics) -> Vec<Spec> {
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
    vec![
        stat("queued", "Outbox queued", "measurement", "mdi:tray-full"),
        stat(
            "dropped",
            "Outbox dropped",
            "total_increasing",
            "mdi:delete-alert",
        ),
        stat(
            "reconnects",
            "Reconnects",
            "total_increasing",
            "mdi:lan-connect",
        ),
        spec(Component::Sensor, "last", "command_result", last),
    ]
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

pub fn node_id(device_id: &str) -> String {
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
