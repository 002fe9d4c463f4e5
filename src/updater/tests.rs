//! The helper against a pretend machine: dpkg is a field, the agent's unit
//! answers as the release's behaviour says, and a power cut is a panic at
//! a chosen call (what the disk holds then is what a boot finds).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::gate::Unit;
use super::*;
use crate::release::key::Signer;
use crate::release::manifest::Manifest;

/// How a version behaves once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaves {
    Healthy,
    ExitsAtStart,
    NeverConnects,
}

struct Machine {
    installed: Option<String>,
    behaves: HashMap<String, Behaves>,
    invocation: u64,
    /// Samples since the last restart.
    looks: u64,
    clock: Duration,
    installs: Vec<String>,
    /// Panics ("power cut") at the call named, e.g. `install 0.2.0`.
    cut_at: Option<String>,
    /// The agent's config: one with `# breaks` in it never connects.
    config_file: Option<PathBuf>,
}

impl Machine {
    fn running(version: &str) -> Machine {
        let mut behaves = HashMap::new();
        behaves.insert(version.to_string(), Behaves::Healthy);
        Machine {
            installed: Some(version.to_string()),
            behaves,
            invocation: 1,
            looks: 5,
            clock: Duration::ZERO,
            installs: Vec::new(),
            cut_at: None,
            config_file: None,
        }
    }

    fn cut(&self, call: &str) {
        if self.cut_at.as_deref() == Some(call) {
            panic!("power cut at {call}");
        }
    }
}

/// A package file is `pinpost <version>` in these tests.
fn version_in(deb: &Path) -> String {
    let text = std::fs::read_to_string(deb).unwrap();
    text.trim().trim_start_matches("pinpost ").to_string()
}

impl System for Machine {
    fn installed(&mut self) -> Result<Option<String>, String> {
        Ok(self.installed.clone())
    }
    fn architecture(&mut self) -> Result<String, String> {
        Ok("arm64".into())
    }
    fn repair(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn repack(&mut self, into: &Path) -> Result<PathBuf, String> {
        let v = self.installed.clone().unwrap();
        let deb = into.join(format!("pinpost_{v}_arm64.deb"));
        std::fs::write(&deb, format!("pinpost {v}")).unwrap();
        Ok(deb)
    }
    fn install(&mut self, deb: &Path) -> Result<(), String> {
        let v = version_in(deb);
        self.cut(&format!("install {v}"));
        self.installs.push(v.clone());
        self.installed = Some(v);
        // dpkg's postinst restarts the unit.
        self.invocation += 1;
        self.looks = 0;
        Ok(())
    }
    fn restart(&mut self) -> Result<(), String> {
        self.cut("restart");
        self.invocation += 1;
        self.looks = 0;
        Ok(())
    }
    fn unit(&mut self) -> Result<Unit, String> {
        self.looks += 1;
        let v = self.installed.clone().unwrap_or_default();
        let mut u = Unit {
            active: "active".into(),
            sub: "running".into(),
            invocation: self.invocation.to_string(),
            ..Unit::default()
        };
        let breaks = self
            .config_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .is_some_and(|c| c.contains("# breaks"));
        let behaves = if breaks {
            Behaves::NeverConnects
        } else {
            self.behaves.get(&v).copied().unwrap_or(Behaves::Healthy)
        };
        match behaves {
            _ if self.looks < 3 => {
                u.active = "activating".into();
                u.sub = "start".into();
            }
            Behaves::Healthy => u.status = crate::health::delivering("mqtts://broker:8883"),
            Behaves::NeverConnects => u.status = "retrying in 5.0s: the broker refused".into(),
            Behaves::ExitsAtStart => {
                u.active = "activating".into();
                u.sub = "auto-restart".into();
                u.result = "exit-code".into();
                u.exit_status = 3;
                u.restarts = 1;
                u.invocation = format!("{}-again", self.invocation);
            }
        }
        Ok(u)
    }
    fn log_tail(&mut self, _since_unix: i64, _invocation: &str) -> String {
        "pinpost: broken on purpose".into()
    }
    fn save_helper(&mut self, to: &Path) -> Result<(), String> {
        std::fs::write(to, b"helper").map_err(|e| e.to_string())
    }
    fn sleep(&mut self, d: Duration) {
        self.clock += d;
    }
    fn elapsed(&mut self) -> Duration {
        self.clock
    }
}

/// The config the pretend machine runs: healthy.
const GOOD_CONFIG: &str = "[device]\nid = \"pi-01\"\n";

struct Bench {
    _tmp: tempfile::TempDir,
    plan: Plan,
    signer: Signer,
}

impl Bench {
    fn new() -> Bench {
        let tmp = tempfile::tempdir().unwrap();
        let (private, public) = crate::release::key::generate().unwrap();
        let plan = Plan {
            key: Public::from_pem(public.as_bytes()).unwrap(),
            ready: tmp.path().join("agent/update/ready"),
            dir: tmp.path().join("helper"),
            health_timeout: Duration::from_secs(120),
            clock_trusted: true,
            config_file: tmp.path().join("etc/config.toml"),
            device: "pi-01".into(),
        };
        std::fs::create_dir_all(tmp.path().join("etc")).unwrap();
        std::fs::write(&plan.config_file, GOOD_CONFIG).unwrap();
        std::fs::create_dir_all(&plan.ready).unwrap();
        Bench {
            signer: Signer::from_pem(private.as_bytes()).unwrap(),
            plan,
            _tmp: tmp,
        }
    }

