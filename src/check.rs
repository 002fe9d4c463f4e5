//! The offline half of `pinpost check`: what a config's certificate and key
//! files say before any connection. Each finding is a [`Step`] marked fine,
//! worth fixing, or certain to fail, worded with what to do.
//!
//! It reads files and certificates; it does not connect (the `check`
//! command does that with the same link and diagnosis as `publish`).

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::{Config, SourcedPath};
use crate::tls::{self, CertSummary};
use crate::utc;

/// Warn this long before a certificate expires.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub mark: Mark,
    pub text: String,
}

impl Step {
    pub fn pass(text: impl Into<String>) -> Step {
        Step {
            mark: Mark::Pass,
            text: text.into(),
        }
    }
    pub fn warn(text: impl Into<String>) -> Step {
        Step {
            mark: Mark::Warn,
            text: text.into(),
        }
    }
    pub fn fail(text: impl Into<String>) -> Step {
        Step {
            mark: Mark::Fail,
            text: text.into(),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.mark {
            Mark::Pass => "\u{2713}",
            Mark::Warn => "!",
            Mark::Fail => "\u{2717}",
        };
        write!(f, "{mark} {}", self.text)
    }
}

/// Checks every certificate and key file the config names, at `now`.
pub fn files(config: &Config, now: i64) -> Vec<Step> {
    let mut steps = ownership(config);
    let Some(tls) = &config.broker.tls else {
        steps.push(Step::warn(
            "TLS is off: the broker connection and its password travel in clear text; add a \
             [broker.tls] section (pinpost certs makes the files)",
        ));
        return steps;
    };
    let cas = match &tls.ca_file {
        None => {
            steps.push(Step::pass(
                "the broker's certificate will be checked against this system's CAs (no ca_file)",
            ));
            Vec::new()
        }
        Some(file) => ca_steps(file, now, &mut steps),
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            client_steps(config, cert, key, &cas, now, &mut steps);
            match tls::client_key_loads(tls) {
                Ok(_) => steps.push(Step::pass(format!(
                    "{} belongs to {}",
                    key.path().display(),
                    cert.path().display()
                ))),
                Err(e) => steps.push(Step::fail(e.to_string())),
            }
            let mut folders: Vec<PathBuf> = [cert.path(), key.path()]
                .iter()
                .filter_map(|p| p.parent().map(Path::to_path_buf))
                .collect();
            folders.dedup();
            let mut known = tls::certificates(cert).unwrap_or_default();
            if let Some(ca) = &tls.ca_file {
                known.extend(tls::certificates(ca).unwrap_or_default());
            }
            for folder in folders {
                steps.extend(device_folder(&folder, &config.device.id, &known));
            }
        }
        _ => steps.push(Step::warn(
            "no client certificate (broker.tls.cert_file and key_file): fine for a broker \
             that does not ask for one, but Mosquitto with require_certificate true will \
             refuse the connection; make one with `pinpost certs device <id>`",
        )),
    }
    steps
}

