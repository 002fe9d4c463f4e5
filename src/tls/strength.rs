//! What is too weak to trust in a certificate, whoever checks it: a
//! signature over a broken hash (MD2, MD4, MD5, SHA-1) and an RSA key under
//! 2048 bits, the floor webpki and every current TLS client keep.
//!
//! It judges parsed certificates and carries its verdict through a rustls
//! error so that `explain` can say which weakness it was; it does not decide
//! whether a certificate is otherwise trusted.

use std::sync::Arc;

use rustls::{CertificateError, OtherError};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

/// The smallest RSA key accepted.
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// Signature algorithms whose hash is broken (collisions can be made, so a
/// CA's signature on one certificate can be reused on a forged one).
const WEAK_SIGNATURES: &[(&str, &str)] = &[
    ("1.2.840.113549.1.1.2", "MD2"),
    ("1.2.840.113549.1.1.3", "MD4"),
    ("1.2.840.113549.1.1.4", "MD5"),
    ("1.3.14.3.2.25", "MD5"),
    ("1.2.840.113549.1.1.5", "SHA-1"),
    ("1.3.14.3.2.29", "SHA-1"),
    ("1.2.840.10040.4.3", "SHA-1"),
    ("1.2.840.10045.4.1", "SHA-1"),
];

/// Why a certificate is refused although its CA, dates and name may be
/// right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Weakness {
    /// Signed over a broken hash.
    #[error("it is signed with {hash} ({algorithm}), a broken hash")]
    Signature {
        /// The hash's name, e.g. `SHA-1`.
        hash: &'static str,
        /// The signature algorithm's short name (its OID when unnamed).
        algorithm: String,
    },
    /// The certificate's own RSA key is too small.
    #[error("its RSA key has {bits} bits, fewer than the {MIN_RSA_BITS} required")]
    LeafKey {
        /// The key's size.
        bits: usize,
    },
    /// The signing CA's RSA key is too small.
    #[error(
        "the CA that signed it has an RSA key of {bits} bits, fewer than the {MIN_RSA_BITS} \
         required"
    )]
    CaKey {
        /// The CA key's size.
        bits: usize,
    },
}

impl Weakness {
    /// As a rustls certificate error, to be found again by [`Weakness::of`].
    pub(crate) fn into_error(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(self))))
    }

    /// The weakness a rustls error carries, if it is one of ours.
    pub(crate) fn of(error: &rustls::Error) -> Option<&Weakness> {
        match error {
            rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
                other.0.downcast_ref::<Weakness>()
            }
            _ => None,
        }
    }
}

/// The RSA key size of `cert`, if its key is RSA.
pub(crate) fn cert_rsa_bits(cert: &X509Certificate<'_>) -> Option<usize> {
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => Some(rsa_bits(rsa.modulus)),
        _ => None,
    }
}

/// The size of an RSA modulus (a big-endian unsigned integer): its bits,
/// leading zeros aside. x509-parser's `key_size` counts whole bytes and
/// reads 0 when the first byte has its high bit set.
pub(crate) fn rsa_bits(modulus: &[u8]) -> usize {
    let digits = modulus
        .iter()
        .position(|b| *b != 0)
        .map_or(&[][..], |i| &modulus[i..]);
    match digits.first() {
        Some(first) => digits.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

/// What is too weak about a certificate by itself: its signature's hash,
/// then its own RSA key.
pub(crate) fn of_leaf(leaf: &X509Certificate<'_>) -> Option<Weakness> {
    let oid = leaf.signature_algorithm.algorithm.to_id_string();
    if let Some((_, hash)) = WEAK_SIGNATURES.iter().find(|(weak, _)| *weak == oid) {
        let algorithm = x509_parser::objects::oid2sn(
            &leaf.signature_algorithm.algorithm,
            x509_parser::objects::oid_registry(),
        )
        .map_or(oid.clone(), str::to_string);
        return Some(Weakness::Signature { hash, algorithm });
    }
    cert_rsa_bits(leaf)
        .filter(|bits| *bits < MIN_RSA_BITS)
        .map(|bits| Weakness::LeafKey { bits })
}

/// What is too weak about a certificate and the CA that signed it.
pub(crate) fn of_issued(leaf: &X509Certificate<'_>, ca: &X509Certificate<'_>) -> Option<Weakness> {
    of_leaf(leaf).or_else(|| {
        cert_rsa_bits(ca)
            .filter(|bits| *bits < MIN_RSA_BITS)
            .map(|bits| Weakness::CaKey { bits })
    })
}

/// [`of_leaf`] for a DER certificate (none if it does not parse).
pub(crate) fn of_leaf_der(der: &[u8]) -> Option<Weakness> {
    X509Certificate::from_der(der)
        .ok()
        .and_then(|(_, cert)| of_leaf(&cert))
}

/// The RSA key size of a DER certificate, if it parses and is RSA.
pub(crate) fn rsa_bits_der(der: &[u8]) -> Option<usize> {
    X509Certificate::from_der(der)
        .ok()
        .and_then(|(_, cert)| cert_rsa_bits(&cert))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weakness_survives_the_trip_through_a_rustls_error() {
        let weak = Weakness::LeafKey { bits: 1024 };
        let error = weak.clone().into_error();
        assert_eq!(Weakness::of(&error), Some(&weak));
        let other = rustls::Error::InvalidCertificate(CertificateError::BadSignature);
        assert_eq!(Weakness::of(&other), None);
    }

    #[test]
    fn a_modern_certificate_is_not_weak() {
        // rcgen signs with ECDSA P-256 and SHA-256.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["broker".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(of_leaf_der(cert.der()), None);
        assert_eq!(rsa_bits_der(cert.der()), None);
    }
}
