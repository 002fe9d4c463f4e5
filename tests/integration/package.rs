//! The ways pinpost gets onto a Pi: the .deb packages, deploy/install.sh run
//! on the Pi, and deploy/push.sh run on the laptop. Installs go into a
//! throwaway Debian 12 root (debootstrap minbase) unpacked for each test, so
//! users, groups, modes and the enabled unit are checked as dpkg and the
//! scripts really leave them.
//!
//! The packages come from `scripts/package.sh` and the root from
//! `scripts/throwaway-root.sh`; the test script runs both first. Missing
//! either is a failure that says what to run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// Checks only this file makes of a throwaway root.
trait RootChecks {
    fn assert_service_user(&self);
}

const WAIT: Duration = Duration::from_secs(120);

fn package(arch: &str) -> PathBuf {
    built_package(arch)
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .expect("run dpkg-deb");
    assert!(out.status.success(), "dpkg-deb {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The newest `GLIBC_2.N` a binary asks for, as (2, N).
fn newest_glibc(binary: &[u8]) -> (u32, u32) {
    let needle = b"GLIBC_2.";
    let mut newest = (2, 0);
    for at in 0..binary.len().saturating_sub(needle.len()) {
        if &binary[at..at + needle.len()] == needle {
            let digits: String = binary[at + needle.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .map(|&b| b as char)
                .collect();
            if let Ok(minor) = digits.parse() {
                newest = newest.max((2, minor));
            }
        }
    }
    newest
}

#[test]
fn the_arm_packages_hold_the_binary_the_unit_the_example_and_the_scripts() {
    // ELF e_machine: 0xB7 AArch64, 0x28 ARM.
    for (arch, machine) in [("arm64", 0xB7u8), ("armhf", 0x28)] {
        let deb = package(arch);
        let info = dpkg_deb(&["--info"], &deb);
        for field in [
            "Package: pinpost",
            &format!("Architecture: {arch}"),
            "Depends: libc6 (>= 2.34), passwd",
            "Section: net",
        ] {
            assert!(
                info.lines().any(|l| l.trim() == field),
                "{arch}: no {field:?} in\n{info}"
            );
        }
        for script in ["postinst", "postrm", "prerm"] {
            assert!(
                info.lines()
                    .any(|l| l.contains(" lines ") && l.split_whitespace().any(|w| w == script)),
                "{arch}: no {script} in\n{info}"
            );
        }
        let contents = dpkg_deb(&["--contents"], &deb);
        for (path, mode) in [
            ("./usr/bin/pinpost", "-rwxr-xr-x"),
            ("./usr/lib/systemd/system/pinpost.service", "-rw-r--r--"),
            (
                "./usr/lib/systemd/system/pinpost-update.service",
                "-rw-r--r--",
            ),
            ("./usr/lib/systemd/system/pinpost-update.path", "-rw-r--r--"),
            ("./usr/share/doc/pinpost/config.example.toml", "-rw-r--r--"),
            ("./usr/share/doc/pinpost/copyright", "-rw-r--r--"),
        ] {
            assert!(
                contents
                    .lines()
                    .any(|l| l.starts_with(mode) && l.ends_with(path)),
                "{arch}: no {path} ({mode}) in\n{contents}"
            );
        }

        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let binary = std::fs::read(dir.path().join("usr/bin/pinpost")).unwrap();
        assert_eq!(&binary[..4], b"\x7fELF");
        assert_eq!(binary[18], machine, "{arch}: the binary is for another CPU");
        // The Depends line must not promise more than the binary needs.
        assert!(
            newest_glibc(&binary) <= (2, 34),
            "{arch}: the binary needs GLIBC_2.{} but the package depends on libc6 (>= 2.34)",
            newest_glibc(&binary).1
        );
        let unit =
            std::fs::read_to_string(dir.path().join("usr/lib/systemd/system/pinpost.service"))
                .unwrap();
        assert!(unit.contains("ExecStart=/usr/bin/pinpost run"), "{unit}");
    }
}

impl RootChecks for Root {
    fn assert_service_user(&self) {
        let id = self.sh_ok("id pinpost");
        for group in ["pinpost", "gpio", "i2c", "spi"] {
            assert!(id.contains(&format!("({group})")), "{id}");
        }
        let passwd = self.sh_ok("getent passwd pinpost");
        assert!(
            passwd.trim_end().ends_with(":/usr/sbin/nologin"),
            "{passwd}"
        );
        let uid: u32 = passwd.split(':').nth(2).unwrap().parse().unwrap();
        assert!(uid < 1000, "a system user, not uid {uid}");
    }
}

fn mode(m: u32, owner: &str, group: &str) -> (u32, String, String) {
    (m, owner.to_string(), group.to_string())
}

#[test]
fn the_package_installs_upgrades_and_purges_in_a_throwaway_root() {
    let root = Root::new();
    root.copy_in(&package("amd64"), "/tmp/pinpost.deb");
    let said = root.sh_ok("dpkg -i /tmp/pinpost.deb");
    assert!(said.contains("edit /etc/pinpost/config.toml"), "{said}");

    root.assert_service_user();
    assert_eq!(root.sh_ok("pinpost --version").trim(), "pinpost 0.1.0");
    assert_eq!(root.owner("/usr/bin/pinpost"), mode(0o755, "root", "root"));
    assert_eq!(root.owner("/etc/pinpost"), mode(0o750, "root", "pinpost"));
    assert_eq!(
        root.owner("/etc/pinpost/certs"),
        mode(0o750, "root", "pinpost")
    );
    assert_eq!(
        root.owner("/etc/pinpost/config.toml"),
        mode(0o640, "root", "pinpost")
    );
    assert_eq!(
        std::fs::read_to_string(root.path("/etc/pinpost/config.toml")).unwrap(),
        std::fs::read_to_string(repo("deploy/config.example.toml")).unwrap()
    );
    let enabled = root.path("/etc/systemd/system/multi-user.target.wants/pinpost.service");
    assert!(
        std::fs::read_link(&enabled)
            .unwrap_or_else(|e| panic!("the unit is not enabled: {e}"))
            .ends_with("systemd/system/pinpost.service")
    );

    // An upgrade (reinstall) keeps the admin's config and the user.
    std::fs::write(
        root.path("/etc/pinpost/config.toml"),
        "[device]\nid = \"pi-07\"\n",
    )
    .unwrap();
    std::fs::write(root.path("/etc/pinpost/certs/pi-07.key"), "key").unwrap();
    let said = root.sh_ok("dpkg -i /tmp/pinpost.deb");
    assert!(!said.contains("edit /etc/pinpost/config.toml"), "{said}");
    assert_eq!(
        std::fs::read_to_string(root.path("/etc/pinpost/config.toml")).unwrap(),
        "[device]\nid = \"pi-07\"\n"
    );
    root.assert_service_user();

    // Purge takes the config and the unit's link, and leaves the keys.
    root.sh_ok("dpkg --purge pinpost");
    assert!(!root.path("/usr/bin/pinpost").exists());
    assert!(!root.path("/etc/pinpost/config.toml").exists());
    assert!(root.path("/etc/pinpost/certs/pi-07.key").exists());
    assert!(std::fs::symlink_metadata(&enabled).is_err());
}

/// What deploy/push.sh copies to the Pi, laid out for install.sh.
fn stage(root: &Root, binary: &Path, pki: &Pki) -> &'static str {
    let dir = "/root/pinpost-install";
    root.copy_in(binary, &format!("{dir}/pinpost"));
    for file in ["pinpost.service", "config.example.toml", "install.sh"] {
        root.copy_in(&repo(&format!("deploy/{file}")), &format!("{dir}/{file}"));
    }
    std::fs::write(
        root.path(&format!("{dir}/config.toml")),
        "[device]\nid = \"pi-01\"\n",
    )
    .unwrap();
    let device = pki.client("pi-01");
    for from in [&pki.ca.cert, &device.cert, &device.key] {
        let name = from.file_name().unwrap().to_str().unwrap();
        root.copy_in(from, &format!("{dir}/certs/{name}"));
    }
    root.copy_in(&release_pub(pki), &format!("{dir}/certs/release.pub"));
    dir
}

/// The public half of a release key made by `pinpost certs release-key`
/// beside `pki`.
fn release_pub(pki: &Pki) -> PathBuf {
    let certs = pki.path().join("release-certs");
    let public = certs.join("release.pub");
    if !public.exists() {
        let out = pinpost(
            &strings(&[
                "certs",
                "--dir",
                &certs.display().to_string(),
                "release-key",
            ]),
            WAIT,
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    public
}

fn host_binary() -> PathBuf {
    let bin = repo("target/debian-rustc/x86_64-unknown-linux-gnu/release/pinpost");
    assert!(
        bin.is_file(),
        "{} is missing: run `scripts/package.sh`",
        bin.display()
    );
    bin
}

fn assert_installed_by_hand(root: &Root) {
    root.assert_service_user();
    assert_eq!(
        root.owner("/usr/local/bin/pinpost"),
        mode(0o755, "root", "root")
    );
    assert_eq!(root.owner("/etc/pinpost"), mode(0o750, "root", "pinpost"));
    assert_eq!(
        root.owner("/etc/pinpost/config.toml"),
        mode(0o640, "root", "pinpost")
    );
    assert_eq!(
        root.owner("/etc/pinpost/certs/pi-01.key"),
        mode(0o640, "root", "pinpost")
    );
    for cert in ["ca.crt", "pi-01.crt", "release.pub"] {
        assert_eq!(
            root.owner(&format!("/etc/pinpost/certs/{cert}")),
            mode(0o644, "root", "pinpost")
        );
    }
    let unit = std::fs::read_to_string(root.path("/etc/systemd/system/pinpost.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/pinpost run --config /etc/pinpost/config.toml"),
        "{unit}"
    );
    assert!(
        std::fs::read_link(
            root.path("/etc/systemd/system/multi-user.target.wants/pinpost.service")
        )
        .is_ok(),
        "the unit is not enabled"
    );
    assert_eq!(root.sh_ok("pinpost --version").trim(), "pinpost 0.1.0");
}

#[test]
fn install_sh_sets_up_user_files_modes_and_unit_and_runs_again_safely() {
    let root = Root::new();
    let pki = Pki::new("fleet");
    let dir = stage(&root, &host_binary(), &pki);
    let said = root.sh_ok(&format!("sh {dir}/install.sh"));
    assert!(said.contains("created system user pinpost"), "{said}");
    assert!(said.contains("systemd is not running here"), "{said}");
    assert_installed_by_hand(&root);

    // Edited, still pi-01's (install.sh checks the certificates against
    // the id of the config it keeps).
    let edited = "[device]\nid = \"pi-01\" # edited\n";
    std::fs::write(root.path("/etc/pinpost/config.toml"), edited).unwrap();
    let said = root.sh_ok(&format!("sh {dir}/install.sh"));
    assert!(
        said.contains("kept the existing /etc/pinpost/config.toml"),
        "{said}"
    );
    assert!(!said.contains("created"), "{said}");
    assert_eq!(
        std::fs::read_to_string(root.path("/etc/pinpost/config.toml")).unwrap(),
        edited
    );
}

#[test]
fn install_sh_refuses_a_binary_built_for_another_cpu_and_changes_nothing() {
    let root = Root::new();
    let pki = Pki::new("fleet");
    let arm = repo("target/debian-rustc/aarch64-unknown-linux-gnu/release/pinpost");
    assert!(
        arm.is_file(),
        "{} is missing: run `scripts/cross-build.sh aarch64-unknown-linux-gnu`",
        arm.display()
    );
    let dir = stage(&root, &arm, &pki);
    let out = root.sh(&format!("sh {dir}/install.sh"));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("the pinpost binary does not run on this machine (x86_64, 64-bit userland)"),
        "{said}"
    );
    assert!(
        said.contains("Build it for the target for x86_64"),
        "{said}"
    );
    assert!(!root.path("/usr/local/bin/pinpost").exists());
    assert!(!root.path("/etc/pinpost").exists());
    assert!(!root.sh("getent passwd pinpost").status.success());
}

#[test]
fn push_sh_builds_copies_and_installs_over_ssh() {
    let root = Root::new();
    let pki = Pki::new("fleet");
    let device = pki.client("pi-01");
    let certs = pki.path().join("pi-01-certs");
    std::fs::create_dir(&certs).unwrap();
    for from in [&pki.ca.cert, &device.cert, &device.key] {
        std::fs::copy(from, certs.join(from.file_name().unwrap())).unwrap();
    }
    std::fs::copy(release_pub(&pki), certs.join("release.pub")).unwrap();
    let config = pki.path().join("pi-01.toml");
    std::fs::write(&config, "[device]\nid = \"pi-01\"\n").unwrap();

    // ssh and scp stand-ins that reach the throwaway root instead of a Pi,
    // and a sudo there that just runs the command, as passwordless sudo does.
    let bin = pki.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let chroot = format!("chroot '{}'", root.dir.path().display());
    let log = pki.path().join("ssh.log");
    let shims = [
        (
            "ssh",
            format!(
                "#!/bin/sh\n[ \"$1\" = -t ] && shift\necho \"ssh $*\" >> '{log}'\nshift\nHOME=/root exec {chroot} /bin/sh -c \"cd /root && $*\"\n",
                log = log.display()
            ),
        ),
        (
            "scp",
            format!(
                "#!/bin/sh\nfor last; do :; done\nwhile [ $# -gt 1 ]; do case \"$1\" in -*) ;; *) src=$1 ;; esac; shift; done\necho \"scp $src $last\" >> '{log}'\ncp -r \"$src\" '{root}/root/'\"${{last#*:}}\"\n",
                log = log.display(),
                root = root.dir.path().display()
            ),
        ),
    ];
    for (name, script) in shims {
        std::fs::write(bin.join(name), script).unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(bin.join(name))
            .status()
            .unwrap();
    }
    std::fs::write(root.path("/usr/local/bin/sudo"), "#!/bin/sh\nexec \"$@\"\n").unwrap();
    root.sh_ok("chmod +x /usr/local/bin/sudo");

    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut cmd = Command::new(repo("deploy/push.sh"));
    cmd.args(["pi@raspberrypi", "--config"])
        .arg(&config)
        .arg("--certs")
        .arg(&certs)
        .env("PATH", path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = run_limited(cmd, None, Duration::from_secs(900));
    let said = text(&out);
    assert!(out.status.success(), "push.sh: {said}");
    assert!(
        said.contains("pi@raspberrypi is x86_64 64: building x86_64-unknown-linux-gnu"),
        "{said}"
    );
    assert!(
        said.contains("no working Docker for cross") || said.contains("cross build"),
        "{said}"
    );
    assert_installed_by_hand(&root);
    assert_eq!(
        std::fs::read_to_string(root.path("/etc/pinpost/config.toml")).unwrap(),
        "[device]\nid = \"pi-01\"\n"
    );
    assert!(
        !root.path("/root/pinpost-install").exists(),
        "the staging folder is cleaned up"
    );
    // The GPIO, I2C, SPI and PWM rule, even in a root without udev.
    assert_eq!(
        std::fs::read_to_string(root.path("/etc/udev/rules.d/60-pinpost.rules")).unwrap(),
        std::fs::read_to_string(repo("deploy/60-pinpost.rules")).unwrap()
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.contains("sudo sh pinpost-install/install.sh"),
        "{calls}"
    );
}
