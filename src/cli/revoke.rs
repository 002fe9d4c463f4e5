//! `pinpost certs revoke ID`: a device cut off for good (a stolen Pi, one
//! taken out of service). Its certificate's serial joins the fleet's list
//! (`certs/revoked.txt`), the CA signs the list as `certs/broker/crl.pem`,
//! its folder moves to `certs/revoked/`, and the broker's listener (with
//! `crlfile`) and ACL (without the device) are written again from the
//! settings `certs mosquitto` kept (`certs/mosquitto.toml`). Mosquitto then
//! refuses the device's certificate at the next handshake.
//!
//! Also what `certs mosquitto` needs to know of it: whether any device was
//! revoked (the listener then checks the list) and the list, signed again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CliError;
use super::fleet::{check_id, io, known_devices, load_ca, write_file};
use crate::certs::mosquitto;
use crate::certs::revocation::{self, Revoked};
use crate::hex::hex as to_hex;

const LIST: &str = "revoked.txt";
/// Every certificate `certs renew` issued: serial (hex), device, end.
const ISSUED: &str = "issued.txt";
const SETTINGS: &str = "mosquitto.toml";
/// Larger than any list a fleet writes by hand (a line is ~80 bytes).
const MAX_LIST_BYTES: u64 = 4 * 1024 * 1024;

/// What `certs mosquitto` was given, kept so that a revocation can write
/// the broker's files again without being told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Settings {
    pub(super) port: u16,
    pub(super) cli_port: u16,
    pub(super) prefix: String,
    pub(super) ha_prefix: String,
    pub(super) operator: String,
    pub(super) cert_dir: String,
    pub(super) homeassistant: bool,
}

impl Settings {
    pub(super) fn setup(&self, dir: &Path) -> Result<mosquitto::Setup, CliError> {
        Ok(mosquitto::Setup {
            port: self.port,
            cli_port: self.cli_port,
            prefix: self.prefix.clone(),
            ha_prefix: self.ha_prefix.clone(),
            operator: self.operator.clone(),
            devices: known_devices(dir)?,
            cert_dir: self.cert_dir.trim_end_matches('/').to_string(),
            acl_path: "/etc/mosquitto/pinpost.acl".into(),
            homeassistant: self.homeassistant,
            crl: any(dir),
        })
    }

    pub(super) fn save(&self, dir: &Path) -> Result<(), CliError> {
        let text = toml::to_string(self).map_err(|e| CliError::Input(e.to_string()))?;
        write_file(
            &dir.join(SETTINGS),
            format!("# What `pinpost certs mosquitto` was given (certs revoke reuses it).\n{text}")
                .as_bytes(),
            0o644,
        )
    }

    fn load(dir: &Path) -> Option<Settings> {
        toml::from_str(&std::fs::read_to_string(dir.join(SETTINGS)).ok()?).ok()
    }
}

/// Whether any certificate of this fleet was revoked.
pub(super) fn any(dir: &Path) -> bool {
    std::fs::metadata(dir.join(LIST)).is_ok_and(|m| m.len() > 0)
}

/// The list as it stands: (serial, device, when).
fn read_list(dir: &Path) -> Result<Vec<(Revoked, String)>, CliError> {
    let path = dir.join(LIST);
    let bad =
        |why: String| CliError::Input(format!("{}: {why}; fix or restore it", path.display()));
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(bad(crate::words::io_words(&e))),
        Ok(m) if m.len() > MAX_LIST_BYTES => {
            return Err(bad(format!("{} bytes, too large", m.len())));
        }
        Ok(_) => {}
    }
    let text = std::fs::read_to_string(&path).map_err(|e| bad(crate::words::io_words(&e)))?;
    let mut list = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let parsed = match words.as_slice() {
            [serial, id, at] => hex(serial)
                .zip(at.parse().ok())
                .map(|(serial, at)| (Revoked { serial, at }, (*id).to_string())),
            _ => None,
        };
        list.push(parsed.ok_or_else(|| {
            bad(format!(
                "line {} is not \"<serial in hex> <device id> <unix time>\"",
                n + 1
            ))
        })?);
    }
    Ok(list)
}

/// The serials revoked so far.
pub(super) fn revoked_serials(dir: &Path) -> Result<Vec<Vec<u8>>, CliError> {
    Ok(read_list(dir)?.into_iter().map(|(r, _)| r.serial).collect())
}

/// Notes a certificate `certs renew` issued, so that revoking the device
/// revokes it too (the device's folder keeps only the newest).
pub(super) fn remember_issued(dir: &Path, id: &str, cert_pem: &str) -> Result<(), CliError> {
    let path = dir.join(ISSUED);
    let serial = revocation::serial(cert_pem.as_bytes())
        .ok_or_else(|| CliError::Input("the CA made a certificate it cannot read".into()))?;
    let ends = crate::tls::ca_certificates(cert_pem.as_bytes())
        .first()
        .and_then(|d| crate::tls::CertSummary::from_der(d))
        .map_or(0, |c| c.not_after);
    let mut text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# Certificates issued by `pinpost certs renew`: serial (hex), device, end (Unix seconds).\n"
                .to_string()
        }
        Err(e) => return Err(io(&path, e)),
    };
    text.push_str(&format!("{} {id} {ends}\n", to_hex(&serial)));
    write_file(&path, text.as_bytes(), 0o644)
}

/// The serials `certs renew` issued to `id` that have not ended at `now`.
fn issued_to(dir: &Path, id: &str, now: i64) -> Vec<Vec<u8>> {
    let path = dir.join(ISSUED);
    if std::fs::metadata(&path).map_or(true, |m| m.len() > MAX_LIST_BYTES) {
        return Vec::new();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                [serial, who, ends] if *who == id && ends.parse::<i64>().is_ok_and(|e| e > now) => {
                    hex(serial)
                }
                _ => None,
            },
        )
        .collect()
}

