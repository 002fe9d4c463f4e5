//! Figure 5: what `pinpost run` costs a Pi at rest (memory, CPU time) beside
//! mqtt-io serving the same pins and sensors, and the size of the binaries.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::process::{cpu_ticks, dir_bytes, memory};
use crate::rig::*;

const IDLE: Duration = Duration::from_secs(60);
const INPUTS: [u8; 8] = [4, 5, 6, 12, 13, 16, 17, 22];
const OUTPUTS: [u8; 4] = [23, 24, 25, 27];
const SENSORS: usize = 4;

/// Where `scripts/bench.sh` installs mqtt-io (a Python venv).
const MQTT_IO: &str = "target/bench/mqtt-io";

/// Figure 5: `pinpost run` and mqtt-io side by side, each with 8 inputs,
/// 4 outputs and 4 sensors, idle for the same 60 s on the same broker.
pub fn measure(rig: &Rig, rows: &mut Vec<Row>) {
    eprintln!(
        "bench: footprint ({} s idle, beside mqtt-io)",
        IDLE.as_secs()
    );
    let python = Path::new(MQTT_IO).join("bin/python");
    assert!(
        python.exists(),
        "mqtt-io is not installed in {MQTT_IO}: run scripts/bench.sh, which installs it"
    );
    let mut agent = Background::start(&strings(&[
        "run",
        "--config",
        &pinpost_config(rig).display().to_string(),
    ]));
    let mut theirs = Command::new(&python);
    theirs.args(["-m", "mqtt_io"]).arg(mqtt_io_config(rig));
    let mut reference = Background::spawn(theirs);
    agent.wait_for("connected", Duration::from_secs(20));
    reference.wait_for("Connected to MQTT", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(5));
    let ours = Usage::start(agent.pid());
    let other = Usage::start(reference.pid());
    std::thread::sleep(IDLE);
    let ours = ours.end();
    let other = other.end();
    for process in [&mut agent, &mut reference] {
        let _ = Command::new("kill")
            .args(["-TERM", &process.pid().to_string()])
            .status();
        let _ = process.log(Duration::from_secs(10));
    }
    rows.push(row(
        "8 inputs + 4 outputs + 4 sensors, connected: RSS 5 s after connecting / after 60 s idle / peak",
        format!(
            "{} KiB / {} KiB / {} KiB",
            ours.idle_rss, ours.rested_rss, ours.peak_rss
        ),
        &format!(
            "mqtt-io 2.7: {} KiB / {} KiB / {} KiB",
            other.idle_rss, other.rested_rss, other.peak_rss
        ),
        // The later figure: what an agent at rest keeps, after its periodic
        // work (sensor readings, pings) has run a few times.
        Some(ours.rested_rss as f64 / other.rested_rss.max(1) as f64),
    ));
    let share = |cpu: f64| 100.0 * cpu / IDLE.as_secs_f64();
    rows.push(row(
        &format!("CPU time over {} s idle (same run)", IDLE.as_secs()),
        // The kernel counts CPU time in 10 ms ticks.
        if ours.cpu > 0.0 {
            format!("{:.2} s ({:.3}%)", ours.cpu, share(ours.cpu))
        } else {
            "under 0.01 s (no 10 ms tick counted)".into()
        },
        &format!("mqtt-io: {:.2} s ({:.3}%)", other.cpu, share(other.cpu)),
        (ours.cpu > 0.0 && other.cpu > 0.0).then(|| ours.cpu / other.cpu),
    ));
    // Python's packages are the nearest thing mqtt-io has to a binary; the
    // interpreter itself comes on top.
    let installed = dir_bytes(Path::new(MQTT_IO).join("lib").as_path());
    // This machine's binary is the one this run built (release settings,
    // as `cargo bench` builds it): a separate build of it would only add
    // minutes. The Pi binaries are Debian rustc 1.85 builds, as packaged.
    let host = Path::new(PINPOST).to_path_buf();
    let here = format!("{} (this run's build)", std::env::consts::ARCH);
    let pis = ["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf"];
    let binaries = std::iter::once((here, host, true)).chain(pis.iter().map(|target| {
        let bin = Path::new("target/debian-rustc")
            .join(target)
            .join("release/pinpost");
        if !bin.exists() {
            let status = Command::new("scripts/cross-build.sh").arg(target).status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "scripts/cross-build.sh {target} failed; run it to see why"
            );
        }
        (target.to_string(), bin, false)
    }));
    let demo = if cfg!(feature = "demo") {
        "with the demo"
    } else {
        "no demo"
    };
    for (what, bin, native) in binaries {
        let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
        rows.push(row(
            &format!("stripped release binary, {what}, {demo}"),
            format!("{size} B ({:.2} MiB)", size as f64 / 1048576.0),
            &if native {
                format!(
                    "mqtt-io's packages: {:.2} MiB + Python",
                    installed as f64 / 1048576.0
                )
            } else {
                "-".into()
            },
            native.then(|| size as f64 / installed.max(1) as f64),
        ));
    }
}

