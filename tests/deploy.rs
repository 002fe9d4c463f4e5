//! The systemd unit in deploy/ is valid and asks for what the agent needs.

mod common;

use std::process::Command;

use common::*;

const UNIT: &str = include_str!("../deploy/pinpost.service");

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    require_tool("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    // verify insists that ExecStart exists: point it at the binary under test.
    let unit = dir.path().join("pinpost.service");
    std::fs::write(&unit, UNIT.replace("/usr/bin/pinpost", PINPOST)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_unit_runs_unprivileged_with_gpio_access_and_hardening() {
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "User=pinpost",
        "SupplementaryGroups=gpio i2c spi",
        "StateDirectory=pinpost",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "DeviceAllow=/dev/gpiomem rw",
        "ExecStart=/usr/bin/pinpost run --config /etc/pinpost/config.toml",
    ] {
        assert!(UNIT.lines().any(|l| l == line), "missing {line:?}");
    }
}
