//! `[homeassistant]` and the `[output.homeassistant]`, `[input.homeassistant]`
//! and `[sensor.homeassistant]` tables under each pin and sensor: whether
//! pinpost announces itself to Home Assistant, in which discovery form, and
//! how each entity may differ from what pinpost would choose by itself.
//!
//! Only what a person writes is checked here (names, classes, which
//! component a pin may become); what the discovery messages look like is
//! `crate::homeassistant`'s business.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use super::error::ConfigError;
use super::model::{Broker, CommandRules, Input, Output};
use super::origins::Origins;
use super::raw::{RawConfig, RawEntity};
use super::sensor_model::Sensor;
use super::values::{duration, word};

/// At most this long (a random part of it) before answering HA's birth
/// message, so a fleet does not answer at once.
const BIRTH_DELAY_DEFAULT: Duration = Duration::from_secs(5);
const TEXT_MAX_CHARS: usize = 128;

/// Which discovery messages pinpost publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiscoveryForm {
    /// One retained config per entity,
    /// `<prefix>/<component>/<node>/<object>/config`: every HA since 2021.
    #[default]
    Entities,
    /// One retained config for the whole device, `<prefix>/device/<node>/config`
    /// with `dev`, `o` and `cmps`: HA 2024.12 and newer.
    Device,
}

impl FromStr for DiscoveryForm {
    type Err = String;

    /// `homeassistant.form`: `"entities"` or `"device"`.
    fn from_str(word: &str) -> Result<Self, String> {
        match word {
            "entities" => Ok(DiscoveryForm::Entities),
            "device" => Ok(DiscoveryForm::Device),
            other => Err(format!(
                "{other:?} is not a discovery form; allowed: \"entities\" (one config per \
                 entity, any Home Assistant since 2021) or \"device\" (one config for the \
                 whole device, Home Assistant 2024.12 and newer)"
            )),
        }
    }
}

/// What a pin or measurement becomes in Home Assistant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    /// On and off (any output).
    Switch,
    /// A dimmable light, brightness as duty (PWM outputs).
    Light,
    /// A fan, speed as duty (PWM outputs).
    Fan,
    /// The duty as a number in % (PWM outputs).
    Number,
    /// A button that sends a pulse (an output's `pulse`).
    Button,
    /// On and off, read (inputs).
    BinarySensor,
    /// A value with a unit (sensors and diagnostics).
    Sensor,
    /// The device's software: installed and latest version, progress
    /// (signed releases, with `[update] release_key`). Never a pin's.
    Update,
    /// A button's presses (`button = true`), for automations. Not one a
    /// config may choose for another pin, so not in `ALL`.
    Event,
}

impl Component {
    const ALL: [Component; 8] = [
        Component::Switch,
        Component::Light,
        Component::Fan,
        Component::Number,
        Component::Button,
        Component::BinarySensor,
        Component::Sensor,
        Component::Update,
    ];

    /// The component HA calls `name`, if any.
    fn named(name: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// HA's name for it (the discovery topic's component, `p` in `cmps`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Component::Switch => "switch",
            Component::Light => "light",
            Component::Fan => "fan",
            Component::Number => "number",
            Component::Button => "button",
            Component::BinarySensor => "binary_sensor",
            Component::Sensor => "sensor",
            Component::Update => "update",
            Component::Event => "event",
        }
    }
}

/// Where HA files an entity apart from the device's main controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityCategory {
    /// A setting of the device (outputs only; HA refuses it for sensors).
    Config,
    /// A reading about the device itself rather than what it measures.
    Diagnostic,
}

impl EntityCategory {
    /// The category HA calls `name`, if any.
    fn named(name: &str) -> Option<EntityCategory> {
        [EntityCategory::Config, EntityCategory::Diagnostic]
            .into_iter()
            .find(|c| c.as_str() == name)
    }

    /// HA's name for it (`entity_category` in discovery).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EntityCategory::Config => "config",
            EntityCategory::Diagnostic => "diagnostic",
        }
    }
}

/// One pin's or measurement's overrides; `None` leaves pinpost's choice.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    /// `false` leaves it out of Home Assistant (and removes it if announced).
    pub enabled: bool,
    /// What it becomes in HA.
    pub component: Option<Component>,
    /// HA's device class (`door`, `temperature`, …).
    pub device_class: Option<String>,
    /// The name HA shows.
    pub name: Option<String>,
    /// The icon HA shows (`mdi:garage`).
    pub icon: Option<String>,
    /// Where HA files it, if not with the main controls.
    pub entity_category: Option<EntityCategory>,
    /// Sensors only: the unit HA shows, instead of the one pinpost publishes.
    pub unit: Option<String>,
    /// Outputs only: a "Pulse" button that sends a pulse this long.
    pub pulse: Option<Duration>,
}

