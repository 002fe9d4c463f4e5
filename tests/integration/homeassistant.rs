//! pinpost against a real Home Assistant: HA 2024.3.3 (per-entity
//! discovery) and HA 2025.4.4 (device-based discovery), installed from PyPI
//! by `scripts/homeassistant.sh` into `target/homeassistant/`, started
//! headless against the test's Mosquitto, with the agent on a simulated
//! board (a relay wired to a door contact, a PWM lamp, a sensor).
//!
//! HA connects over plain MQTT on loopback, the agent over mutual TLS on a
//! second listener of the same broker. Everything is asserted through HA's
//! own REST API (`/api/states`, `/api/services`, `/api/template` for the
//! device registry) and, for what reaches the Pi, an independent
//! `mosquitto_sub`.
//!
//! HA is set up the way its onboarding would leave it, by pre-written
//! `.storage/` files: the MQTT broker as a config entry, onboarding done, a
//! user with a long-lived access token. It runs with `--skip-pip`: the
//! install script put in the requirements of the integrations it loads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);
/// HA's first start on a busy 2-core machine.
const HA_START: Duration = Duration::from_secs(120);

#[test]
fn home_assistant_2024_3_shows_every_pin_and_sensor_from_per_entity_discovery() {
    scenario("2024.3.3", "entities");
}

#[test]
fn home_assistant_2025_4_shows_every_pin_and_sensor_from_device_discovery() {
    scenario("2025.4.4", "device");
}

#[test]
fn a_missing_python_fails_the_install_in_words_saying_what_to_install() {
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/homeassistant.sh"))
        .env("PINPOST_HA_PYTHON_2025", "/nonexistent/python3.13")
        .output()
        .expect("bash");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Home Assistant 2025.4.4 needs Python 3.13"),
        "{err}"
    );
    assert!(err.contains("pyenv install 3.13.0"), "{err}");
}

#[test]
fn pinpost_ha_prints_the_messages_a_config_would_announce() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pinpost.toml");
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"pi-01\"\n[outbox]\npath = \"{}\"\n[[output]]\nname = \"relay\"\npin = 27\n\
             [[sensor]]\nname = \"tank\"\nkind = \"ds18b20\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let out = pinpost(
        &strings(&["ha", "--config", &config.display().to_string()]),
        WAIT,
    );
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("does not set [homeassistant] enabled = true"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sensor \"tank\" is not announced"),
        "{stderr}"
    );
    let (topic, rest) = stdout.split_once('\n').unwrap();
    assert_eq!(topic, "homeassistant/switch/pi-01/output_relay/config");
    let json_end = rest.find("\n}\n").unwrap() + 2;
    let body: Value = serde_json::from_str(&rest[..json_end]).unwrap();
    assert_eq!(body["command_topic"], "pinpost/pi-01/cmd/relay");
    assert_eq!(body["unique_id"], "pinpost_pi-01_output_relay");
    assert!(!dir.path().join("state").exists(), "it only prints");
}

/// What HA should show for the test config, entity id → (device class, unit).
const ENTITIES: &[(&str, Option<&str>, Option<&str>)] = &[
    ("switch.pi_01_relay", None, None),
    ("button.pi_01_pulse_relay", None, None),
    ("light.pi_01_lamp", None, None),
    ("binary_sensor.pi_01_door", Some("door"), None),
    ("sensor.pi_01_room", Some("temperature"), Some("°C")),
    ("sensor.pi_01_meter", Some("energy"), Some("kWh")),
    ("binary_sensor.pi_01_hall", None, None),
    ("event.pi_01_hall", Some("button"), None),
    ("switch.pi_01_finger", None, None),
    ("button.pi_01_pulse_finger", None, None),
    ("sensor.pi_01_outbox_queued", None, None),
    ("sensor.pi_01_outbox_dropped", None, None),
    ("sensor.pi_01_outbox_expired", None, None),
    ("sensor.pi_01_reconnects", None, None),
    ("sensor.pi_01_certificate_ends", Some("timestamp"), None),
    ("sensor.pi_01_last_command_result", None, None),
    ("update.pi_01_firmware", Some("firmware"), None),
];