    /// The agent leaves `version` ready, signed.
    fn ready(&self, version: &str) {
        let bytes = format!("pinpost {version}");
        let (size, digest) = crate::digest::sha256(bytes.as_bytes()).unwrap();
        let now = crate::utc::now_unix();
        let manifest = Manifest {
            format: 1,
            package: "pinpost".into(),
            version: version.into(),
            architecture: "arm64".into(),
            size,
            sha256: crate::hex::hex(&digest),
            replaces: Vec::new(),
            downgrade: false,
            issued: now - 60,
            expires: now + 86_400,
        };
        let name = format!("pinpost_{version}_arm64.deb");
        std::fs::write(self.plan.ready.join(&name), bytes).unwrap();
        std::fs::write(
            self.plan.ready.join(format!("{name}.manifest")),
            manifest.sign(&self.signer).unwrap(),
        )
        .unwrap();
    }

    /// The agent leaves a config signed for `device`.
    fn ready_config(&self, device: &str, text: &str) -> String {
        let now = crate::utc::now_unix();
        let signed = crate::release::config::SignedConfig {
            kind: "config".into(),
            format: 1,
            device: device.into(),
            config: text.into(),
            issued: now - 60,
            expires: now + 86_400,
        };
        std::fs::write(
            self.plan.ready.join("config.signed"),
            signed.sign(&self.signer).unwrap(),
        )
        .unwrap();
        super::config::config_name(&signed.sha256())
    }

    fn machine(&self) -> Machine {
        let mut pi = Machine::running("0.1.0");
        pi.config_file = Some(self.plan.config_file.clone());
        pi
    }

    fn config_now(&self) -> String {
        std::fs::read_to_string(&self.plan.config_file).unwrap()
    }

    fn run(&self, machine: &mut Machine) -> Vec<Did> {
        run(&self.plan, machine).unwrap()
    }

    fn outcome(&self) -> Outcome {
        serde_json::from_slice(&std::fs::read(self.plan.dir.join(OUTCOME_FILE)).unwrap()).unwrap()
    }

    fn rolled_back(&self) -> Vec<RolledBack> {
        let path = self.plan.dir.join(ROLLED_BACK_FILE);
        std::fs::read(path)
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or_default()
    }

    fn journal_left(&self) -> bool {
        self.plan.dir.join("journal.json").exists()
    }

    /// A run that the power cut stops where `machine.cut_at` says.
    fn run_until_cut(&self, machine: &mut Machine) {
        let cut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = run(&self.plan, machine);
        }));
        assert!(cut.is_err(), "the power cut did not come");
        machine.cut_at = None;
    }
}

