//! The systemd unit in deploy/ is valid and asks for what the agent needs.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const UNIT: &str = include_str!("../../deploy/pinpost.service");

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
        // As the package makes /etc/pinpost; systemd warns on a mismatch.
        "ConfigurationDirectoryMode=0750",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "DeviceAllow=/dev/gpiomem rw",
        "ExecStart=/usr/bin/pinpost run --config /etc/pinpost/config.toml",
    ] {
        assert!(UNIT.lines().any(|l| l == line), "missing {line:?}");
    }
}

/// Every directive the unit adds on top of the basics, as `systemd-analyze
/// security` would otherwise flag it and GPIO does not need its absence.
const HARDENING: &[&str] = &[
    "UMask=0077",
    "ProtectProc=invisible",
    "PrivateMounts=yes",
    "RemoveIPC=yes",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged @resources",
    "SystemCallErrorNumber=EPERM",
    "TimeoutStartSec=60s",
    "ProtectKernelTunables=yes",
    "ReadWritePaths=-/sys/class/pwm/pwmchip0 -/sys/class/pwm/pwmchip2",
];

/// The exposure `systemd-analyze security` gave the unit once the
/// directives above were added (2.1 before); it may only go down.
const MAX_EXPOSURE: f64 = 1.5;

#[test]
fn the_unit_has_the_hardening_gpio_allows_and_scores_at_most_1_5() {
    for line in HARDENING {
        assert!(UNIT.lines().any(|l| l == *line), "missing {line:?}");
    }
    // Writable /sys/class/pwm alone does not reach the chips: its entries
    // are symlinks into /sys/devices, which stays read-only.
    assert!(
        !UNIT.lines().any(|l| l == "ReadWritePaths=-/sys/class/pwm"),
        "a writable /sys/class/pwm does not make PWM work"
    );
    require_tool("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("pinpost.service");
    std::fs::write(&unit, UNIT).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = said
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for pinpost.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{said}"));
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} > {MAX_EXPOSURE}:\n{said}"
    );
    for fixed in [
        "UMask=",
        "ProtectProc=",
        "PrivateMounts=",
        "RemoveIPC=",
        "SystemCallFilter=~@privileged",
        "SystemCallFilter=~@resources",
    ] {
        let flagged = said
            .lines()
            .any(|l| l.starts_with('✗') && l.contains(fixed));
        assert!(!flagged, "{fixed} still flagged:\n{said}");
    }
}

/// systemd's syscall groups, each expanded to plain system call names.
fn syscall_groups() -> HashMap<String, BTreeSet<String>> {
    require_tool("systemd-analyze", "systemd");
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager"])
        .output()
        .unwrap();
    let mut raw: HashMap<String, Vec<String>> = HashMap::new();
    let mut current = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let item = line.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        if line.starts_with('@') {
            current = Some(item.to_string());
            raw.entry(item.to_string()).or_default();
        } else if let Some(group) = &current {
            raw.entry(group.clone()).or_default().push(item.to_string());
        }
    }
    fn expand(name: &str, raw: &HashMap<String, Vec<String>>, into: &mut BTreeSet<String>) {
        for item in raw.get(name).into_iter().flatten() {
            if item.starts_with('@') {
                expand(item, raw, into);
            } else {
                into.insert(item.clone());
            }
        }
    }
    raw.keys()
        .map(|group| {
            let mut calls = BTreeSet::new();
            expand(group, &raw, &mut calls);
            (group.clone(), calls)
        })
        .collect()
}

/// The system calls named in `strace -c`'s summary table.
fn strace_summary(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('%') && !l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .filter(|name| *name != "total")
        .map(str::to_string)
        .collect()
}

