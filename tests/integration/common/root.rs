//! A throwaway Debian 12 root (debootstrap minbase, from
//! `scripts/throwaway-root.sh`) unpacked for one test and entered with
//! chroot, so dpkg, the maintainer scripts and the install scripts run as
//! on a Pi; and the packages `scripts/package.sh` built. Missing either is
//! a failure that says what to run.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::run_limited;

/// How long one command inside the root may take.
const WAIT: Duration = Duration::from_secs(120);

/// A path in this repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Standard output then standard error, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The package `scripts/package.sh` built for a Debian architecture.
pub fn built_package(arch: &str) -> PathBuf {
    let deb = repo(&format!(
        "target/debian/pinpost_{}-1_{arch}.deb",
        env!("CARGO_PKG_VERSION")
    ));
    assert!(
        deb.is_file(),
        "{} is missing: run `scripts/package.sh` (scripts/test.sh does)",
        deb.display()
    );
    deb
}

/// A Debian 12 root unpacked in a temp dir, entered with chroot.
pub struct Root {
    /// Its top folder.
    pub dir: tempfile::TempDir,
}

impl Root {
    pub fn new() -> Root {
        let tar = repo("target/rootfs/bookworm.tar");
        assert!(
            tar.is_file(),
            "{} is missing: run `scripts/throwaway-root.sh`",
            tar.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("pinpost-root")
            .tempdir_in(repo("target/rootfs"))
            .unwrap();
        let out = Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(dir.path())
            .output()
            .expect("run tar");
        assert!(out.status.success(), "unpack the root: {}", text(&out));
        Root { dir }
    }

    pub fn path(&self, inside: &str) -> PathBuf {
        self.dir.path().join(inside.trim_start_matches('/'))
    }

    /// Runs a shell command inside the root, as root.
    pub fn sh(&self, script: &str) -> Output {
        let mut cmd = Command::new("chroot");
        cmd.arg(self.dir.path())
            .args(["/bin/sh", "-c", script])
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        run_limited(cmd, None, WAIT)
    }

    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(out.status.success(), "{script}: {}", text(&out));
        text(&out)
    }

    pub fn copy_in(&self, from: &Path, inside: &str) {
        let to = self.path(inside);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }

    /// mode, owner and group of a file inside, e.g. (0o640, "root", "pinpost").
    pub fn owner(&self, inside: &str) -> (u32, String, String) {
        let meta = std::fs::metadata(self.path(inside))
            .unwrap_or_else(|e| panic!("{inside} inside the root: {e}"));
        let name = |db: &str, id: u32| {
            std::fs::read_to_string(self.path(db))
                .unwrap()
                .lines()
                .find(|l| l.split(':').nth(2) == Some(&id.to_string()))
                .and_then(|l| l.split(':').next())
                .map(str::to_string)
                .unwrap_or_else(|| id.to_string())
        };
        (
            meta.mode() & 0o7777,
            name("/etc/passwd", meta.uid()),
            name("/etc/group", meta.gid()),
        )
    }
}