#[test]
fn a_healthy_release_is_installed_and_kept() {
    let bench = Bench::new();
    bench.ready("0.2.0");
    let mut pi = Machine::running("0.1.0");
    let did = bench.run(&mut pi);
    assert_eq!(did.len(), 1);
    assert_eq!(did[0].outcome.state, "installed");
    assert_eq!(pi.installed.as_deref(), Some("0.2.0"));
    assert_eq!(pi.installs, ["0.2.0"]);
    let outcome = bench.outcome();
    assert_eq!(
        (outcome.state.as_str(), outcome.version.as_str()),
        ("installed", "0.2.0")
    );
    assert_eq!(outcome.previous.as_deref(), Some("0.1.0"));
    assert!(!bench.journal_left());
    assert!(
        std::fs::read_dir(&bench.plan.ready)
            .unwrap()
            .next()
            .is_none()
    );
    // The previous package is kept, the helper's copy and the release's are not.
    assert!(
        bench
            .plan
            .dir
            .join("previous/pinpost_0.1.0_arm64.deb")
            .exists()
    );
    assert!(!bench.plan.dir.join("pinpost").exists());
    assert_eq!(
        std::fs::read_dir(bench.plan.dir.join("incoming"))
            .unwrap()
            .count(),
        0
    );
    let mode = std::fs::metadata(bench.plan.dir.join(OUTCOME_FILE)).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o644
    );
}

#[test]
fn a_release_that_exits_at_start_is_rolled_back_and_never_tried_again() {
    let bench = Bench::new();
    bench.ready("0.2.0");
    let mut pi = Machine::running("0.1.0");
    pi.behaves.insert("0.2.0".into(), Behaves::ExitsAtStart);
    let did = bench.run(&mut pi);
    let outcome = &did[0].outcome;
    assert_eq!(outcome.state, "rolled back");
    let reason = outcome.reason.as_deref().unwrap();
    assert!(reason.contains("it exited with status 3"), "{reason}");
    assert!(
        reason.contains("its log: pinpost: broken on purpose"),
        "{reason}"
    );
    assert_eq!(pi.installs, ["0.2.0", "0.1.0"]);
    assert_eq!(pi.installed.as_deref(), Some("0.1.0"));
    // Found out at once, not at the timeout.
    assert!(pi.clock < Duration::from_secs(10), "{:?}", pi.clock);
    assert_eq!(bench.rolled_back()[0].version, "0.2.0");

    bench.ready("0.2.0");
    let did = bench.run(&mut pi);
    assert_eq!(did[0].outcome.state, "refused");
    let reason = did[0].outcome.reason.as_deref().unwrap();
    assert!(
        reason.contains("was rolled back on this device before"),
        "{reason}"
    );
    assert_eq!(pi.installs, ["0.2.0", "0.1.0"], "not installed again");
}

#[test]
fn a_release_that_never_connects_is_rolled_back_at_the_health_timeout() {
    let bench = Bench::new();
    bench.ready("0.2.0");
    let mut pi = Machine::running("0.1.0");
    pi.behaves.insert("0.2.0".into(), Behaves::NeverConnects);
    let did = bench.run(&mut pi);
    let reason = did[0].outcome.reason.clone().unwrap();
    assert_eq!(did[0].outcome.state, "rolled back");
    assert!(
        reason.contains("did not connect and deliver within 2m"),
        "{reason}"
    );
    assert!(reason.contains("the broker refused"), "{reason}");
    assert!(pi.clock >= Duration::from_secs(120) && pi.clock < Duration::from_secs(130));
    assert_eq!(pi.installed.as_deref(), Some("0.1.0"));
}