/// A serial in hex (at most 20 bytes, as X.509 allows, with room).
fn hex(text: &str) -> Option<Vec<u8>> {
    crate::hex::unhex(text).filter(|b| b.len() <= 32)
}

/// Signs the list as `broker/crl.pem`.
pub(super) fn write_crl(dir: &Path, now: i64) -> Result<Option<PathBuf>, CliError> {
    let list = read_list(dir)?;
    if list.is_empty() {
        return Ok(None);
    }
    let authority = load_ca(dir)?;
    let revoked: Vec<Revoked> = list.into_iter().map(|(r, _)| r).collect();
    let pem = authority.crl(&revoked, revoked.len() as u64, now)?;
    let folder = dir.join("broker");
    std::fs::create_dir_all(&folder).map_err(|e| io(&folder, e))?;
    let path = folder.join("crl.pem");
    write_file(&path, pem.as_bytes(), 0o644)?;
    Ok(Some(path))
}

pub(super) fn run(dir: &Path, id: &str, now: i64) -> Result<(), CliError> {
    check_id(id, "a device id")?;
    let folder = dir.join("devices").join(id);
    if !folder.exists() && read_list(dir)?.iter().any(|(_, who)| who == id) {
        // Revoked before, or a revocation cut short after the device's
        // folder moved (a power cut, Ctrl-C): the list stands, and the CRL
        // and the broker's files are written again from it.
        load_ca(dir)?;
        let crl =
            write_crl(dir, now)?.ok_or_else(|| CliError::Input("the list is empty".into()))?;
        println!(
            "{id} is revoked already (listed in {}); signed the list into {} again.",
            dir.join(LIST).display(),
            crl.display()
        );
        return broker_files(dir, id, &crl);
    }
    let cert = folder.join(format!("{id}.crt"));
    let pem = std::fs::read(&cert).map_err(|e| {
        CliError::Input(format!(
            "cannot read {} ({}): pinpost revokes the certificate it issued for {id}, kept \
             there; was it revoked already (see {})?",
            cert.display(),
            crate::words::io_words(&e),
            dir.join(LIST).display()
        ))
    })?;
    let serial = revocation::serial(&pem).ok_or_else(|| {
        CliError::Input(format!(
            "{} holds no certificate pinpost can read",
            cert.display()
        ))
    })?;
    // The CA must be there before anything changes.
    load_ca(dir)?;
    let mut list = read_list(dir)?;
    // Its certificate, and any `certs renew` issued before it that has not
    // ended: a stolen Pi may hold an older one.
    let mut serials = vec![serial.clone()];
    serials.extend(issued_to(dir, id, now));
    for serial in serials {
        if !list.iter().any(|(r, _)| r.serial == serial) {
            list.push((Revoked { serial, at: now }, id.to_string()));
        }
    }
    let text: String = list
        .iter()
        .map(|(r, who)| format!("{} {who} {}\n", to_hex(&r.serial), r.at))
        .collect();
    write_file(
        &dir.join(LIST),
        format!("# Revoked certificates: serial (hex), device, when (Unix seconds).\n{text}")
            .as_bytes(),
        0o644,
    )?;
    let crl = write_crl(dir, now)?.ok_or_else(|| CliError::Input("the list is empty".into()))?;
    let kept = dir
        .join("revoked")
        .join(format!("{id}-{}", to_hex(&serial)));
    std::fs::create_dir_all(dir.join("revoked")).map_err(|e| io(&dir.join("revoked"), e))?;
    std::fs::rename(&folder, &kept).map_err(|e| io(&kept, e))?;
    println!(
        "Revoked {id}'s certificate (serial {}): listed in {}, signed by the CA into {}; its \
         folder moved to {}.",
        to_hex(&serial),
        dir.join(LIST).display(),
        crl.display(),
        kept.display()
    );
    broker_files(dir, id, &crl)
}

/// The broker's listener (with `crlfile`) and ACL (without `id`), written
/// again from what `certs mosquitto` kept, and how to install them.
fn broker_files(dir: &Path, id: &str, crl: &Path) -> Result<(), CliError> {
    let broker = dir.join("broker");
    match Settings::load(dir) {
        Some(settings) => {
            let setup = settings.setup(dir)?;
            setup.check().map_err(|e| CliError::Input(e.to_string()))?;
            let (conf, acl) = (broker.join("pinpost.conf"), broker.join("pinpost.acl"));
            write_file(&conf, mosquitto::listener(&setup).as_bytes(), 0o644)?;
            write_file(&acl, mosquitto::acl(&setup).as_bytes(), 0o644)?;
            let cert_dir = &setup.cert_dir;
            println!(
                "Wrote {} (with crlfile) and {} (without {id}). On the broker:",
                conf.display(),
                acl.display()
            );
            println!(
                "  sudo install -m 0644 {} {cert_dir}/crl.pem",
                crl.display()
            );
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
                "From then on the broker refuses {id}'s certificate at every connection; \
                 `pinpost check` on that Pi says it was revoked. A new certificate for that \
                 name needs a new key: pinpost enroll --force on the device, then certs sign."
            );
        }
        None => println!(
            "No {} here (from `pinpost certs mosquitto`): run `pinpost certs mosquitto --force` \
             with the flags you used, then install crl.pem, pinpost.conf and pinpost.acl on the \
             broker and restart Mosquitto.",
            dir.join(SETTINGS).display()
        ),
    }
    Ok(())
}
