//! Sensors in `pinpost run`, against a real Mosquitto with mutual TLS:
//! readings arrive on schedule with increasing `seq`, a sensor that cannot
//! be read reports once and does not disturb the others, and `pinpost
//! sensors` prints the same values as a table.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const W1: &str = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";

/// A fake sysfs: an IIO temperature file and one DS18B20.
fn fake_sysfs(dir: &Path) {
    std::fs::write(dir.join("in_temp_input"), "21500\n").unwrap();
    let chip = dir.join("w1").join("28-0316a2795aff");
    std::fs::create_dir_all(&chip).unwrap();
    std::fs::write(chip.join("w1_slave"), W1).unwrap();
}

fn config(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("pinpost.toml");
    std::fs::write(
        &path,
        format!(
            r#"{head}[board]
kind = "sim"

[[sensor]]
name = "volts"
kind = "sim"
interval = "100ms"
unit = "V"
start = 3.0
step = 0.5

[[sensor]]
name = "air"
kind = "file"
path = "in_temp_input"
scale = 0.001
unit = "°C"
interval = "200ms"

[[sensor]]
name = "tank"
kind = "ds18b20"
path = "w1"
interval = "300ms"

[[sensor]]
name = "broken"
kind = "file"
path = "no-such-device/in_temp_input"
interval = "100ms"
retries = 1
"#,
            head = ConfigHead::new(port)
        ),
    )
    .unwrap();
    path
}

/// Messages per topic: (seq, payload JSON) in arrival order.
fn by_topic(lines: &[String]) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for line in lines {
        let Some((topic, payload)) = line.split_once(' ') else {
            continue;
        };
        let v = serde_json::from_str(payload)
            .unwrap_or_else(|e| panic!("not JSON on {topic}: {payload:?}: {e}"));
        out.entry(topic.to_string()).or_default().push(v);
    }
    out
}

fn unix_millis(ts: &serde_json::Value) -> f64 {
    // "2026-11-23T08:58:12.345Z": seconds of the day are enough here.
    let t = ts.as_str().expect("ts");
    let clock = &t[11..t.len() - 1];
    let parts: Vec<f64> = clock.split(':').map(|p| p.parse().unwrap()).collect();
    (parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]) * 1000.0
}

#[test]
fn readings_arrive_on_schedule_and_a_broken_sensor_disturbs_nothing() {
    let pki = Pki::new("main");
    let server = pki.server(&["127.0.0.1"]);
    pki.client("pi-01");
    let operator = pki.client("operator");
    let broker = Broker::mutual(&pki, server);
    fake_sysfs(pki.path());
    let config = config(pki.path(), broker.port);
    let witness = Witness::start(
        &broker,
        "pinpost/pi-01/sensor/#",
        &tls_args(&pki.ca.cert, Some(&operator)),
    );
    let mut agent = Background::start(&strings(&[
        "run",
        "--config",
        &config.display().to_string(),
    ]));
    let mut lines = witness.messages(Duration::from_secs(3));
    // The air temperature changes while pinpost runs.
    std::fs::write(pki.path().join("in_temp_input"), "22750\n").unwrap();
    lines.extend(witness.messages(Duration::from_secs(2)));
    let _ = Command::new("kill")
        .args(["-TERM", &agent.pid().to_string()])
        .status();
    let log = agent.log(Duration::from_secs(10));
    let topics = by_topic(&lines);

    let volts = &topics["pinpost/pi-01/sensor/volts"];
    let seqs: Vec<u64> = volts.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seq increases by one: {seqs:?}"
    );
    assert_eq!(volts[0]["value"], 3.0);
    assert_eq!(volts[1]["value"], 3.5);
    assert_eq!(volts[0]["unit"], "V");
    let span = unix_millis(&volts[volts.len() - 1]["ts"]) - unix_millis(&volts[0]["ts"]);
    let every = span / (volts.len() - 1) as f64;
    println!(
        "volts: {} readings, one every {every:.1} ms (configured 100 ms)",
        volts.len()
    );
    assert!((90.0..=115.0).contains(&every), "readings every {every} ms");

    let air = &topics["pinpost/pi-01/sensor/air"];
    let values: Vec<f64> = air.iter().map(|v| v["value"].as_f64().unwrap()).collect();
    assert!((values[0] - 21.5).abs() < 1e-9, "{values:?}");
    assert!(
        values.iter().any(|v| (v - 22.75).abs() < 1e-9),
        "the new value arrives: {values:?}"
    );
    assert_eq!(air[0]["unit"], "°C");

    // Every DS18B20 found, each under its own id.
    let tank = &topics["pinpost/pi-01/sensor/tank/28-0316a2795aff"];
    assert_eq!(tank[0]["value"], 23.125);

    // ~50 failed reads, one report: the error state, not a flood.
    let broken = &topics["pinpost/pi-01/sensor/broken"];
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(broken[0]["value"].is_null());
    let error = broken[0]["error"].as_str().unwrap();
    assert!(error.contains("does not exist"), "{error}");
    assert_eq!(
        log.matches("cannot read").count(),
        1,
        "logged once per change:\n{log}"
    );
}

