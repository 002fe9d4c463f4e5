//! The signed envelope a manifest and a signed config both travel in: the
//! body's exact bytes as a string, the release key's id, and Ed25519 over
//! the body. Sealing and unsealing; what the body says is its owner's.

use serde::{Deserialize, Serialize};

use super::key::{Public, Signer};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    /// The body's JSON, exactly as signed.
    body: String,
    /// The release key's id ([`Public::id`]).
    key: String,
    /// Ed25519 over `body`'s bytes, hex.
    signature: String,
}

/// Why an envelope does not open, before its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unsealed {
    /// Larger than `max`: refused unread.
    TooLarge(usize),
    /// Not an envelope at all.
    NotSigned(String),
    /// Signed by another key (its id).
    OtherKey(String),
    /// The signature is not hex, or does not hold.
    Forged,
}

/// `body` signed with `signer`, as published and written to disk.
pub(crate) fn seal(body: String, signer: &Signer) -> Result<Vec<u8>, serde_json::Error> {
    let envelope = Envelope {
        signature: crate::hex::hex(&signer.sign(body.as_bytes())),
        key: signer.public().id(),
        body,
    };
    let mut text = serde_json::to_vec_pretty(&envelope)?;
    text.push(b'\n');
    Ok(text)
}

/// The body of `bytes`, if `key` signed it exactly.
pub(crate) fn unseal(bytes: &[u8], key: &Public, max: usize) -> Result<String, Unsealed> {
    if bytes.len() > max {
        return Err(Unsealed::TooLarge(bytes.len()));
    }
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|e| Unsealed::NotSigned(e.to_string()))?;
    if envelope.key != key.id() {
        return Err(Unsealed::OtherKey(envelope.key));
    }
    let signature = crate::hex::unhex(&envelope.signature).ok_or(Unsealed::Forged)?;
    if !key.verifies(envelope.body.as_bytes(), &signature) {
        return Err(Unsealed::Forged);
    }
    Ok(envelope.body)
}