/// The sim agent, as the unit runs it, connected over mutual TLS, taking a
/// command, publishing readings and going safe on SIGTERM, under strace:
/// every system call it makes must be one the unit's filter allows, none
/// from @privileged or @resources. (No container here runs systemd to
/// apply the filter itself; the groups are systemd's own, read from
/// `systemd-analyze syscall-filter`. rppal's GPIO calls on a Pi are ioctl,
/// mmap, open, read, write and epoll, all in @system-service; its software
/// PWM thread's sched_setscheduler(SCHED_RR) is in @resources, but it ignores
/// the refusal, which an unprivileged user under RestrictRealtime=yes got
/// already, hence SystemCallErrorNumber=EPERM rather than a kill.)
#[test]
fn the_agent_makes_no_system_call_the_unit_filters_out() {
    require_tool("strace", "strace");
    let groups = syscall_groups();
    let group = |name: &str| {
        groups
            .get(name)
            .unwrap_or_else(|| panic!("systemd knows no {name}"))
            .clone()
    };
    let removed: BTreeSet<String> = group("@privileged")
        .union(&group("@resources"))
        .cloned()
        .collect();
    assert!(removed.contains("setrlimit") && removed.contains("chown"));
    let allowed: BTreeSet<String> = group("@system-service")
        .difference(&removed)
        .cloned()
        .collect();

    let pki = Pki::new("main");
    let broker = Broker::mutual(&pki, pki.server(&["127.0.0.1"]));
    pki.client("pi-01");
    let operator = pki.client("operator");
    let config = pki.path().join("pinpost.toml");
    std::fs::write(
        &config,
        format!(
            r#"{head}[board]
kind = "sim"
wires = [[27, 17]]

[[input]]
name = "button"
pin = 17

[[output]]
name = "relay"
pin = 27
safe_state = "off"

[[sensor]]
name = "volts"
kind = "sim"
interval = "100ms"

[[sensor]]
name = "health"
kind = "system"
interval = "100ms"
"#,
            head = ConfigHead::new(broker.port)
        ),
    )
    .unwrap();
    let mut operator_args = strings(&["-h", "127.0.0.1", "-p", &broker.port.to_string()]);
    operator_args.extend(tls_args(&pki.ca.cert, Some(&operator)));
    let witness = Witness::start(&broker, "pinpost/pi-01/#", &operator_args);

    let summary = pki.path().join("strace.txt");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-c", "-o"])
        .arg(&summary)
        .args([PINPOST, "run", "--config"])
        .arg(&config);
    let agent = Background::spawn(cmd);
    let wait = Duration::from_secs(30);
    witness.wait_until("online", wait, |l| l == "pinpost/pi-01/status online");
    witness.wait_until("a reading", wait, |l| {
        l.starts_with("pinpost/pi-01/sensor/volts ")
    });
    // /proc and statvfs, as the system sensor reads them.
    witness.wait_until("the system's health", wait, |l| {
        l.starts_with("pinpost/pi-01/sensor/health/disk_used ")
    });
    let out = Command::new("mosquitto_pub")
        .args(&operator_args)
        .args(["-q", "1", "-t", "pinpost/pi-01/cmd/relay"])
        .args(["-m", r#"{"action":"on","id":"c1"}"#])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    witness.wait_until("the command's result", wait, |l| {
        l.starts_with("pinpost/pi-01/cmd/relay/result ") && l.contains("\"ok\":true")
    });
    witness.wait_until("the wired input's edge", wait, |l| {
        l.starts_with("pinpost/pi-01/input/button ")
    });

    // SIGTERM to pinpost itself (strace's child), as systemd sends it.
    let children = format!("/proc/{0}/task/{0}/children", agent.pid());
    let pid = std::fs::read_to_string(&children).unwrap();
    let pid = pid.split_whitespace().next().expect("pinpost under strace");
    let status = Command::new("kill").args(["-TERM", pid]).status().unwrap();
    assert!(status.success());
    witness.wait_until("offline", wait, |l| l == "pinpost/pi-01/status offline");
    let (status, _) = agent.finish(wait);
    assert!(status.success(), "pinpost under strace: {status}");

    let calls = strace_summary(&std::fs::read_to_string(&summary).unwrap());
    assert!(
        calls.contains("ioctl") && calls.contains("connect") && calls.contains("fsync"),
        "the run did not exercise what it should: {calls:?}"
    );
    let forbidden: Vec<_> = calls.intersection(&removed).collect();
    assert!(
        forbidden.is_empty(),
        "pinpost calls {forbidden:?}, which the unit's SystemCallFilter=~@privileged @resources \
         denies (EPERM)"
    );
    let outside: Vec<_> = calls.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "pinpost calls {outside:?}, outside @system-service"
    );
}

