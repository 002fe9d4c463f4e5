//! The entities of outputs and inputs.

use std::time::Duration;

use super::*;
use crate::homeassistant::pins::{DUTY_PERCENT, PWM_FROM_PERCENT};

#[test]
fn an_output_is_a_switch_that_reads_the_state_and_sends_commands_pinpost_accepts() {
    let c = enabled("");
    let plan = super::plan(&c, &Announced::default());
    let switch = entity(&plan, "homeassistant/switch/pi-01/output_relay/config");
    assert_eq!(switch["unique_id"], "pinpost_pi-01_output_relay");
    assert_eq!(switch["name"], "relay");
    assert_eq!(switch["icon"], "mdi:gate");
    assert_eq!(switch["state_topic"], "pinpost/pi-01/output/relay");
    assert_eq!(switch["command_topic"], "pinpost/pi-01/cmd/relay");
    assert_eq!(
        switch["value_template"],
        "{{ 'on' if value_json.value else 'off' }}"
    );
    assert_eq!(switch["qos"], 1);
    assert!(
        switch.get("retain").is_none(),
        "HA's default: commands not retained"
    );
    assert!(
        switch.get("object_id").is_none(),
        "object_id stops working in HA 2026.4"
    );
    assert_eq!(
        accepted(&c, "relay", switch["payload_on"].as_str().unwrap()),
        Action::Set(true)
    );
    assert_eq!(
        accepted(&c, "relay", switch["payload_off"].as_str().unwrap()),
        Action::Set(false)
    );
    // Availability is the status topic and its Last Will.
    assert_eq!(switch["availability_topic"], "pinpost/pi-01/status");
    assert_eq!(switch["payload_available"], "online");
    assert_eq!(switch["payload_not_available"], "offline");
    assert_eq!(switch["device"]["identifiers"], json!(["pinpost_pi-01"]));
    assert_eq!(switch["device"]["name"], "pi-01");
    assert_eq!(
        switch["device"]["sw_version"],
        format!("pinpost {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(switch["origin"]["name"], "pinpost");
}

#[test]
fn a_pulse_button_sends_the_configured_pulse() {
    let c = enabled("");
    let plan = super::plan(&c, &Announced::default());
    let button = entity(&plan, "homeassistant/button/pi-01/pulse_relay/config");
    assert_eq!(button["name"], "Pulse relay");
    assert_eq!(button["unique_id"], "pinpost_pi-01_pulse_relay");
    assert_eq!(button["command_topic"], "pinpost/pi-01/cmd/relay");
    assert_eq!(
        accepted(&c, "relay", button["payload_press"].as_str().unwrap()),
        Action::Pulse(Duration::from_millis(500))
    );
    assert!(
        plan.messages
            .iter()
            .all(|m| !m.topic.contains("pulse_lamp")),
        "only outputs with a pulse get a button"
    );
}

#[test]
fn a_pwm_output_is_a_light_whose_brightness_is_the_duty() {
    let c = enabled("");
    let plan = super::plan(&c, &Announced::default());
    let light = entity(&plan, "homeassistant/light/pi-01/output_lamp/config");
    assert_eq!(light["command_topic"], "pinpost/pi-01/cmd/lamp");
    assert_eq!(light["brightness_command_topic"], "pinpost/pi-01/cmd/lamp");
    assert_eq!(light["brightness_state_topic"], "pinpost/pi-01/output/lamp");
    assert_eq!(light["brightness_scale"], 100);
    assert_eq!(
        light["on_command_type"], "brightness",
        "no plain `on` after a duty"
    );
    assert_eq!(light["brightness_value_template"], DUTY_PERCENT);
    assert_eq!(
        accepted(&c, "lamp", light["payload_off"].as_str().unwrap()),
        Action::Set(false)
    );
    // HA renders the template with value = 40 (percent): what it sends then
    // is a PWM command pinpost accepts, at the default frequency.
    let sent = light["brightness_command_template"]
        .as_str()
        .unwrap()
        .replace("{{ (value | float(0) / 100) | round(4) }}", "0.4");
    assert_eq!(
        accepted(&c, "lamp", &sent),
        Action::Pwm {
            duty: 0.4,
            hz: 1000.0
        }
    );
}

#[test]
fn a_pwm_output_can_be_a_fan_or_a_number_instead() {
    let c = config(&format!(
        "{}\n[homeassistant]\nenabled = true\n",
        DEVICE.replace(
            "pwm = true\n",
            "pwm = true\n[output.homeassistant]\ncomponent = \"fan\"\n"
        )
    ));
    let plan = super::plan(&c, &Announced::default());
    let fan = entity(&plan, "homeassistant/fan/pi-01/output_lamp/config");
    assert_eq!(fan["percentage_command_topic"], "pinpost/pi-01/cmd/lamp");
    assert_eq!(fan["percentage_command_template"], PWM_FROM_PERCENT);
    assert_eq!(fan["percentage_value_template"], DUTY_PERCENT);
    assert_eq!(
        accepted(&c, "lamp", fan["payload_on"].as_str().unwrap()),
        Action::Set(true)
    );

    let c = config(&format!(
        "{}\n[homeassistant]\nenabled = true\n",
        DEVICE.replace(
            "pwm = true\n",
            "pwm = true\n[output.homeassistant]\ncomponent = \"number\"\n"
        )
    ));
    let plan = super::plan(&c, &Announced::default());
    let number = entity(&plan, "homeassistant/number/pi-01/output_lamp/config");
    assert_eq!(
        (number["min"].clone(), number["max"].clone()),
        (json!(0), json!(100))
    );
    assert_eq!(number["unit_of_measurement"], "%");
    assert_eq!(number["command_template"], PWM_FROM_PERCENT);
    assert_eq!(number["value_template"], DUTY_PERCENT);
}

#[test]
fn an_input_is_a_binary_sensor_with_its_class_and_inverted_value() {
    let plan = super::plan(&enabled(""), &Announced::default());
    let door = entity(&plan, "homeassistant/binary_sensor/pi-01/input_door/config");
    assert_eq!(door["device_class"], "door");
    assert_eq!(door["state_topic"], "pinpost/pi-01/input/door");
    // pinpost publishes the value with `invert` applied: ON is open.
    assert_eq!(
        door["value_template"],
        "{{ 'ON' if value_json.value else 'OFF' }}"
    );
    assert!(door.get("command_topic").is_none());
}

#[test]
fn a_counting_input_is_a_total_increasing_sensor_in_its_meters_class() {
    let c = enabled(
        "[[input]]\nname = \"meter\"\npin = 22\ncount = true\nper_pulse = 0.001\n\
         unit = \"kWh\"\n[[input]]\nname = \"rain\"\npin = 23\ncount = true\n\
         per_pulse = 0.2\nunit = \"mm\"\n",
    );
    let plan = super::plan(&c, &Announced::default());
    let meter = entity(&plan, "homeassistant/sensor/pi-01/counter_meter/config");
    assert_eq!(meter["state_topic"], "pinpost/pi-01/counter/meter");
    assert_eq!(meter["value_template"], "{{ value_json.value }}");
    assert_eq!(meter["state_class"], "total_increasing");
    assert_eq!(meter["device_class"], "energy");
    assert_eq!(meter["unit_of_measurement"], "kWh");
    let rain = entity(&plan, "homeassistant/sensor/pi-01/counter_rain/config");
    assert_eq!(rain["unit_of_measurement"], "mm");
    assert!(
        rain.get("device_class").is_none(),
        "no class HA would refuse mm in"
    );
    assert!(
        !plan
            .messages
            .iter()
            .any(|m| m.topic.contains("binary_sensor/pi-01/input_meter")),
        "a counting input has no level entity"
    );
}

#[test]
fn a_button_is_an_event_entity_with_its_press_types_beside_its_level() {
    let c = enabled("[[input]]\nname = \"hall\"\npin = 22\nbutton = true\n");
    let plan = super::plan(&c, &Announced::default());
    let event = entity(&plan, "homeassistant/event/pi-01/button_hall/config");
    assert_eq!(event["state_topic"], "pinpost/pi-01/button/hall");
    assert_eq!(
        event["event_types"],
        json!(["single", "double", "long", "long_release"])
    );
    assert_eq!(event["device_class"], "button");
    let level = entity(&plan, "homeassistant/binary_sensor/pi-01/input_hall/config");
    assert_eq!(level["state_topic"], "pinpost/pi-01/input/hall");
}
