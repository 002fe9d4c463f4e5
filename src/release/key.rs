//! The release key: Ed25519, made on the laptop (`pinpost certs
//! release-key`); its private half (PKCS#8 PEM) stays in `certs/private/`,
//! its public half (`release.pub`, SubjectPublicKeyInfo PEM) goes to every
//! Pi with the config. Only what it signed is ever applied.

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};

use super::ReleaseError;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32-byte key
/// follows it.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A new release key: (private PKCS#8 PEM, public PEM).
pub(crate) fn generate() -> Result<(String, String), ReleaseError> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| ReleaseError::Key(format!("cannot make an Ed25519 key: {e}")))?;
    Ok((pair.serialize_pem(), pair.public_key_pem()))
}

/// The private half, to sign with.
pub(crate) struct Signer(Ed25519KeyPair);

impl Signer {
    pub(crate) fn from_pem(pem: &[u8]) -> Result<Signer, ReleaseError> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| ReleaseError::Key(format!("no private key in it ({e})")))?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_der()).map_err(|e| {
            ReleaseError::Key(format!(
                "it is not an Ed25519 key ({e}); make one with `pinpost certs release-key`"
            ))
        })?;
        Ok(Signer(pair))
    }

    pub(crate) fn public(&self) -> Public {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.0.public_key().as_ref());
        Public(raw)
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.0.sign(message).as_ref().to_vec()
    }
}

/// The public half, to check with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Public([u8; 32]);

impl Public {
    pub(crate) fn from_pem(pem: &[u8]) -> Result<Public, ReleaseError> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|e| {
            ReleaseError::Key(format!(
                "no public key in it ({e}); it is the release.pub that `pinpost certs \
                 release-key` made"
            ))
        })?;
        let bytes = der.as_ref();
        match bytes.strip_prefix(&SPKI_PREFIX[..]) {
            Some(raw) if raw.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(raw);
                Ok(Public(key))
            }
            _ => Err(ReleaseError::Key(
                "it is not an Ed25519 public key (a release key is Ed25519)".into(),
            )),
        }
    }

    /// A short name for the key: the first 8 bytes of its SHA-256, hex.
    pub(crate) fn id(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        crate::hex::hex(&digest.as_ref()[..8])
    }

    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}
