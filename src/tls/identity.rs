//! The certificate and key a link offers the broker, replaceable while the
//! link runs: a renewed pair is offered from the next handshake on, with no
//! new link and no restart. Also what a renewal needs from TLS: a pair
//! read from PEM text, a certificate from the operator checked against the
//! key it was asked for, and the proof that a request comes from the holder
//! of the current key.
//!
//! It knows certificates and keys; it does not know files, topics or when
//! a renewal is due (`agent::renewal` decides that).

use std::sync::{Arc, Mutex};

use rustls::SignatureScheme;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::cert::{CertSummary, issued_by, public_key_info};

/// The pair handshakes offer, shared between the link's TLS config and
/// whoever may replace it. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Identity(Arc<Mutex<Held>>);

#[derive(Debug, Default)]
struct Held {
    key: Option<Arc<CertifiedKey>>,
    /// What failures name once a pair other than the config's is offered:
    /// its certificate and the file it is kept in.
    shown: Option<(CertSummary, String)>,
}

impl Identity {
    pub(crate) fn new(key: Option<Arc<CertifiedKey>>) -> Identity {
        Identity(Arc::new(Mutex::new(Held { key, shown: None })))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the next handshake offers.
    pub(crate) fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.held().key.clone()
    }

    /// The certificate offered and its file, when it is not the config's.
    pub(crate) fn shown(&self) -> Option<(CertSummary, String)> {
        self.held().shown.clone()
    }

    /// Offers `pair`, kept in `file`, from the next handshake on (a
    /// connection that is up keeps the pair it was made with).
    pub fn offer(&self, pair: &Pair, file: &str) {
        let mut held = self.held();
        held.key = Some(pair.key.clone());
        held.shown = Some((pair.summary.clone(), file.to_string()));
    }
}

/// A certificate and its key, read and matched.
#[derive(Debug, Clone)]
pub struct Pair {
    key: Arc<CertifiedKey>,
    summary: CertSummary,
    /// The leaf certificate's PEM block, as it was read.
    leaf_pem: String,
}

/// Why a pair or an issued certificate is not usable, in words that follow
/// "the certificate …" or name the part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    /// No certificate could be read.
    #[error("holds no readable certificate ({0})")]
    NoCertificate(String),
    /// No key could be read.
    #[error("holds no readable private key ({0})")]
    NoKey(String),
    /// The key is of a kind TLS cannot sign with.
    #[error("its key cannot sign TLS handshakes ({0})")]
    KeyKind(String),
    /// The certificate is for another key.
    #[error("is for another key than the one this device made for it")]
    WrongKey,
    /// The certificate names another device.
    #[error("is made out to {found:?}, not to this device ({id:?})")]
    WrongId {
        /// This device's id.
        id: String,
        /// The Common Name the certificate has.
        found: String,
    },
    /// No CA this device trusts signed it.
    #[error("was not signed by the CA this device trusts ({0})")]
    WrongCa(String),
    /// It is a CA certificate.
    #[error("is a CA certificate, not a device's")]
    IsCa,
    /// It has ended.
    #[error("ended at {0}")]
    Ended(String),
    /// It starts too far in the future.
    #[error("is not valid until {0}")]
    NotYet(String),
}

/// How far ahead of this device's clock a certificate may start: the
/// operator's laptop may be a little ahead.
const START_SLACK: i64 = 3600;