fn scenario(version: &str, form: &str) {
    let started = Instant::now();
    let venv = venv(version);
    let rig = Rig::new();
    let state = tempfile::tempdir().unwrap();
    let witness = Witness::start(&rig.broker, "pinpost/pi-01/#", &[]);
    let agent = rig.agent(form, true, "relay", state.path());
    let mut ha = HomeAssistant::new(&venv, version, rig.broker.port);
    ha.start();
    eprintln!("[{version}] HA up after {:?}", started.elapsed());

    // Every entity, live, with its domain, class and unit, under one device.
    for (id, class, unit) in ENTITIES {
        let s = ha.wait_state(id, "announced and available", |s| {
            s["state"] != "unavailable"
        });
        assert_eq!(
            s["attributes"]["device_class"].as_str(),
            *class,
            "{id}: {s}"
        );
        assert_eq!(
            s["attributes"]["unit_of_measurement"].as_str(),
            *unit,
            "{id}: {s}"
        );
    }
    // The certificate's end from stats, as a date HA understands (the
    // test CA's certificates end in 4096).
    ha.wait_state(
        "sensor.pi_01_certificate_ends",
        "the certificate's end",
        |s| {
            s["state"]
                .as_str()
                .is_some_and(|v| v.starts_with("4096-01-01T00:00:00"))
        },
    );
    let device = ha.template(
        "{% set d = device_id('switch.pi_01_relay') %}{{ device_attr(d, 'name') }}|\
         {{ device_attr(d, 'model') }}|{{ device_attr(d, 'sw_version') }}|{{ area_name(d) }}|\
         {{ device_entities(d) | sort | join(',') }}|{{ integration_entities('mqtt') | sort | join(',') }}",
    );
    let mut all: Vec<&str> = ENTITIES.iter().map(|(id, _, _)| *id).collect();
    all.sort_unstable();
    let all = all.join(",");
    assert_eq!(
        device,
        format!(
            "pi-01|Raspberry Pi 4|pinpost {}|Garage|{all}|{all}",
            env!("CARGO_PKG_VERSION")
        ),
        "one device holding every entity, and no other MQTT entity"
    );
    assert_eq!(ha.state("switch.pi_01_relay")["state"], "off");
    assert_eq!(ha.state("binary_sensor.pi_01_door")["state"], "off");
    assert_eq!(ha.state("light.pi_01_lamp")["state"], "off");
    // The sensor read once before HA started, and readings are not
    // retained: HA has it because pinpost answered its birth message.
    ha.wait_state(
        "sensor.pi_01_room",
        "the reading made before HA started",
        |s| s["state"] == "20.0",
    );
    // The pulse counter: a total that only grows, in kWh, which HA's
    // energy dashboard takes (its 500 pulses of the first start).
    let meter = ha.wait_state("sensor.pi_01_meter", "the meter's 0.5 kWh", |s| {
        s["state"] == "0.5"
    });
    assert_eq!(
        meter["attributes"]["state_class"], "total_increasing",
        "{meter}"
    );
    // The hall button's double press fires an automation made on its
    // event entity (configuration.yaml's "hall double"); a single does not.
    let press = || {
        ha.call(
            "button",
            "press",
            json!({ "entity_id": "button.pi_01_pulse_finger" }),
        )
    };
    press();
    witness.wait_until("a single press", WAIT, |l| {
        l.starts_with("pinpost/pi-01/button/hall {\"event_type\":\"single\"")
    });
    ha.wait_state("event.pi_01_hall", "the single press", |s| {
        s["attributes"]["event_type"] == "single"
    });
    assert!(
        ha.state("automation.hall_double")["attributes"]["last_triggered"].is_null(),
        "a single press is not a double"
    );
    press();
    std::thread::sleep(Duration::from_millis(250));
    press();
    witness.wait_until("a double press", WAIT, |l| {
        l.starts_with("pinpost/pi-01/button/hall {\"event_type\":\"double\"")
    });
    let fired = ha.wait_state("automation.hall_double", "fired by the double press", |s| {
        !s["attributes"]["last_triggered"].is_null()
    });
    eprintln!(
        "[{version}] hall double fired: {}",
        fired["attributes"]["last_triggered"]
    );
    eprintln!("[{version}] HA shows:\n{}", ha.states_of_device());
    assert_eq!(ha.state("sensor.pi_01_outbox_dropped")["state"], "0");

    // A switch in HA moves the pin; the wired door contact follows, and HA
    // shows both.
    ha.call(
        "switch",
        "turn_on",
        json!({ "entity_id": "switch.pi_01_relay" }),
    );
    witness.wait_until("the relay on", WAIT, |l| {
        l.starts_with("pinpost/pi-01/output/relay {\"value\":true")
    });
    witness.wait_until("the door contact's edge", WAIT, |l| {
        l.starts_with("pinpost/pi-01/input/door {\"value\":true")
    });
    ha.wait_state("switch.pi_01_relay", "on", |s| s["state"] == "on");
    ha.wait_state("binary_sensor.pi_01_door", "open (on)", |s| {
        s["state"] == "on"
    });
    ha.wait_state("sensor.pi_01_last_command_result", "ok", |s| {
        s["state"] == "ok"
    });

    // The lamp's brightness is its PWM duty.
    ha.call(
        "light",
        "turn_on",
        json!({ "entity_id": "light.pi_01_lamp", "brightness_pct": 40 }),
    );
    witness.wait_until("the lamp at 40 % duty", WAIT, |l| {
        l.starts_with("pinpost/pi-01/output/lamp {\"value\":true,\"duty\":0.4,")
    });
    ha.wait_state("light.pi_01_lamp", "on at 40 %", |s| {
        s["state"] == "on" && s["attributes"]["brightness"] == 102
    });

    // The pulse button: the relay (on) goes off for 300 ms, then back.
    ha.call(
        "button",
        "press",
        json!({ "entity_id": "button.pi_01_pulse_relay" }),
    );
    witness.wait_until("the pulse", WAIT, |l| {
        l.starts_with("pinpost/pi-01/output/relay {\"value\":false")
    });
    witness.wait_until("the end of the pulse", WAIT, |l| {
        l.starts_with("pinpost/pi-01/output/relay {\"value\":true")
    });

    // The Pi dies: the broker's Last Will makes every entity unavailable.
    agent.kill();
    for (id, _, _) in ENTITIES {
        ha.wait_state(id, "unavailable (Last Will)", |s| {
            s["state"] == "unavailable"
        });
    }
    // It comes back: so do they.
    let mut agent = rig.agent(form, true, "relay", state.path());
    for (id, _, _) in ENTITIES {
        ha.wait_state(id, "available again", |s| s["state"] != "unavailable");
    }
    // A restarted agent starts its outputs at their initial levels.
    ha.wait_state("light.pi_01_lamp", "off, as the agent starts it", |s| {
        s["state"] == "off"
    });
    ha.call(
        "light",
        "turn_on",
        json!({ "entity_id": "light.pi_01_lamp", "brightness_pct": 40 }),
    );
    ha.wait_state("light.pi_01_lamp", "on at 40 % again", |s| {
        s["state"] == "on" && s["attributes"]["brightness"] == 102
    });
    eprintln!(
        "[{version}] LWT and return checked after {:?}",
        started.elapsed()
    );

    // HA restarts, and meanwhile the discovery configs vanish from the
    // broker (a broker without persistence, or someone clearing them): the
    // entities come back live only because pinpost answers HA's birth.
    ha.stop();
    let configs = rig.retained_configs();
    assert!(!configs.is_empty(), "discovery configs are retained");
    for topic in &configs {
        rig.clear(topic);
    }
    assert_eq!(rig.retained_configs(), Vec::<String>::new());
    let hears = Witness::start(&rig.broker, "homeassistant/status", &[]);
    ha.start();
    hears.wait_for("homeassistant/status online", HA_START);
    agent.wait_for("answering Home Assistant's birth message", WAIT);
    for (id, _, _) in ENTITIES {
        ha.wait_state(id, "live after the HA restart", |s| {
            s["state"] != "unavailable" && s["attributes"]["restored"].is_null()
        });
    }
    // The sensor reads once an hour and only publishes changes: HA has its
    // value again only because pinpost sent its last reading after the birth.
    ha.wait_state("sensor.pi_01_room", "its last reading again", |s| {
        s["state"] == "20.0"
    });
    ha.wait_state("light.pi_01_lamp", "still on at 40 %", |s| {
        s["state"] == "on" && s["attributes"]["brightness"] == 102
    });
    assert_eq!(rig.retained_configs(), configs, "announced again, retained");
    eprintln!(
        "[{version}] HA restart checked after {:?}",
        started.elapsed()
    );

    // The lamp is taken out of the config and the relay renamed "gate":
    // after the agent's restart the lamp and the relay's entities are gone
    // from HA (no ghosts), the gate's are there, and nothing else changed.
    agent.stop();
    let agent = rig.agent(form, false, "gate", state.path());
    ha.wait_state("switch.pi_01_gate", "announced under its new name", |s| {
        s["state"] != "unavailable"
    });
    for gone in [
        "light.pi_01_lamp",
        "switch.pi_01_relay",
        "button.pi_01_pulse_relay",
    ] {
        ha.wait_gone(gone);
    }
    let mut left: Vec<String> = ENTITIES
        .iter()
        .map(|(id, _, _)| id.replace("relay", "gate"))
        .filter(|id| id != "light.pi_01_lamp")
        .collect();
    left.sort_unstable();
    assert_eq!(
        ha.template("{{ integration_entities('mqtt') | sort | join(',') }}"),
        left.join(",")
    );
    ha.wait_state("button.pi_01_pulse_gate", "there", |s| {
        s["state"] != "unavailable"
    });
    let retained = rig.retained_configs();
    if form == "entities" {
        assert!(
            !retained
                .iter()
                .any(|t| t.contains("lamp") || t.contains("relay")),
            "their configs are cleared on the broker: {retained:?}"
        );
    } else {
        assert_eq!(retained, ["homeassistant/device/pi-01/config"]);
    }
    // The device's software: what runs, then a signed release published
    // for it, fetched and checked, as the latest.
    let firmware = ha.wait_state("update.pi_01_firmware", "what runs", |s| {
        s["attributes"]["installed_version"] == env!("CARGO_PKG_VERSION")
    });
    assert_eq!(firmware["state"], "off", "up to date: {firmware}");
    rig.publish_release("99.0");
    let firmware = ha.wait_state("update.pi_01_firmware", "99.0 checked, the latest", |s| {
        s["state"] == "on"
            && s["attributes"]["latest_version"] == "99.0"
            && s["attributes"]["release_summary"]
                .as_str()
                .is_some_and(|r| r.starts_with("verified: waiting for an install command"))
    });
    assert_ne!(firmware["attributes"]["in_progress"], true, "{firmware}");
    assert_eq!(
        firmware["attributes"]["installed_version"],
        env!("CARGO_PKG_VERSION")
    );
    // install = "when-asked": the package waits for HA's Install, which
    // sends cmd/update; only then is it handed to the install helper (its
    // path unit watches ready/; no helper runs here).
    let ready = state.path().join("update/ready/pinpost_99.0_amd64.deb");
    assert!(!ready.exists(), "held until asked");
    ha.call(
        "update",
        "install",
        json!({"entity_id": "update.pi_01_firmware"}),
    );
    witness.wait_until("the install command's result", WAIT, |l| {
        l.starts_with("pinpost/pi-01/cmd/update/result ") && l.contains("\"ok\":true")
    });
    // HA reads in_progress from the JSON state since 2024.11; 2024.3 shows
    // only the summary.
    let reads_progress = !version.starts_with("2024.3");
    let firmware = ha.wait_state("update.pi_01_firmware", "99.0 installing", |s| {
        s["attributes"]["release_summary"] == "installing"
            && (s["attributes"]["in_progress"] == true || !reads_progress)
    });
    assert_eq!(
        firmware["attributes"]["latest_version"], "99.0",
        "{firmware}"
    );
    assert!(
        ready.is_file(),
        "the package is handed to the install helper"
    );
    eprintln!(
        "[{version}] removal and update entity checked; whole scenario {:?}",
        started.elapsed()
    );
    agent.stop();
    ha.stop();
}

