//! The Raspberry Pi release binaries, run under qemu-user emulation against a
//! real Mosquitto with mutual TLS on loopback: what a Pi would do, on this
//! machine.
//!
//! The binaries come from `scripts/cross-build.sh <target>`, which the test
//! script runs before `cargo test`. A missing or outdated binary, or a
//! missing qemu, is a failure that says what to run, never a skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::common::*;

/// Emulation is several times slower than the host, startup included.
const WAIT: Duration = Duration::from_secs(40);

struct Pi {
    target: &'static str,
    qemu: &'static str,
    /// Where Debian's cross libc lives, for the dynamic loader.
    sysroot: &'static str,
}

const AARCH64: Pi = Pi {
    target: "aarch64-unknown-linux-gnu",
    qemu: "qemu-aarch64-static",
    sysroot: "/usr/aarch64-linux-gnu",
};

const ARMV7: Pi = Pi {
    target: "armv7-unknown-linux-gnueabihf",
    qemu: "qemu-arm-static",
    sysroot: "/usr/arm-linux-gnueabihf",
};

impl Pi {
    fn binary(&self) -> PathBuf {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let bin = root
            .join("target/debian-rustc")
            .join(self.target)
            .join("release/pinpost");
        let rebuild = format!("run `scripts/cross-build.sh {}`", self.target);
        let built = std::fs::metadata(&bin)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| panic!("{} is missing: {rebuild}", bin.display()));
        if let Some(newer) = newest_source(root).filter(|(t, _)| *t > built) {
            panic!(
                "{} is older than {}: {rebuild}",
                bin.display(),
                newer.1.display()
            );
        }
        bin
    }

    /// The arm binary under emulation, with `args`.
    fn pinpost(&self, args: &[String]) -> Command {
        require_tool(self.qemu, "qemu-user-static");
        assert!(
            Path::new(self.sysroot).join("lib").is_dir(),
            "{} is missing: run `scripts/cross-build.sh --setup-only`",
            self.sysroot
        );
        let mut cmd = Command::new(self.qemu);
        cmd.arg("-L")
            .arg(self.sysroot)
            .arg(self.binary())
            .args(args);
        cmd
    }

    fn run(&self, args: &[String]) -> std::process::Output {
        let mut cmd = self.pinpost(args);
        cmd.env_remove("PINPOST_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run_limited(cmd, None, WAIT)
    }
}

/// The newest file the binary is built from, so a stale one is caught.
fn newest_source(root: &Path) -> Option<(SystemTime, PathBuf)> {
    fn walk(dir: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(t) = entry.metadata().and_then(|m| m.modified()) {
                if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                    *newest = Some((t, path));
                }
            }
        }
    }
    let mut newest = None;
    walk(&root.join("src"), &mut newest);
    for file in ["Cargo.toml", "Cargo.lock"] {
        let path = root.join(file);
        if let Ok(t) = std::fs::metadata(&path).and_then(|m| m.modified()) {
            if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                newest = Some((t, path));
            }
        }
    }
    newest
}

/// A CA, a broker with mutual TLS on loopback, and certificates for the
/// device and an operator.
struct Rig {
    pki: Pki,
    broker: Broker,
    device: Files,
    operator: Files,
}

impl Rig {
    fn new() -> Rig {
        let pki = Pki::new("fleet");
        let server = pki.server(&["127.0.0.1"]);
        let device = pki.client("pi-01");
        let operator = pki.client("operator");
        let broker = Broker::mutual(&pki, server);
        Rig {
            pki,
            broker,
            device,
            operator,
        }
    }

    fn operator_args(&self) -> Vec<String> {
        let mut args = strings(&["-h", "127.0.0.1", "-p", &self.broker.port.to_string()]);
        args.extend(tls_args(&self.pki.ca.cert, Some(&self.operator)));
        args
    }

    fn config(&self, board: &str) -> PathBuf {
        let path = self.pki.path().join("pinpost.toml");
        let head = ConfigHead::new(self.broker.port)
            .ca(&self.pki.ca.cert)
            .client(&self.device);
        std::fs::write(
            &path,
            format!(
                r#"{head}[board]
{board}

[[input]]
name = "button"
pin = 17
debounce = "20ms"

[[output]]
name = "relay"
pin = 27
safe_state = "off"
"#
            ),
        )
        .expect("write config");
        path
    }
}

