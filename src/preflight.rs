//! The offline half of `pinpost check`: what a config's certificate and key
//! files say before any connection. Each finding is a [`Step`] marked fine,
//! worth fixing, or certain to fail, worded with what to do.
//!
//! It reads files and certificates; it does not connect (the `check`
//! command does that with the same link and diagnosis as `publish`).

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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
            if let Some(words) = agents_port_clash(config) {
                steps.push(Step::warn(words));
            }
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

/// Why a one-shot command (publish, subscribe, check) with this config
/// would knock the agent off the broker, if it would: no `broker.cli_port`,
/// so it connects on the agents' port, with a client certificate whose
/// Common Name is the config's device id, i.e. the agent's own identity.
/// A broker that binds client ids to certificates (as `pinpost certs
/// mosquitto` sets Mosquitto up) then takes it for the agent reconnecting
/// and drops the agent's session. A certificate for another name (the
/// operator's on a laptop) takes no one's place.
pub fn agents_port_clash(config: &Config) -> Option<String> {
    if config.broker.cli_port.is_some() {
        return None;
    }
    let tls = config.broker.tls.as_ref()?;
    let cert = tls.cert_file.as_ref()?;
    tls.key_file.as_ref()?;
    let leaf = tls::certificates(cert).ok()?.into_iter().next()?;
    let cn = CertSummary::from_der(&leaf)?.common_name?;
    let id = &config.device.id;
    (cn == *id).then(|| {
        format!(
            "broker.cli_port is not set: pinpost publish, subscribe and check then use the \
             agents' port {port} with {cert}, the certificate of {id}, the agent's own; a \
             broker that ties client ids to certificates (as pinpost certs mosquitto sets it \
             up) takes that for the agent coming back and drops the agent's session on this \
             device while the command runs. Set broker.cli_port = 8884 in the config (the \
             tools' listener `pinpost certs mosquitto` writes), or use another certificate",
            port = config.broker.port,
            cert = cert.path().display()
        )
    })
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

/// Files larger than this are not looked through: a certificate folder has
/// no business holding one, so it is a failure, never skipped in silence.
const FOLDER_FILE_LIMIT: u64 = 1024 * 1024;
/// How many files and how deep a folder is looked through.
const FOLDER_FILES: usize = 1000;
const FOLDER_DEPTH: usize = 3;

/// What one file holds, as far as certificates and keys go: every PEM
/// section (not only the first), or the whole file as DER.
#[derive(Default)]
struct Contents {
    /// The label of every PEM section, in order (`CERTIFICATE`, `PRIVATE KEY`…).
    labels: Vec<String>,
    certs: Vec<CertificateDer<'static>>,
    /// Private keys pinpost can read, each with the public key it matches.
    keys: Vec<Option<Vec<u8>>>,
    /// Private keys (or bundles holding them) pinpost cannot read, in words:
    /// whose they are cannot be told, so they cannot be let through.
    unreadable: Vec<String>,
    /// Bytes no PEM file holds (binary data around or between sections).
    binary: bool,
}

impl Contents {
    fn key_count(&self) -> usize {
        self.keys.len() + self.unreadable.len()
    }
}

/// The public key (SubjectPublicKeyInfo) of a private key, if it loads.
fn key_spki(key: PrivateKeyDer<'static>) -> Option<Vec<u8>> {
    let provider = rustls::crypto::ring::default_provider();
    let signer = provider.key_provider.load_private_key(key).ok()?;
    signer.public_key().map(|p| p.as_ref().to_vec())
}

/// The labels of every `-----BEGIN <label>-----` in `bytes`, wherever they
/// are (a tool reading a file may be less strict than rustls about where a
/// section starts).
fn pem_labels(bytes: &[u8]) -> Vec<String> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let mut labels = Vec::new();
    let mut rest = bytes;
    while let Some(at) = rest.windows(BEGIN.len()).position(|w| w == BEGIN) {
        rest = &rest[at + BEGIN.len()..];
        let end = rest
            .windows(5)
            .position(|w| w == b"-----")
            .unwrap_or(rest.len())
            .min(80);
        labels.push(String::from_utf8_lossy(&rest[..end.min(rest.len())]).into_owned());
    }
    labels
}

