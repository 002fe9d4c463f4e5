//! Figure 5: what `pinpost run` costs a Pi at rest (memory, CPU time) beside
//! mqtt-io serving the same pins and sensors, and the size of the binaries.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::rig::*;

const IDLE: Duration = Duration::from_secs(60);

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of `pid`, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; fields start after its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// 5. Footprint of `pinpost run` with 8 inputs, 4 outputs and 4 sensors.
pub fn measure(rig: &Rig, rows: &mut Vec<Row>) {
    eprintln!("bench: footprint ({} s idle)", IDLE.as_secs());
    let mut body = String::new();
    for (i, pin) in [4, 5, 6, 12, 13, 16, 17, 22].iter().enumerate() {
        body += &format!("[[input]]\nname = \"in{i}\"\npin = {pin}\n\n");
    }
    for (i, pin) in [23, 24, 25, 27].iter().enumerate() {
        body += &format!("[[output]]\nname = \"out{i}\"\npin = {pin}\n\n");
    }
    for i in 0..4 {
        body += &format!("[[sensor]]\nname = \"s{i}\"\nkind = \"sim\"\ninterval = \"10s\"\n\n");
    }
    let path = rig.pki.path().join("footprint.toml");
    std::fs::write(&path, base_config(rig, "footprint", &body)).expect("write config");
    let mut agent = Background::start(&strings(&["run", "--config", &path.display().to_string()]));
    agent.wait_for("connected", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(5));
    let pid = agent.pid();
    let idle_rss = proc_status(pid, "VmRSS:");
    let before = cpu_ticks(pid);
    std::thread::sleep(IDLE);
    let cpu = (cpu_ticks(pid) - before) as f64 / 100.0;
    let peak = proc_status(pid, "VmHWM:");
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = agent.log(Duration::from_secs(10));
    rows.push(row(
        "pinpost run, 8 inputs + 4 outputs + 4 sensors: idle RSS / peak RSS",
        format!("{idle_rss} KiB / {peak} KiB"),
        "(mqtt-io: not measured yet)",
        None,
    ));
    rows.push(row(
        &format!("CPU time over {} s idle", IDLE.as_secs()),
        format!("{cpu:.2} s ({:.3}%)", 100.0 * cpu / IDLE.as_secs_f64()),
        "-",
        None,
    ));
    for target in [
        "x86_64-unknown-linux-gnu",
        "aarch64-unknown-linux-gnu",
        "armv7-unknown-linux-gnueabihf",
    ] {
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
        let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
        rows.push(row(
            &format!("stripped release binary, {target} (no demo)"),
            format!("{size} B ({:.2} MiB)", size as f64 / 1048576.0),
            "-",
            None,
        ));
    }
}
