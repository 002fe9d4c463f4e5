//! Where entities go: topics, the device, unique ids, forms and removals;
//! each kind of entity is tested in its own module.

mod pins;
mod sensors;

use super::*;
use crate::config::{Overrides, from_text};
use crate::control::{self, Action, Incoming};

const DEVICE: &str = r#"[device]
id = "pi-01"

[board]
kind = "sim"

[[input]]
name = "door"
pin = 17
invert = true
[input.homeassistant]
device_class = "door"

[[output]]
name = "relay"
pin = 27
[output.homeassistant]
pulse = "500ms"
icon = "mdi:gate"

[[output]]
name = "lamp"
pin = 18
pwm = true

[[sensor]]
name = "room"
kind = "bme280"
interval = "30s"

[[sensor]]
name = "cpu"
kind = "cpu_temperature"
interval = "60s"

[[sensor]]
name = "health"
kind = "system"
"#;

fn config(text: &str) -> Config {
    from_text(text, None, &Overrides::default()).unwrap()
}

fn enabled(extra: &str) -> Config {
    config(&format!(
        "{DEVICE}{extra}\n[homeassistant]\nenabled = true\n"
    ))
}

fn json_of(m: &Message) -> Value {
    serde_json::from_slice(&m.payload).unwrap_or_else(|e| panic!("{}: {e}", m.topic))
}

fn message<'a>(plan: &'a Plan, topic: &str) -> &'a Message {
    plan.messages
        .iter()
        .find(|m| m.topic == topic)
        .unwrap_or_else(|| {
            let topics: Vec<&str> = plan.messages.iter().map(|m| m.topic.as_str()).collect();
            panic!("no message on {topic}; topics: {topics:#?}")
        })
}

fn entity(plan: &Plan, topic: &str) -> Value {
    json_of(message(plan, topic))
}

/// pinpost's own parser, as the agent runs it on a live (unretained)
/// command from HA: what HA sends must be what pinpost accepts.
fn accepted(config: &Config, output: &str, payload: &str) -> Action {
    let incoming = Incoming {
        name: output,
        payload: payload.as_bytes(),
        retained: false,
        persistent_session: !config.broker.clean_session,
        now_millis: 1_795_430_292_000,
        clock: crate::control::ClockState::Trusted,
    };
    control::parse(incoming, &config.outputs, &config.inputs, &config.commands)
        .unwrap_or_else(|r| panic!("{payload} refused: {}", r.error))
        .action
}