#[test]
fn pinpost_sensors_prints_a_table_and_fails_for_a_broken_one() {
    let pki = Pki::new("main");
    pki.client("pi-01");
    fake_sysfs(pki.path());
    let config = config(pki.path(), 1);
    let out = pinpost(
        &strings(&["sensors", "--config", &config.display().to_string()]),
        Duration::from_secs(15),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}\n{}", stderr(&out));
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(row("volts"), "volts - 3 V");
    assert_eq!(row("air"), "air - 21.500 °C");
    assert_eq!(row("tank"), "tank 28-0316a2795aff 23.125 °C");
    assert!(
        row("broken").contains("✗") && row("broken").contains("does not exist"),
        "{table}"
    );
    assert!(stderr(&out).contains("1 of 4 sensor(s) could not be read"));
}

#[test]
fn pinpost_sensors_scan_lists_what_is_wired_and_prints_sections_that_pinpost_takes() {
    let dir = tempfile::tempdir().unwrap();
    fake_sysfs(dir.path());
    let dev = dir.path().join("dev");
    std::fs::create_dir(&dev).unwrap();
    let w1 = dir.path().join("w1");
    let scan = |w1: &Path| {
        pinpost(
            &strings(&[
                "sensors",
                "--scan",
                "--w1-dir",
                &w1.display().to_string(),
                "--dev-dir",
                &dev.display().to_string(),
            ]),
            Duration::from_secs(15),
        )
    };
    let out = scan(&w1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("28-0316a2795aff  DS18B20 thermometer, 23.125 °C"),
        "{text}"
    );
    assert!(text.contains("no bus (/dev/i2c-*): enable I2C"), "{text}");
    // What it prints to paste is a config `pinpost check` takes.
    let pasted = text.split("# Paste into the config").nth(1).unwrap();
    let pasted = pasted.split_once('\n').unwrap().1;
    let config = dir.path().join("scanned.toml");
    std::fs::write(
        &config,
        format!("[device]\nid = \"pi-01\"\n[board]\nkind = \"sim\"\n{pasted}"),
    )
    .unwrap();
    let out = pinpost(
        &strings(&["sensors", "--config", &config.display().to_string()]),
        Duration::from_secs(15),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    // Taken as a config (exit 3 would be a refusal); read from the real
    // sysfs it then has no chip, which is this machine's business.
    assert_ne!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(table.contains("t5aff"), "{table}\n{}", stderr(&out));
    // Nothing wired: exit 1, in words.
    let out = scan(&dir.path().join("absent"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1-Wire is off"));
    assert!(stderr(&out).contains("nothing pinpost reads was found"));
}
