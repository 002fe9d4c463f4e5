//! What one certificate or key file holds: every PEM section, DER
//! certificates and keys, PKCS#12 bundles, and which public key each
//! private key matches, so a key can be told apart from another's.
//!
//! It reads bytes it is given; it opens no file and does not judge whether
//! what it finds may be there (the folder and bundle checks do).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::tls::CertSummary;

/// What one file holds, as far as certificates and keys go: every PEM
/// section (not only the first), or the whole file as DER.
#[derive(Default)]
pub(super) struct Contents {
    /// The label of every PEM section, in order (`CERTIFICATE`, `PRIVATE KEY`…).
    pub(super) labels: Vec<String>,
    pub(super) certs: Vec<CertificateDer<'static>>,
    /// Private keys pinpost can read, each with the public key it matches.
    pub(super) keys: Vec<Option<Vec<u8>>>,
    /// Private keys (or bundles holding them) pinpost cannot read, in words:
    /// whose they are cannot be told, so they cannot be let through.
    pub(super) unreadable: Vec<String>,
    /// Bytes no PEM file holds (binary data around or between sections).
    pub(super) binary: bool,
}

impl Contents {
    pub(super) fn key_count(&self) -> usize {
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

/// What `bytes` (one file) holds.
pub(super) fn contents(bytes: &[u8]) -> Contents {
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

/// What a file holds, in words: its PEM sections, or what it is as DER.
pub(super) fn describe(found: &Contents) -> String {
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
