//! The laptop's certificate folder, as every `certs` command and `enroll`
//! use it: where the CA, the broker's and each device's files live, the
//! names a device may have, reading the CA, and writing files so a crash
//! leaves the old file or the new one. It knows paths and words, not what
//! each command makes.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::CliError;
use crate::certs::{Authority, mosquitto};

/// Names a device (or the operator) cannot have: their files would sit
/// where the CA's or the broker's are expected, or be taken for them.
const RESERVED: [&str; 2] = ["ca", "broker"];

/// The `[device] id` of the config `file` (or the usual one), read from the
/// TOML alone: on a first install the files the config names (its
/// certificate and key) are not in place yet, so the config cannot be
/// loaded whole. Without an id, the device's id is this machine's name, as
/// for the agent.
pub(super) fn config_id(file: Option<&Path>) -> Result<String, CliError> {
    let Some(chosen) = super::choose_config(file) else {
        return crate::config::hostname().ok_or_else(|| {
            CliError::Input(
                "no config file and no host name to take the device id from: pass --device <id>"
                    .into(),
            )
        });
    };
    let path = chosen.path();
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::Input(format!(
            "cannot read {}: {}",
            path.display(),
            crate::words::io_words(&e)
        ))
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        CliError::Input(format!(
            "{} is not a valid config ({}): fix it, or pass --device <id>",
            path.display(),
            e.message()
        ))
    })?;
    match table.get("device").and_then(|d| d.get("id")) {
        Some(toml::Value::String(id)) => Ok(id.clone()),
        Some(_) => Err(CliError::Input(format!(
            "{}: device.id must be a string like \"pi-01\"",
            path.display()
        ))),
        None => crate::config::hostname().ok_or_else(|| {
            CliError::Input(format!(
                "{} has no [device] id and this machine has no name to use instead: set \
                 device.id, or pass --device <id>",
                path.display()
            ))
        }),
    }
}

pub(super) fn private_dir(dir: &Path) -> PathBuf {
    dir.join("private")
}

pub(super) fn device_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join("devices").join(id)
}

/// The private folder, 0700: only its owner may even list it.
pub(super) fn make_private_dir(dir: &Path) -> Result<(), CliError> {
    let private = private_dir(dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&private)
        .map_err(|e| io(&private, e))
}

/// The connection flags with the operator's own pair and the CA taken from
/// the certificate folder `dir`, unless named. A folder with neither a CA
/// nor the operator's folder (only a release key: a broker without TLS on
/// this machine) adds nothing.
pub(super) fn as_operator(
    dir: &Path,
    operator: &str,
    connection: &crate::cli::args::ConnectionArgs,
) -> crate::cli::args::ConnectionArgs {
    let mut connection = connection.clone();
    let own = device_dir(dir, operator);
    if !dir.join("ca.crt").exists() && !own.exists() {
        return connection;
    }
    connection.cafile.get_or_insert_with(|| dir.join("ca.crt"));
    connection
        .cert
        .get_or_insert_with(|| own.join(format!("{operator}.crt")));
    connection
        .key
        .get_or_insert_with(|| own.join(format!("{operator}.key")));
    connection
}

/// The device folders made so far (each named for its device).
pub(super) fn known_devices(dir: &Path) -> Result<Vec<String>, CliError> {
    let devices = dir.join("devices");
    let Ok(entries) = std::fs::read_dir(&devices) else {
        return Ok(Vec::new());
    };
    let mut found: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    found.sort();
    Ok(found)
}

pub(super) fn load_ca(dir: &Path) -> Result<Authority, CliError> {
    let (cert, key) = (dir.join("ca.crt"), private_dir(dir).join("ca.key"));
    let old = dir.join("ca.key");
    if !key.exists() && old.exists() {
        return Err(CliError::Input(format!(
            "{} is where older pinpost versions kept the CA key, next to what is copied to \
             devices; move it apart first: `mkdir -m 700 {p} && mv {o} {p}/`",
            old.display(),
            p = private_dir(dir).display(),
            o = old.display()
        )));
    }
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|e| {
            CliError::Input(format!(
                "cannot read {}: {}. Make the CA first with `pinpost certs ca` (or pass --dir \
                 with the folder that holds ca.crt and private/ca.key)",
                path.display(),
                crate::words::io_words(&e)
            ))
        })
    };
    let (cert_pem, key_pem) = (read(&cert)?, read(&key)?);
    Ok(Authority::load(
        &cert.display().to_string(),
        &cert_pem,
        &key_pem,
    )?)
}

/// Device ids name files, folders, topics and broker accounts: the same
/// rules as the broker's files, and none of the names the CA's and the
/// broker's files have.
pub(super) fn check_id(id: &str, what: &str) -> Result<(), CliError> {
    if let Some(why) = mosquitto::id_problem(id) {
        return Err(CliError::Input(format!(
            "{id:?} cannot be {what}: {why}; use letters, digits, '-', '_' and '.', like pi-01"
        )));
    }
    if RESERVED.contains(&id.to_ascii_lowercase().as_str()) {
        return Err(CliError::Input(format!(
            "{id:?} cannot be {what}: its files would be taken for the {}'s (ca.crt, \
             ca.key, broker.crt, broker.key are kept apart); choose another name, like pi-01",
            if id.eq_ignore_ascii_case("ca") {
                "CA"
            } else {
                "broker"
            }
        )));
    }
    Ok(())
}

pub(super) fn refuse_existing(
    paths: &[&PathBuf],
    force: bool,
    consequence: &str,
) -> Result<(), CliError> {
    if force {
        return Ok(());
    }
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        return Err(CliError::Input(format!(
            "{} exists and was left alone; pass --force to replace it ({consequence})",
            existing.display()
        )));
    }
    Ok(())
}

/// Writes through a temporary file so a crash leaves the old file or the
/// new one, never half of either; the mode is set before any byte lands.
pub(super) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CliError> {
    let tmp = write_tmp(path, bytes, mode)?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

/// The temporary file [`write_file`] renames into place: fresh beside
/// `path`, `mode` from its creation, synced. A caller that must change it
/// (its owner) before it takes `path`'s place renames it itself.
pub(super) fn write_tmp(path: &Path, bytes: &[u8], mode: u32) -> Result<PathBuf, CliError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io(&tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io(&tmp, e))?;
    Ok(tmp)
}

pub(super) fn io(path: &Path, e: std::io::Error) -> CliError {
    CliError::Input(format!(
        "cannot write {}: {}",
        path.display(),
        crate::words::io_words(&e)
    ))
}

/// Copies the release key's public half (`release.pub`, when the fleet
/// has one) into a device's folder, so it goes to the Pi with its
/// certificates; true when it did.
pub(super) fn share_release_key(dir: &Path, folder: &Path) -> Result<bool, CliError> {
    let public = dir.join(crate::preflight::RELEASE_PUB);
    if !public.is_file() {
        return Ok(false);
    }
    let bytes = std::fs::read(&public).map_err(|e| io(&public, e))?;
    write_file(&folder.join(crate::preflight::RELEASE_PUB), &bytes, 0o644)?;
    Ok(true)
}