const PUSH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/push.sh");
const INSTALL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/install.sh");

/// A fleet made by `pinpost certs` in a temp dir: CA, broker, pi-01, pi-02,
/// operator, and the forms a key was seen hiding in ([`hide_keys`]).
fn fleet() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    for args in [
        &["ca"][..],
        &["broker", "--host", "127.0.0.1"],
        &["device", "pi-01"],
        &["device", "pi-02"],
        &["device", "operator"],
        // Its public half goes into each device folder.
        &["release-key"],
    ] {
        let mut all = strings(&["certs", "--dir", &d]);
        all.extend(strings(args));
        let out = pinpost(&all, std::time::Duration::from_secs(60));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    hide_keys(dir.path());
    dir
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

/// Keys in the forms that got past the first key checks, in `hidden/`:
/// pi-01's key with the CA's appended, the CA key in DER, the operator's
/// key and certificate as PKCS#12, a 71 KB note ending in the CA key, the
/// operator's key encrypted (PKCS#8), and pi-01's own key encrypted.
fn hide_keys(fleet: &Path) {
    let hidden = fleet.join("hidden");
    std::fs::create_dir(&hidden).unwrap();
    let path = |p: &str| fleet.join(p).display().to_string();
    let ca_key = std::fs::read_to_string(fleet.join("private/ca.key")).unwrap();
    let own = std::fs::read_to_string(fleet.join("devices/pi-01/pi-01.key")).unwrap();
    std::fs::write(hidden.join("appended.key"), format!("{own}{ca_key}")).unwrap();
    openssl(&[
        "pkey",
        "-in",
        &path("private/ca.key"),
        "-outform",
        "DER",
        "-out",
        &path("hidden/ca.der"),
    ]);
    openssl(&[
        "pkcs12",
        "-export",
        "-inkey",
        &path("devices/operator/operator.key"),
        "-in",
        &path("devices/operator/operator.crt"),
        "-passout",
        "pass:secret",
        "-out",
        &path("hidden/operator.p12"),
    ]);
    let notes = "meeting notes, nothing to see here\n".repeat(71 * 1024 / 35 + 1);
    std::fs::write(hidden.join("notes.txt"), format!("{notes}{ca_key}")).unwrap();
    assert!(std::fs::metadata(hidden.join("notes.txt")).unwrap().len() > 71 * 1024);
    for (from, to) in [
        (
            "devices/operator/operator.key",
            "hidden/operator-encrypted.key",
        ),
        ("devices/pi-01/pi-01.key", "hidden/pi-01-encrypted.key"),
    ] {
        openssl(&[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            &path(from),
            "-passout",
            "pass:secret",
            "-out",
            &path(to),
        ]);
    }
}

/// A bypass once seen: folder name, files added to or replacing pi-01's
/// (name, copied from), words of push.sh's refusal, words of `pinpost certs
/// verify`.
type Bypass = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
);

