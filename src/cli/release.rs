//! `pinpost release sign|verify` and `pinpost certs release-key`: the
//! laptop's side of signed releases. The package's facts come from
//! `dpkg-deb`, its size and SHA-256 from reading it through once.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::CliError;
use super::args::ReleaseCommand;
use super::fleet::{
    device_dir, known_devices, make_private_dir, private_dir, refuse_existing, share_release_key,
    write_file,
};
use super::rollout::Targets;
use super::signed::{KEY_LIMIT, check_package, digest, open, public_key, read_limited};
use crate::release::key::{self, Public, Signer};
use crate::release::manifest::{self, Manifest};

pub(super) async fn run(what: &ReleaseCommand) -> Result<(), CliError> {
    match what {
        ReleaseCommand::Sign {
            package,
            key,
            replaces,
            downgrade,
            expires,
            out,
        } => sign(package, key, replaces, *downgrade, *expires, out.as_deref()),
        ReleaseCommand::Verify {
            manifest,
            package,
            key,
            installed,
            architecture,
        } => {
            let device = installed.as_deref().map(|v| (v, architecture.as_deref()));
            verify(manifest, package.as_deref(), key, device)
        }
        ReleaseCommand::Publish {
            manifest,
            package,
            devices,
            all,
            percent,
            fleet,
            connection,
        } => {
            let targets = match (percent, all) {
                (Some(p), _) => Targets::Percent(*p),
                (None, true) => Targets::All,
                (None, false) => Targets::Listed(devices),
            };
            if super::configs::is_signed_config(manifest) {
                return super::configs::publish(manifest, &targets, fleet, connection).await;
            }
            super::rollout::publish(manifest, package.as_deref(), targets, fleet, connection).await
        }
        ReleaseCommand::SignConfig {
            config,
            key,
            expires,
            out,
        } => super::configs::sign(config, key, *expires, out.as_deref()),
        ReleaseCommand::Withdraw {
            manifest,
            fleet,
            connection,
        } => super::rollout::withdraw(manifest, fleet, connection).await,
        ReleaseCommand::Status { fleet, connection } => {
            super::rollout::status(fleet, connection).await
        }
    }
}

/// `certs release-key`: the private half beside the CA key, the public
/// half beside ca.crt.
pub(super) fn make_key(dir: &Path, force: bool) -> Result<(), CliError> {
    let (private, public) = (
        private_dir(dir).join("release.key"),
        dir.join("release.pub"),
    );
    refuse_existing(
        &[&private, &public],
        force,
        "every device trusts the old key until it gets the new release.pub, and refuses \
         releases signed with the new one",
    )?;
    let (private_pem, public_pem) = key::generate().map_err(|e| CliError::Input(e.to_string()))?;
    make_private_dir(dir)?;
    write_file(&private, private_pem.as_bytes(), 0o600)?;
    write_file(&public, public_pem.as_bytes(), 0o644)?;
    let id = Public::from_pem(public_pem.as_bytes())
        .map_err(|e| CliError::Input(e.to_string()))?
        .id();
    // Each device folder gets the public half, to go to its Pi with its
    // certificates (push.sh, install.sh).
    let mut shared = Vec::new();
    for device in known_devices(dir)? {
        if share_release_key(dir, &device_dir(dir, &device))? {
            shared.push(device);
        }
    }
    println!(
        "Made the release key {id}: {} (keep it secret, ideally offline: whoever holds it can \
         put code on every device; it never goes to the broker or a Pi) and {} (for every Pi, \
         with its config: [update] release_key).",
        private.display(),
        public.display()
    );
    if !shared.is_empty() {
        println!(
            "Copied release.pub into the device folders of {} (and `certs device` puts it in \
             each new one).",
            shared.join(", ")
        );
    }
    println!("Next: pinpost release sign <package>.deb");
    Ok(())
}

/// Package, Version and Architecture from the .deb's control file.
fn control(path: &Path) -> Result<(String, String, String), CliError> {
    let out = Command::new("dpkg-deb")
        .arg("--field")
        .arg(path)
        .args(["Package", "Version", "Architecture"])
        .output()
        .map_err(|e| {
            CliError::Input(format!(
                "cannot run dpkg-deb to read {} ({}): install the dpkg package",
                path.display(),
                crate::words::io_words(&e)
            ))
        })?;
    if !out.status.success() {
        return Err(CliError::Input(format!(
            "{} is not a Debian package: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_string)
            .ok_or_else(|| CliError::Input(format!("{} has no {name} field", path.display())))
    };
    Ok((field("Package")?, field("Version")?, field("Architecture")?))
}

fn sign(
    package: &Path,
    key_file: &Path,
    replaces: &[String],
    downgrade: bool,
    expires: std::time::Duration,
    out: Option<&Path>,
) -> Result<(), CliError> {
    let signer = Signer::from_pem(&read_limited(key_file, KEY_LIMIT, "a key")?)
        .map_err(|e| CliError::Input(format!("{}: {e}", key_file.display())))?;
    let (name, version, architecture) = control(package)?;
    let (size, sha256) = digest(package)?;
    let now = crate::utc::now_unix();
    let life = i64::try_from(expires.as_secs()).unwrap_or(i64::MAX);
    let manifest = Manifest {
        format: 1,
        package: name,
        version,
        architecture,
        size,
        sha256: crate::hex::hex(&sha256),
        replaces: replaces.to_vec(),
        downgrade,
        issued: now,
        expires: now.saturating_add(life),
    };
    let signed = manifest
        .sign(&signer)
        .map_err(|e| CliError::Input(format!("{}: {e}", package.display())))?;
    let path = out.map_or_else(|| with_suffix(package, ".manifest"), Path::to_path_buf);
    write_file(&path, &signed, 0o644)?;
    println!(
        "Signed {} {} for {} ({} bytes, SHA-256 {}) with the release key {}: {}; devices \
         apply it until {}.",
        manifest.package,
        manifest.version,
        manifest.architecture,
        manifest.size,
        manifest.sha256,
        signer.public().id(),
        path.display(),
        crate::utc::human(manifest.expires)
    );
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// `device`: a version (and architecture) to judge it for, as a device
/// running it would.
fn verify(
    manifest_file: &Path,
    package: Option<&Path>,
    key_file: &Path,
    device: Option<(&str, Option<&str>)>,
) -> Result<(), CliError> {
    let public = public_key(key_file)?;
    let (manifest, _) = open(manifest_file, &public)?;
    check_package(&manifest, manifest_file, package)?;
    if let Some((version, architecture)) = device {
        let installed = manifest::Installed {
            package: &manifest.package,
            version,
            architecture: architecture.unwrap_or(&manifest.architecture),
            newest_issued: None,
        };
        manifest
            .admit(&installed, Some(crate::utc::now_unix()))
            .map_err(|e| CliError::Input(format!("a device running {version} refuses it: {e}")))?;
    }
    println!(
        "Good: {} {} for {}, {} bytes, signed by the release key {} at {}; devices apply it \
         until {}.",
        manifest.package,
        manifest.version,
        manifest.architecture,
        manifest.size,
        public.id(),
        crate::utc::human(manifest.issued),
        crate::utc::human(manifest.expires)
    );
    Ok(())
}
