//! Certificate requests, so that a device's key never leaves the device:
//! `pinpost enroll` makes the key and a request on the Pi, `pinpost certs
//! sign` checks the request and issues the certificate on the laptop that
//! holds the CA, and only certificates travel.
//!
//! A request is only a public key and a name, signed by the key: signing
//! it trusts nothing else in it. So the checks are strict: the signature
//! (it was not changed on the way), one Common Name that is a valid device
//! id, a key of a kind and size the CA gives (EC P-256, or RSA of 2048 bits
//! or more), and no requested extensions or other attributes (the CA gives
//! a device exactly what `certs device` gives: client authentication).
//!
//! It knows X.509; not files, names reserved by the fleet, or the CLI.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, PublicKeyData, SignatureAlgorithm,
};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use super::{Authority, CertsError, KeyKind};
use crate::tls::{MIN_RSA_BITS, rsa_bits};

/// Larger than any request this module makes or accepts.
pub(crate) const MAX_REQUEST_BYTES: usize = 64 * 1024;
const P256: &str = "1.2.840.10045.3.1.7";
const EXTENSION_REQUEST: &str = "1.2.840.113549.1.9.14";

/// Why a request is not signed, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not a PEM `CERTIFICATE REQUEST`.
    #[error(
        "it is not a certificate request (PEM, \"-----BEGIN CERTIFICATE REQUEST-----\"): make it \
         on the device with `pinpost enroll`"
    )]
    NotPem,
    /// PEM, but not a request that can be read.
    #[error(
        "it cannot be read as a certificate request ({0}): make it again with `pinpost enroll`"
    )]
    Unreadable(String),
    /// The signature does not match the contents.
    #[error(
        "its signature does not match what it says: it was changed after it was made, or \
         damaged on the way; make it again with `pinpost enroll` and copy it unchanged"
    )]
    BadSignature,
    /// No single Common Name.
    #[error("it must name exactly one device (one Common Name), but names {0}")]
    Name(String),
    /// A key the CA does not give certificates for.
    #[error("{0}")]
    Key(String),
    /// It asks for more than a device gets.
    #[error(
        "it asks for {0}, which the CA does not give a device (a device gets client \
         authentication only); make the request with `pinpost enroll`"
    )]
    Asks(String),
}

/// A request that passed every check: the device id it names and its key.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) id: String,
    pub(crate) kind: KeyKind,
    key: RequestKey,
    /// The whole SubjectPublicKeyInfo, DER, to compare with a certificate's.
    spki: Vec<u8>,
}

impl Request {
    /// The request's SubjectPublicKeyInfo, DER.
    pub(crate) fn spki(&self) -> &[u8] {
        &self.spki
    }
}

/// The request's public key, in the form rcgen signs for.
#[derive(Debug, Clone)]
struct RequestKey {
    /// The subjectPublicKey bits: an EC point, or an RSAPublicKey.
    bits: Vec<u8>,
    algorithm: &'static SignatureAlgorithm,
}

impl PublicKeyData for RequestKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }

    fn algorithm(&self) -> &SignatureAlgorithm {
        self.algorithm
    }
}

/// A request for `id` made with `key` (PEM), as `pinpost enroll` sends it.
pub(crate) fn make(id: &str, key: &KeyPair) -> Result<String, CertsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, DnValue::Utf8String(id.to_string()));
    params.distinguished_name = dn;
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|e| CertsError::Sign(e.to_string()))
}

/// A new key of `kind`, PEM (PKCS#8), for `pinpost enroll`.
pub(crate) fn new_key(kind: KeyKind) -> Result<KeyPair, CertsError> {
    super::new_key(kind)
}

/// A device's key read back (PEM), to make a request again for it.
pub(crate) fn read_key(pem: &str) -> Result<KeyPair, CertsError> {
    KeyPair::from_pem(pem).map_err(|e| CertsError::KeyGen(format!("its key cannot be read: {e}")))
}

