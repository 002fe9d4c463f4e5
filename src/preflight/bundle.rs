//! `pinpost certs verify` (and so install.sh): a device's certificate
//! folder holds exactly the three files `pinpost certs device <id>` makes,
//! each holding only what its name says.
//!
//! An allow-list over one folder; it does not look at a config (the
//! certificate-file checks of `pinpost check` are in [`super`]).

use std::path::Path;

use super::Step;
use super::contents::{contents, describe};
use super::folder::FOLDER_FILE_LIMIT;
use crate::tls::CertSummary;

/// A certificate or key file is a few kilobytes; nothing larger is let
/// through to a device.
const BUNDLE_FILE_LIMIT: u64 = 64 * 1024;

/// `pinpost certs verify` (and so install.sh): `dir` must hold exactly what
/// `pinpost certs device <id>` made, `ca.crt`, `<id>.crt` and `<id>.key`,
/// and nothing else, each file holding only what its name says: ca.crt and
/// `<id>.crt` certificates only, `<id>.crt` first a certificate for `id`
/// that is not a CA, and `<id>.key` exactly one private key, the one of
/// `<id>.crt`. An allow-list, not a search for bad keys: whatever hides a
/// key (a second PEM section, DER, PKCS#12, a password, a large file) is
/// refused for not being one of those three files, or not only what it
/// should be.
pub(crate) fn device_bundle(dir: &Path, id: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let (ca, cert, key) = (
        "ca.crt".to_string(),
        format!("{id}.crt"),
        format!("{id}.key"),
    );
    let allowed = [&ca, &cert, &key];
    let list = format!("ca.crt, {cert} and {key}");
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            return vec![Step::fail(format!(
                "cannot list {} ({})",
                dir.display(),
                crate::words::io_words(&e)
            ))];
        }
    };
    let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
    names.sort();
    let mut present = Vec::new();
    for name in names {
        let shown = name.to_string_lossy().into_owned();
        let path = dir.join(&name);
        if !allowed.iter().any(|a| a.as_str() == shown) {
            let holds = std::fs::symlink_metadata(&path)
                .ok()
                .filter(|m| m.is_file() && m.len() <= FOLDER_FILE_LIMIT)
                .and_then(|_| std::fs::read(&path).ok())
                .map(|bytes| contents(&bytes))
                .filter(|c| c.key_count() > 0)
                .map(|_| " (it holds a private key)")
                .unwrap_or("");
            steps.push(Step::fail(format!(
                "{} holds {shown}{holds}: a device gets exactly {list}, nothing else; \
                 remove {shown} or give {id}'s own folder, certs/devices/{id}",
                dir.display()
            )));
            continue;
        }
        present.push(shown);
    }
    let mut texts = Vec::new();
    for name in allowed {
        let path = dir.join(name);
        if !present.contains(name) {
            steps.push(Step::fail(format!(
                "{} has no {name}: a device gets exactly {list}, as `pinpost certs device {id}` \
                 makes them",
                dir.display()
            )));
            texts.push(None);
            continue;
        }
        let read = std::fs::symlink_metadata(&path)
            .map_err(|e| crate::words::io_words(&e))
            .and_then(|m| {
                if !m.is_file() {
                    Err("it is not a plain file".to_string())
                } else if m.len() > BUNDLE_FILE_LIMIT {
                    Err(format!(
                        "it is {} bytes, too large for a certificate or a key",
                        m.len()
                    ))
                } else {
                    std::fs::read(&path).map_err(|e| crate::words::io_words(&e))
                }
            });
        match read {
            Ok(bytes) => texts.push(Some(contents(&bytes))),
            Err(why) => {
                steps.push(Step::fail(format!("{}: {why}", path.display())));
                texts.push(None);
            }
        }
    }
    let shown = |name: &str| dir.join(name).display().to_string();
    let fail = |steps: &mut Vec<Step>, name: &str, why: String| {
        steps.push(Step::fail(format!("{}: {why}", shown(name))));
    };
    for (name, found) in [(&ca, &texts[0]), (&cert, &texts[1])] {
        let Some(found) = found else { continue };
        if found.binary || found.key_count() > 0 || found.labels.iter().any(|l| l != "CERTIFICATE")
        {
            fail(
                &mut steps,
                name,
                format!(
                    "it must hold certificates only (PEM), but holds {}",
                    describe(found)
                ),
            );
        } else if found.certs.is_empty() || found.certs.len() != found.labels.len() {
            fail(
                &mut steps,
                name,
                "it holds no certificate pinpost can read".into(),
            );
        }
    }
    let leaf = texts[1]
        .as_ref()
        .and_then(|c| c.certs.first())
        .and_then(|der| Some((der, CertSummary::from_der(der)?)));
    if let Some((_, summary)) = &leaf {
        if summary.is_ca {
            fail(
                &mut steps,
                &cert,
                format!(
                    "it is a CA certificate ({}), not a device's",
                    summary.subject
                ),
            );
        } else if summary.common_name.as_deref() != Some(id) {
            fail(
                &mut steps,
                &cert,
                format!(
                    "it is the certificate of {} ({}), not of the device {id}",
                    summary.common_name.as_deref().unwrap_or("no Common Name"),
                    summary.subject
                ),
            );
        }
    }
    if let Some(found) = &texts[2] {
        let only_key = found.keys.len() == 1
            && found.unreadable.is_empty()
            && found.labels.len() == 1
            && !found.binary;
        if !only_key {
            fail(
                &mut steps,
                &key,
                format!(
                    "it must hold exactly one private key pinpost can read (PEM, not \
                     encrypted), but holds {}",
                    describe(found)
                ),
            );
        } else if let Some((der, _)) = &leaf {
            let spki = found.keys.first().cloned().flatten();
            if crate::tls::public_key_info(der) != spki {
                fail(
                    &mut steps,
                    &key,
                    format!(
                        "it is not the private key of {cert} (another device's, the broker's or the CA's?)"
                    ),
                );
            }
        }
    }
    if steps.is_empty() {
        steps.push(Step::pass(format!(
            "{} holds exactly {list}, and {key} is the key of {cert}, {id}'s certificate",
            dir.display()
        )));
    }
    steps
}
