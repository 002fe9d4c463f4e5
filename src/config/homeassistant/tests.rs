//! What a person may write under `[homeassistant]` and each pin's and
//! sensor's `homeassistant` table, and the words for what they may not.

use crate::config::{Component, DiscoveryForm, EntityCategory, Overrides, from_text};
use std::time::Duration;

const BASE: &str = "[device]\nid = \"pi-01\"\n";

fn parse(text: &str) -> Result<crate::config::Config, String> {
    from_text(
        &format!("{BASE}{text}"),
        Some(std::path::Path::new("/etc/pinpost/config.toml")),
        &Overrides::default(),
    )
    .map_err(|e| e.to_string())
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("expected an error for {text}"),
        Err(e) => e,
    }
}

#[test]
fn off_by_default_with_home_assistants_own_topics() {
    let ha = parse("").unwrap().homeassistant;
    assert!(!ha.enabled);
    assert_eq!(ha.discovery_prefix, "homeassistant");
    assert_eq!(ha.status_topic, "homeassistant/status");
    assert_eq!(ha.form, DiscoveryForm::Entities);
    assert_eq!(ha.birth_delay, Duration::from_secs(5));
    assert!(ha.diagnostics);
    let ha =
        parse("[homeassistant]\nenabled = true\ndiscovery_prefix = \"ha\"\nform = \"device\"\n")
            .unwrap()
            .homeassistant;
    assert_eq!(ha.status_topic, "ha/status", "follows the prefix");
    assert_eq!(ha.form, DiscoveryForm::Device);
}

#[test]
fn overrides_sit_under_each_pin_and_sensor() {
    let c = parse(
        "[[input]]\nname = \"door\"\npin = 17\n[input.homeassistant]\ndevice_class = \"door\"\n\
         [[output]]\nname = \"relay\"\npin = 27\n[output.homeassistant]\nname = \"Gate\"\n\
         icon = \"mdi:gate\"\npulse = \"500ms\"\nentity_category = \"config\"\n\
         [[output]]\nname = \"lamp\"\npin = 18\npwm = true\n[output.homeassistant]\ncomponent = \"fan\"\n\
         [[sensor]]\nname = \"room\"\nkind = \"bme280\"\n\
         [sensor.homeassistant.measurement.pressure]\nunit = \"mbar\"\nenabled = false\n",
    )
    .unwrap();
    let ha = c.homeassistant;
    assert_eq!(ha.inputs["door"].device_class.as_deref(), Some("door"));
    let relay = &ha.outputs["relay"];
    assert_eq!(relay.name.as_deref(), Some("Gate"));
    assert_eq!(relay.pulse, Some(Duration::from_millis(500)));
    assert_eq!(relay.entity_category, Some(EntityCategory::Config));
    assert_eq!(ha.outputs["lamp"].component, Some(Component::Fan));
    let pressure = &ha.sensors["room"].measurements["pressure"];
    assert_eq!(pressure.unit.as_deref(), Some("mbar"));
    assert!(!pressure.enabled);
}

#[test]
fn a_dimmable_component_needs_a_pwm_output() {
    let e = error(
        "[[output]]\nname = \"relay\"\npin = 27\n[output.homeassistant]\ncomponent = \"light\"\n",
    );
    assert!(
        e.contains("line 7: output[0].homeassistant.component"),
        "{e}"
    );
    assert!(e.contains("pwm = true"), "{e}");
}

#[test]
fn a_component_that_does_not_fit_the_pin_says_what_does() {
    let e =
        error("[[input]]\nname = \"b\"\npin = 17\n[input.homeassistant]\ncomponent = \"switch\"\n");
    assert!(e.contains("input[0].homeassistant.component"), "{e}");
    assert!(e.contains("\"binary_sensor\""), "{e}");
}

#[test]
fn a_pulse_button_must_be_a_pulse_the_agent_accepts() {
    let e = error(
        "[commands]\nmax_pulse = \"2s\"\n[[output]]\nname = \"r\"\npin = 27\n\
         [output.homeassistant]\npulse = \"5s\"\n",
    );
    assert!(e.contains("output[0].homeassistant.pulse"), "{e}");
    assert!(e.contains("commands.max_pulse (2000 ms)"), "{e}");
    let e = error("[[output]]\nname = \"r\"\npin = 27\n[output.homeassistant]\npulse = \"50ms\"\n");
    assert!(e.contains("commands.min_interval (100 ms)"), "{e}");
    let e = error("[[input]]\nname = \"b\"\npin = 17\n[input.homeassistant]\npulse = \"1s\"\n");
    assert!(e.contains("only outputs can be pulsed"), "{e}");
}

#[test]
fn a_measurement_the_sensor_does_not_have_is_named_with_those_it_has() {
    let e = error(
        "[[sensor]]\nname = \"room\"\nkind = \"bmp280\"\n\
         [sensor.homeassistant.measurement.humidity]\nname = \"x\"\n",
    );
    assert!(
        e.contains("sensor[0].homeassistant.measurement.humidity"),
        "{e}"
    );
    assert!(e.contains("allowed: temperature, pressure"), "{e}");
}

#[test]
fn bad_classes_icons_categories_and_topics_are_refused_in_words() {
    let e = error(
        "[[input]]\nname = \"b\"\npin = 17\n[input.homeassistant]\ndevice_class = \"Door\"\n",
    );
    assert!(e.contains("is not a device class"), "{e}");
    let e = error("[[input]]\nname = \"b\"\npin = 17\n[input.homeassistant]\nicon = \"garage\"\n");
    assert!(e.contains("\"mdi:garage\""), "{e}");
    let e = error(
        "[[input]]\nname = \"b\"\npin = 17\n[input.homeassistant]\nentity_category = \"config\"\n",
    );
    assert!(e.contains("refuses \"config\" for sensors"), "{e}");
    let e = error("[homeassistant]\nstatus_topic = \"homeassistant/#\"\n");
    assert!(e.contains("homeassistant.status_topic"), "{e}");
    assert!(e.contains("wildcard"), "{e}");
    let e = error("[homeassistant]\nform = \"yaml\"\n");
    assert!(e.contains("2024.12"), "{e}");
    let e = error("[homeassistant]\nconfiguration_url = \"pi-01.local\"\n");
    assert!(e.contains("not a web address"), "{e}");
    let e = error("[homeassistant]\nenabeld = true\n");
    assert!(e.contains("unknown field `enabeld`"), "{e}");
}

#[test]
fn a_persistent_session_without_unstamped_commands_would_refuse_every_switch() {
    let e = error("[broker]\nclean_session = false\n[homeassistant]\nenabled = true\n");
    assert!(e.contains("homeassistant.enabled"), "{e}");
    assert!(e.contains("commands.allow_unstamped = true"), "{e}");
    parse(
        "[broker]\nclean_session = false\n[commands]\nallow_unstamped = true\n\
         [homeassistant]\nenabled = true\n",
    )
    .unwrap();
}