fn publish_delivers_over_mutual_tls(pi: &Pi) {
    let rig = Rig::new();
    let witness = Witness::start(&rig.broker, "fleet/#", &rig.operator_args());
    let mut args = strings(&[
        "publish",
        "--config",
        &device_config(rig.pki.path()).display().to_string(),
        "-h",
        "127.0.0.1",
        "-p",
        &rig.broker.port.to_string(),
        "-q",
        "1",
        "-t",
        "fleet/pi-01/hello",
        "-m",
        pi.target,
    ]);
    args.extend(tls_args(&rig.pki.ca.cert, Some(&rig.device)));
    let out = pi.run(&args);
    assert_ok(&out, &rig.broker);
    let expected = format!("fleet/pi-01/hello {}", pi.target);
    let seen = witness.wait_for(&expected, WAIT);
    assert!(seen.contains(&expected), "the subscriber saw {seen:?}");
}

fn run_on_a_sim_board_answers_a_command(pi: &Pi) {
    let rig = Rig::new();
    let config = rig.config("kind = \"sim\"\nwires = [[27, 17]]");
    let witness = Witness::start(&rig.broker, "pinpost/pi-01/#", &rig.operator_args());
    let agent = Background::spawn(pi.pinpost(&strings(&[
        "run",
        "--config",
        &config.display().to_string(),
    ])));
    witness.wait_until("status online", WAIT, |l| {
        l == "pinpost/pi-01/status online"
    });

    let sent = Command::new("mosquitto_pub")
        .args(rig.operator_args())
        .args(["-q", "1", "-t", "pinpost/pi-01/cmd/relay"])
        .args(["-m", r#"{"action":"on","id":"arm-1"}"#])
        .output()
        .expect("run mosquitto_pub");
    assert!(sent.status.success(), "mosquitto_pub: {sent:?}");
    witness.wait_until("the command's result", WAIT, |l| {
        l.starts_with("pinpost/pi-01/cmd/relay/result ")
            && l.contains(r#""id":"arm-1""#)
            && l.contains(r#""ok":true"#)
    });
    witness.wait_until("the wired input going high", WAIT, |l| {
        l.starts_with("pinpost/pi-01/input/button ") && l.contains(r#""value":true"#)
    });

    let killed = Command::new("kill")
        .args(["-TERM", &agent.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    witness.wait_until("status offline", WAIT, |l| {
        l == "pinpost/pi-01/status offline"
    });
    let (status, _) = agent.finish(WAIT);
    assert!(status.success(), "the agent ended with {status:?}");
}

fn rppal_off_a_pi_explains_instead_of_panicking(pi: &Pi) {
    let rig = Rig::new();
    let config = rig.config("kind = \"rppal\"");
    let out = pi.run(&strings(&[
        "run",
        "--config",
        &config.display().to_string(),
    ]));
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{said}");
    assert!(
        said.contains("this machine is not a Raspberry Pi"),
        "{said}"
    );
    assert!(!said.contains("panicked"), "{said}");
}

/// Pi builds leave the demo's broker out; asking for it says what to do.
fn demo_without_its_broker_says_how_to_get_it(pi: &Pi) {
    let out = pi.run(&strings(&["demo", "--duration", "1s"]));
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("built without the demo's broker")
            && said.contains("cargo run --release -- demo")
            && said.contains("--broker HOST:PORT"),
        "{said}"
    );
}

#[test]
fn aarch64_demo_without_its_broker_says_how_to_get_it() {
    demo_without_its_broker_says_how_to_get_it(&AARCH64);
}

#[test]
fn armv7_demo_without_its_broker_says_how_to_get_it() {
    demo_without_its_broker_says_how_to_get_it(&ARMV7);
}

#[test]
fn aarch64_publish_delivers_over_mutual_tls() {
    publish_delivers_over_mutual_tls(&AARCH64);
}

#[test]
fn aarch64_run_on_a_sim_board_answers_a_command() {
    run_on_a_sim_board_answers_a_command(&AARCH64);
}

#[test]
fn aarch64_rppal_off_a_pi_explains_instead_of_panicking() {
    rppal_off_a_pi_explains_instead_of_panicking(&AARCH64);
}

#[test]
fn armv7_publish_delivers_over_mutual_tls() {
    publish_delivers_over_mutual_tls(&ARMV7);
}

#[test]
fn armv7_run_on_a_sim_board_answers_a_command() {
    run_on_a_sim_board_answers_a_command(&ARMV7);
}

#[test]
fn armv7_rppal_off_a_pi_explains_instead_of_panicking() {
    rppal_off_a_pi_explains_instead_of_panicking(&ARMV7);
}
