//! The root helper (`pinpost install-update`) with the real dpkg, in a
//! throwaway Debian root: the package `scripts/package.sh` built is
//! installed, then upgraded to a signed repack of itself, and a release
//! whose binary exits at start is put back by the helper on its own. The
//! agent's unit is a pretend `systemctl` inside the root (no systemd runs
//! in a chroot) that "starts" whatever `/usr/bin/pinpost` is and reports
//! it as systemd would: delivering, or exited with its status. The real
//! unit, on a booted Debian, is the VM test's (scripts/vm-test.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// systemd for the agent's unit, as far as the helper asks: `restart`
/// starts a new invocation, `show` runs the installed binary and says
/// what systemd would of it (a config with `# breaks` in it never
/// connects). A `restart` while `cut-at-restart` exists
/// kills the helper first, as a power cut would.
const FAKE_SYSTEMCTL: &str = r#"#!/bin/sh
d=/run/fake-systemd; mkdir -p $d
inv=$(cat $d/invocation 2>/dev/null || echo 0)
case "$1" in
  reset-failed) exit 0 ;;
  restart)
    if [ -e $d/cut-at-restart ]; then rm $d/cut-at-restart; kill -9 $PPID; exit 1; fi
    echo $((inv + 1)) > $d/invocation ;;
  show)
    if grep -q '# breaks' /etc/pinpost/config.toml; then
      printf 'ActiveState=active\nSubState=running\nInvocationID=%s\nNRestarts=0\nStatusText=retrying in 5.0s: the broker refused the connection\nResult=success\nExecMainStatus=0\n' "$inv"
    elif /usr/bin/pinpost --version >/dev/null 2>&1; then
      printf 'ActiveState=active\nSubState=running\nInvocationID=%s\nNRestarts=0\nStatusText=connected to mqtts://broker:8883 and delivering\nResult=success\nExecMainStatus=0\n' "$inv"
    else
      /usr/bin/pinpost --version >/dev/null 2>&1; code=$?
      printf 'ActiveState=activating\nSubState=auto-restart\nInvocationID=%s-again\nNRestarts=1\nStatusText=\nResult=exit-code\nExecMainStatus=%s\n' "$inv" "$code"
    fi ;;
  *) echo "pretend systemctl cannot $*" >&2; exit 1 ;;
esac
"#;

const FAKE_JOURNALCTL: &str = "#!/bin/sh\n/usr/bin/pinpost --version 2>&1 | tail -3\n";

const READY: &str = "/var/lib/pinpost/outbox/update/ready";
const HELPER: &str = "/var/lib/pinpost-update";

struct Pi {
    root: Root,
    laptop: tempfile::TempDir,
}

