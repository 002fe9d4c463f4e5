//! `pinpost certs`: writes what [`crate::certs`] makes into a folder laid
//! out so that the safe thing is the easy thing, keys mode 0600 and nothing
//! replaced without `--force`, then says in plain words what to copy where:
//!
//! ```text
//! certs/ca.crt                 the CA certificate (public)
//! certs/private/ca.key         the CA key (folder 0700): never leaves the laptop
//! certs/broker/                everything the broker gets: ca.crt, broker.crt,
//!                              broker.key, pinpost.conf, pinpost.acl
//! certs/devices/<id>/          exactly what device <id> gets: ca.crt, <id>.crt, <id>.key
//! ```

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::CliError;
use crate::certs::{self, Authority, Issued, KeyKind, mosquitto};
use crate::cli::args::{CertsArgs, CertsCommand};

/// Names a device (or the operator) cannot have: their files would sit
/// where the CA's or the broker's are expected, or be taken for them.
const RESERVED: [&str; 2] = ["ca", "broker"];

pub(super) async fn run(args: CertsArgs) -> Result<(), CliError> {
    let dir = &args.dir;
    let now = crate::utc::now_unix();
    let kind = |rsa: bool| {
        if rsa {
            KeyKind::Rsa2048
        } else {
            KeyKind::EcdsaP256
        }
    };
    match &args.what {
        CertsCommand::Ca { name, rsa } => {
            let (cert, key) = (dir.join("ca.crt"), private_dir(dir).join("ca.key"));
            refuse_existing(
                &[&cert, &key],
                args.force,
                "devices signed by the old CA stop connecting",
            )?;
            let issued = certs::new_ca(name, kind(*rsa), now)?;
            make_private_dir(dir)?;
            write_file(&key, issued.key_pem.as_bytes(), 0o600)?;
            write_file(&cert, issued.cert_pem.as_bytes(), 0o644)?;
            println!(
                "Made the CA {name:?}: {} (share it with the broker and every device) and {} \
                 (keep it secret, ideally offline: whoever holds it can make devices; it \
                 never goes to the broker or a Pi).",
                cert.display(),
                key.display()
            );
            println!("Next: pinpost certs broker --host <the broker's address>");
        }
        CertsCommand::Broker { hosts, rsa } => {
            let authority = load_ca(dir)?;
            let folder = dir.join("broker");
            let (cert, key) = make_pair(
                dir,
                &folder,
                "broker",
                args.force,
                "the broker keeps its old certificate until you copy the new one",
                || authority.broker(hosts, kind(*rsa), now),
            )?;
            let d = folder.display();
            println!(
                "Made the broker certificate for {}: {} and {}.",
                hosts.join(", "),
                cert.display(),
                key.display()
            );
            println!("On the broker (copy the folder {d} there; nothing else):");
            println!("  sudo install -d /etc/mosquitto/certs");
            println!("  sudo install -m 0644 {d}/ca.crt {d}/broker.crt /etc/mosquitto/certs/");
            println!("  sudo install -m 0640 -g mosquitto {d}/broker.key /etc/mosquitto/certs/");
            println!(
                "Devices must connect with one of these names; add more with --host and run \
                 this again with --force."
            );
            println!(
                "Next: pinpost certs device <id> for each Pi and the operator, then pinpost certs mosquitto."
            );
        }
        CertsCommand::Device { id, rsa } => {
            check_id(id, "a device id")?;
            let authority = load_ca(dir)?;
            let folder = device_dir(dir, id);
            let (cert, key) = make_pair(
                dir,
                &folder,
                id,
                args.force,
                "the device keeps its old certificate until you copy the new one",
                || authority.client(id, kind(*rsa), now),
            )?;
            let d = folder.display();
            println!(
                "Made the certificate for {id}: {} and {}, with ca.crt, in {d}: exactly what \
                 {id} gets (no other key ever goes there).",
                cert.display(),
                key.display()
            );
            println!("On the Pi (deploy/push.sh HOST --certs {d} does this):");
            println!("  sudo install -d -m 0750 -g pinpost /etc/pinpost/certs");
            println!("  sudo install -m 0644 {d}/ca.crt {d}/{id}.crt /etc/pinpost/certs/");
            println!("  sudo install -m 0640 -g pinpost {d}/{id}.key /etc/pinpost/certs/");
            println!("and in /etc/pinpost/config.toml:");
            println!("  [device]\n  id = \"{id}\"\n  [broker]\n  cli_port = 8884\n  [broker.tls]");
            println!("  ca_file = \"/etc/pinpost/certs/ca.crt\"");
            println!("  cert_file = \"/etc/pinpost/certs/{id}.crt\"");
            println!("  key_file = \"/etc/pinpost/certs/{id}.key\"");
            println!(
                "Then: pinpost check. For {id}'s own pinpost publish/subscribe/check on port \
                 8884, run pinpost certs mosquitto --force again and copy its pinpost.acl."
            );
        }
        CertsCommand::Mosquitto {
            port,
            cli_port,
            prefix,
            ha_prefix,
            operator,
            cert_dir,
            homeassistant,
        } => {
            check_id(operator, "the operator's name")?;
            let setup = mosquitto::Setup {
                port: *port,
                cli_port: *cli_port,
                prefix: prefix.clone(),
                ha_prefix: ha_prefix.clone(),
                operator: operator.clone(),
                devices: known_devices(dir)?,
                cert_dir: cert_dir.trim_end_matches('/').to_string(),
                acl_path: "/etc/mosquitto/pinpost.acl".into(),
                homeassistant: *homeassistant,
                crl: super::revoke::any(dir),
            };
            setup.check().map_err(|e| CliError::Input(e.to_string()))?;
            let folder = dir.join("broker");
            let (conf, acl) = (folder.join("pinpost.conf"), folder.join("pinpost.acl"));
            refuse_existing(&[&conf, &acl], args.force, "edits made to them are lost")?;
            std::fs::create_dir_all(&folder).map_err(|e| io(&folder, e))?;
            write_file(&conf, mosquitto::listener(&setup).as_bytes(), 0o644)?;
            write_file(&acl, mosquitto::acl(&setup).as_bytes(), 0o644)?;
            super::revoke::Settings {
                port: *port,
                cli_port: *cli_port,
                prefix: prefix.clone(),
                ha_prefix: ha_prefix.clone(),
                operator: operator.clone(),
                cert_dir: setup.cert_dir.clone(),
                homeassistant: *homeassistant,
            }
            .save(dir)?;
            println!("Wrote {} and {}.", conf.display(), acl.display());
            println!("On the broker:");
            if let Some(crl) = super::revoke::write_crl(dir, now)? {
                println!(
                    "  sudo install -m 0644 {} {}/crl.pem   # the revoked certificates",
                    crl.display(),
                    setup.cert_dir
                );
            }
            println!(
                "  sudo install -m 0644 {} /etc/mosquitto/conf.d/pinpost.conf",
                conf.display()
            );
            println!(
                "  sudo install -m 0644 {} /etc/mosquitto/pinpost.acl",
                acl.display()
            );
            println!("  sudo systemctl restart mosquitto");
            // Only what the ACL just written allows: discovery configs are
            // in it with --homeassistant alone.
            let discovery = if setup.homeassistant {
                format!(", plus its Home Assistant discovery configs under {ha_prefix}/")
            } else {
                String::new()
            };
            println!(
                "Each device may read only {prefix}/<its id>/# and write there only what it \
                 publishes (status, input, output, sensor, stats, command results; never \
                 commands: those come from the operator){discovery}; its client id is its \
                 certificate's name: no device can take another's session. Agents use port \
                 {port}; pinpost publish, subscribe and check use port {cli_port} \
                 (broker.cli_port) so they run beside the agent. The operator account reads \
                 everything and sends commands: `pinpost certs device {operator}` gives it a \
                 certificate."
            );
            if !setup.homeassistant {
                println!(
                    "Home Assistant discovery is not in this ACL: with [homeassistant] \
                     enabled on the devices, run this again with --homeassistant --force."
                );
            }
            if setup.devices.is_empty() {
                println!(
                    "No device in {} yet: after `pinpost certs device <id>`, run this again \
                     with --force so their tools may use port {cli_port}.",
                    dir.join("devices").display()
                );
            }
        }
        CertsCommand::Revoke { id } => super::revoke::run(dir, id, now)?,
        CertsCommand::RotateCa { name, rsa, finish } => {
            if *finish {
                super::rotate::finish(dir, args.force)?;
            } else {
                super::rotate::start(dir, name.as_deref(), *rsa, now)?;
            }
        }
        CertsCommand::Sign { request, operator } => {
            sign(dir, request, operator, args.force, now)?;
        }
        CertsCommand::Verify {
            folder,
            device,
            config,
            held_key,
        } => {
            let id = match (device, config) {
                (Some(id), _) => id.clone(),
                (None, file) => config_id(file.as_deref())?,
            };
            // The id names the files looked for: no path tricks.
            check_id(&id, "a device id")?;
            return verify(folder, &id, held_key.as_deref());
        }
    }
    Ok(())
}

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

