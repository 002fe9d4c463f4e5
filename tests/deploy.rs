//! The systemd unit in deploy/ is valid and asks for what the agent needs.

mod common;

use std::path::{Path, PathBuf};
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

const PUSH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/push.sh");
const INSTALL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/install.sh");

/// A fleet made by `pinpost certs` in a temp dir: CA, broker, pi-01, pi-02.
fn fleet() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    for args in [
        &["ca"][..],
        &["broker", "--host", "127.0.0.1"],
        &["device", "pi-01"],
        &["device", "pi-02"],
    ] {
        let mut all = strings(&["certs", "--dir", &d]);
        all.extend(strings(args));
        let out = pinpost(&all, std::time::Duration::from_secs(60));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    dir
}

/// A copy of pi-01's folder (`<name>/pi-01`) with `extra` files added
/// (name, copied from).
fn folder_with(fleet: &Path, name: &str, extra: &[(&str, &str)]) -> PathBuf {
    let dir = fleet.join(name).join("pi-01");
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["ca.crt", "pi-01.crt", "pi-01.key"] {
        std::fs::copy(fleet.join("devices/pi-01").join(file), dir.join(file)).unwrap();
    }
    for (to, from) in extra {
        std::fs::copy(fleet.join(from), dir.join(to)).unwrap();
    }
    dir
}

/// Stand-ins, first on PATH, for every command that would build, reach a Pi
/// or change this machine: each only notes that it was called, and fails.
fn stand_ins(dir: &Path) -> (String, PathBuf) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("calls.log");
    for tool in [
        "ssh",
        "scp",
        "cross",
        "cargo",
        "groupadd",
        "useradd",
        "usermod",
        "install",
        "systemctl",
    ] {
        let path = bin.join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> '{}'\nexit 1\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    // Docker "answers", so push.sh would build with the cross stand-in.
    let docker = bin.join("docker");
    std::fs::write(&docker, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    (path, log)
}

/// A folder's name, the files added to pi-01's, and the words of the refusal.
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

fn push(fleet: &Path, certs: &Path, config: Option<&Path>) -> (Option<i32>, String, String) {
    let (path, log) = stand_ins(fleet);
    let _ = std::fs::remove_file(&log);
    let mut cmd = Command::new(PUSH);
    cmd.args(["pi@raspberrypi", "x86_64-unknown-linux-gnu", "--certs"])
        .arg(certs)
        .env("PATH", path);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    let out = cmd.output().unwrap();
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    (out.status.code(), stderr(&out), calls)
}

#[test]
fn push_sh_refuses_any_key_but_the_devices_own_before_building_or_copying() {
    let fleet = fleet();
    let f = fleet.path();
    let cases: [Case; 5] = [
        (
            "with-ca-key",
            &[("ca.key", "private/ca.key")],
            "it holds ca.key, the CA's private key: whoever holds the Pi could make \
             certificates for every device and the operator",
        ),
        (
            "renamed-ca-key",
            &[("backup.key", "private/ca.key")],
            "backup.key is the private key of the CA certificate ca.crt",
        ),
        (
            "other-device",
            &[
                ("pi-02.key", "devices/pi-02/pi-02.key"),
                ("pi-02.crt", "devices/pi-02/pi-02.crt"),
            ],
            "pi-02.key is the private key of pi-02 (pi-02.crt), not of the device pi-01",
        ),
        (
            "broker-key",
            &[("broker.key", "broker/broker.key")],
            "broker.key is the private key of no certificate in it",
        ),
        (
            "stray-key",
            &[("spare.pem", "devices/pi-02/pi-02.key")],
            "spare.pem is the private key of no certificate in it",
        ),
    ];
    for (name, extra, words) in cases {
        let folder = folder_with(f, name, extra);
        let (code, said, calls) = push(f, &folder, None);
        assert_eq!(code, Some(1), "{name}: {said}");
        assert!(
            said.contains("nothing was built or copied"),
            "{name}: {said}"
        );
        assert!(said.contains(words), "{name}: {said}");
        assert!(
            said.contains("give the device's own folder, certs/devices/pi-01"),
            "the folder's name is the device id without a config: {said}"
        );
        assert_eq!(calls, "", "{name}: nothing may run after a refusal");
    }

    // pi-01's own folder, for a config whose device is pi-02.
    let config = f.join("pi-02.toml");
    std::fs::write(&config, "[device]\nid = \"pi-02\"  # the other one\n").unwrap();
    let (code, said, calls) = push(f, &f.join("devices/pi-01"), Some(&config));
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("pi-01.key is the private key of pi-01 (pi-01.crt), not of the device pi-02"),
        "{said}"
    );
    assert_eq!(calls, "");

    // The whole tree is not a device's folder.
    let (code, said, _) = push(f, f, None);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("which is not a plain file"), "{said}");

    // pi-01's own folder goes on to the build.
    let config = f.join("pi-01.toml");
    std::fs::write(&config, "[device]\nid = 'pi-01'\n").unwrap();
    let (_, said, calls) = push(f, &f.join("devices/pi-01"), Some(&config));
    assert!(!said.contains("refusing"), "{said}");
    assert!(calls.starts_with("cross build"), "{calls}\n{said}");
}

#[test]
fn install_sh_refuses_another_key_before_changing_anything() {
    let fleet = fleet();
    let f = fleet.path();
    let (path, log) = stand_ins(f);
    for (name, extra, words) in [
        (
            "with-ca-key",
            ("ca.key", "private/ca.key"),
            "ca.key is the private key of the CA",
        ),
        (
            "other-key",
            ("pi-02.key", "devices/pi-02/pi-02.key"),
            "pi-02.key is a private key of no certificate here",
        ),
    ] {
        let stage = f.join(format!("stage-{name}"));
        std::fs::create_dir(&stage).unwrap();
        std::fs::copy(PINPOST, stage.join("pinpost")).unwrap();
        std::fs::write(stage.join("pinpost.service"), UNIT).unwrap();
        std::fs::write(stage.join("config.toml"), "[device]\nid = \"pi-01\"\n").unwrap();
        let certs = folder_with(f, name, &[extra]);
        std::fs::rename(&certs, stage.join("certs")).unwrap();
        // install.sh works on the folder it is in.
        std::fs::copy(INSTALL, stage.join("install.sh")).unwrap();
        let out = Command::new("sh")
            .arg(stage.join("install.sh"))
            .env("PATH", &path)
            .output()
            .unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(
            !said.contains("run me as root"),
            "install.sh needs root to reach its checks; the tests run as root: {said}"
        );
        assert_eq!(out.status.code(), Some(1), "{name}: {said}");
        assert!(said.contains(words), "{name}: {said}");
        assert!(said.contains("refusing to install"), "{name}: {said}");
        assert!(said.contains("(nothing was changed)"), "{name}: {said}");
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(calls, "", "{name}: nothing may change after a refusal");
    }
}