const BYPASSES: [Bypass; 6] = [
    (
        "a-appended",
        &[("pi-01.key", "hidden/appended.key")],
        "pi-01.key must hold exactly one private key, but holds 2 PEM sections",
        "pi-01.key: it must hold exactly one private key pinpost can read (PEM, not \
         encrypted), but holds a PRIVATE KEY section, a PRIVATE KEY section",
    ),
    (
        "b-der",
        &[("backup.der", "hidden/ca.der")],
        "it holds backup.der: a device gets exactly ca.crt, pi-01.crt and pi-01.key, nothing else",
        "holds backup.der (it holds a private key): a device gets exactly ca.crt, pi-01.crt \
         and pi-01.key, nothing else",
    ),
    (
        "c-p12",
        &[("operator.p12", "hidden/operator.p12")],
        "it holds operator.p12: a device gets exactly",
        "holds operator.p12 (it holds a private key): a device gets exactly",
    ),
    (
        "d-notes",
        &[("notes.txt", "hidden/notes.txt")],
        "it holds notes.txt: a device gets exactly",
        "holds notes.txt (it holds a private key): a device gets exactly",
    ),
    (
        "e-encrypted",
        &[("operator.key", "hidden/operator-encrypted.key")],
        "it holds operator.key: a device gets exactly",
        "holds operator.key (it holds a private key): a device gets exactly",
    ),
    (
        "e-own-encrypted",
        &[("pi-01.key", "hidden/pi-01-encrypted.key")],
        "pi-01.key is encrypted",
        "pi-01.key: it must hold exactly one private key pinpost can read (PEM, not \
         encrypted), but holds a ENCRYPTED PRIVATE KEY section",
    ),
];

