//! `pinpost check` on the device: the folders holding the device's
//! certificate and key may hold no private key but the device's own.
//!
//! It searches a folder that may hold other things; the strict allow-list
//! of `pinpost certs verify` is [`bundle`](super::bundle)'s.

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;

use super::Step;
use super::contents::contents;
use crate::tls::CertSummary;

/// Files larger than this are not looked through: a certificate folder has
/// no business holding one, so it is a failure, never skipped in silence.
pub(super) const FOLDER_FILE_LIMIT: u64 = 1024 * 1024;
/// How many files and how deep a folder is looked through.
const FOLDER_FILES: usize = 1000;
const FOLDER_DEPTH: usize = 3;

/// What a device's certificate folder holds, judged for device `id`: the
/// only private key there may be the device's own, for a certificate that is
/// not a CA and whose Common Name is `id`. A CA key there lets whoever holds
/// this Pi make certificates for every device and the operator; another
/// device's key lets them act as that device. `known` are certificates found
/// elsewhere (the config's cert_file and ca_file), to name whose key is whose.
///
/// This is `pinpost check` on the Pi, where the folder may hold other
/// things: every file is looked through (every PEM section, DER keys,
/// PKCS#12 bundles) and any key but the device's own, or one that cannot be
/// read, is a failure. `pinpost certs verify` is stricter ([`device_bundle`](super::device_bundle)).
pub(super) fn device_folder(dir: &Path, id: &str, known: &[CertificateDer<'static>]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut files = Vec::new();
    collect_files(dir, 0, &mut files);
    let mut certs: Vec<CertificateDer<'static>> = known.to_vec();
    let mut keys = Vec::new();
    let remove = "remove it from this device (it belongs on the laptop that makes the \
                  certificates, in certs/private/)";
    for (path, size) in &files {
        let shown = path.display();
        if *size > FOLDER_FILE_LIMIT {
            steps.push(Step::fail(format!(
                "{shown} is {size} bytes, too large to be a certificate or a key, and was not \
                 looked through: it may hide a key that does not belong on {id}; move it out of \
                 {}",
                dir.display()
            )));
            continue;
        }
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                steps.push(Step::warn(format!(
                    "cannot read {shown} ({}): it may be a key that does not belong on this \
                     device; run `sudo pinpost check` to look inside",
                    crate::words::io_words(&e)
                )));
                continue;
            }
        };
        let found = contents(&bytes);
        certs.extend(found.certs.iter().cloned());
        let count = found.key_count();
        for (n, spki) in found.keys.into_iter().enumerate() {
            keys.push((path.clone(), n, count, spki));
        }
        for what in found.unreadable {
            steps.push(Step::fail(format!(
                "{shown} holds {what}: whose it is cannot be told, so it cannot stay beside \
                 {id}'s own key; {remove}"
            )));
        }
        if count == 0 && path.extension().is_some_and(|e| e == "key") {
            steps.push(Step::fail(format!(
                "{shown} is named like a private key but pinpost finds none in it it can \
                 read; if it is not {id}'s, {remove}"
            )));
        }
    }
    let mut own = 0;
    for (path, n, count, spki) in keys {
        let shown = if count > 1 {
            format!("{} (key {} of {count} in it)", path.display(), n + 1)
        } else {
            path.display().to_string()
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let owner = spki.as_ref().and_then(|spki| {
            certs.iter().find_map(|der| {
                let summary = CertSummary::from_der(der)?;
                (crate::tls::public_key_info(der).as_deref() == Some(spki.as_slice()))
                    .then_some(summary)
            })
        });
        match owner {
            Some(cert) if cert.is_ca => steps.push(Step::fail(format!(
                "{shown} is the private key of the CA {}: whoever holds this device can make \
                 certificates for every device and the operator; {remove}",
                cert.subject
            ))),
            Some(cert) if cert.common_name.as_deref() != Some(id) => {
                steps.push(Step::fail(format!(
                    "{shown} is the private key of {} (certificate {}), not of this device \
                     ({id}): whoever holds this device can act as {}; {remove}",
                    cert.common_name.as_deref().unwrap_or("another certificate"),
                    cert.subject,
                    cert.common_name.as_deref().unwrap_or("it")
                )))
            }
            Some(_) => own += 1,
            None if name.as_deref() == Some("ca.key") => steps.push(Step::fail(format!(
                "{shown} is named like the CA's private key: whoever holds this device could \
                 make certificates for every device; {remove}"
            ))),
            None => steps.push(Step::fail(format!(
                "{shown} is a private key of no certificate here (another device's, the \
                 broker's or the CA's): it does not belong on {id}; {remove}"
            ))),
        }
    }
    if steps.is_empty() && own > 0 {
        steps.push(Step::pass(format!(
            "{} holds no private key but {id}'s own",
            dir.display()
        )));
    }
    steps
}

fn collect_files(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if out.len() >= FOLDER_FILES {
            return;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() && depth + 1 < FOLDER_DEPTH {
            collect_files(&path, depth + 1, out);
        } else if meta.is_file() {
            out.push((path, meta.len()));
        }
    }
}