/// `pinpost certs sign`: a device's request, checked, signed into its
/// folder beside ca.crt and the request itself; no key is made or kept
/// here.
fn sign(dir: &Path, path: &Path, operator: &str, force: bool, now: i64) -> Result<(), CliError> {
    let refuse = |why: String| {
        CliError::Input(format!(
            "refusing {} (nothing was written): {why}",
            path.display()
        ))
    };
    let size = std::fs::metadata(path)
        .map_err(|e| {
            refuse(format!(
                "it cannot be read ({})",
                crate::words::io_words(&e)
            ))
        })?
        .len();
    if size > certs::request::MAX_REQUEST_BYTES as u64 {
        return Err(refuse(format!(
            "it is {size} bytes, far larger than a request"
        )));
    }
    let pem = std::fs::read(path).map_err(|e| {
        refuse(format!(
            "it cannot be read ({})",
            crate::words::io_words(&e)
        ))
    })?;
    let request = certs::request::read(&pem).map_err(|e| refuse(e.to_string()))?;
    let id = request.id.clone();
    check_id(&id, "a device id").map_err(|e| refuse(format!("it asks for {e}")))?;
    if id.eq_ignore_ascii_case(operator) {
        return Err(refuse(format!(
            "it asks for a certificate named {id:?}, the operator's: that one reads every \
             device's messages and sends their commands, so it is never given to a request; \
             make the operator's own with `pinpost certs device {operator}` on this laptop"
        )));
    }
    let authority = load_ca(dir)?;
    let folder = device_dir(dir, &id);
    let (cert, key) = (
        folder.join(format!("{id}.crt")),
        folder.join(format!("{id}.key")),
    );
    if key.exists() && !force {
        return Err(refuse(format!(
            "{} holds {id}.key, a key made here by `certs device`; a signed request replaces \
             that pair with the device's own key; pass --force to remove the key here",
            folder.display()
        )));
    }
    refuse_existing(
        &[&cert],
        force,
        "the device keeps its old certificate until you copy the new one",
    )?;
    let ca_file = super::rotate::ca_for_folders(dir);
    let ca = std::fs::read(&ca_file).map_err(|e| io(&ca_file, e))?;
    let cert_pem = authority.sign(&request, now)?;
    std::fs::create_dir_all(&folder).map_err(|e| io(&folder, e))?;
    if key.exists() {
        std::fs::remove_file(&key).map_err(|e| io(&key, e))?;
    }
    write_file(&cert, cert_pem.as_bytes(), 0o644)?;
    write_file(&folder.join("ca.crt"), &ca, 0o644)?;
    write_file(&folder.join(format!("{id}.csr")), &pem, 0o644)?;
    let d = folder.display();
    println!(
        "Signed {id}'s request: {} (its own key stays on the device), with ca.crt and the \
         request, in {d}.",
        cert.display()
    );
    println!("On the Pi (deploy/push.sh HOST TARGET --certs {d} does this):");
    println!("  sudo install -m 0644 {d}/ca.crt {d}/{id}.crt /etc/pinpost/certs/");
    println!("Then: pinpost check on the Pi.");
    Ok(())
}