#[test]
fn verify_lets_through_exactly_the_devices_three_files_and_nothing_hidden() {
    let fleet = fleet();
    let f = fleet.path();
    let verify = |folder: &Path, id: &str| {
        let out = pinpost(
            &strings(&[
                "certs",
                "verify",
                &folder.display().to_string(),
                "--device",
                id,
            ]),
            Duration::from_secs(30),
        );
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        (out.status.code(), said)
    };
    let (code, said) = verify(&f.join("devices/pi-01"), "pi-01");
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains(
            "holds exactly ca.crt, pi-01.crt and pi-01.key, and pi-01.key is the key of pi-01.crt"
        ),
        "{said}"
    );
    for (name, extra, _, words) in BYPASSES {
        let folder = folder_with(f, name, extra);
        let (code, said) = verify(&folder, "pi-01");
        assert_eq!(code, Some(1), "{name}: {said}");
        assert!(said.contains(words), "{name}: {said}");
        assert!(said.starts_with('\u{2717}'), "{name}: {said}");
    }
    // Another device's folder, for pi-01; the CA's certificate as pi-01's.
    let (code, said) = verify(&f.join("devices/pi-02"), "pi-01");
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("holds pi-02.crt: a device gets exactly"),
        "{said}"
    );
    assert!(said.contains("has no pi-01.crt"), "{said}");
    let folder = folder_with(f, "ca-as-device", &[("pi-01.crt", "ca.crt")]);
    let (code, said) = verify(&folder, "pi-01");
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("pi-01.crt: it is a CA certificate"), "{said}");
    // An id that would name files elsewhere.
    let (code, said) = verify(&f.join("devices/pi-01"), "../pi-01/pi-01");
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("cannot be a device id"), "{said}");
    // pi-01's certificate with pi-02's key.
    let folder = folder_with(f, "wrong-key", &[("pi-01.key", "devices/pi-02/pi-02.key")]);
    let (code, said) = verify(&folder, "pi-01");
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("pi-01.key: it is not the private key of pi-01.crt"),
        "{said}"
    );
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
    let cases: [Case; 8] = [
        (
            "with-release-key",
            &[("release.key", "private/release.key")],
            "it holds release.key, the release key's private half: whoever holds the Pi \
             could sign packages for every device",
        ),
        (
            "release-pub-private",
            &[("release.pub", "private/release.key")],
            "release.pub must hold exactly one public key",
        ),
        (
            "dot-dot-ca-key",
            &[("..ca.key", "private/ca.key")],
            "it holds ..ca.key: a device gets exactly ca.crt, pi-01.crt and pi-01.key",
        ),
        (
            "with-ca-key",
            &[("ca.key", "private/ca.key")],
            "it holds ca.key, the CA's private key: whoever holds the Pi could make \
             certificates for every device and the operator",
        ),
        (
            "renamed-ca-key",
            &[("backup.key", "private/ca.key")],
            "it holds backup.key: a device gets exactly ca.crt, pi-01.crt and pi-01.key, \
             nothing else",
        ),
        (
            "other-device",
            &[
                ("pi-02.key", "devices/pi-02/pi-02.key"),
                ("pi-02.crt", "devices/pi-02/pi-02.crt"),
            ],
            "it holds pi-02.crt: a device gets exactly",
        ),
        (
            "broker-key",
            &[("broker.key", "broker/broker.key")],
            "it holds broker.key: a device gets exactly",
        ),
        (
            "wrong-key",
            &[("pi-01.key", "devices/pi-02/pi-02.key")],
            "pi-01.key is not the private key of pi-01.crt",
        ),
    ];
    let bypasses = BYPASSES.map(|(name, extra, words, _)| (name, extra, words));
    for (name, extra, words) in cases.into_iter().chain(bypasses) {
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

    // A link named ..ca.key, which a glob of .[!.]* does not see.
    let folder = folder_with(f, "dot-dot-link", &[]);
    std::os::unix::fs::symlink(f.join("private/ca.key"), folder.join("..ca.key")).unwrap();
    let (code, said, calls) = push(f, &folder, None);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("it holds ..ca.key, which is not a plain file"),
        "{said}"
    );
    assert_eq!(calls, "", "nothing may run after a refusal");

    // pi-01's own folder, for a config whose device is pi-02.
    let config = f.join("pi-02.toml");
    std::fs::write(&config, "[device]\nid = \"pi-02\"  # the other one\n").unwrap();
    let (code, said, calls) = push(f, &f.join("devices/pi-01"), Some(&config));
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("it holds pi-01.crt: a device gets exactly ca.crt, pi-02.crt and pi-02.key"),
        "{said}"
    );
    assert_eq!(calls, "");

    // The whole tree is not a device's folder.
    let (code, said, _) = push(f, f, None);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("which is not a plain file"), "{said}");

    // pi-01's own folder (with release.pub) goes on to the build.
    assert!(f.join("devices/pi-01/release.pub").is_file());
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
            "holds ca.key (it holds a private key): a device gets exactly ca.crt, pi-01.crt \
             and pi-01.key",
        ),
        (
            "other-key",
            ("pi-02.key", "devices/pi-02/pi-02.key"),
            "holds pi-02.key (it holds a private key)",
        ),
        (
            "appended-ca-key",
            ("pi-01.key", "hidden/appended.key"),
            "pi-01.key: it must hold exactly one private key",
        ),
        (
            "notes",
            ("notes.txt", "hidden/notes.txt"),
            "holds notes.txt (it holds a private key)",
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

/// install.sh as it runs on a Pi, with its absolute paths moved under
/// `root` (so it changes nothing on this machine), `install` copying without
/// changing owners, and the user and group tools only noting their calls.
/// Returns its exit code, what it said and the calls noted.
fn install_under(root: &Path, stage: &Path) -> (Option<i32>, String, String) {
    install_under_with(root, stage, &[])
}

/// [`install_under`] with options for install.sh.
fn install_under_with(
    root: &Path,
    stage: &Path,
    options: &[&str],
) -> (Option<i32>, String, String) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = root.join("calls.log");
    let script = |tool: &str, then: &str| {
        let path = bin.join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> '{}'\n{then}\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    };
    for tool in ["groupadd", "useradd", "usermod", "systemctl", "getent"] {
        script(tool, if tool == "getent" { "exit 2" } else { "exit 0" });
    }
    // The real install, without -o/-g (no pinpost user here).
    script(
        "install",
        "args=''; skip=''\nfor a in \"$@\"; do\n  if [ -n \"$skip\" ]; then skip=''; continue; fi\n  \
         case \"$a\" in -o|-g) skip=1 ;; *) args=\"$args '$a'\" ;; esac\ndone\n\
         eval exec /usr/bin/install $args",
    );
    let text = std::fs::read_to_string(INSTALL).unwrap();
    let r = root.display().to_string();
    let moved = text
        .replace("/etc/", &format!("{r}/etc/"))
        .replace("/usr/local/bin", &format!("{r}/usr/local/bin"))
        .replace("/run/systemd", &format!("{r}/run/systemd"));
    assert_ne!(moved, text);
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    std::fs::write(stage.join("install.sh"), moved).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = Command::new("sh")
        .arg(stage.join("install.sh"))
        .args(options)
        .env("PATH", path)
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    (out.status.code(), said, calls)
}