impl Default for Entity {
    fn default() -> Entity {
        Entity {
            enabled: true,
            component: None,
            device_class: None,
            name: None,
            icon: None,
            entity_category: None,
            unit: None,
            pulse: None,
        }
    }
}

/// A sensor's overrides, and those of each of its measurements.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SensorEntity {
    /// The sensor's own overrides (its only value, or all measurements).
    pub entity: Entity,
    /// Overrides by measurement name (`temperature`).
    pub measurements: BTreeMap<String, Entity>,
}

/// `[homeassistant]`: whether and how pinpost announces itself to Home Assistant.
#[derive(Debug, Clone, PartialEq)]
pub struct HomeAssistant {
    /// Publish discovery messages at all.
    pub enabled: bool,
    /// The first level of discovery topics (`homeassistant`).
    pub discovery_prefix: String,
    /// Where HA publishes `online` when it starts (its birth message).
    pub status_topic: String,
    /// Which discovery messages are published.
    pub form: DiscoveryForm,
    /// The device's name in HA; `None` uses the device id.
    pub name: Option<String>,
    /// The area HA suggests for the device.
    pub area: Option<String>,
    /// The device's model, shown in HA.
    pub model: Option<String>,
    /// The device's manufacturer, shown in HA.
    pub manufacturer: Option<String>,
    /// A web page about the device, linked from HA.
    pub configuration_url: Option<String>,
    /// Answers to HA's birth message wait a random time up to this long.
    pub birth_delay: Duration,
    /// Announce the outbox counters and the last command result.
    pub diagnostics: bool,
    /// Overrides by input, output and sensor name.
    pub inputs: BTreeMap<String, Entity>,
    /// Overrides by output name.
    pub outputs: BTreeMap<String, Entity>,
    /// Overrides by sensor name.
    pub sensors: BTreeMap<String, SensorEntity>,
}

pub(super) struct Parts<'a> {
    pub broker: &'a Broker,
    pub commands: &'a CommandRules,
    pub inputs: &'a [Input],
    pub outputs: &'a [Output],
    pub sensors: &'a [Sensor],
}

