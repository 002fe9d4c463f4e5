//! `pinpost certs rotate-ca`: replacing the fleet's CA without a day on
//! which devices and broker disagree. A change-over has two ends:
//!
//! - start: a new CA is made (`ca.crt`, `private/ca.key`); the old one is
//!   kept as `ca-old.crt` and `private/ca-old.key`; `ca-bundle.crt` holds
//!   both, and becomes the `ca.crt` of the broker's folder and of every
//!   device's, so broker and devices trust either CA while certificates are
//!   re-issued one by one (a device's own request signs again as it is:
//!   its key does not change);
//! - `--finish`: once the broker and every device hold a certificate from
//!   the new CA (refused otherwise, naming who does not), every folder's
//!   `ca.crt` is the new CA alone, and the old CA's key is deleted.
//!
//! It says the order of the steps in between. It knows the certs folder's
//! layout, not Mosquitto or the devices.

use std::path::{Path, PathBuf};

use super::CliError;
use super::fleet::{io, known_devices, load_ca, write_file};
use crate::certs::{self, KeyKind};

const OLD: &str = "ca-old.crt";
const OLD_KEY: &str = "ca-old.key";
const BUNDLE: &str = "ca-bundle.crt";
/// The new CA while a change-over starts, before it takes ca.crt's place.
const NEXT: &str = "ca-next.crt";
const NEXT_KEY: &str = "ca-next.key";

/// The new CA and the old one: what everyone trusts during a change-over.
fn bundle_of(dir: &Path) -> Result<Vec<u8>, CliError> {
    let read = |path: PathBuf| std::fs::read(&path).map_err(|e| io(&path, e));
    let mut bundle = read(dir.join("ca.crt"))?;
    if !bundle.ends_with(b"\n") {
        bundle.push(b'\n');
    }
    bundle.extend_from_slice(&read(dir.join(OLD))?);
    Ok(bundle)
}

