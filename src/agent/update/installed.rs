//! What this device runs, as a release is judged against it: the version
//! dpkg installed (the number a manifest's `replaces` and order speak of),
//! or this binary's own when it did not come from a package (a build run
//! by hand), and the Debian architecture it was built for.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// dpkg's record of what is installed.
pub(super) const DPKG_STATUS: &str = "/var/lib/dpkg/status";

/// The package this agent ships as.
pub(super) const PACKAGE: &str = "pinpost";

/// The Debian architecture of this build.
pub(super) fn architecture() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else if cfg!(target_arch = "arm") {
        "armhf"
    } else if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "x86") {
        "i386"
    } else {
        "unknown"
    }
}

/// The installed version of pinpost per dpkg's `status`, else this
/// binary's version.
pub(super) fn version(status: &Path) -> String {
    std::fs::File::open(status)
        .ok()
        .and_then(|f| installed_version(f, PACKAGE))
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
}

/// `package`'s version in a dpkg status file, if it is installed. Read a
/// line at a time: the file holds every package on the system.
fn installed_version(status: impl Read, package: &str) -> Option<String> {
    let mut name = None::<String>;
    let mut version = None::<String>;
    let mut installed = false;
    for line in BufReader::new(status).lines() {
        let Ok(line) = line else { break };
        if line.is_empty() {
            if name.as_deref() == Some(package) && installed {
                return version;
            }
            (name, version, installed) = (None, None, false);
        } else if let Some(v) = line.strip_prefix("Package: ") {
            name = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("Version: ") {
            version = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("Status: ") {
            // Installed, or half way there or back (a cut during dpkg):
            // that version is on disk. Removed, its config left, is not.
            let state = v.trim().rsplit(' ').next().unwrap_or("");
            installed = !matches!(state, "not-installed" | "config-files");
        }
    }
    (name.as_deref() == Some(package) && installed)
        .then_some(version)
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n\n\
        Package: pinpost\nStatus: deinstall ok config-files\nVersion: 0.1.0-1\n\n\
        Package: pinpost\nStatus: install ok installed\nArchitecture: arm64\nVersion: 0.3.0-1\n";

    #[test]
    fn the_installed_package_is_read_and_a_removed_one_is_not() {
        assert_eq!(
            installed_version(STATUS.as_bytes(), "pinpost").as_deref(),
            Some("0.3.0-1")
        );
        let removed = "Package: pinpost\nStatus: deinstall ok config-files\nVersion: 0.1.0-1\n";
        assert_eq!(installed_version(removed.as_bytes(), "pinpost"), None);
        // dpkg cut short: the version it was unpacking is what is there.
        let half = "Package: pinpost\nStatus: install reinstreq half-installed\nVersion: 0.1.0-5\n";
        assert_eq!(
            installed_version(half.as_bytes(), "pinpost").as_deref(),
            Some("0.1.0-5")
        );
        assert_eq!(installed_version(&b"\xff\xfe garbage"[..], "pinpost"), None);
    }

    #[test]
    fn without_a_package_this_binary_says_its_own_version() {
        assert_eq!(
            version(Path::new("/nonexistent/status")),
            env!("CARGO_PKG_VERSION")
        );
    }
}