pub(super) fn build(
    raw: &RawConfig,
    parts: &Parts<'_>,
    o: &Origins<'_>,
) -> Result<HomeAssistant, ConfigError> {
    let r = &raw.homeassistant;
    let enabled = r.enabled.unwrap_or(false);
    let discovery_prefix = r
        .discovery_prefix
        .clone()
        .unwrap_or_else(|| "homeassistant".into());
    topic(&discovery_prefix, "homeassistant.discovery_prefix", o)?;
    let status_topic = r
        .status_topic
        .clone()
        .unwrap_or_else(|| format!("{discovery_prefix}/status"));
    topic(&status_topic, "homeassistant.status_topic", o)?;
    let form = word(r.form.as_deref(), "homeassistant.form", o)?.unwrap_or_default();
    let name = text(&r.name, "homeassistant.name", o)?;
    let area = text(&r.area, "homeassistant.area", o)?;
    let model = text(&r.model, "homeassistant.model", o)?;
    let manufacturer = text(&r.manufacturer, "homeassistant.manufacturer", o)?;
    let configuration_url = text(&r.configuration_url, "homeassistant.configuration_url", o)?;
    if let Some(url) = &configuration_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(' ') {
            return Err(o.invalid(
                "homeassistant.configuration_url",
                format!("{url:?} is not a web address; write it like \"http://pi-01.local:8080/\""),
            ));
        }
    }
    let birth_delay =
        duration(&r.birth_delay, "homeassistant.birth_delay", o)?.unwrap_or(BIRTH_DELAY_DEFAULT);
    if birth_delay > Duration::from_secs(600) {
        return Err(o.invalid(
            "homeassistant.birth_delay",
            "out of range; allowed: \"0s\" to \"10m\"",
        ));
    }
    if enabled && !parts.broker.clean_session && !parts.commands.allow_unstamped {
        return Err(o.invalid(
            "homeassistant.enabled",
            "Home Assistant sends commands without a \"ts\", and with broker.clean_session = \
             false pinpost applies only stamped ones, so every switch in Home Assistant would \
             be refused; set commands.allow_unstamped = true (or use the default clean session)",
        ));
    }

    let mut inputs = BTreeMap::new();
    for (i, (raw_input, input)) in raw.input.iter().zip(parts.inputs).enumerate() {
        if let Some(e) = &raw_input.homeassistant {
            let at = format!("input[{i}].homeassistant");
            let entity = entity(e, &at, Kind::Input, o)?;
            inputs.insert(input.name.clone(), entity);
        }
    }
    let mut outputs = BTreeMap::new();
    for (i, (raw_output, output)) in raw.output.iter().zip(parts.outputs).enumerate() {
        if let Some(e) = &raw_output.homeassistant {
            let at = format!("output[{i}].homeassistant");
            let entity = entity(e, &at, Kind::Output, o)?;
            check_output(&entity, output, parts.commands, &at, o)?;
            outputs.insert(output.name.clone(), entity);
        }
    }
    let mut sensors = BTreeMap::new();
    for (i, (raw_sensor, sensor)) in raw.sensor.iter().zip(parts.sensors).enumerate() {
        if let Some(e) = &raw_sensor.homeassistant {
            let at = format!("sensor[{i}].homeassistant");
            let whole = entity(e, &at, Kind::Sensor, o)?;
            let mut measurements = BTreeMap::new();
            let published = sensor.kind.published();
            for (m, raw_m) in e.measurement.iter().flatten() {
                let at_m = format!("{at}.measurement.{m}");
                if raw_m.measurement.is_some() {
                    return Err(o.invalid(&at_m, "a measurement has no measurements of its own"));
                }
                if let Some(list) = &published {
                    let names: Vec<&str> = list.iter().filter_map(|p| p.name.as_deref()).collect();
                    if !names.contains(&m.as_str()) {
                        let allowed = if names.is_empty() {
                            "none: this sensor measures one thing; put the keys in \
                             [sensor.homeassistant] itself"
                                .to_string()
                        } else {
                            names.join(", ")
                        };
                        return Err(o.invalid(
                            &at_m,
                            format!(
                                "{m:?} is not something this sensor measures; allowed: {allowed}"
                            ),
                        ));
                    }
                }
                measurements.insert(m.clone(), entity(raw_m, &at_m, Kind::Sensor, o)?);
            }
            sensors.insert(
                sensor.name.clone(),
                SensorEntity {
                    entity: whole,
                    measurements,
                },
            );
        }
    }
    Ok(HomeAssistant {
        enabled,
        discovery_prefix,
        status_topic,
        form,
        name,
        area,
        model,
        manufacturer,
        configuration_url,
        birth_delay,
        diagnostics: r.diagnostics.unwrap_or(true),
        inputs,
        outputs,
        sensors,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Input,
    Output,
    Sensor,
}

fn entity(r: &RawEntity, at: &str, kind: Kind, o: &Origins<'_>) -> Result<Entity, ConfigError> {
    let key = |field: &str| format!("{at}.{field}");
    if r.measurement.is_some() && kind != Kind::Sensor {
        return Err(o.invalid(&key("measurement"), "only sensors have measurements"));
    }
    if r.unit.is_some() && kind != Kind::Sensor {
        return Err(o.invalid(&key("unit"), "only sensors have a unit"));
    }
    if r.pulse.is_some() && kind != Kind::Output {
        return Err(o.invalid(&key("pulse"), "only outputs can be pulsed"));
    }
    let component = match r.component.as_deref() {
        None => None,
        Some(given) => {
            // What a pin of this kind may become; anything else is refused
            // with the list, whether HA knows the word or not.
            let (fits, allowed): (&[Component], &str) = match kind {
                Kind::Output => (
                    &[
                        Component::Switch,
                        Component::Light,
                        Component::Fan,
                        Component::Number,
                    ],
                    "\"switch\", or for a PWM output \"light\" (brightness is the duty), \
                     \"fan\" (speed is the duty) or \"number\" (the duty in %)",
                ),
                Kind::Input => (&[Component::BinarySensor], "\"binary_sensor\""),
                Kind::Sensor => (&[Component::Sensor], "\"sensor\""),
            };
            match Component::named(given).filter(|c| fits.contains(c)) {
                Some(c) => Some(c),
                None => {
                    return Err(o.invalid(
                        &key("component"),
                        format!("{given:?} is not a component for this; allowed: {allowed}"),
                    ));
                }
            }
        }
    };
    let device_class = match &r.device_class {
        None => None,
        Some(c)
            if !c.is_empty()
                && c.len() <= 64
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_') =>
        {
            Some(c.clone())
        }
        Some(c) => {
            return Err(o.invalid(
                &key("device_class"),
                format!(
                    "{c:?} is not a device class; Home Assistant's are lower-case words with \
                     '_', like \"door\", \"motion\", \"temperature\" or \"outlet\""
                ),
            ));
        }
    };
    let icon = match &r.icon {
        None => None,
        Some(i) => match i.split_once(':') {
            Some((set, name))
                if !set.is_empty()
                    && !name.is_empty()
                    && i.len() <= 64
                    && i.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == ':'
                    }) =>
            {
                Some(i.clone())
            }
            _ => {
                return Err(o.invalid(
                    &key("icon"),
                    format!("{i:?} is not an icon; write it like \"mdi:garage\""),
                ));
            }
        },
    };
    let entity_category = match r.entity_category.as_deref() {
        None => None,
        Some(given) => match EntityCategory::named(given) {
            Some(EntityCategory::Diagnostic) => Some(EntityCategory::Diagnostic),
            Some(EntityCategory::Config) if kind == Kind::Output => Some(EntityCategory::Config),
            _ => {
                let allowed = if kind == Kind::Output {
                    "\"config\" or \"diagnostic\""
                } else {
                    "\"diagnostic\" (Home Assistant refuses \"config\" for sensors)"
                };
                return Err(o.invalid(
                    &key("entity_category"),
                    format!("{given:?} is not an entity category; allowed: {allowed}"),
                ));
            }
        },
    };
    let pulse = duration(&r.pulse, &key("pulse"), o)?;
    Ok(Entity {
        enabled: r.enabled.unwrap_or(true),
        component,
        device_class,
        name: text(&r.name, &key("name"), o)?,
        icon,
        entity_category,
        unit: text(&r.unit, &key("unit"), o)?,
        pulse,
    })
}