/// The venv `scripts/homeassistant.sh` made for `version`.
fn venv(version: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/homeassistant")
        .join(format!("ha-{version}"));
    let stamp = std::fs::read_to_string(dir.join(".pinpost-installed")).unwrap_or_default();
    assert!(
        stamp.starts_with(version) && dir.join("bin/python").exists(),
        "Home Assistant {version} is not installed in {}: run scripts/homeassistant.sh (scripts/test.sh \
         runs it first). It installs HA from PyPI and needs Python 3.11 (HA 2024.3.3) and \
         Python 3.13 (HA 2025.4.4; with pyenv: pyenv install 3.13.0); it says which is missing.",
        dir.display()
    );
    dir
}

struct Rig {
    pki: Pki,
    broker: Broker,
}

impl Rig {
    /// A broker with a plain listener on loopback (HA, the witnesses) and
    /// a mutual-TLS one (the agent).
    fn new() -> Rig {
        let pki = Pki::new("ha");
        let server = pki.server(&["127.0.0.1"]);
        pki.client("pi-01");
        let listeners = format!(
            "allow_anonymous true\nlistener 1883\nlistener 8883\ncafile {}\ncertfile {}\n\
             keyfile {}\nrequire_certificate true\n",
            pki.ca.cert.display(),
            server.cert.display(),
            server.key.display()
        );
        let broker = Broker::start(&BrokerSetup {
            listener_conf: Some(listeners),
            ..BrokerSetup::default()
        });
        Rig { pki, broker }
    }