#[test]
fn what_the_release_key_did_not_sign_is_never_installed() {
    let bench = Bench::new();
    let mut pi = Machine::running("0.1.0");
    // The agent (or whoever holds its user) swaps the package after it was
    // checked.
    bench.ready("0.2.0");
    std::fs::write(
        bench.plan.ready.join("pinpost_0.2.0_arm64.deb"),
        "pinpost 6.6.6",
    )
    .unwrap();
    let did = bench.run(&mut pi);
    assert_eq!(did[0].outcome.state, "refused");
    assert!(
        did[0]
            .outcome
            .reason
            .as_deref()
            .unwrap()
            .contains("SHA-256 is not its manifest's")
    );
    // A manifest by another key.
    let other = Bench::new();
    other.ready("0.3.0");
    for name in [
        "pinpost_0.3.0_arm64.deb",
        "pinpost_0.3.0_arm64.deb.manifest",
    ] {
        std::fs::copy(other.plan.ready.join(name), bench.plan.ready.join(name)).unwrap();
    }
    let did = bench.run(&mut pi);
    assert_eq!(did[0].outcome.state, "refused");
    assert!(
        did[0]
            .outcome
            .reason
            .as_deref()
            .unwrap()
            .contains("trusts only")
    );
    // An older release, signed.
    bench.ready("0.0.9");
    let did = bench.run(&mut pi);
    assert!(
        did[0]
            .outcome
            .reason
            .as_deref()
            .unwrap()
            .contains("older than the installed")
    );
    assert!(pi.installs.is_empty());
    assert!(
        std::fs::read_dir(&bench.plan.ready)
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn a_power_cut_during_dpkg_boots_into_the_previous_version_and_the_release_is_fetched_again() {
    let bench = Bench::new();
    bench.ready("0.2.0");
    let mut pi = Machine::running("0.1.0");
    pi.cut_at = Some("install 0.2.0".into());
    bench.run_until_cut(&mut pi);
    assert!(bench.journal_left());
    assert!(
        bench.plan.dir.join("pinpost").exists(),
        "the helper a boot can run"
    );
    // dpkg left it unconfigured: not installed as far as dpkg-query says.
    pi.installed = None;
    let did = bench.run(&mut pi);
    assert_eq!(did[0].outcome.state, "interrupted");
    assert_eq!(pi.installed.as_deref(), Some("0.1.0"));
    assert!(
        bench.rolled_back().is_empty(),
        "a power cut is not the release's fault"
    );
    assert!(!bench.journal_left());
}

#[test]
fn a_power_cut_after_dpkg_finishes_the_check_at_boot() {
    let bench = Bench::new();
    bench.ready("0.2.0");
    let mut pi = Machine::running("0.1.0");
    pi.cut_at = Some("restart".into());
    bench.run_until_cut(&mut pi);
    assert_eq!(pi.installed.as_deref(), Some("0.2.0"));
    let did = bench.run(&mut pi);
    assert_eq!(did[0].outcome.state, "installed");
    assert!(
        did[0]
            .outcome
            .reason
            .as_deref()
            .unwrap()
            .contains("finished at boot")
    );
    assert!(!bench.journal_left());
}

#[test]
fn a_power_cut_during_the_rollback_puts_the_previous_version_back_at_boot() {
    let bench = Bench::new();
    bench.ready("0.2.0");
    let mut pi = Machine::running("0.1.0");
    pi.behaves.insert("0.2.0".into(), Behaves::ExitsAtStart);
    pi.cut_at = Some("install 0.1.0".into());
    bench.run_until_cut(&mut pi);
    assert_eq!(pi.installed.as_deref(), Some("0.2.0"));
    assert_eq!(
        bench.rolled_back()[0].version,
        "0.2.0",
        "recorded before the cut"
    );
    let did = bench.run(&mut pi);
    assert_eq!(did[0].outcome.state, "rolled back");
    assert!(
        did[0]
            .outcome
            .reason
            .as_deref()
            .unwrap()
            .contains("exited with status 3")
    );
    assert_eq!(pi.installed.as_deref(), Some("0.1.0"));
    assert!(!bench.journal_left());
}

#[test]
fn a_helper_folder_that_is_a_link_is_refused_before_root_writes_through_it() {
    let mut bench = Bench::new();
    let elsewhere = bench.plan.dir.with_file_name("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let link = bench.plan.dir.with_file_name("linked");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    bench.plan.dir = link;
    bench.ready("0.2.0");
    let err = run(&bench.plan, &mut Machine::running("0.1.0")).unwrap_err();
    assert!(err.contains("must be root's, never the agent's"), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn a_boot_with_nothing_to_do_does_nothing() {
    let bench = Bench::new();
    let mut pi = Machine::running("0.1.0");
    assert!(bench.run(&mut pi).is_empty());
    assert!(pi.installs.is_empty());
    assert!(!bench.plan.dir.join(OUTCOME_FILE).exists());
}

mod configs;
