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
fn a_bme280_is_one_sensor_per_measurement_with_class_and_unit() {
    let plan = super::plan(&enabled(""), &Announced::default());
    for (m, class, unit) in [
        ("temperature", "temperature", "°C"),
        ("pressure", "pressure", "hPa"),
        ("humidity", "humidity", "%"),
    ] {
        let s = entity(
            &plan,
            &format!("homeassistant/sensor/pi-01/sensor_room_{m}/config"),
        );
        assert_eq!(s["name"], format!("room {m}"));
        assert_eq!(s["state_topic"], format!("pinpost/pi-01/sensor/room/{m}"));
        assert_eq!(s["value_template"], "{{ value_json.value }}");
        assert_eq!(s["device_class"], class);
        assert_eq!(s["unit_of_measurement"], unit);
        assert_eq!(s["state_class"], "measurement");
        assert!(
            s.get("entity_category").is_none(),
            "{m} is not a diagnostic"
        );
    }
}

#[test]
fn the_pis_own_health_is_diagnostic_and_percentages_there_are_not_humidity() {
    let plan = super::plan(&enabled(""), &Announced::default());
    let cpu = entity(&plan, "homeassistant/sensor/pi-01/sensor_cpu/config");
    assert_eq!(cpu["entity_category"], "diagnostic");
    assert_eq!(cpu["device_class"], "temperature");
    assert_eq!(cpu["state_topic"], "pinpost/pi-01/sensor/cpu");
    let memory = entity(
        &plan,
        "homeassistant/sensor/pi-01/sensor_health_memory_used/config",
    );
    assert_eq!(memory["entity_category"], "diagnostic");
    assert_eq!(memory["unit_of_measurement"], "%");
    assert!(memory.get("device_class").is_none());
    let load = entity(
        &plan,
        "homeassistant/sensor/pi-01/sensor_health_load1/config",
    );
    assert!(
        load.get("unit_of_measurement").is_none(),
        "no unit, no empty unit"
    );
    let uptime = entity(
        &plan,
        "homeassistant/sensor/pi-01/sensor_health_uptime/config",
    );
    assert_eq!(uptime["device_class"], "duration");
}

#[test]
fn units_say_the_class_and_overrides_win() {
    let c = config(&format!(
        "{DEVICE}\n[[sensor]]\nname = \"battery\"\nkind = \"sim\"\nunit = \"%\"\n\
         [sensor.homeassistant]\ndevice_class = \"battery\"\nname = \"Battery\"\n\
         [[sensor]]\nname = \"raw\"\nkind = \"sim\"\n[sensor.homeassistant]\nunit = \"°C\"\n\
         [[sensor]]\nname = \"adc\"\nkind = \"ads1115\"\nchannels = [0, 3]\n\
         [sensor.homeassistant.measurement.a3]\nenabled = false\n\
         [homeassistant]\nenabled = true\n"
    ));
    let plan = super::plan(&c, &Announced::default());
    let battery = entity(&plan, "homeassistant/sensor/pi-01/sensor_battery/config");
    assert_eq!(battery["device_class"], "battery");
    assert_eq!(battery["name"], "Battery");
    let raw = entity(&plan, "homeassistant/sensor/pi-01/sensor_raw/config");
    assert_eq!(raw["unit_of_measurement"], "°C");
    assert_eq!(raw["device_class"], "temperature", "from the unit given");
    let a0 = entity(&plan, "homeassistant/sensor/pi-01/sensor_adc_a0/config");
    assert_eq!(a0["device_class"], "voltage");
    assert!(
        plan.messages
            .iter()
            .all(|m| !m.topic.contains("sensor_adc_a3"))
    );
}

#[test]
fn expire_after_covers_the_longest_silence_so_a_quiet_sensor_never_flaps() {
    let c = config(&format!(
        "{DEVICE}\n[[sensor]]\nname = \"slow\"\nkind = \"sim\"\ninterval = \"10s\"\n\
         change_threshold = 0.5\nreport_every = \"15m\"\n\
         [[sensor]]\nname = \"changes\"\nkind = \"sim\"\ninterval = \"10s\"\nchange_threshold = 0.5\n\
         [[sensor]]\nname = \"fast\"\nkind = \"sim\"\ninterval = \"1s\"\ntimeout = \"1s\"\nretries = 0\n"
    ));
    let by_name = |n: &str| c.sensors.iter().find(|s| s.name == n).unwrap();
    // 30 s interval, 2 s timeout, 2 retries: 2 × (30 + 3 × 2 + 0.2) s.
    assert_eq!(expire_after(by_name("room")), Some(Duration::from_secs(73)));
    // Only changes, with a heartbeat every 15 minutes (seen at the next
    // 10 s reading): never shown unavailable while it is quiet.
    let slow = expire_after(by_name("slow")).unwrap();
    assert!(slow >= Duration::from_secs(2 * 910), "{slow:?}");
    // Only changes and no heartbeat: silence means "unchanged".
    assert_eq!(expire_after(by_name("changes")), None);
    assert_eq!(
        expire_after(by_name("fast")),
        Some(Duration::from_secs(10)),
        "the floor"
    );

    let c = config(&format!(
        "{DEVICE}\n[[sensor]]\nname = \"changes\"\nkind = \"sim\"\nchange_threshold = 0.5\n\
         [homeassistant]\nenabled = true\n"
    ));
    let plan = super::plan(&c, &Announced::default());
    let room = entity(
        &plan,
        "homeassistant/sensor/pi-01/sensor_room_pressure/config",
    );
    assert_eq!(room["expire_after"], 73);
    let changes = entity(&plan, "homeassistant/sensor/pi-01/sensor_changes/config");
    assert!(changes.get("expire_after").is_none());
}

#[test]
fn diagnostics_read_the_stats_topic_and_command_results() {
    let plan = super::plan(&enabled(""), &Announced::default());
    for (key, class) in [
        ("queued", "measurement"),
        ("dropped", "total_increasing"),
        ("reconnects", "total_increasing"),
    ] {
        let s = entity(
            &plan,
            &format!("homeassistant/sensor/pi-01/stats_{key}/config"),
        );
        assert_eq!(s["state_topic"], "pinpost/pi-01/stats");
        assert_eq!(s["value_template"], format!("{{{{ value_json.{key} }}}}"));
        assert_eq!(s["entity_category"], "diagnostic");
        assert_eq!(s["state_class"], class);
    }
    let last = entity(
        &plan,
        "homeassistant/sensor/pi-01/last_command_result/config",
    );
    assert_eq!(last["state_topic"], "pinpost/pi-01/cmd/+/result");
    assert_eq!(last["json_attributes_topic"], "pinpost/pi-01/cmd/+/result");
    assert_eq!(last["entity_category"], "diagnostic");

    let c = config(&format!(
        "{DEVICE}\n[homeassistant]\nenabled = true\ndiagnostics = false\n"
    ));
    let plan = super::plan(&c, &Announced::default());
    assert!(plan.messages.iter().all(|m| !m.topic.contains("stats_")));
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
        2 + 1 + 1 + 3 + 1 + 5 + 4,
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
    assert_eq!(cmps.len(), 17);
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
        17
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
    let readme = include_str!("../../README.md");
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