/// Reads and checks a request (PEM).
pub(crate) fn read(pem: &[u8]) -> Result<Request, RequestError> {
    if pem.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::Unreadable(format!(
            "it is {} bytes, far larger than a request",
            pem.len()
        )));
    }
    let der =
        CertificateSigningRequestDer::from_pem_slice(pem).map_err(|_| RequestError::NotPem)?;
    let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| RequestError::Unreadable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(RequestError::Unreadable("bytes follow it".into()));
    }
    let info = &csr.certification_request_info;
    let names: Vec<String> = info
        .subject
        .iter_attributes()
        .map(|a| {
            let value = a.as_str().unwrap_or("(unreadable)");
            if a.attr_type().to_id_string() == "2.5.4.3" {
                format!("CN={value:?}")
            } else {
                format!("{}={value:?}", a.attr_type().to_id_string())
            }
        })
        .collect();
    let mut cns = info.subject.iter_common_name();
    let id = match (cns.next(), cns.next(), names.len()) {
        (Some(cn), None, 1) => cn
            .as_str()
            .map_err(|_| RequestError::Name("a Common Name that is not text".into()))?
            .to_string(),
        _ if names.is_empty() => return Err(RequestError::Name("nothing".into())),
        _ => return Err(RequestError::Name(names.join(", "))),
    };
    // An empty extensionRequest (some tools add one) asks for nothing.
    let asked: Vec<String> = info
        .iter_attributes()
        .map(|a| a.oid.to_id_string())
        .filter(|oid| oid != EXTENSION_REQUEST)
        .map(|oid| attribute_name(&oid))
        .collect();
    let extensions: Vec<String> = csr
        .requested_extensions()
        .into_iter()
        .flatten()
        .map(extension_name)
        .collect();
    if !extensions.is_empty() {
        return Err(RequestError::Asks(format!(
            "extensions ({})",
            extensions.join(", ")
        )));
    }
    if !asked.is_empty() {
        return Err(RequestError::Asks(asked.join(", ")));
    }
    let spki = &info.subject_pki;
    let (kind, algorithm) = match spki.parsed() {
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            if curve.as_deref() != Some(P256) {
                return Err(RequestError::Key(format!(
                    "its key is on the elliptic curve {}, not P-256, the one curve the CA \
                     gives certificates for; make the request with `pinpost enroll`",
                    curve.unwrap_or_else(|| "(unnamed)".into())
                )));
            }
            (KeyKind::EcdsaP256, &rcgen::PKCS_ECDSA_P256_SHA256)
        }
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa_bits(rsa.modulus);
            if bits < MIN_RSA_BITS {
                return Err(RequestError::Key(format!(
                    "its RSA key has {bits} bits, fewer than the {MIN_RSA_BITS} the CA \
                     requires: anyone could soon forge its signatures; make it again with \
                     `pinpost enroll` (EC P-256) or `pinpost enroll --rsa` (2048 bits)"
                )));
            }
            (KeyKind::Rsa2048, &rcgen::PKCS_RSA_SHA256)
        }
        _ => {
            return Err(RequestError::Key(format!(
                "its key is of a kind the CA does not give certificates for ({}); make it \
                 with `pinpost enroll` (EC P-256) or `pinpost enroll --rsa`",
                spki.algorithm.algorithm.to_id_string()
            )));
        }
    };
    // After the key's kind and size: ring verifies no RSA signature under
    // 2048 bits, and "changed on the way" would be the wrong words for it.
    csr.verify_signature()
        .map_err(|_| RequestError::BadSignature)?;
    Ok(Request {
        id,
        kind,
        spki: spki.raw.to_vec(),
        key: RequestKey {
            bits: spki.subject_public_key.data.to_vec(),
            algorithm,
        },
    })
}

fn extension_name(e: &ParsedExtension<'_>) -> String {
    match e {
        ParsedExtension::BasicConstraints(b) if b.ca => {
            "to be a certificate authority (basicConstraints CA:TRUE)".into()
        }
        ParsedExtension::BasicConstraints(_) => "basicConstraints".into(),
        ParsedExtension::SubjectAlternativeName(_) => "more names (subjectAltName)".into(),
        ParsedExtension::KeyUsage(_) => "key usages".into(),
        ParsedExtension::ExtendedKeyUsage(_) => "extended key usages".into(),
        ParsedExtension::UnsupportedExtension { oid } => {
            format!("the extension {}", oid.to_id_string())
        }
        other => format!("{other:?}")
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect(),
    }
}

fn attribute_name(oid: &str) -> String {
    match oid {
        "1.2.840.113549.1.9.7" => "a challenge password".into(),
        other => format!("the attribute {other}"),
    }
}

impl Authority {
    /// The device certificate for a checked request: the same as
    /// [`Authority::client`] gives, for the request's own key.
    /// `life` is how long it lasts ([`super::LEAF_LIFE`] unless the
    /// operator chose).
    pub(crate) fn sign(
        &self,
        request: &Request,
        now: i64,
        life: std::time::Duration,
    ) -> Result<String, CertsError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, DnValue::Utf8String(request.id.clone()));
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if request.kind == KeyKind::Rsa2048 {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.use_authority_key_identifier_extension = true;
        super::leaf_validity(&mut params, now, life);
        let cert = params
            .signed_by(&request.key, &self.issuer, &self.key)
            .map_err(|e| CertsError::Sign(e.to_string()))?;
        self.confirm(cert.der())?;
        Ok(cert.pem())
    }
}

#[cfg(test)]
mod tests;