impl Pi {
    /// pinpost 0.1.0-1 from its package, updates on, a release key made
    /// on the laptop.
    fn new() -> Pi {
        let root = Root::new();
        root.copy_in(&built_package("amd64"), "/tmp/pinpost.deb");
        root.sh_ok("dpkg -i /tmp/pinpost.deb");
        for (name, script) in [
            ("systemctl", FAKE_SYSTEMCTL),
            ("journalctl", FAKE_JOURNALCTL),
        ] {
            let path = root.path(&format!("/usr/local/sbin/{name}"));
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        let laptop = tempfile::tempdir().unwrap();
        let (ok, said) = pinpost_in(laptop.path(), &["certs", "release-key"]);
        assert!(ok, "{said}");
        root.copy_in(
            &laptop.path().join("certs/release.pub"),
            "/etc/pinpost/certs/release.pub",
        );
        std::fs::write(
            root.path("/etc/pinpost/config.toml"),
            "[device]\nid = \"pi-01\"\n\n[update]\nrelease_key = \
             \"/etc/pinpost/certs/release.pub\"\nhealth_timeout = \"20s\"\n",
        )
        .unwrap();
        Pi { root, laptop }
    }

    /// The built package repacked as `version`; `broken`: its binary only
    /// says so and exits 3.
    fn release(&self, version: &str, broken: bool) -> PathBuf {
        let work = self.laptop.path().join(format!("work-{version}"));
        run_ok(
            Command::new("dpkg-deb")
                .arg("-R")
                .arg(built_package("amd64"))
                .arg(&work),
        );
        let control = work.join("DEBIAN/control");
        let text = std::fs::read_to_string(&control).unwrap();
        let text = text
            .lines()
            .map(|l| {
                if l.starts_with("Version: ") {
                    format!("Version: {version}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&control, text + "\n").unwrap();
        if broken {
            std::fs::write(
                work.join("usr/bin/pinpost"),
                format!("#!/bin/sh\necho \"pinpost {version}: broken on purpose\" >&2\nexit 3\n"),
            )
            .unwrap();
        }
        let deb = self
            .laptop
            .path()
            .join(format!("pinpost_{version}_amd64.deb"));
        run_ok(
            Command::new("dpkg-deb")
                .args(["--root-owner-group", "-b"])
                .arg(&work)
                .arg(&deb),
        );
        let (ok, said) = pinpost_in(
            self.laptop.path(),
            &[
                "release",
                "sign",
                &deb.display().to_string(),
                "--key",
                "certs/private/release.key",
            ],
        );
        assert!(ok, "sign: {said}");
        deb
    }

    /// What the agent leaves once it has fetched and checked a release.
    fn ready(&self, deb: &Path) {
        let name = deb.file_name().unwrap().to_str().unwrap();
        self.root
            .sh_ok(&format!("install -d -o pinpost -g pinpost -m 0700 {READY}"));
        self.root.copy_in(deb, &format!("{READY}/{name}"));
        self.root.copy_in(
            &PathBuf::from(format!("{}.manifest", deb.display())),
            &format!("{READY}/{name}.manifest"),
        );
        self.root
            .sh_ok(&format!("chown -R pinpost:pinpost {READY}"));
    }

    /// The helper as pinpost-update.service runs it.
    fn helper(&self) -> (bool, String) {
        let unit = std::fs::read_to_string(repo("deploy/pinpost-update.service")).unwrap();
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart=/bin/sh -c '"))
            .and_then(|l| l.strip_suffix('\''))
            .unwrap()
            .to_string();
        let out = self.root.sh(&exec);
        (out.status.success(), text(&out))
    }

    fn installed(&self) -> String {
        self.root.sh_ok("dpkg-query -W -f='${Version}' pinpost")
    }

    fn outcome(&self) -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(self.root.path(&format!("{HELPER}/outcome.json"))).unwrap(),
        )
        .unwrap()
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
}

#[test]
fn a_signed_release_is_installed_over_the_package_and_the_previous_one_is_kept_to_go_back_to() {
    let pi = Pi::new();
    let release = pi.release("0.1.0-2", false);
    pi.ready(&release);
    let (ok, said) = pi.helper();
    assert!(ok, "{said}");
    assert!(
        said.contains("installed 0.1.0-2 (before: 0.1.0-1)"),
        "{said}"
    );
    assert_eq!(pi.installed(), "0.1.0-2");
    assert_eq!(pi.outcome()["state"], "installed");
    assert!(
        pi.root.sh_ok(&format!("ls -A {READY}")).trim().is_empty(),
        "ready/ is emptied"
    );
    assert!(!pi.root.path(&format!("{HELPER}/journal.json")).exists());
    assert!(!pi.root.path(&format!("{HELPER}/pinpost")).exists());
    let mode = pi.root.owner(&format!("{HELPER}/outcome.json"));
    assert_eq!(
        mode,
        (0o644, "root".into(), "root".into()),
        "the agent reads it"
    );

    // The repack of 0.1.0-1 is the package that was installed: its binary,
    // its maintainer scripts, its version.
    let previous = pi
        .root
        .path(&format!("{HELPER}/previous/pinpost_0.1.0-1_amd64.deb"));
    let field = |deb: &Path, name: &str| {
        let out = Command::new("dpkg-deb")
            .arg("-f")
            .arg(deb)
            .arg(name)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(field(&previous, "Version"), "0.1.0-1");
    assert_eq!(field(&previous, "Architecture"), "amd64");
    let unpack = |deb: &Path, into: &Path| {
        run_ok(Command::new("dpkg-deb").arg("-R").arg(deb).arg(into));
    };
    let was = pi.laptop.path().join("was");
    let kept = pi.laptop.path().join("kept");
    unpack(&built_package("amd64"), &was);
    unpack(&previous, &kept);
    for file in [
        "usr/bin/pinpost",
        "usr/lib/systemd/system/pinpost.service",
        "usr/lib/systemd/system/pinpost-update.service",
        "DEBIAN/postinst",
        "DEBIAN/prerm",
        "DEBIAN/postrm",
    ] {
        assert!(
            std::fs::read(was.join(file)).unwrap() == std::fs::read(kept.join(file)).unwrap(),
            "{file} differs in the repack"
        );
    }
}

#[test]
fn a_release_that_exits_at_start_is_put_back_by_the_helper_and_never_tried_again() {
    let pi = Pi::new();
    pi.ready(&pi.release("0.1.0-2", false));
    assert!(pi.helper().0);
    let broken = pi.release("0.1.0-3", true);
    pi.ready(&broken);
    let (ok, said) = pi.helper();
    assert!(ok, "{said}");
    assert!(
        said.contains("rolled back 0.1.0-3 (before: 0.1.0-2)"),
        "{said}"
    );
    assert!(said.contains("it exited with status 3"), "{said}");
    assert!(
        said.contains("pinpost 0.1.0-3: broken on purpose"),
        "the log tail: {said}"
    );
    assert_eq!(pi.installed(), "0.1.0-2");
    assert_eq!(pi.root.sh_ok("pinpost --version").trim(), "pinpost 0.1.0");
    assert_eq!(pi.outcome()["state"], "rolled back");
    let list =
        std::fs::read_to_string(pi.root.path(&format!("{HELPER}/rolled-back.json"))).unwrap();
    assert!(list.contains("\"0.1.0-3\""), "{list}");

    pi.ready(&broken);
    let (ok, said) = pi.helper();
    assert!(ok, "{said}");
    assert!(
        said.contains("was rolled back on this device before"),
        "{said}"
    );
    assert_eq!(pi.installed(), "0.1.0-2");
}

#[test]
fn a_link_the_agent_plants_in_ready_is_never_followed_by_root() {
    let pi = Pi::new();
    let release = pi.release("0.1.0-2", false);
    pi.ready(&release);
    let shadow = pi.root.sh_ok("sha256sum /etc/shadow");
    pi.root.sh_ok(&format!(
        "cd {READY} && rm pinpost_0.1.0-2_amd64.deb && ln -s /etc/shadow pinpost_0.1.0-2_amd64.deb"
    ));
    let (ok, said) = pi.helper();
    assert!(ok, "{said}");
    assert!(
        said.contains("refused") && said.contains("symbolic link"),
        "{said}"
    );
    assert_eq!(pi.root.sh_ok("sha256sum /etc/shadow"), shadow);
    assert_eq!(pi.installed(), "0.1.0-1");
    assert!(pi.root.sh_ok(&format!("ls -A {READY}")).trim().is_empty());
}

#[test]
fn a_power_cut_after_dpkg_is_finished_by_the_next_boot_from_the_helper_it_kept() {
    let pi = Pi::new();
    pi.ready(&pi.release("0.1.0-2", false));
    std::fs::create_dir_all(pi.root.path("/run/fake-systemd")).unwrap();
    std::fs::write(pi.root.path("/run/fake-systemd/cut-at-restart"), "").unwrap();
    let (ok, said) = pi.helper();
    assert!(!ok, "the cut stops the helper: {said}");
    let journal = std::fs::read_to_string(pi.root.path(&format!("{HELPER}/journal.json"))).unwrap();
    assert!(journal.contains("\"checking\""), "{journal}");
    assert!(
        pi.root.path(&format!("{HELPER}/pinpost")).exists(),
        "the helper a boot runs"
    );
    assert_eq!(pi.installed(), "0.1.0-2");

    let (ok, said) = pi.helper();
    assert!(ok, "{said}");
    assert!(said.contains("installed 0.1.0-2"), "{said}");
    assert!(said.contains("finished at boot"), "{said}");
    assert!(!pi.root.path(&format!("{HELPER}/journal.json")).exists());
    assert!(!pi.root.path(&format!("{HELPER}/pinpost")).exists());
}

/// The config `Pi::new` wrote, as the laptop keeps it.
fn config_text(pi: &Pi) -> String {
    std::fs::read_to_string(pi.root.path("/etc/pinpost/config.toml")).unwrap()
}

impl Pi {
    /// `text` signed on the laptop as pi-01's config, left by the agent.
    fn ready_config(&self, text: &str) {
        let file = self.laptop.path().join("pi-01.toml");
        std::fs::write(&file, text).unwrap();
        let (ok, said) = pinpost_in(
            self.laptop.path(),
            &[
                "release",
                "sign-config",
                &file.display().to_string(),
                "--key",
                "certs/private/release.key",
            ],
        );
        assert!(ok, "sign-config: {said}");
        self.root
            .sh_ok(&format!("install -d -o pinpost -g pinpost -m 0700 {READY}"));
        self.root.copy_in(
            &self.laptop.path().join("pi-01.toml.signed"),
            &format!("{READY}/config.signed"),
        );
    }
}

#[test]
fn a_signed_config_is_written_with_the_files_owner_and_one_that_cannot_connect_is_put_back() {
    let pi = Pi::new();
    pi.root.sh_ok(
        "chown root:pinpost /etc/pinpost/config.toml && chmod 0640 /etc/pinpost/config.toml",
    );
    let before = config_text(&pi);
    let better = format!("{before}\n[outbox]\nstats_interval = \"2m\"\n");
    pi.ready_config(&better);
    let (ok, said) = pi.helper();
    assert!(ok, "{said}");
    assert!(said.contains("applied config:"), "{said}");
    assert_eq!(config_text(&pi), better);
    assert_eq!(
        pi.root.owner("/etc/pinpost/config.toml"),
        (0o640, "root".into(), "pinpost".into())
    );
    assert_eq!(pi.outcome()["kind"], "config");

    let started = std::time::Instant::now();
    let broken = format!("{better}# breaks\n");
    pi.ready_config(&broken);
    let (ok, said) = pi.helper();
    assert!(ok, "{said}");
    assert!(said.contains("rolled back config:"), "{said}");
    assert!(
        said.contains("did not connect and deliver within 20s"),
        "{said}"
    );
    assert!(said.contains("the broker refused the connection"), "{said}");
    assert_eq!(
        config_text(&pi),
        better,
        "the config that ran before is back"
    );
    assert_eq!(
        pi.root.owner("/etc/pinpost/config.toml"),
        (0o640, "root".into(), "pinpost".into())
    );
    eprintln!(
        "a config that cannot connect was rolled back after {:?}",
        started.elapsed()
    );
    assert_eq!(pi.installed(), "0.1.0-1", "no package was touched");
}