    fn agent(&self, form: &str, lamp: bool, relay: &str, state: &Path) -> Agent {
        let lamp = if lamp {
            "[[output]]\nname = \"lamp\"\npin = 18\npwm = true\n"
        } else {
            ""
        };
        let path = self.pki.path().join("pinpost.toml");
        std::fs::write(
            &path,
            format!(
                r#"{head}[outbox]
path = "{state}"

[board]
kind = "sim"
wires = [[27, 17], [23, 24]]
# A meter of 1000 impulses per kWh that sends 500 pulses at each start.
pulses = [[22, 50.0, 500]]

[[input]]
name = "door"
pin = 17
debounce = "20ms"
[input.homeassistant]
device_class = "door"

# A button pressed by the "finger" output's pulses.
[[input]]
name = "hall"
pin = 24
debounce = "10ms"
button = true

[[output]]
name = "finger"
pin = 23
[output.homeassistant]
pulse = "100ms"

[[input]]
name = "meter"
pin = 22
debounce = "0ms"
count = true
per_pulse = 0.001
unit = "kWh"
interval = "1s"

[[output]]
name = "{relay}"
pin = 27
[output.homeassistant]
pulse = "300ms"

{lamp}
[[sensor]]
name = "room"
kind = "sim"
interval = "1h"
change_threshold = 0.1
unit = "°C"
start = 20.0
step = 0.5

[update]
release_key = "{release_key}"
install = "when-asked"

[homeassistant]
enabled = true
form = "{form}"
birth_delay = "1s"
area = "Garage"
model = "Raspberry Pi 4"
"#,
                head = ConfigHead::new(self.broker.more_ports[0]),
                state = state.display(),
                release_key = self.release_dir().join("release.pub").display(),
            ),
        )
        .unwrap();
        Agent::start(&path)
    }