/// What an output's commands can do decides what it may become.
fn check_output(
    entity: &Entity,
    output: &Output,
    commands: &CommandRules,
    at: &str,
    o: &Origins<'_>,
) -> Result<(), ConfigError> {
    if let Some(c @ (Component::Light | Component::Fan | Component::Number)) = entity.component {
        if !output.pwm {
            return Err(o.invalid(
                &format!("{at}.component"),
                format!(
                    "{:?} needs a PWM output (its level is the duty); add pwm = true to this \
                     [[output]], or use \"switch\"",
                    c.as_str()
                ),
            ));
        }
    }
    if let Some(pulse) = entity.pulse {
        if pulse.is_zero() || pulse > commands.max_pulse || pulse < commands.min_interval {
            return Err(o.invalid(
                &format!("{at}.pulse"),
                format!(
                    "{} ms is out of range; allowed: from commands.min_interval ({} ms) to \
                     commands.max_pulse ({} ms), as the agent would refuse any other",
                    pulse.as_millis(),
                    commands.min_interval.as_millis().max(1),
                    commands.max_pulse.as_millis()
                ),
            ));
        }
    }
    Ok(())
}

/// A topic (or prefix) pinpost publishes to or subscribes to exactly: no
/// wildcards, no empty levels at the ends.
fn topic(value: &str, key: &str, o: &Origins<'_>) -> Result<(), ConfigError> {
    let problem = if value.is_empty() {
        "is empty"
    } else if value.contains(['+', '#']) {
        "contains a wildcard (+ or #)"
    } else if value.starts_with('/') || value.ends_with('/') {
        "starts or ends with '/'"
    } else if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        "contains a space or control character"
    } else if value.len() > 256 {
        "is longer than 256 bytes"
    } else {
        return Ok(());
    };
    Err(o.invalid(
        key,
        format!("{value:?} {problem}; write a topic like \"homeassistant\""),
    ))
}

/// A name for people: one line, not empty, not endless.
fn text(value: &Option<String>, key: &str, o: &Origins<'_>) -> Result<Option<String>, ConfigError> {
    match value {
        None => Ok(None),
        Some(t) if t.trim().is_empty() => Err(o.invalid(key, "is empty; leave it out instead")),
        Some(t) if t.chars().any(char::is_control) => {
            Err(o.invalid(key, format!("{t:?} contains a control character")))
        }
        Some(t) if t.chars().count() > TEXT_MAX_CHARS => {
            Err(o.invalid(key, format!("is longer than {TEXT_MAX_CHARS} characters")))
        }
        Some(t) => Ok(Some(t.clone())),
    }
}

#[cfg(test)]
mod tests;