/// Whether `bytes` is a DER PKCS#12 bundle (PFX: a SEQUENCE whose first
/// element is INTEGER 3), which may hold keys behind a password.
fn is_pkcs12(bytes: &[u8]) -> bool {
    let Some((&0x30, rest)) = bytes.split_first() else {
        return false;
    };
    let skip = match rest.first() {
        Some(&len) if len < 0x80 => 1,
        Some(&len) => 1 + usize::from(len & 0x7f),
        None => return false,
    };
    rest.get(skip..skip + 3) == Some(&[0x02, 0x01, 0x03][..])
}

fn contents(bytes: &[u8]) -> Contents {
    let mut found = Contents {
        labels: pem_labels(bytes),
        binary: bytes
            .iter()
            .any(|&b| !(b.is_ascii_graphic() || b.is_ascii_whitespace())),
        ..Contents::default()
    };
    if found.labels.is_empty() {
        // No PEM at all: the whole file may be one DER certificate or key.
        if CertSummary::from_der(bytes).is_some() {
            found.certs.push(CertificateDer::from(bytes.to_vec()));
        } else if is_pkcs12(bytes) {
            found.unreadable.push(
                "a PKCS#12 bundle (.p12/.pfx), which holds a private key behind a password".into(),
            );
        } else if let Ok(key) = PrivateKeyDer::try_from(bytes.to_vec()) {
            match key_spki(key) {
                Some(spki) => found.keys.push(Some(spki)),
                None => found
                    .unreadable
                    .push("a private key in DER form pinpost cannot read".into()),
            }
        }
        return found;
    }
    found.certs = CertificateDer::pem_slice_iter(bytes)
        .map_while(Result::ok)
        .collect();
    let readable: Vec<_> = PrivateKeyDer::pem_slice_iter(bytes)
        .map_while(Result::ok)
        .collect();
    let mut readable = readable.into_iter();
    for label in found.labels.clone() {
        if !label.contains("PRIVATE KEY") {
            continue;
        }
        // The kinds rustls reads, in the order it read them.
        let key = if ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"].contains(&label.as_str())
        {
            readable.next()
        } else {
            None
        };
        match key.and_then(key_spki) {
            Some(spki) => found.keys.push(Some(spki)),
            None if label.contains("ENCRYPTED") => found.unreadable.push(
                "an encrypted private key (no one can tell whose it is without its password)"
                    .into(),
            ),
            None => found
                .unreadable
                .push(format!("a private key pinpost cannot read ({label})")),
        }
    }
    found
}

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
/// read, is a failure. `pinpost certs verify` is stricter ([`device_bundle`]).
pub fn device_folder(dir: &Path, id: &str, known: &[CertificateDer<'static>]) -> Vec<Step> {
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
                    crate::config::io_words(&e)
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
pub fn device_bundle(dir: &Path, id: &str) -> Vec<Step> {
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
                crate::config::io_words(&e)
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
            .map_err(|e| crate::config::io_words(&e))
            .and_then(|m| {
                if !m.is_file() {
                    Err("it is not a plain file".to_string())
                } else if m.len() > BUNDLE_FILE_LIMIT {
                    Err(format!(
                        "it is {} bytes, too large for a certificate or a key",
                        m.len()
                    ))
                } else {
                    std::fs::read(&path).map_err(|e| crate::config::io_words(&e))
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

/// What a file holds, in words: its PEM sections, or what it is as DER.
fn describe(found: &Contents) -> String {
    let mut parts: Vec<String> = found
        .labels
        .iter()
        .map(|l| format!("a {l} section"))
        .collect();
    if found.labels.is_empty() {
        parts.extend(found.unreadable.iter().cloned());
        if !found.keys.is_empty() {
            parts.push("a private key in DER form".into());
        }
        if !found.certs.is_empty() {
            parts.push("a certificate in DER form".into());
        }
    } else {
        parts.extend(found.unreadable.iter().cloned());
    }
    if found.binary {
        parts.push("binary data".into());
    }
    if parts.is_empty() {
        "nothing pinpost recognises".into()
    } else {
        parts.join(", ")
    }
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
