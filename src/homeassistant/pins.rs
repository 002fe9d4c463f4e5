//! Home Assistant entities for pinpost's pins: an output is a switch (a
//! light, fan or number under PWM) with an optional pulse button, an input
//! a binary sensor (and a button's presses an event), a counting input a
//! sensor of its total.
//!
//! It builds each entity's config from the topics and payloads pinpost
//! already speaks; where the entity goes (topic, device, `unique_id`) is
//! [`super`]'s business.

use serde_json::{Map, Value, json};

use super::{Spec, common, spec};
use crate::config::{Component, Config, Counting, Entity, Meter};
use crate::topics::{BUTTON_PRESSES, Topics};

/// An output's entity, and its pulse button when `pulse` is set.
pub(super) fn outputs(config: &Config, topics: &Topics, specs: &mut Vec<Spec>) {
    let ha = &config.homeassistant;
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
}

/// An input's binary sensor.
pub(super) fn inputs(config: &Config, topics: &Topics, specs: &mut Vec<Spec>) {
    let ha = &config.homeassistant;
    let default = Entity::default();
    for input in &config.inputs {
        let e = ha.inputs.get(&input.name).unwrap_or(&default);
        if !e.enabled {
            continue;
        }
        if let Some(counting) = &input.count {
            let c = counter(e, &input.name, counting, topics);
            specs.push(spec(Component::Sensor, "counter", &input.name, c));
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
        if input.button.is_some() {
            // HA's event entity: an automation on "double press of the hall
            // button" is made in its UI from the event's type.
            let mut c = common(e, &input.name);
            c.remove("device_class");
            c.insert("state_topic".into(), json!(topics.button(&input.name)));
            c.insert("event_types".into(), json!(BUTTON_PRESSES));
            c.insert("device_class".into(), json!("button"));
            specs.push(spec(Component::Event, "button", &input.name, c));
        }
    }
}

/// A counting input's total: a sensor whose state only grows, so Home
/// Assistant's energy dashboard takes it (a drop reads as a new meter
/// cycle), in the class its meter and unit make (only units HA accepts for
/// that class, or HA refuses the entity).
fn counter(e: &Entity, name: &str, counting: &Counting, topics: &Topics) -> Map<String, Value> {
    let mut c = common(e, name);
    c.insert("state_topic".into(), json!(topics.counter(name)));
    c.insert("value_template".into(), json!("{{ value_json.value }}"));
    c.insert("state_class".into(), json!("total_increasing"));
    let unit = e.unit.as_deref().unwrap_or(&counting.unit);
    if !unit.is_empty() {
        c.insert("unit_of_measurement".into(), json!(unit));
    }
    let (class, units): (&str, &[&str]) = match counting.meter {
        Meter::Energy => ("energy", &["Wh", "kWh", "MWh", "MJ", "GJ"]),
        Meter::Water => ("water", &["L", "m³", "gal", "ft³", "CCF"]),
        Meter::Gas => ("gas", &["m³", "ft³", "CCF"]),
        Meter::None => ("", &[]),
    };
    if e.device_class.is_none() && units.contains(&unit) {
        c.insert("device_class".into(), json!(class));
    }
    c
}

/// The duty as a percentage, from an output's state: its `duty` under PWM,
/// else 100 or 0 for a plain on or off.
pub(super) const DUTY_PERCENT: &str = "{{ ((value_json.duty * 100) | round(0) | int) if value_json.duty \
     is defined else (100 if value_json.value else 0) }}";
/// A PWM command from a percentage (HA's brightness or speed, 0 to 100).
pub(super) const PWM_FROM_PERCENT: &str =
    "{\"action\":\"pwm\",\"duty\":{{ (value | float(0) / 100) | round(4) }}}";