#[test]
fn install_sh_installs_the_certificates_on_a_first_install_with_a_tls_config() {
    let fleet = fleet();
    let f = fleet.path();
    let root = f.join("root");
    let stage = f.join("stage");
    std::fs::create_dir(&stage).unwrap();
    std::fs::copy(PINPOST, stage.join("pinpost")).unwrap();
    std::fs::write(stage.join("pinpost.service"), UNIT).unwrap();
    // The config names files that are not in place before this install.
    let config = ConfigHead::new(8883)
        .host("broker.local")
        .broker("cli_port = 8884")
        .ca("/etc/pinpost/certs/ca.crt")
        .client_files(
            "/etc/pinpost/certs/pi-01.crt",
            "/etc/pinpost/certs/pi-01.key",
        )
        .to_string();
    std::fs::write(stage.join("config.toml"), &config).unwrap();
    assert!(!Path::new("/etc/pinpost/certs/pi-01.crt").exists());
    let certs = folder_with(f, "first", &[]);
    std::fs::rename(&certs, stage.join("certs")).unwrap();
    let (code, said, calls) = install_under(&root, &stage);
    assert_eq!(code, Some(0), "{said}\n{calls}");
    assert!(!said.contains("refusing"), "{said}");
    let installed = root.join("etc/pinpost/certs");
    let mut names: Vec<_> = std::fs::read_dir(&installed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.crt", "pi-01.crt", "pi-01.key"], "{said}");
    for name in ["ca.crt", "pi-01.crt", "pi-01.key"] {
        assert_eq!(
            std::fs::read(installed.join(name)).unwrap(),
            std::fs::read(f.join("devices/pi-01").join(name)).unwrap(),
            "{name}"
        );
    }
    let mode = |name: &str| {
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(installed.join(name))
                .unwrap()
                .permissions(),
        ) & 0o777
    };
    assert_eq!(mode("pi-01.key"), 0o640);
    assert_eq!(mode("pi-01.crt"), 0o644);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/pinpost/config.toml")).unwrap(),
        config
    );
    assert!(
        said.contains("installed /etc/pinpost/certs/pi-01.key (0640)")
            || said.contains("certs/pi-01.key (0640)"),
        "{said}"
    );
}

/// A device that enrolled itself: its key in `pi/` (where the config says),
/// and on the laptop `devices/<id>/` holding ca.crt, <id>.crt and <id>.csr.
fn enrolled(fleet: &Path, id: &str) -> PathBuf {
    let pi = fleet.join(format!("pi-side-{id}"));
    std::fs::create_dir_all(&pi).unwrap();
    let config = pi.join("pinpost.toml");
    std::fs::write(
        &config,
        format!("[device]\nid = \"{id}\"\n[broker.tls]\ncert_file = \"{id}.crt\"\nkey_file = \"{id}.key\"\n"),
    )
    .unwrap();
    let wait = std::time::Duration::from_secs(60);
    let out = pinpost(
        &strings(&["enroll", "--config", &config.display().to_string()]),
        wait,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let d = fleet.display().to_string();
    let csr = pi.join(format!("{id}.csr")).display().to_string();
    let out = pinpost(&strings(&["certs", "--dir", &d, "sign", &csr]), wait);
    assert!(out.status.success(), "{}", stderr(&out));
    pi
}

#[test]
fn push_sh_takes_an_enrolled_devices_folder_and_copies_no_key() {
    let fleet = fleet();
    let f = fleet.path();
    enrolled(f, "pi-05");
    let folder = f.join("devices/pi-05");
    let (code, said, calls) = push(f, &folder, None);
    assert!(!said.contains("refusing"), "{code:?}: {said}");
    assert!(calls.starts_with("cross build"), "{calls}\n{said}");

    // The certificate must be for the request's key.
    let mixed = f.join("mixed/pi-05");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(folder.join("ca.crt"), mixed.join("ca.crt")).unwrap();
    std::fs::copy(folder.join("pi-05.csr"), mixed.join("pi-05.csr")).unwrap();
    enrolled(f, "pi-06");
    std::fs::copy(f.join("devices/pi-06/pi-06.crt"), mixed.join("pi-05.crt")).unwrap();
    let (code, said, calls) = push(f, &mixed, None);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("pi-05.crt is the certificate of pi-06")
            || said.contains("pi-05.crt is not for the key of pi-05.csr"),
        "{said}"
    );
    assert_eq!(calls, "");

    // Both a key and a request: one of them is not what it seems.
    let both = folder_with(f, "both", &[("pi-01.csr", "devices/pi-05/pi-05.csr")]);
    let (code, said, _) = push(f, &both, None);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("it holds both pi-01.key and pi-01.csr"),
        "{said}"
    );
}