    /// The laptop's folder with the release key (made once).
    fn release_dir(&self) -> PathBuf {
        let dir = self.pki.path().join("release");
        if !dir.join("release.pub").exists() {
            let out = pinpost(
                &strings(&["certs", "--dir", &dir.display().to_string(), "release-key"]),
                WAIT,
            );
            assert!(out.status.success(), "{}", stderr(&out));
        }
        dir
    }

    /// A small package of `version` for this machine, signed and published
    /// for pi-01 on the plain listener.
    fn publish_release(&self, version: &str) {
        let dir = self.release_dir();
        let deb = deb(&dir, version, "amd64", 1000);
        let d = dir.display().to_string();
        let manifest = format!("{}.manifest", deb.display());
        for args in [
            vec!["release", "sign", &deb.to_str().unwrap(), "--key"],
            vec![
                "release",
                "publish",
                &manifest,
                "--devices",
                "pi-01",
                "--dir",
                &d,
            ],
        ] {
            let mut all = strings(&args);
            if all[1] == "sign" {
                all.push(dir.join("private/release.key").display().to_string());
            } else {
                all.extend(strings(&[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.broker.port.to_string(),
                ]));
            }
            let out = pinpost(&all, WAIT);
            assert!(out.status.success(), "{all:?}: {}", stderr(&out));
        }
    }

