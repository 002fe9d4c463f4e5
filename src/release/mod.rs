//! Signed releases (pure): the release key (`key`), Debian version order
//! (`version`), the manifest a release is described by, signed on the
//! laptop and checked by every device before anything of the package is
//! trusted (`manifest`), a device's config signed the same way (`config`),
//! and the envelope both travel in (`envelope`).
//!
//! It knows keys, bytes and versions; it does not know files, topics,
//! MQTT or how a package is installed.

pub(crate) mod config;
pub(crate) mod envelope;
pub(crate) mod key;
pub(crate) mod manifest;
pub(crate) mod version;

/// Why a release key or manifest is refused, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// The key is unreadable or of the wrong kind.
    #[error("{0}")]
    Key(String),
    /// The manifest cannot be read, or says something impossible.
    #[error("the manifest {0}")]
    Manifest(String),
    /// The signature does not hold.
    #[error("the manifest's signature {0}")]
    Signature(String),
    /// A signed config cannot be read, or does not hold.
    #[error("the signed config {0}")]
    Config(String),
    /// A sound manifest this device must not apply.
    #[error("{0}")]
    Refused(String),
}