/// RSS and CPU time of one process over the idle period.
struct Usage {
    pid: u32,
    idle_rss: u64,
    ticks: u64,
}

struct Used {
    idle_rss: u64,
    /// At the end of the idle period.
    rested_rss: u64,
    peak_rss: u64,
    cpu: f64,
}

impl Usage {
    fn start(pid: u32) -> Usage {
        Usage {
            pid,
            idle_rss: memory(pid).0,
            ticks: cpu_ticks(pid),
        }
    }

    fn end(self) -> Used {
        let (rested_rss, peak_rss) = memory(self.pid);
        Used {
            idle_rss: self.idle_rss,
            rested_rss,
            peak_rss,
            cpu: cpu_ticks(self.pid).saturating_sub(self.ticks) as f64 / 100.0,
        }
    }
}

fn pinpost_config(rig: &Rig) -> PathBuf {
    let mut body = String::new();
    for (i, pin) in INPUTS.iter().enumerate() {
        body += &format!("[[input]]\nname = \"in{i}\"\npin = {pin}\n\n");
    }
    for (i, pin) in OUTPUTS.iter().enumerate() {
        body += &format!("[[output]]\nname = \"out{i}\"\npin = {pin}\n\n");
    }
    for i in 0..SENSORS {
        body += &format!("[[sensor]]\nname = \"s{i}\"\nkind = \"sim\"\ninterval = \"10s\"\n\n");
    }
    let path = rig.pki.path().join("footprint.toml");
    std::fs::write(&path, base_config(rig, "footprint", &body)).expect("write config");
    path
}

/// The same pins and sensors for mqtt-io, on its mock GPIO and sensor
/// modules, with the inputs on interrupts so that neither side polls.
fn mqtt_io_config(rig: &Rig) -> PathBuf {
    let mut text = format!(
        "mqtt:\n  host: 127.0.0.1\n  port: {port}\n  client_id: mqtt-io-footprint\n  \
         topic_prefix: mqtt-io/footprint\n  tls:\n    enabled: yes\n    ca_certs: {ca}\n    \
         certfile: {cert}\n    keyfile: {key}\n\
         gpio_modules:\n  - name: board\n    module: mock\n\
         sensor_modules:\n  - name: sim\n    module: mock\n\
         digital_inputs:\n",
        port = rig.broker.port,
        ca = rig.pki.ca.cert.display(),
        cert = rig.device.cert.display(),
        key = rig.device.key.display(),
    );
    for (i, pin) in INPUTS.iter().enumerate() {
        text +=
            &format!("  - name: in{i}\n    module: board\n    pin: {pin}\n    interrupt: both\n");
    }
    text += "digital_outputs:\n";
    for (i, pin) in OUTPUTS.iter().enumerate() {
        text += &format!("  - name: out{i}\n    module: board\n    pin: {pin}\n");
    }
    text += "sensor_inputs:\n";
    for i in 0..SENSORS {
        text += &format!("  - name: s{i}\n    module: sim\n    interval: 10\n");
    }
    let path = rig.pki.path().join("mqtt-io.yml");
    std::fs::write(&path, text).expect("write mqtt-io config");
    path
}