    /// The discovery configs retained on the broker, sorted.
    fn retained_configs(&self) -> Vec<String> {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &self.broker.port.to_string()])
            .args([
                "-t",
                "homeassistant/+/+/+/config",
                "-t",
                "homeassistant/+/+/config",
            ])
            .args(["--retained-only", "-v", "-W", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let out = run_limited(cmd, None, WAIT);
        let mut topics: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(t, _)| t.to_string()))
            .collect();
        topics.sort();
        topics
    }

    fn clear(&self, topic: &str) {
        let out = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.broker.port.to_string()])
            .args(["-q", "1", "-r", "-n", "-t", topic])
            .output()
            .expect("mosquitto_pub");
        assert!(out.status.success(), "mosquitto_pub: {out:?}");
    }
}

/// A running agent; killed when dropped, so a failing test leaves none.
struct Agent {
    process: Option<Background>,
}

impl Agent {
    fn start(config: &Path) -> Agent {
        let mut process = Background::start(&strings(&[
            "run",
            "--config",
            &config.display().to_string(),
        ]));
        process.wait_for("connected", WAIT);
        Agent {
            process: Some(process),
        }
    }

    /// As a power cut does: no goodbye, the broker publishes the Last Will.
    fn kill(mut self) {
        if let Some(process) = self.process.take() {
            signal("KILL", process.pid());
            let _ = process.finish(WAIT);
        }
    }

    /// As systemd does.
    fn stop(mut self) {
        if let Some(process) = self.process.take() {
            signal("TERM", process.pid());
            let (status, _) = process.finish(WAIT);
            assert!(status.success(), "{status}");
        }
    }

    fn wait_for(&mut self, needle: &str, wait: Duration) {
        if let Some(process) = &mut self.process {
            process.wait_for(needle, wait);
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &process.pid().to_string()])
                .status();
            let _ = process.finish(WAIT);
        }
    }
}

fn signal(name: &str, pid: u32) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// One Home Assistant, its config directory kept across restarts.
struct HomeAssistant {
    venv: PathBuf,
    version: String,
    dir: tempfile::TempDir,
    port: u16,
    token: String,
    child: Option<Child>,
}

