//! `pinpost certs`: writes what [`crate::certs`] makes into a folder, keys
//! mode 0600 and nothing replaced without `--force`, then says in plain
//! words what to copy where.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::CmdError;
use crate::certs::{self, Authority, Issued, KeyKind, mosquitto};
use crate::cli::{CertsArgs, CertsCommand};

pub async fn run(args: CertsArgs) -> Result<(), CmdError> {
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
            let (cert, key) = make_pair(
                dir,
                "ca",
                args.force,
                "devices signed by the old CA stop connecting",
                || certs::new_ca(name, kind(*rsa), now),
            )?;
            println!(
                "Made the CA {name:?}: {} (share it with the broker and every device) and {} \
                 (keep it secret, ideally offline: whoever holds it can make devices).",
                cert.display(),
                key.display()
            );
            println!("Next: pinpost certs broker --host <the broker's address>");
        }
        CertsCommand::Broker { hosts, rsa } => {
            let authority = load_ca(dir)?;
            let (cert, key) = make_pair(
                dir,
                "broker",
                args.force,
                "the broker keeps its old certificate until you copy the new one",
                || authority.broker(hosts, kind(*rsa), now),
            )?;
            let d = dir.display();
            println!(
                "Made the broker certificate for {}: {} and {}.",
                hosts.join(", "),
                cert.display(),
                key.display()
            );
            println!("On the broker:");
            println!("  sudo install -d /etc/mosquitto/certs");
            println!("  sudo install -m 0644 {d}/ca.crt {d}/broker.crt /etc/mosquitto/certs/");
            println!("  sudo install -m 0640 -g mosquitto {d}/broker.key /etc/mosquitto/certs/");
            println!(
                "Devices must connect with one of these names; add more with --host and run \
                 this again with --force."
            );
            println!("Next: pinpost certs mosquitto, then pinpost certs device <id> for each Pi.");
        }
        CertsCommand::Device { id, rsa } => {
            check_id(id)?;
            let authority = load_ca(dir)?;
            let (cert, key) = make_pair(
                dir,
                id,
                args.force,
                "the device keeps its old certificate until you copy the new one",
                || authority.client(id, kind(*rsa), now),
            )?;
            let d = dir.display();
            println!(
                "Made the certificate for {id}: {} and {}.",
                cert.display(),
                key.display()
            );
            println!("On the Pi (deploy/push.sh does this with --certs):");
            println!("  sudo install -d -m 0750 -g pinpost /etc/pinpost/certs");
            println!("  sudo install -m 0644 {d}/ca.crt {d}/{id}.crt /etc/pinpost/certs/");
            println!("  sudo install -m 0640 -g pinpost {d}/{id}.key /etc/pinpost/certs/");
            println!("and in /etc/pinpost/config.toml:");
            println!("  [device]\n  id = \"{id}\"\n  [broker.tls]");
            println!("  ca_file = \"/etc/pinpost/certs/ca.crt\"");
            println!("  cert_file = \"/etc/pinpost/certs/{id}.crt\"");
            println!("  key_file = \"/etc/pinpost/certs/{id}.key\"");
            println!("Then: pinpost check");
        }
        CertsCommand::Mosquitto {
            port,
            prefix,
            operator,
            cert_dir,
        } => {
            check_id(operator)?;
            if prefix.is_empty() || prefix.contains(['+', '#']) {
                return Err(CmdError::Input(format!(
                    "--prefix {prefix:?} is not a topic prefix: use the [device] topic_prefix \
                     of the devices, like \"pinpost\""
                )));
            }
            let setup = mosquitto::Setup {
                port: *port,
                prefix: prefix.clone(),
                operator: operator.clone(),
                cert_dir: cert_dir.trim_end_matches('/').to_string(),
                acl_path: "/etc/mosquitto/pinpost.acl".into(),
            };
            let (conf, acl) = (dir.join("pinpost.conf"), dir.join("pinpost.acl"));
            refuse_existing(&[&conf, &acl], args.force, "edits made to them are lost")?;
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
            write_file(&conf, mosquitto::listener(&setup).as_bytes(), 0o644)?;
            write_file(&acl, mosquitto::acl(&setup).as_bytes(), 0o644)?;
            println!("Wrote {} and {}.", conf.display(), acl.display());
            println!("On the broker:");
            println!(
                "  sudo install -m 0644 {} /etc/mosquitto/conf.d/pinpost.conf",
                conf.display()
            );
            println!(
                "  sudo install -m 0644 {} /etc/mosquitto/pinpost.acl",
                acl.display()
            );
            println!("  sudo systemctl restart mosquitto");
            println!(
                "Each device may use only {prefix}/<its id>/#. The operator account reads \
                 everything and sends commands: `pinpost certs device {operator}` gives it a \
                 certificate."
            );
        }
    }
    Ok(())
}

fn load_ca(dir: &Path) -> Result<Authority, CmdError> {
    let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|e| {
            CmdError::Input(format!(
                "cannot read {}: {}. Make the CA first with `pinpost certs ca` (or pass --dir \
                 with the folder that holds ca.crt and ca.key)",
                path.display(),
                crate::config::io_words(&e)
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

/// Device ids name files and topics: the same rules as the config's id.
fn check_id(id: &str) -> Result<(), CmdError> {
    let fine = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with('.');
    if fine {
        Ok(())
    } else {
        Err(CmdError::Input(format!(
            "{id:?} cannot be a device id: use letters, digits, '-', '_' and '.', like pi-01"
        )))
    }
}

fn refuse_existing(paths: &[&PathBuf], force: bool, consequence: &str) -> Result<(), CmdError> {
    if force {
        return Ok(());
    }
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        return Err(CmdError::Input(format!(
            "{} exists and was left alone; pass --force to replace it ({consequence})",
            existing.display()
        )));
    }
    Ok(())
}

/// `<stem>.crt` and `<stem>.key` in `dir`, made by `make` unless either
/// exists and `force` is off; returns their paths.
fn make_pair(
    dir: &Path,
    stem: &str,
    force: bool,
    consequence: &str,
    make: impl FnOnce() -> Result<Issued, certs::CertsError>,
) -> Result<(PathBuf, PathBuf), CmdError> {
    let (cert, key) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    refuse_existing(&[&cert, &key], force, consequence)?;
    let issued = make()?;
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    write_file(&key, issued.key_pem.as_bytes(), 0o600)?;
    write_file(&cert, issued.cert_pem.as_bytes(), 0o644)?;
    Ok((cert, key))
}

/// Writes through a temporary file so a crash leaves the old file or the
/// new one, never half of either; the mode is set before any byte lands.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CmdError> {
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

fn io(path: &Path, e: std::io::Error) -> CmdError {
    CmdError::Input(format!(
        "cannot write {}: {}",
        path.display(),
        crate::config::io_words(&e)
    ))
}
