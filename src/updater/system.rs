//! The real `System`: dpkg, systemctl and journalctl, each run with its
//! output kept for the words of a failure. Also the repack: the installed
//! package rebuilt from dpkg's own record of it (its control fields, its
//! maintainer scripts, its files as installed), as `dpkg-repack` does, so
//! there is always a package to go back to even when the running one came
//! from `apt install ./pinpost.deb` and was never kept.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::System;
use super::gate::{self, Unit};

/// The package, and the unit the helper restarts and watches.
const PACKAGE: &str = "pinpost";
const UNIT: &str = "pinpost.service";
/// The maintainer scripts and control files a repack carries over.
const CONTROL_FILES: [&str; 5] = ["preinst", "postinst", "prerm", "postrm", "conffiles"];

/// dpkg and systemd on this machine.
pub(crate) struct Real {
    started: Instant,
}

impl Real {
    pub(crate) fn new() -> Real {
        Real {
            started: Instant::now(),
        }
    }
}

/// Runs `program` and gives its standard output; on failure, its last
/// lines in words.
fn output(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| format!("cannot run {program}: {}", crate::words::io_words(&e)))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut said = String::from_utf8_lossy(&out.stderr).into_owned();
    said.push_str(&String::from_utf8_lossy(&out.stdout));
    Err(format!(
        "{program} {} failed ({}): {}",
        args.join(" "),
        out.status,
        tail(&said, 6)
    ))
}

/// The last `n` non-empty lines, joined with " | ".
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut joined = lines[lines.len().saturating_sub(n)..].join(" | ");
    if joined.len() > 800 {
        let cut = (0..=joined.len() - 800)
            .rev()
            .find(|i| joined.is_char_boundary(*i))
            .unwrap_or(0);
        joined = format!("…{}", &joined[cut..]);
    }
    joined
}

impl System for Real {
    fn installed(&mut self) -> Result<Option<String>, String> {
        match output(
            "dpkg-query",
            &["-W", "-f=${db:Status-Abbrev}\t${Version}", PACKAGE],
        ) {
            Ok(text) => {
                let (status, version) = text.split_once('\t').unwrap_or(("", ""));
                // `ii `: wanted and installed, configured.
                Ok(status.starts_with("ii").then(|| version.trim().to_string()))
            }
            Err(_) => Ok(None),
        }
    }

    fn architecture(&mut self) -> Result<String, String> {
        output("dpkg", &["--print-architecture"]).map(|a| a.trim().to_string())
    }

    fn repair(&mut self) -> Result<(), String> {
        output("dpkg", &["--configure", "-a"]).map(|_| ())
    }

    fn repack(&mut self, into: &Path) -> Result<PathBuf, String> {
        repack(into)
    }

    fn install(&mut self, deb: &Path) -> Result<(), String> {
        let path = deb.to_string_lossy();
        output("dpkg", &["--force-confold", "-i", &path]).map(|_| ())
    }

    fn restart(&mut self) -> Result<(), String> {
        let _ = output("systemctl", &["reset-failed", UNIT]);
        output("systemctl", &["restart", "--no-block", UNIT]).map(|_| ())
    }

    fn unit(&mut self) -> Result<Unit, String> {
        output("systemctl", &["show", UNIT, "-p", gate::PROPERTIES]).map(|t| gate::parse_show(&t))
    }

    fn log_tail(&mut self, since_unix: i64, invocation: &str) -> String {
        let since = format!("@{since_unix}");
        // The run that failed, alone: not the previous agent's shutdown.
        let this_run = format!("_SYSTEMD_INVOCATION_ID={invocation}");
        if !invocation.is_empty() && invocation.chars().all(|c| c.is_ascii_hexdigit()) {
            let args = [this_run.as_str(), "-n", "8", "-o", "cat", "--no-pager"];
            if let Ok(text) = output("journalctl", &args) {
                if !text.trim().is_empty() {
                    return tail(&text, 8);
                }
            }
        }
        let args = [
            "-u",
            UNIT,
            "--since",
            &since,
            "-n",
            "8",
            "-o",
            "cat",
            "--no-pager",
        ];
        match output("journalctl", &args) {
            Ok(text) => tail(&text, 8),
            Err(e) => format!("(its log could not be read: {e})"),
        }
    }

    fn save_helper(&mut self, to: &Path) -> Result<(), String> {
        // Without /proc (a chroot) the path it was started by, as the
        // unit names it.
        let me = std::env::current_exe()
            .or_else(|_| {
                std::env::args_os()
                    .next()
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
                    .ok_or(())
            })
            .unwrap_or_else(|()| PathBuf::from("/usr/bin/pinpost"));
        let tmp = to.with_extension("tmp");
        let copied = fs::copy(&me, &tmp)
            .and_then(|_| fs::File::open(&tmp)?.sync_all())
            .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)))
            .and_then(|()| fs::rename(&tmp, to));
        copied.map_err(|e| {
            format!(
                "cannot keep a copy of this helper at {}: {}",
                to.display(),
                crate::words::io_words(&e)
            )
        })
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn elapsed(&mut self) -> Duration {
        self.started.elapsed()
    }
}