impl HomeAssistant {
    fn new(venv: &Path, version: &str, mqtt_port: u16) -> HomeAssistant {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port("127.0.0.1");
        std::fs::write(
            dir.path().join("configuration.yaml"),
            format!(
                "homeassistant:\n  name: pinpost test\n  latitude: 0\n  longitude: 0\n  \
                 elevation: 0\n  unit_system: metric\n  time_zone: UTC\n  currency: EUR\n  \
                 country: DE\nhttp:\n  server_host: 127.0.0.1\n  server_port: {port}\napi:\n\
                 logger:\n  default: warning\n  logs:\n    homeassistant.components.mqtt: info\n\
                 automation:\n  - alias: hall double\n    id: hall_double\n    trigger:\n      \
                 - platform: state\n        entity_id: event.pi_01_hall\n    condition:\n      \
                 - condition: template\n        value_template: \"{{{{ trigger.to_state.attributes.event_type \
                 == 'double' }}}}\"\n    action:\n      - event: pinpost_hall_double\n"
            ),
        )
        .unwrap();
        let storage = dir.path().join(".storage");
        std::fs::create_dir(&storage).unwrap();
        let store = |key: &str, version: u32, data: Value| {
            let body = json!({ "version": version, "minor_version": 1, "key": key, "data": data });
            std::fs::write(storage.join(key), body.to_string()).unwrap();
        };
        // The MQTT broker, as the integration's config flow stores it.
        store(
            "core.config_entries",
            1,
            json!({ "entries": [{
                "entry_id": hex(16), "version": 1, "minor_version": 1, "domain": "mqtt",
                "title": "127.0.0.1", "source": "user", "unique_id": null, "disabled_by": null,
                "pref_disable_new_entities": false, "pref_disable_polling": false,
                "data": { "broker": "127.0.0.1", "port": mqtt_port, "discovery": true },
                "options": {}
            }]}),
        );
        store(
            "onboarding",
            4,
            json!({ "done": ["user", "core_config", "analytics", "integration"] }),
        );
        let (user, refresh, jwt_key) = (hex(16), hex(16), hex(64));
        store(
            "auth",
            1,
            json!({
                "users": [{
                    "id": user, "group_ids": ["system-admin"], "is_owner": true,
                    "is_active": true, "name": "pinpost test", "system_generated": false,
                    "local_only": false
                }],
                "groups": [
                    { "id": "system-admin", "name": "Administrators" },
                    { "id": "system-users", "name": "Users" },
                    { "id": "system-read-only", "name": "Read Only" }
                ],
                "credentials": [],
                "refresh_tokens": [{
                    "id": refresh, "user_id": user, "client_id": null,
                    "client_name": "pinpost test", "client_icon": null,
                    "token_type": "long_lived_access_token",
                    "created_at": "2024-01-01T00:00:00+00:00",
                    "access_token_expiration": 315360000.0, "token": hex(64),
                    "jwt_key": jwt_key, "last_used_at": null, "last_used_ip": null,
                    "credential_id": null, "version": version
                }]
            }),
        );
        // The access token is a JWT signed with the refresh token's key, as
        // HA makes one for a long-lived token (PyJWT is in HA's venv).
        let out = Command::new(venv.join("bin/python"))
            .args([
                "-c",
                "import jwt, sys, time; now = int(time.time()); \
                 print(jwt.encode({'iss': sys.argv[1], 'iat': now, 'exp': now + 315360000}, \
                 sys.argv[2], algorithm='HS256'))",
                &refresh,
                &jwt_key,
            ])
            .output()
            .expect("HA's python");
        assert!(out.status.success(), "{out:?}");
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        HomeAssistant {
            venv: venv.to_path_buf(),
            version: version.to_string(),
            dir,
            port,
            token,
            child: None,
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("hass.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("hass.log"))
            .unwrap();
        let child = Command::new(self.venv.join("bin/hass"))
            .arg("-c")
            .arg(self.dir.path())
            .arg("--skip-pip")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start hass");
        self.child = Some(child);
        let deadline = Instant::now() + HA_START;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("HA {} exited with {status}:\n{}", self.version, self.log());
            }
            if matches!(self.request("GET", "/api/", None), Ok((200, _))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "HA {}'s API did not answer within {HA_START:?}:\n{}",
            self.version,
            self.log()
        );
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal("TERM", child.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.wait();
    }

    /// One HTTP/1.0 request (the connection closes after the answer).
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| e.to_string())?;
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.token,
            body.len()
        )
        .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).map_err(|e| e.to_string())?;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n").ok_or("no header end")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("no status")?;
        Ok((status, body.to_string()))
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, None)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
    }

    fn state_or_none(&self, id: &str) -> Option<Value> {
        match self.get(&format!("/api/states/{id}")) {
            (200, body) => Some(serde_json::from_str(&body).unwrap()),
            (404, _) => None,
            (status, body) => panic!("GET state {id}: {status} {body}"),
        }
    }

    fn state(&self, id: &str) -> Value {
        self.state_or_none(id)
            .unwrap_or_else(|| panic!("HA has no {id}:\n{}", self.log()))
    }

    /// Waits until `id` exists and `done` holds; panics with what HA shows.
    fn wait_state(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.state_or_none(id);
            if let Some(s) = &last {
                if done(s) {
                    return s.clone();
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "HA {}: {id} never became {what}; last: {last:?}\nHA log:\n{}",
            self.version,
            self.log()
        );
    }

    fn wait_gone(&self, id: &str) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.state_or_none(id).is_none() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("HA {}: {id} is still there\n{}", self.version, self.log());
    }

    fn call(&self, domain: &str, service: &str, data: Value) {
        let path = format!("/api/services/{domain}/{service}");
        match self.request("POST", &path, Some(&data.to_string())) {
            Ok((200, _)) => {}
            other => panic!("POST {path}: {other:?}\n{}", self.log()),
        }
    }

    fn template(&self, template: &str) -> String {
        let body = json!({ "template": template }).to_string();
        match self.request("POST", "/api/template", Some(&body)) {
            Ok((200, text)) => text.trim().to_string(),
            other => panic!("template: {other:?}\n{}", self.log()),
        }
    }

    /// The device's entities as HA shows them, one line each, for the log.
    fn states_of_device(&self) -> String {
        self.template(
            "{% for e in device_entities(device_id('switch.pi_01_relay')) | sort %}\
             {{ e }} = {{ states(e) }}{% set a = states[e].attributes %}\
             {% if a.device_class is defined %} [{{ a.device_class }}]{% endif %}\
             {% if a.unit_of_measurement is defined %} {{ a.unit_of_measurement }}{% endif %}\
             {% if a.entity_category is defined %} ({{ a.entity_category }}){% endif %}\n{% endfor %}",
        )
    }
}