#[test]
fn install_sh_installs_the_certificates_for_the_key_this_pi_made_and_keeps_the_key() {
    let fleet = fleet();
    let f = fleet.path();
    let pi = enrolled(f, "pi-05");
    let setup = |name: &str| {
        let root = f.join(format!("root-{name}"));
        let stage = f.join(format!("stage-{name}"));
        std::fs::create_dir_all(stage.join("certs")).unwrap();
        std::fs::copy(PINPOST, stage.join("pinpost")).unwrap();
        std::fs::write(stage.join("pinpost.service"), UNIT).unwrap();
        std::fs::write(stage.join("config.toml"), "[device]\nid = \"pi-05\"\n").unwrap();
        for file in ["ca.crt", "pi-05.crt"] {
            std::fs::copy(
                f.join("devices/pi-05").join(file),
                stage.join("certs").join(file),
            )
            .unwrap();
        }
        (root, stage)
    };

    // No key on this "Pi" yet: nothing changes.
    let (root, stage) = setup("no-key");
    let (code, said, calls) = install_under(&root, &stage);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("it brings no pi-05.key, and this Pi holds none"),
        "{said}"
    );
    assert!(
        said.contains("run pinpost enroll on this Pi first"),
        "{said}"
    );
    assert!(
        !calls.contains("useradd") && !calls.contains("systemctl"),
        "{calls}"
    );

    // The key enroll made is there: the certificates join it.
    let (root, stage) = setup("held");
    let held = root.join("etc/pinpost/certs");
    std::fs::create_dir_all(&held).unwrap();
    std::fs::copy(pi.join("pi-05.key"), held.join("pi-05.key")).unwrap();
    let (code, said, calls) = install_under(&root, &stage);
    assert_eq!(code, Some(0), "{said}\n{calls}");
    let mut names: Vec<_> = std::fs::read_dir(&held)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.crt", "pi-05.crt", "pi-05.key"], "{said}");
    assert_eq!(
        std::fs::read(held.join("pi-05.key")).unwrap(),
        std::fs::read(pi.join("pi-05.key")).unwrap(),
        "the key is the one the Pi made"
    );

    // Another device's key held here: refused.
    let (root, stage) = setup("wrong-key");
    let held = root.join("etc/pinpost/certs");
    std::fs::create_dir_all(&held).unwrap();
    std::fs::copy(f.join("devices/pi-02/pi-02.key"), held.join("pi-05.key")).unwrap();
    let (code, said, _) = install_under(&root, &stage);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("is not the private key of pi-05.crt"),
        "{said}"
    );
}