/// Whether a change-over's start was cut short: the new CA not yet in
/// place, or the bundle not yet everywhere.
fn cut_short(dir: &Path) -> Result<bool, CliError> {
    if dir.join(NEXT).exists() || dir.join("private").join(NEXT_KEY).exists() {
        return Ok(true);
    }
    let bundle = bundle_of(dir)?;
    if std::fs::read(dir.join(BUNDLE)).ok().as_deref() != Some(bundle.as_slice()) {
        return Ok(true);
    }
    for (_, folder) in folders(dir)? {
        if std::fs::read(folder.join("ca.crt")).ok().as_deref() != Some(bundle.as_slice()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What every folder's ca.crt is now: both CAs during a change-over.
pub(super) fn ca_for_folders(dir: &Path) -> PathBuf {
    let bundle = dir.join(BUNDLE);
    if bundle.exists() {
        bundle
    } else {
        dir.join("ca.crt")
    }
}

/// The broker's folder and every device's, which get a `ca.crt`.
fn folders(dir: &Path) -> Result<Vec<(String, PathBuf)>, CliError> {
    let mut all = Vec::new();
    if dir.join("broker").is_dir() {
        all.push(("broker".to_string(), dir.join("broker")));
    }
    for id in known_devices(dir)? {
        all.push((id.clone(), dir.join("devices").join(id)));
    }
    Ok(all)
}

pub(super) fn start(dir: &Path, name: Option<&str>, rsa: bool, now: i64) -> Result<(), CliError> {
    let private = dir.join("private");
    let resumed = dir.join(OLD).exists();
    if resumed && !cut_short(dir)? {
        return Err(CliError::Input(format!(
            "a change-over is under way ({} is there): finish it first with `pinpost certs \
             rotate-ca --finish`",
            dir.join(OLD).display()
        )));
    }
    // Each step leaves the folder in a state this function, run again,
    // goes on from (a power cut, Ctrl-C): the new CA is made beside the
    // old one, the old one copied aside, then the new one renamed into
    // place, then the bundle written.
    if !resumed {
        // The old CA must be whole before anything moves.
        load_ca(dir)?;
        let next_key = private.join(NEXT_KEY);
        if !(dir.join(NEXT).exists() && next_key.exists()) {
            let (y, m, d) = crate::utc::date(now);
            let name = name.map_or_else(
                || format!("pinpost CA {y:04}-{m:02}-{d:02}"),
                str::to_string,
            );
            let kind = if rsa {
                KeyKind::Rsa2048
            } else {
                KeyKind::EcdsaP256
            };
            let new = certs::new_ca(&name, kind, now)?;
            write_file(&next_key, new.key_pem.as_bytes(), 0o600)?;
            write_file(&dir.join(NEXT), new.cert_pem.as_bytes(), 0o644)?;
        }
        let read = |path: PathBuf| std::fs::read(&path).map_err(|e| io(&path, e));
        write_file(
            &private.join(OLD_KEY),
            &read(private.join("ca.key"))?,
            0o600,
        )?;
        // Last: its presence says the old CA is safe aside.
        write_file(&dir.join(OLD), &read(dir.join("ca.crt"))?, 0o644)?;
    }
    let move_to = |from: PathBuf, to: PathBuf| std::fs::rename(&from, &to).map_err(|e| io(&to, e));
    if private.join(NEXT_KEY).exists() {
        move_to(private.join(NEXT_KEY), private.join("ca.key"))?;
    }
    if dir.join(NEXT).exists() {
        move_to(dir.join(NEXT), dir.join("ca.crt"))?;
    }
    let bundle = bundle_of(dir)?;
    write_file(&dir.join(BUNDLE), &bundle, 0o644)?;
    for (_, folder) in folders(dir)? {
        write_file(&folder.join("ca.crt"), &bundle, 0o644)?;
    }
    // Whole again: the new CA must load before anyone signs with it.
    load_ca(dir)?;
    if resumed {
        println!("A change-over was cut short; it is finished now.");
    }
    let name = std::fs::read(dir.join("ca.crt"))
        .ok()
        .and_then(|pem| crate::tls::ca_certificates(&pem).into_iter().next())
        .and_then(|der| crate::tls::CertSummary::from_der(&der))
        .and_then(|c| c.common_name)
        .unwrap_or_default();
    let b = dir.join("broker").display().to_string();
    println!(
        "Made the new CA {name:?}: {} (its key in {}); the old one is kept as {} and {} until \
         the change-over ends. {} holds both, and is now the ca.crt of the broker's folder and \
         of every device's.",
        dir.join("ca.crt").display(),
        private.join("ca.key").display(),
        dir.join(OLD).display(),
        private.join(OLD_KEY).display(),
        dir.join(BUNDLE).display()
    );
    println!("In this order:");
    println!(
        "1. Both CAs trusted everywhere: on the broker `sudo install -m 0644 {b}/ca.crt \
         /etc/mosquitto/certs/ && sudo systemctl restart mosquitto`; on every device its \
         folder's ca.crt (deploy/push.sh … --certs certs/devices/<id>)."
    );
    println!(
        "2. The broker's certificate from the new CA: pinpost certs broker --force --host …, \
         installed on the broker, Mosquitto restarted (devices trust it by step 1)."
    );
    println!(
        "3. Each device's certificate from the new CA: pinpost certs sign \
         certs/devices/<id>/<id>.csr --force for a device that enrolled (its key stays), or \
         pinpost certs device <id> --force; installed on the device."
    );
    println!(
        "4. pinpost certs rotate-ca --finish: ca.crt everywhere is the new CA alone, and the \
         old CA's key is deleted; install the new ca.crt on the broker and the devices."
    );
    Ok(())
}

pub(super) fn finish(dir: &Path, force: bool) -> Result<(), CliError> {
    let old = dir.join(OLD);
    if !old.exists() {
        return Err(CliError::Input(format!(
            "no change-over is under way ({} is not there); start one with `pinpost certs \
             rotate-ca`",
            old.display()
        )));
    }
    let new_pem = std::fs::read(dir.join("ca.crt")).map_err(|e| io(&dir.join("ca.crt"), e))?;
    let new_der = rustls_pki_types::pem::PemObject::from_pem_slice(&new_pem)
        .map(|c: rustls_pki_types::CertificateDer<'static>| c.as_ref().to_vec())
        .map_err(|_| CliError::Input(format!("{}/ca.crt is not a certificate", dir.display())))?;
    let mut behind = Vec::new();
    for (who, folder) in folders(dir)? {
        let cert = folder.join(format!("{who}.crt"));
        let issued_new = std::fs::read(&cert)
            .ok()
            .and_then(|pem| {
                rustls_pki_types::pem::PemObject::from_pem_slice(&pem)
                    .ok()
                    .map(|c: rustls_pki_types::CertificateDer<'static>| c.as_ref().to_vec())
            })
            .is_some_and(|der| crate::tls::issued_by(&der, &new_der));
        if !issued_new {
            behind.push(who);
        }
    }
    if !behind.is_empty() && !force {
        return Err(CliError::Input(format!(
            "not finished: {} still hold a certificate from the old CA (or none here), and \
             would be refused once only the new CA is trusted; re-issue them (steps 2 and 3 \
             of the change-over), or pass --force to drop them",
            behind.join(", ")
        )));
    }
    for (_, folder) in folders(dir)? {
        write_file(&folder.join("ca.crt"), &new_pem, 0o644)?;
    }
    let old_key = dir.join("private").join(OLD_KEY);
    std::fs::remove_file(&old_key).map_err(|e| io(&old_key, e))?;
    std::fs::remove_file(&old).map_err(|e| io(&old, e))?;
    let bundle = dir.join(BUNDLE);
    std::fs::remove_file(&bundle).map_err(|e| io(&bundle, e))?;
    println!(
        "Finished: the ca.crt of the broker's folder and of every device's is the new CA \
         alone, and the old CA's key is deleted. Install ca.crt on the broker (restart \
         Mosquitto) and on every device; until then they also trust the old CA, which no \
         longer signs anything."
    );
    Ok(())
}