/// The CAs in `ca_file`, each with what it says, after checking them.
type Cas = Vec<(CertificateDer<'static>, CertSummary)>;

fn ca_steps(file: &SourcedPath, now: i64, steps: &mut Vec<Step>) -> Cas {
    let certs = match tls::certificates(file) {
        Ok(c) => c,
        Err(e) => {
            steps.push(Step::fail(e.to_string()));
            return Vec::new();
        }
    };
    let mut cas = Vec::new();
    for der in certs {
        let Some(ca) = CertSummary::from_der(&der) else {
            steps.push(Step::fail(format!(
                "{}: a certificate in it cannot be read; copy it again from where it was made",
                file.path().display()
            )));
            continue;
        };
        let name = format!("the CA in {}", file.path().display());
        if !ca.is_ca && !ca.self_signed() {
            steps.push(Step::warn(format!(
                "{name} is not a CA certificate (it was issued by {}): point ca_file at the \
                 CA that signed the broker's certificate",
                ca.issuer
            )));
        }
        steps.push(dates(
            &name,
            &ca,
            now,
            "make a new CA and certificates with pinpost certs",
        ));
        cas.push((der, ca));
    }
    cas
}

fn client_steps(
    config: &Config,
    cert_file: &SourcedPath,
    key_file: &SourcedPath,
    cas: &Cas,
    now: i64,
    steps: &mut Vec<Step>,
) {
    if let Some(step) = key_permissions(key_file) {
        steps.push(step);
    }
    let chain = match tls::certificates(cert_file) {
        Ok(c) => c,
        Err(e) => {
            steps.push(Step::fail(e.to_string()));
            return;
        }
    };
    let Some((leaf_der, leaf)) = chain
        .first()
        .and_then(|der| Some((der, CertSummary::from_der(der)?)))
    else {
        steps.push(Step::fail(format!(
            "{}: the certificate cannot be read; copy it again from where it was made",
            cert_file.path().display()
        )));
        return;
    };
    let id = &config.device.id;
    let name = format!("the device certificate {}", cert_file.path().display());
    let renew = format!("make a new one with `pinpost certs device {id}`");
    steps.push(dates(&name, &leaf, now, &renew));

    if cas
        .iter()
        .any(|(der, ca)| ca.subject == leaf.subject && der.as_ref() != leaf_der.as_ref())
    {
        steps.push(Step::fail(format!(
            "{name} has the same subject ({}) as its CA: OpenSSL-based brokers such as \
             Mosquitto then take it for the CA itself and the handshake fails with obscure \
             errors (\"certificate verify failed\", \"Protocol error\"); {renew} (its subject \
             is the device id, distinct from the CA's)",
            leaf.subject
        )));
    }
    if !cas.is_empty() {
        let chained = chain
            .iter()
            .skip(1)
            .map(|c| c.as_ref())
            .chain(cas.iter().map(|(der, _)| der.as_ref()))
            .any(|issuer| tls::issued_by(leaf_der, issuer));
        if chained {
            steps.push(Step::pass(format!("{name} is signed by {}", leaf.issuer)));
        } else {
            steps.push(Step::warn(format!(
                "{name} was issued by {}, not by the CA in ca_file ({}): a broker that \
                 trusts only that CA refuses it (\"certificate verify failed\"); {renew} with \
                 the broker's CA",
                leaf.issuer,
                cas.iter()
                    .map(|(_, ca)| ca.subject.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
    }
    match leaf.common_name.as_deref() {
        Some(cn) if cn == id => {}
        Some(cn) => steps.push(Step::warn(format!(
            "{name} is for {cn:?} but the device id is {id:?}: with use_identity_as_username \
             the broker knows this device as {cn:?}, so an ACL pattern like \
             {prefix}/%u/# will not let it use {prefix}/{id}/; {renew}",
            prefix = config.device.topic_prefix
        ))),
        None => {}
    }
}

/// Validity at `now`, with a warning ahead of expiry.
fn dates(name: &str, cert: &CertSummary, now: i64, renew: &str) -> Step {
    if now > cert.not_after {
        Step::fail(format!(
            "{name} expired on {}; {renew}",
            utc::human(cert.not_after)
        ))
    } else if now < cert.not_before {
        Step::fail(format!(
            "{name} is not valid until {}: this machine's clock says {} (check it with \
             `date`; a Pi without a network time source starts in the past), or the \
             certificate was made with a wrong date",
            utc::human(cert.not_before),
            utc::human(now)
        ))
    } else if cert.not_after - now < EXPIRY_WARNING_DAYS * 86_400 {
        Step::warn(format!(
            "{name} expires on {}, in {} days; {renew}",
            utc::human(cert.not_after),
            (cert.not_after - now) / 86_400
        ))
    } else {
        Step::pass(format!(
            "{name} ({}) is valid until {}",
            cert.subject,
            utc::human(cert.not_after)
        ))
    }
}

/// Like ssh: a key anyone on the machine can read is a failure; one its
/// group can read is fine only for the service's own group.
fn key_permissions(key: &SourcedPath) -> Option<Step> {
    let meta = std::fs::metadata(key.path()).ok()?;
    let mode = meta.mode() & 0o777;
    let path = key.path().display();
    if mode & 0o004 != 0 {
        return Some(Step::fail(format!(
            "the private key {path} is readable by every user on this machine (mode {mode:04o}): \
             `chmod 600 {path}` (or `chmod 640` with `chgrp pinpost` for the service)"
        )));
    }
    if mode & 0o040 != 0 {
        let group = group_name(meta.gid()).unwrap_or_else(|| meta.gid().to_string());
        if group != "pinpost" && group != "root" {
            return Some(Step::warn(format!(
                "the private key {path} is readable by group {group} (mode {mode:04o}): \
                 `chmod 600 {path}`, or `chgrp pinpost {path}` if the service needs it"
            )));
        }
    }
    Some(Step::pass(format!(
        "the private key {path} is not readable by others (mode {mode:04o})"
    )))
}

fn group_name(gid: u32) -> Option<String> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups
        .lines()
        .find(|l| l.split(':').nth(2) == Some(&gid.to_string()))
        .and_then(|l| l.split(':').next())
        .map(str::to_string)
}

/// Files larger than this are not certificates or keys; not read.
const FOLDER_FILE_LIMIT: u64 = 64 * 1024;
/// How many files and how deep a folder is looked through.
const FOLDER_FILES: usize = 1000;
const FOLDER_DEPTH: usize = 3;

/// What a device's certificate folder holds, judged for device `id`: the
/// only private key there may be the device's own, for a certificate that is
/// not a CA and whose Common Name is `id`. A CA key there lets whoever holds
/// this Pi make certificates for every device and the operator; another
/// device's key lets them act as that device. `known` are certificates found
/// elsewhere (the config's cert_file and ca_file), to name whose key is whose.
pub fn device_folder(dir: &Path, id: &str, known: &[CertificateDer<'static>]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut files = Vec::new();
    collect_files(dir, 0, &mut files);
    let mut certs: Vec<(CertificateDer<'static>, PathBuf)> = known
        .iter()
        .map(|der| (der.clone(), PathBuf::new()))
        .collect();
    let mut keys = Vec::new();
    for path in &files {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                steps.push(Step::warn(format!(
                    "cannot read {} ({}): it may be a key that does not belong on this \
                     device; run `sudo pinpost check` to look inside",
                    path.display(),
                    crate::config::io_words(&e)
                )));
                continue;
            }
        };
        for der in CertificateDer::pem_slice_iter(&bytes).flatten() {
            certs.push((der, path.clone()));
        }
        if let Ok(key) = rustls_pki_types::PrivateKeyDer::from_pem_slice(&bytes) {
            keys.push((path.clone(), Some(key)));
        } else if path.extension().is_some_and(|e| e == "key")
            || bytes.windows(11).any(|w| w == b"PRIVATE KEY")
        {
            keys.push((path.clone(), None));
        }
    }
    let provider = rustls::crypto::ring::default_provider();
    let mut own = 0;
    for (path, key) in keys {
        let shown = path.display();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let spki = key
            .and_then(|k| provider.key_provider.load_private_key(k).ok())
            .and_then(|signer| signer.public_key().map(|p| p.as_ref().to_vec()));
        let owner = spki.as_ref().and_then(|spki| {
            certs.iter().find_map(|(der, _)| {
                let summary = CertSummary::from_der(der)?;
                (crate::tls::public_key_info(der).as_deref() == Some(spki.as_slice()))
                    .then_some(summary)
            })
        });
        let remove = "remove it from this device (it belongs on the laptop that makes the \
                      certificates, in certs/private/)";
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
            None if spki.is_none() => steps.push(Step::warn(format!(
                "{shown} looks like a private key pinpost cannot read; if it is not this \
                 device's, remove it"
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

fn collect_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
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
        } else if meta.is_file() && meta.len() <= FOLDER_FILE_LIMIT {
            out.push(path);
        }
    }
}

/// The service's own user (deploy/pinpost.service), which may own its files.
const SERVICE_USER: &str = "pinpost";

/// Who may change or read the files pinpost trusts: each must belong to
/// root, the user running `check` or the service's user (anyone else could
/// swap the CA or the key), be writable by no one else, and the password file (or a config
/// with a password in it) readable by no one else. Like ssh and systemd,
/// which refuse such files; here a finding is ✗, except a config without a
/// password that others can read (!: it names the broker, nothing secret).
pub fn ownership(config: &Config) -> Vec<Step> {
    let me = current_uid();
    let mut files: Vec<(PathBuf, &str)> = Vec::new();
    if let Some(file) = &config.file {
        files.push((file.clone(), "config"));
    }
    let credentials = config.broker.credentials.as_ref();
    if let Some(file) = credentials.and_then(|c| c.password_file.as_ref()) {
        files.push((file.clone(), "password file"));
    }
    if let Some(tls) = &config.broker.tls {
        for (file, kind) in [
            (&tls.ca_file, "CA certificate"),
            (&tls.cert_file, "device certificate"),
            (&tls.key_file, "private key"),
        ] {
            if let Some(file) = file {
                files.push((file.path().to_path_buf(), kind));
            }
        }
    }
    // The folders holding them: whoever may replace a file there may
    // replace the file.
    let mut folders: Vec<(PathBuf, &str)> = files
        .iter()
        .filter_map(|(p, _)| p.parent().map(|d| (d.to_path_buf(), "folder")))
        .filter(|(d, _)| !d.as_os_str().is_empty())
        .collect();
    folders.sort();
    folders.dedup();
    files.extend(folders);
    let mut steps = Vec::new();
    for (path, kind) in files {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        // A sticky folder (like /tmp) lets others add files, not replace ours.
        if kind == "folder" && meta.mode() & 0o1000 != 0 {
            continue;
        }
        let shown = path.display();
        let mode = meta.mode() & 0o7777;
        let owner = user_name(meta.uid());
        if meta.uid() != 0 && Some(meta.uid()) != me && owner.as_deref() != Some(SERVICE_USER) {
            steps.push(Step::fail(format!(
                "the {kind} {shown} belongs to user {} (uid {}), who can change it and so \
                 what this device trusts or who it is: `chown root {shown}`",
                owner.as_deref().unwrap_or("?"),
                meta.uid()
            )));
        }
        if mode & 0o002 != 0 {
            steps.push(Step::fail(format!(
                "the {kind} {shown} is writable by every user on this machine (mode \
                 {mode:04o}): `chmod o-w {shown}`"
            )));
        } else if mode & 0o020 != 0 && kind == "private key" {
            steps.push(Step::fail(format!(
                "the {kind} {shown} is writable by its group (mode {mode:04o}): \
                 `chmod g-w {shown}`"
            )));
        }
        if mode & 0o004 != 0 {
            let secret = kind == "password file"
                || (kind == "config" && credentials.is_some_and(|c| c.password_inline));
            if secret {
                steps.push(Step::fail(format!(
                    "the {kind} {shown} holds the broker password and is readable by every \
                     user on this machine (mode {mode:04o}): `chmod o-r {shown}` (0640, \
                     group pinpost, for the service)"
                )));
            } else if kind == "config" {
                steps.push(Step::warn(format!(
                    "the config {shown} is readable by every user on this machine (mode \
                     {mode:04o}): `chmod 640 {shown}` and `chgrp pinpost {shown}`"
                )));
            }
        }
    }
    steps
}

/// The effective user of this process: the owner of /proc/self.
fn current_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

fn user_name(uid: u32) -> Option<String> {
    let users = std::fs::read_to_string("/etc/passwd").ok()?;
    users
        .lines()
        .find(|l| l.split(':').nth(2) == Some(&uid.to_string()))
        .and_then(|l| l.split(':').next())
        .map(str::to_string)
}
