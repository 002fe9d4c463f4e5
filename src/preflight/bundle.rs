//! `pinpost certs verify` (and so install.sh): a device's certificate
//! folder holds exactly the three files `pinpost certs device <id>` makes,
//! each holding only what its name says.
//!
//! An allow-list over one folder; it does not look at a config (the
//! certificate-file checks of `pinpost check` are in [`super`]).

use std::path::{Path, PathBuf};

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
///
/// A device that made its own key (`pinpost enroll`) has no key here: on
/// the laptop its folder holds `<id>.csr`, the request `certs sign` signed,
/// instead of the key, and the request's key must be `<id>.crt`'s; on the
/// Pi, `held_key` names the key it already holds, and the folder then holds
/// ca.crt and `<id>.crt` alone.
pub(crate) fn device_bundle(dir: &Path, id: &str, held_key: Option<&Path>) -> Vec<Step> {
    let mut steps = Vec::new();
    let (ca, cert, key, request) = (
        "ca.crt".to_string(),
        format!("{id}.crt"),
        format!("{id}.key"),
        format!("{id}.csr"),
    );
    let release = RELEASE_PUB.to_string();
    let allowed = [&ca, &cert, &key, &request, &release];
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
    let third = match (present.contains(&key), present.contains(&request), held_key) {
        (true, true, _) => {
            steps.push(Step::fail(format!(
                "{} holds both {key} and {request}: a device that made its own key \
                 (`pinpost enroll`) has no key here; remove {key}",
                dir.display()
            )));
            Third::Key(dir.join(&key))
        }
        (true, false, _) => Third::Key(dir.join(&key)),
        (false, true, _) => Third::Request(dir.join(&request)),
        (false, false, Some(held)) => Third::Held(held.to_path_buf()),
        (false, false, None) => Third::Key(dir.join(&key)),
    };
    let mut texts = Vec::new();
    for (name, path) in [
        (&ca, dir.join(&ca)),
        (&cert, dir.join(&cert)),
        (third.name(&key, &request), third.path().to_path_buf()),
    ] {
        // The key a device already holds is not in the folder.
        let elsewhere = matches!(third, Third::Held(_)) && name == &key;
        if !elsewhere && !present.contains(name) {
            steps.push(Step::fail(format!(
                "{} has no {name}: a device gets exactly {list}, as `pinpost certs device \
                 {id}` makes them (or ca.crt, {cert} and {request}, when it made its own \
                 key with `pinpost enroll` and `pinpost certs sign` signed it)",
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
    if let (Third::Request(path), Some(found)) = (&third, &texts[2]) {
        check_request(
            &mut steps,
            path,
            found,
            leaf.as_ref().map(|(der, _)| der.as_ref()),
            &cert,
        );
    } else if let Some(found) = &texts[2] {
        let key = third.path().display().to_string();
        let only_key = found.keys.len() == 1
            && found.unreadable.is_empty()
            && found.labels.len() == 1
            && !found.binary;
        if !only_key {
            steps.push(Step::fail(format!(
                "{key}: it must hold exactly one private key pinpost can read (PEM, not \
                 encrypted), but holds {}",
                describe(found)
            )));
        } else if let Some((der, _)) = &leaf {
            let spki = found.keys.first().cloned().flatten();
            if crate::tls::public_key_info(der) != spki {
                steps.push(Step::fail(format!(
                    "{key}: it is not the private key of {cert} (another device's, the broker's or the CA's?)"
                )));
            }
        }
    }
    let release_key = present
        .contains(&release)
        .then(|| release_pub(&mut steps, &dir.join(&release)))
        .flatten();
    if steps.is_empty() {
        steps.push(Step::pass(match &third {
            Third::Key(_) => format!(
                "{} holds exactly {list}, and {key} is the key of {cert}, {id}'s certificate",
                dir.display()
            ),
            Third::Request(_) => format!(
                "{} holds exactly ca.crt, {cert} and {request} (the key stays on the device), \
                 and {cert} is for the request's key",
                dir.display()
            ),
            Third::Held(held) => format!(
                "{} holds exactly ca.crt and {cert}, and {} (on this device) is the key of {cert}, \
                 {id}'s certificate",
                dir.display(),
                held.display()
            ),
        }));
        if let Some(id) = release_key {
            steps.push(Step::pass(format!(
                "{} is the release key {id}'s public half (for [update] release_key)",
                dir.join(&release).display()
            )));
        }
    }
    steps
}

/// The release key's public half, which may go to a device with its
/// certificates (`pinpost certs release-key` puts it in each folder).
pub(crate) const RELEASE_PUB: &str = "release.pub";

/// `release.pub` holds exactly one Ed25519 public key, nothing else: its
/// key id, or a failed step saying what it holds instead.
pub(super) fn release_pub(steps: &mut Vec<Step>, path: &Path) -> Option<String> {
    let shown = path.display();
    let bytes = match std::fs::symlink_metadata(path) {
        Ok(m) if !m.is_file() => Err("it is not a plain file".to_string()),
        Ok(m) if m.len() > BUNDLE_FILE_LIMIT => Err(format!(
            "it is {} bytes, too large for a public key",
            m.len()
        )),
        Ok(_) => std::fs::read(path).map_err(|e| crate::words::io_words(&e)),
        Err(e) => Err(crate::words::io_words(&e)),
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(why) => {
            steps.push(Step::fail(format!("{shown}: {why}")));
            return None;
        }
    };
    let found = contents(&bytes);
    if found.binary || found.key_count() > 0 || found.labels != ["PUBLIC KEY"] {
        steps.push(Step::fail(format!(
            "{shown}: it must hold only the release key's public half (PEM \"PUBLIC KEY\", \
             from `pinpost certs release-key`), but holds {}; the release key's private half \
             never goes to a device",
            describe(&found)
        )));
        return None;
    }
    match crate::release::key::Public::from_pem(&bytes) {
        Ok(key) => Some(key.id()),
        Err(e) => {
            steps.push(Step::fail(format!("{shown}: {e}")));
            None
        }
    }
}

/// The file that goes with `<id>.crt`: its key, the request it was signed
/// for, or the key the device already holds.
enum Third {
    Key(PathBuf),
    Request(PathBuf),
    Held(PathBuf),
}

impl Third {
    fn path(&self) -> &Path {
        match self {
            Third::Key(p) | Third::Request(p) | Third::Held(p) => p,
        }
    }

    fn name<'a>(&self, key: &'a String, request: &'a String) -> &'a String {
        match self {
            Third::Request(_) => request,
            _ => key,
        }
    }
}

/// A request beside the certificate: exactly one, readable, signed, and
/// for the certificate's key.
fn check_request(
    steps: &mut Vec<Step>,
    path: &Path,
    found: &super::contents::Contents,
    leaf: Option<&[u8]>,
    cert: &str,
) {
    let shown = path.display();
    if found.binary || found.key_count() > 0 || found.labels != ["CERTIFICATE REQUEST"] {
        steps.push(Step::fail(format!(
            "{shown}: it must hold exactly one certificate request (PEM), but holds {}",
            describe(found)
        )));
        return;
    }
    let request = match std::fs::read(path)
        .map_err(|e| crate::words::io_words(&e))
        .and_then(|pem| crate::certs::request::read(&pem).map_err(|e| e.to_string()))
    {
        Ok(request) => request,
        Err(why) => {
            steps.push(Step::fail(format!("{shown}: {why}")));
            return;
        }
    };
    if let Some(der) = leaf {
        if crate::tls::public_key_info(der).as_deref() != Some(request.spki()) {
            steps.push(Step::fail(format!(
                "{shown}: {cert} is not for this request's key (signed for another request?)"
            )));
        }
    }
}
