//! X.509 version 1 broker certificates: what `openssl x509 -req` makes
//! without `-extfile`, and so what the mosquitto-tls man page recipe gives.
//! webpki refuses them outright (they cannot carry subjectAltName), so with
//! `legacy_common_name` pinpost checks them itself, as OpenSSL would: signed
//! directly by a CA from `ca_file`, within its dates, Common Name equal to
//! the host. Handshake signatures are then checked with the certificate's
//! key. Without `legacy_common_name` nothing here accepts anything.
//!
//! webpki refuses SHA-1 and MD5 signatures and RSA keys under 2048 bits in
//! a version 3 certificate; so does this path, before anything else, by
//! `strength`'s rules (x509-parser alone verifies SHA-1 signatures as valid).

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{CertificateError, DigitallySignedStruct};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::cert::names_match;
use super::strength;

#[derive(Debug)]
pub(crate) struct LegacyV1 {
    cas: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// Whether `der` is an X.509 version 1 certificate.
pub(crate) fn is_v1(der: &[u8]) -> bool {
    X509Certificate::from_der(der).is_ok_and(|(_, c)| c.version().0 == 0)
}

impl LegacyV1 {
    pub(crate) fn new(
        cas: Vec<CertificateDer<'static>>,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        LegacyV1 { cas, algorithms }
    }

    /// Checks the strength of its signature and keys, then issuer
    /// signature, dates and Common Name of a v1 leaf.
    pub(crate) fn verify(
        &self,
        der: &[u8],
        name: &str,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let bad = |e: CertificateError| rustls::Error::InvalidCertificate(e);
        let (_, leaf) =
            X509Certificate::from_der(der).map_err(|_| bad(CertificateError::BadEncoding))?;
        let issuers: Vec<X509Certificate<'_>> = self
            .cas
            .iter()
            .filter_map(|ca| X509Certificate::from_der(ca).ok().map(|(_, ca)| ca))
            .filter(|ca| ca.subject() == leaf.issuer())
            .collect();
        // Judged before the signature: a weak one may not verify at all
        // (MD5, a small CA key), and "unknown issuer" would mislead.
        if let Some(weak) = issuers.iter().find_map(|ca| strength::of_issued(&leaf, ca)) {
            return Err(weak.into_error());
        }
        let signed_by_trusted_ca = issuers
            .iter()
            .any(|ca| leaf.verify_signature(Some(ca.public_key())).is_ok());
        if !signed_by_trusted_ca {
            return Err(bad(CertificateError::UnknownIssuer));
        }
        let now = now.as_secs() as i64;
        if now < leaf.validity().not_before.timestamp() {
            return Err(bad(CertificateError::NotValidYet));
        }
        if now > leaf.validity().not_after.timestamp() {
            return Err(bad(CertificateError::Expired));
        }
        let cn = leaf
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok());
        match cn {
            Some(cn) if names_match(cn, name) => Ok(()),
            _ => Err(bad(CertificateError::NotValidForName)),
        }
    }

    /// Checks a TLS 1.2 or 1.3 handshake signature with the leaf's key.
    pub(crate) fn verify_signature(
        &self,
        der: &[u8],
        message: &[u8],
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let invalid = || rustls::Error::InvalidCertificate(CertificateError::BadSignature);
        let (_, leaf) = X509Certificate::from_der(der).map_err(|_| invalid())?;
        let key = &leaf.public_key().subject_public_key.data;
        let candidates = self
            .algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algs)| *algs)
            .ok_or_else(invalid)?;
        // An algorithm for another key type fails to parse the key, so only
        // the one matching the certificate's key can succeed.
        candidates
            .iter()
            .any(|alg| alg.verify_signature(key, message, dss.signature()).is_ok())
            .then(HandshakeSignatureValid::assertion)
            .ok_or_else(invalid)
    }
}
