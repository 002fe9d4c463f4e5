//! `pinpost enroll`: on the device, the key its config names and a request
//! for a certificate, so the key is born where it is used and never leaves:
//! only the request goes to the laptop that holds the CA (`pinpost certs
//! sign`), and only certificates come back.
//!
//! A key already there is kept and asked for again (a Pi re-enrolled, or a
//! request lost on the way); `--force` makes a new one.

use std::path::{Path, PathBuf};

use super::CliError;
use super::fleet::{io, write_file, write_tmp};
use crate::certs::request;
use crate::certs::{CertsError, KeyKind};
use crate::cli::args::EnrollArgs;

/// The account the service runs as (deploy/pinpost.service).
const SERVICE_USER: &str = "pinpost";
/// Larger than any key file pinpost writes.
const MAX_KEY_BYTES: u64 = 64 * 1024;

pub(super) fn run(args: &EnrollArgs) -> Result<(), CliError> {
    let chosen = super::required_config(args.config.as_deref())?;
    // Read as TOML only: the certificate the config names does not exist
    // yet, so the config cannot be loaded whole (as for `certs verify`).
    let id = super::fleet::config_id(Some(chosen.path()))?;
    super::fleet::check_id(&id, "a device id")?;
    let key_path = key_file(chosen.path(), &id)?;
    let request_path = key_path.with_file_name(format!("{id}.csr"));
    let kind = if args.rsa {
        KeyKind::Rsa2048
    } else {
        KeyKind::EcdsaP256
    };
    let (key, made) = if key_path.exists() && !args.force {
        (read_key(&key_path)?, false)
    } else {
        let key = request::new_key(kind)?;
        write_key(&key_path, &key.serialize_pem())?;
        (key, true)
    };
    let pem = request::make(&id, &key)?;
    write_file(&request_path, pem.as_bytes(), 0o644)?;
    if made {
        println!(
            "Made {}: this device's key (mode 0600{}). It never leaves this device.",
            key_path.display(),
            owner_words()
        );
    } else {
        println!(
            "Kept {}, the key already there (--force makes a new one, and its certificate \
             stops working).",
            key_path.display()
        );
    }
    println!(
        "Made {}: a request for a certificate for {id}. Copy it (only it) to the laptop that \
         holds the CA, and there:",
        request_path.display()
    );
    println!("  pinpost certs sign {id}.csr");
    println!(
        "Then bring back ca.crt and {id}.crt from certs/devices/{id}/ (deploy/push.sh HOST \
         TARGET --certs certs/devices/{id} does it), into {}.",
        key_path
            .parent()
            .map_or_else(|| ".".into(), |p| p.display().to_string())
    );
    Ok(())
}

/// `[broker.tls] key_file` of the config at `path`, resolved against the
/// config's folder as the agent resolves it.
fn key_file(path: &Path, id: &str) -> Result<PathBuf, CliError> {
    let file = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::Input(format!(
            "cannot read {file}: {}",
            crate::words::io_words(&e)
        ))
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        CliError::Input(format!(
            "{file} is not a valid config ({}): fix it first (pinpost check --offline says where)",
            e.message().trim_end()
        ))
    })?;
    let named = table
        .get("broker")
        .and_then(|b| b.get("tls"))
        .and_then(|t| t.get("key_file"));
    match named {
        Some(toml::Value::String(key)) if !key.is_empty() => {
            let key = Path::new(key);
            Ok(match path.parent() {
                Some(dir) if key.is_relative() => dir.join(key),
                _ => key.to_path_buf(),
            })
        }
        Some(_) => Err(CliError::Input(format!(
            "{file}: broker.tls.key_file must be a path like \"/etc/pinpost/certs/{id}.key\""
        ))),
        None => Err(CliError::Input(format!(
            "{file} names no key: set [broker.tls] key_file = \"/etc/pinpost/certs/{id}.key\" \
             (and cert_file, ca_file), where the key is to be made"
        ))),
    }
}

/// The key already there, if it is one pinpost can ask for.
fn read_key(path: &Path) -> Result<rcgen::KeyPair, CliError> {
    let words = |why: String| {
        CliError::Input(format!(
            "{} is there but {why}; move it away, or give --force to make a new key there \
             (its certificate stops working)",
            path.display()
        ))
    };
    let size = std::fs::metadata(path)
        .map_err(|e| words(format!("cannot be read ({})", crate::words::io_words(&e))))?
        .len();
    if size > MAX_KEY_BYTES {
        return Err(words(format!("is {size} bytes, far larger than a key")));
    }
    let pem = std::fs::read_to_string(path)
        .map_err(|e| words(format!("cannot be read ({})", crate::words::io_words(&e))))?;
    request::read_key(&pem).map_err(|e| match e {
        CertsError::KeyGen(why) => words(why),
        other => words(other.to_string()),
    })
}

/// The key, 0600 from its first byte, for the service's user when run as
/// root (the agent reads it, and renews it in place).
fn write_key(path: &Path, pem: &str) -> Result<(), CliError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    let tmp = write_tmp(path, pem.as_bytes(), 0o600)?;
    if let Some((uid, gid)) = service_owner() {
        std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).map_err(|e| io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

/// The service user's ids, when this runs as root and the user exists.
fn service_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == SERVICE_USER).then_some(())?;
        let _password = fields.next()?;
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    })
}

fn owner_words() -> String {
    match service_owner() {
        Some(_) => format!(", owned by {SERVICE_USER}"),
        None => String::new(),
    }
}
