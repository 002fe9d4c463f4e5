//! A signed config: one device's whole config file (TOML text), the device
//! it is for, when it was signed and until when it may be applied, sealed
//! with the release key like a manifest. A device applies it only if it
//! opens with the key it holds, names this device, is not older than a
//! config it has taken, is in date, and passes the device's own config
//! checker. The config travels inside the signature: nothing else to
//! fetch, nothing to mix.

use serde::{Deserialize, Serialize};

use super::ReleaseError;
use super::envelope::{Unsealed, seal, unseal};
use super::key::{Public, Signer};
use super::manifest::MAX_LIFE;

/// The largest config text signed: a config is a few KiB (the commented
/// example, 14 KiB).
pub(crate) const MAX_CONFIG: usize = 24 * 1024;
/// The largest signed config read (the text, escaped, and the envelope):
/// a package chunk's size, so a device's largest packet does not grow.
pub(crate) const MAX_SIGNED_CONFIG: usize = crate::topics::RELEASE_CHUNK;

/// One device's config, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignedConfig {
    /// `"config"`: a manifest's body is refused as one, and this as a
    /// manifest.
    pub(crate) kind: String,
    /// 1.
    pub(crate) format: u32,
    /// The device id it is for (its `[device] id`).
    pub(crate) device: String,
    /// The config file's text.
    pub(crate) config: String,
    /// When it was signed (Unix seconds).
    pub(crate) issued: i64,
    /// After this (Unix seconds) it is not applied.
    pub(crate) expires: i64,
}

impl SignedConfig {
    pub(crate) fn check(&self) -> Result<(), ReleaseError> {
        let bad = |why: String| Err(ReleaseError::Config(why));
        if self.kind != "config" || self.format != 1 {
            return bad(format!(
                "is a {:?} of format {}, which this pinpost does not know",
                self.kind, self.format
            ));
        }
        if self.device.is_empty() || self.device.len() > 64 {
            return bad("names no device".into());
        }
        if self.config.len() > MAX_CONFIG {
            return bad(format!(
                "holds {} bytes of config, more than the {MAX_CONFIG} allowed",
                self.config.len()
            ));
        }
        if self.expires <= self.issued || self.expires - self.issued > MAX_LIFE {
            return bad("expires before it was signed, or more than a year after".into());
        }
        Ok(())
    }

    pub(crate) fn sign(&self, signer: &Signer) -> Result<Vec<u8>, ReleaseError> {
        self.check()?;
        let body = serde_json::to_string(self)
            .map_err(|e| ReleaseError::Config(format!("cannot be written ({e})")))?;
        let sealed = seal(body, signer)
            .map_err(|e| ReleaseError::Config(format!("cannot be written ({e})")))?;
        if sealed.len() > MAX_SIGNED_CONFIG {
            return Err(ReleaseError::Config(format!(
                "would be {} bytes signed, more than the {MAX_SIGNED_CONFIG} a device reads: \
                 leave out comments",
                sealed.len()
            )));
        }
        Ok(sealed)
    }

    /// The config text's SHA-256, hex: how devices and the operator name
    /// a config.
    pub(crate) fn sha256(&self) -> String {
        sha256_hex(self.config.as_bytes())
    }

    /// Whether device `id` may apply it at `now` (Unix seconds), having
    /// taken a config signed at `newest` before.
    pub(crate) fn admit(
        &self,
        id: &str,
        now: i64,
        newest: Option<i64>,
    ) -> Result<(), ReleaseError> {
        let refuse = |why: String| Err(ReleaseError::Refused(why));
        if self.device != id {
            return refuse(format!(
                "the config is signed for {}, and this device is {id}",
                self.device
            ));
        }
        super::check_dates("config", self.issued, self.expires, now, newest)
    }
}

/// Bytes' SHA-256, hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Opens a signed config with `key`.
pub(crate) fn open(bytes: &[u8], key: &Public) -> Result<SignedConfig, ReleaseError> {
    let body = unseal(bytes, key, MAX_SIGNED_CONFIG).map_err(|e| {
        ReleaseError::Config(match e {
            Unsealed::TooLarge(n) => format!("is {n} bytes, far larger than a config"),
            Unsealed::NotSigned(e) => format!("is not a signed config ({e})"),
            Unsealed::OtherKey(id) => format!(
                "is signed by the key {id}, and this device trusts only {} (its release.pub)",
                key.id()
            ),
            Unsealed::Forged => {
                "does not verify: it was changed after signing, or signed by another key".into()
            }
        })
    })?;
    let config: SignedConfig = serde_json::from_str(&body)
        .map_err(|e| ReleaseError::Config(format!("cannot be read ({e})")))?;
    config.check()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::key;

    fn pair() -> (Signer, Public) {
        let (private, public) = key::generate().unwrap();
        (
            Signer::from_pem(private.as_bytes()).unwrap(),
            Public::from_pem(public.as_bytes()).unwrap(),
        )
    }

    fn config(device: &str, issued: i64) -> SignedConfig {
        SignedConfig {
            kind: "config".into(),
            format: 1,
            device: device.into(),
            config: "[device]\nid = \"pi-01\"\n".into(),
            issued,
            expires: issued + 86_400,
        }
    }

    #[test]
    fn a_signed_config_opens_only_with_its_key_and_unchanged() {
        let (signer, public) = pair();
        let sealed = config("pi-01", 1_800_000_000).sign(&signer).unwrap();
        assert_eq!(
            open(&sealed, &public).unwrap(),
            config("pi-01", 1_800_000_000)
        );
        let (_, other) = pair();
        let err = open(&sealed, &other).unwrap_err().to_string();
        assert!(err.contains("trusts only"), "{err}");
        let text = String::from_utf8(sealed).unwrap().replace("pi-01", "pi-02");
        let err = open(text.as_bytes(), &public).unwrap_err().to_string();
        assert!(
            err.starts_with("the signed config does not verify"),
            "{err}"
        );
    }

    #[test]
    fn a_manifest_is_not_a_config_nor_a_config_a_manifest() {
        let (signer, public) = pair();
        let sealed = config("pi-01", 1_800_000_000).sign(&signer).unwrap();
        let err = crate::release::manifest::open(&sealed, &public)
            .unwrap_err()
            .to_string();
        assert!(err.contains("body cannot be read"), "{err}");
    }

    #[test]
    fn a_config_is_admitted_only_for_its_device_in_date_and_newer_than_the_last() {
        let c = config("pi-01", 1_800_000_000);
        let now = 1_800_000_100;
        assert!(c.admit("pi-01", now, None).is_ok());
        assert!(
            c.admit("pi-02", now, None)
                .unwrap_err()
                .to_string()
                .contains("signed for pi-01")
        );
        assert!(
            c.admit("pi-01", now + 86_400, None)
                .unwrap_err()
                .to_string()
                .contains("expired")
        );
        let replayed = c
            .admit("pi-01", now, Some(1_800_000_050))
            .unwrap_err()
            .to_string();
        assert!(replayed.contains("an old config replayed"), "{replayed}");
        assert!(
            c.admit("pi-01", 1_000, None)
                .unwrap_err()
                .to_string()
                .contains("ahead of")
        );
    }
}