/// Rebuilds the installed pinpost into `into/<pkg>_<ver>_<arch>.deb` with
/// `dpkg-deb`, from dpkg's status (control fields), its info folder
/// (maintainer scripts) and its file list (the files as they are now).
fn repack(into: &Path) -> Result<PathBuf, String> {
    let status = output("dpkg-query", &["-s", PACKAGE])?;
    let control = control_of(&status);
    let field = |name: &str| {
        control
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    let (version, arch) = (field("Version"), field("Architecture"));
    if version.is_empty() || arch.is_empty() {
        return Err("dpkg's record of pinpost has no version or architecture".into());
    }
    let words = |e: io::Error| {
        format!(
            "cannot repack {PACKAGE} {version}: {}",
            crate::words::io_words(&e)
        )
    };
    let staging = into.join("staging");
    let _ = fs::remove_dir_all(&staging);
    let debian = staging.join("DEBIAN");
    fs::create_dir_all(&debian).map_err(words)?;
    fs::write(debian.join("control"), &control).map_err(words)?;
    let info = output("dpkg-query", &["--control-path", PACKAGE])?;
    for path in info.lines().map(Path::new) {
        let Some(name) = path.extension().and_then(|e| e.to_str()) else {
            continue;
        };
        if CONTROL_FILES.contains(&name) {
            let to = debian.join(name);
            fs::copy(path, &to).map_err(words)?;
            let mode = if name == "conffiles" { 0o644 } else { 0o755 };
            fs::set_permissions(&to, fs::Permissions::from_mode(mode)).map_err(words)?;
        }
    }
    for line in output("dpkg-query", &["-L", PACKAGE])?.lines() {
        let path = Path::new(line.trim());
        if !path.is_absolute() || path == Path::new("/.") {
            continue;
        }
        let Ok(rel) = path.strip_prefix("/") else {
            continue;
        };
        let to = staging.join(rel);
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            // A file the admin removed is not in the repack either.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(words(e)),
        };
        if meta.is_dir() {
            fs::create_dir_all(&to).map_err(words)?;
            fs::set_permissions(&to, meta.permissions()).map_err(words)?;
            continue;
        }
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(words)?;
        }
        if meta.file_type().is_symlink() {
            symlink(fs::read_link(path).map_err(words)?, &to).map_err(words)?;
        } else if meta.is_file() {
            fs::copy(path, &to).map_err(words)?;
            fs::set_permissions(&to, meta.permissions()).map_err(words)?;
        }
    }
    let deb = into.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    let tmp = into.join("repack.deb.tmp");
    let staged = staging.to_string_lossy().into_owned();
    let built = output(
        "dpkg-deb",
        // Fast compression: the copy never leaves this Pi, and xz took half
        // a minute of the install on an emulated Pi.
        &[
            "-Zgzip",
            "-z1",
            "--root-owner-group",
            "--build",
            &staged,
            &tmp.to_string_lossy(),
        ],
    );
    let _ = fs::remove_dir_all(&staging);
    built?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .and_then(|()| fs::rename(&tmp, &deb))
        .map_err(words)?;
    // One previous package is kept: older ones are of no use.
    if let Ok(entries) = fs::read_dir(into) {
        for entry in entries.flatten() {
            if entry.path() != deb {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    super::files::sync_dir(into).map_err(words)?;
    Ok(deb)
}

/// A package's control file from its `dpkg-query -s` stanza: the fields
/// that describe an installed copy (status, conffiles' sums) left out.
fn control_of(status: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in status.lines() {
        if line.starts_with(' ') || line.starts_with('\t') {
            if !skipping {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        let name = line.split(':').next().unwrap_or("");
        skipping = matches!(name, "Status" | "Conffiles" | "Config-Version") || line.is_empty();
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_file_keeps_the_description_and_drops_the_installed_state() {
        let status = "Package: pinpost\nStatus: install ok installed\nVersion: 0.1.0-1\n\
                      Conffiles:\n /etc/x 0123\nDescription: an agent\n more words\n";
        assert_eq!(
            control_of(status),
            "Package: pinpost\nVersion: 0.1.0-1\nDescription: an agent\n more words\n"
        );
    }

    #[test]
    fn a_tail_keeps_the_last_lines_and_a_bounded_length() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b | c");
        let long = "é".repeat(1000);
        assert!(tail(&long, 1).len() <= 804);
    }
}
