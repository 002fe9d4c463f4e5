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

use std::path::{Path, PathBuf};

use super::CliError;
use super::fleet::{
    check_id, config_id, device_dir, io, known_devices, load_ca, make_private_dir, private_dir,
    refuse_existing, share_release_key, write_file,
};
use crate::certs::{self, Issued, KeyKind, mosquitto};
use crate::cli::args::{CertsArgs, CertsCommand};

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
            let shared = share_release_key(dir, &folder)?;
            let d = folder.display();
            println!(
                "Made the certificate for {id}: {} and {}, with ca.crt{}, in {d}: exactly what \
                 {id} gets (no other key ever goes there).",
                cert.display(),
                key.display(),
                if shared { " and release.pub" } else { "" }
            );
            println!("On the Pi (deploy/push.sh HOST --certs {d} does this):");
            println!("  sudo install -d -m 0750 -g pinpost /etc/pinpost/certs");
            println!("  sudo install -m 0644 {d}/ca.crt {d}/{id}.crt /etc/pinpost/certs/");
            println!("  sudo install -m 0640 -g pinpost {d}/{id}.key /etc/pinpost/certs/");
            if shared {
                println!("  sudo install -m 0644 {d}/release.pub /etc/pinpost/certs/");
            }
            println!("and in /etc/pinpost/config.toml:");
            println!("  [device]\n  id = \"{id}\"\n  [broker]\n  cli_port = 8884\n  [broker.tls]");
            println!("  ca_file = \"/etc/pinpost/certs/ca.crt\"");
            println!("  cert_file = \"/etc/pinpost/certs/{id}.crt\"");
            println!("  key_file = \"/etc/pinpost/certs/{id}.key\"");
            if shared {
                println!("  [update]\n  release_key = \"/etc/pinpost/certs/release.pub\"");
            }
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
        CertsCommand::ReleaseKey => super::release::make_key(dir, args.force)?,
        CertsCommand::Renew {
            connection,
            watch,
            valid_for,
            operator,
            prefix,
        } => {
            super::renew::run(super::renew::Job {
                dir,
                connection,
                watch: *watch,
                life: *valid_for,
                operator,
                prefix: prefix.as_deref(),
            })
            .await?;
        }
        CertsCommand::Sign {
            request,
            operator,
            valid_for,
        } => {
            sign(dir, request, operator, args.force, now, *valid_for)?;
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

/// `pinpost certs sign`: a device's request, checked, signed into its
/// folder beside ca.crt and the request itself; no key is made or kept
/// here.
fn sign(
    dir: &Path,
    path: &Path,
    operator: &str,
    force: bool,
    now: i64,
    life: std::time::Duration,
) -> Result<(), CliError> {
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
    let cert_pem = authority.sign(&request, now, life)?;
    std::fs::create_dir_all(&folder).map_err(|e| io(&folder, e))?;
    if key.exists() {
        std::fs::remove_file(&key).map_err(|e| io(&key, e))?;
    }
    write_file(&cert, cert_pem.as_bytes(), 0o644)?;
    write_file(&folder.join("ca.crt"), &ca, 0o644)?;
    write_file(&folder.join(format!("{id}.csr")), &pem, 0o644)?;
    let shared = share_release_key(dir, &folder)?;
    let d = folder.display();
    println!(
        "Signed {id}'s request: {} (its own key stays on the device), with ca.crt and the \
         request, in {d}.",
        cert.display()
    );
    println!("On the Pi (deploy/push.sh HOST TARGET --certs {d} does this):");
    println!(
        "  sudo install -m 0644 {d}/ca.crt {d}/{id}.crt{} /etc/pinpost/certs/",
        if shared {
            format!(" {d}/release.pub")
        } else {
            String::new()
        }
    );
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