#[test]
fn install_sh_enroll_makes_the_key_on_the_pi_and_waits_for_its_certificate() {
    let fleet = fleet();
    let f = fleet.path();
    let root = f.join("root");
    let stage = f.join("stage");
    std::fs::create_dir(&stage).unwrap();
    std::fs::copy(PINPOST, stage.join("pinpost")).unwrap();
    std::fs::write(stage.join("pinpost.service"), UNIT).unwrap();
    // Relative to /etc/pinpost, which the test moves under `root`.
    std::fs::write(
        stage.join("config.toml"),
        "[device]\nid = \"pi-05\"\n[broker]\nhost = \"broker.local\"\n[broker.tls]\n\
         ca_file = \"certs/ca.crt\"\ncert_file = \"certs/pi-05.crt\"\nkey_file = \"certs/pi-05.key\"\n",
    )
    .unwrap();
    let (code, said, calls) = install_under_with(&root, &stage, &["--enroll"]);
    assert_eq!(code, Some(0), "{said}\n{calls}");
    let certs = root.join("etc/pinpost/certs");
    let key = certs.join("pi-05.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions())
            & 0o777;
    assert_eq!(mode, 0o600, "{said}");
    assert!(certs.join("pi-05.csr").exists(), "{said}");
    assert!(said.contains("It never leaves this device"), "{said}");
    assert!(
        said.contains("not started: it starts once the signed certificate is installed"),
        "{said}"
    );
    assert!(!calls.contains("systemctl restart"), "{calls}");
}

const UPDATE_SERVICE: &str = include_str!("../../deploy/pinpost-update.service");
const UPDATE_PATH: &str = include_str!("../../deploy/pinpost-update.path");

#[test]
fn the_update_helper_units_pass_verify_and_watch_the_agents_ready_folder() {
    require_tool("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let service = dir.path().join("pinpost-update.service");
    std::fs::write(&service, UPDATE_SERVICE).unwrap();
    let path = dir.path().join("pinpost-update.path");
    std::fs::write(&path, UPDATE_PATH).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .arg(&service)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The glob is where the agent's spool (StateDirectory=pinpost, the
    // config's default outbox.path) keeps a checked release.
    assert!(
        UPDATE_PATH
            .lines()
            .any(|l| l == "PathExistsGlob=/var/lib/pinpost/outbox/update/ready/*.deb")
    );
    let config = pinpost::config::from_text(
        "[device]\nid = \"pi-01\"\n",
        None,
        &pinpost::config::Overrides::default(),
    )
    .unwrap();
    assert_eq!(
        config.outbox.path.join("update/ready"),
        Path::new("/var/lib/pinpost/outbox/update/ready")
    );
    assert_eq!(
        config.update.helper_dir,
        Path::new("/var/lib/pinpost-update")
    );
    // systemd's $STATE_DIRECTORY would move the spool the helper looks in.
    assert!(
        !UPDATE_SERVICE
            .lines()
            .any(|l| l.starts_with("StateDirectory")),
        "{UPDATE_SERVICE}"
    );
    for line in [
        "Type=oneshot",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX",
        "IPAddressDeny=any",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            UPDATE_SERVICE.lines().any(|l| l == line),
            "missing {line:?}"
        );
    }
    // The helper is never ordered against the agent: it restarts the agent
    // from inside its own start job, which an ordering would deadlock.
    assert!(
        !UPDATE_SERVICE.contains("pinpost.service"),
        "{UPDATE_SERVICE}"
    );
}

#[test]
fn the_update_helper_prefers_the_copy_it_kept_while_an_install_is_under_way() {
    let exec = UPDATE_SERVICE
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/bin/sh -c '"))
        .and_then(|l| l.strip_suffix('\''))
        .expect("an ExecStart through sh");
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved");
    let script = exec
        .replace("/var/lib/pinpost-update/pinpost", &saved.to_string_lossy())
        .replace("/usr/bin/pinpost", "echo")
        .replace("exec \"$helper\"", "echo \"$helper\"");
    let run = || {
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(
        run().starts_with("echo install-update --config"),
        "{}",
        run()
    );
    std::fs::write(&saved, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&saved, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    assert!(run().starts_with(&*saved.to_string_lossy()), "{}", run());
}