impl Drop for HomeAssistant {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", fastrand::u8(..)))
        .collect()
}

/// The fleet's broker as `pinpost certs mosquitto --homeassistant` sets it
/// up: the agent may announce itself and hear HA's birth message, and the
/// operator's certificate (which HA would use) may send that message.
#[test]
fn the_acl_from_certs_mosquitto_homeassistant_lets_an_agent_announce_itself() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let run = |args: &[&str]| {
        let mut all = strings(&["certs", "--dir", &certs.display().to_string()]);
        all.extend(strings(args));
        let out = pinpost(&all, WAIT);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    run(&["ca"]);
    run(&["broker", "--host", "127.0.0.1"]);
    run(&["device", "pi-01"]);
    run(&["device", "operator"]);
    let broker_dir = certs.join("broker").display().to_string();
    run(&["mosquitto", "--cert-dir", &broker_dir, "--homeassistant"]);
    let conf = std::fs::read_to_string(certs.join("broker/pinpost.conf"))
        .unwrap()
        .replace(
            "/etc/mosquitto/pinpost.acl",
            &certs.join("broker/pinpost.acl").display().to_string(),
        );
    let broker = Broker::start(&BrokerSetup {
        listener_conf: Some(conf),
        ..BrokerSetup::default()
    });
    let files = |id: &str| certs.join("devices").join(id);
    let operator = |port: u16| {
        strings(&[
            "-p",
            &port.to_string(),
            "--cafile",
            &files("operator").join("ca.crt").display().to_string(),
            "--cert",
            &files("operator").join("operator.crt").display().to_string(),
            "--key",
            &files("operator").join("operator.key").display().to_string(),
        ])
    };
    // The operator watches on the tools' port (one session per port).
    let witness = Witness::start(&broker, "homeassistant/#", &operator(broker.more_ports[0]));
    let config = dir.path().join("pi-01.toml");
    std::fs::write(
        &config,
        format!(
            "{head}[outbox]\npath = \"{state}\"\n[board]\nkind = \"sim\"\n\
             [[output]]\nname = \"relay\"\npin = 27\n\
             [homeassistant]\nenabled = true\nbirth_delay = \"100ms\"\n",
            head = ConfigHead::new(broker.port)
                .ca(files("pi-01").join("ca.crt"))
                .client_files(
                    files("pi-01").join("pi-01.crt"),
                    files("pi-01").join("pi-01.key")
                ),
            state = dir.path().join("state").display(),
        ),
    )
    .unwrap();
    let mut agent = Agent::start(&config);
    witness.wait_until("the agent's discovery config", WAIT, |l| {
        l.starts_with("homeassistant/switch/pi-01/output_relay/config {")
    });
    // HA's birth message, sent with the operator's certificate.
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1"])
        .args(operator(broker.port))
        .args(["-q", "1", "-t", "homeassistant/status", "-m", "online"])
        .output()
        .expect("mosquitto_pub");
    assert!(out.status.success(), "{out:?}");
    agent.wait_for("answering Home Assistant's birth message", WAIT);
    witness.wait_until("discovery again", WAIT, |l| {
        l.starts_with("homeassistant/switch/pi-01/output_relay/config {")
    });
    agent.stop();
}