#[test]
fn nothing_is_announced_unless_enabled() {
    let plan = super::plan(&config(DEVICE), &Announced::default());
    assert!(plan.messages.is_empty());
    assert!(plan.announced.is_empty());
}
#[test]
fn every_entity_is_under_one_device_with_a_distinct_stable_unique_id() {
    let c = config(&format!(
        "{DEVICE}\n[homeassistant]\nenabled = true\nname = \"Garage Pi\"\narea = \"Garage\"\n\
         model = \"Raspberry Pi 4\"\nconfiguration_url = \"http://pi-01.local/\"\n"
    ));
    let plan = super::plan(&c, &Announced::default());
    let bodies: Vec<Value> = plan.messages.iter().map(json_of).collect();
    assert_eq!(
        bodies.len(),
        2 + 1 + 1 + 3 + 1 + 5 + 5,
        "outputs, pulse, input, sensors, diagnostics"
    );
    let mut ids: Vec<&str> = bodies
        .iter()
        .map(|b| b["unique_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), bodies.len());
    for b in &bodies {
        assert_eq!(b["device"], bodies[0]["device"]);
    }
    let device = &bodies[0]["device"];
    assert_eq!(device["name"], "Garage Pi");
    assert_eq!(device["suggested_area"], "Garage");
    assert_eq!(device["model"], "Raspberry Pi 4");
    assert_eq!(device["configuration_url"], "http://pi-01.local/");
    // The same pins in another order: the same ids.
    let reordered = config(
        &(DEVICE.replace(
            "[[output]]\nname = \"relay\"\npin = 27\n[output.homeassistant]\npulse = \"500ms\"\nicon = \"mdi:gate\"\n\n",
            "",
        ) + "[[output]]\nname = \"relay\"\npin = 27\n[output.homeassistant]\npulse = \"500ms\"\n\
             icon = \"mdi:gate\"\n[homeassistant]\nenabled = true\n"),
    );
    assert_eq!(reordered.outputs[1].name, "relay");
    let again = super::plan(&reordered, &Announced::default());
    let switch = entity(&again, "homeassistant/switch/pi-01/output_relay/config");
    assert_eq!(switch["unique_id"], "pinpost_pi-01_output_relay");
}

#[test]
fn names_outside_what_discovery_topics_allow_are_made_safe_and_kept_apart() {
    let c = config(
        "[device]\nid = \"pi.01\"\n[[output]]\nname = \"a.b\"\npin = 5\n\
         [[output]]\nname = \"a_b\"\npin = 6\n[homeassistant]\nenabled = true\ndiagnostics = false\n",
    );
    let plan = super::plan(&c, &Announced::default());
    let topics: Vec<&str> = plan.messages.iter().map(|m| m.topic.as_str()).collect();
    let node = node_id("pi.01");
    assert!(node.starts_with("pi_01_"), "{node}");
    assert!(topics.contains(&format!("homeassistant/switch/{node}/output_a_b/config").as_str()));
    let other = topics
        .iter()
        .find(|t| t.contains("output_a_b_"))
        .expect("a.b gets its own id");
    let valid = |part: &str| {
        part.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    for t in &topics {
        let parts: Vec<&str> = t.split('/').collect();
        assert!(valid(parts[2]) && valid(parts[3]), "{t}");
    }
    assert_ne!(
        *other,
        format!("homeassistant/switch/{node}/output_a_b/config")
    );
}

#[test]
fn the_device_form_is_one_message_with_every_component() {
    let c = config(&format!(
        "{DEVICE}\n[homeassistant]\nenabled = true\nform = \"device\"\n"
    ));
    let plan = super::plan(&c, &Announced::default());
    assert_eq!(plan.messages.len(), 1);
    let m = &plan.messages[0];
    assert_eq!(m.topic, "homeassistant/device/pi-01/config");
    let body = json_of(m);
    assert_eq!(body["dev"]["identifiers"], json!(["pinpost_pi-01"]));
    assert_eq!(body["o"]["name"], "pinpost");
    assert_eq!(body["availability_topic"], "pinpost/pi-01/status");
    let cmps = body["cmps"].as_object().unwrap();
    assert_eq!(cmps.len(), 18);
    assert_eq!(cmps["output_relay"]["p"], "switch");
    assert_eq!(cmps["output_lamp"]["p"], "light");
    assert_eq!(cmps["pulse_relay"]["p"], "button");
    assert_eq!(cmps["input_door"]["p"], "binary_sensor");
    assert_eq!(cmps["sensor_room_humidity"]["p"], "sensor");
    assert_eq!(
        cmps["output_relay"]["unique_id"],
        "pinpost_pi-01_output_relay"
    );
    assert!(
        cmps["output_relay"].get("device").is_none(),
        "the device is said once"
    );
    assert_eq!(
        plan.announced.topics["homeassistant/device/pi-01/config"].len(),
        18
    );
}

#[test]
fn an_output_taken_out_of_the_config_is_removed_and_a_rename_leaves_no_ghost() {
    let before = plan(&enabled(""), &Announced::default()).announced;
    // relay renamed gate, lamp removed.
    let text = DEVICE
        .replace("name = \"relay\"", "name = \"gate\"")
        .replace("[[output]]\nname = \"lamp\"\npin = 18\npwm = true\n", "");
    let c = config(&format!("{text}\n[homeassistant]\nenabled = true\n"));
    let after = plan(&c, &before);
    let removed: Vec<&str> = after
        .messages
        .iter()
        .take_while(|m| m.payload.is_empty())
        .map(|m| m.topic.as_str())
        .collect();
    assert_eq!(
        removed,
        [
            "homeassistant/button/pi-01/pulse_relay/config",
            "homeassistant/light/pi-01/output_lamp/config",
            "homeassistant/switch/pi-01/output_relay/config",
        ],
        "removals first, in one block"
    );
    assert!(
        after.messages[removed.len()..]
            .iter()
            .all(|m| !m.payload.is_empty())
    );
    message(&after, "homeassistant/switch/pi-01/output_gate/config");
    assert!(
        !after
            .announced
            .topics
            .contains_key("homeassistant/switch/pi-01/output_relay/config")
    );
    // Nothing is removed twice.
    let again = plan(&c, &after.announced);
    assert!(again.messages.iter().all(|m| !m.payload.is_empty()));
}

#[test]
fn in_the_device_form_a_removed_component_is_named_by_its_platform_only() {
    let text = format!("{DEVICE}\n[homeassistant]\nenabled = true\nform = \"device\"\n");
    let before = plan(&config(&text), &Announced::default()).announced;
    let c = config(&text.replace("[[output]]\nname = \"lamp\"\npin = 18\npwm = true\n", ""));
    let after = plan(&c, &before);
    assert_eq!(after.messages.len(), 1);
    let cmps = json_of(&after.messages[0])["cmps"].clone();
    assert_eq!(cmps["output_lamp"], json!({ "p": "light" }));
    assert!(
        !after.announced.topics["homeassistant/device/pi-01/config"].contains_key("output_lamp")
    );
}

#[test]
fn switching_forms_or_disabling_removes_what_was_announced() {
    let entities = plan(&enabled(""), &Announced::default()).announced;
    let c = config(&format!(
        "{DEVICE}\n[homeassistant]\nenabled = true\nform = \"device\"\n"
    ));
    let device = plan(&c, &entities);
    let empties = device
        .messages
        .iter()
        .filter(|m| m.payload.is_empty())
        .count();
    assert_eq!(empties, entities.topics.len());
    assert_eq!(
        device.messages.last().unwrap().topic,
        "homeassistant/device/pi-01/config"
    );

    let off = plan(&config(DEVICE), &device.announced);
    assert_eq!(
        off.messages,
        [Message {
            topic: "homeassistant/device/pi-01/config".into(),
            payload: Vec::new()
        }]
    );
    assert!(off.announced.is_empty());
}

#[test]
fn a_sensor_only_the_hardware_can_name_and_an_oversize_message_are_explained() {
    let c = config(&format!(
        "{DEVICE}\n[[sensor]]\nname = \"tank\"\nkind = \"ds18b20\"\n\
         [broker]\nmax_packet_size = 2048\n[homeassistant]\nenabled = true\nform = \"device\"\n"
    ));
    let plan = super::plan(&c, &Announced::default());
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("\"tank\"") && n.contains("id = ")),
        "{:?}",
        plan.notes
    );
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("broker.max_packet_size (2048)")),
        "{:?}",
        plan.notes
    );
}

#[test]
fn the_prefix_is_configurable() {
    let c = config(&format!(
        "{DEVICE}\n[homeassistant]\nenabled = true\ndiscovery_prefix = \"ha/site1\"\n"
    ));
    let plan = super::plan(&c, &Announced::default());
    assert!(
        plan.messages
            .iter()
            .all(|m| m.topic.starts_with("ha/site1/"))
    );
}

#[test]
fn the_readme_example_is_a_valid_config_that_announces_what_the_readme_says() {
    let readme = include_str!("../../../README.md");
    let section = &readme[readme.find("## Home Assistant").unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let text = &section[start..start + section[start..].find("```").unwrap()];
    let c = config(text);
    let plan = super::plan(&c, &Announced::default());
    let names: Vec<String> = plan
        .messages
        .iter()
        .map(|m| json_of(m)["name"].as_str().unwrap().to_string())
        .collect();
    for name in [
        "door",
        "Gate",
        "Pulse Gate",
        "lamp",
        "room temperature",
        "Air pressure",
        "cpu",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    let gate = entity(&plan, "homeassistant/switch/pi-01/output_relay/config");
    assert_eq!(gate["device"]["name"], "Garage Pi");
}
