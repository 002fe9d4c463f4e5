//! The entities of sensors, and the device's diagnostics.

use std::time::Duration;

use super::*;
use crate::homeassistant::sensors::expire_after;

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
fn light_power_and_co2_chips_get_the_classes_of_what_they_measure() {
    let plan = super::plan(
        &enabled(
            "[[sensor]]\nname = \"light\"\nkind = \"bh1750\"\n\
             [[sensor]]\nname = \"solar\"\nkind = \"ina219\"\n\
             [[sensor]]\nname = \"air\"\nkind = \"scd4x\"\n",
        ),
        &Announced::default(),
    );
    for (object, state, class, unit) in [
        ("sensor_light", "light", "illuminance", "lx"),
        ("sensor_solar_voltage", "solar/voltage", "voltage", "V"),
        ("sensor_solar_current", "solar/current", "current", "A"),
        ("sensor_solar_power", "solar/power", "power", "W"),
        (
            "sensor_solar_shunt_voltage",
            "solar/shunt_voltage",
            "voltage",
            "mV",
        ),
        ("sensor_air_co2", "air/co2", "carbon_dioxide", "ppm"),
        (
            "sensor_air_temperature",
            "air/temperature",
            "temperature",
            "°C",
        ),
        ("sensor_air_humidity", "air/humidity", "humidity", "%"),
    ] {
        let s = entity(
            &plan,
            &format!("homeassistant/sensor/pi-01/{object}/config"),
        );
        assert_eq!(s["state_topic"], format!("pinpost/pi-01/sensor/{state}"));
        assert_eq!(s["device_class"], class, "{object}");
        assert_eq!(s["unit_of_measurement"], unit, "{object}");
        assert_eq!(s["state_class"], "measurement");
    }
}

#[test]
fn ppm_from_anything_but_an_scd4x_is_not_called_co2() {
    let plan = super::plan(
        &enabled("[[sensor]]\nname = \"voc\"\nkind = \"sim\"\nunit = \"ppm\"\n"),
        &Announced::default(),
    );
    let s = entity(&plan, "homeassistant/sensor/pi-01/sensor_voc/config");
    assert_eq!(s["unit_of_measurement"], "ppm");
    assert!(s.get("device_class").is_none(), "{s}");
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
        ("expired", "total_increasing"),
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
fn the_certificates_end_is_a_timestamp_when_the_device_logs_in_with_one() {
    let topics = crate::topics::Topics::new("pinpost", "pi-01");
    let with = super::super::diagnostics::diagnostics(&topics, true);
    let without = super::super::diagnostics::diagnostics(&topics, false);
    assert_eq!(with.len(), without.len() + 1);
    let ends = &with.last().unwrap().config;
    assert_eq!(ends["device_class"], "timestamp");
    assert_eq!(ends["value_template"], "{{ value_json.cert_ends }}");
    assert_eq!(ends["state_topic"], "pinpost/pi-01/stats");
    assert_eq!(ends["entity_category"], "diagnostic");
}

#[test]
fn with_a_release_key_the_device_has_an_update_entity_read_from_its_update_topic() {
    let plan = super::plan(&enabled(""), &Announced::default());
    assert!(plan.messages.iter().all(|m| !m.topic.contains("/update/")));
    let plan = super::plan(
        &enabled("\n[update]\nrelease_key = \"/etc/pinpost/certs/release.pub\"\n"),
        &Announced::default(),
    );
    let firmware = entity(&plan, "homeassistant/update/pi-01/update_firmware/config");
    assert_eq!(firmware["state_topic"], "pinpost/pi-01/update");
    assert_eq!(firmware["device_class"], "firmware");
    assert!(
        firmware.get("command_topic").is_none(),
        "no Install button where releases install by themselves: {firmware}"
    );
    let template = firmware["value_template"].as_str().unwrap();
    for key in [
        "'installed_version': value_json.installed",
        "'latest_version'",
        "'in_progress': s in ['fetching', 'installing']",
        "'update_percentage'",
        "| tojson",
    ] {
        assert!(template.contains(key), "{key} in {template}");
    }
}

#[test]
fn with_installs_when_asked_the_update_entity_has_an_install_button_sending_the_install_command() {
    let plan = super::plan(
        &enabled(
            "\n[update]\nrelease_key = \"/etc/pinpost/certs/release.pub\"\ninstall = \"when-asked\"\n",
        ),
        &Announced::default(),
    );
    let firmware = entity(&plan, "homeassistant/update/pi-01/update_firmware/config");
    assert_eq!(firmware["command_topic"], "pinpost/pi-01/cmd/update");
    assert_eq!(firmware["payload_install"], "{\"action\":\"install\"}");
}