impl Pair {
    /// A pair from PEM text: the certificate chain (leaf first) and the
    /// key, which may be in the same text.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Pair, PairError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PairError::NoCertificate(e.to_string()))?;
        let leaf = chain
            .first()
            .ok_or_else(|| PairError::NoCertificate("no BEGIN CERTIFICATE".into()))?;
        let summary = CertSummary::from_der(leaf)
            .ok_or_else(|| PairError::NoCertificate("not X.509".into()))?;
        if public_key_info(leaf).is_none() {
            return Err(PairError::NoCertificate("no public key".into()));
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| PairError::NoKey(e.to_string()))?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = super::certify(chain, key, &provider).map_err(|e| match e {
            super::Unpaired::KeyKind(e) => PairError::KeyKind(e),
            super::Unpaired::Mismatch => PairError::WrongKey,
        })?;
        Ok(Pair {
            key: Arc::new(certified),
            summary,
            leaf_pem: first_block(cert_pem).unwrap_or_default(),
        })
    }

    /// The leaf certificate as PEM (never the key, which may share the
    /// text it was read from).
    pub fn leaf_pem(&self) -> String {
        self.leaf_pem.clone()
    }

    /// Whether its key is RSA (a renewal keeps the kind).
    pub fn rsa(&self) -> bool {
        self.leaf()
            .and_then(super::strength::rsa_bits_der)
            .is_some()
    }

    /// When it ends (Unix seconds).
    pub fn ends(&self) -> i64 {
        self.summary.not_after
    }

    /// When it starts (Unix seconds).
    pub fn starts(&self) -> i64 {
        self.summary.not_before
    }

    /// Its Common Name, the device id.
    pub fn name(&self) -> Option<&str> {
        self.summary.common_name.as_deref()
    }

    /// The leaf certificate, DER.
    pub fn leaf(&self) -> Option<&[u8]> {
        self.key.cert.first().map(|c| c.as_ref())
    }

    /// Checks this pair as a device's own: made out to `id`, signed by one
    /// of `cas` (DER), not a CA, and valid at `now`.
    pub fn check_for(&self, id: &str, cas: &[Vec<u8>], now: i64) -> Result<(), PairError> {
        let found = self.name().unwrap_or_default();
        if found != id {
            return Err(PairError::WrongId {
                id: id.to_string(),
                found: found.to_string(),
            });
        }
        if self.summary.is_ca {
            return Err(PairError::IsCa);
        }
        let leaf = self.leaf().unwrap_or_default();
        if !cas.iter().any(|ca| issued_by(leaf, ca)) {
            return Err(PairError::WrongCa(self.summary.issuer.clone()));
        }
        if now >= self.ends() {
            return Err(PairError::Ended(stamp(self.ends())));
        }
        if self.starts() > now.saturating_add(START_SLACK) {
            return Err(PairError::NotYet(stamp(self.starts())));
        }
        Ok(())
    }

    /// Signs `message` with this pair's key, for a request's proof:
    /// (scheme name, signature).
    pub fn prove(&self, message: &[u8]) -> Option<(String, Vec<u8>)> {
        let signer = self.key.key.choose_scheme(&PROOF_SCHEMES)?;
        let scheme = proof_name(signer.scheme())?;
        let signature = signer.sign(&proof_message(message)).ok()?;
        Some((scheme.to_string(), signature))
    }
}

fn stamp(unix: i64) -> String {
    crate::utc::rfc3339_millis(unix.saturating_mul(1000))
}

/// The schemes a proof is made with, by the names it carries.
const PROOF_SCHEMES: [SignatureScheme; 3] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
];

fn proof_name(scheme: SignatureScheme) -> Option<&'static str> {
    match scheme {
        SignatureScheme::ECDSA_NISTP256_SHA256 => Some("ecdsa-p256-sha256"),
        SignatureScheme::ECDSA_NISTP384_SHA384 => Some("ecdsa-p384-sha384"),
        SignatureScheme::RSA_PSS_SHA256 => Some("rsa-pss-sha256"),
        _ => None,
    }
}

/// What a proof signs: the request, behind a label of its own, so that no
/// signature made for anything else (a TLS handshake) can pass for one.
fn proof_message(message: &[u8]) -> Vec<u8> {
    let mut signed = b"pinpost certificate renewal v1\0".to_vec();
    signed.extend_from_slice(message);
    signed
}

/// Whether `signature` (made with `scheme`, as [`Pair::prove`] names it)
/// proves that the key of the certificate `cert_der` signed `message`.
pub(crate) fn proof_holds(cert_der: &[u8], scheme: &str, message: &[u8], signature: &[u8]) -> bool {
    use ring::signature as sig;
    let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
        return false;
    };
    let key = &cert.public_key().subject_public_key.data;
    let algorithm: &dyn sig::VerificationAlgorithm = match scheme {
        "ecdsa-p256-sha256" => &sig::ECDSA_P256_SHA256_ASN1,
        "ecdsa-p384-sha384" => &sig::ECDSA_P384_SHA384_ASN1,
        "rsa-pss-sha256" => &sig::RSA_PSS_2048_8192_SHA256,
        _ => return false,
    };
    sig::UnparsedPublicKey::new(algorithm, key.as_ref())
        .verify(&proof_message(message), signature)
        .is_ok()
}

/// The first certificate's PEM block in `text`, alone.
fn first_block(text: &[u8]) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(text).ok()?;
    let start = text.find(BEGIN)?;
    let end = text[start..].find(END)? + start + END.len();
    Some(format!("{}\n", &text[start..end]))
}

/// The CA certificates (DER) in PEM text, for [`Pair::check_for`].
pub fn ca_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .collect()
}

#[cfg(test)]
mod tests;