/// `pinpost certs verify`: refuses a folder that holds anything but
/// exactly the device's ca.crt, `<id>.crt` and `<id>.key` (what install.sh
/// runs before installing anything).
fn verify(folder: &Path, id: &str, held_key: Option<&Path>) -> Result<(), CliError> {
    if !folder.is_dir() {
        return Err(CliError::Input(format!(
            "{} is not a folder: give the device's folder, like certs/devices/{id}",
            folder.display()
        )));
    }
    let steps = crate::preflight::device_bundle(folder, id, held_key);
    let failed = steps
        .iter()
        .filter(|s| s.mark == crate::preflight::Mark::Fail)
        .count();
    for step in &steps {
        println!("{step}");
    }
    if failed > 0 {
        return Err(CliError::CheckFailed { failed, warned: 0 });
    }
    Ok(())
}

fn private_dir(dir: &Path) -> PathBuf {
    dir.join("private")
}

fn device_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join("devices").join(id)
}

/// The private folder, 0700: only its owner may even list it.
fn make_private_dir(dir: &Path) -> Result<(), CliError> {
    let private = private_dir(dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&private)
        .map_err(|e| io(&private, e))
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

fn refuse_existing(paths: &[&PathBuf], force: bool, consequence: &str) -> Result<(), CliError> {
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

/// `<stem>.crt` and `<stem>.key` in `folder`, with a copy of `dir`'s
/// ca.crt, made by `make` unless either exists and `force` is off; returns
/// their paths.
fn make_pair(
    dir: &Path,
    folder: &Path,
    stem: &str,
    force: bool,
    consequence: &str,
    make: impl FnOnce() -> Result<Issued, certs::CertsError>,
) -> Result<(PathBuf, PathBuf), CliError> {
    let (cert, key) = (
        folder.join(format!("{stem}.crt")),
        folder.join(format!("{stem}.key")),
    );
    refuse_existing(&[&cert, &key], force, consequence)?;
    let ca_file = super::rotate::ca_for_folders(dir);
    let ca = std::fs::read(&ca_file).map_err(|e| io(&ca_file, e))?;
    let issued = make()?;
    std::fs::create_dir_all(folder).map_err(|e| io(folder, e))?;
    write_file(&key, issued.key_pem.as_bytes(), 0o600)?;
    write_file(&cert, issued.cert_pem.as_bytes(), 0o644)?;
    write_file(&folder.join("ca.crt"), &ca, 0o644)?;
    Ok((cert, key))
}

/// Writes through a temporary file so a crash leaves the old file or the
/// new one, never half of either; the mode is set before any byte lands.
pub(super) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CliError> {
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
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

pub(super) fn io(path: &Path, e: std::io::Error) -> CliError {
    CliError::Input(format!(
        "cannot write {}: {}",
        path.display(),
        crate::words::io_words(&e)
    ))
}
